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

``--compile`` adds the library's step with its per-step cell compiled (``pyro_compiled``;
``compiled_speedup`` = pyro / pyro_compiled); ``--cuda-graphs`` (CUDA) adds the library's update
as a replayed CUDA graph (``pyro_graphs``) and the fused plain-PyTorch step captured the same way
(``torch_graphs``; ``ratio_graphs`` = pyro_graphs / torch_graphs). All contenders run interleaved in
one process; each is reported by its median (``*_ms``) and its minimum (``*_min_ms``).
``--config timit`` times the TIMIT recipe's full-size update (rnn 1024, z 256, emb 512, mlp 512,
batch 32, 40 frames; KL weight 0.2, no aux, as the recipe's first updates).

``--emission nade|ar-gmm|ar-rnn`` times the cost of an autoregressive emission instead: the library's
update with it (``pyro``) against the library's update of the same model, sizes and batch with
the factorised emission of that data (``factorised``: bernoulli for nade, on binary frames;
gaussian for ar-gmm and ar-rnn); ``emission_cost`` = pyro / factorised. ``--config jsb`` is RNN-NADE's
scale (88 keys, LSTM 150, batch 20, 100 steps); ``--nade-hidden``, ``--made-hidden``,
``--frame-rnn-hidden`` and ``--mixtures`` size the emission (defaults: the library's):

    OMP_NUM_THREADS=1 python benchmarks/bench_svi.py --config jsb --emission nade --model rnn --model zforcing
    OMP_NUM_THREADS=1 python benchmarks/bench_svi.py --config small --emission ar-gmm --model rnn --model srnn

    OMP_NUM_THREADS=1 python benchmarks/bench_svi.py --compile --model zforcing --model vrnn --model srnn --model rnn
    python benchmarks/bench_svi.py --device cuda --compile --cuda-graphs --config small --config large --config timit \
        --model zforcing --model vrnn --model srnn --model rnn
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyro  # noqa: E402
import torch  # noqa: E402

from benchmarks.common import (CONFIGS, RECIPE_CONFIGS, device_and_threads, environment,  # noqa: E402
                               graphed_torch_step, interleaved_times, median_ms, min_ms, peak_memory_fields,
                               peak_memory_mb, synthetic_batch)
from benchmarks.baselines_reference import PlainDMM, PlainRNN, PlainSRNN, PlainSTORN, PlainVRNN  # noqa: E402
from benchmarks.fast_reference import FastPlainZForcing  # noqa: E402
from benchmarks.reference import PlainZForcing  # noqa: E402
from pyro_zforcing.build import build_objective  # noqa: E402
from pyro_zforcing.config import EMISSION_DATA, EMISSION_SIZES, ModelConfig, TrainConfig  # noqa: E402
from pyro_zforcing.graphs import GraphedUpdates  # noqa: E402
from pyro_zforcing.infer import Weights  # noqa: E402
from pyro_zforcing.models import MODELS  # noqa: E402
from pyro_zforcing.steps import compile_seconds, compiled_steps  # noqa: E402

DEFAULTS = TrainConfig()
WEIGHTS = Weights(kl=1.0, aux=DEFAULTS.aux_start, bwd=0.0)
# the TIMIT recipe's first updates: KL annealed from 0.2, no aux cost (presets/timit.toml)
RECIPE_WEIGHTS = {"timit": Weights(kl=0.2, aux=0.0, bwd=0.0)}
ALL_CONFIGS = {**CONFIGS, **RECIPE_CONFIGS}


BASELINES = {"rnn": PlainRNN.like, "vrnn": PlainVRNN.like, "srnn": lambda objective: PlainSRNN.like(objective, "smoothing"),
             "dmm": PlainDMM.like, "storn": PlainSTORN.like}


def train_step(module, loss_fn, optimizer=None):
    """forward, backward, ``clip_grad_norm_``, Adam: one eager update of ``module``."""
    optimizer = optimizer or torch.optim.Adam(module.parameters(), lr=DEFAULTS.lr, eps=DEFAULTS.adam_eps)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), DEFAULTS.clip_norm)
        optimizer.step()
    return step


def library_steps(objective, batch, weights, device, *, compiled: bool, graphs: bool):
    """The library's update eagerly (``pyro``), with the per-step cell compiled (``pyro_compiled``)
    and as a replayed CUDA graph (``pyro_graphs``, :class:`pyro_zforcing.graphs.GraphedUpdates`),
    each on its own copy of the same weights."""
    steps = {"pyro": train_step(objective, lambda: objective(batch, weights))}
    if compiled:
        twin = copy.deepcopy(objective)
        eager = train_step(twin, lambda: twin(batch, weights))

        def compiled_step():
            with compiled_steps():
                eager()
        steps["pyro_compiled"] = compiled_step
    if graphs:
        twin = copy.deepcopy(objective)
        optimizer = torch.optim.Adam(twin.parameters(), lr=torch.tensor(DEFAULTS.lr, device=device),
                                     eps=DEFAULTS.adam_eps, capturable=True)
        updates = GraphedUpdates(twin, optimizer, clip_norm=DEFAULTS.clip_norm, length_bucket=batch.num_steps,
                                 device=device, dtype=batch.x.dtype, next_step=1)
        steps["pyro_graphs"] = lambda: updates(batch, weights)
    return steps


AUTOREGRESSIVE = ("ar-gmm", "ar-rnn", "nade")  # timed against the factorised emission of the same data (EMISSION_DATA)


def emission_steps(config_name: str, device: torch.device, model: str, emission: str, sizes: dict):
    """The library's update with ``emission`` (``pyro``) and with the factorised emission of the
    same data (``factorised``): same model, sizes and batch."""
    config = ALL_CONFIGS[config_name]
    weights = RECIPE_WEIGHTS.get(config_name, WEIGHTS)
    factorised = EMISSION_DATA[emission]
    batch = synthetic_batch(config, device, binary=factorised == "bernoulli")
    steps = {}
    for name, family, extra in (("pyro", emission, sizes), ("factorised", factorised, {})):
        torch.manual_seed(0)
        objective = build_objective(ModelConfig(**{**config.model_sizes(), "emission": family}, **extra,
                                                model=model)).to(device)
        steps[name] = library_steps(objective, batch, weights, device, compiled=False, graphs=False)["pyro"]
    return config, steps


def build_steps(config_name: str, device: torch.device, model: str = "zforcing", *, compiled: bool = False,
                graphs: bool = False, emission: str = None, sizes: dict = None):
    """The library's and plain PyTorch's training step closures, same weights, same batch (with
    ``emission``: :func:`emission_steps`)."""
    if emission is not None:
        return emission_steps(config_name, device, model, emission, sizes or {})
    config = ALL_CONFIGS[config_name]
    weights = RECIPE_WEIGHTS.get(config_name, WEIGHTS)
    torch.manual_seed(0)
    objective = build_objective(ModelConfig(**config.model_sizes(), model=model)).to(device)
    batch = synthetic_batch(config, device)
    steps = library_steps(objective, batch, weights, device, compiled=compiled, graphs=graphs)
    if model == "zforcing":
        plain = {"torch": PlainZForcing.like(objective).to(device), "torch_fast": FastPlainZForcing.like(objective).to(device)}
        kwargs = dict(aux_weight=weights.aux, kl_weight=weights.kl)
    elif model in BASELINES:
        plain = {"torch": BASELINES[model](objective).to(device)}
        kwargs = dict(kl_weight=weights.kl)
    else:  # a registered model without a plain-PyTorch transcription: the library's paths only
        return config, steps
    for name, module in plain.items():
        def loss(module=module):
            return module.loss(batch.x, batch.mask, batch.lengths, **kwargs)
        steps[name] = train_step(module, loss)
    if graphs:  # the strict baseline of a graph-captured step: the fused plain model, captured
        reference = plain.get("torch_fast", plain["torch"])
        fast = copy.deepcopy(reference)
        steps["torch_graphs"] = graphed_torch_step(
            fast, lambda: fast.loss(batch.x, batch.mask, batch.lengths, **kwargs), lr=DEFAULTS.lr,
            eps=DEFAULTS.adam_eps, clip_norm=DEFAULTS.clip_norm, device=device)
    return config, steps


def ratios(times: dict) -> dict:
    """library / torch (eager), library / torch fast, eager / compiled, eager / graphs and graphs /
    torch graphs: each the ratio of medians, and (``*_paired``) the median of the interleaved pairs'
    ratios, steadier than the ratio of medians on a loaded machine."""
    pairs = {"ratio": ("pyro", "torch"), "ratio_fast": ("pyro", "torch_fast"),
             "compiled_speedup": ("pyro", "pyro_compiled"), "graphs_speedup": ("pyro", "pyro_graphs"),
             "ratio_graphs": ("pyro_graphs", "torch_graphs"), "emission_cost": ("pyro", "factorised")}
    out = {}
    for name, (a, b) in pairs.items():
        if a in times and b in times:
            out[name] = round(statistics.median(times[a]) / statistics.median(times[b]), 3)
            out[f"{name}_paired"] = round(statistics.median(x / y for x, y in zip(times[a], times[b])), 3)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(ALL_CONFIGS), action="append",
                        help="repeatable (default: small and large; timit, the recipe's full sizes, only when named)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads, 0 = torch's default (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=30, help="timed steps per contender (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="2 warm-up rounds, 5 repeats")
    parser.add_argument("--model", choices=list(MODELS), action="append",
                        help="repeatable (default: zforcing)")
    parser.add_argument("--compile", action="store_true",
                        help="also time the library's step with its per-step cell compiled (pyro_compiled)")
    parser.add_argument("--cuda-graphs", action="store_true",
                        help="also time the library's update and the plain-PyTorch step as replayed CUDA graphs "
                             "(pyro_graphs, torch_graphs; CUDA only)")
    parser.add_argument("--emission", choices=AUTOREGRESSIVE, default=None,
                        help="time the library's update with this emission against the factorised one (see above)")
    parser.add_argument("--nade-hidden", type=int, default=None, help="nade's hidden units (default: the library's)")
    parser.add_argument("--made-hidden", type=int, default=None, help="ar-gmm's MADE units (default: the library's)")
    parser.add_argument("--frame-rnn-hidden", type=int, default=None,
                        help="ar-rnn's GRU units (default: the library's)")
    parser.add_argument("--mixtures", type=int, default=None,
                        help="ar-gmm's and ar-rnn's components (default: the library's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--measure-memory", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    pyro.enable_validation(False)  # as in training (run.py turns it on only with --validate)
    device = device_and_threads(args.device, args.threads)
    if args.cuda_graphs and device.type != "cuda":
        parser.error(f"--cuda-graphs needs --device cuda (got {device})")
    if args.emission and (args.compile or args.cuda_graphs):
        parser.error("--emission times eager updates; leave out --compile and --cuda-graphs")
    sizes = {name: getattr(args, name) for name in EMISSION_SIZES + ("mixtures",)
             if getattr(args, name) is not None}
    configs = args.config or sorted(CONFIGS, key=lambda name: CONFIGS[name].hidden)
    flags = dict(compiled=args.compile, graphs=args.cuda_graphs, emission=args.emission, sizes=sizes)

    models = args.model or ["zforcing"]
    if args.measure_memory:  # child process: the peak memory of one contender's steps
        _, steps = build_steps(configs[0], device, models[0], **flags)
        print(json.dumps({"peak_mb": peak_memory_mb(steps[args.measure_memory], device)}))
        return 0

    warmup, repeats = (2, 5) if args.quick else (args.warmup, args.repeats)
    for name, model in [(name, model) for name in configs for model in models]:
        torch._dynamo.reset()  # each configuration compiles its own cell, as a fresh run would
        compiled_before = len(compile_seconds())
        config, steps = build_steps(name, device, model, **flags)
        times = interleaved_times(steps, warmup=warmup, repeats=repeats, device=device)
        record = {"bench": "svi_step", "model": model, **vars(config),
                  **({"emission": args.emission, **sizes} if args.emission else {}),
                  **{f"{who}_ms": median_ms(t) for who, t in times.items()},
                  **{f"{who}_min_ms": min_ms(t) for who, t in times.items()}}
        record.update(ratios(times))
        if args.compile:
            record["compile_s"] = round(sum(compile_seconds()[compiled_before:]), 1)
        record["repeats"] = repeats
        if not args.no_memory:
            child = ["--config", name, "--device", args.device, "--threads", str(args.threads), "--model", model]
            child += (["--compile"] if args.compile else []) + (["--cuda-graphs"] if args.cuda_graphs else [])
            child += ["--emission", args.emission] if args.emission else []
            child += [f"--{name.replace('_', '-')}={value}" for name, value in sizes.items()]
            record.update(peak_memory_fields(__file__, steps, device, child))
        record.update(environment(device))
        print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
