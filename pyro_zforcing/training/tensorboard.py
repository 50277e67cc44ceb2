"""Follow a run in TensorBoard (``--tensorboard``; ``pip install 'pyro-zforcing[tensorboard]'``).

Into ``RUN/tensorboard``: every metrics record as scalars (``step/elbo``, ``epoch/valid_elbo``,
...), and at each validation the analytic KL(q(z_t | .) || p(z_t | h_{t-1})) per step t of a
validation batch (mean over its sequences, as a histogram over t and as a figure) and a few
unconditional samples: images (pixels), audio (speech) or text. The epoch extras draw their
noise from forked RNGs, so a run with ``--tensorboard`` trains exactly as one without.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np
import torch

from ..data import collate_sequences
from ..data.base import SequenceSplits
from ..files import record_written
from ..infer import has_step_params, step_kl, trace_pair

NUM_SAMPLES = 4
KL_BATCH = 16


def summary_writer(log_dir: Path):
    """A ``torch.utils.tensorboard.SummaryWriter``, or a one-line error naming the extra."""
    try:
        import tensorboard  # noqa: F401  (torch's writer needs it; its own import error is vaguer)
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError("--tensorboard needs the tensorboard package: "
                         "pip install 'pyro-zforcing[tensorboard]' (or pip install tensorboard)") from None
    return SummaryWriter(log_dir=str(log_dir))


class RunBoard:
    """Writes one run's scalars, KL per step and samples for TensorBoard."""

    def __init__(self, log_dir: Path, splits: SequenceSplits):
        before = set(log_dir.iterdir()) if log_dir.is_dir() else set()
        self.writer = summary_writer(log_dir)
        for path in set(log_dir.iterdir()) - before:  # the writer's event file joins the run's manifest
            record_written(path)
        self.splits = splits

    def scalars(self, record: Dict) -> None:
        """Every number of a ``metrics.jsonl`` record as ``<kind>/<key>`` at its step."""
        for key, value in record.items():
            if key not in ("kind", "step", "epoch") and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{record['kind']}/{key}", value, record["step"])

    @torch.no_grad()
    def epoch(self, objective, record: Dict, *, device: torch.device, dtype: torch.dtype) -> None:
        """An epoch record's scalars, then KL per step and samples of the model as it is now."""
        self.scalars(record)
        step = record["step"]
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(record["epoch"])
            self._kl_per_step(objective, step, device=device, dtype=dtype)
            self._samples(objective, step)

    def _kl_per_step(self, objective, step: int, *, device, dtype) -> None:
        valid = self.splits.valid[:KL_BATCH]
        if not valid:
            return
        batch = collate_sequences(list(valid)).to(device, dtype)
        guide_trace, model_trace = trace_pair(objective.model, objective.guide, batch)
        if not has_step_params(guide_trace, model_trace):
            return
        kl = step_kl(guide_trace, model_trace)  # (B, T), zero on padding
        mean = (kl.sum(0) / batch.mask.sum(0).clamp(min=1)).double().cpu().numpy()  # (T,)
        steps = np.arange(1, len(mean) + 1)
        # a histogram over t whose bucket t holds the mean KL at step t
        self.writer.add_histogram_raw("kl_per_step", min=0.5, max=len(mean) + 0.5, num=float(mean.sum()),
                                      sum=float((steps * mean).sum()), sum_squares=float((steps ** 2 * mean).sum()),
                                      bucket_limits=(steps + 0.5).tolist(), bucket_counts=mean.tolist(),
                                      global_step=step)
        from ..evaluation.plots import plt
        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot(steps, mean)
        ax.set_xlabel("step t")
        ax.set_ylabel("KL (nats)")
        ax.set_title(f"KL per step, {len(valid)} validation sequences")
        fig.tight_layout()
        self.writer.add_figure("kl_per_step_curve", fig, step)  # closes the figure

    def _samples(self, objective, step: int) -> None:
        from ..evaluation.samples import default_steps, kind_of, to_image, waveform, words

        info = self.splits.info
        try:
            kind = kind_of(info)
        except ValueError:
            return
        generated = objective.model.generate(NUM_SAMPLES, default_steps(info)).cpu().numpy()
        if kind == "image":
            images = np.stack([to_image(s, info) for s in generated])[:, None]  # (N, 1, H, W)
            self.writer.add_images("samples", np.clip(images, 0.0, 1.0), step, dataformats="NCHW")
        elif kind == "speech":
            for i, frames in enumerate(generated):
                audio = np.clip(waveform(frames, info), -1.0, 1.0).astype(np.float32)
                self.writer.add_audio(f"samples/{i}", audio, step, sample_rate=info.sample_rate)
        else:
            text = "\n\n".join(words(tokens, info) for tokens in generated)
            self.writer.add_text("samples", text, step)

    def flush(self) -> None:
        self.writer.flush()
