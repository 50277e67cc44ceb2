"""A guide without look-ahead: q(z_t | h_{t-1}, y_t), what VRNN-style inference sees.

In this package's indexing y_t is the frame being generated at step t (the paper's
x_{t+1}), so this guide sees the current target and the past through h_{t-1}, but nothing
after y_t. It is the backward guide with b_t replaced by the embedded target e(y_t).
"""

from __future__ import annotations

from ..data.base import Batch
from ..distributions import LatentTrajectory
from ..models.zforcing import ZForcing
from ..nets import GaussianHead
from .base import TrajectoryGuide


class FilteringGuide(TrajectoryGuide):
    """q(z_{1:T} | y) = prod_t N(z_t; posterior([h_{t-1}, e(y_t)]))."""

    def __init__(self, model: ZForcing):
        super().__init__(model)
        c = model.config
        self.posterior = GaussianHead(c.rnn_dim + c.emb_dim, c.mlp_dim, c.z_dim, clamp=c.logvar_clamp)

    def proposal(self, batch: Batch) -> LatentTrajectory:
        return self.model.trajectory(batch, self.posterior, self.model.embedded(batch)[1])
