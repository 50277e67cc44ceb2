#!/usr/bin/env python
"""A run's test ELBO per step in the convention of SRNN's release. One JSON line per run.

SRNN's ``train_srnn_midi.py`` scores each test piece's targets x_1..x_L given the first frame
x_0 as input, divides the piece's ELBO by L and averages over pieces. This package scores
every frame of a piece, x_0 from the start state. Here, along one trajectory z ~ q(z | x) per
piece (seeded), the step-0 term log p(x_0 | h_0) - KL_0 is taken out of each piece's one-sample
ELBO and the rest divided by L = T - 1:

    figure = mean_i (ELBO_i - rec_{i,0} + KL_{i,0}) / (T_i - 1)

For a model without latents that is exactly mean_i (log p(x_{0:L}) - log p(x_0)) / L (the targets
given x_0, the state having read the start frame before it); for a latent model z_0 still
enters the later steps, so it is the ELBO of the targets with z_0 inferred from the whole piece
(SRNN's own smoothing posterior does the same). Printed beside it: the package's
two figures (total / total, and the mean over pieces of ELBO_i / T_i) from the same draw.

    python run.py --preset jsb-srnn --data-dir data/jsb_raw_batchsize16_seqlen100.npz --out runs/jsb8-srnn
    python benchmarks/srnn_test_figure.py runs/jsb8-srnn
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyro_zforcing import infer  # noqa: E402
from pyro_zforcing.build import build_objective, set_seed  # noqa: E402
from pyro_zforcing.checkpoint import load_checkpoint, load_weights  # noqa: E402
from pyro_zforcing.data import load_dataset  # noqa: E402
from pyro_zforcing.data.base import collate_sequences  # noqa: E402


def piece_terms(objective, pieces: List, *, batch_size: int = 20) -> Dict[str, torch.Tensor]:
    """Per piece: the one-sample ``elbo`` (B,), the ``first`` step's rec - KL and its ``length``."""
    out = {"elbo": [], "first": [], "length": []}
    with torch.no_grad():
        for start in range(0, len(pieces), batch_size):
            batch = collate_sequences(pieces[start:start + batch_size])
            guide_trace, model_trace = infer.trace_pair(objective.model, objective.guide, batch)
            emission = model_trace.nodes[infer.OBS_SITE]["fn"]
            step_rec = emission.head.step_log_prob(emission.state, batch.x)
            while step_rec.dim() > 2:
                step_rec = step_rec.sum(-1)
            if infer.latent_sites(guide_trace):
                first = step_rec[:, 0] - infer.step_kl(guide_trace, model_trace)[:, 0]
            else:
                first = step_rec[:, 0]
            out["elbo"].append(infer.bound_terms(guide_trace, model_trace)["elbo"])
            out["first"].append(first)
            out["length"].append(batch.lengths)
    return {key: torch.cat(values).double() for key, values in out.items()}


def test_figure(run_dir: str, *, seed: int = 0, split: str = "test") -> Dict:
    state = load_checkpoint(run_dir)
    objective = build_objective(state["model_config"], state["train_config"].guide, kl=state["train_config"].kl)
    load_weights(objective, state["objective"], run_dir)
    objective.eval()
    pieces = load_dataset(state["data_config"]).split(split)
    if min(len(p) for p in pieces) < 2:
        raise SystemExit(f"{run_dir}: a {split} piece has one frame, so no target after its first")
    set_seed(seed)
    terms = piece_terms(objective, pieces)
    elbo, first, length = terms["elbo"], terms["first"], terms["length"]
    return {"run": str(run_dir), "split": split, "pieces": len(pieces), "seed": seed,
            "srnn_convention": float(((elbo - first) / (length - 1)).mean()),
            "mean_over_pieces": float((elbo / length).mean()),
            "total_over_total": float(elbo.sum() / length.sum()),
            "first_step_term_mean": float(first.mean())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="run directories (their checkpoints/best.pt) or checkpoint files")
    parser.add_argument("--seed", type=int, default=0, help="seed of the one sampled trajectory (default: 0)")
    parser.add_argument("--split", default="test", choices=("valid", "test"))
    args = parser.parse_args(argv)
    for run in args.runs:
        print(json.dumps(test_figure(run, seed=args.seed, split=args.split)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
