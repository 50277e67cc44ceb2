"""Runs you can trust: one run per directory, a lock, signals, kills, torn files, full disks.

The process-level cases run the command line in a subprocess, as a user (or a scheduler that
kills) would; the tiny model on 8-row digits keeps each run to seconds.
"""

import errno
from fractions import Fraction
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pyro_zforcing import files
from pyro_zforcing.checkpoint import CheckpointError, load_checkpoint, load_weights, save_checkpoint
from pyro_zforcing.config import DataConfig, TrainConfig
from pyro_zforcing.data import SequenceSplits
from pyro_zforcing.files import WriteError, remove_orphans, write_atomic
from pyro_zforcing.training.rundir import RunDirError, RunLock
from pyro_zforcing.build import build_objective
from pyro_zforcing.training.trainer import MetricsError, MetricsLog, Trainer, TrainingDiverged

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--data-option", "rows=true", "--emb-dim", "4", "--rnn-dim", "6", "--z-dim", "2", "--mlp-dim", "6",
        "--batch-size", "8", "--log-every", "1", "--quiet"]
STEPS = 150  # inside epoch 1 (1297 training digits / 8 = 163 updates)
SIZES = dict(emb_dim=4, rnn_dim=6, z_dim=2, mlp_dim=6)


def cli(*args):
    return [sys.executable, str(ROOT / "run.py"), *args]


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def run_cli(*args, timeout=300):
    return subprocess.run(cli(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=env())


def start_cli(*args):
    return subprocess.Popen(cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=env())


def one_line_error(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def step_records(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in records if r["kind"] == "step"}


def wait_for_step(run_dir, step, process, timeout=120):
    """Block until ``metrics.jsonl`` records ``step`` (the process is then past that update)."""
    deadline = time.time() + timeout
    path = run_dir / "metrics.jsonl"
    while time.time() < deadline:
        assert process.poll() is None, process.communicate()
        if path.exists() and f'"step": {step},' in path.read_text():
            return
        time.sleep(0.01)
    raise AssertionError(f"step {step} not reached in {timeout} s")


def same_parameters(a, b):
    a, b = load_checkpoint(a)["objective"], load_checkpoint(b)["objective"]
    return set(a) == set(b) and all(torch.equal(a[key], b[key]) for key in a)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The reference: STEPS updates without interruption."""
    out = tmp_path_factory.mktemp("whole") / "run"
    result = run_cli(*TINY, "--max-steps", str(STEPS), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture
def small_digits(digits):
    return SequenceSplits(digits.info, digits.train[:40], digits.valid[:16], digits.test[:16])


def make_trainer(out_dir, splits, **train):
    config = TrainConfig(batch_size=8, log_every=1, **train)
    return Trainer.create(data_config=DataConfig(), train_config=config, out_dir=out_dir, model_sizes=SIZES,
                          quiet=True, splits=splits)


# ----------------------------------------------------------------------------- signals and kills

def test_sigterm_mid_epoch_saves_and_resume_continues_bit_identically(tmp_path, uninterrupted):
    out = tmp_path / "run"
    process = start_cli(*TINY, "--max-steps", str(STEPS), "--out", str(out))
    wait_for_step(out, 5, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "SIGTERM" in stderr and f"--resume {out}" in stderr and "Traceback" not in stderr
    assert (out / "learning_curves.png").stat().st_size > 0  # written on any stop
    stopped = load_checkpoint(out / "checkpoints" / "last.pt")["progress"]
    assert 5 <= stopped["step"] < STEPS and stopped["epoch"] == 0
    assert stopped["step_in_epoch"] == stopped["step"]  # the position within the epoch is saved
    assert load_checkpoint(out / "checkpoints" / "best.pt")["progress"]["step"] == stopped["step"]  # validated

    resumed = run_cli("--resume", str(out), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert same_parameters(out / "checkpoints" / "last.pt", uninterrupted / "checkpoints" / "last.pt")
    got, expected = step_records(out), step_records(uninterrupted)
    assert sorted(got) == list(range(1, STEPS + 1))
    assert [got[s]["loss"] for s in got] == [expected[s]["loss"] for s in got]


def test_kill_9_loses_at_most_checkpoint_every_updates_and_its_stale_lock_is_taken_over(tmp_path, uninterrupted):
    out = tmp_path / "run"
    process = start_cli(*TINY, "--max-steps", str(STEPS), "--checkpoint-every", "4", "--out", str(out))
    wait_for_step(out, 10, process)
    process.kill()
    process.communicate()
    saved = load_checkpoint(out / "checkpoints" / "last.pt")["progress"]
    assert saved["step"] >= 8 and saved["step"] % 4 == 0 and saved["epoch"] == 0  # mid-epoch last.pt
    assert (out / ".lock").read_text().strip() == str(process.pid)  # left behind by the dead process

    resumed = run_cli("--resume", str(out), "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert same_parameters(out / "checkpoints" / "last.pt", uninterrupted / "checkpoints" / "last.pt")
    assert sorted(step_records(out)) == list(range(1, STEPS + 1))


def test_kill_9_during_resume_start_up_leaves_metrics_intact(tmp_path):
    out = tmp_path / "run"
    assert run_cli(*TINY, "--max-steps", "3", "--out", str(out)).returncode == 0
    metrics = out / "metrics.jsonl"
    first = metrics.read_text().splitlines()[1]  # a step-1 record, kept by any resume
    metrics.write_text(metrics.read_text() + (first + "\n") * 100_000)  # a long run's log
    before = metrics.read_bytes()
    for attempt in range(3):
        process = start_cli("--resume", str(out), "--max-steps", "6", "--quiet")
        caught = False
        while process.poll() is None and not caught:
            caught = any(p.name.startswith("metrics.jsonl.") and p.name.endswith(".tmp") for p in out.iterdir())
            time.sleep(0.001)
        process.kill()
        process.communicate()
        assert metrics.read_bytes() == before  # never truncated in place
        if caught:
            break
    assert caught, "the resume was never caught while rewriting metrics.jsonl"
    resumed = run_cli("--resume", str(out), "--max-steps", "6", "--quiet")
    assert resumed.returncode == 0, resumed.stderr
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # the orphan was removed
    assert sorted(step_records(out)) == list(range(1, 7))


# ----------------------------------------------------------------------------- one run per directory

def test_concurrent_run_into_the_same_directory_is_refused_naming_the_pid(tmp_path):
    out = tmp_path / "run"
    first = start_cli(*TINY, "--max-steps", "100000", "--out", str(out))
    wait_for_step(out, 2, first)
    for second in (run_cli(*TINY, "--max-steps", "2", "--out", str(out), "--overwrite"),
                   run_cli("--resume", str(out), "--quiet")):
        assert second.returncode == 2
        assert f"in use by process {first.pid}" in one_line_error(second)
    first.send_signal(signal.SIGINT)
    _, stderr = first.communicate(timeout=120)
    assert first.returncode == 130 and "SIGINT" in stderr
    assert load_checkpoint(out / "checkpoints" / "last.pt")["progress"]["step"] >= 2
    assert (out / "learning_curves.png").stat().st_size > 0  # a stopped run draws its curves too


def test_rerun_into_a_finished_directory_is_refused_and_overwrite_replaces_only_our_files(tmp_path):
    out = tmp_path / "run"
    assert run_cli(*TINY, "--max-steps", "2", "--out", str(out)).returncode == 0
    (out / "notes.txt").write_text("mine")
    metrics = (out / "metrics.jsonl").read_bytes()
    again = run_cli(*TINY, "--max-steps", "2", "--out", str(out))
    assert again.returncode == 2
    line = one_line_error(again)
    assert "not empty" in line and "--resume" in line and "--overwrite" in line
    assert (out / "metrics.jsonl").read_bytes() == metrics

    finished = run_cli("--resume", str(out), "--quiet")
    assert finished.returncode == 2 and "--max-steps" in one_line_error(finished) and "finished" in finished.stderr

    bigger = [a if a != "6" else "9" for a in TINY]  # --rnn-dim 9
    replaced = run_cli(*bigger, "--max-steps", "1", "--out", str(out), "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "config.json").read_text())["model_config"]["rnn_dim"] == 9
    assert sorted(step_records(out)) == [1]
    for name in ("best.pt", "last.pt"):  # no checkpoint of the old model size is left
        assert load_checkpoint(out / "checkpoints" / name)["model_config"].rnn_dim == 9
    assert not [p for p in out.iterdir() if p.name.startswith(".overwritten")]


def test_a_second_lock_on_a_held_directory_is_refused_and_a_released_one_is_free(tmp_path):
    held = RunLock(tmp_path).acquire()
    with pytest.raises(RunDirError, match=f"in use by process {os.getpid()}"):
        RunLock(tmp_path).acquire()  # flock: a second open file description conflicts
    held.release()
    RunLock(tmp_path).acquire().release()


@pytest.mark.parametrize("where", ["file", "uncreatable", "unwritable"])
def test_an_unusable_out_is_a_one_line_error(tmp_path, where):
    if where == "file":
        out = tmp_path / "taken"
        out.write_text("x")
        needle = "is a file"
    elif where == "uncreatable":
        out = Path("/sys/pyro-zforcing-test/run")  # sysfs: no new folders, even for root
        needle = "cannot create the run directory"
    else:
        out = Path("/sys/kernel")  # exists; no new files in it, even for root
        needle = "not writable"
    result = run_cli(*TINY, "--max-steps", "1", "--out", str(out))
    assert result.returncode == 2
    line = one_line_error(result)
    assert needle in line and str(out) in line


# ----------------------------------------------------------------------------- files

def test_full_disk_during_a_checkpoint_write_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"payload": torch.ones(3)})
    before = path.read_bytes()

    def full(handle, data):
        handle.write(data[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "write_all", full)
    with pytest.raises(WriteError, match=f"^disk full while writing {path}$"):
        save_checkpoint(path, {"payload": torch.zeros(3)})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_full_disk_keeps_the_old_report_table_and_figure(tmp_path, monkeypatch):
    """Reports, study tables and figures are replaced whole or not at all, like checkpoints."""
    from pyro_zforcing.studies.ablation import CSV_COLUMNS
    from pyro_zforcing.evaluation.plots import plt, save_figure

    rows = [{"variant": "aux", "seed": 0, "test_iwae": -1.5, "not_a_column": 1}]
    files.write_atomic(tmp_path / "study.csv", files.csv_text(rows, CSV_COLUMNS))
    header, line = (tmp_path / "study.csv").read_text().splitlines()
    assert header.split(",") == list(CSV_COLUMNS) and line.startswith("aux,0,") and "-1.5" in line
    save_figure(plt.figure(), tmp_path / "study.png")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert before["study.png"].startswith(b"\x89PNG")

    def full(handle, data):
        handle.write(data[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files, "write_all", full)
    with pytest.raises(WriteError, match="^disk full while writing .*study.png$"):
        save_figure(plt.figure(), tmp_path / "study.png")
    with pytest.raises(WriteError, match="^disk full while writing .*study.csv$"):
        files.write_atomic(tmp_path / "study.csv", files.csv_text(rows * 2, CSV_COLUMNS))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_full_disk_on_the_command_line_is_one_line_naming_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    program = ("import errno, sys; from pyro_zforcing import files; from pyro_zforcing.cli.main import main\n"
               "write = files.write_all\n"
               "def full(handle, data):\n"
               "    if '.pt.' in handle.name:\n"
               "        raise OSError(errno.ENOSPC, 'No space left on device')\n"
               "    write(handle, data)\n"
               "files.write_all = full\n"
               "sys.exit(main(sys.argv[1:]))\n")
    result = subprocess.run([sys.executable, "-c", program, *TINY, "--max-steps", "1", "--out", str(out)],
                            capture_output=True, text=True, timeout=300, cwd=ROOT, env=env())
    assert result.returncode == 1
    assert one_line_error(result).endswith(f"disk full while writing {out / 'checkpoints' / 'best.pt'}")


def test_torn_last_metrics_line_is_dropped_with_a_warning_naming_the_file(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    good = [json.dumps({"kind": "step", "step": s, "loss": 1.0}) for s in (1, 2, 3)]
    path.write_text("\n".join(good) + '\n{"kind": "step", "st')
    with caplog.at_level(logging.WARNING):
        MetricsLog(path, keep_until_step=2)
    assert str(path) in caplog.text and "torn last line 4" in caplog.text
    assert path.read_text() == good[0] + "\n" + good[1] + "\n"


def test_corrupt_metrics_line_in_the_middle_is_an_error_naming_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    text = '{"kind": "step", "step": 1}\n{"kind": garbage\n{"kind": "step", "step": 2}\n'
    path.write_text(text)
    with pytest.raises(MetricsError, match=f"{path}: line 2: not valid JSON .*; repair or remove that line"):
        MetricsLog(path, keep_until_step=2)
    assert path.read_text() == text


def test_orphaned_temporaries_of_dead_writers_go_and_live_or_foreign_files_stay(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    names = {f"last.pt.{dead_pid}.abc123.tmp": True, "cache.npz.k2j4_x.tmp": True,  # older, pid-less
             f"metrics.jsonl.{os.getpid()}.zz9.tmp": False,  # a live writer (this process)
             f"study.png.{dead_pid}.q7.tmp": True, "photo.png.1.tmp": False,  # figures: only with a pid
             "notes.tmp": False, "user.txt.1.tmp": False, "last.pt": False}
    for name in names:
        (tmp_path / name).write_text("x")
        os.utime(tmp_path / name, (time.time() - 3600,) * 2)
    fresh = tmp_path / f"best.pt.{dead_pid}.new.tmp"
    fresh.write_text("x")  # a dead writer's, but just touched: on a shared folder, wait
    removed = remove_orphans(tmp_path, exclusive=False)
    assert sorted(p.name for p in removed) == sorted(n for n, gone in names.items() if gone)
    assert fresh.exists()
    assert {p.name for p in remove_orphans(tmp_path, exclusive=True)} == {
        fresh.name, f"metrics.jsonl.{os.getpid()}.zz9.tmp"}  # our own folder: every temporary of ours


def test_new_run_removes_orphaned_checkpoint_temporaries(tmp_path, small_digits):
    out = tmp_path / "run"
    make_trainer(out, small_digits, max_steps=1).fit()
    orphan = out / "checkpoints" / "last.pt.999999999.x1.tmp"
    orphan.write_bytes(b"half a checkpoint")
    Trainer.resume(out, quiet=True, splits=small_digits, max_steps=2).fit()
    assert not orphan.exists()


def test_write_atomic_replaces_whole_files(tmp_path):
    path = tmp_path / "config.json"
    write_atomic(path, "old\n")
    write_atomic(path, lambda handle: handle.write(b"new\n"))
    assert path.read_text() == "new\n" and [p.name for p in tmp_path.iterdir()] == ["config.json"]


# ----------------------------------------------------------------------------- checkpoints

def test_sub_epoch_run_has_best_pt_and_evaluate_and_sample_take_the_run_directory(tmp_path):
    out = tmp_path / "run"
    assert run_cli(*TINY, "--max-steps", "2", "--out", str(out)).returncode == 0
    best = load_checkpoint(out / "checkpoints" / "best.pt")["progress"]
    assert best["step"] == 2 and best["validated_step"] == 2  # the model training stopped with, validated
    evaluated = run_cli("evaluate", "--checkpoint", str(out), "--iwae-samples", "2", "--no-plots", "--quiet")
    assert evaluated.returncode == 0, evaluated.stderr
    assert list(out.glob("eval*.json"))
    sampled = run_cli("sample", "--checkpoint", str(out), "-n", "1", "--interpolate", "0", "--quiet")
    assert sampled.returncode == 0, sampled.stderr
    assert list((out / "samples").iterdir())


def test_bad_checkpoints_name_the_file_and_never_suggest_weights_only_false(tmp_path, small_digits):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match=f"{empty} is empty"):
        load_checkpoint(empty)
    noise = tmp_path / "noise.pt"
    noise.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                    dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(CheckpointError, match="not a pyro-zforcing checkpoint or is corrupt") as error:
        load_checkpoint(noise)
    assert "weights_only" not in str(error.value) and str(noise) in str(error.value)
    pickled = tmp_path / "pickled.pt"
    torch.save({"format": 1, "thing": Fraction(1, 3)}, pickled)  # a class weights_only refuses
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(pickled)
    assert "weights_only" not in str(error.value)
    partial = tmp_path / "partial.pt"
    torch.save({"format": 1, "model_config": {}}, partial)
    with pytest.raises(CheckpointError, match="no 'data_config' entry"):
        load_checkpoint(partial)


def test_weights_of_another_shape_or_missing_keys_name_the_file_and_key(tmp_path, small_digits):
    out = tmp_path / "run"
    make_trainer(out, small_digits, max_steps=1).fit()
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    wider = build_objective(state["model_config"].__class__(**{**vars(state["model_config"]), "rnn_dim": 7}),
                            "backward")
    with pytest.raises(CheckpointError, match=r"last.pt: weight '[\w.]+' has shape \(\d+"):
        load_weights(wider, state["objective"], out / "checkpoints" / "last.pt")
    same = build_objective(state["model_config"], "backward")
    missing = dict(state["objective"])
    first = next(iter(missing))
    del missing[first]
    with pytest.raises(CheckpointError, match=f"weight '{first}' is missing"):
        load_weights(same, missing, "x.pt")
    with pytest.raises(CheckpointError, match="'extra' in the checkpoint has no place"):
        load_weights(same, {**state["objective"], "extra": torch.ones(1)}, "x.pt")


@pytest.mark.parametrize("kl", ["analytic", "sampled"])
def test_divergence_before_any_checkpoint_says_none_was_written(tmp_path, small_digits, kl):
    import pyro

    pyro.enable_validation(False)
    trainer = make_trainer(tmp_path / "run", small_digits, epochs=1, kl=kl)
    with torch.no_grad():
        trainer.objective.model.emission.linear.weight.fill_(float("nan"))
    # both estimators warn of the NaN loss (the analytic one as Trace_ELBO does), then the trainer stops
    warned = pytest.warns(UserWarning, match="NaN")
    with pytest.raises(TrainingDiverged, match="no training checkpoint was written yet"), warned:
        trainer.fit()
    assert not (tmp_path / "run" / "checkpoints").exists()  # a NaN bound makes no best.pt


def test_checkpoint_every_writes_last_pt_within_the_epoch(tmp_path, small_digits, monkeypatch):
    trainer = make_trainer(tmp_path / "run", small_digits, epochs=1, checkpoint_every=2)
    saves = []
    save = trainer.save
    monkeypatch.setattr(trainer, "save", lambda name: (saves.append((name, trainer.progress.step)), save(name)))
    trainer.fit()
    assert saves == [("best", 0), ("last", 2), ("last", 4), ("best", 5), ("last", 5), ("last", 5)]


# ----------------------------------------------------------------------------- tensorboard

def test_tensorboard_logs_scalars_kl_per_step_and_samples_without_changing_training(tmp_path, small_digits):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    make_trainer(tmp_path / "plain", small_digits, epochs=1).fit()
    config = TrainConfig(batch_size=8, log_every=1, epochs=1)
    Trainer.create(data_config=DataConfig(), train_config=config, out_dir=tmp_path / "board", model_sizes=SIZES,
                   quiet=True, splits=small_digits, tensorboard=True).fit()
    assert same_parameters(tmp_path / "plain" / "checkpoints" / "last.pt",
                           tmp_path / "board" / "checkpoints" / "last.pt")

    listed = json.loads((tmp_path / "board" / "manifest.json").read_text())["files"]
    assert [n for n in listed if n.startswith("tensorboard/")] == [
        f"tensorboard/{p.name}" for p in (tmp_path / "board" / "tensorboard").iterdir()]  # ours, for --overwrite
    events = EventAccumulator(str(tmp_path / "board" / "tensorboard"),
                              size_guidance={"scalars": 0, "images": 0, "histograms": 0}).Reload()
    tags = events.Tags()
    records = step_records(tmp_path / "board")
    elbo = events.Scalars("step/elbo")
    assert [e.step for e in elbo] == sorted(records) == [1, 2, 3, 4, 5]
    assert [e.value for e in elbo] == pytest.approx([records[s]["elbo"] for s in sorted(records)], rel=1e-6)
    assert [e.step for e in events.Scalars("epoch/valid_elbo")] == [0, 5]
    histograms = events.Histograms("kl_per_step")
    assert [h.step for h in histograms] == [0, 5]
    buckets = histograms[-1].histogram_value.bucket
    assert len(buckets) == 64 and min(buckets) >= 0 and sum(buckets) > 0  # KL >= 0 at each of 64 steps
    assert "kl_per_step_curve" in tags["images"]
    image = events.Images("samples")[-1]
    assert (image.step, image.width, image.height) == (5, 4 * 8, 8)  # 4 digit samples of 8 x 8 pixels side by side


@pytest.mark.parametrize("lost", [("last.pt",), ("last.pt", "best.pt")])
def test_resuming_a_run_killed_before_its_first_last_pt_says_to_start_again_with_overwrite(tmp_path, lost):
    """A kill while the first last.pt is written leaves config.json and no last.pt (writes are
    atomic): --resume says what to do, in one line, and the command it gives works."""
    out = tmp_path / "run"
    assert run_cli(*TINY, "--max-steps", "2", "--out", str(out)).returncode == 0
    for name in lost:
        (out / "checkpoints" / name).unlink()
    resumed = run_cli("--resume", str(out), "--quiet")
    assert resumed.returncode == 2
    line = one_line_error(resumed)
    assert "last.pt not found" in line and f"--out {out} --overwrite" in line and "nothing to continue" in line
    again = run_cli(*TINY, "--max-steps", "2", "--out", str(out), "--overwrite")
    assert again.returncode == 0, again.stderr
    assert load_checkpoint(out / "checkpoints" / "last.pt")["progress"]["step"] == 2
