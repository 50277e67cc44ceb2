"""Progress a user sees in a log file: a line at a steady interval with count, rate and time left."""

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyro_zforcing.evaluation.progress import ProgressLines, duration_text

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_progress_lines_come_every_interval_with_the_rate_and_the_exact_time_left(caplog, seed):
    """A generated schedule of updates at a constant rate: one line per interval, each with the
    count of the total and the time left that rate gives (an independent computation)."""
    rng = np.random.default_rng(seed)
    total, rate, every = int(rng.integers(200, 5000)), float(rng.uniform(0.5, 20)), float(rng.integers(5, 60))
    clock = Clock()
    lines = ProgressLines("train", total, unit="update", every=every, clock=clock,
                          logger=logging.getLogger("progress-test"))
    lines.set_postfix(epoch="3/20")
    with caplog.at_level(logging.INFO, logger="progress-test"):
        for done in range(1, total + 1):
            clock.now = done / rate
            lines.update(1)
        lines.close()
    logged = [r.getMessage() for r in caplog.records]
    duration = total / rate
    assert len(logged) in (int(duration // every), int(duration // every) + 1)
    first = logged[0]
    done = int(np.ceil(every * rate - 1e-9))
    assert first.startswith(f"train: {done:,}/{total:,} updates")
    assert f"{rate:.2f} updates/s" in first and first.endswith("; epoch 3/20")
    assert f"{duration_text((total - done) / rate)} left" in first


def test_durations_read_as_a_person_would_say_them():
    assert [duration_text(s) for s in (0, 59.4, 60, 502, 3599, 3600, 11100)] == [
        "0 s", "59 s", "1 min 0 s", "8 min 22 s", "59 min 59 s", "1 h 00 min", "3 h 05 min"]


@pytest.mark.parametrize("quiet", [False, True])
def test_training_into_a_pipe_shows_epochs_as_k_of_n_and_progress_lines_unless_quiet(tmp_path, quiet):
    program = ("import sys; import pyro_zforcing.evaluation.progress as p; p.EVERY_S = 0.0; "
               "from pyro_zforcing.cli.main import main; sys.exit(main(sys.argv[1:]))")
    args = ["--data-option", "rows=true", "--emb-dim", "4", "--rnn-dim", "6", "--z-dim", "2", "--mlp-dim", "6",
            "--batch-size", "64", "--epochs", "2", "--out", str(tmp_path / "run")] + (["--quiet"] if quiet else [])
    result = subprocess.run([sys.executable, "-c", program, *args], capture_output=True, text=True, cwd=ROOT,
                            env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}, timeout=600)
    assert result.returncode == 0, result.stderr
    err = result.stderr
    if quiet:
        assert "updates/s" not in err and "epoch 1/2" not in err
    else:
        assert "epoch 1/2: valid ELBO" in err and "epoch 2/2: valid ELBO" in err
        assert "train: " in err and "updates/s" in err and " left; epoch " in err
