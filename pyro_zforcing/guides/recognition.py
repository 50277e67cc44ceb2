"""STORN's recognition network (Bayer and Osendorfer, 2014): q(z_t | y_{1:t}) from a separate RNN.

    g_t = LSTM_q(e(y_t), g_{t-1}),  g_0 = 0,    q(z_t | y_{1:t}) = N(posterior(g_t))

A filtering guide whose recurrence does not read z: one fused LSTM pass and one batched head
give every step's Gaussian, and the trajectory is drawn at once.
"""

from __future__ import annotations

import torch.nn as nn

from ..data.base import Batch
from ..distributions import IndependentSteps
from ..nets import GaussianHead, init_recurrent
from .base import TrajectoryGuide


class RecognitionGuide(TrajectoryGuide):
    """q(z_{1:T} | y) = prod_t N(z_t; posterior(g_t)), g_t summarising y_{1..t}."""

    def __init__(self, model):
        super().__init__(model)
        c = model.config
        self.rnn = nn.LSTM(c.emb_dim, c.rnn_dim, batch_first=True)
        init_recurrent(self.rnn, c.init, zero_biases=False)
        self.posterior = GaussianHead(c.rnn_dim, c.mlp_dim, c.z_dim, clamp=c.logvar_clamp)

    def proposal(self, batch: Batch) -> IndependentSteps:
        g, _ = self.rnn(self.model.embedded(batch)[1])
        loc, scale = self.posterior(g)
        return IndependentSteps(loc, scale, batch.mask)
