"""Binarized MNIST, pixel by pixel (784 Bernoulli steps) or row by row (28 steps of 28).

Two source formats, both read from ``--data-dir`` (no download):

- ``amat``: the fixed binarization of Larochelle & Murray (2011),
  ``binarized_mnist_{train,valid,test}.amat``: one image a line, 784 space-separated 0/1
  values; its own split, 50,000 / 10,000 / 10,000.
- ``idx``: LeCun's original grey-level files ``train-images-idx3-ubyte`` and
  ``t10k-images-idx3-ubyte`` (optionally ``.gz``; ``train-images.idx3-ubyte`` spellings are
  accepted too). The last 10,000 training images are the validation set; t10k is the test
  set. Grey levels p = value / 255 are binarized with ``binarize``:
  ``"stochastic"`` (default) samples each pixel once as Bernoulli(p) with
  ``numpy.random.default_rng(DataConfig.seed)`` (fixed for the whole run, as Larochelle &
  Murray made theirs; different seeds give different binarizations), or ``"threshold"`` sets
  pixels with p > ``threshold`` to 1.

Options (``DataConfig.options``) and defaults: ``source="auto"`` (``"amat"`` if the three
amat files are there, else ``"idx"``), ``binarize="stochastic"``, ``threshold=0.5``,
``rows=False`` (True: 28 steps of 28 pixels, ``dim=28``, ``units_per_step=28``).
Sequences are float32 ``(784, 1)`` or ``(28, 28)``; emission bernoulli, unit pixel.
Not cached: reading either format takes about a second. ``skip_bad_files`` does not apply
(every file is needed): a bad file is always an error naming it.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Optional

import numpy as np

from .base import DataError, DataInfo, SequenceSplits
from .common import check_choice, corpus_path, resolve_options

OPTIONS = {"source": "auto", "binarize": "stochastic", "threshold": 0.5, "rows": False}
AMAT = {split: f"binarized_mnist_{split}.amat" for split in ("train", "valid", "test")}
IDX_STEMS = {"train": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte")}
NUM_VALID_IDX = 10000
PIXELS = 784
LAYOUT = ("binarized_mnist_{train,valid,test}.amat, or train-images-idx3-ubyte[.gz] and "
          "t10k-images-idx3-ubyte[.gz], directly in --data-dir")
SOURCE = ("Larochelle & Murray's binarized MNIST (binarized_mnist_*.amat, "
          "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/) or "
          "Yann LeCun's MNIST page (http://yann.lecun.com/exdb/mnist/)")


def read_amat(path: Path) -> np.ndarray:
    """``(n, 784)`` uint8 0/1 images from a Larochelle ``.amat`` file."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise DataError(f"{path}: unreadable ({err})") from None
    rows = []
    for number, line in enumerate(raw.split(b"\n"), 1):
        digits = line.translate(None, b" \t\r")
        if not digits:
            continue
        if len(digits) != PIXELS or any(pair in line for pair in (b"00", b"01", b"10", b"11")):
            raise DataError(f"{path}: line {number} does not hold {PIXELS} single 0/1 values")
        rows.append(digits)
    if not rows:
        raise DataError(f"{path}: empty .amat file; expected one line of {PIXELS} 0/1 values per image")
    data = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), PIXELS) - ord("0")
    if data.max() > 1:
        bad = int(np.flatnonzero(data.max(1) > 1)[0]) + 1
        raise DataError(f"{path}: image {bad} has values other than 0/1; expected a binarized .amat file")
    return data


def read_idx_images(path: Path) -> np.ndarray:
    """``(n, 28, 28)`` uint8 images from an IDX3 file (gzipped if it ends in ``.gz``)."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise DataError(f"{path}: unreadable ({type(err).__name__}: {err})") from None
    if len(raw) < 16 or raw[:4] != b"\x00\x00\x08\x03":
        raise DataError(f"{path}: not an IDX3 ubyte image file (magic {raw[:4].hex() or 'missing'}, "
                        "expected 00000803)")
    n, rows, cols = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
    if (rows, cols) != (28, 28) or n < 1:
        raise DataError(f"{path}: {n} images of {rows}x{cols}; expected 28x28 MNIST images")
    if len(raw) != 16 + n * PIXELS:
        raise DataError(f"{path}: truncated or padded IDX file: {len(raw) - 16} bytes of pixels, "
                        f"header promises {n * PIXELS}")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, 28, 28)


def _find_idx(root: Path, split: str) -> Optional[Path]:
    for stem in IDX_STEMS[split]:
        for name in (stem, stem + ".gz"):
            if (root / name).is_file():
                return root / name
    return None


def _binarize(images: np.ndarray, options: dict, rng: np.random.Generator) -> np.ndarray:
    p = images.reshape(len(images), PIXELS).astype(np.float32) / 255.0
    if options["binarize"] == "threshold":
        return (p > options["threshold"]).astype(np.uint8)
    return (rng.random(p.shape, dtype=np.float32) < p).astype(np.uint8)


def load_mnist(config) -> SequenceSplits:
    """Binarized MNIST as (784, 1) pixel sequences or (28, 28) row sequences."""
    options = resolve_options("mnist", config.options, OPTIONS)
    check_choice("mnist", "source", options["source"], ("auto", "amat", "idx"))
    check_choice("mnist", "binarize", options["binarize"], ("stochastic", "threshold"))
    check_choice("mnist", "rows", options["rows"], (True, False))
    threshold = options["threshold"]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 <= threshold < 1:
        raise DataError(f"mnist: option threshold must be a number in [0, 1), got {threshold!r}")
    root = corpus_path(config, dataset="mnist", description="MNIST", source=SOURCE, layout=LAYOUT)
    amat = {split: root / name for split, name in AMAT.items()}
    idx = {split: _find_idx(root, split) for split in IDX_STEMS}
    source = options["source"]
    if source == "auto":
        source = "amat" if all(p.is_file() for p in amat.values()) else "idx"
    if source == "amat":
        files = list(amat.values())
        missing = [str(p) for p in files if not p.is_file()]
    else:
        files = [p for p in idx.values() if p is not None]
        missing = [str(root / IDX_STEMS[s][0]) + "[.gz]" for s, p in idx.items() if p is None]
    if missing:
        raise DataError(f"mnist: missing {', '.join(missing)}; MNIST is not bundled; obtain it from "
                        f"{SOURCE}; expected under --data-dir: {LAYOUT}")
    if source == "amat":
        images = {split: read_amat(amat[split]) for split in AMAT}
    else:
        rng = np.random.default_rng(config.seed)
        train = _binarize(read_idx_images(idx["train"]), options, rng)
        test = _binarize(read_idx_images(idx["test"]), options, rng)
        if len(train) <= NUM_VALID_IDX:
            raise DataError(f"mnist: {idx['train']} holds {len(train)} images; need more than "
                            f"{NUM_VALID_IDX} to hold out the last {NUM_VALID_IDX} for validation")
        images = {"train": train[:-NUM_VALID_IDX], "valid": train[-NUM_VALID_IDX:], "test": test}
    shape = (28, 28) if options["rows"] else (PIXELS, 1)
    lists = {split: list(a.astype(np.float32).reshape((len(a),) + shape)) for split, a in images.items()}
    info = DataInfo(name="mnist", emission="bernoulli", dim=shape[1], unit="pixel",
                    units_per_step=shape[1], image_shape=(28, 28),
                    extra={"units_per_sequence": PIXELS, "sequence_unit": "image",
                           "source": source, "binarize": "fixed (amat)" if source == "amat"
                           else options["binarize"]})
    return SequenceSplits(info, lists["train"], lists["valid"], lists["test"])
