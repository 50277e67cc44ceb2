"""Recipes (--preset/--config): every shipped recipe trains on its dataset's real file format,
flags typed on the command line win, config.json records the resolved values, bad recipes
are one-line errors; TIMIT stream chunking against a hand-made stream."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from pyro_zforcing.cli.main import main as zforcing
from pyro_zforcing.cli.flags import resolve_settings
from pyro_zforcing.cli.study import ablate_parser
from pyro_zforcing.data import load_dataset
from pyro_zforcing.training.recipes import apply_recipe, load_recipe, preset_names, preset_path
from test_cli import run_cli
from test_data_builders import config
from test_data_mnist import _amat_tree
from test_data_text import _aclimdb

TINY = ["--rnn-dim", "6", "--z-dim", "2", "--emb-dim", "4", "--mlp-dim", "5"]
# Skipped only off CI where sox is missing; under CI (.ci/run installs sox) a missing sox fails the test.
requires_sox = pytest.mark.skipif(shutil.which("sox") is None and not os.environ.get("CI"),
                                  reason="sox is not installed (apt-get install sox; .ci/run installs it)")


def sox_sphere(path: Path, seconds: float, *synth: str) -> Path:
    """A 16 kHz 16-bit NIST SPHERE file synthesised by sox."""
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["sox", "-n", "-r", "16000", "-b", "16", "-c", "1", "-t", "sph", str(path), "synth", str(seconds), *synth],
                   check=True, capture_output=True)
    return path


def sox_timit(root: Path, *, train=((0.6, 0.4567), (0.5, 0.7), (0.4, 0.55)), test=(0.3, 0.55, 1.1625)) -> Path:
    """TRAIN/DR1/<SPEAKER>/*.WAV and TEST/DR1/MTST0/*.WAV of sox-made SPHERE tones and noise."""
    for s, durations in enumerate(train):
        for u, seconds in enumerate(durations):
            sox_sphere(root / "TRAIN" / f"DR{1 + s % 2}" / f"FSPK{s}" / f"SX{u}.WAV", seconds,
                       "sine", str(220 + 110 * s + 40 * u), "pinknoise", "vol", "0.4")
    for u, seconds in enumerate(test):
        sox_sphere(root / "TEST" / "DR1" / "MTST0" / f"SI{u}.WAV", seconds, "sine", str(300 + 50 * u),
                   "whitenoise", "vol", "0.3")
    return root


def fixture_for(dataset: str, root: Path) -> Path:
    """A tiny corpus of ``dataset`` in its real format under ``root``."""
    if dataset == "timit":
        return sox_timit(root)
    if dataset == "blizzard":
        rng = np.random.default_rng(0)
        for i in range(4):  # 16-bit WAV, 1.1 s: two 40-frame chunks each
            t = np.arange(17600) / 16000
            signal = 0.3 * np.sin(2 * np.pi * (150 + 30 * i) * t) + 0.05 * rng.standard_normal(len(t))
            soundfile.write(str(root / f"book{i}.wav"), signal, 16000, subtype="PCM_16")
        return root
    if dataset == "mnist":
        _amat_tree(root)
        return root
    if dataset == "imdb":
        _aclimdb(root)
        return root
    if dataset == "text":  # a fortune file: entries between % lines, one or more sentences each
        entries = ["The cat sat on the mat. It was red!", "A dog ran far away.", "Dogs and cats ran.",
                   "Is the mat red? It is.", "The dog sat."] * 4
        (root / "fortunes").write_text("\n%\n".join(entries) + "\n", encoding="utf-8")
        return root
    raise AssertionError(dataset)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_presets_ship_one_recipe_per_experiment_with_a_source_for_every_value():
    assert preset_names() == ["blizzard", "fortunes", "imdb", "jsb-dmm", "jsb-rnn", "jsb-srnn", "jsb-storn", "jsb-vrnn",
                              "jsb-zforcing", "jsb-zforcing-noaux", "mnist", "musedata-dmm", "musedata-srnn",
                              "nottingham-dmm", "nottingham-srnn", "piano-dmm", "piano-srnn", "timit"]
    for name in preset_names():
        for line in preset_path(name).read_text().splitlines():
            code = line.split("#", 1)[0].strip()
            if code and not code.startswith("["):
                assert "#" in line and line.split("#", 1)[1].strip(), f"{name}: no source for {line!r}"


@requires_sox
@pytest.mark.parametrize("name", ["timit", "blizzard", "mnist", "imdb", "fortunes"])
def test_every_preset_resolves_and_trains_one_step_on_its_real_format(tmp_path, name):
    recipe = load_recipe(preset_path(name))
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    fixture_for(recipe.dataset, data_dir)
    out = tmp_path / "run"
    short = ["--data-option", "rows=true"] if name == "mnist" else []  # 28 steps of 28 pixels: a fast test
    code = zforcing(["--preset", name, "--data-dir", str(data_dir), "--cache-dir", str(tmp_path / "cache"),
                     *TINY, *short, "--max-steps", "1", "--out", str(out), "--quiet"])
    assert code == 0
    saved = read_json(out / "config.json")
    assert saved["recipe"] == {"name": name, "file": str(preset_path(name)), "dataset": recipe.dataset}
    assert saved["data_config"]["dataset"] == recipe.dataset
    for key, value in recipe.train.items():  # every recipe value not typed on the command line
        assert saved["train_config"][key] == value, key
    for key, value in recipe.model.items():
        if f"--{key.replace('_', '-')}" not in TINY:
            assert saved["model_config"][key] == value, key
    assert {k: saved["model_config"][k] for k in ("rnn_dim", "z_dim", "emb_dim", "mlp_dim")} == \
        {"rnn_dim": 6, "z_dim": 2, "emb_dim": 4, "mlp_dim": 5}
    for key, value in recipe.options.items():
        assert saved["data_config"]["options"][key] == value, key
    assert saved["data_config"]["seed"] == saved["train_config"]["seed"] == 1234
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in steps if r["kind"] == "step")
    assert first["step"] == 1 and np.isfinite(first["loss"])
    assert first["kl_weight"] == pytest.approx(recipe.train["kl_start"])  # 0.2 (the authors' KL annealing) but fortunes


@requires_sox
def test_typed_flags_beat_the_recipe_even_at_their_default_value_and_config_json_records_them(tmp_path):
    data_dir = sox_timit(tmp_path / "timit")
    out = tmp_path / "run"
    code = zforcing(["--preset", "timit", "--data-dir", str(data_dir), "--cache-dir", str(tmp_path / "cache"),
                     *TINY, "--epochs", "20", "--lr", "0.01", "--aux-weight", "0.3", "--patience", "7",
                     "--data-option", "stream=false", "--seed", "5", "--max-steps", "1", "--out", str(out), "--quiet"])
    assert code == 0
    saved = read_json(out / "config.json")
    train = saved["train_config"]
    assert train["epochs"] == 20  # the dataclass default typed explicitly still beats the recipe's 100
    assert (train["lr"], train["aux_start"], train["aux_end"], train["early_stop_patience"], train["seed"]) == \
        (0.01, 0.3, 0.3, 7, 5)
    assert (train["kl_start"], train["kl_step"], train["batch_size"], train["lr_patience"]) == (0.2, 5e-5, 32, 100)
    assert saved["data_config"]["options"]["stream"] is False
    assert saved["data_config"]["options"]["chunk_frames"] == 40
    assert saved["data_config"]["seed"] == 5


def test_user_config_file_sets_fields_and_options(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('dataset = "digits"  # the embedded digits\n[train]\nlr = 0.002\nkl_start = 0.5\n'
                    '[model]\nrnn_dim = 9\n[data]\nthreshold = 4\n')
    out = tmp_path / "run"
    assert zforcing(["--config", str(path), "--max-steps", "1", "--z-dim", "3", "--out", str(out), "--quiet"]) == 0
    saved = read_json(out / "config.json")
    assert saved["recipe"]["name"] == "mine" and saved["recipe"]["file"] == str(path.resolve())
    assert (saved["train_config"]["lr"], saved["train_config"]["kl_start"]) == (0.002, 0.5)
    assert (saved["model_config"]["rnn_dim"], saved["model_config"]["z_dim"]) == (9, 3)
    assert saved["data_config"]["options"] == {"threshold": 4}


def test_apply_recipe_merges_options_per_key_with_typed_options_winning(tmp_path):
    from pyro_zforcing.config import DataConfig, TrainConfig

    recipe = load_recipe(preset_path("timit"))
    model, train, data = apply_recipe(recipe, model={"rnn_dim": 3}, train=TrainConfig(lr=0.5),
                                      data=DataConfig(dataset="timit", options={"chunk_frames": 8}),
                                      given={"rnn_dim", "lr"})
    assert model["rnn_dim"] == 3 and model["z_dim"] == 256 and train.lr == 0.5 and train.kl_start == 0.2
    assert data.options["chunk_frames"] == 8 and data.options["stream"] is True


BAD_RECIPES = [
    ('dataset = "digits"\n[train]\nlearning_rate = 0.1\n', [], ["learning_rate", "mine.toml"]),
    ('dataset = "digits"\n[model]\nwidth = 3\n', [], ["width", "mine.toml"]),
    ('dataset = "digits"\nepochs = 3\n', [], ["epochs", "mine.toml"]),
    ('[train]\nlr = 0.1\n', [], ["dataset", "mine.toml"]),
    ('dataset = "digits"\n[train\n', [], ["mine.toml", "TOML"]),
    ('dataset = "digits"\n[train]\nlr = -1.0\n', [], ["lr must be > 0", "mine.toml"]),
    (None, ["--preset", "nope"], ["nope", "timit"]),
    (None, ["--preset", "timit", "--dataset", "mnist"], ["timit", "mnist"]),
    (None, ["--config", "/nonexistent/r.toml"], ["/nonexistent/r.toml"]),
    (None, ["--preset", "timit", "--config", "x.toml"], ["--preset", "--config"]),
]


def bad_recipe_args(tmp_path, recipe_text, args):
    if recipe_text is None:
        return args
    (tmp_path / "mine.toml").write_text(recipe_text)
    return ["--config", str(tmp_path / "mine.toml")]


@pytest.mark.parametrize("recipe_text,args,needles", BAD_RECIPES)
def test_bad_recipes_are_a_one_line_error_and_exit_2(tmp_path, capsys, recipe_text, args, needles):
    args = bad_recipe_args(tmp_path, recipe_text, args)
    assert zforcing([*args, "--max-steps", "1", "--quiet", "--out", str(tmp_path / "run")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0]
    for needle in needles:
        assert needle in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("case", [0, 7])  # an unknown key, a recipe used with another dataset
def test_bad_recipe_from_the_shell_exits_2_with_one_line(tmp_path, case):
    recipe_text, args, needles = BAD_RECIPES[case]
    result = run_cli(*bad_recipe_args(tmp_path, recipe_text, args), "--max-steps", "1", "--quiet",
                     "--out", str(tmp_path / "run"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and all(needle in lines[0] for needle in needles)


def test_ablate_resolves_a_recipe_under_its_study_file_and_flags(tmp_path):
    recipe = tmp_path / "base.toml"
    recipe.write_text('dataset = "digits"  # embedded\n[train]\nkl_start = 0.5\nkl_step = 0.25\nlr = 0.1\n'
                      '[model]\nrnn_dim = 7\nz_dim = 2\n')
    parser = ablate_parser()
    parser.set_defaults(lr=0.2)  # what a --study file's {"lr": 0.2} does
    argv = ["--config", str(recipe), "--z-dim", "3"]
    data, train, model, described = resolve_settings(parser, argv, parser.parse_args(argv))
    assert (train.kl_start, train.kl_step, train.lr) == (0.5, 0.25, 0.2)
    assert (model["rnn_dim"], model["z_dim"]) == (7, 3) and data.dataset == "digits"
    assert described["name"] == "base"


# ----------------------------------------------------------------------------- stream chunking

@requires_sox
def test_timit_stream_chunks_are_one_concatenated_stream_cut_across_utterances(tmp_path):
    root = sox_timit(tmp_path / "timit")
    options = {"stream": True, "chunk_frames": 4, "valid_fraction": 0.0}
    splits = load_dataset(config("timit", root, tmp_path, options=options))
    # by hand: every training file (speakers and utterances in sorted order) read by libsndfile
    paths = sorted((root / "TRAIN").rglob("*.WAV"))  # region, speaker, utterance: the loader's order
    stream = np.concatenate([soundfile.read(str(p), dtype="int16")[0] / 32768.0 for p in paths])
    frames = stream[: len(stream) // 200 * 200].reshape(-1, 200)
    mean, std = frames.mean(), frames.std()
    assert splits.info.mean == pytest.approx(mean, rel=1e-6) and splits.info.std == pytest.approx(std, rel=1e-6)
    count = (len(frames) - 1) // 4
    assert len(splits.train) == count
    expected = (frames[1: 1 + 4 * count] - mean) / std
    np.testing.assert_allclose(np.concatenate(splits.train), expected, atol=1e-5)
    lengths = [soundfile.info(str(p)).frames for p in paths]
    boundaries = np.cumsum(lengths)[:-1]  # in samples; chunk k covers samples [200 + 800 k, 200 + 800 (k + 1))
    assert any((b - 200) % 800 and b < 200 + 800 * count for b in boundaries)  # chunks straddle utterances
    assert splits.info.extra["stream"] is True and splits.info.extra["files"]["train"] == len(paths)
    # each chunk's first input is the frame before it (their inputs are the stream shifted by one frame)
    firsts = (frames[0: 4 * count: 4] - mean) / std
    np.testing.assert_allclose(np.stack(splits.train_first), firsts, atol=1e-5)
    batch = splits.train_batch([2, 0])
    np.testing.assert_allclose(batch.first.numpy(), firsts[[2, 0]], atol=1e-5)
    np.testing.assert_allclose(batch.x[0].numpy(), expected[8:12], atol=1e-5)
    cached = load_dataset(config("timit", root, tmp_path, options=options))  # read back from the cache
    np.testing.assert_array_equal(np.stack(cached.train_first), np.stack(splits.train_first))
    # without stream: per utterance, remainders dropped, every chunk from the start frame
    per_file = load_dataset(config("timit", root, tmp_path, options={**options, "stream": False}))
    assert len(per_file.train) == sum(n // 200 // 4 for n in lengths)
    assert per_file.train_first is None and per_file.train_batch([0]).first is None


def test_training_batches_start_from_the_recorded_first_inputs(tmp_path, monkeypatch):
    """The trainer feeds each training sequence's first input (Batch.first) to the objective."""
    from pyro_zforcing.config import DataConfig, TrainConfig
    from pyro_zforcing.data import SequenceSplits
    from pyro_zforcing.data.base import DataInfo
    from pyro_zforcing.infer import Objective
    from pyro_zforcing.training.trainer import Trainer

    rng = np.random.default_rng(0)
    train = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(6)]
    firsts = [np.full(3, 10.0 + i, np.float32) for i in range(6)]
    splits = SequenceSplits(DataInfo(name="timit", emission="gaussian", dim=3, unit="sample", units_per_step=3),
                            train, train[:2], train[:2], train_first=firsts)
    seen = []
    forward = Objective.forward
    monkeypatch.setattr(Objective, "forward", lambda self, batch, *a: (seen.append(batch), forward(self, batch, *a))[1])
    trainer = Trainer.create(data_config=DataConfig(dataset="timit"), train_config=TrainConfig(batch_size=2, max_steps=3),
                             out_dir=tmp_path / "run", model_sizes={"emb_dim": 3, "rnn_dim": 4, "z_dim": 2, "mlp_dim": 3},
                             splits=splits, quiet=True)
    trainer.fit()
    assert len(seen) == 3
    for batch in seen:
        for x, first in zip(batch.x, batch.first):
            index = next(i for i, t in enumerate(train) if np.array_equal(t, x.numpy()))
            np.testing.assert_array_equal(first.numpy(), firsts[index])


@pytest.mark.parametrize("frames,length,expected", [(9, 4, 2), (8, 4, 1), (5, 4, 1), (4, 4, 0)])
def test_stream_chunks_skip_the_first_frame_start_from_the_frame_before_and_drop_the_tail(frames, length, expected):
    from pyro_zforcing.data.speech import stream_chunks

    data = np.arange(frames, dtype=np.float32)[:, None]
    chunks, firsts = stream_chunks(data, length)
    assert len(chunks) == len(firsts) == expected
    for k, (chunk, first) in enumerate(zip(chunks, firsts)):
        assert chunk[:, 0].tolist() == list(range(1 + k * length, 1 + (k + 1) * length))
        assert first[0] == k * length  # the frame before the chunk: its first input



def test_aux_anneal_epochs_sets_the_step_from_the_runs_batches_per_epoch(tmp_path):
    from pyro_zforcing.config import TrainConfig
    from pyro_zforcing.infer import weights_at
    from pyro_zforcing.training.trainer import aux_step_over_epochs

    config = TrainConfig(batch_size=10, aux_start=0.5, aux_end=0.1, aux_anneal_epochs=2.0)
    resolved = aux_step_over_epochs(config, 95)  # 10 batches per epoch (the last one of 5)
    assert resolved.aux_step == pytest.approx(0.4 / 20)
    assert weights_at(resolved, 10).aux == pytest.approx(0.3) and weights_at(resolved, 20).aux == pytest.approx(0.1)
    assert aux_step_over_epochs(TrainConfig(aux_step=0.3), 95).aux_step == 0.3
