"""The batch structure every dataset yields, and what a dataset tells the model about itself.

Layout everywhere: batch first. A batch holds ``x: (B, T, D)`` float frames (gaussian or
bernoulli emission) or ``x: (B, T)`` int64 token ids (categorical emission), a boolean
``mask: (B, T)`` that is True on real steps, and ``lengths: (B,)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import List, Optional, Sequence, Union

import numpy as np
import torch


class DataError(ValueError):
    """A dataset could not be read: the message names the path and what was expected."""


@dataclass(frozen=True)
class DataInfo:
    """What a dataset is, so the model can be configured from it.

    ``emission`` is ``"gaussian"``, ``"bernoulli"`` or ``"categorical"``; ``dim`` is the
    frame size (pixels or samples per step) or the vocabulary size. ``unit`` names what a
    reported per-unit bound is divided by (``"pixel"``, ``"sample"``, ``"word"``) and
    ``units_per_step`` how many of them one step holds. ``mean``/``std`` undo the
    normalisation of real-valued data (``x = normalised * std + mean``): one number for every
    value (speech) or a tuple of ``dim`` numbers, one per dimension (``arrays``); None when the
    data are not normalised. ``vocab`` maps token ids to words.
    """

    name: str
    emission: str
    dim: int
    unit: str
    units_per_step: int = 1
    sample_rate: Optional[int] = None
    mean: Optional[Union[float, tuple]] = None
    std: Optional[Union[float, tuple]] = None
    vocab: Optional[tuple] = None
    image_shape: Optional[tuple] = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        listed = lambda value: list(value) if isinstance(value, tuple) else value  # noqa: E731
        return {
            "name": self.name, "emission": self.emission, "dim": self.dim, "unit": self.unit,
            "units_per_step": self.units_per_step, "sample_rate": self.sample_rate,
            "mean": listed(self.mean), "std": listed(self.std),
            "vocab": listed(self.vocab),
            "image_shape": listed(self.image_shape),
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, values: dict) -> "DataInfo":
        values = dict(values)
        for key in ("vocab", "image_shape", "mean", "std"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        return cls(**values)

    def denormalise(self, values: np.ndarray) -> np.ndarray:
        """Normalised values ``(..., D)`` back in the data's own units, float64 (unchanged
        without normalisation)."""
        values = np.asarray(values, dtype=np.float64)
        if self.std is None:
            return values
        return values * np.asarray(self.std) + np.asarray(0.0 if self.mean is None else self.mean)


@dataclass
class SequenceSplits:
    """Train/valid/test lists of variable-length sequences, each (T_i, D) float32 or (T_i,) int64.

    ``train_first`` (one (D,) frame or () token per training sequence, or None) is the input each
    training sequence starts from when the sequences are consecutive pieces of one signal (TIMIT's
    stream chunks: the frame before the chunk); None means the model's start frame or token.
    """

    info: DataInfo
    train: List[np.ndarray]
    valid: List[np.ndarray]
    test: List[np.ndarray]
    skipped: List[str] = field(default_factory=list)
    train_first: Optional[List[np.ndarray]] = None

    def split(self, name: str) -> List[np.ndarray]:
        if name not in ("train", "valid", "test"):
            raise ValueError(f"split must be 'train', 'valid' or 'test', got {name!r}")
        return getattr(self, name)

    def train_batch(self, indices: Sequence[int]) -> "Batch":
        """The training sequences ``indices`` as a padded :class:`Batch`, with their first inputs if known."""
        first = None if self.train_first is None else [self.train_first[i] for i in indices]
        return collate_sequences([self.train[i] for i in indices], first=first)


@dataclass
class Batch:
    """A padded batch: ``x`` (B, T, D) or (B, T) for tokens, ``mask`` (B, T) bool, ``lengths`` (B,).

    ``first`` (B, D) or (B,) is the input u_1 each sequence starts from when it continues a
    longer signal (the frame before a window); None means the model's start frame or token.
    ``inputs`` (B, T) token ids, when set, are what the inputs read in place of the targets:
    u_{t+1} = inputs_t instead of y_t (word dropout during training, :func:`drop_words`); the
    targets observed and everything a guide reads stay ``x``.
    ``observed`` False (:meth:`unobserved`) makes a model draw its observation site instead of
    observing ``x``; ``x`` still drives the inputs u_t = y_{t-1} (see ``docs/pyro-tools.md``).
    """

    x: torch.Tensor
    mask: torch.Tensor
    lengths: torch.Tensor
    first: Optional[torch.Tensor] = None
    observed: bool = True
    inputs: Optional[torch.Tensor] = None

    @property
    def batch_size(self) -> int:
        return self.x.shape[0]

    @property
    def num_steps(self) -> int:
        return self.x.shape[1]

    def to(self, device, dtype: Optional[torch.dtype] = None) -> "Batch":
        def move(t):
            t = t.to(device)
            return t.to(dtype) if dtype is not None and t.is_floating_point() else t

        first = move(self.first) if self.first is not None else None
        inputs = move(self.inputs) if self.inputs is not None else None
        return replace(self, x=move(self.x), mask=self.mask.to(device), lengths=self.lengths.to(device),
                       first=first, inputs=inputs)

    def repeat(self, k: int) -> "Batch":
        """K copies of every sequence, particle-major: row ``i * B + b`` is copy i of sequence b."""
        reps = (k,) + (1,) * (self.x.dim() - 1)
        first = self.first.repeat(reps[:self.first.dim()]) if self.first is not None else None
        inputs = self.inputs.repeat(k, 1) if self.inputs is not None else None
        return Batch(self.x.repeat(reps), self.mask.repeat(k, 1), self.lengths.repeat(k), first, self.observed,
                     inputs)

    def unobserved(self) -> "Batch":
        """This batch with its targets left to the model to draw (Pyro's ``Predictive``): the
        observation site ``"x"`` is sampled from the emission, the inputs stay ``x``'s."""
        return replace(self, observed=False)


def word_dropout_id(info: DataInfo, *, flag: str = "--word-dropout") -> int:
    """The ``<unk>`` id that word dropout feeds in place of a dropped word (``info.extra["unk_id"]``,
    which the text loaders set). Token data without one (``--dataset arrays``: ids with no
    vocabulary) and real-valued frames are refused with a one-line error naming ``flag``: an id
    the data already use would read as a real word, and frames have no token to drop."""
    if info.emission != "categorical":
        raise ValueError(f"{flag} replaces input tokens: {info.name} has {info.emission} frames, not tokens")
    unk = info.extra.get("unk_id")
    if unk is None:
        raise ValueError(f"{flag} needs an <unk> token: the token data of {info.name} have no vocabulary "
                         f"with one (only the text loaders, text and imdb, reserve <unk>)")
    return int(unk)


def drop_words(batch: Batch, probability: float, *, unk_id: int) -> Batch:
    """Word dropout (Bowman et al., 2016): ``batch`` with ``inputs`` = ``x`` where each real token
    is replaced by ``unk_id`` independently with ``probability`` (torch's global RNG, which the
    trainer seeds and checkpoints). ``x`` (the targets) is returned untouched. ``x``: (B, T) ids."""
    if batch.x.is_floating_point():
        raise ValueError("word dropout replaces token ids; this batch holds real-valued frames")
    dropped = (torch.rand(batch.x.shape, device=batch.x.device) < probability) & batch.mask
    return replace(batch, inputs=torch.where(dropped, torch.full_like(batch.x, unk_id), batch.x))


def collate_sequences(sequences: Sequence[np.ndarray], *, first: Optional[Sequence[np.ndarray]] = None) -> Batch:
    """Pad a list of (T_i, D) float or (T_i,) int sequences into a :class:`Batch`; ``first`` gives
    each sequence's first input u_1 (``Batch.first``), a (D,) frame or a () token."""
    if len(sequences) == 0:
        raise ValueError("cannot collate an empty list of sequences")
    lengths = torch.tensor([len(s) for s in sequences], dtype=torch.long)
    if int(lengths.min()) < 1:
        raise ValueError("every sequence must have at least one step")
    sample = np.asarray(sequences[0])
    steps = int(lengths.max())
    shape = (len(sequences), steps) + sample.shape[1:]
    if np.issubdtype(sample.dtype, np.integer):
        x = torch.zeros(shape, dtype=torch.long)
    else:
        x = torch.zeros(shape, dtype=torch.float32)
    for i, seq in enumerate(sequences):
        x[i, : len(seq)] = torch.as_tensor(np.asarray(seq))
    mask = torch.arange(steps)[None, :] < lengths[:, None]
    if first is not None:
        if len(first) != len(sequences):
            raise ValueError(f"{len(first)} first inputs for {len(sequences)} sequences")
        first = torch.as_tensor(np.stack([np.asarray(f) for f in first])).to(x.dtype)
    return Batch(x, mask, lengths, first)


# Evaluation batches (and their K particle copies) are kept near this many input values: whole
# speech utterances (up to thousands of 200-sample frames) x 25 particles x 32 sequences would
# need tens of GB.
MAX_ELEMENTS = 16_000_000


def length_batches(lengths: Sequence[int], *, batch_size: int, step_size: int,
                   max_elements: int = MAX_ELEMENTS) -> List[List[int]]:
    """Indices of sequences in batches of similar length (longest first): at most ``batch_size``
    sequences, and no more than ``max_elements`` padded input values unless a sequence alone is."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: List[List[int]] = []
    for i in order:
        if batches and len(batches[-1]) < batch_size and \
                (len(batches[-1]) + 1) * lengths[batches[-1][0]] * step_size <= max_elements:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


class SequenceDataset(torch.utils.data.Dataset):
    """A list of sequences as a map-style dataset (items are numpy arrays)."""

    def __init__(self, sequences: Sequence[np.ndarray]):
        self.sequences = list(sequences)

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.sequences[index]


def make_loader(sequences, *, batch_size: int, shuffle: bool, seed: int = 0,
                sampler=None) -> torch.utils.data.DataLoader:
    """A DataLoader of padded :class:`Batch` es; shuffling uses its own seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        SequenceDataset(sequences), batch_size=batch_size,
        shuffle=shuffle and sampler is None, sampler=sampler,
        collate_fn=collate_sequences, generator=generator,
    )
