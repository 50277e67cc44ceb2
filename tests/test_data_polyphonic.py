"""The polyphonic-music loader on the shared JSB Chorales file, on Python-2 pickles, and on bad files."""

from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from pyro_zforcing.config import DataConfig
from pyro_zforcing.data import DataError, load_dataset
from pyro_zforcing.data.polyphonic import SRNN_ARRAYS

JSB = Path(__file__).resolve().parents[2] / "shared" / "data" / "jsb-chorales-quarter.json"
needs_jsb = pytest.mark.skipif(not JSB.is_file(), reason=f"the shared JSB file is not at {JSB}")


def load(path, **options):
    return load_dataset(DataConfig(dataset="polyphonic", data_dir=str(path), options=options))


class Python2Pickler(pickle._Pickler):
    """Writes ``str`` and ``bytes`` (a numpy array's buffer) as Python 2 byte strings (BINSTRING,
    latin-1 text), as the authors' files hold them; protocol 2 otherwise."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_string(self, value):
        data = value.encode("latin1") if isinstance(value, str) else value
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + struct.pack("<B", len(data)) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(value)

    dispatch[str] = save_py2_string
    dispatch[bytes] = save_py2_string


def write_py2_pickle(path: Path, value) -> Path:
    with path.open("wb") as f:
        Python2Pickler(f, protocol=2).dump(value)
    return path


SMALL = {"train": [[[60, 64, 67], [], [62]], [[21], [108, 21]]],
         "valid": [[[72], [72, 76]]],
         "test": [[[], [48, 55, 64, 67]]]}


@needs_jsb
def test_shared_jsb_file_has_the_published_split_and_lengths():
    splits = load(JSB)
    raw = json.loads(JSB.read_text())
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (229, 76, 77)
    for name in ("train", "valid", "test"):
        assert [len(s) for s in splits.split(name)] == [len(piece) for piece in raw[name]]  # same order, no reshuffle
    assert sum(len(s) for s in splits.train) == 13807
    assert splits.info.emission == "bernoulli" and splits.info.dim == 88 and splits.info.unit == "time step"
    assert all(s.dtype == np.float32 and s.shape[1] == 88 for s in splits.train)


@needs_jsb
def test_notes_land_in_the_columns_of_their_midi_number_checked_by_hand():
    first = load(JSB).train[0]
    # the file's first training chorale begins [60, 72, 79, 88], [72, 79, 88], [67, 70, 76, 84]:
    # MIDI 60 (middle C) is key 39 counting from A0 = MIDI 21
    assert np.flatnonzero(first[0]).tolist() == [39, 51, 58, 67]
    assert np.flatnonzero(first[1]).tolist() == [51, 58, 67]
    assert np.flatnonzero(first[2]).tolist() == [46, 49, 55, 63]
    assert first.shape == (129, 88) and set(np.unique(first)) <= {0.0, 1.0}


@needs_jsb
def test_rests_are_kept_as_all_zero_frames():
    splits = load(JSB)
    raw = json.loads(JSB.read_text())
    rests = [(name, i, t) for name in ("train", "valid", "test") for i, piece in enumerate(raw[name])
             for t, step in enumerate(piece) if not step]
    assert len(rests) == 64  # counted in the JSON
    for name, i, t in rests:
        assert not splits.split(name)[i][t].any()


def test_a_python2_pickle_and_the_json_of_the_same_data_load_to_identical_arrays(tmp_path):
    # the authors' pickles: latin-1 byte-string keys, time steps as tuples (some as float note
    # numbers) or numpy arrays
    as_py2 = {name: [[tuple(float(n) for n in step) if k % 2 else np.array(step, dtype=np.int64)
                      for k, step in enumerate(piece)] for piece in pieces]
              for name, pieces in SMALL.items()}
    pickled = write_py2_pickle(tmp_path / "small.pickle", as_py2)
    assert b"U\x05train" in pickled.read_bytes()  # a Python 2 str, not a unicode string
    (tmp_path / "small.json").write_text(json.dumps(SMALL))
    a, b = load(pickled), load(tmp_path / "small.json")
    for name in ("train", "valid", "test"):
        assert len(a.split(name)) == len(b.split(name))
        for x, y in zip(a.split(name), b.split(name)):
            assert x.dtype == y.dtype and np.array_equal(x, y)
    assert np.flatnonzero(a.train[1][1]).tolist() == [0, 87]  # the lowest and highest keys


def test_the_note_range_is_an_option(tmp_path):
    path = tmp_path / "small.json"
    path.write_text(json.dumps(SMALL))
    with pytest.raises(DataError, match=r"note 21 is outside the range 48\.\.108"):
        load(path, lowest_note=48, notes=61)
    wide = load(path, lowest_note=0, notes=128, corpus="musedata")
    assert wide.info.dim == 128 and np.flatnonzero(wide.train[0][0]).tolist() == [60, 64, 67]
    assert wide.info.name == "polyphonic-musedata" and wide.info.extra["sequence_unit"] == "piece"


def bad_file(tmp_path, value, name="bad.json"):
    path = tmp_path / name
    path.write_text(json.dumps(value))
    return path


@pytest.mark.parametrize("value,message", [
    ({**SMALL, "valid": [[[72], [109]]]}, r"valid sequence 0, time step 1: note 109 is outside the range 21\.\.108"),
    ({**SMALL, "test": [[[], [20]]]}, r"test sequence 0, time step 1: note 20 is outside"),
    ({**SMALL, "train": [[[60], 61]]}, r"train sequence 0, time step 1: expected a list of MIDI note numbers, got 61"),
    ({**SMALL, "train": [[[60.5]]]}, r"train sequence 0, time step 0: 60\.5 is not a whole note number"),
    ({**SMALL, "train": [[[60]], "chorale"]}, r"train sequence 1: expected a list of time steps, got str"),
    ({**SMALL, "train": [[[60]], []]}, r"train sequence 1: has no time steps"),
    ({**SMALL, "valid": "none"}, r"split 'valid' must be a list of pieces"),
    ({"train": SMALL["train"], "test": SMALL["test"]}, r"has no 'valid' split \(found: train, test\)"),
    ({**SMALL, "test": []}, r"split 'test' is empty"),
    ([1, 2, 3], r"expected an object with the splits train, valid, test, got list"),
])
def test_bad_content_is_a_one_line_error_naming_the_file_and_the_place(tmp_path, value, message):
    path = bad_file(tmp_path, value)
    with pytest.raises(DataError, match=message) as error:
        load(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_unreadable_files_are_clean_errors(tmp_path):
    with pytest.raises(DataError, match="no --data-dir given"):
        load_dataset(DataConfig(dataset="polyphonic"))
    with pytest.raises(DataError, match=r"is a folder; --data-dir names the file itself"):
        load(tmp_path)
    (tmp_path / "roll.txt").write_text("{}")
    with pytest.raises(DataError, match=r"roll\.txt: expected a \.pickle, \.pkl, \.json, \.npz or \.mat file"):
        load(tmp_path / "roll.txt")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DataError, match=r"broken\.json is not valid JSON"):
        load(tmp_path / "broken.json")
    (tmp_path / "broken.pkl").write_bytes(b"not a pickle")
    with pytest.raises(DataError, match=r"broken\.pkl is not a readable piano-roll pickle"):
        load(tmp_path / "broken.pkl")
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"broken\.npz is not a readable \.npz"):
        load(tmp_path / "broken.npz")
    np.savez(tmp_path / "objects.npz", **{name: np.array([None]) for name in SRNN_ARRAYS})
    with pytest.raises(DataError, match=r"objects\.npz is not a readable \.npz"):  # object arrays are never unpickled
        load(tmp_path / "objects.npz")
    with pytest.raises(DataError, match=r"option corpus must be one of"):
        load(tmp_path / "broken.json", corpus="bach")


def test_a_pickle_that_would_run_code_is_refused_by_name(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"train": Payload()}, protocol=2))
    with pytest.raises(DataError, match=r"refusing to load (__builtin__|builtins)\.print"):
        load(path)


def srnn_layout(pieces, *, window: int) -> dict:
    """The arrays of SRNN's release for ``pieces`` ((T_i, 88) rolls), written here as its
    ``MainSRNN_midi.py`` reads them: training and validation cut into ``window``-step windows of
    inputs u (the frame before each target) and targets x; test pieces whole, zero-padded, with
    a mask of their target steps."""
    def windows(rolls):
        u = [r[s:s + window] for r in rolls for s in range(0, len(r) - window, window)]
        x = [r[s + 1:s + window + 1] for r in rolls for s in range(0, len(r) - window, window)]
        return np.stack(u), np.stack(x)

    arrays = {}
    for name in ("train", "valid"):
        arrays[f"u_{name}"], arrays[f"x_{name}"] = windows(pieces[name])
    longest = max(len(r) for r in pieces["test"]) - 1
    u, x = np.zeros((2, len(pieces["test"]), longest, 88), np.float32)
    mask = np.zeros((len(pieces["test"]), longest), np.float32)
    for i, r in enumerate(pieces["test"]):
        u[i, :len(r) - 1], x[i, :len(r) - 1], mask[i, :len(r) - 1] = r[:-1], r[1:], 1.0
    u[mask == 0] = np.nan  # the release's padded test inputs are NaN
    return {**arrays, "u_test": u, "x_test": x, "mask_test": mask}


def random_rolls(rng, lengths):
    return [(rng.random((n, 88)) < 0.05).astype(np.float32) for n in lengths]


def test_srnn_release_npz_gives_its_windows_with_their_first_inputs_and_whole_test_pieces(tmp_path):
    rng = np.random.default_rng(0)
    pieces = {"train": random_rolls(rng, [9, 13]), "valid": random_rolls(rng, [7]), "test": random_rolls(rng, [5, 8])}
    np.savez(tmp_path / "jsb_raw.npz", **srnn_layout(pieces, window=4))
    splits = load(tmp_path / "jsb_raw.npz")
    # windows of 4 targets start at steps 0, 4 (piece of 9) and 0, 4, 8 (piece of 13)
    starts = [(0, 0), (0, 4), (1, 0), (1, 4), (1, 8)]
    assert len(splits.train) == len(splits.train_first) == 5
    for window, first, (piece, start) in zip(splits.train, splits.train_first, starts):
        np.testing.assert_array_equal(window, pieces["train"][piece][start + 1:start + 5])
        np.testing.assert_array_equal(first, pieces["train"][piece][start])
    assert [len(v) for v in splits.valid] == [5]  # the input frame and the 4 targets of the one window
    np.testing.assert_array_equal(splits.valid[0], pieces["valid"][0][:5])
    for got, piece in zip(splits.test, pieces["test"]):
        np.testing.assert_array_equal(got, piece)  # the whole piece, its padding (NaN inputs) dropped
    batch = splits.train_batch([3])
    np.testing.assert_array_equal(batch.first[0].numpy(), pieces["train"][1][4])


@pytest.mark.parametrize("change, message", [
    (lambda a: a.pop("mask_test"), r"not the layout of SRNN's release \(no mask_test"),
    (lambda a: a.__setitem__("u_train", a["u_train"][..., :80]), r"u_train and x_train must both be \(N, T, 88\)"),
    (lambda a: a["u_valid"].__setitem__((0, 2), 1 - a["u_valid"][0, 2]), r"valid sequence 0: u_valid is not x_valid shifted"),
    (lambda a: a["mask_test"].__setitem__((0, 0), 0.0), r"mask_test must be \(N, T\) 0/1 with the real steps first"),
    (lambda a: a["x_test"].__setitem__((1, 0, 3), 0.5), r"test sequence 1: frames must be 0/1"),
])
def test_a_broken_srnn_npz_is_an_error_naming_the_file_and_the_array(tmp_path, change, message):
    rng = np.random.default_rng(1)
    arrays = srnn_layout({"train": random_rolls(rng, [9]), "valid": random_rolls(rng, [9]),
                          "test": random_rolls(rng, [5, 6])}, window=4)
    change(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match=r"bad\.npz.*" + message):
        load(tmp_path / "bad.npz")


def test_the_resolution_check_finds_pieces_written_at_twice_the_resolution(tmp_path):
    from benchmarks.jsb_resolution import compare

    rng = np.random.default_rng(2)
    coarse = {name: random_rolls(rng, lengths) for name, lengths in
              {"train": [30, 26], "valid": [24, 22], "test": [9, 12]}.items()}
    midi = {name: [[(np.flatnonzero(frame) + 21).tolist() for frame in piece] for piece in pieces]
            for name, pieces in coarse.items()}
    (tmp_path / "coarse.json").write_text(json.dumps(midi))
    fine = {name: [np.repeat(piece, 2, axis=0) for piece in pieces] for name, pieces in coarse.items()}
    # the release's training windows cut one stream of the pieces; the test pieces stay whole
    stream = {name: [np.concatenate(fine[name])] for name in ("train", "valid")}
    np.savez(tmp_path / "fine.npz", **srnn_layout({**stream, "test": fine["test"]}, window=20))
    report = compare(str(tmp_path / "fine.npz"), str(tmp_path / "coarse.json"))
    assert report["test"]["matched"] == report["test"]["fine_pieces"] == 2
    assert report["train"]["fine_pieces"] == 5 and report["train"]["matched"] == 5  # 112 frames: windows of 20 from 0 to 80
    assert report["valid"]["matched"] == report["valid"]["fine_pieces"] == 4
    # every coarse frame written twice: at least T_i of the 2 T_i - 1 frames with a predecessor repeat it
    floor = sum(len(p) for p in coarse["test"]) / sum(2 * len(p) - 1 for p in coarse["test"])
    assert report["test"]["fine_repeated_share"] >= round(floor, 4)
