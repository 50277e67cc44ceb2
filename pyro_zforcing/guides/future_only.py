"""A guide that sees only the future: q(z_t | b_t), without the forward state h_{t-1}.

The ablation of the paper's guide that drops its dependence on the past; z_t still drives
the forward RNN in the model, but the proposal of each step is a function of b_t alone.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn

from ..data.base import Batch
from ..distributions import LatentTrajectory
from ..models.zforcing import ZForcing
from ..nets import GaussianHead
from .base import TrajectoryGuide


class FutureHead(nn.Module):
    """N(z_t; loc, scale) from b_t alone; takes ``(h_prev, b_t)`` like every head and ignores h."""

    def __init__(self, rnn_dim: int, hidden_dim: int, z_dim: int, *, clamp: float):
        super().__init__()
        self.gaussian = GaussianHead(rnn_dim, hidden_dim, z_dim, clamp=clamp)

    def forward(self, h_prev: torch.Tensor, b: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.gaussian(b)


class FutureOnlyGuide(TrajectoryGuide):
    """q(z_{1:T} | y) = prod_t N(z_t; posterior(b_t)), b_t summarising y_{t..T}."""

    model_modules = ("bwd",)

    def __init__(self, model: ZForcing):
        super().__init__(model)
        c = model.config
        self.posterior = FutureHead(c.rnn_dim, c.mlp_dim, c.z_dim, clamp=c.logvar_clamp)

    def proposal(self, batch: Batch) -> LatentTrajectory:
        return self.model.trajectory(batch, self.posterior, self.model.backward_states(batch))
