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
from typing import List

import numpy as np

from .base import DataError, DataInfo, SequenceSplits
from .common import check_choice, check_int, corpus_path, resolve_options

SPLITS = ("train", "valid", "test")
CORPORA = {"jsb": "chorale", "nottingham": "tune", "musedata": "piece", "piano": "piece"}
OPTIONS = {"corpus": "jsb", "lowest_note": 21, "notes": 88}
SUFFIXES = (".pickle", ".pkl", ".json")
LAYOUT = ('a .pickle, .pkl or .json file of {"train", "valid", "test"}, each a list of pieces, each a '
          "list of time steps, each the MIDI note numbers sounding")
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
    data = read_file(path)
    if not isinstance(data, dict):
        raise DataError(f"polyphonic: {path}: expected an object with the splits train, valid, test, "
                        f"got {type(data).__name__}")
    splits = {name: read_split(data, name, path=path, lowest=lowest, notes=notes) for name in SPLITS}
    info = DataInfo(name=f"polyphonic-{corpus}", emission="bernoulli", dim=notes, unit="time step",
                    extra={"sequence_unit": CORPORA[corpus], "corpus": corpus, "lowest_note": lowest,
                           "file": str(path)})
    return SequenceSplits(info, splits["train"], splits["valid"], splits["test"])
