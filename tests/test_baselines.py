"""The baseline models (rnn, vrnn, srnn, dmm, storn) and the GMM emission against independent computations."""

import math

import numpy as np
import pyro.poutine as poutine
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import norm

from benchmarks.baselines_reference import PlainRNN, PlainSRNN, PlainVRNN
from pyro_zforcing.config import MODEL_NAMES
from pyro_zforcing.data import collate_sequences
from pyro_zforcing.guides import GUIDES, make_guide
from pyro_zforcing.infer import Weights, importance_terms, sequence_terms
from pyro_zforcing.models import LATENT_SITE, MODELS, make_model
from pyro_zforcing.emissions import FactorisedEmission
from pyro_zforcing.build import build_objective

from conftest import ragged_digit_batch, small_config
from stepwise_oracle import stepwise_dmm, stepwise_joint, stepwise_srnn, stepwise_storn, stepwise_vrnn


def token_batch():
    gen = torch.Generator().manual_seed(3)
    return collate_sequences([torch.randint(0, 11, (n,), generator=gen).numpy() for n in (9, 4, 6)])


def frame_batch():
    gen = torch.Generator().manual_seed(4)
    return collate_sequences([torch.randn(n, 5, generator=gen).numpy() for n in (8, 3, 5)]).to("cpu", torch.float64)


EMISSIONS = {
    "bernoulli": (dict(input_dim=1, emission="bernoulli"), None),
    "gaussian": (dict(input_dim=5, emission="gaussian"), frame_batch),
    "gmm": (dict(input_dim=5, emission="gmm", mixtures=3), frame_batch),
    "categorical": (dict(input_dim=11, emission="categorical"), token_batch),
}

# (model, guide, model options) -> the plain-PyTorch transcription built from an objective
CASES = {
    ("rnn", "exact", ()): PlainRNN.like,
    ("vrnn", "filtering", ()): PlainVRNN.like,
    ("vrnn", "filtering", (("prior", "standard"),)): PlainVRNN.like,
    ("srnn", "smoothing", ()): lambda o: PlainSRNN.like(o, "smoothing"),
    ("srnn", "smoothing-plain", ()): lambda o: PlainSRNN.like(o, "smoothing-plain"),
    ("srnn", "filtering", ()): lambda o: PlainSRNN.like(o, "filtering"),
}
LATENT_CASES = [("vrnn", "filtering"), ("srnn", "smoothing"), ("srnn", "filtering"), ("dmm", "combiner"),
                ("storn", "recognition")]


def make_case(model, guide, emission, digits, **options):
    sizes, make_batch = EMISSIONS[emission]
    objective = build_objective(small_config(model=model, **sizes, **options), guide, kl="sampled").double()
    batch = ragged_digit_batch(digits) if make_batch is None else make_batch()
    return objective, batch


@pytest.mark.parametrize("emission", sorted(EMISSIONS))
@pytest.mark.parametrize("case", list(CASES), ids=lambda c: "-".join([c[0], c[1]] + [v for _, v in c[2]]))
def test_pyro_loss_equals_plain_torch_loss_from_same_noise(float64, digits, case, emission):
    model, guide, options = case
    objective, batch = make_case(model, guide, emission, digits, **dict(options))
    plain = CASES[case](objective)
    torch.manual_seed(11)
    pyro_loss = objective(batch, Weights(kl=0.3, aux=0.5, bwd=0.2))  # aux/bwd: Z-Forcing's, ignored here
    torch.manual_seed(11)
    plain_loss = plain.loss(batch.x, batch.mask, batch.lengths, kl_weight=0.3)
    assert torch.allclose(pyro_loss, plain_loss, rtol=1e-6, atol=1e-6), (pyro_loss, plain_loss)


def test_rnn_bound_is_its_exact_log_likelihood(float64, digits):
    objective, batch = make_case("rnn", "exact", "bernoulli", digits)
    plain = PlainRNN.like(objective)
    exact = plain.log_weights(batch.x, batch.mask, batch.lengths)
    terms = importance_terms(objective.model, objective.guide, batch, num_samples=4)
    for key in ("elbo", "iwae", "rec"):
        assert torch.allclose(terms[key], exact, atol=1e-9), key
    assert torch.equal(terms["kl"], torch.zeros_like(exact))
    # and by hand: sum over real pixels of log Bernoulli(y | sigmoid(logits)) from the LSTM outputs
    h, _ = objective.model.lstm(objective.model.embedded(batch)[0])
    p = torch.sigmoid(objective.model.emission.linear(h))[..., 0]
    y = batch.x[..., 0]
    by_hand = ((y * torch.log(p) + (1 - y) * torch.log1p(-p)) * batch.mask).sum(-1)
    assert torch.allclose(by_hand, exact, atol=1e-9)


@pytest.mark.parametrize("model,guide", LATENT_CASES)
def test_iwae_is_at_least_the_elbo_in_expectation(float64, digits, model, guide):
    objective, batch = make_case(model, guide, "gaussian", digits)
    torch.manual_seed(0)
    elbo = torch.stack([sequence_terms(objective.model, objective.guide, batch)["elbo"] for _ in range(40)])
    iwae = torch.stack([importance_terms(objective.model, objective.guide, batch, num_samples=10)["iwae"]
                        for _ in range(40)])
    # the mean IWAE_10 over independent draws exceeds the mean one-sample ELBO beyond its noise
    gap = iwae.mean(0) - elbo.mean(0)
    noise = 3 * (elbo.std(0) / math.sqrt(40) + iwae.std(0) / math.sqrt(40))
    assert (gap > -noise).all() and gap.mean() > 0, (gap, noise)


@pytest.mark.parametrize("emission", sorted(EMISSIONS))
@pytest.mark.parametrize("model,oracle", [("vrnn", stepwise_vrnn), ("srnn", stepwise_srnn), ("dmm", stepwise_dmm),
                                          ("storn", stepwise_storn)])
def test_stepwise_oracle_scores_the_same_joint(float64, digits, model, oracle, emission):
    objective, batch = make_case(model, MODELS[model].guides[0], emission, digits)
    guide_trace = poutine.trace(objective.guide).get_trace(batch)
    z = guide_trace.nodes[LATENT_SITE]["value"]
    model_trace = poutine.trace(poutine.replay(objective.model, trace=guide_trace)).get_trace(batch)
    model_trace.compute_log_prob()
    production = model_trace.nodes["z"]["log_prob"] + model_trace.nodes["x"]["log_prob"]
    assert torch.allclose(production, stepwise_joint(oracle, objective.model, batch, z), atol=1e-9)


@pytest.mark.parametrize("case", [("rnn", "exact"), *LATENT_CASES, ("srnn", "smoothing-plain")])
def test_padded_steps_change_nothing(float64, digits, case):
    objective, batch = make_case(*case, "gaussian", digits)
    garbage = batch.x.clone()
    garbage[~batch.mask] = 1e3
    torch.manual_seed(2)
    clean = sequence_terms(objective.model, objective.guide, batch)
    torch.manual_seed(2)
    dirty = sequence_terms(objective.model, objective.guide, type(batch)(garbage, batch.mask, batch.lengths))
    for key in ("elbo", "rec", "kl"):
        assert torch.allclose(clean[key], dirty[key], atol=1e-10), key
    # a sequence alone scores what it scores inside the padded batch (exact for the rnn)
    if case[0] == "rnn":
        alone = collate_sequences([batch.x[1, :batch.lengths[1]].numpy()]).to("cpu", torch.float64)
        single = sequence_terms(objective.model, objective.guide, alone)["elbo"]
        assert torch.allclose(single[0], clean["elbo"][1], atol=1e-10)


@pytest.mark.parametrize("model,guide,frozen", [
    ("rnn", "exact", set()),
    ("vrnn", "filtering", set()),
    ("vrnn", "prior", set()),
    ("srnn", "smoothing", set()),
    ("srnn", "filtering", set()),
    ("dmm", "combiner", set()),
    ("storn", "recognition", set()),
])
def test_gradients_reach_exactly_the_parameters_that_should_learn(float64, digits, model, guide, frozen):
    objective, batch = make_case(model, guide, "gaussian", digits)
    objective(batch).backward()
    names = {name for name, _ in objective.named_parameters()}
    learning = {name for name, p in objective.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert learning == names - frozen, sorted(names - learning)


def test_vrnn_standard_prior_has_no_prior_parameters_and_scores_n01(float64, digits):
    objective, batch = make_case("vrnn", "filtering", "gaussian", digits, prior="standard")
    assert not [n for n, _ in objective.model.named_parameters() if n.startswith("prior")]
    z = torch.randn(batch.batch_size, batch.num_steps, 3, dtype=torch.float64)
    log_p = objective.model.prior_trajectory(batch).log_prob(z)
    expected = (torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) * batch.mask).sum(-1)
    assert torch.allclose(log_p, expected)


def test_gmm_log_density_is_a_logsumexp_over_weighted_components(float64):
    torch.manual_seed(0)
    head = FactorisedEmission(4, 3, "gmm", clamp=None, mixtures=2).double()
    state, y = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    got = head.step_dist(state).log_prob(y).detach().numpy()
    out = head.linear(state).detach().numpy()
    logits, params = out[:, :2], out[:, 2:].reshape(6, 2, 6)
    log_pi = logits - logsumexp(logits, axis=1, keepdims=True)
    comp = norm.logpdf(y.numpy()[:, None, :], params[..., :3], np.exp(0.5 * params[..., 3:])).sum(-1)
    np.testing.assert_allclose(got, logsumexp(log_pi + comp, axis=1), rtol=1e-10)


def test_gmm_with_one_component_is_the_gaussian_emission(float64):
    torch.manual_seed(0)
    gmm = FactorisedEmission(4, 3, "gmm", clamp=8.0, mixtures=1).double()
    gaussian = FactorisedEmission(4, 3, "gaussian", clamp=8.0).double()
    with torch.no_grad():
        gaussian.linear.weight.copy_(gmm.linear.weight[1:])
        gaussian.linear.bias.copy_(gmm.linear.bias[1:])
    state, y = torch.randn(2, 5, 4, dtype=torch.float64), torch.randn(2, 5, 3, dtype=torch.float64)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    assert torch.allclose(gmm.dist(state, mask).log_prob(y), gaussian.dist(state, mask).log_prob(y))


def test_registry_matches_the_config_and_every_declared_guide_exists():
    assert tuple(MODELS) == MODEL_NAMES
    for name, cls in MODELS.items():
        assert cls.name == name and cls.guides and set(cls.guides) <= set(GUIDES)
    assert MODELS["rnn"].latent_sites == ()


def test_a_guide_that_does_not_fit_the_model_is_refused_by_name():
    model = make_model(small_config(model="rnn"))
    with pytest.raises(ValueError, match="--guide backward does not fit --model rnn; its guides: exact"):
        make_guide("backward", model)
    with pytest.raises(ValueError, match="VRNN-I"):
        small_config(model="srnn", prior="standard")
    with pytest.raises(ValueError, match="mixtures=3 needs the gmm, ar-gmm or ar-rnn emission"):
        small_config(mixtures=3)


@pytest.mark.parametrize("model", ["rnn", "vrnn", "srnn", "dmm", "storn"])
@pytest.mark.parametrize("emission", ["gmm", "categorical"])
def test_generation_has_the_data_shape_and_replays_a_prime(model, emission):
    sizes, make_batch = EMISSIONS[emission]
    m = make_model(small_config(model=model, **sizes))
    batch = make_batch().to("cpu", torch.float32)
    out = m.generate(3, 6, prime=batch.x[:, :2])
    assert out.shape[:2] == (3, 6) and out.shape[2:] == batch.x.shape[2:]
    assert torch.equal(out[:, :2], batch.x[:, :2])
    if model != "rnn":
        z = torch.zeros(3, 6, 3)
        assert torch.equal(m.generate(3, 6, z=z, mean=True), m.generate(3, 6, z=z, mean=True))
