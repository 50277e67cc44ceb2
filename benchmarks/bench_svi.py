#!/usr/bin/env python
"""One SVI training step of the library against the same model written in plain PyTorch.

Three contenders do the same work with the same weights (``.like``, tested to give the same
loss in tests/test_objective.py and tests/test_benchmarks.py): the library's ``Objective``;
``torch``, the authors'-style ``PlainZForcing`` (``ratio``); and ``torch_fast``,
``FastPlainZForcing``, which hoists everything z-independent out of the time loop
(``ratio_fast``, the strict comparison). All run the backward guide, conditional prior,
Gaussian emission, aux cost from [h_{t-1}, z_t] with the default beta, ``torch.optim.Adam``
and ``clip_grad_norm_(params, 100)``; Pyro validation is off, as in training. Prints one JSON
line per config.

``--model rnn|vrnn|srnn|dmm|storn`` (repeatable) times the baselines instead: the library's SVI step
(default guide) against ``benchmarks/baselines_reference.py``, the same model in plain PyTorch
with every z-independent recurrence fused (``torch``; ``ratio``). Same weights, same loss
(tests/test_baselines.py).

    OMP_NUM_THREADS=1 python benchmarks/bench_svi.py            # both configs, 1 thread
    python benchmarks/bench_svi.py --threads 0 --config small   # torch's default threads
    python benchmarks/bench_svi.py --quick                      # a short smoke run
    OMP_NUM_THREADS=1 python benchmarks/bench_svi.py --config small --model rnn --model vrnn --model srnn
    OMP_NUM_THREADS=1 python benchmarks/bench_svi.py --config small --model dmm --model storn
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyro  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import (CONFIGS, device_and_threads, environment, interleaved_times,  # noqa: E402
                               median_ms, peak_memory_fields, peak_memory_mb, synthetic_batch)
from benchmarks.baselines_reference import PlainDMM, PlainRNN, PlainSRNN, PlainSTORN, PlainVRNN  # noqa: E402
from benchmarks.fast_reference import FastPlainZForcing  # noqa: E402
from benchmarks.reference import PlainZForcing  # noqa: E402
from pyro_zforcing.config import ModelConfig, TrainConfig  # noqa: E402
from pyro_zforcing.infer import Weights  # noqa: E402
from pyro_zforcing.build import build_objective  # noqa: E402

DEFAULTS = TrainConfig()
WEIGHTS = Weights(kl=1.0, aux=DEFAULTS.aux_start, bwd=0.0)


BASELINES = {"rnn": PlainRNN.like, "vrnn": PlainVRNN.like, "srnn": lambda objective: PlainSRNN.like(objective, "smoothing"),
             "dmm": PlainDMM.like, "storn": PlainSTORN.like}


def build_steps(config_name: str, device: torch.device, model: str = "zforcing"):
    """The library's and plain PyTorch's training step closures, same weights, same batch."""
    config = CONFIGS[config_name]
    torch.manual_seed(0)
    objective = build_objective(ModelConfig(**config.model_sizes(), model=model)).to(device)
    batch = synthetic_batch(config, device)

    def stepper(module, loss_fn):
        optimizer = torch.optim.Adam(module.parameters(), lr=DEFAULTS.lr, eps=DEFAULTS.adam_eps)

        def step():
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), DEFAULTS.clip_norm)
            optimizer.step()
        return step

    if model != "zforcing":
        plain = BASELINES[model](objective).to(device)
        return config, {"pyro": stepper(objective, lambda: objective(batch, WEIGHTS)),
                        "torch": stepper(plain, lambda: plain.loss(batch.x, batch.mask, batch.lengths))}
    plain = PlainZForcing.like(objective).to(device)
    fast = FastPlainZForcing.like(objective).to(device)
    steps = {
        "pyro": stepper(objective, lambda: objective(batch, WEIGHTS)),
        "torch": stepper(plain, lambda: plain.loss(batch.x, batch.mask, batch.lengths, aux_weight=WEIGHTS.aux)),
        "torch_fast": stepper(fast, lambda: fast.loss(batch.x, batch.mask, batch.lengths, aux_weight=WEIGHTS.aux)),
    }
    return config, steps


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), action="append", help="repeatable (default: all)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads, 0 = torch's default (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=30, help="timed steps per contender (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="2 warm-up rounds, 5 repeats")
    parser.add_argument("--model", choices=["zforcing", *BASELINES], action="append",
                        help="repeatable (default: zforcing)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--measure-memory", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    pyro.enable_validation(False)  # as in training (run.py turns it on only with --validate)
    device = device_and_threads(args.device, args.threads)
    configs = args.config or sorted(CONFIGS, key=lambda name: CONFIGS[name].hidden)

    models = args.model or ["zforcing"]
    if args.measure_memory:  # child process: the peak memory of one contender's steps
        _, steps = build_steps(configs[0], device, models[0])
        print(json.dumps({"peak_mb": peak_memory_mb(steps[args.measure_memory], device)}))
        return 0

    warmup, repeats = (2, 5) if args.quick else (args.warmup, args.repeats)
    for name, model in [(name, model) for name in configs for model in models]:
        config, steps = build_steps(name, device, model)
        times = interleaved_times(steps, warmup=warmup, repeats=repeats, device=device)
        record = {"bench": "svi_step", "model": model, **vars(config),
                  **{f"{who}_ms": median_ms(t) for who, t in times.items()}}
        record["ratio"] = round(record["pyro_ms"] / record["torch_ms"], 3)
        # the median of the interleaved pairs' ratios: steadier than the ratio of medians on a loaded machine
        record["ratio_paired"] = round(statistics.median(a / b for a, b in zip(times["pyro"], times["torch"])), 3)
        if "torch_fast_ms" in record:
            record["ratio_fast"] = round(record["pyro_ms"] / record["torch_fast_ms"], 3)
        record["repeats"] = repeats
        if not args.no_memory:
            child = ["--config", name, "--device", args.device, "--threads", str(args.threads), "--model", model]
            record.update(peak_memory_fields(__file__, steps, device, child))
        record.update(environment(device))
        print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
