"""STORN (Bayer and Osendorfer, 2014) as a sequence-level Pyro model.

With inputs u_t = y_{t-1} (u_1 a start frame or token), as every model of the package:

    z_t ~ N(0, I)                                          independent across steps
    h_t = LSTM([e(u_t), W z_t + c], h_{t-1}),  h_0 = 0      the generative RNN (Z-Forcing's forward RNN)
    y_t ~ p(y_t | h_t)                                     emission
    q(z_t | y_{1:t}) = N(posterior(g_t)),  g_t = LSTM_q(e(y_t), g_{t-1})   the "recognition" guide

The recognition RNN does not depend on z, so the guide draws the whole trajectory at once
and the generative RNN runs fused over it: training has no Python loop over time. The
per-step cell (``fwd.recurrence``, the same LSTM step) drives generation. Choices where the
paper is open follow this package: LSTMs for both RNNs, one hidden layer (bounded leaky ReLU)
in the posterior head with its log-variance clamped to +-``logvar_clamp``, z entering the
generative LSTM through a linear projection concatenated to e(u_t), and the KL estimator of
``TrainConfig.kl`` (analytic by default, as every model; ``"sampled"`` is Trace_ELBO's);
``init`` and ``embedding`` as for Z-Forcing.
"""

from __future__ import annotations

from typing import Optional

import pyro
import torch

from ..config import ModelConfig
from ..data.base import Batch
from ..distributions import IndependentSteps
from ..emissions import emission_head
from ..nets import ForwardRNN
from .base import LATENT_SITE, OBS_SITE, SequenceModel, generate_through_forward_rnn


class STORN(SequenceModel):
    """p(y, z) of STORN; owns e(.), the generative LSTM and the emission (the guide owns its RNN)."""

    name = "storn"
    guides = ("recognition", "prior")

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        c = config
        self.fwd = ForwardRNN(c.emb_dim, c.z_dim, c.mlp_dim, c.rnn_dim, init=c.init)
        self.emission = emission_head(config, c.rnn_dim)

    def prior_trajectory(self, batch: Batch) -> IndependentSteps:
        """p(z_{1:T}) = prod_t N(z_t; 0, I)."""
        return IndependentSteps.standard(self.embedded(batch)[0], self.config.z_dim, batch.mask)

    def forward(self, batch: Batch, *, aux_weight: float = 0.0, bwd_weight: float = 0.0) -> torch.Tensor:
        """Declares z ~ N(0, I), y ~ p(y | h) observed; Z-Forcing's training-only weights are ignored."""
        with pyro.plate("sequences", batch.batch_size):
            z = pyro.sample(LATENT_SITE, self.prior_trajectory(batch))
            h = self.fwd.outputs(self.embedded(batch)[0], z)
            pyro.sample(OBS_SITE, self.emission.dist(h, batch.mask), obs=batch.x)
        return z

    def generate(self, num: int, steps: int, *, prime: Optional[torch.Tensor] = None,
                 z: Optional[torch.Tensor] = None, mean: bool = False) -> torch.Tensor:
        """Ancestral samples ``(num, steps, ...)``; see :meth:`ZForcing.generate` for ``prime``, ``z``, ``mean``."""
        def standard(h: torch.Tensor):
            loc = h.new_zeros(h.shape[0], self.config.z_dim)
            return loc, torch.ones_like(loc)

        return generate_through_forward_rnn(self, num, steps, standard, prime=prime, z=z, mean=mean)
