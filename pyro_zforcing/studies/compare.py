"""Models compared as study variants (``zforcing compare``): matched sizes and a Table-1-style table.

Parameters are counted by role (:func:`pyro_zforcing.infer.parameter_roles`): the generative
model p(y, z), the inference network (the guide and the model modules it reads), the
training-only heads (Z-Forcing's aux and backward-LM heads, when their weight is ever > 0), and
none that no gradient reaches in the run. :func:`match_parameters` picks each model's
``rnn_dim`` (with ``mlp_dim`` scaled in proportion) so that its generative parameters
(``match="generative"``, the default: each model keeps its own inference network, as Dai et al.
2019 and Fraccaro et al. 2016 compare) or all its trained parameters (``match="all"``) come
within ``tolerance`` of a reference model's. :func:`write_comparison` turns a finished study into
``compare.csv``, ``compare.md`` and ``compare.png``: test ELBO and IWAE in nats per sequence, per
step and per unit, mean ± std over seeds, with the parameter counts of every role and how each
run stopped. The study itself runs with :func:`~.ablation.run_study`.

An emission's parameters are p(y, z)'s whatever its family (:mod:`~pyro_zforcing.emissions`):
matching compares whole generative models, so a variant with a larger emission (nade's W and V,
ar-gmm's MADE) gets a narrower recurrence to make up for it. The sizes table names each
variant's emission and how many of its p(y, z) parameters are the emission's, and says so when
the variants' emissions differ.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from .ablation import VARIANTS, Study, stopped_summary, value_text
from ..config import ModelConfig
from ..emissions import Emission
from ..evaluation.bounds import step_unit
from ..files import csv_text, write_atomic
from ..build import build_objective, model_config_for
from ..infer import (GENERATIVE, INFERENCE, TRAINING_ONLY, UNTRAINED, active_factors, parameter_counts, scalar_count,
                     weight_masks)

log = logging.getLogger(__name__)

MATCH_TOLERANCE = 0.05
MATCH_KINDS = ("generative", "all", "none")  # --match-params
SIZES_FILE = "sizes.json"


def role_counts(study: Study, variant: str, info) -> Tuple[Dict[str, int], Tuple[str, int]]:
    """Parameters by role (generative, inference, training_only, untrained) of one variant of
    ``study`` on data described by ``info``, for the training-only factors its run switches on;
    and (its emission family, how many of the p(y, z) parameters are the emission's)."""
    train, sizes = study.configs(variant, seed=0)
    config = model_config_for(info, **sizes)
    objective = build_objective(config, train.guide)
    return (parameter_counts(objective.model, objective.guide, factors=active_factors(train)),
            (config.emission, emission_count(objective.model)))


def emission_count(model) -> int:
    """Parameters of p(y | .) among p(y, z)'s: every :class:`~pyro_zforcing.emissions.Emission`
    of ``model`` outside its ``side_modules``."""
    side = tuple(model.side_modules)
    return sum(scalar_count(module.parameters(), weight_masks(module)) for name, module in model.named_modules()
               if isinstance(module, Emission) and name.split(".")[0] not in side)


def matched_count(counts: Dict[str, int], match: str) -> int:
    """The count ``--match-params`` compares: p(y, z)'s, or every trained parameter's."""
    if match == "generative":
        return counts[GENERATIVE]
    return counts[GENERATIVE] + counts[INFERENCE] + counts[TRAINING_ONLY]


def _sized(study: Study, variant: str, rnn_dim: int, base: Tuple[int, int]) -> Tuple[Study, Dict]:
    rnn0, mlp0 = base
    sizes = {"rnn_dim": rnn_dim, "mlp_dim": max(1, round(rnn_dim * mlp0 / rnn0))}
    variants = {**study.variants, variant: {**study.variants[variant], **sizes}}
    return replace(study, variants=variants), sizes


def match_parameters(study: Study, info, *, reference: str, match: str = "generative",
                     tolerance: float = MATCH_TOLERANCE) -> Tuple[Study, Dict[str, Dict]]:
    """``study`` with every variant but ``reference`` resized so that its ``match`` count
    (:func:`matched_count`) is the reference's.

    ``reference`` need not be compared itself: any known variant's count can be the target, so a
    study can be split over processes (``--models vrnn --match-to zforcing`` in one, ...).

    Returns (the resized study, ``{variant: {"rnn_dim", "mlp_dim", "matched", "generative",
    "inference", "training_only", "untrained"}}``). The count grows with ``rnn_dim``; a bisection
    finds the width whose count is closest to the target.
    """
    if match not in ("generative", "all"):
        raise ValueError(f"--match-params must be generative or all to match, got {match!r}")
    if reference in study.variants:
        target = matched_count(role_counts(study, reference, info)[0], match)
    elif reference in VARIANTS:  # matched to a model trained elsewhere (a study sharded over processes)
        target = matched_count(role_counts(replace(study, variants={**study.variants, reference: VARIANTS[reference]}),
                                           reference, info)[0], match)
    else:
        raise ValueError(f"--match-to {reference}: unknown variant; known: {', '.join(VARIANTS)}")
    defaults = ModelConfig(input_dim=1)
    chosen = {}
    for variant in study.variants:
        _, sizes = study.configs(variant, seed=0)
        base = (sizes.get("rnn_dim", defaults.rnn_dim), sizes.get("mlp_dim", defaults.mlp_dim))
        if variant != reference:
            def count(width):
                return matched_count(role_counts(_sized(study, variant, width, base)[0], variant, info)[0], match)
            low, high = 1, 2 * base[0]
            while count(high) < target:
                high *= 2
            while high - low > 1:  # count(low) < target <= count(high), or low = 1
                middle = (low + high) // 2
                low, high = (middle, high) if count(middle) < target else (low, middle)
            width = min((low, high), key=lambda w: abs(count(w) - target))
            study, sizes = _sized(study, variant, width, base)
        counts, (emission, in_emission) = role_counts(study, variant, info)
        matched = matched_count(counts, match)
        if abs(matched - target) > tolerance * target:
            raise ValueError(f"--match-params {match}: {variant} has {matched} parameters at its closest size, more "
                             f"than {tolerance:.0%} from {reference}'s {target}; change --rnn-dim/--mlp-dim")
        chosen[variant] = {"rnn_dim": sizes.get("rnn_dim", base[0]), "mlp_dim": sizes.get("mlp_dim", base[1]),
                           "matched": matched, **counts, "emission": emission, "emission_params": in_emission}
    return study, chosen


def write_sizes(study_dir: Path, chosen: Dict[str, Dict], *, reference: str, match: str) -> Path:
    path = Path(study_dir) / SIZES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"reference": reference, "match": match, "sizes": chosen}, indent=1) + "\n")
    return path


def sizes_table(chosen: Dict[str, Dict], *, reference: str, match: str) -> str:
    what = "generative p(y, z)" if match == "generative" else "trained (all roles)"
    lines = [f"{what} parameter counts matched to {reference}'s (an emission's parameters count as p(y, z)'s):",
             "| model | rnn_dim | mlp_dim | p(y, z) | emission | of which the emission's | inference | training-only "
             "| built, no gradient |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {s['rnn_dim']} | {s['mlp_dim']} | {s[GENERATIVE]} | {s['emission']} | {s['emission_params']} "
              f"| {s[INFERENCE]} | {s[TRAINING_ONLY]} | {s[UNTRAINED]} |" for name, s in chosen.items()]
    families = sorted({s["emission"] for s in chosen.values()})
    if len(families) > 1:
        lines.append(f"The emissions differ ({', '.join(families)}): the matched counts include each emission's "
                     "parameters, so the recurrent sizes differ to make up for them.")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- the table

LEVELS = (("", "sequence"), ("_per_step", "step"), ("_per_unit", "unit"))
PARAMETER_COLUMNS = ("params_generative", "params_inference", "params_training_only")


def comparison_rows(results: List[Dict]) -> List[Dict]:
    """One row per variant: mean and std over seeds of ELBO and IWAE at every level, parameters."""
    rows = []
    for variant in dict.fromkeys(r["variant"] for r in results):
        runs = [r for r in results if r["variant"] == variant]
        row = {"variant": variant, "model": runs[0]["model"],
               **{key: runs[0].get(key) for key in PARAMETER_COLUMNS}, "seeds": len(runs),
               "exact": bool(runs[0]["exact"]), "epochs_mean": float(np.mean([r["epochs"] for r in runs])),
               "stopped": stopped_summary(runs)}
        for suffix, _ in LEVELS:
            for bound in ("elbo", "iwae"):
                values = np.array([r[f"test_{bound}{suffix}"] for r in runs], dtype=float)
                row[f"{bound}{suffix}_mean"] = float(values.mean())
                row[f"{bound}{suffix}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        rows.append(row)
    return rows


def comparison_markdown(rows: List[Dict], info, *, iwae_samples: int) -> str:
    """The table of ``compare.md``: one row per model. A single seed's value stands alone; the
    epochs column (completed epochs, mean over seeds) is left out when no run completed one (a
    ``--max-steps`` budget inside the first epoch), where it would read 0.0."""
    unit = info.extra.get("sequence_unit", "sequence")
    names = {"sequence": unit, "step": step_unit(info), "unit": info.unit}
    levels = LEVELS if info.units_per_step != 1 else LEVELS[:2]  # a step is one unit: one column pair
    epochs = any(row["epochs_mean"] > 0 for row in rows)
    header = ["model", "p(y, z) params", "inference params", "training-only params"] + [
        f"{label} / {names[level]}" for _, level in levels for label in ("ELBO", "IWAE")] + (
        ["epochs"] if epochs else []) + ["stopped"]
    seeds = max(r["seeds"] for r in rows)
    over = "one seed" if seeds == 1 else f"mean ± std over {seeds} seeds"
    lines = [f"{info.name}, test split: log-likelihood bounds in nats (higher is better), {over}; IWAE with "
             f"K = {iwae_samples}. A model marked * has no "
             "latent variables: its ELBO and IWAE are its exact log-likelihood. Parameters by role: the "
             "generative model p(y, z), the inference network (guide), the heads only training uses (Z-Forcing's "
             "aux and backward LM, when switched on); parameters no gradient reaches are not counted. "
             + ("Epochs trained (completed, mean) and how" if epochs else "How") + " the runs stopped: early = "
             "validation early stopping (converged), epochs or max_steps = the budget's cap.",
             "", "| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 2) + "|---|"]
    for row in rows:
        digits = lambda suffix: 2 if suffix == "" else 4  # noqa: E731
        cells = [value_text(row[f"{b}{s}_mean"], row[f"{b}{s}_std"], seeds=row["seeds"], digits=digits(s))
                 for s, _ in levels for b in ("elbo", "iwae")]
        params = [str(row[key]) if row[key] is not None else "?" for key in PARAMETER_COLUMNS]
        lines.append(f"| {row['variant']}{'*' if row['exact'] else ''} | " + " | ".join(params + cells)
                     + (f" | {row['epochs_mean']:.1f}" if epochs else "") + f" | {row['stopped']} |")
    return "\n".join(lines) + "\n"


def plot_comparison(rows: List[Dict], results: List[Dict], info, path: Path) -> Path:
    """Test ELBO and IWAE per step of every model: the mean (± sd over seeds) as a point with error
    bars, one dot per seed. Points, not bars: a bar of a negative log-likelihood hangs from wherever
    the cut axis starts, and its length means nothing."""
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
    sns.pointplot(data=frame, x="model", y="nats", hue="bound", errorbar="sd", dodge=0.4, linestyle="none",
                  markers="D", capsize=0.1, ax=ax)
    sns.stripplot(data=frame, x="model", y="nats", hue="bound", dodge=True, palette="dark:black", size=3, ax=ax,
                  legend=False, alpha=0.6)
    low, high = frame["nats"].min(), frame["nats"].max()
    ax.set_ylim(low - 0.1 * (high - low + 1e-9), high + 0.1 * (high - low + 1e-9))
    ax.set_ylabel(f"test bound (nats / {step_unit(info)})")
    ax.set_title(f"{info.name}: test bounds per model (diamonds: mean ± sd over seeds; dots: seeds)")
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
