"""The ablation study runner: variants, resumable runs, reports, and the active-units statistic."""

import csv
import json

import numpy as np
import pytest
import torch

from pyro_zforcing.cli.main import main as zforcing
from pyro_zforcing.studies import ablation
from pyro_zforcing.evaluation.latents import active_units
from pyro_zforcing.studies.ablation import Study, markdown, mean_std, run_study, select_variants
from pyro_zforcing.config import DataConfig, TrainConfig
from pyro_zforcing.data import SequenceSplits
from pyro_zforcing.guides import TrajectoryGuide
from pyro_zforcing.infer import Objective
from pyro_zforcing.models import ZForcing

from conftest import small_config

SIZES = dict(emb_dim=6, rnn_dim=7, z_dim=3, mlp_dim=5)


@pytest.fixture
def tiny_splits(digits):
    return SequenceSplits(info=digits.info, train=digits.train[:24], valid=digits.valid[:8],
                          test=digits.test[:6])


def tiny_study(variants, seeds=(0, 1), **train):
    values = dict(batch_size=8, epochs=2, log_every=1)
    values.update(train)
    return Study(data=DataConfig(), train=TrainConfig(**values), model=SIZES,
                 variants=select_variants(variants), seeds=seeds, iwae_samples=3, eval_batch_size=4,
                 active_particles=2)


def test_study_trains_every_variant_and_seed_and_writes_reports(tmp_path, tiny_splits):
    study = tiny_study(["aux", "prior"])
    results = run_study(study, tmp_path, splits=tiny_splits)
    assert [(r["variant"], r["seed"]) for r in results] == [("aux", 0), ("aux", 1), ("prior", 0), ("prior", 1)]
    for r in results:
        assert r["steps"] == 6  # 2 epochs of 3 batches
        assert r["test_iwae"] >= r["test_elbo"] - 1e-9  # same particles: logmeanexp >= mean
        assert np.isfinite([r["test_elbo"], r["test_kl"], r["test_aux"]]).all()
        if r["variant"] == "prior":  # KL is 0 for every sequence: no rank correlation
            assert r["gap_kl_spearman"] is None
        else:
            assert -1.0 <= r["gap_kl_spearman"] <= 1.0
        saved = json.loads((tmp_path / f"{r['variant']}-seed{r['seed']}" / "config.json").read_text())
        assert saved["train_config"]["seed"] == r["seed"]
        assert saved["train_config"]["guide"] == ("prior" if r["variant"] == "prior" else "backward")
        assert saved["data_config"]["seed"] == 0  # same data for every run
    prior = [r for r in results if r["variant"] == "prior"]
    assert all(abs(r["test_kl"]) < 1e-5 and r["active_units"] == 0 for r in prior)
    rows = list(csv.DictReader((tmp_path / "study.csv").read_text().splitlines()))
    assert len(rows) == 4 and rows[0]["variant"] == "aux"
    table = (tmp_path / "study.md").read_text()
    assert "| aux |" in table and "| prior |" in table
    assert (tmp_path / "study.png").stat().st_size > 0


def test_each_run_records_how_it_stopped(tmp_path, tiny_splits):
    results = run_study(tiny_study(["aux"], seeds=(0,)), tmp_path, splits=tiny_splits)
    assert results[0]["stopped"] == "epochs" and results[0]["epochs"] == 2  # the cap of 2 epochs
    assert "| aux |" in (tmp_path / "study.md").read_text() and "epochs 1/1" in (tmp_path / "study.md").read_text()

    class Ended:  # what how_it_stopped reads of a trainer
        def __init__(self, early, step, max_steps):
            self.progress = type("P", (), {"early_stopped": early, "step": step})()
            self.config = TrainConfig(max_steps=max_steps)

    assert ablation.how_it_stopped(Ended(True, 30, None)) == "early"
    assert ablation.how_it_stopped(Ended(False, 30, 30)) == "max_steps"
    assert ablation.how_it_stopped(Ended(False, 29, 30)) == "epochs"


def test_second_invocation_trains_nothing(tmp_path, tiny_splits, monkeypatch):
    study = tiny_study(["no-aux"], seeds=(0,))
    first = run_study(study, tmp_path, splits=tiny_splits)

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(ablation.Trainer, "create", refuse)
    monkeypatch.setattr(ablation.Trainer, "resume", refuse)
    assert run_study(study, tmp_path, splits=tiny_splits) == first


def test_interrupted_run_resumes_from_its_checkpoint(tmp_path, tiny_splits, monkeypatch):
    study = tiny_study(["no-aux"], seeds=(0,))
    run_study(study, tmp_path, splits=tiny_splits)
    (tmp_path / "no-aux-seed0" / "result.json").unlink()  # as if killed during evaluation
    calls = []
    monkeypatch.setattr(ablation.Trainer, "create", lambda *a, **k: calls.append("create"))
    result = run_study(study, tmp_path, splits=tiny_splits)[0]
    assert calls == [] and result["steps"] == 6


def test_changed_settings_in_an_existing_study_dir_are_refused(tmp_path, tiny_splits):
    run_study(tiny_study(["no-aux"], seeds=(0,)), tmp_path, splits=tiny_splits)
    with pytest.raises(ValueError, match="no-aux-seed0.*other settings"):
        run_study(tiny_study(["no-aux"], seeds=(0,), lr=0.01), tmp_path, splits=tiny_splits)


@pytest.mark.parametrize("added", [("model_config", "first_prior"), ("model_config", "nade_hidden"),
                                   ("model_config", "made_hidden"), ("model_config", "frame_rnn_hidden"),
                                   ("train_config", "word_dropout")])
def test_a_run_saved_before_a_defaulted_field_existed_is_continued(tmp_path, tiny_splits, added):
    """A run directory whose config.json predates a field added with a default that keeps the
    earlier behaviour is the same run: the study continues it instead of refusing it."""
    import dataclasses

    from pyro_zforcing.config import ModelConfig

    study = tiny_study(["no-aux"], seeds=(0,))
    defaults = {name: getattr(ModelConfig(input_dim=1), name) for name in ("first_prior", "nade_hidden", "made_hidden",
                                                                                 "frame_rnn_hidden")}
    study = dataclasses.replace(study, model={**study.model, **defaults})  # every size, as the command line gives
    first = run_study(study, tmp_path, splits=tiny_splits)
    path = tmp_path / "no-aux-seed0" / "config.json"
    saved = json.loads(path.read_text())
    section, name = added
    del saved[section][name]
    path.write_text(json.dumps(saved))
    assert run_study(study, tmp_path, splits=tiny_splits) == first


@pytest.mark.parametrize("change", [{"model": {"rnn_dim": 40}}, {"lr": 0.01}, {"model": {"z_dim": 5}}])
def test_a_refused_study_changes_nothing_in_its_directory(tmp_path, tiny_splits, change):
    """`ablate --rnn-dim 40` on a study built with other sizes is refused, and study.json (every
    file) stays as it was; generated variants change a size or a training setting."""
    import dataclasses

    run_study(tiny_study(["no-aux"], seeds=(0,)), tmp_path, splits=tiny_splits)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    changed = tiny_study(["no-aux"], seeds=(0,), **{k: v for k, v in change.items() if k != "model"})
    if "model" in change:
        changed = dataclasses.replace(changed, model={**changed.model, **change["model"]})
    with pytest.raises(ValueError, match="no-aux-seed0.*other settings"):
        run_study(changed, tmp_path, splits=tiny_splits)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_variant_overrides_reach_the_configs():
    study = tiny_study(["kla", "aux-z", "future-only", "aux-1e-2"])
    train, model = study.configs("kla", 4)
    assert (train.seed, train.aux_start, train.aux_end, train.kl_start, train.kl_step) == (4, 0.0, 0.0, 0.2, 0.004)
    assert study.configs("aux-z", 0)[1]["aux_input"] == "z"
    assert study.configs("future-only", 0)[0].guide == "future-only"
    assert study.configs("aux-1e-2", 0)[0].aux_start == study.configs("aux-1e-2", 0)[0].aux_end == 1e-2


def test_unknown_variants_and_settings_are_named():
    with pytest.raises(ValueError, match="unknown variant.*bogus.*known:.*no-aux"):
        select_variants(["aux", "bogus"])
    with pytest.raises(ValueError, match="variant 'x'.*unknown settings.*'lr_typo'"):
        select_variants(["x"], {"x": {"lr_typo": 1}})


def test_mean_std_uses_the_sample_standard_deviation():
    assert mean_std([1.0, 2.0, 3.0]) == "2.00 ± 1.00"
    assert mean_std([5.0]) == "5.00"  # one run has no spread to show, not a spread of 0


def test_markdown_table_has_one_row_per_variant(digits):
    results = [{"variant": v, "seed": s, "test_elbo": -1.0 - s, "test_iwae": -0.5 + (v == "b") * (s + 1), "test_gap": 0.5 + s,
                "test_kl": 1.0, "test_kl_per_step": 0.1, "test_aux": -3.0, "active_units": 2 + s, "epochs": 10 + s,
                "stopped": "early" if v == "a" or s == 0 else "epochs", **({"test_mi": 0.2 + 0.1 * s} if v == "a" else {})}
               for v in ("a", "b") for s in (0, 1)]
    table = markdown(results, digits.info, iwae_samples=25)
    rows = [line for line in table.splitlines() if line.startswith("| a") or line.startswith("| b")]
    assert rows[0] == ("| a | -1.50 ± 0.71 | -0.50 ± 0.00 | 1.00 ± 0.71 | 1.00 ± 0.00 | 0.100 ± 0.000 | 0.250 ± 0.071 "
                       "| -3.00 ± 0.00 | 2.5 ± 0.7 | 10.5 ± 0.7 | early 2/2 |  |")
    assert "| 0.100 ± 0.000 | – | -3.00" in rows[1]  # no MI (results from before it was measured)
    assert rows[1].endswith("| early 1/2, epochs 1/2 | 1.50 ± 0.71 |")  # b - a per seed: 1 and 2
    assert len(rows) == 2


def test_markdown_of_one_seed_shows_values_without_a_spread(digits):
    results = [{"variant": v, "seed": 0, "test_elbo": -1.0, "test_iwae": -0.5 - (v == "b"), "test_gap": 0.5,
                "test_kl": 1.0, "test_kl_per_step": 0.1, "test_aux": -3.0, "active_units": 2, "epochs": 10,
                "stopped": "early"} for v in ("a", "b")]
    table = markdown(results, digits.info, iwae_samples=25)
    assert "one seed" in table.splitlines()[0]
    rows = [line for line in table.splitlines() if line.startswith(("| a", "| b"))]
    assert rows[0] == "| a | -1.00 | -0.50 | 0.50 | 1.00 | 0.100 | – | -3.00 | 2.0 | 10.0 | early 1/1 |  |"
    assert rows[1].endswith("| early 1/1 | -1.00 |") and "±" not in table


class ShiftedPriorGuide(TrajectoryGuide):
    """q = the prior with unit 0's mean moved by ``shift * y_t``: a known posterior-minus-prior mean."""

    shift = 0.3

    def proposal(self, batch):
        def head(h_prev, y):
            loc, scale = self.model.prior(h_prev)
            return loc + self.shift * y * torch.eye(loc.shape[-1], dtype=loc.dtype)[0], scale
        return self.model.trajectory(batch, head, batch.x)


def test_active_units_measure_what_the_posterior_adds_to_the_prior(float64, digits):
    model = ZForcing(small_config()).double()
    sequences = digits.test[:10]
    shifted = active_units(Objective(model, ShiftedPriorGuide(model)), sequences, batch_size=4, particles=3)
    pixels = np.concatenate([s[:, 0] for s in sequences]).astype(np.float64)
    expected = ShiftedPriorGuide.shift ** 2 * pixels.var()
    assert shifted["variance"][0] == pytest.approx(expected, rel=1e-9)
    assert shifted["variance"][1:] == pytest.approx([0.0, 0.0], abs=1e-20)
    assert shifted["count"] == 1
    # the raw (Burda) statistic also counts the prior's own step-to-step variation
    assert shifted["raw_variance"][1] > 0


def test_cli_ablate_with_a_study_file_defining_a_variant(tmp_path, capsys, caplog):
    study_file = tmp_path / "study.json"
    study_file.write_text(json.dumps({"variants": {"wide-beta": {"aux_weight": 0.01}, "plain": {"aux_weight": 0.0}},
                                      "max_steps": 2, "seeds": 1, "iwae_samples": 2, "rnn_dim": 7,
                                      "emb_dim": 6, "z_dim": 3, "mlp_dim": 5, "log_every": 1}))
    code = zforcing(["ablate", "--study", str(study_file), "--study-dir", str(tmp_path / "s"), "--quiet"])
    assert code == 0
    rows = list(csv.DictReader((tmp_path / "s" / "study.csv").read_text().splitlines()))
    assert [r["variant"] for r in rows] == ["wide-beta", "plain"]
    config = json.loads((tmp_path / "s" / "wide-beta-seed0" / "config.json").read_text())
    assert config["train_config"]["aux_start"] == 0.01 and config["model_config"]["rnn_dim"] == 7
    out = capsys.readouterr()
    assert "| wide-beta |" in out.out
    # the budget: the study's epoch cap and TrainConfig's own validation schedule, printed first and saved
    defaults = TrainConfig()
    assert config["train_config"]["epochs"] == ablation.STUDY_EPOCHS
    for name in ("early_stop_patience", "lr_patience", "lr_decay", "min_epochs"):
        assert config["train_config"][name] == getattr(defaults, name)
    assert out.out.startswith("budget per run:\n  wide-beta: up to 500 epochs of 41 updates (batch 32), at most 2 updates")
    budget = json.loads((tmp_path / "s" / "study.json").read_text())["budget"]
    assert budget["plain"] == {"epochs": 500, "max_steps": 2, "updates_per_epoch": 41, "batch_size": 32,
                               "early_stop_patience": defaults.early_stop_patience,
                               "lr_patience": defaults.lr_patience, "lr_decay": defaults.lr_decay,
                               "min_epochs": defaults.min_epochs}
    assert "ends before the first validation (update 41" in caplog.text  # validated only where it stops
    assert [r["stopped"] for r in rows] == ["max_steps", "max_steps"]


def test_cli_ablate_rejects_an_unknown_variant(tmp_path, capsys):
    code = zforcing(["ablate", "--variants", "aux,nope", "--study-dir", str(tmp_path), "--quiet"])
    assert code == 2
    assert "unknown variant(s) nope" in capsys.readouterr().err


def test_raising_the_cap_continues_capped_runs_to_the_result_of_the_longer_study(tmp_path, tiny_splits):
    longer = run_study(tiny_study(["no-aux", "aux"], seeds=(0,), epochs=4), tmp_path / "longer", splits=tiny_splits)
    run_study(tiny_study(["no-aux", "aux"], seeds=(0,), epochs=2), tmp_path / "raised", splits=tiny_splits)
    raised = run_study(tiny_study(["no-aux", "aux"], seeds=(0,), epochs=4), tmp_path / "raised", splits=tiny_splits)
    for a, b in zip(longer, raised):
        assert b["epochs"] == 4 and b["steps"] == 12
        assert {k: v for k, v in a.items() if k != "time_s"} == {k: v for k, v in b.items() if k != "time_s"}
    for variant in ("no-aux", "aux"):
        def records(root):
            rows = [json.loads(line) for line in (root / f"{variant}-seed0" / "metrics.jsonl").read_text().splitlines()]
            return [{k: v for k, v in row.items() if k != "time_s"} for row in rows]
        assert records(tmp_path / "raised") == records(tmp_path / "longer")


def test_a_run_that_stopped_early_keeps_its_result_when_the_cap_is_raised(tmp_path, tiny_splits, monkeypatch):
    first = run_study(tiny_study(["no-aux"], seeds=(0,), epochs=2), tmp_path, splits=tiny_splits)[0]
    path = tmp_path / "no-aux-seed0" / "result.json"
    path.write_text(json.dumps({**first, "stopped": "early"}))

    def refuse(*args, **kwargs):
        raise AssertionError("a run that stopped early was trained again")

    monkeypatch.setattr(ablation.Trainer, "resume", refuse)
    assert run_study(tiny_study(["no-aux"], seeds=(0,), epochs=5), tmp_path, splits=tiny_splits)[0]["stopped"] == "early"


def test_a_lower_cap_than_a_run_was_trained_under_is_refused(tmp_path, tiny_splits):
    run_study(tiny_study(["no-aux"], seeds=(0,), epochs=3), tmp_path, splits=tiny_splits)
    with pytest.raises(ValueError, match="no-aux-seed0: trained under a cap of 3 epochs.*--epochs 2"):
        run_study(tiny_study(["no-aux"], seeds=(0,), epochs=2), tmp_path, splits=tiny_splits)


def test_a_run_saved_before_the_speed_only_settings_existed_is_continued(tmp_path, tiny_splits):
    run_study(tiny_study(["no-aux"], seeds=(0,)), tmp_path, splits=tiny_splits)
    path = tmp_path / "no-aux-seed0" / "config.json"
    saved = json.loads(path.read_text())
    for field in ("compile", "cuda_graphs", "length_bucket"):  # added with --compile and --cuda-graphs
        del saved["train_config"][field]
    path.write_text(json.dumps(saved))
    assert run_study(tiny_study(["no-aux"], seeds=(0,), epochs=3), tmp_path, splits=tiny_splits)[0]["epochs"] == 3
