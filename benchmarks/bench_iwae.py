#!/usr/bin/env python
"""Per-sequence IWAE (K=25) of the library against plain PyTorch and Pyro's ``Importance``.

Contenders, same weights, same batch, no gradients:

- ``pyro``: ``pyro_zforcing.infer.iwae_bound``, the K particles as K*B rows of one pass;
- ``torch``: ``plain_iwae_bound``, the same vectorised bound written in plain PyTorch
  (tested equal to the library's from the same noise in tests/test_benchmarks.py);
- ``importance``: ``pyro.infer.Importance(model, guide, num_samples=K)`` on the whole batch,
  which loops over the K samples and sums every log-weight over the batch: it estimates
  log p(whole batch), not one bound per sequence. It is the cheapest way to call it, so the
  ratio is the most favourable to ``Importance``. Per-sequence bounds from it need a loop
  over the sequences too (``--per-sequence-importance`` times that: B times the traces).

Prints one JSON line per config.

    OMP_NUM_THREADS=1 python benchmarks/bench_iwae.py
    python benchmarks/bench_iwae.py --quick --config small
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyro  # noqa: E402
import torch  # noqa: E402
from pyro.infer import Importance  # noqa: E402

from benchmarks.common import (CONFIGS, device_and_threads, environment, interleaved_times,  # noqa: E402
                               median_ms, peak_memory_fields, peak_memory_mb, synthetic_batch)
from benchmarks.fast_reference import FastPlainZForcing, plain_iwae_bound  # noqa: E402
from pyro_zforcing.config import ModelConfig  # noqa: E402
from pyro_zforcing.data.base import Batch  # noqa: E402
from pyro_zforcing.infer import iwae_bound  # noqa: E402
from pyro_zforcing.build import build_objective  # noqa: E402


@torch.no_grad()
def importance_log_normalizer(model, guide, batch: Batch, num_samples: int) -> torch.Tensor:
    """log (1/K) sum_k prod_b w_kb from ``pyro.infer.Importance``: one number for the batch."""
    return Importance(model, guide, num_samples=num_samples).run(batch).get_log_normalizer()


def per_sequence_importance(model, guide, batch: Batch, num_samples: int) -> torch.Tensor:
    """Per-sequence bounds ``(B,)`` from ``Importance``, one sequence at a time."""
    bounds = []
    for b in range(batch.batch_size):
        length = int(batch.lengths[b])
        one = Batch(batch.x[b:b + 1, :length], batch.mask[b:b + 1, :length], batch.lengths[b:b + 1])
        bounds.append(importance_log_normalizer(model, guide, one, num_samples))
    return torch.stack(bounds)


def build_calls(config_name: str, device: torch.device, num_samples: int, per_sequence: bool,
                chunk: Optional[int] = None):
    config = CONFIGS[config_name]
    torch.manual_seed(0)
    objective = build_objective(ModelConfig(**config.model_sizes()), "backward").to(device)
    fast = FastPlainZForcing.like(objective).to(device)
    batch = synthetic_batch(config, device)
    model, guide = objective.model, objective.guide
    calls = {
        "pyro": lambda: iwae_bound(model, guide, batch, num_samples=num_samples, chunk=chunk),
        "torch": lambda: plain_iwae_bound(fast, batch.x, batch.mask, batch.lengths, num_samples=num_samples),
        "importance": lambda: importance_log_normalizer(model, guide, batch, num_samples),
    }
    if per_sequence:
        calls["importance_per_sequence"] = lambda: per_sequence_importance(model, guide, batch, num_samples)
    return config, calls


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), action="append", help="repeatable (default: all)")
    parser.add_argument("--num-samples", type=int, default=25, help="IWAE particles K (default: %(default)s)")
    parser.add_argument("--chunk", type=int, default=None,
                        help="particles per pass of the library's bound (default: all K at once)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads, 0 = torch's default (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per contender (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="1 warm-up round, 3 repeats")
    parser.add_argument("--per-sequence-importance", action="store_true",
                        help="also time Importance looped over the sequences (slow)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--measure-memory", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    pyro.enable_validation(False)
    device = device_and_threads(args.device, args.threads)
    configs = args.config or sorted(CONFIGS, key=lambda name: CONFIGS[name].hidden)

    if args.measure_memory:  # child process: the peak memory of one contender
        _, calls = build_calls(configs[0], device, args.num_samples, args.per_sequence_importance, args.chunk)
        print(json.dumps({"peak_mb": peak_memory_mb(calls[args.measure_memory], device)}))
        return 0

    warmup, repeats = (1, 3) if args.quick else (args.warmup, args.repeats)
    for name in configs:
        config, calls = build_calls(name, device, args.num_samples, args.per_sequence_importance, args.chunk)
        times = interleaved_times(calls, warmup=warmup, repeats=repeats, device=device)
        record = {"bench": "iwae", **vars(config), "num_samples": args.num_samples, "chunk": args.chunk,
                  **{f"{who}_ms": median_ms(t) for who, t in times.items()}}
        record["ratio_vs_torch"] = round(record["pyro_ms"] / record["torch_ms"], 3)
        record["speedup_vs_importance"] = round(record["importance_ms"] / record["pyro_ms"], 3)
        if args.per_sequence_importance:
            record["speedup_vs_importance_per_sequence"] = round(
                record["importance_per_sequence_ms"] / record["pyro_ms"], 3)
        record["repeats"] = repeats
        if not args.no_memory:
            child = ["--config", name, "--device", args.device, "--threads", str(args.threads),
                     "--num-samples", str(args.num_samples)] + (["--chunk", str(args.chunk)] if args.chunk else [])
            if args.per_sequence_importance:
                child.append("--per-sequence-importance")
            record.update(peak_memory_fields(__file__, calls, device, child))
        record.update(environment(device))
        print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
