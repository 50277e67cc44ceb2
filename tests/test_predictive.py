"""Pyro's own tools on our models: the masked emission's draws, Predictive, render_model."""

import os
import shutil

import numpy as np
import pyro
import pyro.poutine as poutine
import pytest
import torch
from pyro.infer import Predictive

from pyro_zforcing.build import build_objective
from pyro_zforcing.data import collate_sequences
from pyro_zforcing.models import MODELS, OBS_SITE
from pyro_zforcing.emissions import FactorisedEmission

from conftest import small_config

IN_CI = os.environ.get("CI") == "true"
FAMILIES = ("bernoulli", "gaussian", "gmm", "categorical")
LENGTHS = (5, 2, 4)


def _head(family: str, out_dim: int = 3, hidden: int = 4) -> FactorisedEmission:
    torch.manual_seed(1)
    return FactorisedEmission(hidden, out_dim, family, mixtures=2 if family == "gmm" else 1)


def _mask(lengths=LENGTHS) -> torch.Tensor:
    return torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]


def _emission(family: str):
    """(head, mask (3, 5), state (3, 5, 4), the masked emission of the head at that state)."""
    head, mask = _head(family), _mask()
    state = torch.randn(3, 5, 4)
    return head, mask, state, head.dist(state, mask)


def _independent_mean(head: FactorisedEmission, state: torch.Tensor) -> torch.Tensor:
    """E[y_t | h_t] from the head's linear layer by hand: sigmoid, the loc half, the mixture of
    locs weighted by softmax, or the token probabilities."""
    out = state @ head.linear.weight.t() + head.linear.bias
    if head.family == "bernoulli":
        return torch.sigmoid(out)
    if head.family == "categorical":
        return torch.softmax(out, -1)
    if head.family == "gaussian":
        return out[..., :head.out_dim]
    k = head.mixtures
    weights = torch.softmax(out[..., :k], -1)
    loc = out[..., k:].reshape(out.shape[:-1] + (k, 2 * head.out_dim))[..., :head.out_dim]
    return (weights[..., None] * loc).sum(-2)


@pytest.mark.parametrize("family", FAMILIES)
def test_masked_emission_sample_has_the_event_shape_and_zeros_on_padded_steps(family, float64):
    _, mask, _, emission = _emission(family)
    tokens = family == "categorical"
    event = (5,) if tokens else (5, 3)
    assert emission.batch_shape == (3,) and emission.event_shape == event
    one, many = emission.sample(), emission.sample((7,))
    assert one.shape == (3,) + event and many.shape == (7, 3) + event
    assert one.dtype == (torch.long if tokens else torch.float64)
    padded = ~mask if tokens else (~mask)[..., None].expand(3, 5, 3)
    assert (many[:, padded] == 0).all() and (one[padded] == 0).all()
    if family == "bernoulli":
        assert set(many.unique().tolist()) <= {0.0, 1.0}
    if tokens:
        assert many.min() >= 0 and many.max() < 3
    assert torch.isfinite(emission.log_prob(one)).all()


@pytest.mark.parametrize("family", FAMILIES)
def test_masked_emission_rsample_exists_exactly_for_the_gaussian_and_carries_gradients(family, float64):
    head, mask, _, emission = _emission(family)
    assert emission.has_rsample == (family == "gaussian")
    if family != "gaussian":
        with pytest.raises(NotImplementedError, match="no reparameterised sample"):
            emission.rsample()
        return
    draw = emission.rsample((2,))
    assert draw.shape == (2, 3, 5, 3) and (draw[:, ~mask] == 0).all()
    draw.sum().backward()
    assert head.linear.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_masked_emission_draws_average_to_the_mean_computed_by_hand(family, float64):
    head, mask, state, emission = _emission(family)
    draws = emission.sample((20000,))
    expected = _independent_mean(head, state)
    if family == "categorical":  # token frequencies against the probabilities
        empirical = torch.nn.functional.one_hot(draws, 3).double().mean(0)
        spread = (expected * (1 - expected)).sqrt()
        with pytest.raises(NotImplementedError, match="no mean"):
            emission.mean
    else:
        empirical = draws.mean(0)
        spread = draws.std(0)
        assert torch.allclose(emission.mean[mask], expected[mask], atol=1e-12)
        assert (emission.mean[~mask] == 0).all()
    error = (empirical - expected)[mask].abs()
    assert (error <= 5 * spread[mask] / np.sqrt(len(draws)) + 1e-12).all()


# ----------------------------------------------------------------------------- Predictive

DATA = {  # emission -> (input_dim, a ragged batch of that kind of data)
    "bernoulli": lambda: collate_sequences([np.random.default_rng(i).integers(0, 2, (n, 2)).astype(np.float32)
                                            for i, n in enumerate(LENGTHS)]),
    "gaussian": lambda: collate_sequences([np.random.default_rng(i).normal(size=(n, 2)).astype(np.float32)
                                           for i, n in enumerate(LENGTHS)]),
    "categorical": lambda: collate_sequences([np.random.default_rng(i).integers(0, 6, n) for i, n in enumerate(LENGTHS)]),
}
DIMS = {"bernoulli": 2, "gaussian": 2, "categorical": 6}


def _objective(model: str, emission: str):
    torch.manual_seed(0)
    return build_objective(small_config(model=model, emission=emission, input_dim=DIMS[emission]))


@pytest.mark.parametrize("emission", sorted(DATA))
@pytest.mark.parametrize("model", sorted(MODELS))
def test_predictive_draws_of_every_model_have_the_data_shapes_and_respect_the_mask(model, emission):
    objective = _objective(model, emission)
    batch = DATA[emission]()
    latent = objective.model.latent_sites
    for guide in (objective.guide, None):  # posterior predictive, then prior predictive
        draws = Predictive(objective.model, guide=guide, num_samples=4)(batch.unobserved())
        assert set(draws) == set(latent) | {OBS_SITE}
        x = draws[OBS_SITE]
        assert x.shape == (4,) + batch.x.shape and x.dtype == batch.x.dtype
        assert (x[:, ~batch.mask] == 0).all()
        real = x[:, batch.mask]
        if emission == "bernoulli":
            assert set(real.unique().tolist()) <= {0.0, 1.0}
        if emission == "categorical":
            assert real.min() >= 0 and real.max() < DIMS[emission]
        for site in latent:
            assert draws[site].shape[:3] == (4,) + batch.mask.shape
        if latent:  # four draws of a continuous latent are four different trajectories
            assert not torch.equal(draws[latent[0]][0], draws[latent[0]][1])


def test_predictive_on_an_observed_batch_returns_the_observations_as_pyro_does():
    objective = _objective("zforcing", "gaussian")
    batch = DATA["gaussian"]()
    draws = Predictive(objective.model, guide=objective.guide, num_samples=3)(batch)
    assert all(torch.equal(x, batch.x) for x in draws[OBS_SITE])


@pytest.mark.parametrize("model", ["zforcing", "rnn"])
def test_posterior_predictive_draws_average_to_the_emission_mean_given_each_latent_draw(model, float64):
    """x^s ~ p(x | z^s, y_{<t}) with z^s ~ q(z | y): x^s - E[x | z^s, y_{<t}] averages to 0, with
    the conditional mean scored by the model conditioned on z^s over the *observed* inputs."""
    objective = _objective(model, "gaussian").double()
    batch = DATA["gaussian"]().to("cpu", torch.float64)
    samples = 1000
    draws = Predictive(objective.model, guide=objective.guide, num_samples=samples,
                       return_sites=("x",) + objective.model.latent_sites)(batch.unobserved())
    repeated = batch.repeat(samples)
    conditioned = {site: draws[site].reshape((-1,) + draws[site].shape[2:]) for site in objective.model.latent_sites}
    with torch.no_grad():
        trace = poutine.trace(poutine.condition(objective.model, conditioned)).get_trace(repeated)
    emission = trace.nodes[OBS_SITE]["fn"]
    mean = emission.mean.reshape(draws["x"].shape)
    variance = emission.head.step_dist(emission.state).variance.reshape(draws["x"].shape)[:, batch.mask]
    residual = (draws["x"] - mean)[:, batch.mask]
    assert (residual.mean(0).abs() <= 5 * residual.std(0) / np.sqrt(samples)).all()
    # the spread around each conditional mean is the emission's own: x^s is drawn given z^s
    assert torch.allclose(residual.var(0), variance.mean(0), rtol=0.25)
    # and the mean is the teacher-forced one: it differs between sequences with different pasts
    assert not torch.allclose(mean[0, 0, 1], mean[0, 1, 1])


# ----------------------------------------------------------------------------- render_model

def _graphviz():
    try:
        import graphviz  # noqa: F401
    except ImportError:
        if IN_CI:
            raise
        pytest.skip("the graphviz Python package is not installed (pip install graphviz; CI installs it)")


@pytest.mark.parametrize("model", sorted(MODELS))
def test_render_model_draws_every_site_of_every_model_inside_the_sequence_plate(model):
    _graphviz()
    objective = _objective(model, "bernoulli")
    batch = DATA["bernoulli"]()
    graph = pyro.render_model(objective.model, model_args=(batch,), render_distributions=True)
    source = graph.source
    assert "cluster_sequences" in source
    sites = objective.model.latent_sites + (OBS_SITE,)
    for site in sites:
        assert f"\t\t{site} [label={site}" in source
    assert f"{OBS_SITE} [label={OBS_SITE} fillcolor=gray" in source  # observed: shaded
    assert "MaskedEmission" in source
    for site in objective.model.latent_sites:
        assert f"{site} -> {OBS_SITE}" in source
    guide_graph = pyro.render_model(objective.guide, model_args=(batch,)).source
    for site in objective.model.latent_sites:
        assert f"{site} [label={site}" in guide_graph
    if shutil.which("dot") is None and not IN_CI:
        pytest.skip("Graphviz's dot program is not installed (apt-get install graphviz): rendering not checked")
    assert b"<svg" in graph.pipe(format="svg")
