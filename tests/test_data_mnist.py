"""Binarized MNIST from Larochelle's .amat files and LeCun's IDX files, built by their specs."""

from __future__ import annotations

import gzip
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyro_zforcing.data import DataError, collate_sequences, load_dataset
from test_data_builders import config, idx_bytes, write_amat, write_idx


def _amat_tree(root: Path, counts=(5, 3, 2), seed=0):
    rng = np.random.default_rng(seed)
    images = {}
    for split, n in zip(("train", "valid", "test"), counts):
        images[split] = (rng.random((n, 784)) < 0.3).astype(np.uint8)
        write_amat(root / f"binarized_mnist_{split}.amat", images[split])
    return images


def _idx_tree(root: Path, n_train=10003, n_test=4, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    train = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    suffix = ".gz" if gz else ""
    write_idx(root / f"train-images-idx3-ubyte{suffix}", train, gz=gz)
    write_idx(root / f"t10k-images-idx3-ubyte{suffix}", test, gz=gz)
    return train, test


def test_amat_images_become_784_bernoulli_pixel_steps(tmp_path):
    images = _amat_tree(tmp_path)
    splits = load_dataset(config("mnist", tmp_path, tmp_path))
    info = splits.info
    assert (info.emission, info.dim, info.unit, info.units_per_step, info.image_shape) == (
        "bernoulli", 1, "pixel", 1, (28, 28))
    assert info.extra["units_per_sequence"] == 784 and info.extra["sequence_unit"] == "image"
    for split in ("train", "valid", "test"):
        got = splits.split(split)
        assert len(got) == len(images[split])
        for seq, img in zip(got, images[split]):
            assert seq.dtype == np.float32 and seq.shape == (784, 1)
            np.testing.assert_array_equal(seq[:, 0], img)
    batch = collate_sequences(splits.train[:2])
    assert batch.x.shape == (2, 784, 1) and bool(batch.mask.all())


def test_rows_option_gives_28_steps_of_28_pixels(tmp_path):
    images = _amat_tree(tmp_path)
    splits = load_dataset(config("mnist", tmp_path, tmp_path, options={"rows": True}))
    assert (splits.info.dim, splits.info.units_per_step) == (28, 28)
    np.testing.assert_array_equal(splits.test[1], images["test"][1].reshape(28, 28))


@pytest.mark.parametrize("gz", [False, True])
def test_idx_threshold_binarization_and_last_10k_validation(tmp_path, gz):
    train, test = _idx_tree(tmp_path, gz=gz)
    splits = load_dataset(config("mnist", tmp_path, tmp_path,
                                 options={"binarize": "threshold", "threshold": 0.5}))
    assert [len(splits.train), len(splits.valid), len(splits.test)] == [3, 10000, 4]
    np.testing.assert_array_equal(splits.train[2][:, 0], (train[2].reshape(-1) > 127.5))
    np.testing.assert_array_equal(splits.valid[0][:, 0], (train[3].reshape(-1) > 127.5))
    np.testing.assert_array_equal(splits.test[3][:, 0], (test[3].reshape(-1) > 127.5))


def test_idx_stochastic_binarization_is_seeded_and_follows_grey_levels(tmp_path):
    rng = np.random.default_rng(0)
    grey = np.repeat(np.array([0, 64, 191, 255], np.uint8), 196).reshape(1, 28, 28)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.repeat(grey, 10002, axis=0))
    write_idx(tmp_path / "t10k-images-idx3-ubyte", rng.integers(0, 256, (2, 28, 28), dtype=np.uint8))
    one = load_dataset(config("mnist", tmp_path, tmp_path, seed=1))
    again = load_dataset(config("mnist", tmp_path, tmp_path, seed=1))
    other = load_dataset(config("mnist", tmp_path, tmp_path, seed=2))
    np.testing.assert_array_equal(one.valid[5], again.valid[5])
    assert not np.array_equal(np.stack(one.valid[:20]), np.stack(other.valid[:20]))
    pixels = np.stack(one.valid)[:, :, 0].reshape(-1, 4, 196)
    rates = pixels.mean(axis=(0, 2))
    assert rates[0] == 0.0 and rates[3] == 1.0
    np.testing.assert_allclose(rates[1:3], [64 / 255, 191 / 255], atol=0.01)


def test_missing_mnist_names_both_sources_and_layout(tmp_path):
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\[\.gz\].*lecun.*binarized_mnist"):
        load_dataset(config("mnist", tmp_path, tmp_path))
    with pytest.raises(DataError, match=r"does not exist.*LeCun"):
        load_dataset(config("mnist", tmp_path / "none", tmp_path))
    with pytest.raises(DataError, match=r"binarized_mnist_test\.amat"):
        _amat_tree(tmp_path)
        (tmp_path / "binarized_mnist_test.amat").unlink()
        load_dataset(config("mnist", tmp_path, tmp_path, options={"source": "amat"}))


@pytest.mark.parametrize("content, pattern", [
    (b"0 1 2" + b" 0" * 781 + b"\n", "values other than 0/1"),
    (b"0 1" * 10 + b"\n", "line 1 does not hold 784"),
    (b"01 " * 392 + b"\n", "single 0/1"),
    (b"", "empty .amat"),
    (b"\xff\xfe" * 400, "does not hold 784"),
])
def test_bad_amat_file_is_named(tmp_path, content, pattern):
    _amat_tree(tmp_path)
    bad = tmp_path / "binarized_mnist_valid.amat"
    bad.write_bytes(content)
    with pytest.raises(DataError, match=pattern) as err:
        load_dataset(config("mnist", tmp_path, tmp_path, skip_bad_files=True))
    assert str(bad) in str(err.value)


def test_bad_idx_files_are_named(tmp_path):
    _idx_tree(tmp_path, n_train=10002)
    path = tmp_path / "t10k-images-idx3-ubyte"
    full = path.read_bytes()
    for content, pattern in [(full[:-1], "truncated"), (full[:10], "not an IDX3"),
                             (b"\x00\x00\x08\x01" + full[4:], "not an IDX3"),
                             (idx_bytes(np.zeros((2, 27, 28))), "27x28")]:
        path.write_bytes(content)
        with pytest.raises(DataError, match=pattern) as err:
            load_dataset(config("mnist", tmp_path, tmp_path))
        assert str(path) in str(err.value)
    path.unlink()
    bad_gz = tmp_path / "t10k-images-idx3-ubyte.gz"
    bad_gz.write_bytes(gzip.compress(full)[:-8])
    with pytest.raises(DataError, match=str(bad_gz)):
        load_dataset(config("mnist", tmp_path, tmp_path))


def test_unknown_and_invalid_options_are_rejected(tmp_path):
    with pytest.raises(DataError, match=r"binarise.*known: binarize, rows, source, threshold"):
        load_dataset(config("mnist", tmp_path, tmp_path, options={"binarise": "x"}))
    with pytest.raises(DataError, match="threshold"):
        load_dataset(config("mnist", tmp_path, tmp_path, options={"threshold": 1.5}))


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(["t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz",
                             "binarized_mnist_test.amat"]),
       prefix=st.sampled_from([b"", b"\x00\x00\x08\x03", b"\x1f\x8b", b"0 1 "]),
       body=st.binary(max_size=2000))
def test_fuzzed_mnist_files_give_a_clean_data_error(name, prefix, body):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if name.endswith(".amat"):
            _amat_tree(root, counts=(2, 1, 1))
        else:
            write_idx(root / "train-images-idx3-ubyte", np.zeros((10001, 28, 28), np.uint8))
        (root / name).write_bytes(prefix + body)
        with pytest.raises(DataError, match=name):
            load_dataset(config("mnist", root, root))
