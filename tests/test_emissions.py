"""The emission families (pyro_zforcing.emissions) against independent truth: NADE probabilities
over every frame against a key-by-key transcription, the ar-gmm density integrated on a grid and
against a plain transcription, sample frequencies and moments against the densities, and every
model with each autoregressive emission: bounds, samples under the mask, checkpoints."""

import itertools
import math

import numpy as np
import pytest
import torch
from pyro.infer import Predictive
from scipy.special import expit, logsumexp
from scipy.stats import norm

from pyro_zforcing import config as config_module
from pyro_zforcing import distributions as distributions_module
from pyro_zforcing.build import build_objective, load_trained, model_config_for
from pyro_zforcing.checkpoint import config_payload, save_checkpoint
from pyro_zforcing.config import EMISSIONS as EMISSION_NAMES, MODEL_NAMES, DataConfig, TrainConfig
from pyro_zforcing.data import collate_sequences
from pyro_zforcing.data.base import DataInfo
from pyro_zforcing.emissions import EMISSIONS, ARGMMEmission, ARRNNEmission, NADEEmission
from pyro_zforcing.infer import scalar_count, weight_masks
from pyro_zforcing.infer import Weights, importance_terms, sequence_terms
from pyro_zforcing.models import OBS_SITE

from conftest import small_config


def randomised(module: torch.nn.Module, seed: int, scale: float = 1.0) -> torch.nn.Module:
    """``module`` with every parameter drawn N(0, scale^2): far from uniform densities."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module


def all_frames(d: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=d)), dtype=torch.float64)


def nade_by_hand(head: NADEEmission, state: np.ndarray, y: np.ndarray) -> float:
    """log p(y | s) of one frame, key by key, from the density in NADEEmission's docstring."""
    a_v, c_v = head.visible_bias.weight.detach().numpy(), head.visible_bias.bias.detach().numpy()
    a_h, c_h = head.hidden_bias.weight.detach().numpy(), head.hidden_bias.bias.detach().numpy()
    w, v = head.weight_in.detach().numpy(), head.weight_out.detach().numpy()
    b_v, b_h = a_v @ state + c_v, a_h @ state + c_h
    total = 0.0
    for d in range(len(y)):
        a = b_h.copy()
        for j in range(d):
            a += w[:, j] * y[j]
        p = expit(b_v[d] + v[d] @ expit(a))
        total += math.log(p if y[d] == 1 else 1 - p)
    return total


# ----------------------------------------------------------------------------- NADE


@pytest.mark.parametrize("keys", [6, 8, 10])
def test_nade_probabilities_of_every_frame_sum_to_one_and_equal_a_key_by_key_transcription(float64, keys):
    head = randomised(NADEEmission(4, keys, hidden=5), seed=keys)
    state = torch.randn(4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    frames = all_frames(keys)
    with torch.no_grad():
        log_p = head.step_log_prob(state.expand(len(frames), 4), frames)
    assert torch.logsumexp(log_p, 0).item() == pytest.approx(0.0, abs=1e-10)
    by_hand = [nade_by_hand(head, state.numpy(), y) for y in frames.numpy()[:: max(1, len(frames) // 64)]]
    np.testing.assert_allclose(log_p[:: max(1, len(frames) // 64)].numpy(), by_hand, rtol=1e-10, atol=1e-10)
    assert log_p.max() - log_p.min() > 5  # the frames are far from equally likely: the test can fail


def test_nade_logits_from_the_on_keys_equal_the_dense_cumulative_sum_at_every_density(float64):
    head = randomised(NADEEmission(3, 12, hidden=5), seed=9)
    generator = torch.Generator().manual_seed(4)
    state = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    for density in (0.0, 0.05, 0.3, 0.7, 1.0):
        y = (torch.rand(5, 12, generator=generator, dtype=torch.float64) < density).double()
        b_v, b_h = head.biases(state)
        dense = head.dense_logits(b_v, b_h, y)
        torch.testing.assert_close(head.logits(b_v, b_h, y), dense, rtol=1e-12, atol=1e-12)


def test_nade_with_one_key_is_a_bernoulli_of_the_right_probability(float64):
    head = randomised(NADEEmission(3, 1, hidden=4), seed=2)
    state = torch.tensor([0.3, -1.2, 0.8])
    b_v = head.visible_bias(state)[0]
    p = torch.sigmoid(b_v + head.weight_out[0] @ torch.sigmoid(head.hidden_bias(state))).item()
    with torch.no_grad():
        log_p = head.step_log_prob(state.expand(2, 3), torch.tensor([[1.0], [0.0]]))
    np.testing.assert_allclose(log_p.numpy(), [math.log(p), math.log(1 - p)], rtol=1e-12)
    np.testing.assert_allclose(head.mean(state).item(), p, rtol=1e-12)


def test_nade_samples_have_the_frequencies_of_the_exact_probabilities(float64):
    keys, draws = 4, 40000
    head = randomised(NADEEmission(2, keys, hidden=3), seed=5)
    state = torch.tensor([0.5, -0.4])
    frames = all_frames(keys)
    with torch.no_grad():
        exact = head.step_log_prob(state.expand(len(frames), 2), frames).exp()
    torch.manual_seed(0)
    samples = head.sample(state, (draws,))
    assert samples.shape == (draws, keys) and set(samples.unique().tolist()) <= {0.0, 1.0}
    codes = (samples * 2 ** torch.arange(keys - 1, -1, -1, dtype=torch.float64)).sum(-1).long()
    freq = torch.bincount(codes, minlength=2 ** keys).double() / draws
    assert ((freq - exact).abs() <= 5 * (exact * (1 - exact) / draws).sqrt() + 1e-4).all()


def test_nade_mean_is_each_keys_probability_given_the_greedy_decode_before_it(float64):
    keys = 6
    head = randomised(NADEEmission(3, keys, hidden=4), seed=7)
    state = torch.randn(3, dtype=torch.float64)
    probs, mode = head.mean_and_mode(state)
    assert torch.equal(mode, (probs > 0.5).double())
    for d in range(keys):  # p(y_d = 1 | y_{<d} = mode_{<d}) from two frames differing only in key d
        one, zero = mode.clone(), mode.clone()
        one[d], zero[d] = 1.0, 0.0
        prefix = [nade_by_hand(NADEPrefix(head, d + 1), state.numpy(), y[: d + 1].numpy()) for y in (one, zero)]
        conditional = math.exp(prefix[0]) / (math.exp(prefix[0]) + math.exp(prefix[1]))
        assert probs[d].item() == pytest.approx(conditional, rel=1e-10)


class NADEPrefix:
    """The first ``keys`` keys of a NADE (its marginal over them: later keys sum out)."""

    def __init__(self, head: NADEEmission, keys: int):
        self.visible_bias = PrefixLinear(head.visible_bias, keys)
        self.hidden_bias = head.hidden_bias
        self.weight_in = head.weight_in[:, :keys]
        self.weight_out = head.weight_out[:keys]


class PrefixLinear:
    def __init__(self, linear: torch.nn.Linear, rows: int):
        self.weight, self.bias = linear.weight[:rows], linear.bias[:rows]


def test_nade_scoring_slices_over_time_without_changing_the_value(float64, monkeypatch):
    head = randomised(NADEEmission(3, 5, hidden=4), seed=3)
    state = torch.randn(2, 7, 3, dtype=torch.float64)
    y = torch.randint(0, 2, (2, 7, 5)).double()
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    whole = head.dist(state, mask).log_prob(y)
    monkeypatch.setattr(distributions_module, "EMISSION_ELEMENTS", 2 * 20)  # one step per slice
    with torch.no_grad():
        sliced = head.dist(state, mask).log_prob(y)
    torch.testing.assert_close(sliced, whole.detach(), rtol=1e-12, atol=1e-12)
    by_hand = [sum(nade_by_hand(head, state[b, t].numpy(), y[b, t].numpy()) for t in range(7) if mask[b, t])
               for b in range(2)]
    np.testing.assert_allclose(whole.detach().numpy(), by_hand, rtol=1e-10)


# ----------------------------------------------------------------------------- ar-gmm


def argmm_by_hand(head: ARGMMEmission, state: np.ndarray, y: np.ndarray) -> float:
    """log p(y | s) of one frame from the density in ARGMMEmission's docstring, with MADE's
    degrees m(k) = 1 + (k mod (D - 1)) and plain loops over units and dimensions."""
    d_all, k_mix = len(y), head.mixtures
    u, c = head.state_in.weight.detach().numpy(), head.state_in.bias.detach().numpy()
    w = head.frame_in.weight.detach().numpy()
    a, e = head.state_out.weight.detach().numpy(), head.state_out.bias.detach().numpy()
    v = head.hidden_out.weight.detach().numpy()
    hidden = u.shape[0]
    degree = [1 + k % max(1, d_all - 1) for k in range(hidden)]
    g = [max(0.0, u[k] @ state + c[k] + sum(w[k, j] * y[j] for j in range(d_all) if j + 1 <= degree[k]))
         for k in range(hidden)]
    per_dim = 2 * k_mix + (k_mix if k_mix > 1 else 0)
    outputs = [[a[d * per_dim + r] @ state + e[d * per_dim + r]
                + sum(v[d * per_dim + r, k] * g[k] for k in range(hidden) if degree[k] < d + 1)
                for r in range(per_dim)] for d in range(d_all)]
    return mixture_log_prob_by_hand(outputs, y, k_mix)


def mixture_log_prob_by_hand(outputs, y: np.ndarray, k_mix: int) -> float:
    """sum_d log sum_k pi_dk N(y_d; mu_dk, exp(logvar_dk)) from each dimension's outputs
    ([logits,] mu, logvar), scipy's normal density."""
    total = 0.0
    for d, out in enumerate(outputs):
        if k_mix == 1:
            weights, loc, logvar = [1.0], out[:1], out[1:]
        else:
            logits = np.array(out[:k_mix])
            weights = np.exp(logits - logsumexp(logits))
            loc, logvar = out[k_mix:2 * k_mix], out[2 * k_mix:]
        total += math.log(sum(wk * norm.pdf(y[d], mk, math.exp(0.5 * lk)) for wk, mk, lk in zip(weights, loc, logvar)))
    return total


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def arrnn_by_hand(head: ARRNNEmission, state: np.ndarray, y: np.ndarray) -> float:
    """log p(y | s) of one frame from the density in ARRNNEmission's docstring, with the GRU
    written out unit by unit (PyTorch's gate order r, z, n) and plain loops."""
    d_all, k_mix, hidden = len(y), head.mixtures, head.hidden
    u, c = head.start.weight.detach().numpy(), head.start.bias.detach().numpy()
    w_i, b_i = head.rnn.weight_ih_l0.detach().numpy()[:, 0], head.rnn.bias_ih_l0.detach().numpy()
    w_h, b_h = head.rnn.weight_hh_l0.detach().numpy(), head.rnn.bias_hh_l0.detach().numpy()
    a, e = head.state_out.weight.detach().numpy(), head.state_out.bias.detach().numpy()
    v = head.hidden_out.weight.detach().numpy()
    per_dim = 2 * k_mix + (k_mix if k_mix > 1 else 0)
    r_state = [math.tanh(u[k] @ state + c[k]) for k in range(hidden)]
    outputs = []
    for d in range(d_all):
        x = y[d - 1] if d > 0 else 0.0
        gate = lambda block, k: w_i[block * hidden + k] * x + b_i[block * hidden + k]
        recur = lambda block, k: sum(w_h[block * hidden + k, j] * r_state[j] for j in range(hidden)) + b_h[block * hidden + k]
        reset = [sigmoid(gate(0, k) + recur(0, k)) for k in range(hidden)]
        update = [sigmoid(gate(1, k) + recur(1, k)) for k in range(hidden)]
        new = [math.tanh(gate(2, k) + reset[k] * recur(2, k)) for k in range(hidden)]
        r_state = [(1 - update[k]) * new[k] + update[k] * r_state[k] for k in range(hidden)]
        outputs.append([a[d * per_dim + r] @ state + e[d * per_dim + r] + sum(v[r, k] * r_state[k] for k in range(hidden))
                        for r in range(per_dim)])
    return mixture_log_prob_by_hand(outputs, y, k_mix)


def random_arrnn(state_dim: int, dim: int, mixtures: int, seed: int) -> ARRNNEmission:
    """Random weights, the GRU's input weights large enough that y_2 clearly depends on y_1."""
    head = randomised(ARRNNEmission(state_dim, dim, mixtures=mixtures, hidden=4), seed=seed, scale=0.5)
    with torch.no_grad():
        head.rnn.weight_ih_l0.mul_(3.0)
    return head


# family -> (a head with random weights from (state_dim, D, mixtures, seed), its density written out by hand)
REAL_HEADS = {"ar-gmm": (lambda state_dim, dim, mixtures, seed: randomised(
                             ARGMMEmission(state_dim, dim, mixtures=mixtures, hidden=6), seed=seed, scale=0.3),
                         argmm_by_hand),
              "ar-rnn": (random_arrnn, arrnn_by_hand)}


@pytest.mark.parametrize("mixtures", [1, 3])
@pytest.mark.parametrize("family", sorted(REAL_HEADS))
def test_real_head_in_two_dimensions_integrates_to_one_and_equals_a_plain_transcription(float64, family, mixtures):
    build, by_hand_of = REAL_HEADS[family]
    head = build(3, 2, mixtures, mixtures)
    state = torch.tensor([0.4, -0.7, 1.1])
    grid = torch.linspace(-12, 12, 1201, dtype=torch.float64)
    y1, y2 = torch.meshgrid(grid, grid, indexing="ij")
    frames = torch.stack([y1, y2], dim=-1).reshape(-1, 2)
    with torch.no_grad():
        density = head.step_log_prob(state.expand(len(frames), 3), frames).exp().reshape(len(grid), len(grid))
    mass = torch.trapezoid(torch.trapezoid(density, grid, dim=1), grid).item()
    assert mass == pytest.approx(1.0, abs=1e-6)
    step = (grid[1] - grid[0]).item()
    independent = torch.outer(density.sum(1), density.sum(0)) * step ** 2
    assert (density - independent).abs().max() > 1e-2 * density.max()  # y_2 depends on y_1: the test can fail
    points = frames[:: len(frames) // 40]
    with torch.no_grad():
        ours = head.step_log_prob(state.expand(len(points), 3), points).numpy()
    by_hand = [by_hand_of(head, state.numpy(), y) for y in points.numpy()]
    finite = np.isfinite(by_hand)  # far grid points underflow in scipy's pdf
    assert finite.sum() > 20
    np.testing.assert_allclose(ours[finite], np.array(by_hand)[finite], rtol=1e-9)
    # the draws' moments are the density's (first and second, both dimensions)
    torch.manual_seed(1)
    draws = head.sample(state, (40000,))
    for index in range(2):
        values = (y1, y2)[index]
        mean = torch.trapezoid(torch.trapezoid(density * values, grid, dim=1), grid).item()
        second = torch.trapezoid(torch.trapezoid(density * values ** 2, grid, dim=1), grid).item()
        std = math.sqrt(second - mean ** 2)
        assert draws[:, index].mean().item() == pytest.approx(mean, abs=5 * std / math.sqrt(len(draws)))
        assert draws[:, index].var().item() == pytest.approx(second - mean ** 2, rel=0.05)


@pytest.mark.parametrize("family", sorted(REAL_HEADS))
def test_real_head_one_dimension_samples_have_the_mixtures_mean_and_variance(float64, family):
    head = REAL_HEADS[family][0](2, 1, 2, 4)
    state = torch.tensor([0.9, -0.3])
    with torch.no_grad():  # one dimension: the state alone sets the mixture, whatever y is
        out = head.outputs(state, torch.full((1,), 7.0))[0]
    weights, loc, scale = torch.softmax(out[:2], 0), out[2:4], torch.exp(0.5 * out[4:6])
    mean = (weights * loc).sum().item()
    variance = (weights * (scale ** 2 + loc ** 2)).sum().item() - mean ** 2
    torch.manual_seed(2)
    draws = head.sample(state, (100000,))[:, 0]
    assert draws.mean().item() == pytest.approx(mean, abs=5 * math.sqrt(variance / len(draws)))
    assert draws.var().item() == pytest.approx(variance, rel=0.03)
    assert head.mean(state).item() == pytest.approx(mean, rel=1e-12)


@pytest.mark.parametrize("family", sorted(REAL_HEADS))
def test_real_head_broadcasts_the_states_and_the_frames_leading_dimensions(float64, family):
    """States of K samples against one batch of frames (as importance sampling scores them) give
    what the frames expanded to the states' shape give."""
    head = REAL_HEADS[family][0](3, 5, 2, 6)
    torch.manual_seed(3)
    states, frames = torch.randn(7, 2, 3), torch.randn(2, 5)
    with torch.no_grad():
        broadcast = head.step_log_prob(states, frames)
        expanded = head.step_log_prob(states, frames.expand(7, 2, 5))
    assert broadcast.shape == (7, 2)
    torch.testing.assert_close(broadcast, expanded, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["ar-gmm", "ar-rnn", "nade"])
def test_counted_parameters_are_the_entries_a_gradient_reaches(float64, family):
    """A masked-out MADE entry never acts: the count is the scalars log p's gradient reaches
    (NADE: all but W's last column; the low-level RNN: all)."""
    emission = {"ar-gmm": lambda: ARGMMEmission(3, 5, mixtures=2, hidden=7),
                "ar-rnn": lambda: ARRNNEmission(3, 5, mixtures=2, hidden=4),
                "nade": lambda: NADEEmission(3, 6, hidden=4)}[family]()
    head = randomised(emission, seed=5)
    torch.manual_seed(0)
    state = torch.randn(64, 3)
    frames = (torch.rand(64, head.out_dim) < 0.5).double() if isinstance(head, NADEEmission) else torch.randn(64, 5)
    head.step_log_prob(state, frames).sum().backward()
    reached = sum(int((p.grad != 0).sum()) for p in head.parameters())
    if family == "ar-rnn":
        assert not weight_masks(head) and scalar_count(head.parameters(), {}) == reached
    elif family == "ar-gmm":
        assert scalar_count(head.parameters(), weight_masks(head)) == reached
        zeros = int((head.mask_in == 0).sum() + (head.mask_out == 0).sum())
        assert sum(p.numel() for p in head.parameters()) - reached == zeros > 0
    else:  # no key reads the last key's column of W (as in any NADE): stored and counted, documented
        assert not weight_masks(head) and (head.weight_in.grad[:, -1] == 0).all()
        assert scalar_count(head.parameters(), {}) == reached + head.hidden


def test_argmm_log_variance_is_unclamped_but_for_the_float_range(float64):
    head = ARGMMEmission(1, 1, mixtures=1, hidden=2)
    with torch.no_grad():
        head.state_out.weight.zero_()
        head.state_out.bias.copy_(torch.tensor([0.0, -30.0]))  # logvar -30: beyond any +-8 clamp
    log_p = head.step_log_prob(torch.zeros(1, 1), torch.zeros(1, 1)).item()
    assert log_p == pytest.approx(-0.5 * (math.log(2 * math.pi) - 30.0), rel=1e-12)


# ----------------------------------------------------------------------------- the registry and the models


def test_registry_names_are_the_configs_and_each_family_builds_from_a_config():
    assert set(EMISSIONS) == set(EMISSION_NAMES) == set(config_module.EMISSION_DATA)
    for name in EMISSIONS:
        dim = 3
        config = small_config(input_dim=dim, emission=name)
        head = EMISSIONS[name](config, 4)
        assert head.family == name and head.out_dim == dim


def test_an_emission_must_fit_the_datas_kind():
    binary = DataInfo(name="jsb", emission="bernoulli", dim=4, unit="time step")
    real = DataInfo(name="speech", emission="gaussian", dim=4, unit="sample")
    assert model_config_for(binary, emission="nade").emission == "nade"
    assert model_config_for(real, emission="ar-gmm", mixtures=3).mixtures == 3
    with pytest.raises(ValueError, match="--emission nade does not fit dataset 'speech'.*gaussian, gmm, ar-gmm"):
        model_config_for(real, emission="nade")
    with pytest.raises(ValueError, match="--emission ar-gmm does not fit dataset 'jsb'.*bernoulli, nade"):
        model_config_for(binary, emission="ar-gmm")


LENGTHS = (6, 3, 5)
DIM = 4


def binary_batch():
    return collate_sequences([np.random.default_rng(i).integers(0, 2, (n, DIM)).astype(np.float64)
                              for i, n in enumerate(LENGTHS)])


def real_batch():
    return collate_sequences([np.random.default_rng(i).normal(size=(n, DIM)) for i, n in enumerate(LENGTHS)])


AUTOREGRESSIVE = {"nade": (dict(nade_hidden=5), binary_batch, "bernoulli"),
                  "ar-gmm": (dict(made_hidden=7, mixtures=2), real_batch, "gaussian"),
                  "ar-rnn": (dict(frame_rnn_hidden=4, mixtures=2), real_batch, "gaussian")}


def objective_for(model: str, emission: str):
    sizes, make_batch, _ = AUTOREGRESSIVE[emission]
    torch.manual_seed(0)
    objective = build_objective(small_config(model=model, emission=emission, input_dim=DIM, **sizes)).double()
    return objective, make_batch().to("cpu", torch.float64)


@pytest.mark.parametrize("emission", sorted(AUTOREGRESSIVE))
@pytest.mark.parametrize("model", MODEL_NAMES)
def test_iwae_is_at_least_the_elbo_and_rises_with_k_for_every_model(float64, model, emission):
    objective, batch = objective_for(model, emission)
    repeats = 30
    with torch.no_grad():
        elbo = torch.stack([sequence_terms(objective.model, objective.guide, batch)["elbo"] for _ in range(repeats)])
        iwae = {k: torch.stack([importance_terms(objective.model, objective.guide, batch, num_samples=k)["iwae"]
                                for _ in range(repeats)]) for k in (2, 20)}
    assert torch.isfinite(elbo).all()
    if not objective.model.latent_sites:  # the RNN: every bound is the exact log-likelihood
        torch.testing.assert_close(iwae[20], elbo, rtol=1e-10, atol=1e-10)
        return
    noise = lambda a, b: 3 * (a.std(0) + b.std(0)) / math.sqrt(repeats)  # noqa: E731
    assert (iwae[2].mean(0) >= elbo.mean(0) - noise(iwae[2], elbo)).all()
    assert (iwae[20].mean(0) >= iwae[2].mean(0) - noise(iwae[20], iwae[2])).all()
    assert (iwae[20].mean(0) - elbo.mean(0)).sum() > 0  # a real gap, on average over the batch


@pytest.mark.parametrize("emission", sorted(AUTOREGRESSIVE))
@pytest.mark.parametrize("model", MODEL_NAMES)
def test_samples_of_every_model_respect_the_mask_and_the_data_kind(model, emission):
    objective, batch = objective_for(model, emission)
    objective = objective.float()
    batch = batch.to("cpu", torch.float32)
    draws = Predictive(objective.model, guide=objective.guide, num_samples=3)(batch.unobserved())
    x = draws[OBS_SITE]
    assert x.shape == (3,) + batch.x.shape and (x[:, ~batch.mask] == 0).all()
    generated = objective.model.generate(2, 5)
    mean = objective.model.generate(2, 5, mean=True)
    assert generated.shape == mean.shape == (2, 5, DIM)
    if emission == "nade":
        assert set(x[:, batch.mask].unique().tolist()) <= {0.0, 1.0}
        assert set(generated.unique().tolist()) <= {0.0, 1.0}
        assert ((mean >= 0) & (mean <= 1)).all()
    else:
        assert torch.isfinite(generated).all() and x[:, batch.mask].std() > 0


@pytest.mark.parametrize("emission", sorted(AUTOREGRESSIVE))
@pytest.mark.parametrize("model", MODEL_NAMES)
def test_a_checkpoint_round_trips_with_the_emission_and_every_parameter_learns(tmp_path, float64, model, emission):
    objective, batch = objective_for(model, emission)
    loss = objective(batch, Weights(kl=1.0, aux=0.5, bwd=0.2))  # Z-Forcing's backward LM uses the emission too
    loss.backward()
    head = objective.model.emission if hasattr(objective.model, "emission") else objective.model.emitter
    head = getattr(head, "head", head)
    assert head.family == emission
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    _, _, data = AUTOREGRESSIVE[emission]
    info = DataInfo(name="made-up", emission=data, dim=DIM, unit="time step")
    config = objective.model.config
    payload = config_payload(config, DataConfig(), TrainConfig(guide=objective.model.default_guide), info)
    save_checkpoint(tmp_path / "run.pt", {**payload, "objective": objective.state_dict()})
    loaded, _, state = load_trained(tmp_path / "run.pt", need_data=False)
    assert state["model_config"] == config
    loaded = loaded.double()
    with torch.no_grad():
        torch.manual_seed(3)
        before = sequence_terms(objective.model, objective.guide, batch)["elbo"]
        torch.manual_seed(3)
        after = sequence_terms(loaded.model, loaded.guide, batch)["elbo"]
    torch.testing.assert_close(after, before, rtol=0, atol=0)
