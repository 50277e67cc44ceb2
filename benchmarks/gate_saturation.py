#!/usr/bin/env python
"""Do loud frames saturate Z-Forcing's forward LSTM? One JSON line per run directory.

For every real step of a split, along a trajectory z ~ q(z | y) from the run's own guide, the
gate pre-activations of the forward LSTM

    a_t = W_ih [e(u_t), W z_t + c] + b + W_hh h_{t-1}      (4H values: input, forget, cell, output gates)

and the loudness of the step's input frame u_t = y_{t-1} (its RMS in normalised units; u_1 the
start frame or the given first frame). Steps are split into loud (RMS at or above the split's
upper quartile) and quiet (at or below the lower quartile); the script prints the share of
pre-activations with |a| > ``--threshold`` (5: a sigmoid's slope is below 0.007 there, tanh's
below 2e-4) in each group, per gate, and the mean |e(u_t)| of each group. ``--at-init`` scores the
run's untrained initial model (rebuilt from its config and seed) instead of its checkpoint.

    python run.py --dataset audio --data-dir /usr/share/asterisk/sounds/en_US_f_Allison --aux-weight 0 \\
        --emb-dim 64 --rnn-dim 64 --z-dim 16 --mlp-dim 64 --max-steps 498 --embedding linear --out runs/emb-linear
    python benchmarks/gate_saturation.py runs/emb-linear runs/emb-leaky
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyro.poutine as poutine  # noqa: E402
import torch  # noqa: E402

from pyro_zforcing.build import build_objective, set_seed  # noqa: E402
from pyro_zforcing.checkpoint import load_checkpoint  # noqa: E402
from pyro_zforcing.data import load_dataset  # noqa: E402
from pyro_zforcing.evaluation.bounds import eval_batches  # noqa: E402
from pyro_zforcing.models import LATENT_SITE  # noqa: E402

GATES = ("input", "forget", "cell", "output")  # PyTorch's order of the 4H pre-activations


@torch.no_grad()
def preactivations(objective, sequences, *, batch_size: int = 32):
    """(a ``(N, 4H)``, input RMS ``(N,)``, |e(u_t)| mean ``(N,)``) over the real steps of ``sequences``."""
    model, guide = objective.model, objective.guide
    lstm = model.fwd.lstm
    param = next(model.parameters())
    parts = []
    for batch in eval_batches(sequences, batch_size):
        batch = batch.to(param.device, param.dtype)
        z = poutine.trace(guide).get_trace(batch).nodes[LATENT_SITE]["value"]
        h_prev = model.forward_states(batch, z)[:, :-1]
        emb = model.embedded(batch)[0]
        a = (torch.cat([emb, model.fwd.z_proj(z)], dim=-1) @ lstm.weight_ih_l0.t() + h_prev @ lstm.weight_hh_l0.t()
             + lstm.bias_ih_l0 + lstm.bias_hh_l0)
        first = torch.zeros_like(batch.x[:, :1]) if batch.first is None else batch.first[:, None]
        inputs = torch.cat([first, batch.x[:, :-1]], dim=1)
        rms = inputs.pow(2).mean(-1).sqrt()
        parts.append((a[batch.mask], rms[batch.mask], emb.abs().mean(-1)[batch.mask]))
    return tuple(torch.cat(p) for p in zip(*parts))


def shares(a: torch.Tensor, threshold: float) -> dict:
    saturated = a.abs() > threshold
    return {"all": round(float(saturated.double().mean()), 4),
            **{gate: round(float(part.double().mean()), 4) for gate, part in zip(GATES, saturated.chunk(4, dim=-1))}}


def measure(run_dir: Path, *, which: str, split: str, threshold: float, at_init: bool) -> dict:
    path = run_dir / "checkpoints" / f"{which}.pt"
    state = load_checkpoint(path)
    config = state["model_config"]
    if config.model != "zforcing" or config.z_conditioning != "concat":
        raise SystemExit(f"{path}: measures Z-Forcing's concat forward LSTM, not {config.model}/{config.z_conditioning}")
    set_seed(state["train_config"].seed)  # the initial weights of the run
    objective = build_objective(config, state["train_config"].guide)
    if not at_init:
        objective.load_state_dict(state["objective"])
    objective.eval()
    torch.manual_seed(0)
    a, rms, emb = preactivations(objective, getattr(load_dataset(state["data_config"]), split))
    low, high = torch.quantile(rms.double(), torch.tensor([0.25, 0.75], dtype=torch.float64))
    loud, quiet = rms >= high, rms <= low
    return {"run": str(run_dir), "weights": "initial" if at_init else f"{which}.pt (step {state['progress']['step']})",
            "embedding": config.embedding, "split": split, "steps": len(rms), "threshold": threshold,
            "loud_rms_at_least": round(float(high), 3), "quiet_rms_at_most": round(float(low), 3),
            "saturated_loud": shares(a[loud], threshold), "saturated_quiet": shares(a[quiet], threshold),
            "mean_abs_embedding_loud": round(float(emb[loud].mean()), 3),
            "mean_abs_embedding_quiet": round(float(emb[quiet].mean()), 3),
            "mean_abs_preactivation_loud": round(float(a[loud].abs().mean()), 3),
            "mean_abs_preactivation_quiet": round(float(a[quiet].abs().mean()), 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run directories of Z-Forcing speech models")
    parser.add_argument("--which", choices=("last", "best"), default="last", help="checkpoint (default: %(default)s)")
    parser.add_argument("--split", choices=("train", "valid", "test"), default="test")
    parser.add_argument("--threshold", type=float, default=5.0, help="|a| counted as saturated (default: %(default)s)")
    parser.add_argument("--at-init", action="store_true", help="the run's untrained initial weights")
    args = parser.parse_args(argv)
    for run_dir in args.run_dirs:
        print(json.dumps(measure(run_dir, which=args.which, split=args.split, threshold=args.threshold,
                                 at_init=args.at_init)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
