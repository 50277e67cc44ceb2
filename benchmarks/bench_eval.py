"""Cost of evaluating a split: IWAE(K) beside one training pass over the same sequences.

    python benchmarks/bench_eval.py                 # text and long speech, K = 25
    python benchmarks/bench_eval.py --case text --quick

Cases: ``text``, 50 sentences of 64 tokens over a vocabulary of 10,000 (a Categorical emission);
``speech``, one 60 s utterance at 16 kHz in frames of 200 samples (4,800 Gaussian steps of 200).
Default model sizes (emb 64, LSTM 128, z 16, MLP 128), float32, random weights and data.

For each case it prints one JSON line: ``iwae_s``, the time of ``evaluate.evaluate_split`` with
K importance samples (what ``run.py evaluate`` runs, validation off); ``train_s``, one training
pass (loss forward + backward) over the same sequences; their ratio; and the peak memory of each
(growth of the resident set over the resident size before the call, each in a fresh process,
``benchmarks/common.py``), with ``*_peak_rss_mb`` the process's whole peak resident set.
Targets: IWAE(25) peak under 1 GB, IWAE(25) time at most 10x the training pass.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import _status_kb, device_and_threads, environment, memory_in_subprocess, peak_memory_mb  # noqa: E402
from pyro_zforcing.config import ModelConfig  # noqa: E402
from pyro_zforcing.data import collate_sequences  # noqa: E402
from pyro_zforcing.data.base import DataInfo  # noqa: E402
from pyro_zforcing.evaluation.bounds import evaluate_split  # noqa: E402
from pyro_zforcing.build import build_objective  # noqa: E402

CASES = ("text", "speech")


def case_data(name: str) -> Tuple[List[np.ndarray], DataInfo, ModelConfig]:
    """The sequences, their description and the model of one case (seeded)."""
    gen = np.random.RandomState(0)
    if name == "text":
        vocab = 10_000
        sequences = [gen.randint(0, vocab, size=64) for _ in range(50)]
        info = DataInfo(name="text", emission="categorical", dim=vocab, unit="word")
        return sequences, info, ModelConfig(input_dim=vocab, emission="categorical")
    frames = 60 * 16_000 // 200
    sequences = [gen.randn(frames, 200).astype(np.float32)]
    info = DataInfo(name="speech", emission="gaussian", dim=200, unit="sample", units_per_step=200,
                    sample_rate=16_000)
    return sequences, info, ModelConfig(input_dim=200, emission="gaussian")


def build_calls(name: str, device: torch.device, num_samples: int, batch_size: int) -> Dict[str, Callable[[], None]]:
    sequences, info, config = case_data(name)
    torch.manual_seed(0)
    objective = build_objective(config, "backward").to(device)
    batch = collate_sequences(sequences).to(device, torch.float32)

    def train_pass():
        objective.zero_grad(set_to_none=True)
        objective(batch).backward()

    def iwae():
        evaluate_split(objective, sequences, info, num_samples=num_samples, batch_size=batch_size, device=device)

    return {"train": train_pass, "iwae": iwae}


def fastest_seconds(calls: Dict[str, Callable[[], None]], repeats: int) -> Dict[str, float]:
    """The fastest of ``repeats`` calls of each contender, called in turn (A, B, A, B, ...) after
    one warm-up round, so a background load that comes and goes slows both alike."""
    for fn in calls.values():
        fn()
    best = {name: float("inf") for name in calls}
    for _ in range(repeats):
        for name, fn in calls.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=CASES, action="append", help="repeatable (default: both)")
    parser.add_argument("--num-samples", type=int, default=25, help="IWAE particles K (default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=50, help="sequences per evaluation batch (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads, 0 = torch's default (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls per contender, fastest kept (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="one timed call")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--measure-memory", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    pyro.enable_validation(False)  # training's default; evaluate_split turns it off itself
    device = device_and_threads("cpu", args.threads)
    cases = args.case or list(CASES)

    if args.measure_memory:  # child process: the peak memory of one contender
        calls = build_calls(cases[0], device, args.num_samples, args.batch_size)
        growth = peak_memory_mb(calls[args.measure_memory], device, calls=1)
        print(json.dumps({"peak_mb": growth, "peak_rss_mb": round(_status_kb("VmHWM") / 1024, 1)}))
        return 0

    repeats = 1 if args.quick else args.repeats
    for name in cases:
        calls = build_calls(name, device, args.num_samples, args.batch_size)
        record = {"bench": "eval", "case": name, "num_samples": args.num_samples}
        for who, took in fastest_seconds(calls, repeats).items():
            record[f"{who}_s"] = round(took, 3)
        record["iwae_over_train"] = round(record["iwae_s"] / record["train_s"], 2)
        if not args.no_memory:
            child = ["--case", name, "--num-samples", str(args.num_samples), "--batch-size", str(args.batch_size),
                     "--threads", str(args.threads)]
            for who in ("train", "iwae"):
                measured = memory_in_subprocess(__file__, [*child, "--measure-memory", who])
                record[f"{who}_peak_mb"] = measured["peak_mb"]
                record[f"{who}_peak_rss_mb"] = measured["peak_rss_mb"]
        record.update(environment(device), repeats=repeats, omp_num_threads=os.environ.get("OMP_NUM_THREADS"))
        print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
