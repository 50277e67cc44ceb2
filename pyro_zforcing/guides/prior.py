"""The conditional prior as the proposal: q(z | y) = p(z | u), with no parameters of its own.

The KL term is then exactly zero for every sample, the ELBO degenerates to the
reconstruction term E_p[log p(y | h)], and the IWAE bound is plain importance sampling from
the prior: a sanity baseline for every other guide. Training with it fits the model by the
reparameterised reconstruction alone (the prior's parameters are the model's).
"""

from __future__ import annotations

from ..data.base import Batch
from ..distributions import LatentTrajectory
from .base import TrajectoryGuide


class PriorGuide(TrajectoryGuide):
    """q(z_{1:T} | y) = prod_t N(z_t; prior(h_{t-1})): the model's own conditional prior."""

    def proposal(self, batch: Batch) -> LatentTrajectory:
        return self.model.prior_trajectory(batch)
