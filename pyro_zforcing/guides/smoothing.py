"""SRNN's smoothing guide (Fraccaro et al., 2016): q(z_t | z_{t-1}, a_t), a_t = g(a_{t+1}, [d_t, y_t]).

a_t is a backward LSTM over the model's deterministic states d_t and the embedded targets
e(y_t), so q sees the whole future of the sequence; with the "Resq" parametrisation (the
paper's best and the default) the posterior mean is the prior mean plus a correction,

    loc_t = mu^p(z_{t-1}, d_t) + mu^q(z_{t-1}, a_t),   scale_t = sigma^q(z_{t-1}, a_t);

``resq=False`` ("smoothing-plain") lets mu^q alone be the mean.
"""

from __future__ import annotations

from typing import Callable, Tuple

import torch
import torch.nn as nn

from ..data.base import Batch
from ..distributions import LatentTrajectory
from ..nets import BackwardRNN, GaussianHead
from .base import TrajectoryGuide


class ResqHead(nn.Module):
    """(mu^p(z_{t-1}, d_t) + mu^q(z_{t-1}, a_t), sigma^q(z_{t-1}, a_t)) from the context [a_t, d_t]."""

    def __init__(self, prior: GaussianHead, posterior: GaussianHead, a_dim: int):
        super().__init__()
        self._heads = (prior, posterior)  # owned by the model and the guide, not registered twice
        self.a_dim = a_dim

    def forward(self, z_prev: torch.Tensor, context: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        a, d = context[..., :self.a_dim], context[..., self.a_dim:]
        prior, posterior = self._heads
        p_loc, _ = prior(z_prev, d)
        q_loc, q_scale = posterior(z_prev, a)
        return p_loc + q_loc, q_scale

    def stepwise(self, context: torch.Tensor) -> Callable[[torch.Tensor, int], Tuple[torch.Tensor, torch.Tensor]]:
        """Both heads with their context share hoisted out of the loop (see GaussianHead.stepwise)."""
        prior = self._heads[0].stepwise(context[..., self.a_dim:])
        posterior = self._heads[1].stepwise(context[..., :self.a_dim])

        def params(z_prev: torch.Tensor, t: int) -> Tuple[torch.Tensor, torch.Tensor]:
            q_loc, q_scale = posterior(z_prev, t)
            return prior(z_prev, t)[0] + q_loc, q_scale
        return params


class SmoothingGuide(TrajectoryGuide):
    """q(z_{1:T} | y) = prod_t N(z_t; loc_t, scale_t) with the Resq (default) or plain mean."""

    resq = True

    def __init__(self, model):
        super().__init__(model)
        c = model.config
        self.backward = BackwardRNN(c.rnn_dim + c.emb_dim, c.rnn_dim, init=c.init)
        self.posterior = GaussianHead(c.z_dim + c.rnn_dim, c.mlp_dim, c.z_dim, clamp=c.logvar_clamp)
        self._head = (ResqHead(model.prior, self.posterior, c.rnn_dim) if self.resq else self.posterior,)

    def smoothing_states(self, batch: Batch) -> torch.Tensor:
        """a_{1:T} ``(B, T, H)``: a_t summarises [d_s, e(y_s)] for s = t..T."""
        d = self.model.deterministic_states(batch)
        return self.backward(torch.cat([d, self.model.embedded(batch)[1]], dim=-1), batch.lengths)

    def proposal(self, batch: Batch) -> LatentTrajectory:
        a = self.smoothing_states(batch)
        context = torch.cat([a, self.model.deterministic_states(batch)], dim=-1) if self.resq else a
        return self.model.trajectory(batch, self._head[0], context)


class PlainSmoothingGuide(SmoothingGuide):
    """The smoothing guide without Resq: loc_t = mu^q(z_{t-1}, a_t)."""

    resq = False
