"""Models compared as study variants (``run.py compare``): matched sizes and a Table-1-style table.

:func:`match_parameters` picks each model's ``rnn_dim`` (with ``mlp_dim`` scaled in proportion)
so that its trained parameters (model and guide) come within ``tolerance`` of a reference
model's. :func:`write_comparison` turns a finished study into ``compare.csv``, ``compare.md``
and ``compare.png``: test ELBO and IWAE in nats per sequence, per step and per unit, mean ± std
over seeds, with parameter counts. The study itself runs with :func:`~.ablation.run_study`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from .ablation import VARIANTS, Study
from ..config import ModelConfig
from ..evaluation.bounds import step_unit
from ..files import csv_text, write_atomic
from ..build import build_objective, model_config_for

log = logging.getLogger(__name__)

MATCH_TOLERANCE = 0.05
SIZES_FILE = "sizes.json"


def parameter_count(study: Study, variant: str, info) -> int:
    """Trained parameters (model + guide) of one variant of ``study`` on data described by ``info``."""
    train, sizes = study.configs(variant, seed=0)
    objective = build_objective(model_config_for(info, **sizes), train.guide)
    return sum(p.numel() for p in objective.parameters())


def _sized(study: Study, variant: str, rnn_dim: int, base: Tuple[int, int]) -> Tuple[Study, Dict]:
    rnn0, mlp0 = base
    sizes = {"rnn_dim": rnn_dim, "mlp_dim": max(1, round(rnn_dim * mlp0 / rnn0))}
    variants = {**study.variants, variant: {**study.variants[variant], **sizes}}
    return replace(study, variants=variants), sizes


def match_parameters(study: Study, info, *, reference: str,
                     tolerance: float = MATCH_TOLERANCE) -> Tuple[Study, Dict[str, Dict]]:
    """``study`` with every variant but ``reference`` resized to the reference's parameter count.

    ``reference`` need not be compared itself: any known variant's count can be the target, so a
    study can be split over processes (``--models vrnn --match-to zforcing`` in one, ...).

    Returns (the resized study, ``{variant: {"rnn_dim", "mlp_dim", "params"}}``). The count grows
    with ``rnn_dim``; a bisection finds the width whose count is closest to the target.
    """
    if reference in study.variants:
        target = parameter_count(study, reference, info)
    elif reference in VARIANTS:  # matched to a model trained elsewhere (a study sharded over processes)
        target = parameter_count(replace(study, variants={**study.variants, reference: VARIANTS[reference]}),
                                 reference, info)
    else:
        raise ValueError(f"--match-to {reference}: unknown variant; known: {', '.join(VARIANTS)}")
    defaults = ModelConfig(input_dim=1)
    chosen = {}
    for variant in study.variants:
        _, sizes = study.configs(variant, seed=0)
        base = (sizes.get("rnn_dim", defaults.rnn_dim), sizes.get("mlp_dim", defaults.mlp_dim))
        if variant != reference:
            def count(width):
                return parameter_count(_sized(study, variant, width, base)[0], variant, info)
            low, high = 1, 2 * base[0]
            while count(high) < target:
                high *= 2
            while high - low > 1:  # count(low) < target <= count(high), or low = 1
                middle = (low + high) // 2
                low, high = (middle, high) if count(middle) < target else (low, middle)
            width = min((low, high), key=lambda w: abs(count(w) - target))
            study, sizes = _sized(study, variant, width, base)
        params = parameter_count(study, variant, info)
        if abs(params - target) > tolerance * target:
            raise ValueError(f"--match-params: {variant} has {params} parameters at its closest size, more than "
                             f"{tolerance:.0%} from {reference}'s {target}; change --rnn-dim/--mlp-dim")
        chosen[variant] = {"rnn_dim": sizes.get("rnn_dim", base[0]), "mlp_dim": sizes.get("mlp_dim", base[1]),
                           "params": params}
    return study, chosen


def write_sizes(study_dir: Path, chosen: Dict[str, Dict], *, reference: str) -> Path:
    path = Path(study_dir) / SIZES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"reference": reference, "sizes": chosen}, indent=1) + "\n")
    return path


def sizes_table(chosen: Dict[str, Dict], *, reference: str) -> str:
    lines = [f"parameter counts matched to {reference}'s:", "| model | rnn_dim | mlp_dim | parameters |",
             "|---|---:|---:|---:|"]
    lines += [f"| {name} | {s['rnn_dim']} | {s['mlp_dim']} | {s['params']} |" for name, s in chosen.items()]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the table

LEVELS = (("", "sequence"), ("_per_step", "step"), ("_per_unit", "unit"))


def comparison_rows(results: List[Dict]) -> List[Dict]:
    """One row per variant: mean and std over seeds of ELBO and IWAE at every level, parameters."""
    rows = []
    for variant in dict.fromkeys(r["variant"] for r in results):
        runs = [r for r in results if r["variant"] == variant]
        row = {"variant": variant, "model": runs[0]["model"], "params": runs[0]["params"],
               "seeds": len(runs), "exact": bool(runs[0]["exact"])}
        for suffix, _ in LEVELS:
            for bound in ("elbo", "iwae"):
                values = np.array([r[f"test_{bound}{suffix}"] for r in runs], dtype=float)
                row[f"{bound}{suffix}_mean"] = float(values.mean())
                row[f"{bound}{suffix}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def comparison_markdown(rows: List[Dict], info, *, iwae_samples: int) -> str:
    unit = info.extra.get("sequence_unit", "sequence")
    names = {"sequence": unit, "step": step_unit(info), "unit": info.unit}
    levels = LEVELS if info.units_per_step != 1 else LEVELS[:2]  # a step is one unit: one column pair
    header = ["model", "parameters"] + [f"{label} / {names[level]}" for _, level in levels
                                        for label in ("ELBO", "IWAE")]
    lines = [f"{info.name}, test split: log-likelihood bounds in nats (higher is better), mean ± std over "
             f"{max(r['seeds'] for r in rows)} seed(s); IWAE with K = {iwae_samples}. A model marked * has no "
             "latent variables: its ELBO and IWAE are its exact log-likelihood.",
             "", "| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for row in rows:
        digits = lambda suffix: 2 if suffix == "" else 4  # noqa: E731
        cells = [f"{row[f'{b}{s}_mean']:.{digits(s)}f} ± {row[f'{b}{s}_std']:.{digits(s)}f}"
                 for s, _ in levels for b in ("elbo", "iwae")]
        lines.append(f"| {row['variant']}{'*' if row['exact'] else ''} | {row['params']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_comparison(rows: List[Dict], results: List[Dict], info, path: Path) -> Path:
    """Test ELBO and IWAE per step of every model, one point per seed and the mean."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    from ..evaluation.plots import save_figure

    frame = pd.DataFrame([{"model": r["variant"], "bound": bound.upper(), "nats": r[f"test_{bound}_per_step"]}
                          for r in results for bound in ("elbo", "iwae")])
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(1.6 * len(rows) + 3, 4))
    sns.barplot(data=frame, x="model", y="nats", hue="bound", errorbar="sd", ax=ax, alpha=0.7)
    sns.stripplot(data=frame, x="model", y="nats", hue="bound", dodge=True, palette="dark:black", size=4, ax=ax,
                  legend=False)
    low, high = frame["nats"].min(), frame["nats"].max()
    ax.set_ylim(low - 0.1 * (high - low + 1e-9), high + 0.1 * (high - low + 1e-9))
    ax.set_ylabel(f"test bound (nats / {step_unit(info)})")
    ax.set_title(f"{info.name}: test bounds per model (bars: mean ± sd over seeds; dots: seeds)")
    return save_figure(fig, path, dpi=100)


def write_comparison(study_dir, results: List[Dict], info, *, iwae_samples: int) -> str:
    """``compare.csv``, ``compare.md`` and ``compare.png`` in ``study_dir``; returns the markdown."""
    study_dir = Path(study_dir)
    rows = comparison_rows(results)
    write_atomic(study_dir / "compare.csv", csv_text(rows, list(rows[0])))
    text = comparison_markdown(rows, info, iwae_samples=iwae_samples)
    write_atomic(study_dir / "compare.md", text)
    plot_comparison(rows, results, info, study_dir / "compare.png")
    return text
