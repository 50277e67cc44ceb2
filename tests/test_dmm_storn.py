"""The DMM and STORN against independent computations: plain-PyTorch transcriptions, per-step oracles, bounds."""

import math

import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import pytest
import torch

from benchmarks.baselines_reference import PlainDMM, PlainSTORN
from pyro_zforcing.build import build_objective
from pyro_zforcing.data import collate_sequences
from pyro_zforcing.guides import make_guide
from pyro_zforcing.infer import Weights, importance_terms, sequence_terms
from pyro_zforcing.models import LATENT_SITE, make_model

from conftest import ragged_digit_batch, small_config
from test_baselines import EMISSIONS

PLAIN = {"dmm": PlainDMM, "storn": PlainSTORN}
MODELS = sorted(PLAIN)


def make_case(model, emission, digits, guide=None, **options):
    sizes, make_batch = EMISSIONS[emission]
    objective = build_objective(small_config(model=model, **sizes, **options), guide).double()
    batch = ragged_digit_batch(digits) if make_batch is None else make_batch()
    return objective, batch


@pytest.mark.parametrize("embedding", ["linear", "leaky"])
@pytest.mark.parametrize("emission", sorted(EMISSIONS))
@pytest.mark.parametrize("model", MODELS)
def test_loss_and_gradients_equal_the_plain_torch_transcription_from_the_same_noise(
        float64, digits, model, emission, embedding):
    objective, batch = make_case(model, emission, digits, embedding=embedding)
    plain = PLAIN[model].like(objective)
    torch.manual_seed(11)
    pyro_loss = objective(batch, Weights(kl=0.3, aux=0.5, bwd=0.2))  # aux/bwd: Z-Forcing's, ignored here
    torch.manual_seed(11)
    plain_loss = plain.loss(batch.x, batch.mask, batch.lengths, kl_weight=0.3)
    assert torch.allclose(pyro_loss, plain_loss, rtol=1e-6, atol=1e-6), (pyro_loss, plain_loss)
    pyro_loss.backward()
    plain_loss.backward()
    pairs = plain.parameter_pairs(objective)
    assert {id(theirs) for _, theirs, _ in pairs} == {id(p) for p in objective.parameters()}  # every parameter compared
    for mine, theirs, rows in pairs:
        assert torch.allclose(mine.grad, theirs.grad if rows is None else theirs.grad[rows], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("model", MODELS)
def test_iwae_is_at_least_the_elbo_in_expectation(float64, digits, model):
    objective, batch = make_case(model, "gaussian", digits)
    torch.manual_seed(0)
    elbo = torch.stack([sequence_terms(objective.model, objective.guide, batch)["elbo"] for _ in range(40)])
    iwae = torch.stack([importance_terms(objective.model, objective.guide, batch, num_samples=10)["iwae"]
                        for _ in range(40)])
    gap = iwae.mean(0) - elbo.mean(0)
    noise = 3 * (elbo.std(0) / math.sqrt(40) + iwae.std(0) / math.sqrt(40))
    assert (gap > -noise).all() and gap.mean() > 0, (gap, noise)


@pytest.mark.parametrize("model", MODELS)
def test_padded_steps_change_nothing(float64, digits, model):
    objective, batch = make_case(model, "gaussian", digits)
    garbage = batch.x.clone()
    garbage[~batch.mask] = 1e3
    torch.manual_seed(2)
    clean = sequence_terms(objective.model, objective.guide, batch)
    torch.manual_seed(2)
    dirty = sequence_terms(objective.model, objective.guide, type(batch)(garbage, batch.mask, batch.lengths))
    for key in ("elbo", "rec", "kl"):
        assert torch.allclose(clean[key], dirty[key], atol=1e-10), key


def stepwise_dmm(model, batch, z):
    """The DMM one step at a time (Pyro's examples/dmm.py): z_t ~ p(z_t | z_{t-1}), y_t ~ p(y_t | z_t)."""
    z_prev = model.z_0.expand(batch.batch_size, -1)
    with pyro.plate("sequences", batch.batch_size):
        for t in pyro.markov(range(batch.num_steps)):
            mask_t = batch.mask[:, t]
            loc, scale = model.transition(z_prev)
            pyro.sample(f"z_{t}", dist.Normal(loc, scale).mask(mask_t[:, None]).to_event(1), obs=z[:, t])
            pyro.sample(f"x_{t}", model.emitter.step_dist(z[:, t]).mask(mask_t[:, None]).to_event(1),
                        obs=batch.x[:, t])
            z_prev = z[:, t]


def stepwise_storn(model, batch, z):
    """STORN one step at a time: z_t ~ N(0, I), h_t = LSTM([e(u_t), W z_t], h_{t-1}), y_t ~ p(y_t | h_t)."""
    inputs = model.embedded(batch)[0]
    lstm = model.fwd.lstm
    weights = (lstm.weight_ih_l0, lstm.weight_hh_l0, lstm.bias_ih_l0, lstm.bias_hh_l0)
    state = model.fwd.initial(batch.batch_size, inputs)
    with pyro.plate("sequences", batch.batch_size):
        for t in pyro.markov(range(batch.num_steps)):
            mask_t = batch.mask[:, t]
            standard = dist.Normal(torch.zeros_like(z[:, t]), torch.ones_like(z[:, t]))
            pyro.sample(f"z_{t}", standard.mask(mask_t[:, None]).to_event(1), obs=z[:, t])
            state = torch.lstm_cell(torch.cat([inputs[:, t], model.fwd.z_proj(z[:, t])], -1), state, *weights)
            pyro.sample(f"x_{t}", model.emission.step_dist(state[0]).mask(mask_t[:, None]).to_event(1),
                        obs=batch.x[:, t])


@pytest.mark.parametrize("model,oracle", [("dmm", stepwise_dmm), ("storn", stepwise_storn)])
def test_a_per_step_markov_model_scores_the_same_joint(float64, digits, model, oracle):
    objective, batch = make_case(model, "gaussian", digits)
    guide_trace = poutine.trace(objective.guide).get_trace(batch)
    z = guide_trace.nodes[LATENT_SITE]["value"]
    model_trace = poutine.trace(poutine.replay(objective.model, trace=guide_trace)).get_trace(batch)
    model_trace.compute_log_prob()
    production = model_trace.nodes["z"]["log_prob"] + model_trace.nodes["x"]["log_prob"]
    trace = poutine.trace(oracle).get_trace(objective.model, batch, z)
    trace.compute_log_prob()
    stepwise = sum(node["log_prob"] for node in trace.nodes.values() if node["type"] == "sample")
    assert torch.allclose(production, stepwise, atol=1e-9)


@pytest.mark.parametrize("model", MODELS)
def test_the_prior_guide_has_zero_kl_and_every_parameter_of_the_default_guide_learns(float64, digits, model):
    objective, batch = make_case(model, "gaussian", digits, guide="prior")
    assert torch.equal(sequence_terms(objective.model, objective.guide, batch)["kl"], torch.zeros(batch.batch_size))
    objective, batch = make_case(model, "gaussian", digits)
    objective(batch).backward()
    silent = [name for name, p in objective.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not silent


def test_init_and_embedding_options_reach_the_new_networks(digits):
    for init in ("orthogonal", "torch"):
        storn = build_objective(small_config(model="storn", init=init))
        dmm = build_objective(small_config(model="dmm", init=init))
        weights = {"storn forward": storn.model.fwd.lstm.weight_hh_l0, "storn recognition": storn.guide.rnn.weight_hh_l0,
                   "dmm backward": dmm.guide.rnn.rnn.weight_hh_l0}
        for name, w in weights.items():  # orthogonal_ on (4H, H) or (H, H): orthonormal columns
            orthogonal = torch.allclose(w.detach().T @ w.detach(), torch.eye(w.shape[1]), atol=1e-5)
            assert orthogonal == (init == "orthogonal"), name
        zero_bias = bool((storn.model.fwd.lstm.bias_ih_l0 == 0).all())
        assert zero_bias == (init == "orthogonal")
    leaky = make_model(small_config(model="storn", embedding="leaky"))
    assert type(leaky.embed.act).__name__ == "BoundedLeakyReLU"


@pytest.mark.parametrize("model", MODELS)
def test_generation_has_the_data_shape_replays_a_prime_and_decodes_a_given_z(model):
    sizes, make_batch = EMISSIONS["gaussian"]
    m = make_model(small_config(model=model, **sizes))
    batch = make_batch().to("cpu", torch.float32)
    out = m.generate(3, 6, prime=batch.x[:, :2])
    assert out.shape == (3, 6, 5) and torch.equal(out[:, :2], batch.x[:, :2])
    z = torch.zeros(3, 6, 3)
    assert torch.equal(m.generate(3, 6, z=z, mean=True), m.generate(3, 6, z=z, mean=True))


def test_guides_that_do_not_fit_are_refused_by_name():
    with pytest.raises(ValueError, match="--guide backward does not fit --model dmm; its guides: combiner, prior"):
        make_guide("backward", make_model(small_config(model="dmm")))
    with pytest.raises(ValueError, match="--guide combiner does not fit --model storn; its guides: recognition, prior"):
        make_guide("combiner", make_model(small_config(model="storn")))


def test_a_sequence_alone_scores_what_it_scores_in_a_padded_batch_under_the_same_z(float64, digits):
    for model in MODELS:
        objective, batch = make_case(model, "bernoulli", digits)
        trace = poutine.trace(objective.guide).get_trace(batch)
        z = trace.nodes[LATENT_SITE]["value"]
        joint = poutine.trace(poutine.replay(objective.model, trace=trace)).get_trace(batch)
        joint.compute_log_prob()
        alone = collate_sequences([batch.x[2, :batch.lengths[2]].numpy()]).to("cpu", torch.float64)
        z_alone = z[2:3, :batch.lengths[2]]
        conditioned = poutine.condition(objective.model, data={LATENT_SITE: z_alone})
        one = poutine.trace(conditioned).get_trace(alone)
        one.compute_log_prob()
        for site in ("z", "x"):
            assert torch.allclose(one.nodes[site]["log_prob"][0], joint.nodes[site]["log_prob"][2], atol=1e-10), (model, site)
