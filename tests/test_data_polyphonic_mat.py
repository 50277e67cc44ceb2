"""The polyphonic loader on the MATLAB piano rolls (four corpora), on bad .mat files, and the
training windows (data option ``window``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from pyro_zforcing.build import build_objective
from pyro_zforcing.cli.main import main
from pyro_zforcing.config import DataConfig
from pyro_zforcing.data import DataError, collate_sequences, load_dataset
from pyro_zforcing.infer import sequence_terms
from pyro_zforcing.training.recipes import load_recipe, preset_path

from conftest import small_config

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
MAT = SHARED / "polyphonic-mat"
JSB_JSON = SHARED / "jsb-chorales-quarter.json"
needs_mat = pytest.mark.skipif(not MAT.is_dir(), reason=f"the shared .mat files are not at {MAT}")

# ../shared/data/README.md: train / valid / test pieces, training frames, test frames
PUBLISHED = {
    "JSB_Chorales.mat": ("jsb", "JSB Chorales", (229, 76, 77), 13_807, 4_725),
    "Nottingham.mat": ("nottingham", "Nottingham", (694, 173, 170), 176_561, 44_463),
    "MuseData.mat": ("musedata", "MuseData", (524, 135, 124), 245_202, 64_339),
    "Piano_midi.mat": ("piano", "Piano-midi.de", (87, 12, 25), 75_911, 19_036),
}


def load(path, **options):
    return load_dataset(DataConfig(dataset="polyphonic", data_dir=str(path), options=options))


@pytest.fixture(scope="module")
def corpora():
    return {name: load(MAT / name) for name in PUBLISHED}


@needs_mat
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_each_mat_corpus_has_its_published_split_and_frame_counts(corpora, name):
    corpus, title, sizes, train_frames, test_frames = PUBLISHED[name]
    splits = corpora[name]
    assert (len(splits.train), len(splits.valid), len(splits.test)) == sizes
    assert sum(len(s) for s in splits.train) == train_frames
    assert sum(len(s) for s in splits.test) == test_frames
    assert splits.info.name == f"polyphonic-{corpus}" and splits.info.extra["corpus_name"] == title
    assert splits.info.dim == 88 and splits.train_first is None
    raw = scipy.io.loadmat(str(MAT / name))["traindata"]
    assert np.array_equal(splits.train[5], raw[0, 5])  # cell i is sequence i, in the file's order


@needs_mat
@pytest.mark.skipif(not JSB_JSON.is_file(), reason=f"the shared JSB file is not at {JSB_JSON}")
def test_jsb_mat_equals_the_json_piece_by_piece(corpora):
    mat, json = corpora["JSB_Chorales.mat"], load(JSB_JSON)
    for split in ("train", "valid", "test"):
        assert len(mat.split(split)) == len(json.split(split))
        for a, b in zip(mat.split(split), json.split(split)):
            assert a.dtype == b.dtype == np.float32 and np.array_equal(a, b)


def test_corpus_option_names_the_data_over_the_file_name(tmp_path):
    path = write_mat(tmp_path / "Nottingham.mat")
    assert load(path).info.extra["corpus"] == "nottingham"
    assert load(path, corpus="piano").info.extra["corpus_name"] == "Piano-midi.de"
    assert load(write_mat(tmp_path / "rolls.mat")).info.extra["corpus"] == "jsb"  # no corpus in the name


def cells(*rolls) -> np.ndarray:
    out = np.empty((1, len(rolls)), dtype=object)
    for i, roll in enumerate(rolls):
        out[0, i] = roll
    return out


def roll(steps: int, *, width: int = 88, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((steps, width)) < 0.1).astype(np.uint8)


def write_mat(path: Path, **arrays) -> Path:
    data = {"traindata": cells(roll(5), roll(3, seed=1)), "validdata": cells(roll(4, seed=2)),
            "testdata": cells(roll(6, seed=3))}
    data.update(arrays)
    scipy.io.savemat(str(path), {k: v for k, v in data.items() if v is not None})
    return path


@pytest.mark.parametrize("arrays, expected", [
    ({"traindata": cells(roll(5), np.array([np.zeros(88), np.zeros(87)], dtype=object))},
     "traindata cell 1: not a (T, 88) piano roll"),
    ({"validdata": np.empty((1, 0), dtype=object)}, "validdata is empty"),
    ({"testdata": cells(roll(6), np.full((2, 88), 2, dtype=np.uint8))}, "testdata cell 1: value 2 at time step 0, key 0"),
    ({"traindata": cells(roll(5), roll(3), roll(4, width=87))}, "traindata cell 2: 87 columns, expected 88 keys"),
    ({"testdata": None}, "no array 'testdata' (found: traindata, validdata)"),
])
def test_bad_mat_files_raise_one_line_naming_file_array_and_cell(tmp_path, arrays, expected):
    path = write_mat(tmp_path / "bad.mat", **arrays)
    with pytest.raises(DataError) as error:
        load(path)
    message = str(error.value)
    assert "\n" not in message and str(path) in message and expected in message


def test_a_file_that_is_not_matlab_is_refused_by_name(tmp_path):
    path = tmp_path / "JSB_Chorales.mat"
    path.write_bytes(b"not a MATLAB file at all")
    with pytest.raises(DataError, match="is not a readable MATLAB file") as error:
        load(path)
    assert str(path) in str(error.value)


def test_window_must_be_a_positive_integer(tmp_path):
    with pytest.raises(DataError, match="option window must be an integer >= 1"):
        load(write_mat(tmp_path / "JSB_Chorales.mat"), window=0)


@needs_mat
@pytest.mark.parametrize("length", [1, 7, 100])
def test_windows_cover_every_training_frame_once_each_starting_from_the_frame_before(corpora, length):
    whole = corpora["Piano_midi.mat"]
    windowed = load(MAT / "Piano_midi.mat", window=length)
    assert len(windowed.train) == sum(-(-len(piece) // length) for piece in whole.train)
    assert len(windowed.train_first) == len(windowed.train)
    at = 0
    for piece in whole.train:  # the windows come piece by piece, in order
        start = 0
        while start < len(piece):
            window, first = windowed.train[at], windowed.train_first[at]
            assert 1 <= len(window) <= length
            assert np.array_equal(window, piece[start:start + len(window)])
            expected_first = np.zeros(88, np.float32) if start == 0 else piece[start - 1]
            assert np.array_equal(first, expected_first)
            start, at = start + len(window), at + 1
        assert start == len(piece)  # the piece's frames, each a target once, none twice
    assert at == len(windowed.train)
    assert sum(len(w) for w in windowed.train) == sum(len(p) for p in whole.train)
    for split in ("valid", "test"):  # evaluation scores whole pieces
        assert len(windowed.split(split)) == len(whole.split(split))
        assert all(np.array_equal(a, b) for a, b in zip(windowed.split(split), whole.split(split)))


@needs_mat
def test_a_training_batch_of_windows_carries_their_first_inputs(corpora):
    windowed = load(MAT / "JSB_Chorales.mat", window=50)
    piece = corpora["JSB_Chorales.mat"].train[0]  # 129 steps: windows [0, 50), [50, 100), [100, 129)
    batch = windowed.train_batch([0, 1, 2])
    assert batch.lengths.tolist() == [50, 50, 29]
    torch.testing.assert_close(batch.first, torch.as_tensor(np.stack([np.zeros(88), piece[49], piece[99]])).float())


def test_a_window_from_the_zero_frame_scores_as_the_start_of_a_piece(float64):
    """The first window of a piece gets the all-zero frame as its first input: the model's start
    frame, so the piece's first window scores exactly as the piece's start does without windows."""
    torch.manual_seed(0)
    objective = build_objective(small_config(model="rnn", input_dim=88))
    pieces = [roll(9, seed=4).astype(np.float64), roll(4, seed=5).astype(np.float64)]
    plain = collate_sequences(pieces).to("cpu", torch.float64)
    started = collate_sequences(pieces, first=[np.zeros(88), np.zeros(88)]).to("cpu", torch.float64)
    shifted = collate_sequences(pieces, first=[np.ones(88), np.zeros(88)]).to("cpu", torch.float64)
    rec = lambda batch: sequence_terms(objective.model, objective.guide, batch)["rec"]  # noqa: E731
    torch.testing.assert_close(rec(started), rec(plain))
    assert not torch.isclose(rec(shifted)[0], rec(plain)[0])  # the first input does reach the score


CORPUS_RECIPES = {"nottingham": "Nottingham.mat", "musedata": "MuseData.mat", "piano": "Piano_midi.mat"}


@needs_mat
@pytest.mark.parametrize("corpus", sorted(CORPUS_RECIPES))
@pytest.mark.parametrize("model, anneal_epochs", [("srnn", 20), ("dmm", 1000)])
def test_corpus_recipes_anneal_the_kl_over_their_papers_epochs_of_this_files_updates(corpus, model, anneal_epochs):
    """SRNN's release anneals over 20 epochs, Pyro's DMM over 1000: the recipe's per-update step
    is 0.8 / (epochs x updates per epoch) with the updates this file and window give."""
    recipe = load_recipe(preset_path(f"{corpus}-{model}"), name=f"{corpus}-{model}")
    assert recipe.options["corpus"] == corpus and recipe.model["model"] == model
    splits = load(MAT / CORPUS_RECIPES[corpus], **recipe.options)
    updates = -(-len(splits.train) // recipe.train["batch_size"])
    assert recipe.train["kl_step"] == pytest.approx(0.8 / (anneal_epochs * updates), rel=2e-3)


@pytest.mark.parametrize("name", ["nottingham-srnn", "piano-dmm"])
def test_a_corpus_recipe_trains_on_a_mat_file_named_after_its_corpus(tmp_path, name):
    path = write_mat(tmp_path / CORPUS_RECIPES[name.split("-")[0]],
                     traindata=cells(roll(130), roll(40, seed=1), roll(7, seed=2)))
    run = tmp_path / "run"
    assert main(["--preset", name, "--data-dir", str(path), "--rnn-dim", "6", "--z-dim", "2", "--emb-dim", "4",
                 "--mlp-dim", "5", "--max-steps", "2", "--out", str(run), "--quiet"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["data_config"]["options"] == load_recipe(preset_path(name)).options
    corpus = name.split("-")[0]
    assert config["data_info"]["extra"]["corpus"] == corpus and config["model_config"]["model"] == name.split("-")[1]
    window = load_recipe(preset_path(name)).options.get("window")
    assert config["data_info"]["extra"]["window"] == window  # srnn: 100-step windows; dmm: whole pieces
