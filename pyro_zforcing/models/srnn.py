"""The SRNN (Fraccaro et al., 2016) as a sequence-level Pyro model.

With inputs u_t = y_{t-1} (u_1 a start frame or token), as every model of the package:

    d_t = LSTM(e(u_t), d_{t-1}),  d_0 = 0                 deterministic, fused over the sequence
    z_t ~ p(z_t | z_{t-1}, d_t) = N(prior([z_{t-1}, d_t])),  z_0 = 0
    y_t ~ p(y_t | z_t, d_t) = emission(LReLU(W [z_t, d_t]))

Guides (``pyro_zforcing.guides``): "smoothing" q(z_t | z_{t-1}, a_t) with a_t a backward LSTM
over [d_t, e(y_t)] and the Resq mean (prior mean + correction; the paper's best and the
default), "smoothing-plain" (no Resq), "filtering" q(z_t | z_{t-1}, d_t, e(y_t)) (the
paper's filtering ablation), and "prior". Choices where the paper is open follow its
reference code (marcofraccaro/srnn, ml/models/SRNN_timit.py): z_0 = 0 and d_0 = 0; one
feature extractor shared by the inputs u_t and the targets x_t (here the embedding e(.));
the inference network reads the generative d_t (gradients of the guide reach the d-RNN);
Gaussian parameters as mean and log-variance; the clipped leaky rectifier (slope 1/3) the
package uses everywhere. e(.) is the package's input embedding (``ModelConfig.embedding``: a
Linear layer by default, Linear + bounded leaky ReLU with ``"leaky"``), and both LSTMs follow
``ModelConfig.init`` (``nets.init_recurrent``: d as a generative recurrence, a as an inference
one). Differences: LSTMs instead of GRUs for d and a; a one-layer
embedding (the reference: two dense layers); one MLP per head giving mean and log-variance
(the reference: separate MLPs for each), log-variances clamped to +-8; no dropout; the
filtering guide feeds [d_t, e(y_t)] to the head directly (the reference: through an MLP). In the paper's indexing the
input of d_t is u_t = x_{t-1}; here that is the shifted target y_{t-1}, the same model.
Only the z-recurrence loops in Python (in the guide); the model scores the prior and the
emission fused over the whole trajectory.
"""

from __future__ import annotations

from typing import Optional

import pyro
import torch
import torch.nn as nn

from ..cache import LastResult
from ..config import ModelConfig
from ..data.base import Batch
from ..distributions import LatentTrajectory
from ..nets import ConditionalEmission, GaussianHead, init_recurrent
from ..steps import Recurrence, StepFunction, latest_latent
from .base import LATENT_SITE, OBS_SITE, SequenceModel, inputs_of


class SRNN(SequenceModel):
    """p(y, z) of the SRNN; owns e(.), the d-LSTM, the prior and the emission."""

    name = "srnn"
    guides = ("smoothing", "smoothing-plain", "filtering", "prior")

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        c = config
        self.rnn = nn.LSTM(c.emb_dim, c.rnn_dim, batch_first=True)
        init_recurrent(self.rnn, c.init, zero_biases=True)
        self.prior = GaussianHead(c.z_dim + c.rnn_dim, c.mlp_dim, c.z_dim, clamp=c.logvar_clamp)
        self.emission = ConditionalEmission(c, c.z_dim + c.rnn_dim)
        self._deterministic = LastResult(lambda: (*self.embed.parameters(), *self.rnn.parameters()))

    @property
    def state_dim(self) -> int:
        """The proposal heads read z_{t-1}."""
        return self.config.z_dim

    @property
    def filtering_context_dim(self) -> int:
        return self.config.rnn_dim + self.config.emb_dim

    def filtering_context(self, batch: Batch) -> torch.Tensor:
        """[d_t, e(y_t)] ``(B, T, H + E)``."""
        return torch.cat([self.deterministic_states(batch), self.embedded(batch)[1]], dim=-1)

    def deterministic_states(self, batch: Batch) -> torch.Tensor:
        """d_{1:T} ``(B, T, H)``, one fused LSTM pass over the inputs."""
        cached = self._deterministic.get(*inputs_of(batch))
        if cached is None:
            cached = self.rnn(self.embedded(batch)[0])[0]
            self._deterministic.put(cached, *inputs_of(batch))
        return cached

    def trajectory(self, batch: Batch, head, context: torch.Tensor) -> LatentTrajectory:
        """The autoregressive Gaussian over z_{1:T} whose step t is ``head(z_{t-1}, context_t)``."""
        z_dim = self.config.z_dim

        def recurrence() -> Recurrence:  # the carry is z_{t-1} itself, z_0 = 0
            return Recurrence(StepFunction(latest_latent), (context.new_zeros(batch.batch_size, z_dim),))

        def previous(z: torch.Tensor) -> torch.Tensor:  # z_{0:T}: the "states" the heads read
            return torch.cat([z.new_zeros(z.shape[0], 1, z.shape[2]), z], dim=1)

        return LatentTrajectory(head=head, context=context, mask=batch.mask, z_dim=z_dim, states=previous,
                                recurrence=recurrence, remember=lambda z, h: None)

    def prior_trajectory(self, batch: Batch) -> LatentTrajectory:
        """p(z_{1:T} | u) = prod_t N(z_t; prior([z_{t-1}, d_t]))."""
        return self.trajectory(batch, self.prior, self.deterministic_states(batch))

    def forward(self, batch: Batch, *, aux_weight: float = 0.0, bwd_weight: float = 0.0) -> torch.Tensor:
        """Declares z ~ p(z | d), y ~ p(y | z, d) observed; Z-Forcing's training-only weights are ignored."""
        with pyro.plate("sequences", batch.batch_size):
            z = pyro.sample(LATENT_SITE, self.prior_trajectory(batch))
            d = self.deterministic_states(batch)
            pyro.sample(OBS_SITE, self.emission.dist(z, d, mask=batch.mask), obs=batch.x)
        return z

    @torch.no_grad()
    def generate(self, num: int, steps: int, *, prime: Optional[torch.Tensor] = None,
                 z: Optional[torch.Tensor] = None, mean: bool = False) -> torch.Tensor:
        """Ancestral samples ``(num, steps, ...)``; see :meth:`ZForcing.generate` for ``prime``, ``z``, ``mean``."""
        param = next(self.parameters())
        u = self.embed.start(num, param)
        z_t = param.new_zeros(num, self.config.z_dim)
        state = None
        outputs = []
        for t in self.generation_steps(steps):
            d, state = self.rnn(u, state)
            d = d[:, 0]
            z_t = self.latent_at(t, z, lambda: self.prior(z_t, d))
            prime_t = prime[:, t] if prime is not None and t < prime.shape[1] else None
            out_t, y_t = self.emit(self.emission.head, self.emission.features(z_t, d), mean=mean, prime_t=prime_t)
            outputs.append(out_t)
            u = self.embed(y_t)[:, None]
        return torch.stack(outputs, dim=1)
