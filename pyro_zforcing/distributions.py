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

from .steps import Recurrence, head_step, sample_loop

Head = Callable[..., Tuple[torch.Tensor, torch.Tensor]]
LOG_2PI = math.log(2 * math.pi)


def logvar_normal_log_prob(value: torch.Tensor, loc: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """log N(value; loc, exp(logvar)) elementwise, from the log-variance directly:
    -(log 2pi + logvar + (value - loc)^2 exp(-logvar)) / 2, without a scale's sqrt, log and square."""
    return -0.5 * (LOG_2PI + logvar + (value - loc) ** 2 * torch.exp(-logvar))


def standard_normal(shape: Tuple[int, ...], *, like: torch.Tensor) -> torch.Tensor:
    """The trajectory's noise eps ~ N(0, I) of ``shape`` (B, T, Z), with ``like``'s dtype and device."""
    return torch.randn(shape, dtype=like.dtype, device=like.device)


class LatentTrajectory(TorchDistribution):
    """z_{1:T} of a padded batch: batch shape ``(B,)``, event shape ``(T, Z)``.

    ``states(z)`` must return h_{0:T} ``(B, T+1, H)`` for a given trajectory (the model's
    forward RNN, cached); ``recurrence()`` is the model's z-driven step while sampling
    (:class:`~pyro_zforcing.steps.Recurrence`), the head's per-step form comes from
    :func:`~pyro_zforcing.steps.head_step`, and :func:`~pyro_zforcing.steps.sample_loop` runs
    them (compiled inside ``steps.compiled_steps``). ``log_prob`` sums only the steps where
    ``mask`` is True. A sample drawn here is scored from the parameters computed while drawing
    it; any other value is scored by running the forward RNN over it.
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, *, head: Head, context: Optional[torch.Tensor], mask: torch.Tensor,
                 z_dim: int, states: Callable[[torch.Tensor], torch.Tensor],
                 recurrence: Callable[[], Recurrence], remember: Callable[[torch.Tensor, torch.Tensor], None]):
        self.head = head
        self.context = context
        self.mask = mask
        self.states = states
        self.recurrence = recurrence
        self.remember = remember
        self._drawn = None  # (z, loc, scale) of the last trajectory drawn or scored
        batch_size, steps = mask.shape
        super().__init__(torch.Size([batch_size]), torch.Size([steps, z_dim]), validate_args=False)

    def _params(self, h_prev: torch.Tensor):
        """(loc, scale) of every step from h_{0:T-1} ``(B, T, H)``."""
        if self.context is None:
            return self.head(h_prev)
        return self.head(h_prev, self.context)

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        if sample_shape != torch.Size():
            raise NotImplementedError(
                "LatentTrajectory draws one trajectory per sequence; for K particles, "
                "repeat the batch (Batch.repeat) instead of passing a sample shape")
        batch_size, steps = self.mask.shape
        recurrence = self.recurrence()
        eps = standard_normal((batch_size, steps) + self.event_shape[1:], like=recurrence.initial[0])
        z, loc, scale, states = sample_loop(head_step(self.head, self.context), recurrence, eps)
        self.remember(z, states)
        self._drawn = (z, loc, scale)
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

    ``head`` is an :class:`~pyro_zforcing.emissions.Emission`: ``head.step_log_prob(h, y)`` scores
    the steps, ``head.sample``, ``head.rsample`` and ``head.mean`` draw and average them. Without gradients (evaluation) the steps are
    scored a slice at a time, so memory does not grow with rows x steps x vocabulary; with
    gradients (training) all steps at once, one graph as before.

    ``sample(sample_shape)`` draws every real step from its own p(y_t | h_t), given the states it
    was built with (for a teacher-forced model, states driven by the observed y_{<t}); padded
    steps hold 0, as :func:`~pyro_zforcing.data.base.collate_sequences` pads. Returns
    ``sample_shape + (B, T)`` token ids (int64) or ``sample_shape + (B, T, D)`` frames.
    ``rsample`` exists where the family is reparameterisable (the Gaussian); ``mean`` is the
    per-step mean (0 on padded steps) of the frame families, as the family defines it.
    """

    arg_constraints = {}

    def __init__(self, head, state: torch.Tensor, mask: torch.Tensor, *, tokens: bool):
        self.head = head
        self.state = state
        self.mask = mask
        self.tokens = tokens
        self.width = head.step_elements
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
        return self.head.has_rsample

    def _masked(self, value: torch.Tensor) -> torch.Tensor:
        """``value`` with the padded steps set to 0 (any leading sample dims)."""
        mask = self.mask if self.tokens else self.mask[..., None]
        return torch.where(mask, value, value.new_zeros(()))

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return self._masked(self.head.sample(self.state, sample_shape))

    def rsample(self, sample_shape=torch.Size()) -> torch.Tensor:
        return self._masked(self.head.rsample(self.state, sample_shape))

    @property
    def mean(self) -> torch.Tensor:
        """The family's per-step mean ``(B, T, D)`` (``head.mean``), 0 on padded steps (frame families only)."""
        return self._masked(self.head.mean(self.state))

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
        return self.loc + self.scale * standard_normal(self.loc.shape, like=self.loc)

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
