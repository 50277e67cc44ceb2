"""The Z-Forcing generative model as a Pyro program.

For a sequence of targets y_1..y_T with inputs u_t = y_{t-1} (u_1 a start frame or token):

    z_t ~ p(z_t | h_{t-1}) = N(prior(h_{t-1}))            conditional prior
    h_t = LSTM_f([e(u_t), W z_t], h_{t-1})                 forward state (or the authors'
                                                           cond_ln LSTM, gains from z_t)
    y_t ~ p(y_t | h_t)                                     emission
    b_t = LSTM_b(e(y_t), b_{t+1})                          backward state, summarises y_{t..T}

plus the auxiliary factor beta * sum_t log p(b_t | [h_{t-1},] z_t) with b detached, and
optionally the authors' backward language-model factor sum_t log p(y_{t-1} | b_t). Both
factors shape training only; every reported bound runs the model with their weights at 0.

In the paper's notation x_t = u_t and x_{t+1} = y_t; the start input lets the bound cover
every step of the sequence. Batch layout: ``batch.x`` is ``(B, T, D)`` or ``(B, T)`` tokens.
"""

from __future__ import annotations

from typing import Optional

import pyro
import torch

from ..cache import LastResult
from ..config import ModelConfig
from ..data.base import Batch
from ..distributions import LatentTrajectory
from ..emissions import emission_head
from ..nets import AuxHead, BackwardRNN, CondLayerNormRNN, ForwardRNN, GaussianHead
from .base import (AUX_SITE, BWD_SITE, GUIDE_READS, LATENT_SITE, OBS_SITE, SequenceModel, active,
                   generate_through_forward_rnn, inputs_of)

FORWARD_RNNS = {"concat": ForwardRNN, "cond-ln": CondLayerNormRNN}  # by ModelConfig.z_conditioning


class ZForcing(SequenceModel):
    """p(y, z) with the conditional prior, forward LSTM and emission; owns every shared network.

    Guides take this model at construction and use its embedding, forward RNN and backward
    RNN (``trajectory``, ``backward_states``); the parameters stay owned here. p(y, z) is the
    embedding, ``fwd``, ``prior`` and ``emission``; the backward LSTM ``bwd`` belongs to the
    inference network (the guides that read b_t) or, read by the backward LM alone, to the
    training-only heads with ``aux`` and ``bwd_head``.
    """

    name = "zforcing"
    guides = ("backward", "filtering", "future-only", "prior")
    side_modules = {"bwd": (GUIDE_READS, BWD_SITE), "aux": (AUX_SITE,), "bwd_head": (BWD_SITE,)}

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.fwd = FORWARD_RNNS[config.z_conditioning](config.emb_dim, config.z_dim, config.mlp_dim, config.rnn_dim,
                                                       init=config.init)
        self.bwd = BackwardRNN(config.emb_dim, config.rnn_dim, init=config.init)
        self.prior = GaussianHead(config.rnn_dim, config.mlp_dim, config.z_dim, clamp=config.logvar_clamp)
        self.emission = emission_head(config, config.rnn_dim)
        self.aux = AuxHead(config.z_dim, config.rnn_dim, config.mlp_dim, use_h=config.aux_input == "hz",
                           loss=config.aux_loss, clamp=config.logvar_clamp)
        self.bwd_head = emission_head(config, config.rnn_dim)
        self._backward = LastResult(lambda: (*self.embed.parameters(), *self.bwd.parameters()))
        self._forward = LastResult(lambda: (*self.embed.parameters(), *self.fwd.parameters()))
        self._prior = LastResult(self.parameters)

    # ----- deterministic pieces shared with the guides -----

    def backward_states(self, batch: Batch) -> torch.Tensor:
        """b_{1:T} ``(B, T, H)``: b_t summarises the targets y_{t..T}."""
        cached = self._backward.get(batch.x)
        if cached is None:
            cached = self.bwd(self.embedded(batch)[1], batch.lengths)
            self._backward.put(cached, batch.x)
        return cached

    def forward_states(self, batch: Batch, z: torch.Tensor) -> torch.Tensor:
        """h_{0:T} ``(B, T+1, H)`` driven by the inputs of ``batch`` and the latents ``z: (B, T, Z)``."""
        cached = self._forward.get(*inputs_of(batch), z)
        if cached is None:
            cached = self.fwd.states(self.embedded(batch)[0], z)
            self._forward.put(cached, *inputs_of(batch), z)
        return cached

    def trajectory(self, batch: Batch, head, context: Optional[torch.Tensor] = None) -> LatentTrajectory:
        """The autoregressive Gaussian over z_{1:T} whose step t is ``head(h_{t-1}[, context_t])``."""

        return LatentTrajectory(
            head=head, context=context, mask=batch.mask, z_dim=self.config.z_dim,
            states=lambda z: self.forward_states(batch, z),
            recurrence=lambda: self.fwd.recurrence(self.embedded(batch)[0]),
            remember=lambda z, h: self._forward.put(h, *inputs_of(batch), z))

    def prior_trajectory(self, batch: Batch) -> LatentTrajectory:
        """p(z_{1:T} | u_{1:T}) = prod_t N(z_t; prior(h_{t-1})).

        The same object for the same batch within one evaluation, so a trajectory drawn from the
        prior (the ``prior`` guide) is scored from the very parameters it was drawn with, and
        log q - log p is exactly 0 rather than the rounding of a batched recomputation.
        """
        cached = self._prior.get(*inputs_of(batch))
        if cached is None:
            cached = self.trajectory(batch, self.prior)
            self._prior.put(cached, *inputs_of(batch))
        return cached

    # ----- the Pyro model -----

    def forward(self, batch: Batch, *, aux_weight: float = 0.0, bwd_weight: float = 0.0) -> torch.Tensor:
        """Declares z ~ p(z | u), y ~ p(y | h) observed, and the training-only factors."""
        with pyro.plate("sequences", batch.batch_size):
            z = pyro.sample(LATENT_SITE, self.prior_trajectory(batch))
            h = self.forward_states(batch, z)
            pyro.sample(OBS_SITE, self.emission.dist(h[:, 1:], batch.mask), obs=batch.x)
            if active(aux_weight):
                pyro.factor(AUX_SITE, aux_weight * self.aux_log_prob(batch, h, z))
            if active(bwd_weight):
                pyro.factor(BWD_SITE, bwd_weight * self.bwd_log_prob(batch))
        return z

    def aux_log_prob(self, batch: Batch, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """sum_t log p(b_t | [h_{t-1},] z_t) per sequence ``(B,)``, with b detached."""
        b = self.backward_states(batch).detach()
        return (self.aux(h[:, :-1], z, b) * batch.mask).sum(-1)

    def bwd_log_prob(self, batch: Batch) -> torch.Tensor:
        """The backward language model sum_{t>=2} log p(y_{t-1} | b_t) per sequence ``(B,)``."""
        b = self.backward_states(batch)
        mask = batch.mask[:, 1:]
        return self.bwd_head.dist(b[:, 1:], mask).log_prob(batch.x[:, :-1])

    # ----- generation -----

    @torch.no_grad()
    def generate(self, num: int, steps: int, *, prime: Optional[torch.Tensor] = None,
                 z: Optional[torch.Tensor] = None, mean: bool = False) -> torch.Tensor:
        """Ancestral samples ``(num, steps, D)`` (or ``(num, steps)`` tokens) from p(y, z).

        With ``prime`` (``(num, P, ...)``, a batch of real prefixes) the first P steps are
        teacher-forced, and the continuation is sampled. With ``z`` (``(num, S, Z)``, S <= steps)
        the first S latents are given instead of drawn from the prior: the guide's encoding of
        the prime, or a whole encoded or interpolated trajectory to decode. With ``mean`` each
        step returns the emission's mean (pixel probabilities, the Gaussian mean, the most likely
        token) and feeds back its mode, so decoding a given ``z`` is deterministic.
        """
        return generate_through_forward_rnn(self, num, steps, self.prior, prime=prime, z=z, mean=mean)
