"""The authors' TIMIT test number: the arithmetic of their ``eval_timit.py``, on our model.

Their test data (Fraccaro et al.'s ``timit_for_srnn.py``) holds, for an utterance of frames
f_1..f_T, the targets f_2..f_T with inputs f_1..f_{T-1}: **the first frame is only an input**.
All utterances are zero-padded to the longest, and ``eval_timit.py`` then

1. cuts the time axis into **windows of 40 targets** (the last window of the split may be
   shorter); each window is a fresh call of the model, so the forward and backward LSTM
   **states restart at zero** in every window, the window's first input is the real frame
   before it, and the backward LSTM runs over the window's zero padding too (no packing);
2. scores each window with **one sample** z ~ q: the Gaussian NLL of the targets plus the
   **analytic KL**(q || p) of every step, both summed over the masked (real) steps;
3. sums the windows of each utterance, averages over the batch of 32 rows (``fwd_nll.mean()``)
   and over the test batches (``np.mean``). ``load.py`` pads the test set to
   ``(N // 32 + 1) * 32`` rows with empty utterances, so the printed number is
   **sum over utterances / (32 * (N // 32 + 1))**: for TIMIT's 1,680, total / 1,696.

:func:`evaluate_paper` reproduces this with our networks and reports it in the unit of the
paper's Table 1 (nats per utterance, as a lower bound: the negative of what the script prints),
beside the plain mean over the N utterances; ``reports.write_report(result, out,
name="eval_paper")`` writes ``eval_paper-<split>.json`` and ``eval_paper-<split>.md`` (:func:`markdown_lines`).
Our own protocol (:mod:`.bounds`) scores whole utterances, every frame, with IWAE; it is the
better estimator, this one is the comparable one.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.base import Batch, DataInfo
from ..infer import Objective, bound_terms, has_step_params, step_kl, trace_pair

WINDOW = 40  # eval_timit.py: length = 40
PAPER_BATCH = 32  # eval_timit.py: load.TimitData(..., 32)


@dataclass
class PaperResult:
    """Per-utterance NLL + KL (summed over windows, nats) and how the script averages them."""

    nll_kl: np.ndarray  # (N,)
    window: int
    batch_size: int
    info: DataInfo
    time_s: float = 0.0
    meta: Dict = field(default_factory=dict)

    @property
    def padded_count(self) -> int:
        """Rows after ``load.py``'s padding of the test set to a multiple of the batch, plus one batch."""
        return (len(self.nll_kl) // self.batch_size + 1) * self.batch_size

    def script_value(self) -> float:
        """What ``eval_timit.py`` prints: the mean over batches of the batch means, padding rows included."""
        return float(self.nll_kl.sum() / self.padded_count)

    def to_dict(self) -> Dict:
        n = len(self.nll_kl)
        return {
            **self.meta, "protocol": "paper (eval_timit.py)", "dataset": self.info.name,
            "num_sequences": n, "window": self.window, "batch_size": self.batch_size,
            "padded_sequences": self.padded_count, "time_s": self.time_s,
            "script_nll": self.script_value(), "table_bound": -self.script_value(),
            "mean_bound": float(-self.nll_kl.mean()),
            "per_sequence_nll_kl": self.nll_kl.tolist(),
        }


@dataclass(frozen=True)
class Window:
    """One window of one utterance: targets ``(n, ...)`` (n <= length), the input before them."""

    sequence: int
    length: int
    targets: np.ndarray
    first: np.ndarray


def paper_windows(sequences: Sequence[np.ndarray], *, window: int = WINDOW) -> List[Window]:
    """The windows ``eval_timit.py`` scores: targets f_{2..T} of every utterance, cut at 0, window,
    2 window, ... of the split's padded length ``max(T_i) - 1``; windows without targets are skipped."""
    padded = max(len(s) for s in sequences) - 1
    windows = []
    for start in range(0, padded, window):
        length = min(window, padded - start)
        for i, frames in enumerate(sequences):
            targets = frames[1 + start: 1 + start + length]
            if len(targets):
                windows.append(Window(i, length, targets, frames[start]))
    return windows


def window_batch(windows: Sequence[Window]) -> Batch:
    """Windows of one length as a batch: zero-padded targets, a mask of the real ones, and
    ``lengths`` = the window length, so the backward LSTM crosses the padding as theirs does."""
    length = windows[0].length
    first = torch.as_tensor(np.stack([w.first for w in windows]))
    shape = (len(windows), length) + windows[0].targets.shape[1:]
    x = torch.zeros(shape, dtype=first.dtype)
    mask = torch.zeros(len(windows), length, dtype=torch.bool)
    for row, w in enumerate(windows):
        x[row, :len(w.targets)] = torch.as_tensor(w.targets)
        mask[row, :len(w.targets)] = True
    return Batch(x, mask, torch.full((len(windows),), length, dtype=torch.long), first)


@torch.no_grad()
def window_nll_kl(objective: Objective, batch: Batch) -> torch.Tensor:
    """-log p(y | z) + sum_t KL(q(z_t) || p(z_t)) per window ``(B,)``, z one sample from the guide."""
    guide_trace, model_trace = trace_pair(objective.model, objective.guide, batch)
    nll = -bound_terms(guide_trace, model_trace)["rec"]
    if not objective.model.latent_sites:  # no latent variables: no KL, the NLL is exact
        return nll
    if not has_step_params(guide_trace, model_trace):
        raise ValueError("the paper protocol needs the analytic KL: this guide has no per-step Gaussian parameters")
    return nll + step_kl(guide_trace, model_trace).sum(-1)


def evaluate_paper(objective: Objective, sequences: Sequence[np.ndarray], info: DataInfo, *,
                   window: int = WINDOW, batch_size: int = PAPER_BATCH, rows: int = 256, device="cpu",
                   dtype: Optional[torch.dtype] = None, quiet: bool = True) -> PaperResult:
    """Per-utterance NLL + KL of ``sequences`` (each ``(T_i, D)``) under ``eval_timit.py``'s protocol.

    ``batch_size`` is the script's batch (32), which fixes its averaging; ``rows`` windows are
    scored at once (any number gives the same sums: rows are independent).
    """
    if len(sequences) == 0:
        raise ValueError("cannot evaluate an empty split")
    device = torch.device(device)
    dtype = dtype if dtype is not None else next(objective.parameters()).dtype
    objective = objective.to(device)
    was_training = objective.training
    objective.eval()
    totals = np.zeros(len(sequences))
    windows = paper_windows(sequences, window=window)
    groups: Dict[int, List[Window]] = {}
    for w in windows:
        groups.setdefault(w.length, []).append(w)
    start = time.time()
    bar = tqdm(total=len(windows), unit="window", desc="evaluate (paper protocol)",
               disable=quiet or not sys.stderr.isatty(), dynamic_ncols=True)
    try:
        for group in groups.values():
            for i in range(0, len(group), rows):
                part = group[i:i + rows]
                values = window_nll_kl(objective, window_batch(part).to(device, dtype))
                np.add.at(totals, [w.sequence for w in part], values.double().cpu().numpy())
                bar.update(len(part))
    finally:
        bar.close()
        objective.train(was_training)
    return PaperResult(totals, window=window, batch_size=batch_size, info=info, time_s=time.time() - start)


def markdown_lines(report: Dict) -> str:
    """The paper-protocol numbers of ``report`` (``PaperResult.to_dict``) as a short markdown table."""
    n, padded = report["num_sequences"], report["padded_sequences"]
    return "\n".join([
        f"{report['dataset']} {report.get('split', '')} split, paper protocol (eval_timit.py): {n} utterances, "
        f"{report['window']}-frame windows with states reset to zero, first frame only an input, one sample, "
        f"analytic KL, {report['time_s']:.1f} s",
        "",
        "| bound | nats / utterance |",
        "|---|---:|",
        f"| ELBO as Table 1 (sum / {padded}: batches of {report['batch_size']} padded with empty rows) "
        f"| {report['table_bound']:.3f} |",
        f"| ELBO, mean over the {n} utterances | {report['mean_bound']:.3f} |",
        "",
        f"eval_timit.py prints the NLL, the negative: {report['script_nll']:.3f}.",
    ]) + "\n"

