"""The paper's guide: q(z_t | h_{t-1}, b_t), looking ahead through the backward RNN."""

from __future__ import annotations

from ..data.base import Batch
from ..distributions import LatentTrajectory
from ..models.zforcing import ZForcing
from ..nets import GaussianHead
from .base import TrajectoryGuide


class BackwardGuide(TrajectoryGuide):
    """q(z_{1:T} | y) = prod_t N(z_t; posterior([h_{t-1}, b_t])), b_t summarising y_{t..T}."""

    model_modules = ("bwd",)

    def __init__(self, model: ZForcing):
        super().__init__(model)
        c = model.config
        self.posterior = GaussianHead(2 * c.rnn_dim, c.mlp_dim, c.z_dim, clamp=c.logvar_clamp)

    def proposal(self, batch: Batch) -> LatentTrajectory:
        return self.model.trajectory(batch, self.posterior, self.model.backward_states(batch))
