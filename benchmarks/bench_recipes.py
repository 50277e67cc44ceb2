#!/usr/bin/env python
"""Seconds per epoch of shipped recipes: what a table run will cost before it is started.

For each recipe: the model, guide, batch size and optimiser it names, built for the data of
``--data-dir``; the first ``--updates`` updates of epoch 0 (the trainer's batches, Adam, the
global-norm clip, the annealed weights) are timed interleaved across the recipes, then one
validation pass each. Prints one line per recipe: parameters, updates per epoch, the median
seconds per update (the first update is warm-up and not counted), the validation seconds and
their total per epoch.

    OMP_NUM_THREADS=1 python benchmarks/bench_recipes.py jsb-rnn jsb-srnn jsb-dmm \\
        --data-dir ../shared/data/jsb-chorales-quarter.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyro  # noqa: E402
import torch  # noqa: E402

from pyro_zforcing.build import build_objective, model_config_for  # noqa: E402
from pyro_zforcing.config import DataConfig, TrainConfig  # noqa: E402
from pyro_zforcing.data import collate_sequences, load_dataset  # noqa: E402
from pyro_zforcing.evaluation.bounds import evaluate_elbo  # noqa: E402
from pyro_zforcing.infer import weights_at  # noqa: E402
from pyro_zforcing.training.recipes import load_recipe, preset_path  # noqa: E402
from pyro_zforcing.training.trainer import epoch_batches  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recipes", nargs="+", help="shipped recipe names (all for one dataset)")
    parser.add_argument("--data-dir", required=True, help="the dataset's file or folder")
    parser.add_argument("--updates", type=int, default=4, help="updates timed per recipe, the first not counted")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: %(default)s)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)
    recipes = [load_recipe(preset_path(name), name=name) for name in args.recipes]
    splits = load_dataset(DataConfig(dataset=recipes[0].dataset, data_dir=args.data_dir, options=recipes[0].options))
    setups = {}
    for recipe in recipes:
        torch.manual_seed(0)
        train = TrainConfig(**recipe.train)
        objective = build_objective(model_config_for(splits.info, **recipe.model), recipe.train.get("guide"))
        optimizer = torch.optim.Adam(objective.parameters(), lr=train.lr, eps=train.adam_eps)
        setups[recipe.name] = (objective, optimizer, train, epoch_batches(len(splits.train), train.batch_size,
                                                                          seed=0, epoch=0))
    seconds = {name: [] for name in setups}
    for update in range(args.updates):
        for name, (objective, optimizer, train, batches) in setups.items():
            batch = collate_sequences([splits.train[i] for i in batches[update % len(batches)]])
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            objective(batch, weights_at(train, update)).backward()
            torch.nn.utils.clip_grad_norm_(objective.parameters(), train.clip_norm)
            optimizer.step()
            seconds[name].append(time.perf_counter() - start)
    for name, (objective, optimizer, train, batches) in setups.items():
        start = time.perf_counter()
        evaluate_elbo(objective, splits.valid, splits.info, batch_size=4 * train.batch_size, device="cpu",
                      dtype=torch.float32)
        valid = time.perf_counter() - start
        step = statistics.median(seconds[name][1:] or seconds[name])
        params = sum(p.numel() for p in objective.parameters())
        print(f"{name}: {params:,} parameters, {len(batches)} updates/epoch x {step:.2f} s + validation "
              f"{valid:.1f} s = {len(batches) * step + valid:.0f} s/epoch (recipe cap: {train.epochs} epochs)",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
