"""Nothing of the user's is lost, a checkpoint brings in no code, no size exhausts the machine,
every guide keeps the contract, every output path and every file read back is checked.

The trained models are tiny (digits rows, a few updates) and shared by the module; commands run
in this process through ``zforcing(argv)`` unless a signal, a kill or a process limit needs a
subprocess of their own.
"""

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_zforcing import files
from pyro_zforcing.checkpoint import load_checkpoint, save_checkpoint
from pyro_zforcing.cli.main import main as zforcing
from pyro_zforcing.memory import cgroup_limits

from test_cli_inputs import main_with_stderr

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--data-option", "rows=true", "--emb-dim", "4", "--rnn-dim", "6", "--z-dim", "2", "--mlp-dim", "6",
        "--batch-size", "8", "--log-every", "1", "--quiet"]
PER_EPOCH = 163  # 1297 training digits in batches of 8


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def one_line(code, err, expected_code=2):
    assert code == expected_code, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err.strip()


def python(program, *args, timeout=300, sigint_ignored=False):
    """Run ``program`` (Python text) in a fresh interpreter with ``args``; (exit code, stderr).
    ``sigint_ignored``: started with SIGINT ignored, as a shell without job control starts a job."""
    ignore = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if sigint_ignored else None
    result = subprocess.run([sys.executable, "-c", program, *args], capture_output=True, text=True, timeout=timeout,
                            cwd=ROOT, env=env(), preexec_fn=ignore)
    return result.returncode, result.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A digits run stopped inside its first epoch (5 updates)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    code, err = main_with_stderr([*TINY, "--max-steps", "5", "--out", str(out)])
    assert code == 0, err
    return out


@pytest.fixture(scope="module")
def text_run(tmp_path_factory):
    """A text run (no fixed sample length, sentences of different lengths), 2 updates."""
    folder = tmp_path_factory.mktemp("text")
    corpus = folder / "corpus.txt"
    words = "the cat sat on a mat and then it ran far away".split()
    corpus.write_text("".join(" ".join(words[: 3 + i % 9]) + "\n" for i in range(60)))
    out = folder / "run"
    code, err = main_with_stderr(["--dataset", "text", "--data-dir", str(corpus), "--cache-dir", str(folder / "cache"),
                                  "--emb-dim", "4", "--rnn-dim", "6", "--z-dim", "2", "--mlp-dim", "6",
                                  "--batch-size", "8", "--max-steps", "2", "--quiet", "--out", str(out)])
    assert code == 0, err
    return out


# ----------------------------------------------------------------------------- a trained model is evaluated

def test_a_run_stopped_inside_its_first_epoch_makes_its_trained_model_best_pt_and_evaluate_says_so(trained, capsys):
    best = load_checkpoint(trained / "checkpoints" / "best.pt")
    assert best["progress"]["step"] == 5 and best["progress"]["validated_step"] == 5
    records = files.read_metrics(trained / "metrics.jsonl")
    validations = [(r["step"], r.get("stopped", False)) for r in records if r["kind"] == "epoch"]
    assert validations == [(0, False), (5, True)]  # before training, and where it stopped
    untrained = [r for r in records if r["kind"] == "epoch"][0]["valid_elbo"]
    assert best["progress"]["best_checkpoint_score"] > untrained  # 5 updates already help
    assert best["progress"]["best_score"] == -float("inf")  # no epoch ended: early stopping saw nothing
    out = trained.parent / "scored"
    assert zforcing(["evaluate", "--checkpoint", str(trained), "--iwae-samples", "2", "--no-plots", "--quiet",
                     "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"Scored: {trained / 'checkpoints' / 'best.pt'}, step 5, epoch 0." in printed
    report = json.loads((out / "eval-test.json").read_text())
    assert (report["checkpoint_step"], report["checkpoint_epoch"]) == (5, 0)
    assert "step 5, epoch 0" in (out / "eval-test.md").read_text()


def test_a_study_warns_when_a_budget_ends_before_the_first_epoch_and_still_scores_the_trained_model(
        tmp_path, digits, caplog):
    from pyro_zforcing.config import DataConfig, TrainConfig
    from pyro_zforcing.data import SequenceSplits
    from pyro_zforcing.studies.ablation import Study, run_study, select_variants

    splits = SequenceSplits(digits.info, digits.train[:40], digits.valid[:8], digits.test[:4])
    study = Study(data=DataConfig(), train=TrainConfig(batch_size=8, max_steps=2, log_every=1),
                  model=dict(emb_dim=4, rnn_dim=6, z_dim=2, mlp_dim=6), variants=select_variants(["aux", "no-aux"]),
                  seeds=(0,), iwae_samples=2, eval_batch_size=4, active_particles=2)
    with caplog.at_level(logging.WARNING):
        results = run_study(study, tmp_path, splits=splits)
    for variant in ("aux", "no-aux"):
        assert f"{variant}: its budget of 2 updates ends before the first validation (update 5" in caplog.text
    assert all(np.isfinite(r["best_valid_elbo"]) for r in results)
    assert results[0]["test_elbo"] != results[1]["test_elbo"]  # trained models, not the same untrained one
    for r in results:
        best = load_checkpoint(tmp_path / f"{r['variant']}-seed0" / "checkpoints" / "best.pt")
        assert best["progress"]["step"] == 2


# ----------------------------------------------------------------------------- nothing of the user's is lost

def test_overwrite_removes_only_the_files_the_manifest_lists_in_every_subfolder(tmp_path):
    out = tmp_path / "run"
    assert main_with_stderr([*TINY, "--max-steps", "1", "--out", str(out)])[0] == 0
    assert zforcing(["sample", "--checkpoint", str(out), "-n", "1", "--interpolate", "0", "--quiet"]) == 0
    assert zforcing(["evaluate", "--checkpoint", str(out), "--iwae-samples", "2", "--quiet"]) == 0
    ours = set(json.loads((out / "manifest.json").read_text())["files"])
    assert {"config.json", "metrics.jsonl", "checkpoints/best.pt", "checkpoints/last.pt", "eval-test.json",
            "eval-test.md", "samples/samples.png", "samples/primed.png"} <= ours
    mine = {"checkpoints/mine.pt": b"weights", "samples/mine.wav": b"RIFF", "eval-mine.json": b"{}",
            "notes/deep/n.txt": b"n", "samples/old/keep.png": b"png"}
    for name, data in mine.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    code, err = main_with_stderr([*TINY, "--max-steps", "1", "--out", str(out), "--overwrite"])
    assert code == 0, err
    for name, data in mine.items():
        assert (out / name).read_bytes() == data, name
    assert not (out / "eval-test.json").exists() and not (out / "samples" / "samples.png").exists()
    assert set(json.loads((out / "manifest.json").read_text())["files"]) == {
        "config.json", "metrics.jsonl", "checkpoints/best.pt", "checkpoints/last.pt", "learning_curves.png"}


def test_overwrite_refuses_a_run_without_a_manifest_and_a_manifest_pointing_outside(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "config.json").write_text("{}")
    code, err = main_with_stderr([*TINY, "--max-steps", "1", "--out", str(out), "--overwrite"])
    assert "no manifest.json" in one_line(code, err) and (out / "config.json").exists()
    outside = tmp_path / "precious.txt"
    outside.write_text("keep")
    (out / "manifest.json").write_text(json.dumps({"format": 1, "files": ["../precious.txt"]}))
    code, err = main_with_stderr([*TINY, "--max-steps", "1", "--out", str(out), "--overwrite"])
    assert "'../precious.txt', which is not a path inside" in one_line(code, err)
    assert outside.read_text() == "keep"


@pytest.fixture
def two_runs(tmp_path):
    first, other = tmp_path / "first", tmp_path / "other"
    assert main_with_stderr([*TINY, "--max-steps", "2", "--out", str(first)])[0] == 0
    wider = [a if a != "6" else "9" for a in TINY]  # --rnn-dim 9, --mlp-dim 9
    assert main_with_stderr([*wider, "--max-steps", "3", "--out", str(other)])[0] == 0
    return first, other


def test_resume_refuses_a_checkpoint_or_config_of_another_run_naming_the_difference(two_runs):
    first, other = two_runs
    best = (first / "checkpoints" / "best.pt").read_bytes()
    (first / "checkpoints" / "last.pt").write_bytes((other / "checkpoints" / "last.pt").read_bytes())
    code, err = main_with_stderr(["--resume", str(first), "--max-steps", "9", "--quiet"])
    line = one_line(code, err)
    assert "last.pt does not belong to this run: its model_config.mlp_dim is 9 but config.json's is 6" in line
    assert (first / "checkpoints" / "best.pt").read_bytes() == best  # nothing trained, nothing replaced


@pytest.mark.parametrize("config,needle", [
    (None, "config.json is missing"),
    ("{not json", "config.json: not valid JSON"),
    ("[1, 2]", "config.json: expected a JSON object"),
    ('{"model_config": 3}', "no 'model_config' object"),
    ("other", "does not belong to this run: its model_config.mlp_dim is 6 but config.json's is 9"),
])
def test_resume_checks_config_json_missing_garbage_or_foreign(two_runs, config, needle):
    first, other = two_runs
    path = first / "config.json"
    if config is None:
        path.unlink()
    elif config == "other":
        path.write_text((other / "config.json").read_text())
    else:
        path.write_text(config)
    code, err = main_with_stderr(["--resume", str(first), "--max-steps", "9", "--quiet"])
    assert needle in one_line(code, err)
    assert load_checkpoint(first / "checkpoints" / "last.pt")["progress"]["step"] == 2


# ----------------------------------------------------------------------------- a checkpoint never brings in code

MARKER_GUIDE = '''
import pathlib
pathlib.Path({marker!r}).write_text("imported")
from pyro_zforcing.guides import BackwardGuide as Guide
'''


@pytest.fixture
def doctored(tmp_path, trained):
    """A copy of ``trained`` whose checkpoints and config record a guide file that writes a marker."""
    marker = tmp_path / "marker"
    guide = tmp_path / "evil.py"
    guide.write_text(MARKER_GUIDE.format(marker=str(marker)))
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    spec = f"{guide}:Guide"
    for name in ("best.pt", "last.pt"):
        state = torch.load(trained / "checkpoints" / name, weights_only=True)
        state["train_config"]["guide"] = spec
        save_checkpoint(run / "checkpoints" / name, {k: v for k, v in state.items() if k not in ("format", "version")})
    config = json.loads((trained / "config.json").read_text())
    config["train_config"]["guide"] = spec
    (run / "config.json").write_text(json.dumps(config))
    return run, spec, marker


@pytest.mark.parametrize("command", [
    ["evaluate", "--checkpoint", "{run}", "--iwae-samples", "2", "--quiet"],
    ["evaluate", "--checkpoint", "{run}", "--guide", "pyro_zforcing.guides.prior:PriorGuide", "--quiet"],
    ["evaluate", "--checkpoint", "{run}", "--guide", "backward", "--quiet"],
    ["sample", "--checkpoint", "{run}/checkpoints/last.pt", "-n", "1", "--quiet"],
    ["--resume", "{run}", "--max-steps", "9", "--quiet"],
    ["--resume", "{run}", "--max-steps", "9", "--guide", "prior", "--quiet"],
])
def test_a_doctored_checkpoint_never_imports_its_guide_unless_named_or_trusted(doctored, command):
    run, spec, marker = doctored
    code, err = main_with_stderr([part.format(run=run) for part in command])
    line = one_line(code, err)
    assert spec in line and ("--guide" in line or "is not the guide" in line), line
    assert not marker.exists()


def test_a_recorded_guide_named_again_or_trusted_is_imported(doctored):
    run, spec, marker = doctored
    assert zforcing(["evaluate", "--checkpoint", str(run), "--guide", spec, "--iwae-samples", "2", "--no-plots",
                     "--quiet"]) == 0
    assert marker.read_text() == "imported"
    marker.unlink()
    code, err = main_with_stderr(["--resume", str(run), "--max-steps", "6", "--trust-guide", "--quiet"])
    assert code == 0, err
    assert load_checkpoint(run / "checkpoints" / "last.pt")["progress"]["step"] == 6


# ----------------------------------------------------------------------------- the guide contract

BAD_GUIDES = {
    "extra site": ('''
        class Guide(nn.Module):
            def __init__(self, model):
                super().__init__()
                self.inner = BackwardGuide(model)
            def forward(self, batch, **weights):
                self.inner(batch)
                pyro.sample("w", dist.Normal(0.0, 1.0))
        ''', "samples site 'w', which is not a latent site"),
    "misnamed site": ('''
        class Guide(BackwardGuide):
            def forward(self, batch, **weights):
                with pyro.plate("sequences", batch.batch_size):
                    return pyro.sample("zz", self.proposal(batch))
        ''', "samples site 'zz', which is not a latent site"),
    "wrong shape": ('''
        class Guide(nn.Module):
            def __init__(self, model):
                super().__init__()
                self.scale = nn.Parameter(torch.ones(()))
            def forward(self, batch, **weights):
                with pyro.plate("sequences", batch.batch_size):
                    shape = batch.x.shape[:2] + (7,)
                    return pyro.sample("z", dist.Normal(torch.zeros(shape), self.scale).to_event(2))
        ''', "site 'z' has shape (2, 3, 7) for a batch of 2 x 3 steps, but the model's has (2, 3, 2)"),
    "per-step density": ('''
        class Guide(nn.Module):
            def __init__(self, model):
                super().__init__()
                self.scale = nn.Parameter(torch.ones(()))
            def forward(self, batch, **weights):
                shape = batch.x.shape[:2] + (2,)
                return pyro.sample("z", dist.Normal(torch.zeros(shape), self.scale))
        ''', "site 'z' has a log-density of shape (2, 3, 2), the model's has (2,)"),
    "not a module": ('''
        class Guide:
            def __init__(self, model):
                self.model = model
            def __call__(self, batch, **weights):
                return None
        ''', "Guide(model) is not a torch.nn.Module"),
    "samples nothing": ('''
        class Guide(nn.Module):
            def __init__(self, model):
                super().__init__()
            def forward(self, batch, **weights):
                return None
        ''', "samples no site 'z'"),
    "fails when called": ('''
        class Guide(nn.Module):
            def __init__(self, model):
                super().__init__()
            def forward(self, batch, **weights):
                raise RuntimeError("shape trouble")
        ''', "calling it on a batch failed: RuntimeError: shape trouble"),
    "exits at import": ('''
        sys.exit(0)
        ''', "exits the program (sys.exit(0))"),
    "raises at import": ('''
        raise ImportError("a missing dependency")
        ''', "cannot import {file}: ImportError: a missing dependency"),
    "fails when built": ('''
        class Guide(nn.Module):
            def __init__(self, model):
                raise KeyError("rnn_size")
        ''', "Guide(model) failed: KeyError: 'rnn_size'"),
}
GUIDE_HEADER = '''
import sys
import pyro
import pyro.distributions as dist
import torch
import torch.nn as nn
from pyro_zforcing.guides import BackwardGuide
'''


@pytest.mark.parametrize("case", list(BAD_GUIDES))
def test_a_guide_breaking_the_contract_is_a_one_line_error_naming_the_guide_and_site(tmp_path, case):
    body, needle = BAD_GUIDES[case]
    path = tmp_path / "bad_guide.py"
    path.write_text(GUIDE_HEADER + textwrap.dedent(body))
    out = tmp_path / "run"
    code, err = main_with_stderr([*TINY, "--max-steps", "1", "--guide", f"{path}:Guide", "--out", str(out)])
    line = one_line(code, err)
    assert f"--guide {path}:Guide" in line and needle.format(file=path) in line, line
    assert not out.exists()  # refused before the run directory is made


def test_every_shipped_guide_keeps_the_contract_on_every_model():
    from pyro_zforcing.build import build_objective
    from pyro_zforcing.config import ModelConfig
    from pyro_zforcing.guides import check_guide
    from pyro_zforcing.models import MODELS

    for name, model_class in MODELS.items():
        assert model_class.guides, name
        for guide in model_class.guides:
            for emission, dim in (("bernoulli", 3), ("gaussian", 2), ("categorical", 5)):
                config = ModelConfig(input_dim=dim, emission=emission, model=name, emb_dim=4, rnn_dim=5, z_dim=2,
                                     mlp_dim=4)
                objective = build_objective(config, guide)
                check_guide(objective.guide, objective.model, guide)


# ----------------------------------------------------------------------------- no size exhausts the machine

LIMITED = '''
import re, resource, sys
import matplotlib.pyplot, pyro, seaborn, torch  # what the commands import, before the limit
from pyro_zforcing.cli.main import main
used = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
resource.setrlimit(resource.RLIMIT_AS, (used + {headroom}, resource.RLIM_INFINITY))
sys.exit(main(sys.argv[1:]))
'''
HEADROOM = 1_500_000_000  # what a tiny evaluation or sampling needs, far less than the machine has
HUGE = str(10 ** 8)


@pytest.mark.parametrize("command,needle", [
    (["sample", "-n", HUGE], "sampling 100000000 sequence(s)"),
    (["sample", "--steps", HUGE], "sampling 8 sequence(s) of 100000000 steps"),
    (["sample", "--interpolate", HUGE], "sampling 100000000 sequence(s)"),
    (["sample", "--steps", "100", "--prime-steps", HUGE], "--prime-steps must be in [1, 99]"),
    (["evaluate", "--iwae-samples", str(10 ** 12)], "cannot finish; at most 1,000,000"),
    (["evaluate", "--iwae-samples", str(10 ** 6), "--iwae-chunk", str(10 ** 9)], "1000000 particle(s) at a time"),
    (["evaluate", "--iwae-chunk", HUGE, "--iwae-samples", HUGE], "cannot finish; at most 1,000,000"),
])
def test_huge_sizes_under_a_process_limit_are_one_line_refusals(text_run, command, needle):
    program = LIMITED.format(headroom=HEADROOM)
    code, err = python(program, *command, "--checkpoint", str(text_run), "--out", str(text_run.parent / "o"),
                       "--quiet", timeout=120)
    line = one_line(code, err)
    assert needle in line, line
    if "particle-steps" not in line and "prime" not in line and "cannot finish" not in line:
        assert "RLIMIT_AS" in line, line  # the process's own limit, not the machine's memory, is the bound
    assert not (text_run.parent / "o").exists()


def test_a_huge_batch_is_bounded_by_construction_under_a_process_limit(text_run):
    code, err = python(LIMITED.format(headroom=HEADROOM), "evaluate", "--checkpoint", str(text_run), "--batch-size",
                       str(10 ** 12), "--iwae-samples", "3", "--no-plots", "--quiet", "--out",
                       str(text_run.parent / "b"), timeout=120)
    assert code == 0, err
    assert json.loads((text_run.parent / "b" / "eval-test.json").read_text())["iwae_samples"] == 3


def test_memory_estimate_honours_rlimit_as_in_a_subprocess():
    program = ("import resource; from pyro_zforcing.memory import memory_limit\n"
               "resource.setrlimit(resource.RLIMIT_AS, (8 * 2**30, resource.RLIM_INFINITY))\n"
               "have, what = memory_limit(); print(have, what)\n")
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=ROOT, env=env())
    have, what = result.stdout.split(" ", 1)
    assert "RLIMIT_AS" in what and 0 < int(have) < 8 * 2**30


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_cgroup_limits_are_read_for_the_cgroup_and_its_ancestors_less_reclaimable_cache(tmp_path, version):
    if version == "v2":
        membership, base, names, cache = "0::/a/b\n", tmp_path, ("memory.max", "memory.current"), "inactive_file"
    else:
        membership, base = "4:memory:/a/b\n3:cpu:/x\n", tmp_path / "memory"
        names, cache = ("memory.limit_in_bytes", "memory.usage_in_bytes"), "total_inactive_file"
    values = {"a/b": ("max" if version == "v2" else str(2 ** 63 - 4096), "700"),  # no limit of its own
              "a": ("5000", "3000"), "": ("100000", "1000")}
    for folder, (limit, used) in values.items():
        (base / folder).mkdir(parents=True, exist_ok=True)
        (base / folder / names[0]).write_text(limit + "\n")
        (base / folder / names[1]).write_text(used + "\n")
    (base / "a" / "memory.stat").write_text(f"anon 2000\n{cache} 1000\n")
    (tmp_path / "cgroup").write_text(membership)
    bounds = cgroup_limits(root=tmp_path, membership=tmp_path / "cgroup")
    assert sorted(b for b, _ in bounds) == [5000 - (3000 - 1000), 100000 - 1000]
    assert all("cgroup" in what for _, what in bounds)


def test_an_allocator_failure_is_still_one_line(monkeypatch, trained):
    from pyro_zforcing.cli import evaluate

    def fail(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 999 bytes.\nmore")

    monkeypatch.setattr(evaluate, "evaluate_split", fail)
    code, err = main_with_stderr(["evaluate", "--checkpoint", str(trained), "--out", "/tmp/never", "--quiet"])
    assert "out of memory" in one_line(code, err, expected_code=1)


# ----------------------------------------------------------------------------- output paths

def command_writing_into(kind, out, trained):
    return {"train": [*TINY, "--max-steps", "1", "--out", str(out)],
            "evaluate": ["evaluate", "--checkpoint", str(trained), "--iwae-samples", "2", "--quiet", "--out", str(out)],
            "sample": ["sample", "--checkpoint", str(trained), "-n", "1", "--quiet", "--out", str(out)],
            "ablate": ["ablate", *TINY, "--variants", "aux", "--seeds", "1", "--max-steps", "1",
                       "--study-dir", str(out)],
            "compare": ["compare", *TINY, "--models", "rnn", "--seeds", "1", "--max-steps", "1",
                        "--study-dir", str(out)]}[kind]


COMMANDS = ["train", "evaluate", "sample", "ablate", "compare"]


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_an_output_that_is_or_lies_under_a_file_is_a_one_line_error(tmp_path, trained, command, where):
    taken = tmp_path / "taken"
    taken.write_text("mine")
    out = taken if where == "a file" else taken / "deeper" / "out"
    code, err = main_with_stderr(command_writing_into(command, out, trained))
    line = one_line(code, err)
    assert ("is a file, not a directory" if where == "a file" else f"{taken} is a file") in line and str(out) in line
    assert taken.read_text() == "mine"


def refuse_under(monkeypatch, folder: Path, error: int):
    """Every ``os.open`` below ``folder`` (creating or writing a file there) fails with ``error``:
    a read-only disk or a folder without permission, even for root."""
    real = os.open

    def refusing(path, flags, *args, **kwargs):
        if str(path).startswith(str(folder)) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(error, os.strerror(error), str(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("error", [errno.EROFS, errno.EACCES])
def test_a_read_only_output_is_a_one_line_error(tmp_path, monkeypatch, trained, command, error):
    out = tmp_path / "locked"
    out.mkdir()
    refuse_under(monkeypatch, out, error)
    code, err = main_with_stderr(command_writing_into(command, out, trained))
    line = one_line(code, err)
    assert f"{out} is not writable: {os.strerror(error)}" in line, line
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("command", COMMANDS + ["plot"])
def test_an_output_on_a_full_disk_is_a_one_line_error(tmp_path, monkeypatch, trained, command):
    out = tmp_path / "full"
    out.mkdir()
    real = os.statvfs

    def full(path):
        stats = real(path)
        if str(path).startswith(str(out)) or str(path).startswith(str(trained)):
            return os.statvfs_result((stats.f_bsize, stats.f_frsize, stats.f_blocks, 0, 0) + tuple(stats)[5:])
        return stats

    monkeypatch.setattr(os, "statvfs", full)
    argv = ["plot", str(trained)] if command == "plot" else command_writing_into(command, out, trained)
    code, err = main_with_stderr(argv)
    assert "on a full disk (0 bytes free)" in one_line(code, err)


def test_a_full_disk_at_the_run_lock_is_a_one_line_error(tmp_path, monkeypatch):
    def full(fd, data, offset):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)
    out = tmp_path / "run"
    code, err = main_with_stderr([*TINY, "--max-steps", "1", "--out", str(out)])
    assert f"disk full while writing {out / '.lock'}" in one_line(code, err)


# ----------------------------------------------------------------------------- files read back

@pytest.fixture
def plotted(tmp_path, trained):
    """A copy of the trained run's config, metrics and an evaluation report, to damage."""
    run = tmp_path / "run"
    run.mkdir()
    for name in ("config.json", "metrics.jsonl"):
        (run / name).write_bytes((trained / name).read_bytes())
    assert zforcing(["evaluate", "--checkpoint", str(trained), "--iwae-samples", "2", "--no-plots", "--quiet",
                     "--out", str(run)]) == 0
    return run


def edited(change):
    """A damage of a JSON text: ``change`` applied to its parsed value."""
    def damage(text):
        value = json.loads(text)
        change(value)
        return json.dumps(value)
    return damage


@pytest.mark.parametrize("name,damage,needle", [
    ("eval-test.json", lambda t: t[: len(t) // 2], "eval-test.json: not valid JSON"),
    ("eval-test.json", lambda t: "[]", "eval-test.json: expected a JSON object"),
    ("eval-test.json", edited(lambda r: r.pop("per_sequence")), "no 'per_sequence'"),
    ("eval-test.json", edited(lambda r: r["units"].update(unit=3)), "its 'units' lack"),
    ("eval-test.json", edited(lambda r: r["per_sequence"].update(elbo=["a"])), "per_sequence.elbo is not a list"),
    ("eval-test.json", edited(lambda r: r["per_sequence"].update(kl=[1.0])), "per-sequence lists differ in length"),
    ("eval-test.json", edited(lambda r: r.update(kl_per_step=[1])), "'kl_per_step' is not an object"),
    ("eval-test.json", lambda t: "", "eval-test.json is empty"),
    ("metrics.jsonl", lambda t: t.replace('"kind": "step", "step": 2,', '"kind": "step", "step": "two",', 1),
     "metrics.jsonl: line 3 is not a metrics record"),
    ("metrics.jsonl", lambda t: "\n".join(t.splitlines()[:2] + ["{torn"] + t.splitlines()[2:]),
     "metrics.jsonl: line 3: not valid JSON"),
    ("metrics.jsonl", lambda t: t.replace('"loss": ', '"loss": "high", "x": ', 1), "'loss' is not a number"),
    ("config.json", lambda t: t[:-40], "config.json: not valid JSON"),
    ("config.json", lambda t: '{"data_info": 1}', "config.json: no 'data_info' object"),
])
def test_plot_on_a_damaged_file_is_a_one_line_error_naming_it(plotted, name, damage, needle):
    path = plotted / name
    path.write_text(damage(path.read_text()))
    code, err = main_with_stderr(["plot", str(plotted), "--quiet"])
    line = one_line(code, err)
    assert str(plotted / name) in line and needle in line, line


def wrong_kind_lines(seed, count=3):
    """Generated complete lines of the wrong kind for metrics.jsonl (beside the issue's examples)."""
    rng = np.random.default_rng(seed)
    shapes = [lambda: json.dumps([int(v) for v in rng.integers(0, 9, int(rng.integers(1, 4)))]),
              lambda: json.dumps({"kind": "step", "step": "".join(rng.choice(list("abcxyz"), 3))}),
              lambda: json.dumps({"kind": "step", "step": -int(rng.integers(1, 50))}),
              lambda: json.dumps({"step": int(rng.integers(0, 9))}),
              lambda: json.dumps(str(rng.integers(0, 1000))),
              lambda: json.dumps({"kind": "step", "step": 1, "loss": [1.0]})]
    return [shapes[int(i)]() for i in rng.choice(len(shapes), count, replace=False)]


@pytest.mark.parametrize("last", ["[1, 2]", '{"kind": "step", "step": "abc"}'] + wrong_kind_lines(0) + wrong_kind_lines(1))
def test_a_complete_last_metrics_line_of_the_wrong_kind_is_a_one_line_error_not_a_torn_line(plotted, last):
    """Only a line without its newline is torn; a complete one of the wrong kind is an error."""
    path = plotted / "metrics.jsonl"
    text = path.read_text() + last + "\n"
    path.write_text(text)
    number = len(text.splitlines())
    code, err = main_with_stderr(["plot", str(plotted), "--quiet"])
    line = one_line(code, err)
    assert f"{path}: line {number}" in line and "not a metrics record" in line, line
    assert path.read_text() == text


def test_plot_drops_a_torn_last_metrics_line_with_a_warning(plotted, caplog):
    path = plotted / "metrics.jsonl"
    path.write_text(path.read_text() + '{"kind": "step", "st')
    with caplog.at_level(logging.WARNING):
        assert zforcing(["plot", str(plotted), "--quiet"]) == 0
    assert "torn last line" in caplog.text


def test_a_damaged_study_result_is_a_one_line_error_naming_it(tmp_path):
    argv = ["ablate", *TINY, "--variants", "aux", "--seeds", "1", "--max-steps", "1", "--iwae-samples", "2",
            "--study-dir", str(tmp_path)]
    assert main_with_stderr(argv)[0] == 0
    result = tmp_path / "aux-seed0" / "result.json"
    result.write_text('{"variant": "aux"}')
    code, err = main_with_stderr(argv)
    assert f"{result}: no 'seed'; remove it to evaluate that run again" in one_line(code, err)


# ----------------------------------------------------------------------------- the small items

@pytest.mark.parametrize("argv,needle", [
    (["ablate", "--variants", ""], "--variants '' names no variant"),
    (["ablate", "--variants", "aux,,kla"], "has an empty name between its commas"),
    (["compare", "--models", ""], "--models '' names no variant"),
    (["compare", "--presets", ""], "--presets '' names no recipe"),
    (["compare", "--presets", "jsb-rnn,,jsb-srnn"], "has an empty name between its commas"),
])
def test_an_empty_list_of_variants_is_refused(tmp_path, argv, needle):
    code, err = main_with_stderr([*argv, "--study-dir", str(tmp_path / "s")])
    assert needle in one_line(code, err)
    assert not (tmp_path / "s").exists()


def test_a_study_file_with_no_variants_is_refused(tmp_path):
    study = tmp_path / "study.json"
    study.write_text('{"variants": [], "max_steps": 1}')
    code, err = main_with_stderr(["ablate", "--study", str(study), "--study-dir", str(tmp_path / "s")])
    assert f"{study}: variants is empty" in one_line(code, err)
    assert not (tmp_path / "s").exists()


def test_sample_checks_pair_and_digits_steps_before_writing_anything(tmp_path, trained, digits):
    from pyro_zforcing.build import load_trained
    from pyro_zforcing.evaluation.samples import sample_all

    objective, splits, _ = load_trained(trained)
    out = tmp_path / "samples"
    with pytest.raises(ValueError, match=r"--pair 0,1: the split has 1 sequence\(s\) .*--interpolate 0"):
        sample_all(objective, splits.info, splits.test[:1], out, num=2)
    assert not out.exists()
    code, err = main_with_stderr(["sample", "--checkpoint", str(trained), "--steps", "5", "--out", str(out), "--quiet"])
    assert "samples of digits are whole 8 x 8 images of 8 steps each" in one_line(code, err)
    assert not out.exists()


def test_fewer_primed_samples_than_asked_are_said(tmp_path, trained, caplog):
    from pyro_zforcing.build import load_trained
    from pyro_zforcing.evaluation.samples import sample_all

    objective, splits, _ = load_trained(trained)
    sequences = [splits.test[0], splits.test[1][:3], splits.test[2], splits.test[3][:2]]  # 2 longer than 4 steps
    with caplog.at_level(logging.WARNING):
        written = sample_all(objective, splits.info, sequences, tmp_path, num=4, interpolation=0)
    assert "only 2 of the split's 4 sequences are longer than --prime-steps 4: 2 primed sample(s), not 4" in caplog.text
    assert written["primed"] == [tmp_path / "primed.png"]


def test_protocol_both_on_a_model_without_latents_writes_both_with_kl_zero(tmp_path):
    out = tmp_path / "rnn"
    assert main_with_stderr([*TINY, "--model", "rnn", "--max-steps", "1", "--out", str(out)])[0] == 0
    assert zforcing(["evaluate", "--checkpoint", str(out), "--protocol", "both", "--quiet", "--no-plots"]) == 0
    ours, paper = (json.loads((out / f"{n}-test.json").read_text()) for n in ("eval", "eval_paper"))
    assert ours["exact_likelihood"] and ours["per_sequence_mean"]["kl"] == 0
    assert np.isfinite(paper["per_sequence_nll_kl"]).all() and paper["table_bound"] < 0


def test_protocol_both_refused_for_the_paper_writes_no_report_at_all(tmp_path):
    guide = tmp_path / "mean_field.py"
    from test_custom_guide import GUIDE_FILE

    guide.write_text(GUIDE_FILE)
    out = tmp_path / "run"
    spec = f"{guide}:MeanField"
    assert main_with_stderr([*TINY, "--guide", spec, "--max-steps", "1", "--out", str(out)])[0] == 0
    code, err = main_with_stderr(["evaluate", "--checkpoint", str(out), "--guide", spec, "--protocol", "both",
                                  "--iwae-samples", "2", "--quiet"])
    assert "the paper protocol needs the analytic KL" in one_line(code, err)
    assert not list(out.glob("eval*"))


KILLED_BETWEEN_REPORTS = '''
import os, signal, sys
from pyro_zforcing.cli.main import main
real = os.replace
def replace(src, dst):
    real(src, dst)
    if str(dst).endswith("eval-test.json"):
        os.kill(os.getpid(), signal.SIGKILL)  # after the JSON, before its markdown
os.replace = replace
sys.exit(main(sys.argv[1:]))
'''
KILLED_WRITING_MARKDOWN = '''
import os, signal, sys
from pyro_zforcing import files
from pyro_zforcing.cli.main import main
write = files.write_all
def write_all(handle, data):
    if ".md." in handle.name:
        handle.write(data[:20])
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)  # a markdown temporary is left behind
    write(handle, data)
files.write_all = write_all
sys.exit(main(sys.argv[1:]))
'''


@pytest.mark.parametrize("program", [KILLED_BETWEEN_REPORTS, KILLED_WRITING_MARKDOWN])
def test_a_kill_between_the_report_writes_is_found_and_repaired_and_leaves_no_temporary(tmp_path, trained, program):
    out = tmp_path / "out"
    evaluate = ["evaluate", "--checkpoint", str(trained), "--no-plots", "--quiet", "--out", str(out)]
    assert zforcing([*evaluate, "--iwae-samples", "2"]) == 0
    code, _ = python(program, *evaluate, "--iwae-samples", "3")
    assert code == -9
    assert json.loads((out / "eval-test.json").read_text())["iwae_samples"] == 3
    assert "K = 2 importance samples" in (out / "eval-test.md").read_text()  # disagreeing, as the kill left them
    assert zforcing(["plot", str(out), "--quiet"]) == 0  # any command in the folder repairs it
    assert "K = 3 importance samples" in (out / "eval-test.md").read_text()
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []


SIGNALLED = '''
import os, signal, sys
from pyro_zforcing.cli import evaluate
from pyro_zforcing.cli.main import main
from pyro_zforcing.evaluation import samples
def stop(*args, **kwargs):
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))
    raise AssertionError("the signal did not stop the command")
evaluate.evaluate_split = stop
samples.sample_all = stop
sys.exit(main(sys.argv[2:]))
'''


@pytest.mark.parametrize("command", ["evaluate", "sample"])
@pytest.mark.parametrize("signame,code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_during_evaluate_or_sample_is_one_line_and_its_exit_code(tmp_path, trained, command, signame, code):
    got, err = python(SIGNALLED, signame, command, "--checkpoint", str(trained), "--quiet", "--out", str(tmp_path),
                      sigint_ignored=True)  # a background job's SIGINT still stops it
    assert f"stopped by {signame} before it finished" in one_line(got, err, expected_code=code)


SIGNALLED_WHILE_LOADING = '''
import os, signal, sys
import torch
from pyro_zforcing.cli.main import main
read = torch.load
def load(*args, **kwargs):
    os.kill(os.getpid(), getattr(signal, sys.argv[1]))  # arrives while the checkpoint is being read
    return read(*args, **kwargs)
torch.load = load
sys.exit(main(sys.argv[2:]))
'''


@pytest.mark.parametrize("signame,code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_while_a_checkpoint_is_read_is_a_stop_not_a_corrupt_file(tmp_path, trained, signame, code):
    # load_checkpoint turns torch's many read errors into one CheckpointError; a stop request raised
    # by the signal handler inside torch.load must pass through it as a stop
    got, err = python(SIGNALLED_WHILE_LOADING, signame, "evaluate", "--checkpoint", str(trained), "--quiet",
                      "--out", str(tmp_path), sigint_ignored=True)
    line = one_line(got, err, expected_code=code)
    assert f"stopped by {signame} before it finished" in line and "corrupt" not in line


SIGNALLED_WHILE_STARTING = '''
import os, signal, sys
import pyro_zforcing.cli as cli
install = signal.signal
def installed(signum, handler):
    previous = install(signum, handler)
    if signum == signal.SIGTERM and handler is cli._stopped_while_starting:
        os.kill(os.getpid(), getattr(signal, sys.argv.pop(1)))  # before torch is imported
    return previous
signal.signal = installed
cli.run()
'''


@pytest.mark.parametrize("signame,code", [("SIGTERM", 143), ("SIGINT", 130)])
def test_a_signal_while_the_program_starts_is_one_line_and_its_exit_code(signame, code):
    got, err = python(SIGNALLED_WHILE_STARTING, signame, "evaluate", "--checkpoint", "x.pt")
    assert f"stopped by {signame} while starting; nothing was written" in one_line(got, err, expected_code=code)


def test_wav_samples_are_written_atomically(tmp_path, monkeypatch):
    import soundfile

    from pyro_zforcing.data.base import DataInfo
    from pyro_zforcing.evaluation.samples import write_wav
    from pyro_zforcing.files import WriteError

    info = DataInfo(name="speech", emission="gaussian", dim=4, unit="sample", units_per_step=4, sample_rate=8000,
                    mean=0.0, std=0.5)
    frames = np.linspace(-1, 1, 40).reshape(10, 4)
    path = write_wav(tmp_path / "s.wav", frames, info)
    data, rate = soundfile.read(path)
    assert rate == 8000 and np.allclose(data, np.clip(frames.reshape(-1) * 0.5, -1, 1), atol=1 / 2 ** 15)
    before = path.read_bytes()

    def full(handle, data):
        handle.write(data[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    real = soundfile.write
    monkeypatch.setattr(soundfile, "write", lambda f, *a, **k: (real(f, *a, **k), full(f, b"x" * 20)))
    with pytest.raises(WriteError, match="disk full while writing .*s.wav"):
        write_wav(path, frames[::-1], info)
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["s.wav"]


# ----------------------------------------------------------------------------- found by a sweep of bad inputs

@pytest.mark.parametrize("argv,needle", [
    ([*TINY, "--out", "", "--max-steps", "1"], "argument --out: expected a path, got an empty string"),
    (["evaluate", "--checkpoint", ""], "argument --checkpoint: expected a path"),
    (["ablate", "--study-dir", " "], "argument --study-dir/--out: expected a path"),
    (["plot", ""], "argument RUN_DIR: expected a path"),
    ([*TINY, "--rnn-dim", str(10 ** 20), "--max-steps", "1"], "rnn_dim 100000000000000000000 is beyond any tensor"),
    (["evaluate", "--checkpoint", "/nonexistent/run/checkpoints/best.pt"], "checkpoint not found"),
])
def test_empty_paths_and_impossible_sizes_are_one_line_errors(tmp_path, argv, needle):
    code, err = main_with_stderr(argv)
    assert needle in one_line(code, err)


@pytest.mark.parametrize("content,needle", [
    ('{"variants": ["aux"], "study_dir": 5}', "study_dir: expected a string, got 5"),
    ('{"variants": {"x": 1}}', "variant 'x': overrides must be a mapping, got 1"),
])
def test_study_file_values_of_the_wrong_kind_are_one_line_errors(tmp_path, content, needle):
    study = tmp_path / "study.json"
    study.write_text(content)
    code, err = main_with_stderr(["ablate", "--study", str(study), *TINY, "--max-steps", "1", "--seeds", "1"])
    assert needle in one_line(code, err)


def test_a_folder_where_a_file_of_ours_goes_is_a_one_line_error(tmp_path):
    out = tmp_path / "run"
    assert main_with_stderr([*TINY, "--max-steps", "1", "--out", str(out)])[0] == 0
    (out / "config.json").unlink()
    (out / "config.json").mkdir()  # not a file: not ours to remove
    code, err = main_with_stderr([*TINY, "--max-steps", "1", "--out", str(out), "--overwrite"])
    assert f"cannot write {out / 'config.json'}: Is a directory" in one_line(code, err, expected_code=1)


def unusable_out_dirs(root: Path, seed: int):
    """(--out, the words of its one-line error): the issue's 300-character name and self-loop, and
    generated ones: other long names at other depths, loops of two and three links, a broken link."""
    rng = np.random.default_rng(seed)
    long_name = "n" * int(rng.integers(256, 600))
    cases = [(root / ("x" * 300), "File name too long"),
             (root / "ok" / long_name / "deeper", "File name too long")]
    self_loop = root / f"self{seed}"
    self_loop.symlink_to(self_loop.name)
    cases += [(self_loop / "out", "Too many levels of symbolic links"), (self_loop, "Too many levels")]
    links = [root / f"ring{seed}-{i}" for i in range(int(rng.integers(2, 4)))]
    for here, there in zip(links, links[1:] + links[:1]):
        here.symlink_to(there.name)
    cases.append((links[0] / "a" / "b", "Too many levels of symbolic links"))
    broken = root / f"broken{seed}"
    broken.symlink_to(f"missing{seed}")
    cases.append((broken / "out", "broken symbolic link"))
    return cases


@pytest.mark.parametrize("seed", [0, 1])
def test_every_command_checks_its_output_path_before_any_work_with_one_line(trained, tmp_path, monkeypatch, seed):
    from pyro_zforcing.cli import evaluate, sample

    def no_work(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded before --out was checked")

    monkeypatch.setattr(evaluate, "load_for", no_work)
    monkeypatch.setattr(sample, "load_for", no_work)
    before = sorted(p.name for p in tmp_path.iterdir())
    for out, words in unusable_out_dirs(tmp_path, seed):
        made = set(tmp_path.iterdir())
        for argv in ([*TINY, "--max-steps", "1", "--out", str(out)],
                     ["evaluate", "--checkpoint", str(trained), "--out", str(out), "--quiet"],
                     ["sample", "--checkpoint", str(trained), "--out", str(out), "--quiet"]):
            code, err = main_with_stderr(argv)
            line = one_line(code, err)
            assert f"cannot create the " in line and words in line, (argv[0], line)
        assert set(tmp_path.iterdir()) == made  # nothing made on the way ("ok" included)
    assert "ok" not in before and not (tmp_path / "ok").exists()
