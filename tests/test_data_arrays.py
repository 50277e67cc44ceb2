"""``--dataset arrays``: files written by numpy (np.savez, np.savez_compressed, np.save) and by
Python's csv module, read back into sequences, emissions, normalisation and splits; every class
of bad input is a one-line error naming the file, the array and the index."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyro_zforcing.checkpoint import load_checkpoint, save_checkpoint
from pyro_zforcing.config import DataConfig
from pyro_zforcing.data import DataError, DataInfo, load_dataset
from pyro_zforcing.evaluation.samples import kind_of, write_samples

ROOT = Path(__file__).resolve().parents[1]
NO_SPLIT = {"valid_fraction": 0.0, "test_fraction": 0.0}


def load(path, **options):
    return load_dataset(DataConfig(dataset="arrays", data_dir=str(path), options=options))


def load_raw(path, **options):
    """Every sequence in one split, unnormalised: what the file holds."""
    return load(path, **NO_SPLIT, **options).train


def real_sequences(count=12, dim=3, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(int(rng.integers(3, 9)), dim)) * np.arange(1, dim + 1) * 10 + 100
            for _ in range(count)]


def write_csv(path: Path, rows, header=None, delimiter=","):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter=delimiter)
        if header:
            writer.writerow(header)
        writer.writerows(rows)
    return path


def same(a, b):
    pairs = [(np.asarray(x), np.asarray(y)) for x, y in zip(a, b)]
    return len(a) == len(b) and all(x.shape == y.shape and np.allclose(x, y, atol=1e-5) for x, y in pairs)


# ----------------------------------------------------------------------------- layouts

def test_npz_of_one_array_per_sequence_keeps_the_file_order_and_normalises_per_dimension(tmp_path):
    seqs = real_sequences(12)
    np.savez(tmp_path / "d.npz", *seqs)
    splits = load(tmp_path / "d.npz", valid_fraction=0.25, test_fraction=0.25)
    order = np.random.default_rng(0).permutation(12)  # split_items with --seed 0
    train = [seqs[i] for i in sorted(order[6:])]
    mean = np.concatenate(train).mean(0)
    std = np.concatenate(train).std(0)
    info = splits.info
    assert info.emission == "gaussian" and info.dim == 3 and info.units_per_step == 3
    assert np.allclose(info.mean, mean, rtol=1e-12) and np.allclose(info.std, std, rtol=1e-12)
    assert isinstance(info.mean, tuple) and len(info.std) == 3
    assert same(splits.train, [(s - mean) / std for s in train])
    assert same(splits.valid, [(seqs[i] - mean) / std for i in sorted(order[:3])])
    assert same(splits.test, [(seqs[i] - mean) / std for i in sorted(order[3:6])])
    assert all(s.dtype == np.float32 for s in splits.train)
    other = load(tmp_path / "d.npz", valid_fraction=0.25, test_fraction=0.25)
    assert same(other.test, splits.test)  # seeded: the same split every time


def test_the_seed_moves_sequences_between_splits(tmp_path):
    np.savez(tmp_path / "d.npz", *real_sequences(20))
    tests = [load_dataset(DataConfig(dataset="arrays", data_dir=str(tmp_path / "d.npz"), seed=seed)).test
             for seed in (0, 1)]
    assert not same(*tests)


def test_named_arrays_of_a_compressed_npz_and_1d_sequences(tmp_path):
    seqs = {"walk": np.cumsum(np.ones(6)) * 1.5, "other": np.linspace(0, 1, 4)}
    np.savez_compressed(tmp_path / "d.npz", **seqs)
    read = load_raw(tmp_path / "d.npz", normalise=False)
    assert same(read, [seqs["walk"][:, None], seqs["other"][:, None]])


def test_padded_npz_with_lengths_ignores_the_padding_even_nan(tmp_path):
    data = np.random.default_rng(0).normal(size=(4, 6, 2))
    data[1, 3:] = np.nan
    lengths = np.array([6, 3, 1, 5])
    np.savez(tmp_path / "d.npz", x=data, lengths=lengths)
    assert same(load_raw(tmp_path / "d.npz", normalise=False), [data[i, :n] for i, n in enumerate(lengths)])


def test_given_splits_padded_or_one_array_each_and_a_missing_split_carved_from_train(tmp_path):
    rng = np.random.default_rng(1)
    train = rng.normal(size=(10, 5, 2))
    test = rng.normal(size=(3, 5, 2))
    np.savez(tmp_path / "d.npz", train=train, train_lengths=np.full(10, 5) - np.arange(10) % 3,
             test=test, **{"valid/a": rng.normal(size=(4, 2)), "valid/b": rng.normal(size=(2, 2))})
    splits = load(tmp_path / "d.npz", normalise=False)
    assert [len(s) for s in splits.train] == [5 - i % 3 for i in range(10)]
    assert [len(s) for s in splits.valid] == [4, 2] and same(splits.test, list(test))
    assert splits.info.extra["splits_given"] is True
    np.savez(tmp_path / "t.npz", train=train, test=test)  # no valid: valid_fraction of train
    splits = load(tmp_path / "t.npz", normalise=False, valid_fraction=0.2)
    assert len(splits.train) == 8 and len(splits.valid) == 2 and same(splits.test, list(test))


def test_npy_files_one_sequence_a_batch_a_padded_batch_and_object_arrays(tmp_path):
    one = np.random.default_rng(2).normal(size=(7, 2))
    np.save(tmp_path / "one.npy", one)
    assert same(load_raw(tmp_path / "one.npy", normalise=False), [one])
    batch = np.random.default_rng(3).normal(size=(3, 4, 2))
    np.save(tmp_path / "batch.npy", batch)
    assert same(load_raw(tmp_path / "batch.npy", normalise=False), list(batch))
    np.save(tmp_path / "batch_lengths.npy", np.array([4, 1, 2]))
    padded = load_raw(tmp_path / "batch.npy", normalise=False, lengths="batch_lengths.npy")  # beside the data
    assert same(padded, [batch[0], batch[1, :1], batch[2, :2]])
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = one, one[:3] * 2
    np.save(tmp_path / "ragged.npy", ragged, allow_pickle=True)
    with pytest.raises(DataError, match=r"ragged\.npy: holds Python objects .* can run code.*allow_pickle=true"):
        load_raw(tmp_path / "ragged.npy")
    assert same(load_raw(tmp_path / "ragged.npy", normalise=False, allow_pickle=True), [one, one[:3] * 2])


def test_folder_of_npy_and_csv_files_with_and_without_headers(tmp_path):
    rng = np.random.default_rng(4)
    a, b, c = rng.normal(size=(5, 2)), rng.normal(size=(3, 2)), rng.normal(size=(4, 2))
    np.save(tmp_path / "f" / "a.npy", a) if (tmp_path / "f").mkdir() is None else None
    write_csv(tmp_path / "f" / "b.csv", b.tolist(), header=["left", "right"])
    write_csv(tmp_path / "f" / "deep" / "c.csv", c.tolist())
    (tmp_path / "f" / "README.txt").write_text("not data")
    (tmp_path / "f" / ".hidden.csv").write_text("x")
    assert same(load_raw(tmp_path / "f", normalise=False), [a, b, c])  # sorted by path
    write_csv(tmp_path / "g" / "tabs.csv", [[1.5, 2], [3, 4]], header=["x", "y"], delimiter="\t")
    write_csv(tmp_path / "g" / "more.csv", [[0.5, 1]], delimiter="\t")
    assert same(load_raw(tmp_path / "g", normalise=False, csv_delimiter="tab"), [[[0.5, 1]], [[1.5, 2], [3, 4]]])


def test_split_sub_folders_give_the_splits(tmp_path):
    rng = np.random.default_rng(5)
    for split, count in (("train", 4), ("Valid", 2), ("test", 1)):
        for i in range(count):
            write_csv(tmp_path / split / f"{i}.csv", rng.normal(size=(3, 1)).tolist())
    splits = load(tmp_path)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (4, 2, 1)
    write_csv(tmp_path / "stray.csv", [[1.0]])
    with pytest.raises(DataError, match=rf"^arrays: {tmp_path / 'stray.csv'} is outside the train/, valid/, test/"):
        load(tmp_path)


# ----------------------------------------------------------------------------- emissions

@pytest.mark.parametrize("values", [np.array([[0, 1], [1, 1]], dtype=bool), np.array([[0., 1.], [1., 0.]]),
                                    np.array([[0, 1], [1, 1]], dtype=np.uint8)])
def test_binary_values_of_any_dtype_are_bernoulli_and_not_normalised(tmp_path, values):
    np.savez(tmp_path / "d.npz", values, values[::-1])
    splits = load(tmp_path / "d.npz", **NO_SPLIT)
    assert splits.info.emission == "bernoulli" and splits.info.mean is None
    assert same(splits.train, [values.astype(np.float32), values[::-1].astype(np.float32)])


def test_integers_are_tokens_with_the_vocabulary_of_the_data_or_the_option(tmp_path):
    write_csv(tmp_path / "f" / "a.csv", [[3], [0], [5]], header=["token"])
    np.save(tmp_path / "f" / "b.npy", np.array([2, 2, 1]))
    splits = load(tmp_path / "f", **NO_SPLIT)
    info = splits.info
    assert (info.emission, info.dim, info.unit, info.units_per_step) == ("categorical", 6, "token", 1)
    assert [s.tolist() for s in splits.train] == [[3, 0, 5], [2, 2, 1]]
    assert all(s.dtype == np.int64 for s in splits.train) and kind_of(info) == "arrays"
    assert load(tmp_path / "f", **NO_SPLIT, vocab_size=10).info.dim == 10
    with pytest.raises(DataError, match=r"a\.csv: token id 5 >= vocab_size 4"):
        load(tmp_path / "f", **NO_SPLIT, vocab_size=4)


def test_integer_csv_files_join_float_files_as_real_values(tmp_path):
    write_csv(tmp_path / "a.csv", [[1, 2], [3, 4]])
    write_csv(tmp_path / "b.csv", [[0.5, 2.5]])
    splits = load(tmp_path, **NO_SPLIT, normalise=False)
    assert splits.info.emission == "gaussian" and same(splits.train, [np.array([[1., 2], [3, 4]]), [[0.5, 2.5]]])


def test_the_emission_option_overrides_what_the_values_suggest(tmp_path):
    tokens = np.array([0, 3, 1, 2])
    np.savez(tmp_path / "t.npz", tokens, tokens + 1)
    splits = load(tmp_path / "t.npz", **NO_SPLIT, emission="gaussian")
    info = splits.info
    assert info.emission == "gaussian" and info.dim == 1
    both = np.concatenate([tokens, tokens + 1]).astype(float)
    assert np.allclose(info.mean, [both.mean()]) and np.allclose(info.std, [both.std()])
    with pytest.raises(DataError, match=r"t\.npz: array 'arr_0': value 3 at index \(1,\); a bernoulli emission needs 0/1"):
        load(tmp_path / "t.npz", **NO_SPLIT, emission="bernoulli")
    np.savez(tmp_path / "r.npz", np.array([[0.5], [2.0]]))
    with pytest.raises(DataError, match=r"r\.npz: array 'arr_0': value 0\.5 at index \(0, 0\); token ids are integers"):
        load(tmp_path / "r.npz", **NO_SPLIT, emission="categorical")
    np.savez(tmp_path / "w.npz", np.array([[1, 2], [3, 4]]))
    with pytest.raises(DataError, match=r"w\.npz: array 'arr_0': 2 integers per step; a categorical emission takes one"):
        load(tmp_path / "w.npz", **NO_SPLIT)
    np.savez(tmp_path / "n.npz", np.array([1, -2, 3]))
    with pytest.raises(DataError, match=r"n\.npz: array 'arr_0': value -2 at index \(1,\); token ids are integers >= 0"):
        load(tmp_path / "n.npz", **NO_SPLIT)


def test_normalisation_is_optional_and_only_for_real_values(tmp_path, caplog):
    seqs = real_sequences(4)
    np.savez(tmp_path / "d.npz", *seqs)
    raw = load(tmp_path / "d.npz", **NO_SPLIT, normalise=False)
    assert raw.info.mean is None and raw.info.std is None and same(raw.train, seqs)
    np.savez(tmp_path / "b.npz", np.array([[0, 1]]))
    with pytest.raises(DataError, match=r"normalise=true applies to real-valued \(gaussian\) data, not bernoulli"):
        load(tmp_path / "b.npz", **NO_SPLIT, normalise=True)
    constant = [np.column_stack([s[:, 0], np.full(len(s), 7.0)]) for s in seqs]
    np.savez(tmp_path / "c.npz", *constant)
    with caplog.at_level(logging.WARNING):
        splits = load(tmp_path / "c.npz", **NO_SPLIT)
    assert "dimension(s) [1] are constant" in caplog.text
    assert splits.info.std[1] == 1.0 and all(np.all(s[:, 1] == 0) for s in splits.train)


# ----------------------------------------------------------------------------- errors

def _npz(**arrays):
    return lambda d: np.savez(d / "x.npz", **arrays) or d / "x.npz"


def _npy(array, **kwargs):
    return lambda d: np.save(d / "x.npy", array, **kwargs) or d / "x.npy"


def _csvs(*files):
    def write(d):
        for name, rows in files:
            path = d / "f" / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(rows)
        return d / "f"
    return write


def _bytes(name, data):
    return lambda d: (d / name).write_bytes(data) and d / name


NAN = np.array([[0.0, 1.0], [np.nan, 2.0]])
ERRORS = {
    "ragged dims, npz": (_npz(a=np.zeros((3, 2)), b=np.zeros((4, 3))),
                         r"x\.npz: array 'b': 3 values per step \(shape \(4, 3\)\), but .*x\.npz: array 'a' has 2"),
    "ragged dims, folder": (_csvs(("a.csv", "1,2\n3,4\n"), ("b.csv", "1,2,3\n")),
                            r"f/b\.csv: 3 values per step \(shape \(1, 3\)\), but .*f/a\.csv has 2"),
    "ragged csv columns": (_csvs(("a.csv", "x,y\n1,2\n3\n")), r"f/a\.csv: row 3 has 1 columns, row 2 has 2"),
    "nan in an array": (_npz(a=np.zeros((2, 2)), b=NAN), r"x\.npz: array 'b': value nan at index \(1, 0\); values must be finite"),
    "inf in a padded array": (_npz(x=np.array([[[1.0], [np.inf]], [[0.0], [0.0]]]), lengths=np.array([2, 1])),
                              r"x\.npz: array 'x', sequence 0: value inf at index \(1, 0\)"),
    "nan in a csv cell": (_csvs(("a.csv", "x,y\n1,2\n3,nan\n")), r"f/a\.csv: row 3, column 2: nan; values must be finite"),
    "nan in a npy": (_npy(NAN), r"x\.npy: value nan at index \(1, 0\)"),
    "empty array": (_npz(a=np.zeros((0, 2))), r"x\.npz: array 'a': empty sequence \(shape \(0, 2\)\)"),
    "zero dimensions": (_npz(a=np.zeros((3, 0))), r"x\.npz: array 'a': empty sequence \(shape \(3, 0\)\)"),
    "empty csv": (_csvs(("a.csv", "")), r"f/a\.csv: no data rows \(empty file\)"),
    "header only csv": (_csvs(("a.csv", "x,y\n")), r"f/a\.csv: no data rows \(only a header\)"),
    "zero length": (_npz(x=np.zeros((2, 3, 1)), lengths=np.array([3, 0])), r"x\.npz: array 'x': lengths\[1\] = 0"),
    "lengths too long": (_npz(x=np.zeros((2, 3, 1)), lengths=np.array([4, 1])),
                         r"x\.npz: array 'x': lengths\[0\] = 4 is longer than the padded array's 3 steps"),
    "lengths count": (_npz(x=np.zeros((2, 3, 1)), lengths=np.array([1, 1, 1])), r"x\.npz: array 'x': 3 lengths for 2 sequences"),
    "float lengths": (_npz(x=np.zeros((2, 3, 1)), lengths=np.array([1.0, 2.0])), r"lengths must be a 1-D integer array"),
    "mixed dtypes, npz": (_npz(a=np.zeros((2, 2)), b=np.ones((2, 2), dtype=np.int32) * 3),
                          r"x\.npz: array 'b': integer dtype int32, but .*array 'a' is float64: mixed dtypes"),
    "mixed dtypes, folder": (lambda d: [np.save(d / "a.npy", np.ones(3) * 0.5), np.save(d / "b.npy", np.arange(3))] and d,
                             r"b\.npy: integer dtype int64, but .*a\.npy is float64: mixed dtypes"),
    "non-numeric csv cell": (_csvs(("a.csv", "x,y\n1,2\n3,abc\n")), r"f/a\.csv: row 3, column 2: 'abc' is not a number"),
    "empty csv cell": (_csvs(("a.csv", "1,2\n,4\n")), r"f/a\.csv: row 2, column 1: '' is not a number"),
    "string array": (_npz(a=np.array(["a", "b"])), r"x\.npz: array 'a': dtype <U1 is not numeric"),
    "rank 4": (_npz(a=np.zeros((2, 2, 2, 2))), r"x\.npz: array 'a': shape \(2, 2, 2, 2\); a sequence is \(T, D\) or \(T,\)"),
    "3-D npy in a folder": (lambda d: np.save(d / "a.npy", np.zeros((2, 2, 2))) or d,
                            r"a\.npy: shape \(2, 2, 2\); in a folder each file is one sequence"),
    "garbage npz": (_bytes("x.npz", b"PK\x03\x04 not a zip at all"), r"x\.npz: not a readable \.npz file"),
    "garbage npy": (_bytes("x.npy", b"\x93NUMPY garbage"), r"x\.npy: not a readable"),
    "pickle npy": (_bytes("x.npy", b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01."), r"x\.npy: holds Python objects"),
    "no data files": (lambda d: (d / "f").mkdir() or (d / "f" / "notes.txt").write_text("hi") and d / "f",
                      r"arrays: no \.npy or \.csv files under"),
    "npz named npy": (lambda d: np.savez(d / "x.npz", np.zeros(3)) or os.rename(d / "x.npz", d / "x.npy") or d / "x.npy",
                      r"x\.npy: a \.npz archive named \.npy"),
    "npy named npz": (lambda d: np.save(d / "x.npy", np.zeros(3)) or os.rename(d / "x.npy", d / "x.npz") or d / "x.npz",
                      r"x\.npz: (a \.npy array named \.npz|not a readable \.npz)"),
    "other extension": (_bytes("x.txt", b"1,2"), r"arrays: .*x\.txt is not a \.npz, a \.npy or a folder"),
    "stray npz array": (_npz(train=np.zeros((2, 3, 1)), extra=np.zeros(3)), r"x\.npz: array 'extra' is outside the splits"),
    "no train split": (_npz(valid=np.zeros((2, 3, 1))), r"x\.npz: splits are given \(valid\) but no 'train' array"),
    "lengths with two arrays": (_npz(a=np.zeros((2, 3)), b=np.zeros((2, 3)), lengths=np.array([1, 2])),
                                r"x\.npz: 'lengths' goes with exactly one padded"),
}


@pytest.mark.parametrize("case", sorted(ERRORS))
def test_every_bad_input_is_a_one_line_error_naming_file_array_and_index(tmp_path, case):
    write, pattern = ERRORS[case]
    path = write(tmp_path)
    with pytest.raises(DataError, match=pattern) as error:
        load(path, **NO_SPLIT)
    assert "\n" not in str(error.value) and str(tmp_path) in str(error.value)


def test_bad_options_are_named():
    for options, pattern in (({"emission": "poisson"}, r"option emission must be one of"),
                             ({"vocab_size": 1}, r"option vocab_size must be an integer >= 2"),
                             ({"valid_fraction": 1.5}, r"option valid_fraction must be a number in \[0, 1\)"),
                             ({"csv_delimiter": ";;"}, r"option csv_delimiter must be one character or 'tab'"),
                             ({"bogus": 1}, r"arrays: unknown option\(s\) bogus")):
        with pytest.raises(DataError, match=pattern):
            load_dataset(DataConfig(dataset="arrays", data_dir="/nonexistent", options=options))
    with pytest.raises(DataError, match=r"^arrays: no --data-dir given.*np\.savez"):
        load_dataset(DataConfig(dataset="arrays"))


def test_skip_bad_files_skips_a_bad_file_of_a_folder_and_lists_it(tmp_path, caplog):
    for i in range(3):
        write_csv(tmp_path / f"ok{i}.csv", [[i, 1.5], [2, 3]])
    bad = write_csv(tmp_path / "bad.csv", [[1, 2], ["x", 4]])
    with caplog.at_level(logging.WARNING):
        splits = load_dataset(DataConfig(dataset="arrays", data_dir=str(tmp_path), skip_bad_files=True,
                                         options=NO_SPLIT))
    assert len(splits.train) == 3 and splits.skipped == [f"{bad}: row 2, column 1: 'x' is not a number"]
    assert "skipped 1 bad file" in caplog.text
    write_csv(tmp_path / "wide.csv", [[1, 2, 3]])  # disagrees with the others: never skipped
    with pytest.raises(DataError, match=r"wide\.csv: 3 values per step"):
        load_dataset(DataConfig(dataset="arrays", data_dir=str(tmp_path), skip_bad_files=True, options=NO_SPLIT))


# ----------------------------------------------------------------------------- saved and written back

def test_per_dimension_statistics_survive_a_checkpoint_and_old_scalar_ones_still_load(tmp_path):
    info = DataInfo(name="arrays", emission="gaussian", dim=2, unit="value", units_per_step=2,
                    mean=(1.5, -2.0), std=(0.5, 4.0))
    payload = {"model_config": {"input_dim": 2, "emission": "gaussian"}, "data_config": {"dataset": "arrays"},
               "train_config": {}, "objective": {}}
    save_checkpoint(tmp_path / "new.pt", {**payload, "data_info": info.to_dict()})
    assert load_checkpoint(tmp_path / "new.pt")["data_info"] == info
    old = {**info.to_dict(), "name": "timit", "mean": 0.01, "std": 0.07}  # a speech checkpoint's description
    save_checkpoint(tmp_path / "old.pt", {**payload, "data_info": old})
    loaded = load_checkpoint(tmp_path / "old.pt")["data_info"]
    assert (loaded.mean, loaded.std) == (0.01, 0.07)
    assert np.allclose(loaded.denormalise(np.ones((3, 2))), 0.08)


def test_samples_of_arrays_are_written_in_the_data_units(tmp_path):
    info = DataInfo(name="arrays", emission="gaussian", dim=2, unit="value", units_per_step=2,
                    mean=(100.0, -5.0), std=(10.0, 0.5))
    samples = np.random.default_rng(0).normal(size=(3, 4, 2)).astype(np.float32)
    written = write_samples(samples, info, tmp_path, name="samples")
    assert [p.name for p in written] == ["samples.npy", "samples.png"]
    assert np.allclose(np.load(tmp_path / "samples.npy"), samples * [10.0, 0.5] + [100.0, -5.0], atol=1e-4)
    tokens = DataInfo(name="arrays", emission="categorical", dim=5, unit="token")
    write_samples(np.array([[1, 4, 0]]), tokens, tmp_path, name="ids", real=[np.array([1, 2])], prime_steps=1)
    assert np.load(tmp_path / "ids.npy").tolist() == [[1, 4, 0]]


def test_train_evaluate_and_sample_on_a_tiny_arrays_file_through_the_cli(tmp_path, caplog, monkeypatch):
    seqs = real_sequences(16, dim=2, seed=7)
    np.savez(tmp_path / "mine.npz", *seqs)
    sizes = ["--rnn-dim", "8", "--emb-dim", "4", "--z-dim", "2", "--mlp-dim", "4"]
    train = subprocess.run([sys.executable, str(ROOT / "run.py"), "--dataset", "arrays", "--data-dir", "mine.npz",
                            "--epochs", "2", "--batch-size", "4", *sizes, "--out", "run", "--quiet"],
                           capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, cwd=tmp_path,
                           timeout=300)
    assert train.returncode == 0, train.stderr[-2000:]
    monkeypatch.chdir(tmp_path)
    from pyro_zforcing.cli.main import main

    def run(*argv):  # the same program, in this process
        assert main(list(argv)) == 0
    checkpoint = load_checkpoint(tmp_path / "run")
    info = checkpoint["data_info"]
    order = np.random.default_rng(0).permutation(16)
    train = np.concatenate([seqs[i] for i in sorted(order[4:])])
    assert info.emission == "gaussian" and np.allclose(info.mean, train.mean(0)) and np.allclose(info.std, train.std(0))
    run("evaluate", "--checkpoint", "run", "--iwae-samples", "3", "--quiet")
    report = json.loads((tmp_path / "run" / "eval-test.json").read_text())
    assert report["num_sequences"] == 2 and np.allclose(report["normalisation_std"], info.std)
    assert np.isfinite(report["per_sequence_mean"]["iwae"])
    assert report["per_sequence_mean"]["iwae"] >= report["per_sequence_mean"]["elbo"] - 1e-6
    assert "add -sum_d log(std_d)" in (tmp_path / "run" / "eval-test.md").read_text()
    run("sample", "--checkpoint", "run", "-n", "2", "--interpolate", "0", "--quiet")
    drawn = np.load(tmp_path / "run" / "samples" / "samples.npy")
    assert drawn.shape == (2, info.extra["train_steps"]["median"], 2)
    assert np.abs(drawn.mean() - train.mean()) < 0.5 * np.abs(train.mean())  # data units, not normalised ~0
    # the data changed since training: loading says so
    np.savez(tmp_path / "mine.npz", *[s * 3 for s in seqs])
    from pyro_zforcing.build import load_trained
    with caplog.at_level(logging.WARNING):
        load_trained(tmp_path / "run", data_dir=str(tmp_path / "mine.npz"))
    assert "training normalisation mean" in caplog.text


@pytest.mark.parametrize("seed", [3, 4])
def test_allow_pickle_warns_in_one_line_that_it_executes_code_from_the_file(tmp_path, caplog, seed):
    rng = np.random.default_rng(seed)
    ragged = np.empty(3, dtype=object)
    ragged[:] = [rng.normal(size=(int(n), seed - 1)) for n in rng.integers(2, 7, 3)]  # generated lengths and dims
    path = tmp_path / f"objects-{seed}.npy"
    np.save(path, ragged, allow_pickle=True)
    plain = tmp_path / "plain.npy"
    np.save(plain, rng.normal(size=(3, 4, 2)))
    with caplog.at_level(logging.WARNING):
        load_raw(plain, normalise=False)
    assert not [r for r in caplog.records if "allow_pickle" in r.getMessage()]  # off: silent
    with caplog.at_level(logging.WARNING):
        load_raw(path, normalise=False, allow_pickle=True)
    warned = [r.getMessage() for r in caplog.records if "allow_pickle=true" in r.getMessage()]
    assert len(warned) == 1 and "\n" not in warned[0], warned
    assert "executes code stored in the file" in warned[0] and str(path) in warned[0]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_token_samples_are_drawn_as_a_piano_roll_of_token_against_step(tmp_path, monkeypatch, seed):
    """Each panel is a (vocab, T) image whose dark cells are exactly the sampled ids (generated
    samples of generated vocabularies), the primed real ids lighter behind; no lines."""
    from pyro_zforcing.evaluation import samples as samples_module

    rng = np.random.default_rng(seed)
    vocab, n, steps = int(rng.integers(3, 30)), int(rng.integers(1, 4)), int(rng.integers(2, 12))
    ids = rng.integers(0, vocab, (n, steps))
    real = [rng.integers(0, vocab, int(rng.integers(1, steps + 1))) for _ in range(n)]
    drawn = {}

    def keep(fig, path, **kwargs):
        drawn["axes"] = fig.axes
        Path(path).write_bytes(b"png")
        return Path(path)

    monkeypatch.setattr(samples_module, "save_figure", keep)
    info = DataInfo(name="arrays", emission="categorical", dim=vocab, unit="token")
    write_samples(ids, info, tmp_path, name="primed", real=real, prime_steps=1)
    assert len(drawn["axes"]) == n
    for ax, sample, shown in zip(drawn["axes"], ids, real):
        assert not ax.lines[1:] and len(ax.images) == 1  # at most the prime marker, and one image
        roll = np.asarray(ax.images[0].get_array())
        assert roll.shape == (vocab, steps)
        assert np.array_equal(np.argwhere(roll == 1.0)[:, ::-1][np.argsort(np.argwhere(roll == 1.0)[:, 1])][:, 1],
                              sample)
        lighter = {(int(t), int(k)) for k, t in np.argwhere(roll == 0.35)}
        assert lighter == {(t, int(k)) for t, k in enumerate(shown) if k != sample[t]}
