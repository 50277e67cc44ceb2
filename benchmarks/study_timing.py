#!/usr/bin/env python
"""Wall time of a ``compare`` study before running it: the sizes it would pick, seconds per update,
per validation and per test evaluation of every model at every width, and a total estimate.

Takes ``compare``'s own flags (a study file, --models, --match-params, --dataset ...) plus
``--widths``: for each width W the reference model gets ``--rnn-dim W --mlp-dim W`` and the others
are matched to it as ``compare`` matches them. Each model is timed on a few real training batches
(``--updates``, after one warm-up update), one validation pass and the test evaluation of
``--test-sequences`` sequences (IWAE with the study's K), scaled to the whole splits. The total
assumes ``--epochs-assumed`` epochs per run (runs end by early stopping; see the study's budget).

    OMP_NUM_THREADS=1 python benchmarks/study_timing.py --study docs/studies/compare-audio.json --widths 64,256
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from pyro_zforcing.build import build_objective, model_config_for, set_seed  # noqa: E402
from pyro_zforcing.cli.study import compare_parser, parse_study_args, study_from  # noqa: E402
from pyro_zforcing.data import load_dataset  # noqa: E402
from pyro_zforcing.evaluation.bounds import evaluate_elbo, evaluate_split  # noqa: E402
from pyro_zforcing.infer import weights_at  # noqa: E402
from pyro_zforcing.studies.compare import match_parameters  # noqa: E402
from pyro_zforcing.training.trainer import epoch_batches  # noqa: E402


def time_variant(study, variant: str, splits, *, updates: int, test_sequences: int) -> dict:
    """Seconds per update, per validation pass and per test evaluation of one variant."""
    train, sizes = study.configs(variant, seed=study.seeds[0])
    set_seed(train.seed)
    objective = build_objective(model_config_for(splits.info, **sizes), train.guide, kl=train.kl)
    optimizer = torch.optim.Adam(objective.parameters(), lr=train.lr, eps=train.adam_eps)
    batches = epoch_batches(len(splits.train), train.batch_size, seed=train.seed, epoch=0)
    elapsed = []
    for n, indices in enumerate(batches[:updates + 1]):
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        objective(splits.train_batch(indices), weights_at(train, n)).backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), train.clip_norm)
        optimizer.step()
        elapsed.append(time.perf_counter() - start)
    update = sorted(elapsed[1:])[len(elapsed[1:]) // 2]  # the median after one warm-up update
    start = time.perf_counter()
    evaluate_elbo(objective, splits.valid, splits.info, batch_size=4 * train.batch_size, device="cpu",
                  dtype=torch.float32)
    valid = time.perf_counter() - start
    part = splits.test[:test_sequences]
    start = time.perf_counter()
    evaluate_split(objective, part, splits.info, num_samples=study.iwae_samples, batch_size=study.eval_batch_size)
    test = (time.perf_counter() - start) * len(splits.test) / len(part)
    return {"rnn_dim": sizes.get("rnn_dim"), "mlp_dim": sizes.get("mlp_dim"), "update_s": update,
            "updates_per_epoch": len(batches), "epoch_s": update * len(batches) + valid, "test_s": test}


def main(argv=None) -> int:
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--widths", default="64,256", help="rnn_dim = mlp_dim of the reference model (default: %(default)s)")
    own.add_argument("--updates", type=int, default=5, help="timed training updates per model (default: %(default)s)")
    own.add_argument("--test-sequences", type=int, default=20, help="test sequences evaluated, scaled (default: %(default)s)")
    own.add_argument("--epochs-assumed", type=int, default=100, help="epochs per run in the total (default: %(default)s)")
    ours, rest = own.parse_known_args(argv)
    parser = compare_parser()
    rows = []
    splits = None
    for width in (int(w) for w in ours.widths.split(",")):
        sized = rest + ["--rnn-dim", str(width), "--mlp-dim", str(width)]
        args, extra, _ = parse_study_args(parser, sized)
        names = [n.strip() for n in args.models.split(",")]
        study = study_from(parser, sized, args, names, extra)
        splits = splits or load_dataset(study.data)
        if args.match_params != "none":
            reference = args.match_to or ("zforcing" if "zforcing" in names else names[0])
            study, _ = match_parameters(study, splits.info, reference=reference, match=args.match_params)
        for variant in study.variants:
            row = {"width": width, "variant": variant,
                   **time_variant(study, variant, splits, updates=ours.updates, test_sequences=ours.test_sequences)}
            row["run_s"] = ours.epochs_assumed * row["epoch_s"] + row["test_s"]
            row["seeds"] = len(study.seeds)
            rows.append(row)
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    total = sum(r["run_s"] * r["seeds"] for r in rows)
    print(json.dumps({"threads": torch.get_num_threads(), "epochs_assumed": ours.epochs_assumed,
                      "total_hours_one_process": round(total / 3600, 2),
                      "longest_run_hours": round(max(r["run_s"] for r in rows) / 3600, 2)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
