"""Studies across processes: --jobs N, a failed run among finished ones, signals, and submitit's local executor.

Tiny models on 8-row digits, two variants x one seed, so each study is seconds of training; most
of the time is the children's start-up (importing torch and Pyro).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from pyro_zforcing.cli.main import main as zforcing

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--variants", "aux,no-aux", "--seeds", "1", "--data-option", "rows=true", "--emb-dim", "4", "--rnn-dim", "6",
        "--z-dim", "2", "--mlp-dim", "6", "--batch-size", "8", "--log-every", "1", "--iwae-samples", "2",
        "--eval-batch-size", "50"]
STEPS = ["--max-steps", "40"]
RUNS = ("aux-seed0", "no-aux-seed0")


@pytest.fixture(autouse=True)
def one_thread():
    """Runs in this process with one thread, as each child of --jobs 2 on 2 cores (tiny tensors
    are not split over threads anyway)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def one_job(tmp_path_factory):
    """The reference: the study trained in this process, one run after another."""
    study = tmp_path_factory.mktemp("one") / "study"
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert zforcing(["ablate", *TINY, *STEPS, "--jobs", "1", "--study-dir", str(study), "--quiet"]) == 0
    finally:
        torch.set_num_threads(previous)
    return study


def test_two_jobs_write_the_same_table_as_one(tmp_path, one_job):
    study = tmp_path / "study"
    assert zforcing(["ablate", *TINY, *STEPS, "--jobs", "2", "--study-dir", str(study), "--quiet"]) == 0
    assert (study / "study.csv").read_bytes() == (one_job / "study.csv").read_bytes()
    assert (study / "study.md").read_bytes() == (one_job / "study.md").read_bytes()
    for run in RUNS:  # each run wrote its own directory, in a process of its own
        lock = (study / run / ".lock")
        assert lock.exists() and lock.read_text() == ""  # released


def test_a_failed_run_is_named_and_the_other_finishes(tmp_path, one_job, capsys):
    study = tmp_path / "study"
    study_file = tmp_path / "study.json"  # a learning rate of 1e30 makes the first update's parameters huge
    study_file.write_text(json.dumps({"variants": {"diverges": {"lr": 1e30}, "no-aux": {"aux_weight": 0.0}}}))
    tiny = [arg for arg in TINY if arg != "aux,no-aux" and arg != "--variants"]
    code = zforcing(["ablate", "--study", str(study_file), *tiny, *STEPS, "--jobs", "2", "--study-dir", str(study),
                     "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert "1 of 2 runs failed (diverges-seed0: " in err
    assert "training diverged: after update 1 (epoch 0)" in err  # said as a divergence, not as Pyro's bare check
    error_lines = [line for line in err.splitlines() if line.startswith("zforcing ablate: error:")]
    assert len(error_lines) == 1 and "Traceback" not in err
    assert not (study / "diverges-seed0" / "result.json").exists()
    assert (study / "no-aux-seed0" / "result.json").exists()  # the other run completed
    assert json.loads((study / "no-aux-seed0" / "result.json").read_text()) == \
        json.loads((one_job / "no-aux-seed0" / "result.json").read_text())
    assert not (study / "study.csv").exists()  # no table with a run missing


def test_sigterm_stops_every_run_with_its_checkpoint_and_a_rerun_gives_the_same_table(tmp_path, one_job):
    study = tmp_path / "study"
    longer = ["--max-steps", "160"]  # long enough to be stopped in training; the table is another one
    command = [sys.executable, "-m", "pyro_zforcing", "ablate", *TINY, *longer, "--jobs", "2",
               "--study-dir", str(study), "--quiet"]
    returncode, err = _sigterm_once_training(command, study)
    assert returncode == 143, err
    assert "stopped by SIGTERM: " in err and "Traceback" not in err, err
    # a run whose last update was under way when the signal came may finish; every other run stopped
    # with its checkpoint and without a result
    stopped = [run for run in RUNS if not (study / run / "result.json").exists()]
    assert stopped and f"{len(stopped)} run(s) stopped" in err, err
    for run in stopped:
        assert (study / run / "checkpoints" / "last.pt").exists()
    rerun = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=SUBPROCESS_ENV, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    whole = tmp_path / "whole"
    assert zforcing(["ablate", *TINY, *longer, "--jobs", "1", "--study-dir", str(whole), "--quiet"]) == 0
    assert (study / "study.csv").read_bytes() == (whole / "study.csv").read_bytes()


def test_sigterm_with_runs_not_yet_started_ends_the_study_and_names_them(tmp_path):
    """Three runs on two processes: the signal stops the two running, and the third never starts
    (the parent used to keep waiting for it)."""
    study = tmp_path / "study"
    three = [arg if arg != "aux,no-aux" else "aux,no-aux,kla" for arg in TINY]
    command = [sys.executable, "-m", "pyro_zforcing", "ablate", *three, "--max-steps", "160", "--jobs", "2",
               "--study-dir", str(study), "--quiet"]
    returncode, err = _sigterm_once_training(command, study)
    assert returncode == 143, err
    assert "1 not started" in err and "Traceback" not in err, err
    assert not (study / "kla-seed0").exists()


def test_submitit_local_executor_gives_the_table_of_one_job(tmp_path, one_job, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # the jobs import this checkout
    study = tmp_path / "study"
    assert zforcing(["ablate", *TINY, *STEPS, "--launcher", "submitit-local", "--study-dir", str(study), "--quiet"]) == 0
    assert (study / "study.csv").read_bytes() == (one_job / "study.csv").read_bytes()
    assert any((study / ".submitit").iterdir())  # submitit's job files live in the study directory
    # resubmitted: every run is finished, so nothing is submitted and the table is the same
    before = sorted(p.name for p in (study / ".submitit").iterdir())
    assert zforcing(["ablate", *TINY, *STEPS, "--launcher", "submitit-local", "--study-dir", str(study), "--quiet"]) == 0
    assert sorted(p.name for p in (study / ".submitit").iterdir()) == before
    assert (study / "study.csv").read_bytes() == (one_job / "study.csv").read_bytes()


def test_jobs_rule_divides_the_cores_and_names_its_flag(capsys):
    from pyro_zforcing.studies.launch import threads_per_job

    assert [threads_per_job(n, cores=32) for n in (1, 2, 3, 32, 64)] == [32, 16, 10, 1, 1]
    assert zforcing(["ablate", "--jobs", "0", "--quiet"]) == 2
    assert "--jobs" in capsys.readouterr().err


SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _sigterm_once_training(command, study: Path):
    """Start the study ``command``, send it SIGTERM once both of ``RUNS`` have logged an update, and
    return (exit code, stderr); a parent still running two minutes later is killed and fails the test."""
    parent = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                              env=SUBPROCESS_ENV)
    try:
        deadline = time.time() + 120
        while not all('"kind": "step"' in _read(study / run / "metrics.jsonl") for run in RUNS):
            assert parent.poll() is None and time.time() < deadline, parent.communicate()
            time.sleep(0.05)
        parent.send_signal(signal.SIGTERM)
        _, err = parent.communicate(timeout=120)
    finally:
        parent.kill()  # a parent that hangs must not outlive the test
    return parent.returncode, err


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
