"""The RNN baseline: Z-Forcing's input embedding, LSTM and emission without latent variables.

    h_t = LSTM(e(u_t), h_{t-1}),  h_0 = 0,   y_t ~ p(y_t | h_t),   u_t = y_{t-1} (u_1 a start frame)

e(.) is the package's input embedding (``ModelConfig.embedding``), the LSTM initialised by
``ModelConfig.init`` as every generative recurrence (``nets.init_recurrent``). The recurrence
does not depend on any latent, so it runs fused over the whole sequence. With
no latent site, log p(y) is exact: the ELBO and every IWAE bound equal it and the KL is 0.
Table 1's "RNN-Gauss" and "RNN-GMM" rows are ``--model rnn`` with ``--emission gaussian|gmm``.
"""

from __future__ import annotations

from typing import Optional

import pyro
import torch
import torch.nn as nn

from ..config import ModelConfig
from ..data.base import Batch
from ..emissions import emission_head
from ..nets import init_recurrent
from .base import OBS_SITE, SequenceModel


class RNN(SequenceModel):
    """p(y) = prod_t p(y_t | h_t): an LSTM language model of frames or tokens."""

    name = "rnn"
    latent_sites = ()
    guides = ("exact",)

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.lstm = nn.LSTM(config.emb_dim, config.rnn_dim, batch_first=True)
        init_recurrent(self.lstm, config.init, zero_biases=True)
        self.emission = emission_head(config, config.rnn_dim)

    def states(self, batch: Batch) -> torch.Tensor:
        """h_{1:T} ``(B, T, H)``."""
        return self.lstm(self.embedded(batch)[0])[0]

    def forward(self, batch: Batch, *, aux_weight: float = 0.0, bwd_weight: float = 0.0) -> None:
        """Observes y ~ p(y | h); Z-Forcing's training-only weights do not apply and are ignored."""
        with pyro.plate("sequences", batch.batch_size):
            pyro.sample(OBS_SITE, self.emission.dist(self.states(batch), batch.mask), obs=batch.x)

    @torch.no_grad()
    def generate(self, num: int, steps: int, *, prime: Optional[torch.Tensor] = None,
                 z: Optional[torch.Tensor] = None, mean: bool = False) -> torch.Tensor:
        """Ancestral samples ``(num, steps, ...)``; ``prime`` teacher-forces the first steps, ``z``
        must be None (there are no latents); ``mean`` feeds back the emission's mean/mode."""
        if z is not None:
            raise ValueError("the rnn model has no latent variables to decode")
        param = next(self.parameters())
        u = self.embed.start(num, param)
        state = None
        outputs = []
        for t in self.generation_steps(steps):
            h, state = self.lstm(u, state)
            prime_t = prime[:, t] if prime is not None and t < prime.shape[1] else None
            out_t, y_t = self.emit(self.emission, h[:, 0], mean=mean, prime_t=prime_t)
            outputs.append(out_t)
            u = self.embed(y_t)[:, None]
        return torch.stack(outputs, dim=1)
