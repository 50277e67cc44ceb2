"""--kl analytic: the authors' per-step Gaussian KL along the sampled trajectory as the training
estimator. Its expectation is the sampled estimator's, its variance lower; per step it is
infer.step_kl; KL annealing scales it; the reported bounds do not move with it."""

import json

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_zforcing.build import build_objective, load_trained
from pyro_zforcing.checkpoint import config_payload, load_checkpoint, save_checkpoint
from pyro_zforcing.cli.main import main as zforcing
from pyro_zforcing.config import DataConfig, TrainConfig
from pyro_zforcing.data import collate_sequences
from pyro_zforcing.data.base import DataInfo
from pyro_zforcing.evaluation.bounds import evaluate_elbo, evaluate_split
from pyro_zforcing.guides import TrajectoryGuide
from pyro_zforcing.infer import Objective, Weights, sequence_terms, step_kl, trace_pair

from conftest import small_config

MODELS = {"zforcing": {}, "zforcing-cond-ln": {"z_conditioning": "cond-ln"}, "vrnn": {"model": "vrnn"},
          "vrnn-i": {"model": "vrnn", "prior": "standard"}, "srnn": {"model": "srnn"}, "dmm": {"model": "dmm"},
          "storn": {"model": "storn"}}
DRAWS, COPIES = 80, 25  # 80 losses, each the mean over 25 copies of every sequence (2,000 trajectories)


def batch_of(lengths=(7, 3, 5), dim=4):
    rng = np.random.default_rng(0)
    return collate_sequences([rng.standard_normal((n, dim)) for n in lengths]).to("cpu", torch.float64)


def objective_for(name, kl):
    torch.manual_seed(0)
    return build_objective(small_config(input_dim=4, emission="gaussian", **MODELS.get(name, {"model": name})), kl=kl)


@pytest.mark.parametrize("name", list(MODELS))
def test_analytic_loss_is_the_reconstruction_minus_the_scaled_step_kl_of_the_same_draw(float64, name):
    objective = objective_for(name, "analytic")
    batch = batch_of()
    weights = Weights(kl=0.3, aux=0.2)  # KL annealing's weight must scale the analytic KL
    torch.manual_seed(5)
    loss = objective(batch, weights)
    objective.model.forget()
    torch.manual_seed(5)  # the same noise: the same trajectory
    guide_trace, model_trace = trace_pair(objective.model, objective.guide, batch, weights)
    rec = model_trace.nodes["x"]["log_prob"]
    aux = model_trace.nodes["aux"]["log_prob"] if "aux" in model_trace.nodes else torch.zeros_like(rec)
    expected = -(rec + aux - 0.3 * step_kl(guide_trace, model_trace).sum(-1)).mean()
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("name", list(MODELS))
def test_analytic_and_sampled_estimators_agree_in_expectation_and_the_analytic_one_varies_less(float64, name):
    batch = batch_of().repeat(COPIES)
    draws = {}
    for kl in ("analytic", "sampled"):
        objective = objective_for(name, kl)  # the same weights for both
        torch.manual_seed(1)
        with torch.no_grad():
            draws[kl] = np.array([float(objective(batch, Weights(kl=0.6))) for _ in range(DRAWS)])
    a, s = draws["analytic"], draws["sampled"]
    stderr = np.sqrt(a.var(ddof=1) / DRAWS + s.var(ddof=1) / DRAWS)
    assert abs(a.mean() - s.mean()) < 3 * stderr, (a.mean(), s.mean(), stderr)
    assert a.var(ddof=1) < s.var(ddof=1), (a.var(), s.var())


@pytest.mark.parametrize("name", list(MODELS) + ["rnn"])
def test_analytic_gradients_are_finite_and_reach_the_guide(float64, name):
    objective = objective_for(name, "analytic")
    objective(batch_of(), Weights(kl=0.5, aux=0.1)).backward()
    grads = [p.grad for p in objective.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in objective.guide.parameters())


def test_without_latents_both_estimators_are_the_exact_log_likelihood(float64):
    batch = batch_of()
    losses = [objective_for("rnn", kl)(batch) for kl in ("analytic", "sampled")]  # the same weights
    torch.testing.assert_close(losses[0], losses[1], rtol=0, atol=1e-12)
    exact = objective_for("rnn", "sampled")
    torch.testing.assert_close(losses[0], -sequence_terms(exact.model, exact.guide, batch)["rec"].mean())


def test_the_prior_as_guide_has_zero_analytic_kl(float64):
    torch.manual_seed(0)
    objective = build_objective(small_config(input_dim=4, emission="gaussian"), "prior", kl="analytic")
    batch = batch_of()
    torch.manual_seed(2)
    loss = objective(batch)
    objective.model.forget()
    torch.manual_seed(2)
    terms = sequence_terms(objective.model, objective.guide, batch)
    torch.testing.assert_close(loss, -terms["rec"].mean(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["zforcing", "vrnn", "srnn"])
def test_reported_bounds_do_not_depend_on_the_training_estimator(float64, name):
    rng = np.random.default_rng(1)
    sequences = [rng.standard_normal((n, 4)) for n in (6, 4, 5, 3, 6, 2)]
    info = DataInfo(name="audio", emission="gaussian", dim=4, unit="sample", units_per_step=4)
    reports = []
    for kl in ("analytic", "sampled"):
        objective = objective_for(name, kl)
        torch.manual_seed(3)
        split = evaluate_split(objective, sequences, info, num_samples=4, batch_size=3)
        torch.manual_seed(3)
        valid = evaluate_elbo(objective, sequences, info, batch_size=3, device="cpu", dtype=torch.float64)
        reports.append((split.elbo, split.iwae, split.kl, valid))
    np.testing.assert_array_equal(reports[0][0], reports[1][0])
    np.testing.assert_array_equal(reports[0][1], reports[1][1])
    np.testing.assert_array_equal(reports[0][2], reports[1][2])
    assert reports[0][3] == reports[1][3]


class NormalGuide(TrajectoryGuide):
    """A guide whose proposal has no per-step Gaussian parameters the analytic KL could read."""

    def __init__(self, model):
        super().__init__(model)
        self.loc = torch.nn.Parameter(torch.zeros(model.config.z_dim))

    def forward(self, batch, **weights):
        with pyro.plate("sequences", batch.batch_size):
            loc = self.loc.expand(batch.batch_size, batch.num_steps, -1)
            return pyro.sample("z", dist.Normal(loc, 1.0).to_event(2))


def test_a_proposal_without_step_parameters_trains_with_the_sampled_kl_and_a_warning(float64, caplog):
    model = objective_for("zforcing", "analytic").model
    analytic = Objective(model, NormalGuide(model), kl="analytic")
    sampled = Objective(model, analytic.guide, kl="sampled")
    batch = batch_of()
    assert torch.isfinite(analytic(batch))  # finds out, says so, and falls back
    for seed in (4, 5):  # from then on the sampled estimator itself
        torch.manual_seed(seed)
        ours = analytic(batch)
        torch.manual_seed(seed)
        torch.testing.assert_close(ours, sampled(batch), rtol=0, atol=0)
    assert caplog.text.count("has no per-step Gaussian parameters") == 1  # said once


def test_kl_is_a_checked_train_setting_recorded_in_checkpoints_old_ones_load_as_sampled(tmp_path):
    assert TrainConfig().kl == "analytic"  # the authors' (measured in docs/comparison.md)
    with pytest.raises(ValueError, match="kl must be one of"):
        TrainConfig(kl="exact")
    objective = build_objective(small_config(input_dim=2, emission="gaussian"))
    payload = config_payload(small_config(input_dim=2, emission="gaussian"), DataConfig(), TrainConfig(),
                             DataInfo(name="audio", emission="gaussian", dim=2, unit="sample"))
    del payload["train_config"]["kl"]
    save_checkpoint(tmp_path / "old.pt", {**payload, "objective": objective.state_dict()})
    assert load_checkpoint(tmp_path / "old.pt")["train_config"].kl == "sampled"


def test_one_default_kl_estimator_everywhere():
    """Objective, build_objective, TrainConfig and the train command default to the same estimator."""
    import argparse
    import inspect

    from pyro_zforcing.cli.flags import add_train_flags
    from pyro_zforcing.config import DEFAULT_KL
    from pyro_zforcing.infer import Objective

    parser = argparse.ArgumentParser()
    add_train_flags(parser)
    built = build_objective(small_config(input_dim=2, emission="gaussian"))
    defaults = {"TrainConfig": TrainConfig().kl, "build_objective": built.kl,
                "Objective": inspect.signature(Objective).parameters["kl"].default,
                "--kl": parser.parse_args([]).kl}
    assert set(defaults.values()) == {DEFAULT_KL} == {"analytic"}, defaults


def test_cli_kl_flag_trains_and_is_recorded(tmp_path):
    out = tmp_path / "run"
    assert zforcing(["--kl", "sampled", "--emb-dim", "4", "--rnn-dim", "5", "--z-dim", "2", "--mlp-dim", "4",
                     "--max-steps", "1", "--batch-size", "4", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "config.json").read_text())["train_config"]["kl"] == "sampled"
    assert load_checkpoint(out / "checkpoints" / "last.pt")["train_config"].kl == "sampled"
    trained, _, _ = load_trained(out / "checkpoints" / "last.pt", need_data=False)
    assert trained.kl == "sampled"
