#!/usr/bin/env python
"""What an epoch of each model costs on each polyphonic corpus, before a table run is started.

For every corpus file given and every model, at the sizes of a compare study's ``sizes.json``
(default: the JSB table's, ``docs/studies/tables/jsb-long/sizes.json``; the other sizes are the
package defaults, batch ``--batch-size``), with whole training pieces and, for each
``--windows N``, with the data option ``window=N``: the first ``--updates`` updates of epoch 0
(the trainer's seeded batches, Adam, the global-norm clip) after one untimed warm-up update are timed, then one validation pass
over whole pieces. An update's time grows with the longest piece of its batch (the z-driven
recurrences loop over time), so the epoch is estimated as (seconds per padded step of the
timed updates) x (the padded steps of every batch of epoch 0) plus the validation pass.

Prints one line per (corpus, window, model) and, with ``--json``, writes them all.

    OMP_NUM_THREADS=1 python benchmarks/bench_corpora.py ../shared/data/polyphonic-mat/*.mat --windows 100
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyro  # noqa: E402
import torch  # noqa: E402

from pyro_zforcing.build import build_objective, model_config_for  # noqa: E402
from pyro_zforcing.config import DataConfig, TrainConfig  # noqa: E402
from pyro_zforcing.data import load_dataset  # noqa: E402
from pyro_zforcing.evaluation.bounds import evaluate_elbo  # noqa: E402
from pyro_zforcing.infer import weights_at  # noqa: E402
from pyro_zforcing.training.trainer import epoch_batches  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODELS = ("rnn", "vrnn", "storn", "srnn", "dmm", "zforcing")


def bench(splits, model: str, sizes: dict, *, batch_size: int, updates: int) -> dict:
    """Timings of one model on one loaded corpus."""
    torch.manual_seed(0)
    train = TrainConfig(batch_size=batch_size)
    objective = build_objective(model_config_for(splits.info, model=model, **sizes), kl=train.kl)
    optimizer = torch.optim.Adam(objective.parameters(), lr=train.lr, eps=train.adam_eps)
    batches = epoch_batches(len(splits.train), batch_size, seed=0, epoch=0)
    padded = [max(len(splits.train[i]) for i in batch) for batch in batches]
    timed = min(updates, len(batches) - 1)
    seconds, steps = 0.0, 0
    for update in range(timed + 1):  # the first update warms up and is not counted
        batch = splits.train_batch(batches[update])
        start = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        objective(batch, weights_at(train, update)).backward()
        torch.nn.utils.clip_grad_norm_(objective.parameters(), train.clip_norm)
        optimizer.step()
        if update > 0:
            seconds += time.perf_counter() - start
            steps += padded[update]
    start = time.perf_counter()
    evaluate_elbo(objective, splits.valid, splits.info, batch_size=4 * batch_size, device="cpu", dtype=torch.float32)
    valid = time.perf_counter() - start
    per_step = seconds / steps
    return {"updates_per_epoch": len(batches), "timed_updates": timed, "s_per_update": seconds / timed, "s_per_padded_step": per_step,
            "padded_steps_per_epoch": sum(padded), "train_s_per_epoch": per_step * sum(padded),
            "valid_s": valid, "s_per_epoch": per_step * sum(padded) + valid,
            "parameters": sum(p.numel() for p in objective.parameters())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", help="piano-roll files (--dataset polyphonic --data-dir FILE)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated (default: %(default)s)")
    parser.add_argument("--sizes", default=str(ROOT / "docs/studies/tables/jsb-long/sizes.json"),
                        help="a compare study's sizes.json (default: the JSB table's)")
    parser.add_argument("--windows", type=int, nargs="*", default=[], help="window lengths to time besides whole pieces")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--updates", type=int, default=3, help="updates timed per row (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default: %(default)s)")
    parser.add_argument("--json", default=None, help="write every row to this file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pyro.enable_validation(False)
    sizes = json.loads(Path(args.sizes).read_text())["sizes"]
    rows = []
    for path in args.files:
        for window in [None] + list(args.windows):
            options = {} if window is None else {"window": window}
            splits = load_dataset(DataConfig(dataset="polyphonic", data_dir=path, options=options))
            for model in args.models.split(","):
                found = {k: sizes[model][k] for k in ("rnn_dim", "mlp_dim")}
                row = {"file": Path(path).name, "corpus": splits.info.extra["corpus_name"], "window": window,
                       "model": model, **found, **bench(splits, model, found, batch_size=args.batch_size,
                                                         updates=args.updates)}
                rows.append(row)
                print(f"{row['corpus']} window={window} {model}: {row['updates_per_epoch']} updates/epoch, "
                      f"{row['s_per_update']:.2f} s/update over {row['timed_updates']}, "
                      f"{1000 * row['s_per_padded_step']:.1f} ms/padded step, train {row['train_s_per_epoch']:.0f} s "
                      f"+ validation {row['valid_s']:.1f} s = {row['s_per_epoch']:.0f} s/epoch", flush=True)
                if args.json:
                    Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
