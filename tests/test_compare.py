"""Every command per model through the CLI (in process, on a few digits), and `run.py compare`."""

import csv
import json

import numpy as np
import pytest
import torch

from pyro_zforcing.cli.main import main as zforcing
from pyro_zforcing import data
from pyro_zforcing import build
from pyro_zforcing.training import trainer as train
from pyro_zforcing.checkpoint import load_checkpoint
from pyro_zforcing.data import SequenceSplits
from pyro_zforcing.models import MODELS

SIZES = ["--emb-dim", "6", "--rnn-dim", "7", "--z-dim", "3", "--mlp-dim", "5"]
MATCHABLE = ["--emb-dim", "6", "--rnn-dim", "16", "--z-dim", "3", "--mlp-dim", "12"]  # fine enough a grid for 5%


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one intra-op thread (extra threads only spin on a loaded machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_data(digits, monkeypatch):
    splits = SequenceSplits(info=digits.info, train=digits.train[:16], valid=digits.valid[:6], test=digits.test[:5])
    for module in (data, train, build):
        monkeypatch.setattr(module, "load_dataset", lambda config: splits)
    return splits


@pytest.mark.parametrize("model", ["rnn", "vrnn", "srnn"])
def test_train_resume_evaluate_sample_and_plot_work_for_every_model(tmp_path, tiny_data, capsys, model):
    out = tmp_path / model
    assert zforcing(["--model", model, *SIZES, "--batch-size", "8", "--max-steps", "2", "--epochs", "3",
                     "--out", str(out), "--quiet"]) == 0
    assert zforcing(["--resume", str(out), "--max-steps", "3", "--quiet"]) == 0
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["model_config"].model == model and state["progress"]["step"] == 3
    assert state["train_config"].guide == {"rnn": "exact", "vrnn": "filtering", "srnn": "smoothing"}[model]
    assert zforcing(["evaluate", "--checkpoint", str(out / "checkpoints" / "last.pt"), "--iwae-samples", "3",
                     "--quiet"]) == 0
    report = json.loads((out / "eval-test.json").read_text())
    means = report["per_sequence_mean"]
    assert report["exact_likelihood"] == (model == "rnn")
    if model == "rnn":
        assert means["iwae"] == means["elbo"] and means["kl"] == 0 and "exact log-likelihood" in capsys.readouterr().out
    else:
        assert means["iwae"] >= means["elbo"] and means["kl"] > 0
    assert zforcing(["sample", "--checkpoint", str(out / "checkpoints" / "last.pt"), "-n", "2",
                     "--interpolate", "3", "--quiet"]) == 0
    written = {p.name for p in (out / "samples").iterdir()}
    assert {"samples.png", "primed.png"} <= written
    assert ("interpolation.png" in written) == (model != "rnn")
    assert zforcing(["plot", str(out), "--quiet"]) == 0


def test_compare_matches_parameter_counts_and_writes_the_table(tmp_path, tiny_data, capsys):
    study = tmp_path / "cmp"
    code = zforcing(["compare", "--models", "rnn,vrnn-i,srnn,zforcing", "--match-params", *MATCHABLE, "--seeds", "2",
                     "--max-steps", "2", "--batch-size", "8", "--iwae-samples", "2", "--eval-batch-size", "5", "--jobs", "1",
                     "--study-dir", str(study), "--quiet"])
    assert code == 0
    printed = capsys.readouterr().out
    sizes = json.loads((study / "sizes.json").read_text())
    assert sizes["reference"] == "zforcing" and sizes["sizes"]["zforcing"]["rnn_dim"] == 16
    assert sizes["match"] == "generative"  # a bare --match-params matches p(y, z)
    target = sizes["sizes"]["zforcing"]["matched"]
    rows = list(csv.DictReader((study / "compare.csv").read_text().splitlines()))
    assert [r["variant"] for r in rows] == ["rnn", "vrnn-i", "srnn", "zforcing"]
    for row in rows:
        chosen = sizes["sizes"][row["variant"]]
        assert chosen["matched"] == chosen["generative"] and abs(chosen["matched"] - target) <= 0.05 * target
        assert [int(row[f"params_{role}"]) for role in ("generative", "inference", "training_only")] == \
            [chosen[role] for role in ("generative", "inference", "training_only")]
        assert row["stopped"] == "max_steps 2/2"
        config = json.loads((study / f"{row['variant']}-seed1" / "config.json").read_text())
        assert config["model_config"]["rnn_dim"] == chosen["rnn_dim"]
        assert config["model_config"]["model"] == row["model"]
        assert config["train_config"]["guide"] == MODELS[row["model"]].guides[0]  # each model's own guide
        assert row["seeds"] == "2" and float(row["iwae_mean"]) >= float(row["elbo_mean"]) - 1e-9
    assert json.loads((study / "vrnn-i-seed0" / "config.json").read_text())["model_config"]["prior"] == "standard"
    assert rows[0]["exact"] == "True" and rows[0]["elbo_mean"] == rows[0]["iwae_mean"]
    assert "| rnn* |" in printed and "p(y, z) parameter counts matched to zforcing's" in printed
    assert "budget per run:" in printed and "rnn: up to 500 epochs" in printed  # the study cap, printed first
    assert (study / "compare.png").stat().st_size > 0 and (study / "compare.md").exists()


def test_compare_refuses_an_unknown_model_by_name(tmp_path, capsys):
    assert zforcing(["compare", "--models", "rnn,lstm", "--study-dir", str(tmp_path), "--quiet"]) == 2
    assert "unknown variant(s) lstm" in capsys.readouterr().err


def test_match_to_a_model_not_compared_picks_the_sizes_a_joint_comparison_picks(tiny_data):
    """A study sharded over processes (one model each, all matched to zforcing) trains the sizes
    that one process comparing every model would."""
    from dataclasses import replace

    from pyro_zforcing.studies.ablation import MODEL_VARIANTS, Study
    from pyro_zforcing.studies.compare import match_parameters
    from pyro_zforcing.config import DataConfig, TrainConfig

    base = Study(data=DataConfig(), train=TrainConfig(), model={"emb_dim": 6, "rnn_dim": 16, "z_dim": 3, "mlp_dim": 12},
                 variants={name: MODEL_VARIANTS[name] for name in ("rnn", "srnn", "zforcing")}, seeds=(0,))
    _, joint = match_parameters(base, tiny_data.info, reference="zforcing")
    for name in ("rnn", "srnn"):
        _, alone = match_parameters(replace(base, variants={name: MODEL_VARIANTS[name]}), tiny_data.info,
                                    reference="zforcing")
        assert alone == {name: joint[name]}


def synthetic_results(seeds, *, epochs, seed=0):
    """Study results of three models over ``seeds`` seeds, bounds drawn around negative values."""
    rng = np.random.default_rng(seed)
    results = []
    for variant, centre in (("rnn", -80.0), ("vrnn", -70.0), ("zforcing", -72.0)):
        for s in range(seeds):
            elbo = centre + rng.normal()
            results.append({"variant": variant, "seed": s, "model": variant.split("-")[0], "exact": variant == "rnn",
                            "epochs": epochs, "stopped": "max_steps", "params_generative": 10,
                            "params_inference": 5, "params_training_only": 0,
                            **{f"test_{b}{suffix}": (elbo + (b == "iwae")) / scale
                               for b in ("elbo", "iwae") for suffix, scale in (("", 1), ("_per_step", 64),
                                                                               ("_per_unit", 64))}})
    return results


@pytest.mark.parametrize("seeds,epochs", [(1, 0), (1, 3), (2, 0), (3, 7)])
def test_compare_table_shows_one_seed_alone_and_epochs_only_when_some_run_completed_one(seeds, epochs):
    from pyro_zforcing.data import DataInfo
    from pyro_zforcing.studies.compare import comparison_markdown, comparison_rows

    info = DataInfo(name="digits", emission="bernoulli", dim=1, unit="pixel")
    text = comparison_markdown(comparison_rows(synthetic_results(seeds, epochs=epochs, seed=seeds)), info,
                               iwae_samples=2)
    table = [line for line in text.splitlines() if line.startswith("| ")]
    header, rows = table[0], table[1:]
    assert len(rows) == 3
    assert ("±" in " ".join(rows)) == (seeds > 1)  # never "± 0.00" for one seed
    assert ("| epochs |" in header) == (epochs > 0)
    for row in rows:
        assert row.count("|") == header.count("|")
        if epochs:
            assert f"| {float(epochs):.1f} |" in row


@pytest.mark.parametrize("seeds", [1, 3])
def test_compare_figure_draws_points_with_error_bars_not_bars_from_a_cut_axis(tmp_path, monkeypatch, seeds):
    from pyro_zforcing.data import DataInfo
    from pyro_zforcing.evaluation import plots
    from pyro_zforcing.studies.compare import comparison_rows, plot_comparison

    drawn = {}

    def keep(fig, path, **kwargs):
        drawn["ax"] = fig.axes[0]
        path.write_bytes(b"png")
        return path

    monkeypatch.setattr(plots, "save_figure", keep)
    results = synthetic_results(seeds, epochs=1, seed=seeds)
    info = DataInfo(name="digits", emission="bernoulli", dim=1, unit="pixel")
    plot_comparison(comparison_rows(results), results, info, tmp_path / "compare.png")
    ax = drawn["ax"]
    assert not [p for p in ax.patches if p.get_height() != 0]  # no bars
    low, high = ax.get_ylim()
    values = [r[f"test_{b}_per_step"] for r in results for b in ("elbo", "iwae")]
    assert low < min(values) and max(values) < high  # every seed's value inside the axis


def test_compare_help_offers_models_not_the_ablation_variants(capsys):
    assert zforcing(["compare", "--help"]) == 0
    text = capsys.readouterr().out
    assert "--models" in text and "--variants" not in text and "no-aux,aux,kla" not in text
