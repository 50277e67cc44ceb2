"""A sequence-level latent distribution: the whole trajectory z_{1:T} is one Pyro site.

One site per sequence instead of one per step keeps Pyro's bookkeeping out of the time
loop (DESIGN.md "Speed"). The conditional prior and every guide are the same kind of object:
an autoregressive diagonal Gaussian driven by the model's forward RNN,

    q(z_{1:T}) = prod_t N(z_t; loc_t, scale_t),  (loc_t, scale_t) = head(h_{t-1}, c_t),
    h_t = LSTM_f([e(u_t), W z_t], h_{t-1}),

where ``c_t`` is a per-step context (b_t for the paper's guide, nothing for the prior).
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch
from pyro.distributions import Normal, TorchDistribution, constraints

Head = Callable[..., Tuple[torch.Tensor, torch.Tensor]]
LOG_2PI = math.log(2 * math.pi)


class LatentTrajectory(TorchDistribution):
    """z_{1:T} of a padded batch: batch shape ``(B,)``, event shape ``(T, Z)``.

    ``states(z)`` must return h_{0:T} ``(B, T+1, H)`` for a given trajectory (the model's
    forward RNN, cached); ``stepper`` advances h while sampling. ``log_prob`` sums only the
    steps where ``mask`` is True. A sample drawn here is scored from the parameters computed
    while drawing it; any other value is scored by running the forward RNN over it.
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, *, head: Head, context: Optional[torch.Tensor], mask: torch.Tensor,
                 z_dim: int, states: Callable[[torch.Tensor], torch.Tensor],
                 stepper: Callable, remember: Callable[[torch.Tensor, torch.Tensor], None]):
        self.head = head
        self.context = context
        self.mask = mask
        self.states = states
        self.stepper = stepper
        self.remember = remember
        self._drawn = None  # (z, loc, scale) of the last trajectory drawn or scored
        batch_size, steps = mask.shape
        super().__init__(torch.Size([batch_size]), torch.Size([steps, z_dim]), validate_args=False)

    def _params(self, h_prev: torch.Tensor):
        """(loc, scale) of every step from h_{0:T-1} ``(B, T, H)``."""
        if self.context is None:
            return self.head(h_prev)
        return self.head(h_prev, self.context)

    def _step_params(self) -> Callable[[torch.Tensor, int], Tuple[torch.Tensor, torch.Tensor]]:
        """``f(h_{t-1}, t) -> (loc_t, scale_t)`` for the sampling loop.

        Per-step context slices come from one ``unbind``: ``context[:, t]`` inside the loop would
        make autograd fill a full-size zero gradient at every step (O(T^2) work).
        """
        if self.context is None:
            return lambda h_prev, t: self.head(h_prev)
        if hasattr(self.head, "stepwise"):  # the context's share of the head, hoisted out of the loop
            return self.head.stepwise(self.context)
        context = self.context.unbind(1)
        return lambda h_prev, t: self.head(h_prev, context[t])

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        if sample_shape != torch.Size():
            raise NotImplementedError(
                "LatentTrajectory draws one trajectory per sequence; for K particles, "
                "repeat the batch (Batch.repeat) instead of passing a sample shape")
        batch_size, steps = self.mask.shape
        advance, state = self.stepper()
        eps = torch.randn((batch_size, steps) + self.event_shape[1:],
                          dtype=state[0].dtype, device=state[0].device)
        params = self._step_params()
        eps = eps.unbind(1)
        zs, locs, scales, hs = [], [], [], [state[0]]
        for t in range(steps):
            loc, scale = params(state[0], t)
            z_t = loc + scale * eps[t]
            state = advance(t, z_t, state)
            zs.append(z_t)
            locs.append(loc)
            scales.append(scale)
            hs.append(state[0])
        z = torch.stack(zs, dim=1)
        self.remember(z, torch.stack(hs, dim=1))
        self._drawn = (z, torch.stack(locs, dim=1), torch.stack(scales, dim=1))
        return z

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def loc_scale(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) of every step ``(B, T, Z)`` along the trajectory ``z``."""
        if self._drawn is not None and self._drawn[0] is z:
            return self._drawn[1], self._drawn[2]
        loc, scale = self._params(self.states(z)[:, :-1])
        self._drawn = (z, loc, scale)  # log_prob and the per-step KL of one trace share them
        return loc, scale

    def step_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z_t; loc_t, scale_t) per step ``(B, T)``, zero on padded steps."""
        loc, scale = self.loc_scale(z)
        return Normal(loc, scale).log_prob(z).sum(-1) * self.mask

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.step_log_prob(z).sum(-1)

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) != self.batch_shape:
            raise NotImplementedError(
                f"LatentTrajectory cannot be expanded from {tuple(self.batch_shape)} to "
                f"{tuple(batch_shape)}; repeat the batch instead")
        return self


# Values of one slice of emission outputs (steps x rows x outputs) scored at once without gradients.
EMISSION_ELEMENTS = 8_000_000


class MaskedEmission(TorchDistribution):
    """p(y_{1:T} | h_{1:T}) = prod_{t: mask_t} p(y_t | h_t) of a padded batch: batch shape ``(B,)``,
    event shape ``(T,)`` (tokens) or ``(T, D)`` (frames); padded steps score 0.

    ``head.step_log_prob(h, y)`` scores the steps. Without gradients (evaluation) the steps are
    scored a slice at a time, so memory does not grow with rows x steps x vocabulary; with
    gradients (training) all steps at once, one graph as before.

    ``sample(sample_shape)`` draws every real step from its own p(y_t | h_t), given the states it
    was built with (for a teacher-forced model, states driven by the observed y_{<t}); padded
    steps hold 0, as :func:`~pyro_zforcing.data.base.collate_sequences` pads. Returns
    ``sample_shape + (B, T)`` token ids (int64) or ``sample_shape + (B, T, D)`` frames.
    ``rsample`` exists where the family is reparameterisable (the Gaussian); ``mean`` is the
    per-step mean (0 on padded steps) of the frame families.
    """

    arg_constraints = {}

    def __init__(self, head, state: torch.Tensor, mask: torch.Tensor, *, tokens: bool):
        self.head = head
        self.state = state
        self.mask = mask
        self.tokens = tokens
        self.width = head.linear.out_features
        batch_size, steps = mask.shape
        event = (steps,) if tokens else (steps, head.out_dim)
        self._support = constraints.independent(
            constraints.nonnegative_integer if tokens else constraints.real, len(event))
        super().__init__(torch.Size([batch_size]), torch.Size(event), validate_args=False)

    @property
    def support(self):
        return self._support

    @property
    def has_rsample(self) -> bool:
        return self.head.family == "gaussian"  # Bernoulli, Categorical and the mixture have no rsample

    def _masked(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` with the padded steps set to 0 (any leading sample dims)."""
        mask = self.mask if self.tokens else self.mask[..., None]
        return torch.where(mask, value, value.new_zeros(()))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self._masked(self.head.step_dist(self.state).sample(sample_shape))

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        if not self.has_rsample:
            raise NotImplementedError(f"the {self.head.family} emission has no reparameterised sample; use sample()")
        return self._masked(self.head.step_dist(self.state).rsample(sample_shape))

    @property
    def mean(self) -> torch.Tensor:
        """E[y_t | h_t] per step ``(B, T, D)``, 0 on padded steps (frame families only)."""
        if self.tokens:
            raise NotImplementedError("a categorical emission has no mean; its per-step probabilities are "
                                      "head.step_dist(state).probs")
        return self._masked(self.head.step_dist(self.state).mean)

    def log_prob(self, y: torch.Tensor) -> torch.Tensor:
        steps = self.mask.shape[1]
        span = steps if torch.is_grad_enabled() else \
            max(1, EMISSION_ELEMENTS // max(1, self.mask.shape[0] * self.width))
        total = None
        for start in range(0, steps, span):
            window = slice(start, start + span)
            step = self.head.step_log_prob(self.state[:, window], y[:, window])
            part = torch.where(self.mask[:, window], step, step.new_zeros(())).sum(-1)
            total = part if total is None else total + part
        return total

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) != self.batch_shape:
            raise NotImplementedError(
                f"MaskedEmission cannot be expanded from {tuple(self.batch_shape)} to {tuple(batch_shape)}")
        return self


class IndependentSteps(TorchDistribution):
    """z_{1:T} of a padded batch with steps independent given the data: prod_t N(z_t; loc_t, scale_t),
    ``loc, scale: (B, T, Z)``; batch shape ``(B,)``, event shape ``(T, Z)``.

    STORN's N(0, I) prior and its recognition network q(z_t | y_{1:t}) (whose RNN does not
    depend on z, so the whole trajectory is drawn at once). ``log_prob`` sums only the steps
    where ``mask`` is True; ``loc_scale`` is the per-step interface of :class:`LatentTrajectory`.
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, mask: torch.Tensor, *, standard: bool = False):
        self.loc, self.scale, self.mask = loc, scale, mask
        self.is_standard = standard  # loc = 0, scale = 1: scored as -(z^2 + log 2 pi) / 2
        super().__init__(loc.shape[:1], loc.shape[1:], validate_args=False)

    @classmethod
    def standard(cls, like: torch.Tensor, z_dim: int, mask: torch.Tensor) -> "IndependentSteps":
        """prod_t N(z_t; 0, I) for a batch whose mask is ``(B, T)``, dtype and device of ``like``."""
        shape = mask.shape + (z_dim,)
        return cls(like.new_zeros(()).expand(shape), like.new_ones(()).expand(shape), mask, standard=True)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        if sample_shape != torch.Size():
            raise NotImplementedError("IndependentSteps draws one trajectory per sequence; repeat the batch "
                                      "(Batch.repeat) for K particles")
        return self.loc + self.scale * torch.randn(self.loc.shape, dtype=self.loc.dtype, device=self.loc.device)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self.rsample(sample_shape)

    def loc_scale(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) of every step ``(B, T, Z)``; they do not depend on ``z``."""
        return self.loc, self.scale

    def step_log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z_t; loc_t, scale_t) per step ``(B, T)``, zero on padded steps."""
        if self.is_standard:
            return -0.5 * (z.pow(2).sum(-1) + z.shape[-1] * LOG_2PI) * self.mask
        return Normal(self.loc, self.scale).log_prob(z).sum(-1) * self.mask

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.step_log_prob(z).sum(-1)

    def expand(self, batch_shape, _instance=None):
        if torch.Size(batch_shape) != self.batch_shape:
            raise NotImplementedError(f"IndependentSteps cannot be expanded from {tuple(self.batch_shape)} to "
                                      f"{tuple(batch_shape)}; repeat the batch instead")
        return self
