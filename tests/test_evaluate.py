"""Per-sequence bounds: ordering, expectations, an independent plain-torch IWAE, an exact log p(x)."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
import torch.nn as nn

from benchmarks.reference import PlainZForcing
from pyro_zforcing.data import collate_sequences
from pyro_zforcing.data.base import DataInfo
from pyro_zforcing.data.base import length_batches
from pyro_zforcing.evaluation.bounds import evaluate_split, markdown_table, particle_chunk, values_per_step
from pyro_zforcing.evaluation.latents import aggregate_posterior_mi, latent_summary, mean_correlations, posterior_steps
from pyro_zforcing.infer import importance_terms, iwae_bound, sequence_terms
from pyro_zforcing.models import LATENT_SITE, OBS_SITE
from pyro_zforcing.build import build_objective

from conftest import ragged_digit_batch, small_config


@pytest.fixture
def zforcing(digits, float64):
    torch.manual_seed(0)
    objective = build_objective(small_config(), "backward")
    return objective, ragged_digit_batch(digits)


def replicate(fn, reps):
    """``reps`` independent draws of a per-sequence estimate, stacked ``(reps, B)``."""
    return torch.stack([fn() for _ in range(reps)])


def replicas(batch, reps):
    """The batch repeated: each copy of a sequence gets its own independent draws."""
    return batch.repeat(reps)


def by_replica(values, reps):
    return values.view(reps, -1)


def test_elbo_iwae_k_and_iwae_larger_k_are_ordered_in_expectation(zforcing):
    objective, batch = zforcing
    model, guide = objective.model, objective.guide
    reps = 60
    many = replicas(batch, reps)
    elbo = by_replica(sequence_terms(model, guide, many)["elbo"].detach(), reps)
    iwae5 = by_replica(iwae_bound(model, guide, many, num_samples=5), reps)
    iwae25 = by_replica(iwae_bound(model, guide, many, num_samples=25, chunk=7), reps)
    for low, high in ((elbo, iwae5), (iwae5, iwae25)):
        diff = high - low  # (reps, B): independent replicates of the per-sequence difference
        stderr = diff.std(0) / math.sqrt(reps)
        assert torch.all(diff.mean(0) > -3 * stderr), (diff.mean(0), stderr)
    # an untrained guide is far from the posterior: the gaps are clearly positive, not just >= 0
    assert torch.all(iwae25.mean(0) - elbo.mean(0) > 0.5)


def test_iwae_with_one_sample_has_the_elbo_expectation(zforcing):
    objective, batch = zforcing
    model, guide = objective.model, objective.guide
    reps = 400
    many = replicas(batch, reps)
    elbo = by_replica(sequence_terms(model, guide, many)["elbo"].detach(), reps)
    iwae1 = by_replica(iwae_bound(model, guide, many, num_samples=1), reps)
    stderr = torch.sqrt(elbo.var(0) / reps + iwae1.var(0) / reps)
    assert torch.all((iwae1.mean(0) - elbo.mean(0)).abs() < 4 * stderr)


def test_iwae_matches_plain_torch_log_weights_from_the_same_noise(zforcing):
    objective, batch = zforcing
    plain = PlainZForcing.like(objective)
    k, size, z_dim = 6, batch.batch_size, objective.model.config.z_dim
    torch.manual_seed(21)
    terms = importance_terms(objective.model, objective.guide, batch, num_samples=k)
    torch.manual_seed(21)
    eps = torch.randn(k * size, batch.num_steps, z_dim, dtype=torch.float64)  # the guide's one draw
    log_w = torch.empty(k, size, dtype=torch.float64)
    with torch.no_grad():
        for i in range(k):
            for b, n in enumerate(batch.lengths.tolist()):
                alone = batch.x[b:b + 1, :n]
                log_w[i, b] = -plain.loss(alone, batch.mask[b:b + 1, :n], batch.lengths[b:b + 1],
                                          eps=eps[i * size + b:i * size + b + 1, :n])
    expected = torch.logsumexp(log_w, 0) - math.log(k)
    assert torch.allclose(terms["iwae"], expected, atol=1e-9)
    assert torch.allclose(terms["elbo"], log_w.mean(0), atol=1e-9)
    assert torch.allclose(terms["rec"] - terms["kl"], terms["elbo"], atol=1e-9)


def test_chunked_particles_give_the_same_bound_as_one_pass(zforcing):
    objective, batch = zforcing
    torch.manual_seed(3)
    whole = importance_terms(objective.model, objective.guide, batch, num_samples=1)
    torch.manual_seed(3)
    again = importance_terms(objective.model, objective.guide, batch, num_samples=1, chunk=1)
    assert torch.equal(whole["iwae"], again["iwae"])
    # streaming logsumexp over chunks: K=9 in chunks of 4 (4+4+1) vs one pass of all 9,
    # compared through the identical per-particle log-weights of a fixed-seed draw per chunk
    torch.manual_seed(5)
    chunks = [importance_terms(objective.model, objective.guide, batch, num_samples=n) for n in (4, 4, 1)]
    merged = torch.logsumexp(torch.stack([c["iwae"] + math.log(n) for c, n in zip(chunks, (4, 4, 1))]), 0)
    torch.manual_seed(5)
    streamed = importance_terms(objective.model, objective.guide, batch, num_samples=9, chunk=4)
    assert torch.allclose(streamed["iwae"], merged - math.log(9), atol=1e-12)


def test_bounds_exclude_the_aux_factor(zforcing):
    objective, batch = zforcing
    torch.manual_seed(8)
    before = importance_terms(objective.model, objective.guide, batch, num_samples=3)
    with torch.no_grad():
        for p in objective.model.aux.parameters():
            p.add_(1.0)
        for p in objective.model.bwd_head.parameters():
            p.add_(1.0)
    torch.manual_seed(8)
    after = importance_terms(objective.model, objective.guide, batch, num_samples=3)
    for key in ("iwae", "elbo"):
        assert torch.equal(before[key], after[key])


def test_kl_per_step_sums_to_an_unbiased_kl_and_is_zero_on_padding(zforcing):
    objective, batch = zforcing
    torch.manual_seed(4)
    # 1600 draws: the Monte Carlo KL's standard error is then 0.04-0.07 nats on these sequences (per
    # draw std 1.5-2.8), so the tolerance below is ~3 standard errors (400 draws left it at ~1.5)
    terms = importance_terms(objective.model, objective.guide, batch, num_samples=1600, chunk=400,
                             kl_per_step=True)
    steps = terms["kl_steps"]
    assert steps.shape == batch.mask.shape
    assert torch.all(steps[~batch.mask] == 0) and torch.all(steps >= 0)
    # E_q[log q - log p] = E_q[sum_t KL_t]: the Monte Carlo and analytic estimates agree
    assert torch.allclose(steps.sum(-1), terms["kl"], rtol=0.05, atol=0.05)


# ----------------------------------------------------------------------------- linear Gaussian

class LinearGaussianModel(nn.Module):
    """z ~ N(0, I_T) per sequence, x_t = a z_t + N(0, s^2): log p(x) = sum_t log N(x_t; 0, a^2 + s^2)."""

    def __init__(self, a=1.5, s=0.7):
        super().__init__()
        self.a, self.s = a, s

    def forward(self, batch, **weights):
        mask = batch.mask
        with pyro.plate("sequences", batch.batch_size):
            z = pyro.sample(LATENT_SITE, dist.Normal(torch.zeros_like(batch.x), 1.0).mask(mask[..., None]).to_event(2))
            pyro.sample(OBS_SITE, dist.Normal(self.a * z, self.s).mask(mask[..., None]).to_event(2), obs=batch.x)

    def log_marginal(self, batch):
        var = self.a ** 2 + self.s ** 2
        return (dist.Normal(0.0, math.sqrt(var)).log_prob(batch.x) * batch.mask[..., None]).sum((-1, -2))

    def posterior(self, x):
        precision = 1 + self.a ** 2 / self.s ** 2
        return self.a / self.s ** 2 * x / precision, 1 / math.sqrt(precision)


class LinearGaussianGuide(nn.Module):
    """The exact posterior, optionally with its mean shifted and scale inflated (a worse proposal)."""

    def __init__(self, model, shift=0.0, inflate=1.0):
        super().__init__()
        self.model, self.shift, self.inflate = model, shift, inflate

    def forward(self, batch, **weights):
        loc, scale = self.model.posterior(batch.x)
        with pyro.plate("sequences", batch.batch_size):
            pyro.sample(LATENT_SITE, dist.Normal(loc + self.shift, scale * self.inflate)
                        .mask(batch.mask[..., None]).to_event(2))


@pytest.fixture
def gaussian_sequences(float64):
    gen = torch.Generator().manual_seed(6)
    seqs = [(1.7 * torch.randn(n, 2, generator=gen)).numpy() for n in (5, 3, 4)]
    return collate_sequences(seqs).to("cpu", torch.float64)


def test_iwae_with_the_exact_posterior_is_log_marginal_per_sequence(gaussian_sequences):
    model = LinearGaussianModel()
    exact = model.log_marginal(gaussian_sequences)
    bound = iwae_bound(model, LinearGaussianGuide(model), gaussian_sequences, num_samples=4)
    assert len(set(exact.tolist())) == 3  # different per sequence: nothing was summed over the batch
    assert torch.allclose(bound, exact, atol=1e-10)


def test_iwae_rises_toward_the_exact_log_marginal_as_k_grows(gaussian_sequences):
    model = LinearGaussianModel()
    guide = LinearGaussianGuide(model, shift=0.5, inflate=1.6)
    exact = model.log_marginal(gaussian_sequences)
    reps = 30
    gaps = {}
    for k in (1, 10, 100, 1000):
        draws = replicate(lambda: iwae_bound(model, guide, gaussian_sequences, num_samples=k, chunk=250), reps)
        gaps[k] = exact - draws.mean(0)
        stderr = draws.std(0) / math.sqrt(reps)
        assert torch.all(gaps[k] > -3 * stderr - 1e-9), (k, gaps[k])  # never above log p(x)
    for small, large in ((1, 10), (10, 100), (100, 1000)):
        assert torch.all(gaps[large] < gaps[small])
    assert torch.all(gaps[1] > 1.0) and torch.all(gaps[1000] < 0.1 * gaps[1])


# ----------------------------------------------------------------------------- split and units

def test_evaluate_split_reports_per_unit_bounds_and_text_perplexity(float64):
    torch.manual_seed(2)
    objective = build_objective(small_config(input_dim=11, emission="categorical"), "backward")
    gen = np.random.RandomState(0)
    sequences = [gen.randint(0, 11, size=n) for n in (7, 3, 5, 9, 4)]
    info = DataInfo(name="toy-text", emission="categorical", dim=11, unit="word",
                    extra={"sequence_unit": "sentence"})
    result = evaluate_split(objective, sequences, info, num_samples=4, batch_size=2)
    assert result.elbo.shape == (5,)
    assert np.all(result.gap >= -1e-12)  # log-mean-exp of the K log-weights >= their mean
    words = sum(len(s) for s in sequences)
    assert result.per_unit()["iwae"] == pytest.approx(result.iwae.sum() / words)
    assert result.perplexity()["iwae"] == pytest.approx(math.exp(-result.iwae.sum() / words))
    assert [len(k) for k in result.kl_steps] == [7, 3, 5, 9, 4]
    report = result.to_dict()
    assert report["units"] == {"sequence": "sentence", "step": "word", "unit": "word", "units_per_step": 1}
    table = markdown_table(report)
    assert "| IWAE (K=4) |" in table and "perplexity" in table and "nats / word" in table
    assert report["per_sequence_median"]["iwae"] == sorted(result.iwae)[2]  # the middle of 5
    assert "median / sentence" in table and f"{sorted(result.elbo)[2]:.3f}" in table


def test_evaluate_split_batches_do_not_change_the_bounds(digits, float64):
    torch.manual_seed(2)
    objective = build_objective(small_config(), "backward")
    sequences = [s[:n] for s, n in zip(digits.test[:5], (64, 30, 50, 12, 64))]
    torch.manual_seed(9)
    together = evaluate_split(objective, sequences, digits.info, num_samples=1, batch_size=5)
    (order,) = length_batches([len(s) for s in sequences], batch_size=5, step_size=1)
    assert order == [0, 4, 2, 1, 3]  # longest first, one batch
    torch.manual_seed(9)
    eps = torch.randn(5, 64, 3, dtype=torch.float64)  # the guide's draw for the sorted batch
    plain = PlainZForcing.like(objective)
    separately = np.zeros(5)
    with torch.no_grad():
        for row, i in enumerate(order):
            batch = collate_sequences([sequences[i]]).to("cpu", torch.float64)
            noise = eps[row:row + 1, :len(sequences[i])]
            separately[i] = -float(plain.loss(batch.x, batch.mask, batch.lengths, eps=noise))
    assert np.allclose(together.iwae, separately, atol=1e-9)
    assert together.per_step()["elbo"] == pytest.approx(together.per_unit()["elbo"])  # 1 pixel per step


def test_length_batches_bound_the_padded_size_and_particles_fill_the_budget():
    lengths = [3, 50, 7, 50, 20, 2, 9]
    batches = length_batches(lengths, batch_size=3, step_size=4, max_elements=450)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3
        padded = len(b) * max(lengths[i] for i in b) * 4
        assert padded <= 450 or len(b) == 1
    assert batches[0] == [1, 3]  # 3 x 50 x 4 = 600 > 450
    batch = collate_sequences([np.zeros((10, 4), np.float32)] * 2)  # 20 steps of 1024 + 4 values per particle
    assert particle_chunk(batch, 25, max_elements=20 * 1028 * 10) == 10
    assert particle_chunk(batch, 5, max_elements=20 * 1028 * 10) == 5
    assert particle_chunk(batch, 25, max_elements=10) == 1
    model = build_objective(small_config(input_dim=4), "backward").model  # H 7, E 6, M 5, Z 3
    assert values_per_step(model, 4) == 7 * 7 + 2 * 6 + 5 + 6 * 3 + 4


# ----------------------------------------------------------------------------- cost of evaluation

@pytest.mark.parametrize("family", ["categorical", "gaussian", "bernoulli"])
def test_emission_scored_in_slices_equals_the_torch_distribution_over_all_steps(float64, monkeypatch, family):
    import pyro.distributions as dist
    from pyro_zforcing import distributions as sequence_dists
    from pyro_zforcing.emissions import FactorisedEmission

    torch.manual_seed(4)
    head = FactorisedEmission(5, 13, family, clamp=8.0)
    state, mask = torch.randn(3, 9, 5), torch.arange(9)[None, :] < torch.tensor([[9], [4], [1]])
    y = torch.randint(0, 13, (3, 9)) if family == "categorical" else \
        (torch.rand(3, 9, 13) > 0.5).double() if family == "bernoulli" else torch.randn(3, 9, 13)
    out = torch.nn.functional.linear(state, head.linear.weight, head.linear.bias)  # a second computation
    if family == "categorical":
        steps = dist.Categorical(logits=out).log_prob(y)
    elif family == "bernoulli":
        steps = dist.Bernoulli(logits=out).log_prob(y).sum(-1)
    else:
        loc, logvar = out.clamp(-8, 8).chunk(2, -1)
        steps = dist.Normal(loc, torch.exp(logvar / 2)).log_prob(y).sum(-1)
    expected = (steps * mask).sum(-1)
    monkeypatch.setattr(sequence_dists, "EMISSION_ELEMENTS", 2 * 3 * head.linear.out_features)  # 2 steps a slice
    with pyro.validation_enabled(False), torch.no_grad():
        sliced = head.dist(state, mask).log_prob(y)
    with torch.no_grad():
        validated = head.dist(state, mask).log_prob(y)  # validation on: torch distributions score
    whole = head.dist(state, mask).log_prob(y)  # with gradients: all steps at once
    for got in (sliced, validated, whole):
        assert got.shape == (3,)
        assert torch.allclose(got, expected, atol=1e-12), (got, expected)


def test_evaluate_split_turns_pyro_validation_off_unless_asked(digits):
    from pyro.distributions.util import is_validation_enabled

    objective = build_objective(small_config(), "backward")
    seen = []
    objective.guide.register_forward_pre_hook(lambda module, args: seen.append(is_validation_enabled()))
    assert is_validation_enabled()  # conftest turns it on, as Pyro's default is
    evaluate_split(objective, digits.test[:3], digits.info, num_samples=2)
    evaluate_split(objective, digits.test[:3], digits.info, num_samples=2, validate=True)
    assert seen == [False, True] and is_validation_enabled()


# ----------------------------------------------------------------------------- what z carries

@pytest.mark.parametrize("a,sigma", [(2.0, 1.0), (0.5, 1.0), (3.0, 0.5)])
def test_mutual_information_estimate_matches_a_linear_gaussian_within_its_standard_error(a, sigma):
    """z ~ N(0, I_2), x = a z + N(0, sigma^2): the exact posterior is N(v a x / sigma^2, v) with
    v = 1 / (1 + a^2 / sigma^2), and I(x; z) = 0.5 log(1 + a^2 / sigma^2) per dimension."""
    gen = torch.Generator().manual_seed(0)
    n, dims = 4000, 2
    z_true = torch.randn(n, dims, generator=gen, dtype=torch.float64)
    x = a * z_true + sigma * torch.randn(n, dims, generator=gen, dtype=torch.float64)
    var = 1.0 / (1.0 + a ** 2 / sigma ** 2)
    loc, scale = var * a * x / sigma ** 2, torch.full_like(x, math.sqrt(var))
    z = loc + scale * torch.randn(n, dims, generator=gen, dtype=torch.float64)
    estimate = aggregate_posterior_mi(z, loc, scale, chunk=333)
    truth = dims * 0.5 * math.log(1 + a ** 2 / sigma ** 2)
    assert estimate["pairs"] == n and estimate["stderr"] > 0
    assert abs(estimate["nats"] - truth) < 3 * estimate["stderr"]


def test_mutual_information_of_posteriors_that_ignore_the_data_is_zero():
    gen = torch.Generator().manual_seed(1)
    loc, scale = torch.zeros(500, 3, dtype=torch.float64), torch.ones(500, 3, dtype=torch.float64)
    z = torch.randn(500, 3, generator=gen, dtype=torch.float64)
    assert aggregate_posterior_mi(z, loc, scale)["nats"] == pytest.approx(0.0, abs=1e-12)


def test_latent_summary_of_text_reports_mi_and_correlations_with_length_and_position(float64):
    torch.manual_seed(2)
    objective = build_objective(small_config(input_dim=11, emission="categorical"), "backward")
    gen = np.random.RandomState(0)
    sequences = [gen.randint(0, 11, size=n) for n in (7, 3, 5, 9, 4, 12, 6)]
    info = DataInfo(name="toy-text", emission="categorical", dim=11, unit="word", extra={"sequence_unit": "sentence"})
    summary = latent_summary(objective, sequences, info, batch_size=3)
    steps = posterior_steps(objective, sequences, batch_size=3)
    assert len(steps["z"]) == sum(len(s) for s in sequences)
    assert steps["position"].max() == 12 and sorted(set(steps["length"].tolist())) == [3, 4, 5, 6, 7, 9, 12]
    mi = summary["mutual_information"]
    assert 0 < mi["nats"] <= mi["log_pairs"] and mi["pairs"] == len(steps["z"])
    correlations = summary["correlations"]
    assert len(correlations["length"]) == len(correlations["position"]) == 3  # z_dim
    loc = steps["loc"].numpy()
    expected = np.corrcoef(loc[:, 1], steps["position"].numpy())[0, 1]
    assert mean_correlations(steps)["position"][1] == pytest.approx(expected)
    result = evaluate_split(objective, sequences, info, num_samples=2)
    result.latents = summary
    table = markdown_table(result.to_dict())
    assert "I(y; z_t) under the aggregate posterior" in table and "sentence length" in table
