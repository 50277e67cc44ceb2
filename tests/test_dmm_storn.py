"""The DMM and STORN against plain-PyTorch transcriptions (loss and every gradient), and their options.

The checks every model shares (IWAE >= ELBO, padding, per-step oracles, generation) are in
test_baselines.py, parametrized over these models too.
"""

import pyro.poutine as poutine
import pytest
import torch

from benchmarks.baselines_reference import PlainDMM, PlainSTORN
from pyro_zforcing.build import build_objective
from pyro_zforcing.data import collate_sequences
from pyro_zforcing.guides import make_guide
from pyro_zforcing.infer import Weights, sequence_terms
from pyro_zforcing.models import LATENT_SITE, make_model

from conftest import ragged_digit_batch, small_config
from test_baselines import EMISSIONS

PLAIN = {"dmm": PlainDMM, "storn": PlainSTORN}
MODELS = sorted(PLAIN)


def make_case(model, emission, digits, guide=None, *, kl="sampled", **options):
    sizes, make_batch = EMISSIONS[emission]
    objective = build_objective(small_config(model=model, **sizes, **options), guide, kl=kl).double()
    batch = ragged_digit_batch(digits) if make_batch is None else make_batch()
    return objective, batch


@pytest.mark.parametrize("kl", ["analytic", "sampled"])
@pytest.mark.parametrize("embedding", ["linear", "leaky"])
@pytest.mark.parametrize("emission", sorted(EMISSIONS))
@pytest.mark.parametrize("model", MODELS)
def test_loss_and_gradients_equal_the_plain_torch_transcription_from_the_same_noise(
        float64, digits, model, emission, embedding, kl):
    """Under both KL estimators: the plain transcription's analytic KL is the closed-form Gaussian KL
    written out (``gauss_kl``), its sampled one log q(z) - log p(z) of the same z."""
    objective, batch = make_case(model, emission, digits, embedding=embedding, kl=kl)
    plain = PLAIN[model].like(objective)
    torch.manual_seed(11)
    pyro_loss = objective(batch, Weights(kl=0.3, aux=0.5, bwd=0.2))  # aux/bwd: Z-Forcing's, ignored here
    torch.manual_seed(11)
    plain_loss = plain.loss(batch.x, batch.mask, batch.lengths, kl_weight=0.3, kl=kl)
    assert torch.allclose(pyro_loss, plain_loss, rtol=1e-6, atol=1e-6), (pyro_loss, plain_loss)
    pyro_loss.backward()
    plain_loss.backward()
    pairs = plain.parameter_pairs(objective)
    assert {id(theirs) for _, theirs, _ in pairs} == {id(p) for p in objective.parameters()}  # every parameter compared
    for mine, theirs, rows in pairs:
        assert torch.allclose(mine.grad, theirs.grad if rows is None else theirs.grad[rows], rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("model", MODELS)
def test_the_prior_guide_has_exactly_zero_kl(float64, digits, model):
    objective, batch = make_case(model, "gaussian", digits, guide="prior")
    assert torch.equal(sequence_terms(objective.model, objective.guide, batch)["kl"], torch.zeros(batch.batch_size))


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


@pytest.mark.parametrize("first_prior", ["transition", "standard"])
def test_the_dmm_prior_of_z_1_is_the_transition_of_z_0_or_a_standard_normal(float64, first_prior):
    """log p(z) of the DMM's prior against an independent sum of Normal log-densities: p(z_1) is
    N(transition(z_0)) (Pyro's) or N(0, I) (the authors' code), p(z_t | z_{t-1}) the transition."""
    from torch.distributions import Normal

    torch.manual_seed(3)
    model = make_model(small_config(model="dmm", input_dim=5, emission="gaussian", first_prior=first_prior)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    batch = collate_sequences([torch.randn(n, 5).double().numpy() for n in (6, 2, 4)])
    z = torch.randn(3, 6, 3, dtype=torch.float64)
    trace = poutine.trace(poutine.condition(model, data={LATENT_SITE: z})).get_trace(batch)
    got = trace.nodes[LATENT_SITE]["fn"].log_prob(z)
    for b, n in enumerate((6, 2, 4)):
        if first_prior == "standard":
            first = Normal(torch.zeros(3, dtype=torch.float64), 1.0)
        else:
            first = Normal(*model.transition(model.z_0))
        expected = first.log_prob(z[b, 0]).sum()
        for t in range(1, n):
            expected = expected + Normal(*model.transition(z[b, t - 1])).log_prob(z[b, t]).sum()
        assert torch.allclose(got[b], expected, rtol=1e-10, atol=1e-10), (b, got[b], expected)
    assert ("z_0" in dict(model.named_parameters())) == (first_prior == "transition")
    torch.manual_seed(0)
    assert torch.isfinite(model.generate(4, 5)).all()


def test_first_prior_is_an_option_of_the_dmm_only_and_a_flag():
    from pyro_zforcing.cli.flags import model_sizes_from
    from pyro_zforcing.cli.train import train_parser

    with pytest.raises(ValueError, match="first_prior='standard' is an option of the dmm model, not 'vrnn'"):
        small_config(model="vrnn", first_prior="standard")
    with pytest.raises(ValueError, match="first_prior must be one of"):
        small_config(model="dmm", first_prior="learned")
    args = train_parser().parse_args(["--model", "dmm", "--first-prior", "standard"])
    assert model_sizes_from(args)["first_prior"] == "standard"


def test_the_closed_form_kl_of_the_transcriptions_is_the_monte_carlo_mean_of_log_q_minus_log_p(float64):
    """gauss_kl (the plain transcriptions' analytic KL) against an independent estimate: the mean
    of log q(z) - log p(z) over 200,000 draws z ~ q, within 5 standard errors."""
    from benchmarks.baselines_reference import gauss_kl, gauss_scale_log_density

    torch.manual_seed(5)
    for _ in range(3):  # generated Gaussians, 4 dimensions
        mu_q, mu_p = torch.randn(4, dtype=torch.float64), torch.randn(4, dtype=torch.float64)
        scale_q, scale_p = torch.rand(4, dtype=torch.float64) + 0.3, torch.rand(4, dtype=torch.float64) + 0.3
        z = mu_q + scale_q * torch.randn(200_000, 4, dtype=torch.float64)
        draws = gauss_scale_log_density(z, mu_q, scale_q) - gauss_scale_log_density(z, mu_p, scale_p)
        exact = gauss_kl(mu_q, scale_q, mu_p, scale_p)
        assert abs(float(draws.mean() - exact)) < 5 * float(draws.std()) / 200_000 ** 0.5
    assert float(gauss_kl(mu_q, scale_q, mu_q, scale_q)) == 0.0
