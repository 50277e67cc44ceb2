"""The ablation guides: what each one sees, that each trains and evaluates, and the prior guide's exact zero KL."""

import math

import pyro.poutine as poutine
import pytest
import torch

from pyro_zforcing.guides import GUIDES, make_guide
from pyro_zforcing.infer import Weights, iwae_bound, sequence_terms
from pyro_zforcing.models import LATENT_SITE
from pyro_zforcing.build import build_objective

from conftest import ragged_digit_batch, small_config

NEW_GUIDES = ("filtering", "future-only", "prior")


def objective_for(name):
    return build_objective(small_config(), name, kl="sampled").double()


def guide_z(objective, batch, seed=7):
    """The guide's trajectory ``(B, T, Z)`` for the batch, from fixed noise."""
    torch.manual_seed(seed)
    return poutine.trace(objective.guide).get_trace(batch).nodes[LATENT_SITE]["value"]


def test_registry_names_every_ablation_guide():
    assert set(NEW_GUIDES) | {"backward"} <= set(GUIDES)
    with pytest.raises(ValueError, match="unknown guide 'nope'.*filtering"):
        make_guide("nope", None)


@pytest.mark.parametrize("name", ["filtering", "future-only"])
def test_gradients_reach_the_guides_own_parameters(float64, digits, name):
    objective = objective_for(name)
    batch = ragged_digit_batch(digits)
    loss = objective(batch, Weights(aux=0.5))
    assert torch.isfinite(loss)
    loss.backward()
    own = list(objective.guide.named_parameters())
    assert own, "guide has no parameters of its own"
    for param_name, param in own:
        assert param.grad is not None and param.grad.abs().sum() > 0, param_name


def test_prior_guide_has_no_parameters_and_trains_the_model(float64, digits):
    objective = objective_for("prior")
    assert list(objective.guide.parameters()) == []
    loss = objective(ragged_digit_batch(digits))
    assert torch.isfinite(loss)
    loss.backward()
    assert objective.model.prior.net[0].weight.grad.abs().sum() > 0
    assert objective.model.emission.linear.weight.grad.abs().sum() > 0


def test_prior_guide_kl_is_zero_for_every_sample(float64, digits):
    objective = objective_for("prior")
    batch = ragged_digit_batch(digits)
    terms = sequence_terms(objective.model, objective.guide, batch.repeat(4))
    assert torch.allclose(terms["kl"], torch.zeros_like(terms["kl"]), atol=1e-9)
    assert torch.allclose(terms["elbo"], terms["rec"], atol=1e-9)


@pytest.mark.parametrize("name", ["backward", *NEW_GUIDES])
def test_iwae_is_the_logmeanexp_of_the_same_particles_and_above_their_elbo(float64, digits, name):
    objective = objective_for(name)
    batch = ragged_digit_batch(digits)
    k = 6
    torch.manual_seed(3)
    iwae = iwae_bound(objective.model, objective.guide, batch, num_samples=k)
    torch.manual_seed(3)
    with torch.no_grad():
        log_w = sequence_terms(objective.model, objective.guide, batch.repeat(k))["elbo"].view(k, -1)
    assert iwae.shape == (batch.batch_size,) and torch.isfinite(iwae).all()
    expected = torch.logsumexp(log_w, 0) - math.log(k)
    assert torch.allclose(iwae, expected, atol=1e-9)
    assert (iwae >= log_w.mean(0) - 1e-12).all()


def perturbed(batch, steps):
    """The batch with the targets at ``steps`` flipped (binary pixels)."""
    x = batch.x.clone()
    x[:, steps] = 1.0 - x[:, steps]
    return type(batch)(x, batch.mask, batch.lengths)


def test_filtering_guide_never_looks_ahead(float64, digits):
    objective = objective_for("filtering")
    batch = ragged_digit_batch(digits, lengths=(30, 30, 30))
    z = guide_z(objective, batch)
    z_changed = guide_z(objective, perturbed(batch, slice(20, 30)))
    assert torch.equal(z[:, :20], z_changed[:, :20])
    assert not torch.allclose(z[:, 20:], z_changed[:, 20:])


def test_backward_guide_does_look_ahead(float64, digits):
    objective = objective_for("backward")
    batch = ragged_digit_batch(digits, lengths=(30, 30, 30))
    z = guide_z(objective, batch)
    z_changed = guide_z(objective, perturbed(batch, slice(20, 30)))
    assert not torch.allclose(z[:, :20], z_changed[:, :20])


def test_future_only_guide_ignores_the_past(float64, digits):
    objective = objective_for("future-only")
    batch = ragged_digit_batch(digits, lengths=(30, 30, 30))
    z = guide_z(objective, batch)
    z_changed = guide_z(objective, perturbed(batch, slice(0, 10)))
    # z_t depends on y_{t..T} only: steps after the change are untouched, earlier ones move
    assert torch.allclose(z[:, 10:], z_changed[:, 10:], atol=1e-12)
    assert not torch.allclose(z[:, :10], z_changed[:, :10])


@pytest.mark.parametrize("name", ["backward", *NEW_GUIDES])
def test_every_guide_encodes_for_the_samplers(float64, digits, name):
    from pyro_zforcing.evaluation.samples import interpolate

    objective = objective_for(name)
    alphas, decoded = interpolate(objective, digits.test[0], digits.test[1][:40], num=3)
    assert decoded.shape == (3, len(digits.test[0]), 1) and torch.isfinite(decoded).all()  # the longer length
    assert alphas.tolist() == [0.0, 0.5, 1.0]
