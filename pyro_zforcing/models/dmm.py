"""The Deep Markov Model (Krishnan, Shalit and Sontag, AAAI 2017) as a sequence-level Pyro model.

The model of Pyro's ``examples/dmm.py`` (the paper's DMM with its gated transition):

    z_0 a learned vector
    z_t ~ p(z_t | z_{t-1}) = N(loc_t, scale_t)             gated transition (t = 1 included)
        gate = sigmoid(W_2 relu(W_1 z_{t-1})),   proposed = W_4 relu(W_3 z_{t-1})
        loc_t = (1 - gate) * (W z_{t-1} + b) + gate * proposed      (W = I, b = 0 at the start)
        scale_t = softplus(W_s relu(proposed))
    y_t ~ p(y_t | z_t) = emission(relu(W_6 relu(W_5 z_t)))          the emitter

The emission depends on z_t only (the paper's DMM; no input u_t). Sizes: the emitter's two
hidden layers have ``mlp_dim`` units and the transition's ``2 * mlp_dim`` (the paper's
Appendix D and Pyro's defaults: 100 and 200). The guide ("combiner", :mod:`..guides.combiner`)
is Pyro's: q(z_t | z_{t-1}, y_{t:T}) from a backward RNN over the targets. Differences from
Pyro's example: one sequence-level site for z (the z-driven loop is the guide's sampling
loop; the model scores the transition and emission fused over the given trajectory), Bernoulli
emission from logits rather than probabilities (the same density, without saturating), and the
emission family follows the data (Bernoulli for piano rolls). Differences from the authors' code
(clinicalml/structuredinference, ``stinfmodel_fast/dkf.py``): their p(z_1) is N(0, I) where
Pyro's (and our default) is the transition of a learned z_0 (``first_prior="standard"`` gives
theirs: z_1 ~ N(0, I), no z_0); their inference network embeds y_t by one nonlinear input layer
and runs an LSTM (and their combiner starts from z_0 = 0 and its softplus is a variance), where
the combiner guide runs Pyro's ReLU RNN over e(y_t) from a learned z_0. Training details of Pyro's script
(ClippedAdam with its per-element clip and weight decay, KL annealing over 1000 epochs) are in
the ``jsb-dmm`` recipe where this package has them.
"""

from __future__ import annotations

from typing import Optional, Tuple

import pyro
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..cache import LastResult
from ..config import ModelConfig
from ..data.base import Batch
from ..distributions import LatentTrajectory
from ..emissions import emission_head
from ..steps import Recurrence, StepFunction, latest_latent
from .base import GUIDE_READS, LATENT_SITE, OBS_SITE, SequenceModel


class GatedTransition(nn.Module):
    """Parameterises p(z_t | z_{t-1}): the gated transition of Krishnan et al. (see the module docstring)."""

    def __init__(self, z_dim: int, hidden_dim: int):
        super().__init__()
        self.gate = nn.Sequential(nn.Linear(z_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, z_dim))
        self.proposed = nn.Sequential(nn.Linear(z_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, z_dim))
        self.scale = nn.Linear(z_dim, z_dim)
        self.linear = nn.Linear(z_dim, z_dim)
        with torch.no_grad():  # the linear path starts as the identity (Pyro's lin_z_to_loc)
            self.linear.weight.copy_(torch.eye(z_dim))
            self.linear.bias.zero_()

    def forward(self, z_prev: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) of z_t for z_{t-1} ``(..., Z)``."""
        gate = torch.sigmoid(self.gate(z_prev))
        proposed = self.proposed(z_prev)
        loc = torch.lerp(self.linear(z_prev), proposed, gate)
        return loc, F.softplus(self.scale(F.relu(proposed)))


class Emitter(nn.Module):
    """Parameterises p(y_t | z_t): two ReLU layers of ``mlp_dim`` units, then the emission head."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        c = config
        self.hidden = nn.Sequential(nn.Linear(c.z_dim, c.mlp_dim), nn.ReLU(), nn.Linear(c.mlp_dim, c.mlp_dim), nn.ReLU())
        self.head = emission_head(config, c.mlp_dim)

    def step_dist(self, z_t: torch.Tensor):
        return self.head.step_dist(self.hidden(z_t))

    def dist(self, z: torch.Tensor, mask: torch.Tensor):
        """p(y_{1:T} | z_{1:T}) of a padded batch, ``z: (B, T, Z)``, ``mask: (B, T)``."""
        return self.head.dist(self.hidden(z), mask)


class StandardFirst(nn.Module):
    """Parameterises p(z_1) = N(0, I) and p(z_t | z_{t-1}) = transition(z_{t-1}) for t > 1, reading
    ``first`` ``(..., 1)``: 1 at t = 1, else 0 (``first_prior="standard"``, the authors' code)."""

    def __init__(self, transition: nn.Module):
        super().__init__()
        self.transition = transition

    def forward(self, z_prev: torch.Tensor, first: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        loc, scale = self.transition(z_prev)
        return loc * (1.0 - first), torch.lerp(scale, torch.ones_like(scale), first)


class DMM(SequenceModel):
    """p(y, z) of the DMM; owns z_0, the gated transition and the emitter (the guide owns its RNN).

    The input embedding e(.) the base class builds is read by the combiner guide's RNN only (p(y, z)
    has no input u_t): it is an inference-network module (``side_modules``), not p(y, z)'s.
    """

    name = "dmm"
    guides = ("combiner", "prior")
    side_modules = {"embed": (GUIDE_READS,)}

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.transition = GatedTransition(config.z_dim, 2 * config.mlp_dim)
        self.emitter = Emitter(config)
        if config.first_prior == "standard":  # p(z_1) = N(0, I): z_0 is a fixed stand-in the prior ignores
            self.register_buffer("z_0", torch.zeros(config.z_dim), persistent=False)
        else:
            self.z_0 = nn.Parameter(torch.zeros(config.z_dim))
        self._prior = LastResult(self.parameters)

    @property
    def state_dim(self) -> int:
        """The proposal heads read z_{t-1}."""
        return self.config.z_dim

    def trajectory(self, batch: Batch, head, context: Optional[torch.Tensor], *, start: torch.Tensor) -> LatentTrajectory:
        """The autoregressive Gaussian over z_{1:T} whose step t is ``head(z_{t-1}[, context_t])``,
        from z_0 = ``start`` ``(Z,)``: the per-step cell is the head; the state is z_{t-1} itself."""
        size = (batch.batch_size, self.config.z_dim)

        def recurrence() -> Recurrence:  # the carry is z_{t-1} itself
            return Recurrence(StepFunction(latest_latent), (start.expand(size),))

        def previous(z: torch.Tensor) -> torch.Tensor:  # z_{0:T}: the "states" the heads read
            return torch.cat([start.expand(size)[:, None], z], dim=1)

        return LatentTrajectory(head=head, context=context, mask=batch.mask, z_dim=self.config.z_dim,
                                states=previous, recurrence=recurrence, remember=lambda z, h: None)

    def prior_trajectory(self, batch: Batch) -> LatentTrajectory:
        """p(z_{1:T}) = prod_t N(z_t; transition(z_{t-1})); the same object within one evaluation
        (see :meth:`ZForcing.prior_trajectory`), so the ``prior`` guide's KL is exactly 0."""
        cached = self._prior.get(batch.mask)
        if cached is None:
            if self.config.first_prior == "standard":
                first = torch.zeros(batch.mask.shape + (1,), dtype=self.z_0.dtype, device=self.z_0.device)
                first[:, 0] = 1.0
                cached = self.trajectory(batch, StandardFirst(self.transition), first, start=self.z_0)
            else:
                cached = self.trajectory(batch, self.transition, None, start=self.z_0)
            self._prior.put(cached, batch.mask)
        return cached

    def forward(self, batch: Batch, *, aux_weight: float = 0.0, bwd_weight: float = 0.0) -> torch.Tensor:
        """Declares z ~ p(z), y ~ p(y | z) observed; Z-Forcing's training-only weights are ignored."""
        with pyro.plate("sequences", batch.batch_size):
            z = pyro.sample(LATENT_SITE, self.prior_trajectory(batch))
            pyro.sample(OBS_SITE, self.emitter.dist(z, batch.mask), obs=batch.x)
        return z

    def first_step(self, z_0: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) of p(z_1) for z_0 ``(N, Z)``: the transition's, or N(0, I) (``first_prior``)."""
        if self.config.first_prior == "standard":
            return torch.zeros_like(z_0), torch.ones_like(z_0)
        return self.transition(z_0)

    @torch.no_grad()
    def generate(self, num: int, steps: int, *, prime: Optional[torch.Tensor] = None,
                 z: Optional[torch.Tensor] = None, mean: bool = False) -> torch.Tensor:
        """Ancestral samples ``(num, steps, ...)``; see :meth:`ZForcing.generate` for ``prime``, ``z``, ``mean``.
        The DMM's latents do not read the data, so a prime fills the first outputs only (give ``z``
        from the guide to continue from it)."""
        z_t = self.z_0.expand(num, self.config.z_dim)
        outputs = []
        for t in self.generation_steps(steps):
            z_t = self.latent_at(t, z, lambda: self.first_step(z_t) if t == 0 else self.transition(z_t))
            prime_t = prime[:, t] if prime is not None and t < prime.shape[1] else None
            outputs.append(self.emit(self.emitter.head, self.emitter.hidden(z_t), mean=mean, prime_t=prime_t)[0])
        return torch.stack(outputs, dim=1)
