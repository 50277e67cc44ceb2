#!/usr/bin/env python
"""Wall time of a two-model ``compare`` study with ``--jobs 1`` and ``--jobs 2`` (same tables checked).

Each setting runs the command line in a fresh study directory (a subprocess, as a user runs it)
and is timed from start to exit; the two ``compare.csv`` and ``study.csv`` must be byte-identical.

    python benchmarks/study_jobs.py --max-steps 60 --rnn-dim 32

Both settings run with ``OMP_NUM_THREADS=1`` (on 2 cores ``--jobs 2`` gives each run one thread too).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="vrnn,zforcing")
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--rnn-dim", type=int, default=64)
    parser.add_argument("--jobs", default="1,2", help="the --jobs settings to time (default: %(default)s)")
    args = parser.parse_args()
    # one thread per run in both settings: --jobs 2 gives each child max(1, 2 cores // 2) = 1, and torch's
    # float32 reductions differ in their last digits between thread counts, so tables match at equal threads
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    tables, seconds = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for jobs in args.jobs.split(","):
            study = Path(folder) / f"jobs-{jobs}"
            command = [sys.executable, "-m", "pyro_zforcing", "compare", "--models", args.models, "--seeds", "1",
                       "--rnn-dim", str(args.rnn_dim), "--mlp-dim", str(args.rnn_dim), "--max-steps",
                       str(args.max_steps), "--iwae-samples", "5", "--jobs", jobs, "--study-dir", str(study), "--quiet"]
            start = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env)
            seconds[jobs] = time.perf_counter() - start
            if done.returncode != 0:
                sys.exit(f"--jobs {jobs} failed: {done.stderr.strip()[-2000:]}")
            tables[jobs] = [(study / name).read_bytes() for name in ("compare.csv", "study.csv")]
            print(f"--jobs {jobs}: {seconds[jobs]:.1f} s wall", flush=True)
    first = args.jobs.split(",")[0]
    same = all(tables[jobs] == tables[first] for jobs in tables)
    print(f"tables identical across settings: {same}")
    for jobs in seconds:
        print(f"--jobs {jobs}: {seconds[jobs]:.1f} s, {seconds[first] / seconds[jobs]:.2f}x --jobs {first}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
