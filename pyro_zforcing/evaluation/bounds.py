"""Bounds over a data split: per-sequence ELBO, IWAE(K), KL and reconstruction, in the paper's units.

:func:`evaluate_split` runs :func:`~pyro_zforcing.infer.importance_terms` over a split in
batches (whole sequences, never windows) and returns per-sequence arrays plus averages:

- nats per sequence (an image for MNIST/digits, an utterance or chunk for speech, a sentence
  for text), the unit of the paper's tables for TIMIT, Blizzard and MNIST (the authors' own
  TIMIT arithmetic, 40-frame windows, is :mod:`.paper_protocol`);
- nats per step (a frame of speech, a row or pixel of an image, a time step of a piano roll) and
  per unit (``info.unit``: sample, pixel, word, time step), averaged as total nats / total units
  over the split, and the mean over sequences of nats per step (``per_step_sequence_mean``);
- for text, perplexity per word exp(-bound per word), with <eos> counted as a word.

Every bound excludes the training-only aux and backward factors. :func:`markdown_table` renders
a report (``eval-<split>.json``, written by :mod:`.reports`) as a table of means, standard
errors and medians over sequences (one long utterance can dominate a speech mean).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np
import pyro
import torch

from .. import memory
from ..data import Batch, collate_sequences
from ..data.base import DataInfo, length_batches
from ..graphs import GraphedBounds
from ..infer import Objective, importance_terms, sequence_terms
from ..steps import check_compile_available, compiled_steps
from .progress import progress

log = logging.getLogger(__name__)

TERMS = ("elbo", "iwae", "kl", "rec")
# Values held per particle chunk while tracing it (states, gates, embeddings; see values_per_step).
PARTICLE_ELEMENTS = 48_000_000


def values_per_step(model, step_size: int) -> int:
    """Values tracing one step of one particle keeps alive (:func:`.memory.values_per_step`);
    a model without a ``config`` is assumed to need 1,024 besides the input step."""
    config = getattr(model, "config", None)
    return 1024 + step_size if config is None else memory.values_per_step(config, step_size)


def particle_chunk(batch, num_samples: int, *, model=None, max_elements: int = PARTICLE_ELEMENTS) -> int:
    """How many particles of ``batch`` to trace at once: all K if their states fit ``max_elements``."""
    step_size = batch.x[0, 0].numel()
    return chunk_for(batch.x.shape[0], batch.x.shape[1], step_size, num_samples, model=model,
                     max_elements=max_elements)


def chunk_for(rows: int, steps: int, step_size: int, num_samples: int, *, model=None,
              max_elements: int = PARTICLE_ELEMENTS) -> int:
    """Particles of a batch of ``rows`` x ``steps`` traced at once: all K if their states fit ``max_elements``."""
    per_particle = rows * steps * values_per_step(model, step_size)
    return max(1, min(num_samples, max_elements // max(1, per_particle)))


def check_evaluation_fits(model, lengths: Sequence[int], batches: Sequence[Sequence[int]], *, step_size: int,
                          num_samples: int, chunk: Optional[int], element_size: int, device) -> Optional[int]:
    """Before anything is traced: refuse an evaluation whose largest particle chunk cannot fit in
    memory (:func:`.memory.check_fits`) or whose K x steps would not end (:func:`.memory.check_work`).
    Returns the particles per chunk when automatic (``chunk`` None): as many as
    :data:`PARTICLE_ELEMENTS` and half the memory the process may still use allow."""
    memory.check_work(num_samples * int(sum(lengths)), what=f"--iwae-samples {num_samples} over the split's "
                      f"{int(sum(lengths)):,} steps", hint="use a smaller --iwae-samples")
    budget = None
    if chunk is None:
        budget = max(1, min(PARTICLE_ELEMENTS, memory.available_bytes(device) // (2 * element_size)))
    worst, where = 0, ""
    for indices in batches:
        rows, steps = len(indices), max(lengths[i] for i in indices)
        particles = min(chunk, num_samples) if chunk is not None else \
            chunk_for(rows, steps, step_size, num_samples, model=model, max_elements=budget)
        held = particles * rows * steps * values_per_step(model, step_size) * element_size
        if held > worst:
            worst, where = held, f"evaluating {rows} sequence(s) of {steps} steps, {particles} particle(s) at a time"
    memory.check_fits(worst, device=device, what=where,
                      hint="use a smaller --iwae-chunk" if chunk is not None else "use a smaller --batch-size")
    return budget


def eval_batches(sequences, batch_size: int) -> Iterator[Batch]:
    """Padded batches of similar-length sequences, longest first, bounded in size (``length_batches``)."""
    step_size = int(np.prod(sequences[0].shape[1:])) if len(sequences) else 1
    for indices in length_batches([len(s) for s in sequences], batch_size=batch_size, step_size=step_size):
        yield collate_sequences([sequences[i] for i in indices])


def units_of(batch: Batch, info: DataInfo) -> torch.Tensor:
    """How many reported units (pixels, samples, words) each sequence holds ``(B,)``."""
    return batch.lengths.to(torch.float64) * info.units_per_step


@torch.no_grad()
def evaluate_elbo(objective: Objective, sequences, info: DataInfo, *, batch_size: int,
                  device: torch.device, dtype: torch.dtype,
                  terms: Optional[Callable[[Batch], Dict[str, torch.Tensor]]] = None) -> Dict[str, float]:
    """Mean one-sample ELBO, reconstruction and KL per sequence, and the ELBO per unit.

    ``terms(batch)`` computes the per-sequence terms (default :func:`~pyro_zforcing.infer.sequence_terms`;
    the trainer passes its CUDA graphs of the same function, :class:`~pyro_zforcing.graphs.GraphedBounds`)."""
    if terms is None:
        def terms(batch):
            return sequence_terms(objective.model, objective.guide, batch)
    totals = {"elbo": 0.0, "rec": 0.0, "kl": 0.0}
    units = 0.0
    count = 0
    for batch in eval_batches(sequences, batch_size):
        batch = batch.to(device, dtype)
        values = terms(batch)
        for key in totals:
            totals[key] += float(values[key].sum())
        units += float(units_of(batch, info).sum())
        count += batch.batch_size
    result = {key: value / count for key, value in totals.items()}
    result["elbo_per_unit"] = totals["elbo"] / units
    return result


@dataclass
class SplitResult:
    """Per-sequence bounds of one split (numpy arrays of length N) and how they were obtained."""

    elbo: np.ndarray
    iwae: np.ndarray
    kl: np.ndarray
    rec: np.ndarray
    lengths: np.ndarray
    units: np.ndarray
    kl_steps: List[np.ndarray]  # analytic KL per step of each sequence; empty if unavailable
    num_samples: int
    info: DataInfo
    time_s: float = 0.0
    meta: Dict = field(default_factory=dict)
    exact: bool = False  # a model without latents: ELBO = IWAE = log p(y), KL = 0
    latents: Optional[Dict] = None  # what z carries (evaluation.latents.latent_summary), if measured

    @property
    def gap(self) -> np.ndarray:
        """IWAE - ELBO per sequence (>= 0 in expectation)."""
        return self.iwae - self.elbo

    def per_sequence_mean(self) -> Dict[str, float]:
        return {key: float(getattr(self, key).mean()) for key in TERMS + ("gap",)}

    def per_sequence_median(self) -> Dict[str, float]:
        return {key: float(np.median(getattr(self, key))) for key in TERMS + ("gap",)}

    def per_sequence_stderr(self) -> Dict[str, float]:
        n = len(self.elbo)
        return {key: float(getattr(self, key).std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
                for key in TERMS + ("gap",)}

    def per_step(self) -> Dict[str, float]:
        steps = float(self.lengths.sum())
        return {key: float(getattr(self, key).sum() / steps) for key in TERMS}

    def per_step_sequence_mean(self) -> Dict[str, float]:
        """The mean over sequences of each sequence's bound per step, (1/N) sum_i bound_i / T_i: the
        normalisation of TSBN's figures (Gan et al., 2015; the {c} of Krishnan et al., 2017), which
        weighs a short sequence as much as a long one. :meth:`per_step` divides totals instead."""
        return {key: float((getattr(self, key) / self.lengths).mean()) for key in TERMS}

    def per_unit(self) -> Dict[str, float]:
        units = float(self.units.sum())
        return {key: float(getattr(self, key).sum() / units) for key in TERMS}

    def perplexity(self) -> Optional[Dict[str, float]]:
        """exp(-bound per word) for the ELBO and IWAE bounds (text only, else None)."""
        if self.info.unit != "word":
            return None
        per_unit = self.per_unit()
        return {key: float(math.exp(-per_unit[key])) for key in ("elbo", "iwae")}

    def kl_per_step_summary(self) -> Optional[Dict[str, List[float]]]:
        """Mean, standard deviation (ddof 0) and count over sequences of the analytic KL at each step."""
        if not self.kl_steps:
            return None
        steps = max(len(k) for k in self.kl_steps)
        padded = np.full((len(self.kl_steps), steps), np.nan)
        for i, k in enumerate(self.kl_steps):
            padded[i, :len(k)] = k
        count = np.sum(~np.isnan(padded), axis=0)
        mean, std = np.nanmean(padded, axis=0), np.nanstd(padded, axis=0)
        return {"mean": mean.tolist(), "std": std.tolist(), "count": count.tolist()}

    def to_dict(self) -> Dict:
        info = self.info
        return {
            **self.meta,
            "dataset": info.name,
            "num_sequences": int(len(self.elbo)),
            "exact_likelihood": self.exact,
            "iwae_samples": self.num_samples,
            "time_s": self.time_s,
            "units": {"sequence": sequence_unit(info), "step": step_unit(info), "unit": info.unit,
                      "units_per_step": info.units_per_step},
            "normalisation_std": info.std if info.emission == "gaussian" else None,
            "per_sequence_mean": self.per_sequence_mean(),
            "per_sequence_stderr": self.per_sequence_stderr(),
            "per_sequence_median": self.per_sequence_median(),
            "per_step": self.per_step(),
            "per_step_sequence_mean": self.per_step_sequence_mean(),
            "per_unit": self.per_unit(),
            "perplexity": self.perplexity(),
            "kl_per_step": self.kl_per_step_summary(),
            "latents": self.latents,
            "per_sequence": {**{key: getattr(self, key).tolist() for key in TERMS},
                             "kl_analytic": [float(k.sum()) for k in self.kl_steps] or None,
                             "lengths": self.lengths.tolist()},
        }


def sequence_unit(info: DataInfo) -> str:
    return info.extra.get("sequence_unit", "sequence")


def step_unit(info: DataInfo) -> str:
    if info.units_per_step == 1:
        return info.unit
    return "frame" if info.unit == "sample" else "step"


MAX_IWAE_SAMPLES = 1_000_000  # importance samples per sequence beyond which evaluate refuses to start


def check_iwae_samples(num_samples: int, *, chunk: Optional[int] = None, flag: str = "--iwae-samples") -> None:
    """Refuse, before any work, an IWAE bound that cannot finish: more than ``MAX_IWAE_SAMPLES``
    importance samples per sequence (each sample is a full pass of guide and model over it; K =
    30,000,000 in chunks of 1,000 is 30,000 passes per batch)."""
    if num_samples > MAX_IWAE_SAMPLES:
        passes = (f" (in chunks of {chunk:,}: {-(-num_samples // chunk):,} passes per batch)"
                  if chunk and chunk < num_samples else "")
        raise ValueError(f"{flag} {num_samples:,}: each importance sample runs the guide and the model over every "
                         f"sequence{passes}; this cannot finish; at most {MAX_IWAE_SAMPLES:,}")


def evaluate_split(objective: Objective, sequences: Sequence[np.ndarray], info: DataInfo, *,
                   num_samples: int = 25, batch_size: int = 32, chunk: Optional[int] = None,
                   device="cpu", dtype: Optional[torch.dtype] = None, quiet: bool = True,
                   validate: bool = False, compile: bool = False, cuda_graphs: bool = False,
                   length_bucket: int = 16) -> SplitResult:
    """Bounds of every sequence of ``sequences`` (each ``(T_i, D)`` or ``(T_i,)`` tokens).

    ``num_samples`` importance samples per sequence (K of IWAE; the ELBO, KL and reconstruction
    are the K-sample averages; 1 for a model without latents, whose bounds are exact); ``chunk``
    particles are traced at once (default: as many as keep their states near
    :data:`PARTICLE_ELEMENTS` values). Pyro's distribution validation is off unless ``validate``
    (it is on by default in Pyro and costs time and memory). ``compile`` runs the sampling loop's
    cell compiled (:mod:`pyro_zforcing.steps`); ``cuda_graphs`` captures the bounds of a batch as
    CUDA graphs, one per length bucket of ``length_bucket`` steps (:mod:`pyro_zforcing.graphs`).
    """
    if len(sequences) == 0:
        raise ValueError("cannot evaluate an empty split")
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if not objective.model.latent_sites:
        num_samples = 1  # exact: every importance weight is p(y)
    device = torch.device(device)
    if compile:
        check_compile_available(device)
    if cuda_graphs and (device.type != "cuda" or validate):
        raise ValueError("--cuda-graphs needs --device cuda and Pyro's validation off")
    dtype = dtype if dtype is not None else next(objective.parameters()).dtype
    objective = objective.to(device)
    was_training = objective.training
    objective.eval()
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    step_size = int(np.prod(np.shape(sequences[0])[1:], dtype=np.int64))
    batches = length_batches(lengths.tolist(), batch_size=batch_size, step_size=step_size)
    budget = check_evaluation_fits(objective.model, lengths.tolist(), batches, step_size=step_size,
                                   num_samples=num_samples, chunk=chunk, device=device,
                                   element_size=torch.empty((), dtype=dtype).element_size())
    values = {key: np.zeros(len(sequences)) for key in TERMS}
    kl_steps: List[Optional[np.ndarray]] = [None] * len(sequences)
    start = time.time()
    bar = progress(len(sequences), unit="sequence", desc=f"evaluate K={num_samples}", quiet=quiet)
    model, guide = objective.model, objective.guide

    def terms(batch, *, chunk):
        return importance_terms(model, guide, batch, num_samples=num_samples, chunk=chunk, kl_per_step=True)

    if cuda_graphs:
        terms = GraphedBounds(terms, model=model, rows=batch_size, length_bucket=length_bucket, device=device,
                              dtype=dtype, longest=int(lengths.max()))
    try:
        with pyro.validation_enabled(validate), compiled_steps(compile):
            evaluate_batches(objective, sequences, batches, values, kl_steps, num_samples=num_samples,
                             chunk=chunk, device=device, dtype=dtype, bar=bar, terms=terms, budget=budget)
    finally:
        bar.close()
        objective.train(was_training)
    return SplitResult(**values, lengths=lengths, units=lengths * info.units_per_step,
                       kl_steps=[k for k in kl_steps if k is not None],
                       num_samples=num_samples, info=info, time_s=time.time() - start,
                       exact=not objective.model.latent_sites)


def evaluate_batches(objective: Objective, sequences, batches, values, kl_steps, *, num_samples: int,
                     chunk: Optional[int], device, dtype, bar, terms: Callable[..., Dict[str, torch.Tensor]],
                     budget: Optional[int] = None) -> None:
    """Fill ``values[key][i]`` and ``kl_steps[i]`` for every sequence index of ``batches`` from
    ``terms(batch, chunk=particles)`` (:func:`~pyro_zforcing.infer.importance_terms` of K samples;
    the sizes checked by :func:`check_evaluation_fits`, ``budget`` its particle budget)."""
    for indices in batches:
        batch = collate_sequences([sequences[i] for i in indices]).to(device, dtype)
        particles = chunk if chunk is not None else particle_chunk(
            batch, num_samples, model=objective.model, max_elements=budget or PARTICLE_ELEMENTS)
        result = terms(batch, chunk=particles)
        for key in TERMS:
            values[key][indices] = result[key].double().cpu().numpy()
        if "kl_steps" in result:
            steps = result["kl_steps"].double().cpu().numpy()
            for row, i in enumerate(indices):
                kl_steps[i] = steps[row, :int(batch.lengths[row])]
        bar.update(len(indices))


# ----------------------------------------------------------------------------- reports

def markdown_table(report: Dict) -> str:
    """The averages of ``report`` (an ``eval-<split>.json`` dict) as a markdown table in nats."""
    units = report["units"]
    k = report["iwae_samples"]
    columns = [(f"nats / {units['sequence']}", report["per_sequence_mean"]),
               (f"median / {units['sequence']}", report["per_sequence_median"])]
    if units["units_per_step"] != 1:
        columns.append((f"nats / {units['step']}", report["per_step"]))
    columns.append((f"nats / {units['unit']}", report["per_unit"]))
    perplexity = report.get("perplexity")
    header = ["bound"] + [name for name, _ in columns] + (["perplexity"] if perplexity else [])
    lines = [
        f"{report['dataset']} {report.get('split', '')} split: {report['num_sequences']} sequences, "
        f"K = {k} importance samples, {report['time_s']:.1f} s"
        + (f" ({report['checkpoint']})" if "checkpoint" in report else ""),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
    ]
    stderr = report["per_sequence_stderr"]
    for key, label in (("elbo", "ELBO"), ("iwae", f"IWAE (K={k})"), ("kl", "KL"), ("rec", "reconstruction")):
        first = f"{columns[0][1][key]:.3f} ± {stderr[key]:.3f}"
        median = f"{columns[1][1][key]:.3f}"
        cells = [first, median] + [f"{values[key]:.4f}" for _, values in columns[2:]]
        if perplexity:
            cells.append(f"{perplexity[key]:.2f}" if key in perplexity else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    gap = report["per_sequence_mean"]["gap"]
    lines += ["", f"ELBO-IWAE gap: {gap:.3f} ± {stderr['gap']:.3f} nats / {units['sequence']} "
              f"(median {report['per_sequence_median']['gap']:.3f}); ± is the standard error of the mean "
              "over sequences. Bounds exclude the aux factor."]
    if units["unit"] == "time step" and "per_step_sequence_mean" in report:
        means = report["per_step_sequence_mean"]
        lines.append(f"Nats / time step divide the split's total by its total time steps (as the DMM paper's and "
                     f"Pyro's figures); the mean over {units['sequence']}s of each one's nats per time step (TSBN's "
                     f"convention) is ELBO {means['elbo']:.4f}, IWAE {means['iwae']:.4f}.")
    lines += latent_lines(report.get("latents"), step=units["step"])
    if report.get("exact_likelihood"):
        lines.append("This model has no latent variables: its ELBO and IWAE are its exact log-likelihood "
                     "log p(y) (KL = 0, no sampling).")
    std = report.get("normalisation_std")
    if isinstance(std, (list, tuple)):  # one std per dimension (arrays)
        shift = -sum(math.log(s) for s in std)
        lines.append(f"Densities are of the values normalised per dimension, (x_d - mean_d) / std_d; in the data's "
                     f"own units add -sum_d log(std_d) = {shift:.4f} nats per {units['step']} "
                     f"({shift / len(std):.4f} per {units['unit']}).")
    elif std:
        lines.append(f"Densities are of the normalised signal (x - mean) / std; for the full-scale waveform "
                     f"add -log(std) = {-math.log(std):.4f} nats per {units['unit']}.")
    return "\n".join(lines) + "\n"


def latent_lines(summary: Optional[Dict], *, step: str) -> List[str]:
    """Markdown lines of a report's ``latents`` (:func:`.latents.latent_summary`; none for ``None``),
    ``step`` naming the unit of a step."""
    if not summary:
        return []
    lines = [f"Latents: {summary['active_units']} of {summary['z_dim']} active units (variance > {summary['active_threshold']} "
             f"of the posterior mean minus the prior's; {summary['active_units_raw']} without the prior removed)."]
    mi = summary.get("mutual_information")
    if mi:
        lines.append(f"I(y; z_t) under the aggregate posterior: {mi['nats']:.4f} ± {mi['stderr']:.4f} nats / {step} "
                     f"(He et al. 2019's estimator over {mi['pairs']} (sequence, {step}) pairs; at most log M = "
                     f"{mi['log_pairs']:.2f}).")
    correlations = summary.get("correlations")
    if correlations:
        for name, what in (("length", "sentence length"), ("position", "word position")):
            values = [(abs(r), u, r) for u, r in enumerate(correlations[name]) if r is not None]
            if values:
                _, unit, r = max(values)
                lines.append(f"Largest correlation of a posterior mean with {what}: r = {r:.3f} (dimension {unit}).")
    return lines
