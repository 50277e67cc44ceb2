"""Polyphonic music: the piano-roll benchmarks of Boulanger-Lewandowski, Bengio and Vincent (ICML 2012).

JSB Chorales, Nottingham, MuseData and Piano-midi.de come as one file holding
``{"train": [...], "valid": [...], "test": [...]}``: each piece a list of time steps, each
time step the MIDI note numbers sounding (an empty step is a rest). ``--data-dir`` names the
file itself:

- ``.pickle`` / ``.pkl``: the authors' files and the copies Pyro's ``polyphonic_data_loader``
  downloads. They are Python 2 pickles, read with ``encoding="latin1"``; a time step may be
  a tuple, a list or a numpy array of note numbers (ints or integral floats). Only builtin
  containers and numpy arrays are unpickled: any other class in the file is refused by name.
- ``.json``: the same structure (``../shared/data/jsb-chorales-quarter.json``).
- ``.npz``: the piano rolls of SRNN's release (marcofraccaro/srnn,
  ``data/<corpus>_raw_batchsize16_seqlen100.npz``: ``u_*``/``x_*`` input and target frames,
  already 88-key 0/1 rolls, ``mask_test``). Training is 100-step windows, each with its input
  frame before it (``train_first``), as SRNN trains; validation windows and test pieces are
  the input frame followed by the targets, the piece as it was before the shift. Their JSB is
  at twice the time resolution of Boulanger-Lewandowski's quarter-note file (docs/polyphonic.md).

Every time step becomes an ``notes``-dimensional 0/1 frame, column ``note - lowest_note``
(defaults: the 88 piano keys from MIDI 21, A0, as every paper on these corpora uses); a rest
is an all-zero frame and is kept. The published train / valid / test split is kept exactly
as it is in the file: no reshuffle, no fraction. Emission Bernoulli, one unit per time step,
so ``zforcing evaluate`` reports nats per time step as total nats / total time steps of the
split (the normalisation of the DMM paper's and Pyro's figures) beside nats per piece.

Options: ``corpus`` (``jsb``, ``nottingham``, ``musedata``, ``piano``; only names the data),
``lowest_note`` (21), ``notes`` (88).
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

from .base import DataError, DataInfo, SequenceSplits
from .common import check_choice, check_int, corpus_path, resolve_options

SPLITS = ("train", "valid", "test")
CORPORA = {"jsb": "chorale", "nottingham": "tune", "musedata": "piece", "piano": "piece"}
OPTIONS = {"corpus": "jsb", "lowest_note": 21, "notes": 88}
SUFFIXES = (".pickle", ".pkl", ".json", ".npz")
LAYOUT = ('a .pickle, .pkl or .json file of {"train", "valid", "test"}, each a list of pieces, each a '
          "list of time steps, each the MIDI note numbers sounding; or an .npz of SRNN's release")
SRNN_ARRAYS = ("u_train", "x_train", "u_valid", "x_valid", "u_test", "x_test", "mask_test")
# What a piano-roll pickle may contain: builtin containers and numpy arrays, nothing that runs code.
PICKLE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("builtins", "set"), ("builtins", "frozenset"),
    ("__builtin__", "set"), ("__builtin__", "frozenset"), ("copy_reg", "_reconstructor"),
    ("copyreg", "_reconstructor"), ("__builtin__", "object"), ("builtins", "object"),
    ("_codecs", "encode"),  # how protocol 2 from Python 3 writes an array's bytes
}


class PianoRollUnpickler(pickle.Unpickler):
    """Unpickles builtin containers and numpy arrays only."""

    def find_class(self, module, name):
        if (module, name) in PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (a piano roll holds lists and arrays)")


def read_file(path: Path) -> object:
    """The raw ``{"train", "valid", "test"}`` object of a ``.json``, ``.pickle`` or ``.pkl`` file."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise DataError(f"polyphonic: cannot read {path}: {error.strerror or error}") from None
    if path.suffix.lower() == ".json":
        try:
            return json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError(f"polyphonic: {path} is not valid JSON ({error})") from None
    try:
        return PianoRollUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as error:  # a damaged or foreign pickle raises anything
        raise DataError(f"polyphonic: {path} is not a readable piano-roll pickle ({type(error).__name__}: {error})") from None


def note_number(value, where: str) -> int:
    """A MIDI note number: an int or an integral float (the pickles hold either)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DataError(f"{where}: {value!r} is not a note number")
    if not float(value).is_integer():
        raise DataError(f"{where}: {value!r} is not a whole note number")
    return int(value)


def piano_roll(piece, *, where: str, lowest: int, notes: int) -> np.ndarray:
    """``(T, notes)`` float32 0/1 frames of one piece (a list of time steps of note numbers)."""
    if isinstance(piece, (str, bytes, dict)) or not hasattr(piece, "__len__"):
        raise DataError(f"{where}: expected a list of time steps, got {type(piece).__name__}")
    if len(piece) == 0:
        raise DataError(f"{where}: has no time steps")
    frames = np.zeros((len(piece), notes), dtype=np.float32)
    for t, step in enumerate(piece):
        here = f"{where}, time step {t}"
        if isinstance(step, (str, bytes, dict)) or not hasattr(step, "__iter__"):
            raise DataError(f"{here}: expected a list of MIDI note numbers, got {step!r}")
        for value in np.asarray(step, dtype=object).reshape(-1):
            note = note_number(value, here)
            if not lowest <= note < lowest + notes:
                raise DataError(f"{here}: note {note} is outside the range {lowest}..{lowest + notes - 1} "
                                f"(data options lowest_note={lowest}, notes={notes})")
            frames[t, note - lowest] = 1.0
    return frames


def read_split(data: dict, name: str, *, path: Path, lowest: int, notes: int) -> List[np.ndarray]:
    if name not in data:
        raise DataError(f"polyphonic: {path} has no {name!r} split (found: {', '.join(map(str, data)) or 'none'})")
    pieces = data[name]
    if isinstance(pieces, (str, bytes, dict)) or not hasattr(pieces, "__len__"):
        raise DataError(f"polyphonic: {path}: split {name!r} must be a list of pieces, got {type(pieces).__name__}")
    if len(pieces) == 0:
        raise DataError(f"polyphonic: {path}: split {name!r} is empty")
    return [piano_roll(piece, where=f"polyphonic: {path}: {name} sequence {i}", lowest=lowest, notes=notes)
            for i, piece in enumerate(pieces)]


def read_srnn_npz(path: Path, *, notes: int) -> Tuple[Dict[str, List[np.ndarray]], List[np.ndarray]]:
    """The splits and training first inputs of an ``.npz`` in the layout of SRNN's release: ``x_*``
    (N, T, notes) target frames, ``u_*`` the same shifted by one (u_t = x_{t-1}), ``mask_test``
    (N, T) the real steps of each test piece (a prefix)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [name for name in SRNN_ARRAYS if name not in data.files]
            if missing:
                raise DataError(f"polyphonic: {path}: not the layout of SRNN's release (no {', '.join(missing)}; "
                                f"found: {', '.join(data.files) or 'nothing'})")
            arrays = {name: np.asarray(data[name]) for name in SRNN_ARRAYS}
    except (OSError, ValueError) as error:
        raise DataError(f"polyphonic: {path} is not a readable .npz ({error})") from None
    mask = arrays["mask_test"]
    if mask.ndim != 2 or not np.isin(mask, (0.0, 1.0)).all() or (np.diff(mask, axis=1) > 0).any():
        raise DataError(f"polyphonic: {path}: mask_test must be (N, T) 0/1 with the real steps first")
    splits, train_first = {}, []
    for name in SPLITS:
        u, x = arrays[f"u_{name}"], arrays[f"x_{name}"]
        if x.ndim != 3 or x.shape != u.shape or x.shape[2] != notes:
            raise DataError(f"polyphonic: {path}: u_{name} and x_{name} must both be (N, T, {notes}), got "
                            f"{u.shape} and {x.shape}")
        # training and validation windows are whole; test pieces are padded to the longest
        steps = mask.sum(axis=1).astype(int) if name == "test" else np.full(len(x), x.shape[1])
        if len(steps) != len(x):
            raise DataError(f"polyphonic: {path}: mask_test has {len(steps)} rows for {len(x)} test pieces")
        pieces = []
        for i, (inputs, targets, n) in enumerate(zip(u, x, steps)):
            where = f"polyphonic: {path}: {name} sequence {i}"
            inputs, targets = inputs[:n], targets[:n]
            if n == 0:
                raise DataError(f"{where}: has no time steps")
            if not (np.isin(targets, (0.0, 1.0)).all() and np.isin(inputs, (0.0, 1.0)).all()):
                raise DataError(f"{where}: frames must be 0/1 piano-roll rows")
            if not np.array_equal(inputs[1:], targets[:-1]):
                raise DataError(f"{where}: u_{name} is not x_{name} shifted by one step")
            if name == "train":
                pieces.append(targets.astype(np.float32))
                train_first.append(inputs[0].astype(np.float32))
            else:
                pieces.append(np.concatenate([inputs[:1], targets]).astype(np.float32))
        if not pieces:
            raise DataError(f"polyphonic: {path}: split {name!r} is empty")
        splits[name] = pieces
    return splits, train_first


def load_polyphonic(config) -> SequenceSplits:
    """The train / valid / test piano rolls of ``config.data_dir`` as ``(T_i, notes)`` 0/1 frames."""
    options = resolve_options("polyphonic", config.options, OPTIONS)
    corpus = check_choice("polyphonic", "corpus", options["corpus"], tuple(CORPORA))
    lowest = check_int("polyphonic", "lowest_note", options["lowest_note"], minimum=0)
    notes = check_int("polyphonic", "notes", options["notes"])
    path = corpus_path(config, dataset="polyphonic", description="The polyphonic music benchmark",
                       source="Boulanger-Lewandowski et al. (ICML 2012), or ../shared/data/ for JSB Chorales",
                       layout=LAYOUT, allow_file=True)
    if path.is_dir():
        raise DataError(f"polyphonic: {path} is a folder; --data-dir names the file itself: {LAYOUT}")
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(f"polyphonic: {path}: expected a {', '.join(SUFFIXES)} file")
    train_first = None
    if path.suffix.lower() == ".npz":
        splits, train_first = read_srnn_npz(path, notes=notes)
    else:
        data = read_file(path)
        if not isinstance(data, dict):
            raise DataError(f"polyphonic: {path}: expected an object with the splits train, valid, test, "
                            f"got {type(data).__name__}")
        splits = {name: read_split(data, name, path=path, lowest=lowest, notes=notes) for name in SPLITS}
    info = DataInfo(name=f"polyphonic-{corpus}", emission="bernoulli", dim=notes, unit="time step",
                    extra={"sequence_unit": CORPORA[corpus], "corpus": corpus, "lowest_note": lowest,
                           "file": str(path)})
    return SequenceSplits(info, splits["train"], splits["valid"], splits["test"], train_first=train_first)
