"""The Pyro objective against independent computations of the same quantities."""

import pyro.poutine as poutine
import pytest
import torch

from benchmarks.reference import PlainZForcing
from pyro_zforcing.data import collate_sequences
from pyro_zforcing.infer import Weights, sequence_terms
from pyro_zforcing.models import LATENT_SITE
from pyro_zforcing.build import build_objective

from conftest import ragged_digit_batch, small_config
from stepwise_oracle import stepwise_log_joint


def token_batch(dtype=torch.float64):
    gen = torch.Generator().manual_seed(3)
    seqs = [torch.randint(0, 11, (n,), generator=gen).numpy() for n in (9, 4, 6)]
    return collate_sequences(seqs)


def gaussian_batch(dtype=torch.float64):
    gen = torch.Generator().manual_seed(4)
    seqs = [torch.randn(n, 5, generator=gen).numpy() for n in (8, 3, 5)]
    return collate_sequences(seqs).to("cpu", dtype)


CASES = {
    "bernoulli": (dict(input_dim=1, emission="bernoulli"), None),
    "gaussian": (dict(input_dim=5, emission="gaussian"), gaussian_batch),
    "categorical": (dict(input_dim=11, emission="categorical"), token_batch),
}


def make_case(name, digits, **overrides):
    sizes, make_batch = CASES[name]
    objective = build_objective(small_config(**sizes, **overrides), "backward", kl="sampled")
    batch = ragged_digit_batch(digits) if make_batch is None else make_batch()
    return objective, batch


@pytest.mark.parametrize("emission", sorted(CASES))
@pytest.mark.parametrize("aux_input,aux_loss", [("hz", "gaussian"), ("z", "l2")])
def test_pyro_loss_equals_plain_torch_loss_from_same_noise(float64, digits, emission, aux_input, aux_loss):
    objective, batch = make_case(emission, digits, aux_input=aux_input, aux_loss=aux_loss)
    plain = PlainZForcing.like(objective)
    weights = Weights(kl=0.3, aux=0.7, bwd=0.2)
    torch.manual_seed(11)
    pyro_loss = objective(batch, weights)
    torch.manual_seed(11)
    plain_loss = plain.loss(batch.x, batch.mask, batch.lengths, aux_weight=0.7, bwd_weight=0.2, kl_weight=0.3)
    assert torch.allclose(pyro_loss, plain_loss, rtol=1e-6, atol=1e-6), (pyro_loss, plain_loss)


def test_pyro_gradients_equal_plain_torch_gradients(float64, digits):
    objective, batch = make_case("bernoulli", digits)
    plain = PlainZForcing.like(objective)
    torch.manual_seed(5)
    objective(batch, Weights(aux=0.5)).backward()
    torch.manual_seed(5)
    plain.loss(batch.x, batch.mask, batch.lengths, aux_weight=0.5).backward()
    assert torch.allclose(objective.model.fwd.lstm.weight_hh_l0.grad, plain.cell.weight_hh.grad, atol=1e-8)
    assert torch.allclose(objective.guide.posterior.net[0].weight.grad, plain.inf.l1.weight.grad, atol=1e-8)
    assert torch.allclose(objective.model.bwd.lstm.weight_ih_l0.grad, plain.bwd.weight_ih_l0.grad, atol=1e-8)


@pytest.mark.parametrize("emission", sorted(CASES))
def test_stepwise_oracle_scores_the_same_joint(float64, digits, emission):
    objective, batch = make_case(emission, digits)
    model, guide = objective.model, objective.guide
    guide_trace = poutine.trace(guide).get_trace(batch)
    z = guide_trace.nodes[LATENT_SITE]["value"]
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(batch)
    model_trace.compute_log_prob()
    production = model_trace.nodes["z"]["log_prob"] + model_trace.nodes["x"]["log_prob"]
    oracle = stepwise_log_joint(model, batch, z)
    assert torch.allclose(production, oracle, atol=1e-9)
    # a trajectory the guide did not draw is scored by running the fused LSTM over it
    fresh = z.clone()
    conditioned = poutine.trace(poutine.condition(model, data={LATENT_SITE: fresh})).get_trace(batch)
    conditioned.compute_log_prob()
    assert torch.allclose(conditioned.nodes["z"]["log_prob"] + conditioned.nodes["x"]["log_prob"], oracle, atol=1e-9)


def test_guide_scores_its_own_sample_as_a_fresh_trajectory(float64, digits):
    objective, batch = make_case("bernoulli", digits)
    proposal = objective.guide.proposal(batch)
    z = proposal.rsample()
    assert torch.allclose(proposal.log_prob(z), proposal.log_prob(z.clone()), atol=1e-10)


def test_padded_steps_change_nothing(float64, digits):
    objective, batch = make_case("bernoulli", digits)
    weights = Weights(aux=0.5, bwd=0.5)
    torch.manual_seed(2)
    reference = sequence_terms(objective.model, objective.guide, batch, weights)
    garbage = batch.x.clone()
    garbage[~batch.mask] = 1.0
    torch.manual_seed(2)
    changed = sequence_terms(objective.model, objective.guide, type(batch)(garbage, batch.mask, batch.lengths), weights)
    for key in ("elbo", "aux", "bwd"):
        assert torch.allclose(reference[key], changed[key], atol=1e-10), key


def test_each_sequence_scores_as_if_alone(float64, digits):
    objective, batch = make_case("bernoulli", digits)
    model = objective.model
    z = poutine.trace(objective.guide).get_trace(batch).nodes[LATENT_SITE]["value"].detach()
    together = stepwise_log_joint(model, batch, z)
    for i, length in enumerate(batch.lengths.tolist()):
        alone = collate_sequences([batch.x[i, :length].numpy()]).to("cpu", torch.float64)
        trace = poutine.trace(poutine.condition(model, data={LATENT_SITE: z[i:i + 1, :length]})).get_trace(alone)
        trace.compute_log_prob()
        assert torch.allclose(trace.nodes["z"]["log_prob"] + trace.nodes["x"]["log_prob"], together[i:i + 1])


def grads_of(module):
    return {name: p.grad for name, p in module.named_parameters()}


@pytest.mark.parametrize("aux,bwd", [(0.0, 0.0), (0.5, 0.0), (0.0, 0.5)])
def test_gradients_reach_exactly_the_parameters_that_should_learn(digits, aux, bwd):
    objective, batch = make_case("bernoulli", digits)
    objective(batch.to("cpu", torch.float32), Weights(aux=aux, bwd=bwd)).backward()
    for name, grad in grads_of(objective).items():
        if name.startswith("model.aux."):
            should_learn = aux > 0
        elif name.startswith("model.bwd_head."):
            should_learn = bwd > 0
        else:
            should_learn = True
        if should_learn:
            assert grad is not None and grad.abs().sum() > 0, f"{name} gets no gradient"
        else:
            assert grad is None, f"{name} should not learn with aux={aux}, bwd={bwd}"


def test_aux_target_is_detached(float64, digits):
    """The aux cost alone trains the aux head and the forward path, never the backward RNN."""
    objective, batch = make_case("bernoulli", digits)
    h = objective.model.forward_states(batch, torch.zeros(batch.batch_size, batch.num_steps, 3))
    aux = objective.model.aux_log_prob(batch, h, torch.zeros(batch.batch_size, batch.num_steps, 3))
    aux.sum().backward()
    assert objective.model.aux.net[0].weight.grad is not None
    assert all(p.grad is None for p in objective.model.bwd.parameters())
