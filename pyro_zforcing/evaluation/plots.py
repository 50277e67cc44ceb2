"""Seaborn figures of a run, written as PNG into the run directory (matplotlib Agg backend).

- ``learning_curves.png`` from ``metrics.jsonl``: train/valid ELBO, KL, the aux score, and the
  KL and aux annealing weights against updates;
- ``kl_per_step-<split>.png`` from ``eval-<split>.json``: analytic KL(q || p) at each step, mean
  and spread over the evaluated sequences;
- ``iwae_gap_vs_kl-<split>.png`` from ``eval-<split>.json``: IWAE - ELBO against KL per sequence
  (the paper observes the gap grows with the KL).

:func:`plot_run` regenerates every figure whose source file exists.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Dict, List

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import seaborn as sns  # noqa: E402

from ..files import JSONFileError, read_json, read_metrics, write_atomic  # noqa: E402

log = logging.getLogger(__name__)

LEARNING_CURVES = "learning_curves.png"
KL_PER_STEP = "kl_per_step"
GAP_VS_KL = "iwae_gap_vs_kl"


def eval_figure_name(stem: str, split: str) -> str:
    """``<stem>-<split>.png``: each evaluated split has its own figures."""
    return f"{stem}-{split}.png"


def save_figure(fig, path, *, dpi: int = 120) -> Path:
    """Lay out, write as PNG (atomically) and close ``fig``."""
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    write_atomic(path, buffer.getvalue())
    plt.close(fig)
    return Path(path)


def _series(records: List[Dict], kind: str, key: str):
    rows = [(r["step"], r[key]) for r in records if r.get("kind") == kind and r.get(key) is not None]
    return (np.array([s for s, _ in rows]), np.array([v for _, v in rows], dtype=float)) if rows else (None, None)


def learning_curves(records: List[Dict], path, *, unit: str = "unit", train_sequence: str = "sequence",
                    valid_sequence: str = "sequence") -> Path:
    """2x2 panels against updates: ELBO per unit, KL and aux score (nats per sequence; training
    sequences may be chunks of the validation ones), and the annealing weights."""
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), sharex=True)
    same = train_sequence == valid_sequence
    panels = [(axes[0, 0], "elbo_per_unit", "ELBO", f"nats / {unit}"),
              (axes[0, 1], "kl", "KL(q || p)", f"nats / {valid_sequence}" if same else "nats / sequence"),
              (axes[1, 0], "aux", "aux score log p(b | z)", f"nats / {train_sequence}")]
    for ax, key, title, ylabel in panels:
        per = "" if same or key == "elbo_per_unit" else f", per {train_sequence}"
        steps, values = _series(records, "step", key)
        if steps is not None:
            sns.lineplot(x=steps, y=values, ax=ax, label=f"train (one batch{per})", linewidth=1, alpha=0.8)
        per = "" if same or key == "elbo_per_unit" else f", per {valid_sequence}"
        steps, values = _series(records, "epoch", f"valid_{key}")
        if steps is not None:
            sns.lineplot(x=steps, y=values, ax=ax, label=f"valid{per}", marker="o", linewidth=1.5)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        if ax.get_legend() is not None:
            ax.legend(loc="best", fontsize="small")
    ax = axes[1, 1]
    steps, kl_weight = _series(records, "step", "kl_weight")
    _, aux_weight = _series(records, "step", "aux_weight")
    if steps is not None:
        ax.plot(steps, kl_weight, color="C0", label="KL weight")
        ax.set_ylabel("KL weight", color="C0")
        ax.set_ylim(0, 1.05)
        twin = ax.twinx()
        twin.plot(steps, aux_weight, color="C3", label="aux weight")
        twin.set_ylabel("aux weight beta", color="C3")
        twin.grid(False)
        twin.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    ax.set_title("annealing weights")
    for ax in axes[1]:
        ax.set_xlabel("update")
    return save_figure(fig, path)


def kl_per_step(report: Dict, path) -> Path:
    """Mean analytic KL per step with a +-1 standard deviation band over sequences."""
    sns.set_theme(style="whitegrid", context="notebook")
    summary = report["kl_per_step"]
    count = np.array(summary["count"])
    shown = int(np.sum(count >= max(1, count.max() / 2)))  # steps at least half of the sequences reach
    mean, std = np.array(summary["mean"])[:shown], np.array(summary["std"])[:shown]
    steps = np.arange(1, len(mean) + 1)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    sns.lineplot(x=steps, y=mean, ax=ax, label="mean over sequences")
    ax.fill_between(steps, np.maximum(mean - std, 0), mean + std, alpha=0.25, label="± 1 std")
    units = report["units"]
    each = f", {units['units_per_step']} {units['unit']}s each" if units["units_per_step"] != 1 else ""
    ax.set_xlabel(f"time step ({units['step']}{each})")
    ax.set_ylabel("KL(q(z_t) || p(z_t | h_{t-1})) [nats]")
    cut = f", first {shown} steps (reached by half the sequences)" if shown < len(count) else ""
    ax.set_title(f"{report['dataset']} {report.get('split', '')}: KL per step, "
                 f"{report['num_sequences']} sequences{cut}", fontsize=11)
    ax.set_xlim(1, max(2, len(mean)))
    ax.set_ylim(bottom=0)
    ax.legend(loc="best", fontsize="small")
    return save_figure(fig, path)


def gap_vs_kl(report: Dict, path) -> Path:
    """Per sequence: IWAE(K) - ELBO against the analytic KL, with a least-squares line and Spearman's rho."""
    from scipy.stats import spearmanr

    sns.set_theme(style="whitegrid", context="notebook")
    per = report["per_sequence"]
    analytic = per.get("kl_analytic") is not None
    kl = np.array(per["kl_analytic"] if analytic else per["kl"])
    gap = np.array(per["iwae"]) - np.array(per["elbo"])
    fig, ax = plt.subplots(figsize=(7, 5))
    wide = bool(np.all(kl > 0) and np.all(gap > 0) and kl.max() / kl.min() > 100)
    if wide:  # orders of magnitude apart (whole utterances of very different lengths): log axes
        sns.scatterplot(x=kl, y=gap, ax=ax, s=16, alpha=0.6)
        ax.set_xscale("log")
        ax.set_yscale("log")
    else:
        sns.regplot(x=kl, y=gap, ax=ax, scatter_kws={"s": 12, "alpha": 0.5}, line_kws={"color": "C3"}, ci=None)
    rho = spearmanr(kl, gap).statistic if len(kl) > 2 else float("nan")
    sequence_unit = report["units"]["sequence"]
    how = "sum of analytic per-step KLs" if analytic else f"mean of {report['iwae_samples']} samples"
    ax.set_xlabel(f"KL(q || p), {how} [nats / {sequence_unit}]")
    ax.set_ylabel(f"IWAE({report['iwae_samples']}) - ELBO [nats / {sequence_unit}]")
    ax.set_title(f"{report['dataset']} {report.get('split', '')}: bound gap vs KL "
                 f"(Spearman rho = {rho:.2f}, n = {len(kl)})")
    return save_figure(fig, path)


def curve_units(data_info: Dict) -> Dict[str, str]:
    """Units of the learning curves from a run's ``data_info``: training speech is cut into
    chunks of ``chunk_frames`` while validation may use whole utterances."""
    extra = data_info.get("extra", {})
    valid = extra.get("sequence_unit", "sequence")
    train = valid
    chunk = extra.get("chunk_frames")
    if chunk and extra.get("eval_chunk_frames") != chunk:
        train = f"{chunk}-frame chunk"
    return {"unit": data_info.get("unit", "unit"), "train_sequence": train, "valid_sequence": valid}


def eval_figures(report: Dict, out_dir) -> List[Path]:
    """The figures drawn from an ``eval-<split>.json`` report: KL per step (when available) and the gap
    (not for a model without latents, whose gap and KL are 0)."""
    out_dir = Path(out_dir)
    split = report.get("split", "test")
    written = [kl_per_step(report, out_dir / eval_figure_name(KL_PER_STEP, split))] \
        if report.get("kl_per_step") else []
    if report.get("exact_likelihood"):
        return written
    return written + [gap_vs_kl(report, out_dir / eval_figure_name(GAP_VS_KL, split))]


def check_report(report: Dict, path) -> Dict:
    """``report`` (read from ``path``) has what the figures read, or a one-line error naming the file."""
    def fail(what: str):
        raise JSONFileError(f"{path}: not an evaluation report ({what})")

    def numbers(values, name: str) -> int:
        if not isinstance(values, list) or not values or \
                not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            fail(f"{name} is not a list of numbers")
        return len(values)

    for key, kind in (("dataset", str), ("split", str), ("num_sequences", int), ("iwae_samples", int),
                      ("units", dict), ("per_sequence", dict)):
        if not isinstance(report.get(key), kind) or isinstance(report.get(key), bool):
            fail(f"no {key!r} of the right type")
    units = report["units"]
    if not all(isinstance(units.get(key), str) for key in ("sequence", "step", "unit")) \
            or not isinstance(units.get("units_per_step"), int):
        fail("its 'units' lack sequence, step, unit or units_per_step")
    per = report["per_sequence"]
    keys = ["elbo", "iwae", "kl"] + (["kl_analytic"] if per.get("kl_analytic") is not None else [])
    if len({numbers(per.get(key), f"per_sequence.{key}") for key in keys}) > 1:
        fail("its per-sequence lists differ in length")
    summary = report.get("kl_per_step")
    if summary is not None:
        if not isinstance(summary, dict):
            fail("'kl_per_step' is not an object")
        if len({numbers(summary.get(key), f"kl_per_step.{key}") for key in ("mean", "std", "count")}) > 1:
            fail("its kl_per_step lists differ in length")
    return report


def run_units(run_dir: Path) -> Dict[str, str]:
    """The learning curves' units from ``run_dir/config.json`` (none without one)."""
    config = run_dir / "config.json"
    if not config.is_file():
        return {}
    info = read_json(config).get("data_info")
    if not isinstance(info, dict) or not isinstance(info.get("extra", {}), dict):
        raise JSONFileError(f"{config}: no 'data_info' object; this is not the config.json of a run")
    return curve_units(info)


def plot_run(run_dir) -> List[Path]:
    """Every figure of ``run_dir`` whose source exists (``metrics.jsonl``, ``eval-<split>.json``);
    a malformed source is a one-line error naming the file (and line)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    written = []
    metrics = run_dir / "metrics.jsonl"
    units = run_units(run_dir)
    if metrics.is_file():
        records = read_metrics(metrics)
        if records:
            written.append(learning_curves(records, run_dir / LEARNING_CURVES, **units))
    reports = [run_dir / f"eval-{split}.json" for split in ("train", "valid", "test")
               if (run_dir / f"eval-{split}.json").is_file()]  # never a user's eval-mine.json
    for report_path in reports:
        written += eval_figures(check_report(read_json(report_path), report_path), run_dir)
    if not reports:
        log.info("%s: no eval-<split>.json: run `zforcing evaluate` for the KL-per-step and gap figures", run_dir)
    if not written:
        raise FileNotFoundError(f"{run_dir}: nothing to plot (no record in a metrics.jsonl, no eval-<split>.json)")
    return written
