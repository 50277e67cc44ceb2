"""Emissions p(y_t | s_t): one contract, factorised or autoregressive within a frame, by name.

Every model reads its emission through :class:`Emission` and never branches on the family:

- ``dist(state, mask)``: p(y_{1:T} | s_{1:T}) of a padded batch, a
  :class:`~pyro_zforcing.distributions.MaskedEmission` (batch ``(B,)``, padded steps score 0);
- ``step_log_prob(state, y)``: log p(y_t | s_t) of whole frames (or tokens), ``state.shape[:-1]``;
- ``sample(state)``, ``mean(state)``, ``mean_and_mode(state)``: a draw, the per-step mean as
  each family defines it, and (what a plot shows, what a mean decode feeds back);
- ``step_dist(state)``: the per-step torch distribution (its ``log_prob`` and ``sample``);
- parameter roles: every parameter of an emission belongs to the generative model p(y, z)
  (``models.base``); an emission adds none to ``side_modules``.

Families (:data:`EMISSIONS`, the registry; ``config.EMISSIONS`` lists the same names):

- ``bernoulli``, ``gaussian``, ``gmm``, ``categorical``: :class:`FactorisedEmission`, a Linear
  layer from s_t to independent per-value parameters;
- ``nade``: :class:`NADEEmission`, binary frames, NADE (Larochelle and Murray 2011) with
  biases affine in s_t as RNN-NADE (Boulanger-Lewandowski et al. 2012);
- ``ar-gmm``: :class:`ARGMMEmission`, real frames, each dimension's K-component Gaussian
  mixture from [s_t, y_{t,<d}] through MADE masks (Germain et al. 2015);
- ``ar-rnn``: :class:`ARRNNEmission`, the same mixtures from a GRU run across the frame's
  dimensions, started from s_t (the low-level RNN of Dai, Lai et al. 2019).

Log-variances of real-valued emissions are unclamped but for :func:`safe_logvar`'s float range
(DESIGN.md pitfalls: a likelihood is never bounded where the data wants to go).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import pyro.distributions as dist
from pyro.distributions import TorchDistribution, constraints
from pyro.distributions.util import is_validation_enabled

from .distributions import MaskedEmission, logvar_normal_log_prob


def safe_logvar(logvar: torch.Tensor) -> torch.Tensor:
    """The only bound on an unclamped log-variance: the float range, +-log(finfo.max)/2
    (44.4 in float32, 354.9 in float64), where exp(-logvar) * error**2 stays finite for any
    |error| < finfo.max ** (1/4) (4e9 in float32); a float32 density tops out at 21.3 nats per value."""
    limit = 0.5 * math.log(torch.finfo(logvar.dtype).max)
    return logvar.clamp(-limit, limit)


class LogVarNormal(dist.Normal):
    """N(loc, exp(logvar)), scored from the log-variance directly:
    log p(x) = -(log 2pi + logvar + (x - loc)^2 exp(-logvar)) / 2.

    ``Normal.log_prob`` goes through scale = exp(logvar / 2) and var = scale^2, whose gradient
    divides by var^2: it underflows long before logvar leaves the float range.
    """

    def __init__(self, loc: torch.Tensor, logvar: torch.Tensor, validate_args=None):
        self.logvar = logvar
        super().__init__(loc, torch.exp(0.5 * logvar), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        batch_shape = torch.Size(batch_shape)
        return LogVarNormal(self.loc.expand(batch_shape), self.logvar.expand(batch_shape),
                            validate_args=self._validate_args if _instance is None else False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return logvar_normal_log_prob(value, self.loc, self.logvar)


class Emission(nn.Module):
    """The contract of p(y_t | s_t) for a state ``s_t: (..., in_dim)`` (see the module docstring).

    Subclasses set ``family``, ``out_dim`` and ``tokens``, and implement ``step_dist``,
    ``step_log_prob``, ``mean`` and ``mean_and_mode``; ``step_elements`` is the number of
    values one step of one sequence holds while scored (``MaskedEmission`` slices evaluation by
    it), ``inner_elements`` those an autoregressive family keeps for the backward pass beyond its
    outputs (``memory`` adds them to a training run's estimate; 0 for a factorised family).
    """

    family: str = ""
    tokens: bool = False  # y_t is a token id (categorical), else a frame (D,)
    has_rsample: bool = False
    out_dim: int
    step_elements: int
    inner_elements: int = 0

    def masked_weights(self) -> Tuple[Tuple[nn.Parameter, torch.Tensor], ...]:
        """(weight, 0/1 mask) pairs of weights used only through a fixed mask: an entry the mask
        removes never acts and is not counted as a parameter. Empty for an unmasked family."""
        return ()

    def step_dist(self, state: torch.Tensor) -> TorchDistribution:
        raise NotImplementedError

    def step_log_prob(self, state: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log p(y_t | s_t) for states ``(..., H)`` and frames ``(..., D)`` (tokens ``(...)``): ``state.shape[:-1]``."""
        raise NotImplementedError

    def sample(self, state: torch.Tensor, sample_shape=torch.Size()) -> torch.Tensor:
        """y_t ~ p(y_t | s_t): ``sample_shape + state.shape[:-1] + (D,)`` frames (or token ids)."""
        with torch.no_grad():
            return self.step_dist(state).sample(sample_shape)

    def rsample(self, state: torch.Tensor, sample_shape=torch.Size()) -> torch.Tensor:
        if not self.has_rsample:
            raise NotImplementedError(f"the {self.family} emission has no reparameterised sample; use sample()")
        return self.step_dist(state).rsample(sample_shape)

    def mean(self, state: torch.Tensor) -> torch.Tensor:
        """The per-step mean ``state.shape[:-1] + (D,)`` (each family says what it is)."""
        raise NotImplementedError

    def mean_and_mode(self, state: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(what a mean decode outputs, what it feeds back as y_t)."""
        raise NotImplementedError

    def dist(self, state: torch.Tensor, mask: torch.Tensor) -> MaskedEmission:
        """p(y_{1:T} | s_{1:T}) of a padded batch, ``state: (B, T, H)``, ``mask: (B, T)``."""
        return MaskedEmission(self, state, mask, tokens=self.tokens)


class FactorisedEmission(Emission):
    """p(y_t | s_t) = prod_d p(y_{t,d} | s_t) from one Linear layer of s_t: Bernoulli logits, a
    diagonal Gaussian, a mixture of ``mixtures`` diagonal Gaussians (``gmm``), or a Categorical
    over tokens.

    The Gaussian's mean and log-variance are unclamped (``clamp=None``, the authors' output
    layer; only :func:`safe_logvar`'s float range guard) or clamped to +-``clamp``.
    GMM: p(y_t) = sum_k pi_k N(y_t; mu_k, diag(exp(logvar_k))), pi = softmax(logits).
    Means: pixel probabilities, the Gaussian (mixture) mean; the mode fed back by a mean decode
    is pixels > 1/2, the mean itself, or the most likely token.
    """

    def __init__(self, rnn_dim: int, out_dim: int, family: str, *, clamp: Optional[float] = None, mixtures: int = 1):
        super().__init__()
        self.family = family
        self.tokens = family == "categorical"
        self.has_rsample = family == "gaussian"  # Bernoulli, Categorical and the mixture have no rsample
        self.clamp = clamp
        self.mixtures = mixtures
        self.out_dim = out_dim
        sizes = {"gaussian": 2 * out_dim, "gmm": mixtures * (2 * out_dim + 1)}
        self.linear = nn.Linear(rnn_dim, sizes.get(family, out_dim))
        self.step_elements = self.linear.out_features

    def step_dist(self, state: torch.Tensor) -> dist.TorchDistribution:
        """The per-step distribution, batch shape ``state.shape[:-1]`` (+ ``(D,)`` for bernoulli/gaussian)."""
        out = self.linear(state)
        if self.family == "bernoulli":
            return dist.Bernoulli(logits=out)
        if self.family == "categorical":
            return dist.Categorical(logits=out)
        if self.family == "gmm":
            k = self.mixtures
            logits, params = out[..., :k], out[..., k:].reshape(out.shape[:-1] + (k, -1))
            loc, logvar = self._clamped(params).chunk(2, dim=-1)
            components = LogVarNormal(loc, safe_logvar(logvar)).to_event(1)
            return dist.MixtureSameFamily(dist.Categorical(logits=logits), components)
        loc, logvar = self._clamped(out).chunk(2, dim=-1)
        return LogVarNormal(loc, safe_logvar(logvar))

    def _clamped(self, params: torch.Tensor) -> torch.Tensor:
        return params if self.clamp is None else params.clamp(-self.clamp, self.clamp)

    def step_log_prob(self, state: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log p(y_t | state_t) for states ``(..., H)`` and targets ``(...)`` tokens or ``(..., D)``
        frames, summed over D: returns ``state.shape[:-1]``.

        Tokens score only their own logit, log_softmax gathered at the target
        (logit_y - logsumexp(logits)), without a normalised copy of the logits; under Pyro's
        validation the torch distribution scores (and checks) instead.
        """
        if is_validation_enabled() or self.family != "categorical":
            log_prob = self.step_dist(state).log_prob(y)
            return log_prob if self.family in ("categorical", "gmm") else log_prob.sum(-1)
        logits = self.linear(state)
        return logits.gather(-1, y.long()[..., None]).squeeze(-1) - logits.logsumexp(-1)

    def mean(self, state: torch.Tensor) -> torch.Tensor:
        if self.tokens:
            raise NotImplementedError("a categorical emission has no mean; its per-step probabilities are "
                                      "head.step_dist(state).probs")
        return self.step_dist(state).mean

    def mean_and_mode(self, state: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        step = self.step_dist(state)
        if self.family == "categorical":
            token = step.logits.argmax(-1)
            return token, token
        if self.family == "bernoulli":
            return step.probs, (step.probs > 0.5).to(step.probs.dtype)
        return step.mean, step.mean


class NADEFrame(TorchDistribution):
    """One binary frame per batch element from a state-conditioned NADE: batch shape
    ``b_v.shape[:-1]``, event ``(D,)``; the distribution :meth:`NADEEmission.step_dist` returns."""

    arg_constraints = {}
    support = constraints.independent(constraints.boolean, 1)

    def __init__(self, head: "NADEEmission", b_v: torch.Tensor, b_h: torch.Tensor):
        self.head, self.b_v, self.b_h = head, b_v, b_h
        super().__init__(b_v.shape[:-1], b_v.shape[-1:], validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.head.frame_log_prob(self.b_v, self.b_h, value)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        with torch.no_grad():
            return self.head.ancestral(self.b_v.expand(shape + self.event_shape),
                                       self.b_h.expand(shape + self.b_h.shape[-1:]), greedy=False)[0]

    @property
    def mean(self) -> torch.Tensor:
        """p(y_d = 1 | y_{<d} = the greedy decode's) per key (see :class:`NADEEmission`)."""
        return self.head.ancestral(self.b_v, self.b_h, greedy=True)[1]


class NADEEmission(Emission):
    """p(y_t | s_t) of a binary frame y_t in {0, 1}^D, a NADE whose biases are affine in s_t
    (RNN-NADE, Boulanger-Lewandowski et al. 2012; NADE: Larochelle and Murray 2011):

        b_v(s) = A_v s + c_v (D),   b_h(s) = A_h s + c_h (H_nade),
        a_d = b_h(s) + sum_{j<d} W[:, j] y_j,   h_d = sigmoid(a_d),
        p(y_d = 1 | y_{<d}, s) = sigmoid(b_v,d(s) + V_d . h_d),
        log p(y_t | s_t) = sum_d log Bern(y_d; sigmoid(b_v,d + V_d . h_d)),

    W ``(H_nade, D)`` and V ``(D, H_nade)`` shared over time, keys in the data's order. The
    log-likelihood is one vectorised pass over the keys, without a loop over them: the a_d of all
    keys are an exclusive cumulative sum over y_j W[:, j] (:meth:`dense_logits`, a
    ``(..., D, H_nade)`` tensor). Since y is binary, a_d changes only after a key that is on: a
    frame with n keys on has n + 1 distinct a_d, the cumulative sums of the on keys' columns, so
    :meth:`logits` computes those ``(..., n_max + 1, H_nade)`` and gathers key d's (the same
    values; 10x faster on piano rolls, 4 keys of 88 on). While a CUDA graph is captured (no
    host sync for n_max) the dense form runs. ``MaskedEmission`` slices evaluation over time to
    bound memory. Sampling is exact and ancestral, key by key.

    ``mean`` (the per-key marginal p(y_d = 1 | s) has no closed form): the probability of each
    key given the earlier keys of the greedy decode, p(y_d = 1 | y_{<d} = m_{<d}, s) with
    m_d = [that probability > 1/2]; ``mean_and_mode`` returns (those probabilities, m).
    """

    family = "nade"

    def __init__(self, state_dim: int, out_dim: int, *, hidden: int):
        super().__init__()
        self.out_dim = out_dim
        self.hidden = hidden
        self.visible_bias = nn.Linear(state_dim, out_dim)  # b_v(s)
        self.hidden_bias = nn.Linear(state_dim, hidden)  # b_h(s)
        self.weight_in = nn.Parameter(torch.empty(hidden, out_dim).uniform_(-1, 1) / math.sqrt(out_dim))  # W
        self.weight_out = nn.Parameter(torch.empty(out_dim, hidden).uniform_(-1, 1) / math.sqrt(hidden))  # V
        self.step_elements = out_dim * hidden
        self.inner_elements = 3 * out_dim * hidden  # the cumulative sums, their sigmoid, its product with V

    def biases(self, state: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(b_v(s) ``(..., D)``, b_h(s) ``(..., H_nade)``)."""
        return self.visible_bias(state), self.hidden_bias(state)

    def step_dist(self, state: torch.Tensor) -> NADEFrame:
        return NADEFrame(self, *self.biases(state))

    def frame_log_prob(self, b_v: torch.Tensor, b_h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log p(y | b_v, b_h) of binary frames ``y: (..., D)``, one pass over the keys: ``(...)``."""
        if is_validation_enabled() and not ((y == 0) | (y == 1)).all():
            raise ValueError("the nade emission scores binary frames (0/1 values) only")
        capturing = y.is_cuda and torch.cuda.is_current_stream_capturing()
        logits = (self.dense_logits if capturing else self.logits)(b_v, b_h, y)
        return -F.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(-1)

    def dense_logits(self, b_v: torch.Tensor, b_h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The logits b_v,d + V_d . sigmoid(a_d) of every key ``(..., D)``, a_d from one cumulative
        sum over the keys' y_j W[:, j], ``(..., D, H_nade)``."""
        contributions = y[..., :, None] * self.weight_in.t()  # y_j W[:, j]: (..., D, H)
        before = contributions.cumsum(-2) - contributions  # sum_{j<d}
        hidden = torch.sigmoid(before + b_h[..., None, :])
        return b_v + (hidden * self.weight_out).sum(-1)

    def logits(self, b_v: torch.Tensor, b_h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """:meth:`dense_logits` from the n + 1 distinct a_d of each frame (n keys on): segment k
        holds the keys after the k-th on key, a = b_h + the first k on keys' columns of W."""
        on = y > 0.5
        count = on.sum(-1)
        segment = (on.cumsum(-1) - on.long())[..., None, :]  # on keys before key d: (..., 1, D)
        segments = int(count.max()) + 1 if count.numel() else 1
        order = torch.argsort((~on).to(torch.uint8), dim=-1, stable=True)[..., :segments - 1]  # on keys first
        real = torch.arange(segments - 1, device=y.device) < count[..., None]
        columns = self.weight_in.t()[order] * real[..., None].to(b_h.dtype)  # (..., n_max, H)
        before = torch.cat([b_h[..., None, :], b_h[..., None, :] + columns.cumsum(-2)], dim=-2)
        per_segment = torch.sigmoid(before) @ self.weight_out.t()  # V_d . h for every segment: (..., n_max + 1, D)
        return b_v + per_segment.gather(-2, segment).squeeze(-2)

    def step_log_prob(self, state: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.frame_log_prob(*self.biases(state), y)

    def ancestral(self, b_v: torch.Tensor, b_h: torch.Tensor, *, greedy: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        """(y, p) key by key: y_d ~ Bern(p_d) (``greedy``: y_d = [p_d > 1/2]) with
        p_d = p(y_d = 1 | y_{<d}, s); both ``b_v.shape``."""
        pre = b_h
        ys, ps = [], []
        for d in range(self.out_dim):
            p = torch.sigmoid(b_v[..., d] + torch.sigmoid(pre) @ self.weight_out[d])
            y = (p > 0.5).to(p.dtype) if greedy else torch.bernoulli(p)
            pre = pre + y[..., None] * self.weight_in[:, d]
            ys.append(y)
            ps.append(p)
        return torch.stack(ys, dim=-1), torch.stack(ps, dim=-1)

    def mean(self, state: torch.Tensor) -> torch.Tensor:
        return self.ancestral(*self.biases(state), greedy=True)[1]

    def mean_and_mode(self, state: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        y, p = self.ancestral(*self.biases(state), greedy=True)
        return p, y


def made_degrees(out_dim: int, hidden: int) -> torch.Tensor:
    """MADE's hidden degrees m(k) in 1..D-1, cycled (every degree used when hidden >= D-1): ``(hidden,)``."""
    return 1 + torch.arange(hidden) % max(1, out_dim - 1)


class ARFrame(TorchDistribution):
    """One real frame per batch element from an :class:`ARMixtureEmission`: batch ``state.shape[:-1]``,
    event ``(D,)``."""

    arg_constraints = {}
    support = constraints.independent(constraints.real, 1)

    def __init__(self, head: "ARMixtureEmission", state: torch.Tensor):
        self.head, self.state = head, state
        super().__init__(state.shape[:-1], torch.Size([head.out_dim]), validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.head.step_log_prob(self.state, value)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        state = self.state.expand(torch.Size(sample_shape) + self.state.shape)
        with torch.no_grad():
            return self.head.ancestral(state, greedy=False)

    @property
    def mean(self) -> torch.Tensor:
        """The greedy chain of conditional means (see :class:`ARMixtureEmission`)."""
        return self.head.ancestral(self.state, greedy=True)


class ARMixtureEmission(Emission):
    """p(y_t | s_t) = prod_d sum_k pi_{d,k} N(y_d; mu_{d,k}, exp(logvar_{d,k})) of a real frame:
    each dimension a mixture of K 1-D Gaussians (``mixtures``; K = 1 a Gaussian, with no logit)
    whose ``per_dim`` parameters a subclass computes from [s_t, y_{<d}]: ``outputs(state, y)``
    for every dimension at once (teacher-forced), ``ancestral`` dimension by dimension.
    The log-variances are unclamped but for :func:`safe_logvar`. ``mean``: the greedy chain
    m_d = E[y_d | y_{<d} = m_{<d}, s] (the exact conditional mean for d = 1, not the marginal
    mean of later dimensions); ``mean_and_mode`` returns it twice.
    """

    def __init__(self, out_dim: int, mixtures: int):
        super().__init__()
        self.out_dim, self.mixtures = out_dim, mixtures
        self.per_dim = 2 * mixtures + (mixtures if mixtures > 1 else 0)

    def outputs(self, state: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Every dimension's mixture parameters given the earlier dimensions: ``state.shape[:-1] + (D, per_dim)``."""
        raise NotImplementedError

    def params(self, out: torch.Tensor):
        """(log mixing weights or None, loc, logvar), each ``(..., K)``, from outputs ``(..., per_dim)``."""
        k = self.mixtures
        if k == 1:
            return None, out[..., :1], safe_logvar(out[..., 1:])
        return torch.log_softmax(out[..., :k], dim=-1), out[..., k:2 * k], safe_logvar(out[..., 2 * k:])

    def draw(self, out: torch.Tensor, *, greedy: bool) -> torch.Tensor:
        """One dimension from its mixture's outputs ``(..., per_dim)``: a draw, or (``greedy``) its mean."""
        log_weight, loc, logvar = self.params(out)
        if greedy:
            return loc[..., 0] if log_weight is None else (log_weight.exp() * loc).sum(-1)
        if log_weight is not None:
            pick = torch.distributions.Categorical(logits=log_weight).sample()[..., None]
            loc, logvar = loc.gather(-1, pick), logvar.gather(-1, pick)
        return (loc + torch.exp(0.5 * logvar) * torch.randn_like(loc))[..., 0]

    def step_dist(self, state: torch.Tensor) -> ARFrame:
        return ARFrame(self, state)

    def step_log_prob(self, state: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log p(y_t | s_t) from one teacher-forced pass: ``state.shape[:-1]``."""
        log_weight, loc, logvar = self.params(self.outputs(state, y))
        log_normal = logvar_normal_log_prob(y[..., None], loc, logvar)
        if log_weight is None:
            return log_normal.squeeze(-1).sum(-1)
        return torch.logsumexp(log_weight + log_normal, dim=-1).sum(-1)

    def ancestral(self, state: torch.Tensor, *, greedy: bool) -> torch.Tensor:
        """y ``state.shape[:-1] + (D,)`` dimension by dimension."""
        raise NotImplementedError

    def mean(self, state: torch.Tensor) -> torch.Tensor:
        return self.ancestral(state, greedy=True)

    def mean_and_mode(self, state: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        m = self.ancestral(state, greedy=True)
        return m, m


class ARGMMEmission(ARMixtureEmission):
    """:class:`ARMixtureEmission` whose parameters come from [s_t, y_{<d}] through one MADE
    hidden layer (Germain et al. 2015):

        g = relu(U s + (W * M_in) y + c),                     hidden degrees m(k) in 1..D-1
        [logits, mu, logvar]_d = A_d s + ((V * M_out) g)_d + e_d,

    M_in[k, j] = [j <= m(k)], M_out[d, k] = [m(k) < d] (dims 1..D): output d sees y_{<d} only;
    the state reaches every output directly (dim 1 depends on s alone). log p is one masked
    pass; sampling is D passes (the hidden pre-activation is updated by one dimension's column
    at a time).
    """

    family = "ar-gmm"

    def __init__(self, state_dim: int, out_dim: int, *, mixtures: int, hidden: int):
        super().__init__(out_dim, mixtures)
        self.hidden = hidden
        self.state_in = nn.Linear(state_dim, hidden)  # U s + c
        self.frame_in = nn.Linear(out_dim, hidden, bias=False)  # W (masked)
        self.state_out = nn.Linear(state_dim, out_dim * self.per_dim)  # A s + e
        self.hidden_out = nn.Linear(hidden, out_dim * self.per_dim, bias=False)  # V (masked)
        degrees = made_degrees(out_dim, hidden)
        dims = torch.arange(1, out_dim + 1)
        self.register_buffer("mask_in", (dims[None, :] <= degrees[:, None]).to(torch.get_default_dtype()),
                             persistent=False)
        mask_out = (degrees[None, :] < dims[:, None]).to(torch.get_default_dtype())
        self.register_buffer("mask_out", mask_out.repeat_interleave(self.per_dim, dim=0), persistent=False)
        self.step_elements = hidden + out_dim * self.per_dim
        self.inner_elements = 2 * self.step_elements

    def masked_weights(self):
        return ((self.frame_in.weight, self.mask_in), (self.hidden_out.weight, self.mask_out))

    def outputs(self, state: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.state_in(state) + F.linear(y, self.frame_in.weight * self.mask_in))
        out = self.state_out(state) + F.linear(hidden, self.hidden_out.weight * self.mask_out)
        return out.unflatten(-1, (self.out_dim, self.per_dim))

    def ancestral(self, state: torch.Tensor, *, greedy: bool) -> torch.Tensor:
        pre = self.state_in(state)
        direct = self.state_out(state).unflatten(-1, (self.out_dim, self.per_dim))
        w_in = self.frame_in.weight * self.mask_in
        w_out = (self.hidden_out.weight * self.mask_out).unflatten(0, (self.out_dim, self.per_dim))
        ys = []
        for d in range(self.out_dim):
            y = self.draw(direct[..., d, :] + torch.relu(pre) @ w_out[d].t(), greedy=greedy)
            pre = pre + y[..., None] * w_in[:, d]
            ys.append(y)
        return torch.stack(ys, dim=-1)


class ARRNNEmission(ARMixtureEmission):
    """:class:`ARMixtureEmission` whose parameters come from a GRU run across the frame's
    dimensions, the low-level RNN of Dai, Lai et al. (NeurIPS 2019), started from the state:

        r_0 = tanh(U s + c),   r_d = GRU(y_{d-1}, r_{d-1}) (y_0 = 0),
        [logits, mu, logvar]_d = A_d s + e_d + V r_d,

    V shared over the dimensions, A_d s giving each dimension its own offset from the state.
    log p is one teacher-forced GRU pass of D steps; sampling is D GRU steps.
    """

    family = "ar-rnn"

    def __init__(self, state_dim: int, out_dim: int, *, mixtures: int, hidden: int):
        super().__init__(out_dim, mixtures)
        self.hidden = hidden
        self.start = nn.Linear(state_dim, hidden)  # U s + c
        self.rnn = nn.GRU(1, hidden, batch_first=True)
        self.state_out = nn.Linear(state_dim, out_dim * self.per_dim)  # A s + e
        self.hidden_out = nn.Linear(hidden, self.per_dim, bias=False)  # V
        self.step_elements = hidden + out_dim * self.per_dim
        self.inner_elements = 6 * out_dim * hidden  # the GRU's gates and states at every dimension

    def outputs(self, state: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        lead = torch.broadcast_shapes(state.shape[:-1], y.shape[:-1])  # as the MADE's broadcasting sum
        flat_state = state.expand(lead + state.shape[-1:]).reshape(-1, state.shape[-1])
        flat_y = y.expand(lead + y.shape[-1:]).reshape(-1, self.out_dim)
        previous = F.pad(flat_y[:, :-1], (1, 0))[..., None]  # y_{d-1}, y_0 = 0
        runs, _ = self.rnn(previous, torch.tanh(self.start(flat_state))[None])
        out = self.state_out(flat_state).unflatten(-1, (self.out_dim, self.per_dim)) + self.hidden_out(runs)
        return out.reshape(lead + (self.out_dim, self.per_dim))

    def ancestral(self, state: torch.Tensor, *, greedy: bool) -> torch.Tensor:
        lead = state.shape[:-1]
        flat_state = state.reshape(-1, state.shape[-1])
        direct = self.state_out(flat_state).unflatten(-1, (self.out_dim, self.per_dim))
        hidden = torch.tanh(self.start(flat_state))[None]
        y = flat_state.new_zeros(len(flat_state))
        ys = []
        for d in range(self.out_dim):
            run, hidden = self.rnn(y[:, None, None], hidden)
            y = self.draw(direct[:, d] + self.hidden_out(run[:, 0]), greedy=greedy)
            ys.append(y)
        return torch.stack(ys, dim=-1).reshape(lead + (self.out_dim,))


def _factorised(config, in_dim: int) -> FactorisedEmission:
    return FactorisedEmission(in_dim, config.input_dim, config.emission, clamp=config.emission_clamp,
                              mixtures=config.mixtures)


EMISSIONS: Dict[str, Callable[..., Emission]] = {
    "bernoulli": _factorised,
    "gaussian": _factorised,
    "gmm": _factorised,
    "categorical": _factorised,
    "nade": lambda config, in_dim: NADEEmission(in_dim, config.input_dim, hidden=config.nade_hidden),
    "ar-gmm": lambda config, in_dim: ARGMMEmission(in_dim, config.input_dim, mixtures=config.mixtures,
                                                  hidden=config.made_hidden),
    "ar-rnn": lambda config, in_dim: ARRNNEmission(in_dim, config.input_dim, mixtures=config.mixtures,
                                                  hidden=config.frame_rnn_hidden),
}


def emission_head(config, in_dim: int) -> Emission:
    """The emission p(y_t | s_t) named by ``config.emission`` (with its sizes) from a state of ``in_dim``."""
    return EMISSIONS[config.emission](config, in_dim)
