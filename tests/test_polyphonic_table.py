"""The polyphonic-music table as commands: the jsb recipes, compare --presets, train + evaluate per time step,
and the schedule defaults that wait out a plateau."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_zforcing.build import build_objective, model_config_for
from pyro_zforcing.cli.main import main
from pyro_zforcing.config import DataConfig, TrainConfig
from pyro_zforcing.data import load_dataset
from pyro_zforcing.data.base import DataInfo
from pyro_zforcing.evaluation.bounds import SplitResult, markdown_table
from pyro_zforcing.training import trainer as train
from pyro_zforcing.training.recipes import PRESET_DIR, load_recipe, preset_path
from pyro_zforcing.training.trainer import Trainer

from test_data_polyphonic import JSB, needs_jsb

JSB_PRESETS = sorted(p.stem for p in PRESET_DIR.glob("jsb-*.toml"))
PIANO = DataInfo(name="polyphonic-jsb", emission="bernoulli", dim=88, unit="time step",
                 extra={"sequence_unit": "chorale"})


@pytest.fixture
def tiny_jsb(tmp_path):
    """Six / three / three chorales of twelve steps each, from the shared file, or made up without it."""
    if JSB.is_file():
        data = json.loads(JSB.read_text())
    else:
        rng = np.random.default_rng(0)
        data = {name: [[sorted(rng.choice(range(48, 80), 3, replace=False).tolist()) for _ in range(16)]
                       for _ in range(6)] for name in ("train", "valid", "test")}
    small = {name: [piece[:12] for piece in data[name][:count]] for name, count in (("train", 6), ("valid", 3), ("test", 3))}
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(small))
    return path


def test_every_jsb_recipe_has_the_models_and_a_source_for_each_value():
    assert set(JSB_PRESETS) == {"jsb-dmm", "jsb-rnn", "jsb-srnn", "jsb-storn", "jsb-vrnn", "jsb-zforcing",
                                "jsb-zforcing-noaux"}
    for name in JSB_PRESETS:
        recipe = load_recipe(preset_path(name), name=name)
        assert recipe.dataset == "polyphonic" and recipe.options == {"corpus": "jsb"}
        text = preset_path(name).read_text()
        for line in text.splitlines():
            if re.match(r"^\w+ = ", line):
                assert "#" in line, f"{name}: {line!r} carries no source"
        assert "KL" in text.split("dataset =")[0], f"{name}: the header names no KL estimator"
        objective = build_objective(model_config_for(PIANO, **recipe.model), recipe.train.get("guide"))
        assert objective.model.name == recipe.model["model"]
        TrainConfig(**recipe.train)  # every training value is valid


def test_compare_presets_runs_the_table_with_each_recipe_and_typed_flags_over_all(tmp_path, tiny_jsb, capsys):
    study = tmp_path / "table"
    code = main(["compare", "--presets", "jsb-rnn,jsb-dmm", "--data-dir", str(tiny_jsb), "--epochs", "1",
                 "--seeds", "1", "--iwae-samples", "2", "--rnn-dim", "12", "--mlp-dim", "6", "--emb-dim", "5",
                 "--z-dim", "3", "--study-dir", str(study), "--quiet"])
    assert code == 0
    table = (study / "compare.md").read_text()
    assert "| jsb-rnn* |" in table and "| jsb-dmm |" in table and "ELBO / time step" in table
    dmm = json.loads((study / "jsb-dmm-seed0" / "config.json").read_text())
    rnn = json.loads((study / "jsb-rnn-seed0" / "config.json").read_text())
    # each model keeps its recipe: Pyro's DMM settings, the RNN's batch size ...
    assert (dmm["model_config"]["model"], dmm["train_config"]["guide"], dmm["model_config"]["init"]) == \
        ("dmm", "combiner", "torch")
    assert (dmm["train_config"]["lr"], dmm["train_config"]["batch_size"], dmm["train_config"]["kl_step"]) == \
        (0.0003, 20, 0.0000667)
    assert (rnn["model_config"]["model"], rnn["train_config"]["guide"], rnn["train_config"]["batch_size"]) == \
        ("rnn", "exact", 16)
    # ... and what was typed beats every recipe
    for config in (dmm, rnn):
        assert config["model_config"]["rnn_dim"] == 12 and config["train_config"]["epochs"] == 1
        assert config["data_config"]["dataset"] == "polyphonic" and config["data_config"]["options"] == {"corpus": "jsb"}
    result = json.loads((study / "jsb-dmm-seed0" / "result.json").read_text())
    assert math.isfinite(result["test_elbo_per_step"]) and result["test_iwae_per_step"] >= result["test_elbo_per_step"] - 5


def test_a_recipe_without_a_guide_trains_its_model_with_the_model_s_guide(tmp_path, tiny_jsb):
    run = tmp_path / "rnn"
    assert main(["--preset", "jsb-rnn", "--data-dir", str(tiny_jsb), "--max-steps", "1", "--rnn-dim", "8",
                 "--emb-dim", "4", "--out", str(run), "--quiet"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["model_config"]["model"], config["train_config"]["guide"]) == ("rnn", "exact")


def test_compare_presets_refuses_mixed_datasets_and_models_with_presets(tmp_path, tiny_jsb, capsys):
    assert main(["compare", "--presets", "jsb-rnn,timit", "--data-dir", str(tiny_jsb), "--study-dir",
                 str(tmp_path / "s"), "--quiet"]) == 2
    assert "recipes 'jsb-rnn' and 'timit' read different data" in capsys.readouterr().err
    assert main(["compare", "--presets", "jsb-rnn", "--models", "rnn", "--data-dir", str(tiny_jsb),
                 "--study-dir", str(tmp_path / "s2"), "--quiet"]) == 2
    assert "--presets or --models, not both" in capsys.readouterr().err


@needs_jsb
def test_train_with_the_srnn_recipe_then_evaluate_reports_nats_per_time_step(tmp_path, capsys):
    run = tmp_path / "srnn"
    assert main(["--preset", "jsb-srnn", "--data-dir", str(JSB), "--max-steps", "2", "--out", str(run), "--quiet"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert (config["model_config"]["model"], config["model_config"]["rnn_dim"], config["train_config"]["guide"]) == \
        ("srnn", 300, "smoothing")
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(run), "--iwae-samples", "2", "--no-plots", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "nats / time step" in printed and "nats / chorale" in printed
    report = json.loads((run / "eval-test.json").read_text())
    assert report["num_sequences"] == 77 and report["units"]["unit"] == "time step"
    steps = sum(report["per_sequence"]["lengths"])
    assert steps == 4725
    assert report["per_unit"]["elbo"] == pytest.approx(sum(report["per_sequence"]["elbo"]) / steps)


def test_per_step_figures_divide_totals_and_the_tsbn_mean_weighs_sequences_equally():
    lengths = np.array([10, 30])
    values = {key: np.array([-20.0, -30.0]) for key in ("elbo", "iwae", "kl", "rec")}
    result = SplitResult(**values, lengths=lengths, units=lengths, kl_steps=[], num_samples=1, info=PIANO)
    assert result.per_step()["elbo"] == pytest.approx(-50.0 / 40)  # the DMM paper's and Pyro's
    assert result.per_step_sequence_mean()["elbo"] == pytest.approx((-2.0 - 1.0) / 2)  # TSBN's
    text = markdown_table(result.to_dict())
    assert "nats / time step" in text and "TSBN's convention) is ELBO -1.5000" in text


def flat_run(tmp_path, data_file, monkeypatch, config):
    """A small Z-Forcing trained on ``data_file`` with ``config`` while the validation bound never moves."""
    flat = {"elbo": -30.0, "rec": -29.0, "kl": 1.0, "elbo_per_unit": -0.5}
    monkeypatch.setattr(train, "evaluate_elbo", lambda *args, **kwargs: dict(flat))
    data = DataConfig(dataset="polyphonic", data_dir=str(data_file))
    splits = load_dataset(data)
    trainer = Trainer.create(data_config=data, train_config=config, out_dir=tmp_path / "run", quiet=True,
                             splits=splits, model_sizes=dict(rnn_dim=6, emb_dim=4, z_dim=2, mlp_dim=4))
    trainer.fit()
    return trainer, splits


def epoch_records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"epoch"' in line
            and json.loads(line)["kind"] == "epoch"]


def test_no_rate_drop_and_no_early_stop_before_min_epochs(tmp_path, tiny_jsb, monkeypatch):
    config = TrainConfig(batch_size=3, epochs=20, lr_patience=1, early_stop_patience=2, min_epochs=6)
    trainer, _ = flat_run(tmp_path, tiny_jsb, monkeypatch, config)
    records = epoch_records(tmp_path / "run")
    assert trainer.progress.early_stopped and trainer.progress.epoch == 6  # flat since epoch 1, stopped at 6
    assert {r["lr"] for r in records if r["epoch"] <= 6} == {config.lr}  # the first scheduler step sees a new best


def test_defaults_wait_out_a_plateau_of_tens_of_epochs():
    defaults = TrainConfig()
    assert defaults.min_epochs >= 50 and defaults.early_stop_patience >= 20 and defaults.lr_patience >= 10
    assert defaults.epochs == 20  # the embedded default run stays quick


def test_a_rate_decay_of_one_keeps_the_rate_and_resumes(tmp_path, tiny_jsb, monkeypatch):
    config = TrainConfig(batch_size=3, epochs=3, lr_decay=1.0, lr_patience=1, min_epochs=0)
    _, splits = flat_run(tmp_path, tiny_jsb, monkeypatch, config)
    resumed = Trainer.resume(tmp_path / "run", quiet=True, splits=splits, epochs=5)
    resumed.fit()
    assert {r["lr"] for r in epoch_records(tmp_path / "run")} == {config.lr}
    assert resumed.progress.epoch == 5


@needs_jsb
def test_the_code_of_docs_polyphonic_runs_and_prints_the_independent_bernoulli_floor(capsys, monkeypatch):
    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # the page's paths are relative to the repository
    blocks = re.findall(r"```python\n(.*?)```", (root / "docs" / "polyphonic.md").read_text(), re.S)
    assert blocks
    for code in blocks:
        exec(compile(code, "docs/polyphonic.md", "exec"), {"__name__": "docs_example"})
    assert capsys.readouterr().out.split() == ["-11.06"]


@pytest.mark.parametrize("model", ["rnn", "srnn"])
def test_the_srnn_convention_figure_scores_the_targets_after_each_first_frame(tmp_path, tiny_jsb, model):
    from benchmarks.srnn_test_figure import test_figure as srnn_figure
    from pyro_zforcing import infer
    from pyro_zforcing.checkpoint import load_checkpoint
    from pyro_zforcing.data.base import collate_sequences

    assert main(["--dataset", "polyphonic", "--data-dir", str(tiny_jsb), "--model", model, "--epochs", "1",
                 "--rnn-dim", "6", "--emb-dim", "4", "--z-dim", "2", "--mlp-dim", "4", "--batch-size", "3",
                 "--out", str(tmp_path / "run"), "--quiet"]) == 0
    figure = srnn_figure(str(tmp_path / "run"))
    test = load_dataset(DataConfig(dataset="polyphonic", data_dir=str(tiny_jsb))).test
    assert figure["pieces"] == 3
    assert figure["total_over_total"] <= 0 and figure["srnn_convention"] <= 0
    if model == "rnn":  # no latents: log p(x_0..x_L) - log p(x_0), each scored as a whole sequence, over L
        state = load_checkpoint(tmp_path / "run")
        objective = build_objective(state["model_config"], state["train_config"].guide)
        objective.load_state_dict(state["objective"])

        def exact(pieces):
            terms = infer.sequence_terms(objective.model, objective.guide, collate_sequences(pieces))
            return terms["elbo"].detach().double()

        targets = (exact(test) - exact([p[:1] for p in test])) / torch.tensor([len(p) - 1 for p in test]).double()
        assert figure["srnn_convention"] == pytest.approx(float(targets.mean()), abs=1e-6)
    again = srnn_figure(str(tmp_path / "run"))
    assert again == figure  # seeded
