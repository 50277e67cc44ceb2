"""Your own sequences from NumPy or CSV files: ``--dataset arrays --data-dir PATH``.

``PATH`` is one of (``docs/your-data.md`` has examples):

- a ``.npz`` file (``np.savez``/``np.savez_compressed``) holding
  * several arrays, each one sequence ``(T, D)`` or ``(T,)`` (``np.savez(path, *sequences)``),
    in the file's order; or
  * one padded array ``(N, T, D)`` or ``(N, T)`` and an integer array ``lengths`` ``(N,)``:
    sequence i is ``data[i, :lengths[i]]`` (the values past a length are ignored, NaN included); or
  * the splits: arrays ``train``, ``valid``, ``test``, each ``(N, T, D)`` or ``(N, T)`` with an
    optional ``<split>_lengths``, or arrays named ``train/<any>``, ``valid/<any>``, ``test/<any>``
    each one sequence;
- a ``.npy`` file (``np.save``): ``(T,)`` or ``(T, D)`` is one sequence, ``(N, T, D)`` is N
  sequences of T steps, padded when the option ``lengths`` names a ``.npy`` of N integers (a
  relative path is taken from the data file's folder); an object array of sequences is read
  only with ``allow_pickle=true`` (unpickling can run code: use it for files you made);
- a folder of ``.npy`` and ``.csv`` files, one sequence each (sub-folders included, hidden
  files and other extensions ignored, sorted by path); sub-folders ``train/``, ``valid/``,
  ``test/`` give the splits. A CSV file has one row per time step and one column per
  dimension, comma-separated (option ``csv_delimiter``, ``tab`` for tabs); a first row with no
  number in it is a header and skipped; blank lines are skipped; every other cell is a number.

Without given splits, the sequences are split by :func:`.common.split_items` (seeded by
``--seed``, ``valid_fraction``/``test_fraction``); a missing ``valid`` or ``test`` of given
splits is carved out of ``train`` the same way.

The emission comes from the values: all 0/1 -> bernoulli; integers (an integer dtype, or CSV
cells written without a point or exponent) -> categorical, one token per step ``(T,)`` or
``(T, 1)``, the vocabulary size the largest id + 1 over all splits (or option ``vocab_size``);
floats -> gaussian. Option ``emission`` sets it instead. Real-valued (gaussian) data are
normalised per dimension with the mean and standard deviation of the training split (option
``normalise``, on by default for gaussian data), saved in ``DataInfo.mean``/``std`` and so in
every checkpoint; bounds are then those of the normalised values: log p(raw sequence) =
log p(normalised) - T * sum_d log std_d.

Every problem is a one-line :class:`DataError` naming the file, the array and the index: not a
number, NaN or infinite values, empty sequences, wrong ranks, dimensions that differ between
sequences, integer and float arrays mixed, lengths outside ``[1, T]``. With ``skip_bad_files``
a folder's file that cannot be read or fails its own checks is skipped and listed; a file that
disagrees with the others (dimensions, dtypes) always stops the load.
"""

from __future__ import annotations

import csv
import logging
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from pickle import UnpicklingError
from typing import Dict, List, Optional, Tuple

import numpy as np

from .base import DataError, DataInfo, SequenceSplits
from .common import (BadFiles, check_choice, check_fraction, check_int, child_ci, corpus_path,
                     resolve_options, split_items, walk_files)

logger = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test")
EMISSIONS = ("gaussian", "bernoulli", "categorical")
OPTIONS = {"emission": None, "vocab_size": None, "normalise": None, "valid_fraction": 0.1,
           "test_fraction": 0.1, "lengths": None, "allow_pickle": False, "csv_delimiter": ","}
LAYOUT = ("a .npz (one sequence per array; or a padded (N, T, D) array and 'lengths'; or train/valid/test "
          "arrays), a .npy, or a folder of .npy/.csv files with one sequence each (optionally in "
          "train/, valid/, test/ sub-folders)")
_INTEGER_CELL = re.compile(r"^[+-]?\d+$")


@dataclass
class Raw:
    """One sequence as read, ``(T,)`` or ``(T, D)``, with where it came from (for errors) and
    whether its integer dtype was only inferred from CSV text (then it may join float data)."""

    values: np.ndarray
    where: str
    inferred: bool = False


# ----------------------------------------------------------------------------- reading

def _check_sequence(values, where: str) -> np.ndarray:
    """A numeric ``(T,)`` or ``(T, D)`` array with T, D >= 1 and finite values."""
    values = np.asarray(values)
    if values.dtype.kind not in "biuf":
        raise DataError(f"{where}: dtype {values.dtype} is not numeric")
    if values.ndim not in (1, 2):
        raise DataError(f"{where}: shape {values.shape}; a sequence is (T, D) or (T,)")
    if values.size == 0:
        raise DataError(f"{where}: empty sequence (shape {values.shape})")
    if values.dtype.kind == "f":
        bad = np.argwhere(~np.isfinite(values))
        if len(bad):
            index = tuple(int(i) for i in bad[0])
            raise DataError(f"{where}: value {values[index]} at index {index if len(index) > 1 else index[0]}; "
                            "values must be finite")
    return values


def _unbatch(data, lengths, where: str) -> List[Raw]:
    """Sequences of a padded ``(N, T, D)`` / ``(N, T)`` array; ``lengths`` ``(N,)`` or None (all T)."""
    data = np.asarray(data)
    if data.ndim not in (2, 3):
        raise DataError(f"{where}: shape {data.shape}; padded sequences are (N, T, D) or (N, T)")
    count, steps = data.shape[:2]
    if lengths is None:
        lengths = np.full(count, steps)
    else:
        lengths = np.asarray(lengths)
        if lengths.dtype.kind not in "iu" or lengths.ndim != 1:
            raise DataError(f"{where}: lengths must be a 1-D integer array, got {lengths.dtype} {lengths.shape}")
        if len(lengths) != count:
            raise DataError(f"{where}: {len(lengths)} lengths for {count} sequences")
        for i, n in enumerate(lengths.tolist()):
            if n < 1:
                raise DataError(f"{where}: lengths[{i}] = {n}; every sequence needs at least one step")
            if n > steps:
                raise DataError(f"{where}: lengths[{i}] = {n} is longer than the padded array's {steps} steps")
    if count == 0:
        raise DataError(f"{where}: no sequences (shape {data.shape})")
    return [Raw(_check_sequence(data[i, :int(n)], f"{where}, sequence {i}"), f"{where}, sequence {i}")
            for i, n in enumerate(lengths.tolist())]


def _load_npy(path: Path, allow_pickle: bool):
    try:
        return np.load(path, allow_pickle=allow_pickle)
    except ValueError as error:
        if "allow_pickle" in str(error):
            raise DataError(f"{path}: holds Python objects (an object array or a pickle); reading it would "
                            "unpickle it, which can run code: save numeric arrays (np.savez(path, *sequences)) "
                            "or pass --data-option allow_pickle=true for a file you made") from None
        raise DataError(f"{path}: not a readable .npy file ({error})") from None
    except (OSError, EOFError, UnpicklingError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: not a readable NumPy file ({type(error).__name__}: {error})") from None


def _object_sequences(array: np.ndarray, where: str) -> List[Raw]:
    items = array.reshape(-1).tolist()
    if not items:
        raise DataError(f"{where}: an empty object array")
    return [Raw(_check_sequence(np.asarray(item), f"{where}, sequence {i}"), f"{where}, sequence {i}")
            for i, item in enumerate(items)]


def read_npy(path: Path, options: dict, *, one_sequence: bool) -> List[Raw]:
    """The sequences of a ``.npy`` file (see the module docstring)."""
    array = _load_npy(path, options["allow_pickle"])
    if not isinstance(array, np.ndarray):
        array.close()
        raise DataError(f"{path}: a .npz archive named .npy; rename it to .npz")
    if array.dtype == object:
        if one_sequence:
            raise DataError(f"{path}: an object array; in a folder each .npy file is one numeric sequence")
        return _object_sequences(array, str(path))
    if array.ndim == 3:
        if one_sequence:
            raise DataError(f"{path}: shape {array.shape}; in a folder each file is one sequence (T, D) or (T,): "
                            "give this file itself as --data-dir")
        lengths = None
        if options["lengths"] is not None:
            lengths_path = Path(str(options["lengths"])).expanduser()
            lengths_path = lengths_path if lengths_path.is_absolute() else path.parent / lengths_path
            if not lengths_path.is_file():
                raise DataError(f"{path}: option lengths={options['lengths']}: {lengths_path} is not a file")
            lengths = _load_npy(lengths_path, False)
        return _unbatch(array, lengths, str(path))
    if options["lengths"] is not None:
        raise DataError(f"{path}: option lengths applies to a padded (N, T, D) array, not shape {array.shape}")
    return [Raw(_check_sequence(array, str(path)), str(path))]


def read_npz(path: Path, options: dict) -> Tuple[Dict[str, List[Raw]], bool]:
    """``({split or "all": sequences}, splits given)`` of a ``.npz`` file."""
    with open(path, "rb") as handle:  # ours to close: np.load leaks its own handle on a bad zip
        try:
            npz = np.load(handle, allow_pickle=options["allow_pickle"])
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
            raise DataError(f"{path}: not a readable .npz file ({type(error).__name__}: {error})") from None
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise DataError(f"{path}: a .npy array named .npz; rename it to .npy")
        return _npz_sequences(path, npz)


def _npz_sequences(path: Path, npz) -> Tuple[Dict[str, List[Raw]], bool]:
    with npz:
        keys = list(npz.files)
        if not keys:
            raise DataError(f"{path}: holds no arrays")

        def array(key):
            try:
                return npz[key]
            except ValueError as error:
                if "allow_pickle" in str(error):
                    raise DataError(f"{path}: array {key!r} holds Python objects; pass --data-option "
                                    "allow_pickle=true for a file you made (unpickling can run code)") from None
                raise DataError(f"{path}: array {key!r} cannot be read ({error})") from None
            except (OSError, EOFError, zipfile.BadZipFile) as error:
                raise DataError(f"{path}: array {key!r} cannot be read ({type(error).__name__})") from None

        def sequences_of(key) -> List[Raw]:
            value = array(key)
            where = f"{path}: array {key!r}"
            if value.dtype == object:
                return _object_sequences(value, where)
            return [Raw(_check_sequence(value, where), where)]

        split_keys = [k for k in keys if k in SPLITS or k.split("/", 1)[0] in SPLITS and "/" in k]
        if split_keys:
            allowed = set(SPLITS) | {f"{s}_lengths" for s in SPLITS}
            stray = [k for k in keys if k not in split_keys and k not in allowed]
            if stray:
                raise DataError(f"{path}: array {stray[0]!r} is outside the splits; with train/valid/test arrays "
                                f"every array is one of them (or <split>/<name>, <split>_lengths)")
            given: Dict[str, List[Raw]] = {}
            for split in SPLITS:
                if split in keys:
                    lengths = array(f"{split}_lengths") if f"{split}_lengths" in keys else None
                    given[split] = _unbatch(array(split), lengths, f"{path}: array {split!r}")
                for key in keys:
                    if key.startswith(split + "/"):
                        given.setdefault(split, []).extend(sequences_of(key))
                if f"{split}_lengths" in keys and split not in keys:
                    raise DataError(f"{path}: array '{split}_lengths' without an array {split!r}")
            if "train" not in given:
                raise DataError(f"{path}: splits are given ({', '.join(sorted(given))}) but no 'train' array")
            return given, True
        if "lengths" in keys:
            others = [k for k in keys if k != "lengths"]
            if len(others) != 1:
                raise DataError(f"{path}: 'lengths' goes with exactly one padded (N, T, D) array, found "
                                f"{len(others)}: {', '.join(map(repr, others[:4]))}")
            return {"all": _unbatch(array(others[0]), array("lengths"), f"{path}: array {others[0]!r}")}, False
        return {"all": [raw for key in keys for raw in sequences_of(key)]}, False


def _csv_cell(text: str, where: str):
    cell = text.strip()
    if _INTEGER_CELL.match(cell):
        return int(cell)
    try:
        if "_" in cell:
            raise ValueError
        return float(cell)
    except ValueError:
        raise DataError(f"{where}: {text!r} is not a number") from None


def read_csv(path: Path, options: dict) -> List[Raw]:
    """One sequence from a CSV file: a row per step, a column per dimension, an optional header."""
    delimiter = "\t" if options["csv_delimiter"] == "tab" else str(options["csv_delimiter"])
    rows, first_row, header = [], None, False
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, delimiter=delimiter)
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue
                line = reader.line_num
                if first_row is None and not header and not any(_is_number(c) for c in cells):
                    header = True  # a first row without a single number names the columns
                    continue
                if first_row is None:
                    first_row = (line, len(cells))
                elif len(cells) != first_row[1]:
                    raise DataError(f"{path}: row {line} has {len(cells)} columns, row {first_row[0]} has "
                                    f"{first_row[1]}")
                rows.append([_csv_cell(c, f"{path}: row {line}, column {j + 1}") for j, c in enumerate(cells)])
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except csv.Error as error:
        raise DataError(f"{path}: not a readable CSV file ({error})") from None
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error.strerror or error})") from None
    if not rows:
        raise DataError(f"{path}: no data rows" + (" (only a header)" if header else " (empty file)"))
    integer = all(isinstance(v, int) for row in rows for v in row)
    values = np.array(rows, dtype=np.int64 if integer else np.float64)
    offset = 2 if header else 1  # row numbers as a spreadsheet shows them (blank lines aside)
    if not integer and not np.isfinite(values).all():
        t, d = (int(i) for i in np.argwhere(~np.isfinite(values))[0])
        raise DataError(f"{path}: row {t + offset}, column {d + 1}: {values[t, d]}; values must be finite")
    return [Raw(_check_sequence(values, str(path)), str(path), inferred=integer)]


def _is_number(text: str) -> bool:
    try:
        _csv_cell(text, "")
    except DataError:
        return False
    return True


def read_folder(root: Path, options: dict, bad: BadFiles) -> Tuple[Dict[str, List[Raw]], bool]:
    """``({split or "all": sequences}, splits given)`` of a folder of .npy/.csv files."""
    accept = lambda p: p.suffix.lower() in (".npy", ".csv")  # noqa: E731
    folders = {split: child_ci(root, split) for split in SPLITS}
    folders = {split: folder for split, folder in folders.items() if folder is not None and folder.is_dir()}

    def read(paths) -> List[Raw]:
        out = []
        for path in paths:
            reader = (lambda p: read_csv(p, options)) if path.suffix.lower() == ".csv" else \
                (lambda p: read_npy(p, options, one_sequence=True))
            out += bad.read(path, reader) or []
        return out

    everything = walk_files(root, accept)
    if not everything:
        raise DataError(f"arrays: no .npy or .csv files under {root}; expected: {LAYOUT}")
    if not folders:
        return {"all": read(everything)}, False
    inside = {split: walk_files(folder, accept) for split, folder in folders.items()}
    claimed = {p.resolve() for paths in inside.values() for p in paths}
    stray = [p for p in everything if p.resolve() not in claimed]
    if stray:
        raise DataError(f"arrays: {stray[0]} is outside the {', '.join(f'{s}/' for s in folders)} sub-folders; "
                        "with split folders every file is in one of them")
    if "train" not in folders or not inside["train"]:
        raise DataError(f"arrays: {root} has {', '.join(f'{s}/' for s in folders)} but no train/ files")
    return {split: read(paths) for split, paths in inside.items()}, True


# ----------------------------------------------------------------------------- checking

def _check_consistent(sequences: List[Raw]) -> None:
    """One number of dimensions, and integer and float arrays not mixed (CSV integers may join floats)."""
    first = sequences[0]
    dim = first.values.shape[1] if first.values.ndim == 2 else 1
    for raw in sequences[1:]:
        d = raw.values.shape[1] if raw.values.ndim == 2 else 1
        if d != dim:
            raise DataError(f"{raw.where}: {d} values per step (shape {raw.values.shape}), but {first.where} has "
                            f"{dim}: every sequence must have the same dimensions")
    real = [raw for raw in sequences if raw.values.dtype.kind == "f"]
    fixed_integers = [raw for raw in sequences if raw.values.dtype.kind in "biu" and not raw.inferred]
    if real and fixed_integers:
        raise DataError(f"{fixed_integers[0].where}: integer dtype {fixed_integers[0].values.dtype}, but "
                        f"{real[0].where} is {real[0].values.dtype}: mixed dtypes (save them as one dtype)")


def _emission(sequences: List[Raw], chosen: Optional[str]) -> str:
    """The emission the values call for, or ``chosen`` checked against them."""
    binary = all(np.isin(raw.values, (0, 1)).all() for raw in sequences)
    integers = all(raw.values.dtype.kind in "biu" for raw in sequences)
    emission = chosen or ("bernoulli" if binary else "categorical" if integers else "gaussian")
    if emission == "bernoulli" and not binary:
        raw = next(r for r in sequences if not np.isin(r.values, (0, 1)).all())
        index = tuple(int(i) for i in np.argwhere(~np.isin(raw.values, (0, 1)))[0])
        raise DataError(f"{raw.where}: value {raw.values[index]} at index {index}; a bernoulli emission needs 0/1 values")
    if emission == "categorical":
        for raw in sequences:
            values = raw.values
            if values.ndim == 2 and values.shape[1] != 1:
                raise DataError(f"{raw.where}: {values.shape[1]} integers per step; a categorical emission takes one "
                                "token per step, (T,) or (T, 1) (pass --data-option emission=gaussian for real values)")
            wrong = (values < 0) | (values != np.round(values))
            if wrong.any():
                index = tuple(int(i) for i in np.argwhere(wrong)[0])
                raise DataError(f"{raw.where}: value {values[index]} at index {index}; token ids are integers >= 0 "
                                "(pass --data-option emission=gaussian for real values)")
    return emission


def _normalisation(train: List[np.ndarray]) -> Tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation (ddof 0) over every training step, float64; a
    constant dimension keeps std 1 (with a warning)."""
    stacked = np.concatenate(train).astype(np.float64)
    mean, std = stacked.mean(0), stacked.std(0)
    constant = np.flatnonzero(std == 0)
    if len(constant):
        logger.warning("arrays: dimension(s) %s are constant in the training split: left unscaled (std 1); a "
                       "Gaussian's density on a constant value has no bound", constant.tolist()[:10])
        std[constant] = 1.0
    return mean, std


# ----------------------------------------------------------------------------- the loader

def _options(config) -> dict:
    options = resolve_options("arrays", config.options, OPTIONS)
    if options["emission"] is not None:
        check_choice("arrays", "emission", options["emission"], EMISSIONS)
    check_int("arrays", "vocab_size", options["vocab_size"], minimum=2, allow_none=True)
    check_choice("arrays", "normalise", options["normalise"], (None, True, False))
    check_choice("arrays", "allow_pickle", options["allow_pickle"], (True, False))
    for name in ("valid_fraction", "test_fraction"):
        check_fraction("arrays", name, options[name])
    if not isinstance(options["csv_delimiter"], str) or len(options["csv_delimiter"]) != 1 \
            and options["csv_delimiter"] != "tab":
        raise DataError(f"arrays: option csv_delimiter must be one character or 'tab', got {options['csv_delimiter']!r}")
    return options


def load_arrays(config) -> SequenceSplits:
    """Sequences of a ``.npz``/``.npy`` file or a folder of ``.npy``/``.csv`` files (module docstring)."""
    options = _options(config)
    if options["allow_pickle"]:
        logger.warning("--data-option allow_pickle=true: reading %s unpickles it, which executes code stored in the "
                       "file; use it only for files you made", config.data_dir)
    path = corpus_path(config, dataset="arrays", description="a file or folder of your own sequences",
                       source="np.savez, np.save or any CSV writer", layout=LAYOUT, allow_file=True)
    bad = BadFiles("arrays", config.skip_bad_files)
    if path.is_dir():
        groups, given = read_folder(path, options, bad)
        layout = "folder"
    elif path.suffix.lower() == ".npz":
        groups, given = read_npz(path, options)
        layout = "npz"
    elif path.suffix.lower() == ".npy":
        groups, given = {"all": read_npy(path, options, one_sequence=False)}, False
        layout = "npy"
    else:
        raise DataError(f"arrays: {path} is not a .npz, a .npy or a folder; expected: {LAYOUT}")
    everything = [raw for group in groups.values() for raw in group]
    if not everything:
        raise DataError(f"arrays: no readable sequences in {path} (skipped {len(bad.skipped)})")
    _check_consistent(everything)
    emission = _emission(everything, options["emission"])
    splits = _split(groups, given, options, seed=config.seed)
    if not splits["train"]:
        raise DataError(f"arrays: no training sequences in {path}")

    if emission == "categorical":
        largest = max(int(raw.values.max()) for raw in everything)
        vocab_size = options["vocab_size"] or largest + 1
        if largest >= vocab_size:
            raw = next(r for r in everything if int(r.values.max()) == largest)
            raise DataError(f"{raw.where}: token id {largest} >= vocab_size {vocab_size}")
        cast = {k: [raw.values.reshape(-1).astype(np.int64) for raw in v] for k, v in splits.items()}
        dim, unit, units_per_step, mean, std = vocab_size, "token", 1, None, None
    else:
        cast = {k: [raw.values.reshape(len(raw.values), -1).astype(np.float64) for raw in v]
                for k, v in splits.items()}
        dim = cast["train"][0].shape[1]
        unit, units_per_step, mean, std = "value", dim, None, None
        normalise = options["normalise"]
        if normalise and emission != "gaussian":
            raise DataError(f"arrays: option normalise=true applies to real-valued (gaussian) data, not {emission}")
        if normalise is None:
            normalise = emission == "gaussian"
        if normalise:
            mean, std = _normalisation(cast["train"])
            cast = {k: [(a - mean) / std for a in v] for k, v in cast.items()}
            mean, std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        cast = {k: [a.astype(np.float32) for a in v] for k, v in cast.items()}
    lengths = sorted(len(a) for a in cast["train"])
    info = DataInfo(name="arrays", emission=emission, dim=dim, unit=unit, units_per_step=units_per_step,
                    mean=mean, std=std,
                    extra={"source": str(path), "layout": layout, "splits_given": given,
                           "sequences": {k: len(v) for k, v in cast.items()},
                           "train_steps": {"min": lengths[0], "median": lengths[len(lengths) // 2],
                                           "max": lengths[-1]},
                           "sequence_unit": "sequence"})
    bad.report()
    return SequenceSplits(info, cast["train"], cast["valid"], cast["test"], skipped=list(bad.skipped))


def _split(groups: Dict[str, List[Raw]], given: bool, options: dict, *, seed: int) -> Dict[str, List[Raw]]:
    """Given splits (a missing valid/test carved out of train), or all sequences split by fraction."""
    pool = groups["train"] if given else groups["all"]
    fractions = {"valid_fraction": options["valid_fraction"] if not (given and "valid" in groups) else 0.0,
                 "test_fraction": options["test_fraction"] if not (given and "test" in groups) else 0.0}
    train, valid, test = split_items(range(len(pool)), seed=seed, dataset="arrays", what="sequences", **fractions)
    pick = lambda idx: [pool[i] for i in idx]  # noqa: E731
    out = {"train": pick(train), "valid": pick(valid), "test": pick(test)}
    if given:
        for split in ("valid", "test"):
            if split in groups:
                out[split] = groups[split]
    return out
