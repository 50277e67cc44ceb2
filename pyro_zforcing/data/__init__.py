"""Datasets: one module per family, a registry by name, one batch structure for all."""

from .base import (Batch, DataError, DataInfo, SequenceDataset, SequenceSplits,
                   collate_sequences, make_loader)
from .registry import DATASETS, load_dataset, register_dataset

__all__ = ["Batch", "DataError", "DataInfo", "SequenceDataset", "SequenceSplits",
           "collate_sequences", "make_loader", "DATASETS", "load_dataset", "register_dataset"]
