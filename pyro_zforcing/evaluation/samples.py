"""Samples you can hear and see: unconditional, primed (conditional) and latent interpolation.

Outputs by data kind (``DataInfo``):

- speech (gaussian emission with a sample rate): WAV files at the data's sample rate, frames
  de-normalised with the training mean/std and written as 16-bit PCM, plus a PNG of waveforms;
- images (``image_shape``): a PNG grid of digits (pixel probabilities for decoded means);
- text (``vocab``): one sentence per line in a text file, cut at ``<eos>``;
- any other sequences (``--dataset arrays``, token ids without a vocabulary): a ``.npy`` of the
  samples ``(N, T, D)`` (or ``(N, T)`` ids) in the data's own units (de-normalised per
  dimension), the layout ``--dataset arrays`` reads back, plus a PNG of their first dimensions
  (token ids: a piano roll of token against step, :func:`token_plot`).

Conditional generation encodes the first P steps of real sequences with the guide
(z_{1:P} ~ q(z | y_{1:P})), teacher-forces them, and continues from the prior. Interpolation
encodes two whole sequences, mixes their latent trajectories linearly per step (the shorter
padded with the prior's mean, :func:`interpolate`), and decodes each mixture: with the emission
means for images and text (text until ``<eos>``, at most twice the longer sentence), by sampling
y given z for speech; the real end points are shown padded to the decoded length.

:func:`sample_all` checks every size and index it is given before it generates or writes
anything (:func:`check_request`): memory, the figure's pixel limit, ``--pair``, the prime.
Every file is written atomically (WAVs too).
"""

from __future__ import annotations

import logging
import math
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import pyro.poutine as poutine
import torch
from tqdm.auto import tqdm

from .. import memory
from ..data import collate_sequences
from ..data.base import DataInfo
from ..files import write_atomic
from ..models.base import LATENT_SITE, PartialLatents
from .plots import save_figure

log = logging.getLogger(__name__)

# matplotlib's Agg canvas takes fewer than 2**16 pixels per side
MAX_FIGURE_PIXELS = 2 ** 16
GRID_DPI = WAVE_DPI = 110
GRID_COLUMNS = 8
GRID_CELL_INCHES = (1.3, 1.6)  # width, height of one image with its title
WAVE_ROW_INCHES = 1.6
WAVES_SHOWN = 16  # the waveform figure shows the first 16 signals; every WAV is written


def kind_of(info: DataInfo) -> str:
    """``"speech"``, ``"image"``, ``"text"`` or ``"arrays"``: how samples of this dataset are written."""
    if info.emission == "categorical" and info.vocab is not None:
        return "text"
    if info.image_shape is not None:
        return "image"
    if info.sample_rate is not None:
        return "speech"
    return "arrays"


def default_steps(info: DataInfo, seconds: float = 2.0) -> int:
    """Steps of one unconditional sample: a whole image, ``seconds`` of speech, 40 words, or the
    median training length of other sequences (40 when the dataset does not say)."""
    kind = kind_of(info)
    if kind == "image":
        return int(np.prod(info.image_shape)) // info.units_per_step
    if kind == "speech":
        return max(1, int(round(seconds * info.sample_rate / info.units_per_step)))
    if kind == "arrays":
        return int(info.extra.get("train_steps", {}).get("median", 40))
    return 40


# ----------------------------------------------------------------------------- latents

@torch.no_grad()
def encode(objective, sequences: Sequence[np.ndarray], *, device="cpu") -> Optional[torch.Tensor]:
    """One trajectory z ~ q(z | y) per sequence, ``(N, T, Z)`` with T the longest length (None for
    a model without latent variables).

    A guide with a ``proposal`` samples it; any other guide (the contract is only the model's
    signature and the one sample site ``"z"``) is run and its ``"z"`` read from the trace.
    """
    if not objective.model.latent_sites:
        return None
    param = next(objective.parameters())
    batch = collate_sequences(list(sequences)).to(device, param.dtype)
    guide = objective.guide
    if hasattr(guide, "proposal"):
        return guide.proposal(batch).sample()
    log.info("guide %s has no proposal(): latents encoded by tracing the guide's site %r",
             type(guide).__name__, LATENT_SITE)
    return poutine.trace(guide).get_trace(batch).nodes[LATENT_SITE]["value"]


@torch.no_grad()
def primed_continuations(objective, sequences: Sequence[np.ndarray], *, prime_steps: int, steps: int,
                         device="cpu") -> torch.Tensor:
    """Continue real prefixes: the first ``prime_steps`` of each sequence are encoded and
    teacher-forced, the rest up to ``steps`` is sampled. Returns ``(N, steps, ...)``."""
    if prime_steps < 1 or prime_steps >= steps:
        raise ValueError(f"--prime-steps must be in [1, {steps - 1}] for {steps} steps, got {prime_steps}")
    short = [i for i, s in enumerate(sequences) if len(s) < prime_steps]
    if short:
        raise ValueError(f"--prime-steps {prime_steps}: sequence(s) {short[:5]} are shorter than the prime")
    prefixes = [np.asarray(s[:prime_steps]) for s in sequences]
    z = encode(objective, prefixes, device=device)
    prime = collate_sequences(prefixes).to(device, next(objective.parameters()).dtype).x
    return objective.model.generate(len(prefixes), steps, prime=prime, z=z)


#: text interpolations decode up to this many times the longer sentence's length, or to <eos>
TEXT_DECODE_FACTOR = 2


def interpolation_steps(info: DataInfo, lengths: Sequence[int]) -> int:
    """Steps an interpolation between sequences of ``lengths`` decodes: the longer length, times
    :data:`TEXT_DECODE_FACTOR` for text (whose sentences end at their first ``<eos>``)."""
    longest = max(lengths)
    return TEXT_DECODE_FACTOR * longest if kind_of(info) == "text" else longest


@torch.no_grad()
def interpolate(objective, first: np.ndarray, second: np.ndarray, *, num: int = 7, mean: bool = True,
                steps: Optional[int] = None, device="cpu"):
    """Decode a latent interpolation between two whole sequences of any lengths T_1, T_2.

    Both are encoded whole, z_i ~ q(z | y_i) ``(T_i, Z)``. The point ``a`` in [0, 1] (``num`` of
    them, evenly spaced) decodes z_t = (1 - a) z_{1,t} + a z_{2,t}, where a trajectory past its own
    length is padded with the prior's mean mu^p_t of the sequence being decoded (its conditional
    prior given the decoded past, :class:`~pyro_zforcing.models.base.PartialLatents`); past both
    lengths z_t = mu^p_t. Why pad rather than resample in time: a resampled trajectory is no longer
    the sequence's own (an endpoint would decode a time-stretched z), and a latent that carries
    position or length would be distorted by the stretch; the prior's mean is what the model puts
    where it is told nothing. So the endpoints a = 0 and 1 decode each sequence's own trajectory,
    and the length of a decoded sentence is the model's to choose.

    ``steps`` (default: the longer length; :func:`sample_all` passes :func:`interpolation_steps`,
    twice that for text) is how many steps are decoded; text is read up to its first ``<eos>``
    (:func:`decoded_length`). Returns
    (alphas ``(num,)``, decoded sequences ``(num, steps, ...)``): emission means (the most likely
    token) with ``mean``, else y sampled given each latent trajectory.
    """
    if num < 2:
        raise ValueError(f"--interpolate needs at least 2 points, got {num}")
    if not objective.model.latent_sites:
        raise ValueError(f"the {objective.model.name} model has no latent variables to interpolate")
    lengths = (len(first), len(second))
    steps = steps if steps is not None else max(lengths)
    z = encode(objective, [first, second], device=device)  # (2, max(T_1, T_2), Z), each whole
    given = (torch.arange(z.shape[1], device=z.device)[None] < torch.tensor(lengths, device=z.device)[:, None])
    given = given.to(z.dtype)
    z = z * given[..., None]
    alphas = torch.linspace(0, 1, num, dtype=z.dtype, device=z.device)
    mix = torch.stack([1 - alphas, alphas], dim=1)  # (num, 2)
    values = torch.einsum("nk,ktz->ntz", mix, z)
    weight = mix @ given
    decoded = objective.model.generate(num, steps, z=PartialLatents(values, weight), mean=mean)
    return alphas.cpu().numpy(), decoded


def decoded_length(tokens: Sequence[int], info: DataInfo) -> int:
    """Words of a decoded sentence up to and including its first ``<eos>`` (all of them if none)."""
    tokens = np.asarray(tokens).tolist()
    eos = info.extra.get("eos_id")
    return tokens.index(eos) + 1 if eos in tokens else len(tokens)


# ----------------------------------------------------------------------------- writers

def waveform(frames: np.ndarray, info: DataInfo) -> np.ndarray:
    """Normalised frames ``(T, frame)`` back to a full-scale waveform ``(T * frame,)``."""
    return info.denormalise(frames).reshape(-1)


def write_npy(path, samples: np.ndarray, info: DataInfo) -> Path:
    """Samples ``(N, T, D)`` in the data's units (float32), or token ids ``(N, T)`` (int64), as a ``.npy``."""
    if info.emission == "categorical":
        values = np.asarray(samples, dtype=np.int64)
    else:
        values = info.denormalise(samples).astype(np.float32)
    write_atomic(path, lambda handle: np.save(handle, values))
    return Path(path)


def sequence_plot(samples: np.ndarray, labels: List[str], path, *, real: Optional[Sequence[np.ndarray]] = None,
                  marker: Optional[int] = None, title: Optional[str] = None, dims: int = 4) -> Path:
    """One panel per sample: its first ``dims`` dimensions against the step, ``real`` (the data
    primed with) dashed behind, ``marker`` the last primed step."""
    plt = _plt()
    fig, axes = plt.subplots(len(samples), 1, figsize=(10, 1.5 * len(samples) + 0.6), sharex=True, squeeze=False)
    for i, (ax, sample, label) in enumerate(zip(axes[:, 0], samples, labels)):
        sample = np.asarray(sample, dtype=np.float64).reshape(len(sample), -1)
        for d in range(min(dims, sample.shape[1])):
            line, = ax.plot(sample[:, d], linewidth=0.8, drawstyle="steps-mid")
            if real is not None:
                shown = np.asarray(real[i], dtype=np.float64).reshape(len(real[i]), -1)
                ax.plot(shown[:, d], linewidth=0.8, linestyle="--", color=line.get_color(), alpha=0.5)
        if marker is not None:
            ax.axvline(marker - 0.5, color="red", linewidth=1, linestyle="--")
        ax.set_title(label, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("step")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=110)


def token_plot(samples: Sequence[np.ndarray], labels: List[str], path, *, vocab_size: int,
               real: Optional[Sequence[np.ndarray]] = None, marker: Optional[int] = None,
               title: Optional[str] = None) -> Path:
    """One panel per sample of token ids ``(T,)``: a piano roll (token id against the step, a dark
    cell where the sample takes that token), ``real`` (the data primed with) as a light roll behind,
    ``marker`` the last primed step. Ids are categories, so a line through them would draw
    distances that mean nothing."""
    plt = _plt()
    fig, axes = plt.subplots(len(samples), 1, figsize=(10, 1.2 * len(samples) + 0.3 * min(vocab_size, 40) / 10 + 0.6),
                             sharex=True, squeeze=False)
    for i, (ax, sample, label) in enumerate(zip(axes[:, 0], samples, labels)):
        sample = np.asarray(sample, dtype=np.int64).reshape(-1)
        roll = np.zeros((vocab_size, len(sample)))
        if real is not None:
            shown = np.asarray(real[i], dtype=np.int64).reshape(-1)[:len(sample)]
            roll[shown, np.arange(len(shown))] = 0.35
        roll[sample, np.arange(len(sample))] = 1.0
        ax.imshow(roll, aspect="auto", origin="lower", cmap="Greys", vmin=0.0, vmax=1.0, interpolation="nearest")
        if marker is not None:
            ax.axvline(marker - 0.5, color="red", linewidth=1, linestyle="--")
        ax.set_ylabel("token", fontsize=8)
        ax.set_title(label, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("step")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=110)


def write_wav(path, frames: np.ndarray, info: DataInfo) -> Path:
    """De-normalise and write 16-bit PCM at the data's sample rate (samples clipped to [-1, 1]),
    atomically (:func:`~pyro_zforcing.files.write_atomic`)."""
    import soundfile

    path = Path(path)
    signal = waveform(frames, info)
    clipped = np.clip(signal, -1.0, 1.0)
    if np.any(clipped != signal):
        log.info("%s: %d of %d samples clipped to [-1, 1]", path, int(np.sum(clipped != signal)), len(signal))
    write_atomic(path, lambda f: soundfile.write(f, clipped, info.sample_rate, subtype="PCM_16", format="WAV"))
    return path


def to_image(sequence: np.ndarray, info: DataInfo) -> np.ndarray:
    """A pixel sequence ``(T, D)`` as an image of ``info.image_shape``."""
    return np.asarray(sequence, dtype=np.float64).reshape(info.image_shape)


def words(tokens: Sequence[int], info: DataInfo) -> str:
    """Token ids as a sentence, stopping at ``<eos>``."""
    eos = info.extra.get("eos_id")
    out = []
    for token in np.asarray(tokens).tolist():
        if eos is not None and token == eos:
            break
        out.append(info.vocab[token])
    return " ".join(out)


def _plt():
    from .plots import plt  # the Agg backend is selected there

    return plt


def image_grid(images: List[np.ndarray], path, *, columns: int = 8, titles: Optional[List[str]] = None,
               suptitle: Optional[str] = None, boundary_row: Optional[float] = None) -> Path:
    """A PNG grid of grey images (ink dark on white); ``boundary_row`` draws a red line at that
    image row (the end of the real prime)."""
    plt = _plt()
    rows = int(np.ceil(len(images) / columns))
    width, height = GRID_CELL_INCHES
    fig, axes = plt.subplots(rows, columns, figsize=(columns * width, rows * height + (0.5 if suptitle else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= len(images):
            continue
        ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
        if boundary_row is not None:
            ax.axhline(boundary_row - 0.5, color="red", linewidth=1.2)
        if titles:
            ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return save_figure(fig, path, dpi=GRID_DPI)


def waveform_plot(signals: List[np.ndarray], labels: List[str], path, *, sample_rate: int,
                  marker_s: Optional[float] = None, title: Optional[str] = None) -> Path:
    """Stacked waveforms against time in seconds; ``marker_s`` draws the end of the prime."""
    plt = _plt()
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(len(signals), 1, figsize=(10, WAVE_ROW_INCHES * len(signals) + 0.6), sharex=True,
                             squeeze=False)
    for ax, signal, label in zip(axes[:, 0], signals, labels):
        t = np.arange(len(signal)) / sample_rate
        ax.plot(t, signal, linewidth=0.5)
        if marker_s is not None:
            ax.axvline(marker_s, color="red", linewidth=1, linestyle="--")
        ax.set_ylabel("amplitude", fontsize=8)
        ax.set_title(label, fontsize=9, loc="left")
        ax.set_ylim(-1, 1)
    axes[-1, 0].set_xlabel("time [s]")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=WAVE_DPI)


def write_samples(samples: np.ndarray, info: DataInfo, out_dir, *, name: str,
                  real: Optional[Sequence[np.ndarray]] = None, prime_steps: Optional[int] = None,
                  labels: Optional[List[str]] = None) -> List[Path]:
    """Write ``samples`` ``(N, T, ...)`` the way the data is heard or seen; ``real`` (the
    sequences the samples were primed with) is shown beside them. Returns the written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    kind = kind_of(info)
    n = len(samples)
    labels = labels or [f"{name} {i}" for i in range(n)]
    written: List[Path] = []
    if kind == "text":
        lines = []
        for i in range(n):
            if real is not None and prime_steps is not None:
                lines.append(f"{labels[i]}: {words(samples[i][:prime_steps], info)} || "
                             f"{words(samples[i][prime_steps:], info)}")
                lines.append(f"{'real':>{len(labels[i])}}: {words(real[i], info)}")
            else:
                lines.append(f"{labels[i]}: {words(samples[i], info)}")
        path = out_dir / f"{name}.txt"
        write_atomic(path, "\n".join(lines) + "\n")
        return [path]
    if kind == "arrays":
        shown_real = None if real is None else [info.denormalise(r) if info.emission != "categorical" else r
                                                for r in real]
        shown = samples if info.emission == "categorical" else info.denormalise(samples)
        written.append(write_npy(out_dir / f"{name}.npy", samples, info))
        if info.emission == "categorical":  # token ids: a piano roll, not lines through category numbers
            written.append(token_plot(shown, labels, out_dir / f"{name}.png", vocab_size=info.dim, real=shown_real,
                                      marker=prime_steps, title=f"{info.name}: {name}" + (
                                          " (grey: real; red line: end of the prime)" if real is not None else "")))
            return written
        written.append(sequence_plot(shown, labels, out_dir / f"{name}.png", real=shown_real, marker=prime_steps,
                                     title=f"{info.name}: {name}" + (" (dashed: real; red line: end of the prime)"
                                                                     if real is not None else "")))
        return written
    if kind == "image":
        images = [to_image(s, info) for s in samples]
        titles = list(labels)
        boundary = None
        if real is not None:
            pairs = [(to_image(r, info), img) for r, img in zip(real, images)]
            images = [im for pair in pairs for im in pair]
            titles = [t for label in labels for t in ("real", label)]
            if prime_steps is not None:
                boundary = prime_steps * max(1, info.units_per_step) / info.image_shape[1]
        suptitle = f"{info.name}: {name}" + (" (above the red line: real prime)" if boundary else "")
        written.append(image_grid(images, out_dir / f"{name}.png", titles=titles, suptitle=suptitle,
                                  columns=min(8, len(images)), boundary_row=boundary))
        return written
    signals = []
    for i in range(n):
        written.append(write_wav(out_dir / f"{name}_{i:02d}.wav", samples[i], info))
        signals.append(np.clip(waveform(samples[i], info), -1, 1))
    plot_labels = list(labels)
    if real is not None:
        signals = [s for i in range(n) for s in (np.clip(waveform(real[i], info), -1, 1), signals[i])]
        plot_labels = [t for i in range(n) for t in (f"real {i}", labels[i])]
    shown = "" if len(signals) <= WAVES_SHOWN else f", the first {WAVES_SHOWN} of {len(signals)} signals"
    marker = prime_steps * info.units_per_step / info.sample_rate if prime_steps else None
    written.append(waveform_plot(signals[:WAVES_SHOWN], plot_labels[:WAVES_SHOWN], out_dir / f"{name}.png",
                                 sample_rate=info.sample_rate, marker_s=marker, title=f"{info.name}: {name}{shown}"
                                 + (" (red line: end of the real prime)" if marker else "")))
    return written


def check_request(objective, info: DataInfo, sequences: Sequence[np.ndarray], *, num: int, steps: int,
                  prime_steps: int, interpolation: int, pair) -> None:
    """Everything :func:`sample_all` is asked, checked before anything is generated or written:
    whole images only, the prime inside the samples, ``pair`` inside the split, and each kind's
    samples within memory (:func:`.memory.check_sampling_fits`) and, for images, one figure."""
    kind = kind_of(info)
    if kind == "image" and steps != default_steps(info):
        shape = " x ".join(map(str, info.image_shape))
        raise ValueError(f"--steps {steps}: samples of {info.name} are whole {shape} images of "
                         f"{default_steps(info)} steps each; leave --steps out or give {default_steps(info)}")
    if steps < 2:
        raise ValueError(f"--steps {steps} leaves no step to continue a prime with; give --steps 2 or more")
    if not 1 <= prime_steps < steps:
        raise ValueError(f"--prime-steps must be in [1, {steps - 1}] for {steps} steps, got {prime_steps}")
    model = objective.model
    interpolating = interpolation > 0 and bool(model.latent_sites)
    if interpolating:
        if interpolation < 2:
            raise ValueError(f"--interpolate needs at least 2 points (or 0 for none), got {interpolation}")
        first, second = pair
        if min(first, second) < 0 or max(first, second) >= len(sequences):
            raise ValueError(f"--pair {first},{second}: the split has {len(sequences)} sequence(s) "
                             f"(indices 0 to {len(sequences) - 1})" + ("; pass --interpolate 0 for no interpolation"
                                                                       if len(sequences) < 2 else ""))
    step_size = int(np.prod(np.shape(sequences[0])[1:], dtype=np.int64)) if len(sequences) else info.dim
    dtype = next(objective.parameters()).dtype
    device = next(objective.parameters()).device
    wanted = [("-n", num, steps, 2 * num)]  # primed samples are shown beside their real primes
    if interpolating:
        wanted.append(("--interpolate", interpolation, interpolation_steps(info, [len(sequences[i]) for i in pair]),
                       interpolation + 2))
    for flag, count, length, shown in wanted:
        memory.check_sampling_fits(model.config, num=count, steps=length, step_size=step_size, dtype=dtype,
                                   device=device, flag=flag)
        if kind == "image":
            check_grid(shown, flag=flag)


def check_grid(images: int, *, flag: str) -> None:
    """Refuse an image grid taller than a figure may be (:data:`MAX_FIGURE_PIXELS`)."""
    rows = math.ceil(images / GRID_COLUMNS)
    height = (rows * GRID_CELL_INCHES[1] + 0.5) * GRID_DPI
    if height >= MAX_FIGURE_PIXELS:
        most = int((MAX_FIGURE_PIXELS / GRID_DPI - 0.5) // GRID_CELL_INCHES[1]) * GRID_COLUMNS
        raise ValueError(f"{flag}: a grid of {images} images would be {height:,.0f} pixels tall, more than the "
                         f"{MAX_FIGURE_PIXELS:,} a figure may have; at most {most} images fit in one figure")


@contextmanager
def step_progress(model, *, desc: str, quiet: bool) -> Iterator[None]:
    """Show ``model.generate``'s steps as a progress bar (none when ``quiet`` or not a terminal)."""
    if quiet or not sys.stderr.isatty():
        yield
        return
    model.step_progress = lambda steps: tqdm(steps, desc=desc, unit="step", leave=False, dynamic_ncols=True)
    try:
        yield
    finally:
        model.step_progress = None


def padded(sequence: np.ndarray, steps: int, info: DataInfo) -> np.ndarray:
    """A real sequence shown beside decoded ones of ``steps`` steps: padded with ``<eos>`` (text) or
    zeros (the normalised data's mean) past its end."""
    sequence = np.asarray(sequence)
    pad = info.extra.get("eos_id", 0) if kind_of(info) == "text" else 0
    out = np.full((steps,) + sequence.shape[1:], pad, dtype=sequence.dtype)
    out[:min(steps, len(sequence))] = sequence[:steps]
    return out


def sample_all(objective, info: DataInfo, sequences: Sequence[np.ndarray], out_dir, *, num: int = 8,
               steps: Optional[int] = None, prime_steps: Optional[int] = None,
               interpolation: int = 7, pair=(0, 1), device="cpu", quiet: bool = True) -> Dict[str, List[Path]]:
    """Unconditional samples, primed continuations of the first ``num`` long-enough sequences of
    ``sequences``, and an interpolation between sequences ``pair``; all written into ``out_dir``
    once every request has passed :func:`check_request`."""
    steps = steps or default_steps(info)
    if prime_steps is None:
        prime_steps = max(1, steps // 2)
    check_request(objective, info, sequences, num=num, steps=steps, prime_steps=prime_steps,
                  interpolation=interpolation, pair=pair)
    written: Dict[str, List[Path]] = {}
    model = objective.model
    with step_progress(model, desc="unconditional samples", quiet=quiet):
        unconditional = model.generate(num, steps).cpu().numpy()
    written["samples"] = write_samples(unconditional, info, out_dir, name="samples")
    long_enough = [s for s in sequences if len(s) > prime_steps]
    candidates = long_enough[:num]
    if len(candidates) < num:
        log.warning("only %d of the split's %d sequences are longer than --prime-steps %d: %d primed sample(s), "
                    "not %d", len(long_enough), len(sequences), prime_steps, len(candidates), num)
    if candidates:
        with step_progress(model, desc="primed samples", quiet=quiet):
            primed = primed_continuations(objective, candidates, prime_steps=prime_steps, steps=steps,
                                          device=device).cpu().numpy()
        written["primed"] = write_samples(primed, info, out_dir, name="primed", real=candidates,
                                          prime_steps=prime_steps,
                                          labels=[f"continued {i}" for i in range(len(candidates))])
    if interpolation and not model.latent_sites:
        log.info("the %s model has no latent variables: no interpolation", model.name)
    elif interpolation:
        first, second = pair
        # a Gaussian autoregression fed its own means decays to silence: speech is sampled given z
        with step_progress(model, desc="interpolation", quiet=quiet):
            alphas, decoded = interpolate(objective, sequences[first], sequences[second], num=interpolation,
                                          mean=kind_of(info) != "speech", device=device,
                                          steps=interpolation_steps(info, [len(sequences[i]) for i in pair]))
        decoded = decoded.cpu().numpy()
        ends = [padded(sequences[i], decoded.shape[1], info)[None].astype(decoded.dtype) for i in (first, second)]
        labels = [f"real #{first}"] + [f"a={a:.2f}" for a in alphas] + [f"real #{second}"]
        written["interpolation"] = write_samples(np.concatenate([ends[0], decoded, ends[1]]), info, out_dir,
                                                 name="interpolation", labels=labels)
    return written
