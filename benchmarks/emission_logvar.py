#!/usr/bin/env python
"""How much of a trained Gaussian emission an old log-variance clamp would cut: one JSON line.

For every real test frame value, the emission's log-variance log sigma^2 along a trajectory
z ~ q(z | y) from the run's own guide; prints the fraction below -CLAMP (what
``--emission-clamp CLAMP`` would have cut, default 8), the fraction at the float range guard
(``nets.safe_logvar``), and quantiles.

    python run.py --dataset audio --data-dir /usr/share/asterisk/sounds/en_US_f_Allison \\
        --max-steps 300 --rnn-dim 64 --out runs/allison
    python benchmarks/emission_logvar.py runs/allison
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyro.poutine as poutine  # noqa: E402
import torch  # noqa: E402

from pyro_zforcing.checkpoint import load_checkpoint  # noqa: E402
from pyro_zforcing.data import load_dataset  # noqa: E402
from pyro_zforcing.models import LATENT_SITE  # noqa: E402
from pyro_zforcing.build import build_objective  # noqa: E402
from pyro_zforcing.evaluation.bounds import eval_batches  # noqa: E402


@torch.no_grad()
def emission_logvars(objective, sequences, *, batch_size: int = 32) -> torch.Tensor:
    """Log-variances of every real value of ``sequences`` (flat), guide trajectories, guard applied."""
    model, guide = objective.model, objective.guide
    values = []
    for batch in eval_batches(sequences, batch_size):
        z = poutine.trace(guide).get_trace(batch).nodes[LATENT_SITE]["value"]
        h = model.forward_states(batch, z)[:, 1:]
        logvar = model.emission.step_dist(h).logvar
        values.append(logvar[batch.mask].flatten())
    return torch.cat(values)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory (with checkpoints/)")
    parser.add_argument("--which", choices=("last", "best"), default="last", help="checkpoint (default: %(default)s)")
    parser.add_argument("--clamp", type=float, default=8.0, help="the clamp to measure against (default: %(default)s)")
    parser.add_argument("--split", choices=("train", "valid", "test"), default="test")
    args = parser.parse_args(argv)
    path = Path(args.run_dir) / "checkpoints" / f"{args.which}.pt"
    state = load_checkpoint(path)
    if state["model_config"].emission != "gaussian":
        parser.error(f"{path}: the emission is {state['model_config'].emission}, not gaussian")
    torch.manual_seed(0)
    objective = build_objective(state["model_config"], state["train_config"].guide)
    objective.load_state_dict(state["objective"])
    objective.eval()
    sequences = getattr(load_dataset(state["data_config"]), args.split)
    logvar = emission_logvars(objective, sequences).double()
    guard = 0.5 * math.log(torch.finfo(torch.float32).max)
    quantiles = torch.quantile(logvar[torch.randperm(len(logvar))[:1_000_000]],
                               torch.tensor([0.01, 0.1, 0.5, 0.9], dtype=torch.float64))
    print(json.dumps({
        "checkpoint": str(path), "split": args.split, "values": len(logvar),
        "emission_clamp": state["model_config"].emission_clamp,
        f"below_-{args.clamp:g}": round(float((logvar < -args.clamp).double().mean()), 4),
        f"above_{args.clamp:g}": round(float((logvar > args.clamp).double().mean()), 4),
        "at_float_guard": round(float((logvar.abs() >= guard - 1e-3).double().mean()), 6),
        "min": round(float(logvar.min()), 2),
        "quantiles_1_10_50_90": [round(float(q), 2) for q in quantiles],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
