"""The embedded default: scikit-learn's handwritten digits, binarized, pixel by pixel.

1,797 real 8x8 scans (``sklearn.datasets.load_digits``, grey levels 0..16) binarized at
``threshold`` (default 8, i.e. > half intensity), read in raster order as 64 steps of one
Bernoulli pixel, like the paper's sequential MNIST. The split is fixed by a seeded
permutation: 1,297 train / 250 valid / 250 test images.
"""

from __future__ import annotations

import numpy as np

from .base import DataError, DataInfo, SequenceSplits
from .common import check_choice, resolve_options

NUM_VALID = 250
NUM_TEST = 250
OPTIONS = {"threshold": 8, "rows": False}


def load_digits(config) -> SequenceSplits:
    """Binarized digits as (64, 1) sequences, or (8, 8) with ``options["rows"]``."""
    from sklearn.datasets import load_digits as sklearn_digits

    options = resolve_options("digits", config.options, OPTIONS)
    threshold = options["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < 16:
        raise DataError(f"digits: option threshold must be a number in [0, 16), got {threshold!r}")
    check_choice("digits", "rows", options["rows"], (True, False))
    images = sklearn_digits().images  # (1797, 8, 8), values 0..16
    binary = (images > threshold).astype(np.float32)
    if options["rows"]:
        sequences = [img.reshape(8, 8) for img in binary]
        dim, units_per_step = 8, 8
    else:
        sequences = [img.reshape(64, 1) for img in binary]
        dim, units_per_step = 1, 1
    order = np.random.RandomState(0).permutation(len(sequences))
    test_idx, valid_idx = order[:NUM_TEST], order[NUM_TEST:NUM_TEST + NUM_VALID]
    train_idx = order[NUM_TEST + NUM_VALID:]
    info = DataInfo(name="digits", emission="bernoulli", dim=dim, unit="pixel",
                    units_per_step=units_per_step, image_shape=(8, 8),
                    extra={"units_per_sequence": 64, "sequence_unit": "image"})
    pick = lambda idx: [sequences[i] for i in idx]  # noqa: E731
    return SequenceSplits(info, pick(train_idx), pick(valid_idx), pick(test_idx))
