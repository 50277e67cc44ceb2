"""Training loop: checkpoints, exact resume, divergence, schedules."""

import json

import pyro
import pytest
import torch

from pyro_zforcing.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from pyro_zforcing.config import DataConfig, TrainConfig
from pyro_zforcing.data import SequenceSplits
from pyro_zforcing.infer import anneal, weights_at
from pyro_zforcing.training import trainer as train
from pyro_zforcing.training.trainer import Trainer, TrainingDiverged, epoch_batches

SIZES = dict(emb_dim=8, rnn_dim=12, z_dim=4, mlp_dim=10)


@pytest.fixture
def small_digits(digits):
    return SequenceSplits(digits.info, digits.train[:40], digits.valid[:16], digits.test[:16])


def make_trainer(out_dir, splits, *, sizes=SIZES, **train):
    config = TrainConfig(batch_size=8, log_every=1, aux_start=0.01, aux_end=0.01, kl_start=0.5, kl_step=0.05, **train)
    return Trainer.create(data_config=DataConfig(), train_config=config, out_dir=out_dir,
                          model_sizes=sizes, quiet=True, splits=splits)


def step_losses(run_dir):
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if r["kind"] == "step"}


@pytest.mark.parametrize("z_conditioning", ["concat", "cond-ln"])
def test_resumed_run_continues_exactly_like_the_uninterrupted_one(tmp_path, small_digits, z_conditioning):
    # 40 sequences / batch 8 = 5 steps per epoch: stop mid-epoch 2 (step 7), resume to step 12
    sizes = dict(SIZES, z_conditioning=z_conditioning)
    whole = make_trainer(tmp_path / "whole", small_digits, epochs=3, max_steps=12, sizes=sizes)
    whole.fit()
    first = make_trainer(tmp_path / "split", small_digits, epochs=3, max_steps=7, sizes=sizes)
    first.fit()
    resumed = Trainer.resume(tmp_path / "split", quiet=True, splits=small_digits, max_steps=12)
    resumed.fit()
    expected, got = step_losses(tmp_path / "whole"), step_losses(tmp_path / "split")
    assert sorted(got) == list(range(1, 13))
    for step in range(8, 13):
        assert got[step] == expected[step], step
    a = load_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")["objective"]
    b = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")["objective"]
    assert all(torch.equal(a[key], b[key]) for key in a)


def test_checkpoint_holds_everything_needed_to_rebuild(tmp_path, small_digits):
    trainer = make_trainer(tmp_path / "run", small_digits, epochs=1)
    trainer.fit()
    state = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")
    assert state["model_config"] == trainer.model_config
    assert state["train_config"] == trainer.config
    assert state["data_info"] == small_digits.info
    assert state["progress"]["epoch"] == 1 and state["progress"]["step"] == 5
    assert {"torch", "numpy", "python"} <= set(state["rng"])
    assert state["version"]
    assert (tmp_path / "run" / "checkpoints" / "best.pt").exists()
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["model_config"]["rnn_dim"] == SIZES["rnn_dim"]


def test_failed_checkpoint_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"payload": torch.ones(3)})
    before = path.read_bytes()

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        save_checkpoint(path, {"payload": Unsaveable()})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_bad_checkpoint_files_give_errors_naming_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(junk)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.ones(2)}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt"):
        load_checkpoint(foreign)


@pytest.mark.parametrize("kl", ["analytic", "sampled"])
def test_nan_loss_stops_training_naming_the_step_and_keeps_last_good_checkpoint(tmp_path, small_digits, kl):
    pyro.enable_validation(False)  # as in training: validation would reject NaN logits earlier
    trainer = make_trainer(tmp_path / "run", small_digits, epochs=2, kl=kl)
    trainer.config = TrainConfig(**{**vars(trainer.config), "epochs": 1})
    trainer.fit()
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    good = last.read_bytes()
    trainer.config = TrainConfig(**{**vars(trainer.config), "epochs": 2})
    with torch.no_grad():
        trainer.objective.model.emission.linear.weight.fill_(float("nan"))
    # both estimators warn of the NaN loss (the analytic one as Trace_ELBO does), then the trainer stops
    warned = pytest.warns(UserWarning, match="NaN")
    with pytest.raises(TrainingDiverged, match="at step 6 "), warned:
        trainer.fit()
    assert last.read_bytes() == good


def test_epoch_batches_are_seeded_permutations_shared_out_by_rank():
    one = epoch_batches(10, 3, seed=1, epoch=0)
    assert sorted(i for b in one for i in b) == list(range(10))
    assert one == epoch_batches(10, 3, seed=1, epoch=0)
    assert one != epoch_batches(10, 3, seed=1, epoch=1)
    ranks = [epoch_batches(10, 2, seed=1, epoch=0, rank=r, world_size=2) for r in (0, 1)]
    seen = [i for shard in ranks for b in shard for i in b]
    assert len(seen) == len(set(seen)) == 10


def test_annealing_schedules_move_toward_their_end_and_stop_there():
    assert anneal(0.2, 1.0, 0.1, 0) == 0.2
    assert anneal(0.2, 1.0, 0.1, 3) == pytest.approx(0.5)
    assert anneal(0.2, 1.0, 0.1, 100) == 1.0
    assert anneal(1.0, 0.0, 0.25, 2) == 0.5
    assert anneal(1.0, 0.0, 0.25, 9) == 0.0
    config = TrainConfig(kl_start=0.0, kl_step=0.01, aux_start=2.0, aux_end=1.0, aux_step=0.5, bwd_weight=0.3)
    weights = weights_at(config, 1)
    assert (weights.kl, weights.aux, weights.bwd) == (pytest.approx(0.01), 1.5, 0.3)


def test_early_stopped_run_stays_stopped_when_resumed(tmp_path, small_digits, monkeypatch):
    flat = {"elbo": -30.0, "rec": -29.0, "kl": 1.0, "elbo_per_unit": -0.5}
    monkeypatch.setattr(train, "evaluate_elbo", lambda *args, **kwargs: dict(flat))
    trainer = make_trainer(tmp_path / "run", small_digits, epochs=10, early_stop_patience=1, min_epochs=0)
    trainer.fit()
    assert trainer.progress.early_stopped and trainer.progress.epoch == 2 and trainer.progress.step == 10
    resumed = Trainer.resume(tmp_path / "run", quiet=True, splits=small_digits, epochs=20)
    resumed.fit()
    assert resumed.progress.step == 10
