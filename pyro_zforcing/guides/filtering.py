"""A guide without look-ahead: q(z_t | s_{t-1}, c_t), what VRNN-style inference sees.

s_{t-1} is the model's state (``model.state_dim``: h_{t-1} for Z-Forcing and VRNN, z_{t-1}
for SRNN) and c_t its ``filtering_context``: e(y_t) for Z-Forcing and VRNN (VRNN's own
posterior q(z_t | x_t, h_{t-1})), [d_t, e(y_t)] for SRNN (the paper's filtering ablation).
In this package's indexing y_t is the frame being generated at step t (Z-Forcing's x_{t+1}),
so the guide sees the current target and the past, but nothing after y_t.
"""

from __future__ import annotations

from ..data.base import Batch
from ..distributions import LatentTrajectory
from ..models.base import SequenceModel
from ..nets import GaussianHead
from .base import TrajectoryGuide


class FilteringGuide(TrajectoryGuide):
    """q(z_{1:T} | y) = prod_t N(z_t; posterior([s_{t-1}, c_t]))."""

    def __init__(self, model: SequenceModel):
        super().__init__(model)
        c = model.config
        context_dim = model.filtering_context_dim
        self.posterior = GaussianHead(model.state_dim + context_dim, c.mlp_dim, c.z_dim, clamp=c.logvar_clamp)

    def proposal(self, batch: Batch) -> LatentTrajectory:
        return self.model.trajectory(batch, self.posterior, self.model.filtering_context(batch))
