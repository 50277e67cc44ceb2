"""Datasets by name: ``load_dataset(DataConfig)`` returns :class:`SequenceSplits`."""

from __future__ import annotations

from typing import Callable, Dict

from .arrays import load_arrays
from .base import DataError, SequenceSplits
from .digits import load_digits
from .mnist import load_mnist
from .polyphonic import load_polyphonic
from .speech import load_audio_folder, load_blizzard, load_timit
from .text import load_imdb, load_text

DATASETS: Dict[str, Callable] = {
    "digits": load_digits,
    "timit": load_timit,
    "blizzard": load_blizzard,
    "audio": load_audio_folder,
    "mnist": load_mnist,
    "text": load_text,
    "imdb": load_imdb,
    "arrays": load_arrays,
    "polyphonic": load_polyphonic,
}


def register_dataset(name: str, loader: Callable) -> None:
    """Add a loader ``loader(DataConfig) -> SequenceSplits`` under ``name``."""
    if name in DATASETS:
        raise ValueError(f"dataset {name!r} is already registered")
    DATASETS[name] = loader


def load_dataset(config) -> SequenceSplits:
    """Read the dataset ``config.dataset`` names; unknown names list the known ones."""
    try:
        loader = DATASETS[config.dataset]
    except KeyError:
        raise DataError(f"unknown dataset {config.dataset!r}; known: {', '.join(sorted(DATASETS))}") from None
    return loader(config)
