"""The Z-Forcing generative model as a Pyro program.

For a sequence of targets y_1..y_T with inputs u_t = y_{t-1} (u_1 a start frame or token):

    z_t ~ p(z_t | h_{t-1}) = N(prior(h_{t-1}))            conditional prior
    h_t = LSTM_f([e(u_t), W z_t], h_{t-1})                 forward state
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
import torch.nn as nn

from ..cache import LastResult
from ..config import ModelConfig
from ..data.base import Batch
from ..distributions import LatentTrajectory
from ..nets import AuxHead, BackwardRNN, EmissionHead, ForwardRNN, GaussianHead, InputEmbedding

LATENT_SITE = "z"
OBS_SITE = "x"
AUX_SITE = "aux"
BWD_SITE = "bwd"
TRAINING_ONLY_SITES = (AUX_SITE, BWD_SITE)


def inputs_of(batch: Batch) -> tuple:
    """The tensors the inputs u_{1:T} are made of: the targets, and the given first input if any."""
    return (batch.x,) if batch.first is None else (batch.x, batch.first)


class ZForcing(nn.Module):
    """p(y, z) with the conditional prior, forward LSTM and emission; owns every shared network.

    Guides take this model at construction and use its embedding, forward RNN and backward
    RNN (``trajectory``, ``backward_states``); the parameters stay owned here.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        tokens = config.emission == "categorical"
        self.embed = InputEmbedding(config.input_dim, config.emb_dim, tokens=tokens)
        self.fwd = ForwardRNN(config.emb_dim, config.z_dim, config.mlp_dim, config.rnn_dim)
        self.bwd = BackwardRNN(config.emb_dim, config.rnn_dim)
        self.prior = GaussianHead(config.rnn_dim, config.mlp_dim, config.z_dim, clamp=config.logvar_clamp)
        self.emission = EmissionHead(config.rnn_dim, config.input_dim, config.emission, clamp=config.logvar_clamp)
        self.aux = AuxHead(config.z_dim, config.rnn_dim, config.mlp_dim, use_h=config.aux_input == "hz",
                           loss=config.aux_loss, clamp=config.logvar_clamp)
        self.bwd_head = EmissionHead(config.rnn_dim, config.input_dim, config.emission, clamp=config.logvar_clamp)
        self._embedded = LastResult(self.embed.parameters)
        self._backward = LastResult(lambda: (*self.embed.parameters(), *self.bwd.parameters()))
        self._forward = LastResult(lambda: (*self.embed.parameters(), *self.fwd.parameters()))

    def forget(self) -> None:
        """Drop the remembered embeddings and states: a new evaluation of the loss begins.

        A remembered value with grad history belongs to one autograd graph; reusing it in the
        next evaluation (the same batch twice without an update in between, as in gradient
        accumulation or an LBFGS closure) would backpropagate through a freed graph.
        """
        for cache in (self._embedded, self._backward, self._forward):
            cache.clear()

    # ----- deterministic pieces shared with the guides -----

    def embedded(self, batch: Batch):
        """(e(u_{1:T}), e(y_{1:T})), each ``(B, T, E)``, for the inputs and targets of ``batch``;
        u_1 is ``batch.first`` when given, else the start frame or token."""
        keys = inputs_of(batch)
        cached = self._embedded.get(*keys)
        if cached is None:
            targets = self.embed(batch.x)
            if batch.first is None:
                first = self.embed.start(batch.batch_size, targets)
            else:
                first = self.embed(batch.first.unsqueeze(1))
            cached = (torch.cat([first, targets[:, :-1]], dim=1), targets)
            self._embedded.put(cached, *keys)
        return cached

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

        def stepper():
            gates, w_z = self.fwd.input_gates(self.embedded(batch)[0])
            gates = gates.unbind(1)  # one backward node for all steps; gates[:, t] would add T

            def advance(t, z_t, state):
                return self.fwd.step(gates[t], w_z, z_t, state)

            return advance, self.fwd.initial(batch.batch_size, w_z)

        return LatentTrajectory(
            head=head, context=context, mask=batch.mask, z_dim=self.config.z_dim,
            states=lambda z: self.forward_states(batch, z), stepper=stepper,
            remember=lambda z, h: self._forward.put(h, *inputs_of(batch), z))

    def prior_trajectory(self, batch: Batch) -> LatentTrajectory:
        """p(z_{1:T} | u_{1:T}) = prod_t N(z_t; prior(h_{t-1}))."""
        return self.trajectory(batch, self.prior)

    # ----- the Pyro model -----

    def forward(self, batch: Batch, *, aux_weight: float = 0.0, bwd_weight: float = 0.0) -> torch.Tensor:
        """Declares z ~ p(z | u), y ~ p(y | h) observed, and the training-only factors."""
        with pyro.plate("sequences", batch.batch_size):
            z = pyro.sample(LATENT_SITE, self.prior_trajectory(batch))
            h = self.forward_states(batch, z)
            pyro.sample(OBS_SITE, self.emission.dist(h[:, 1:], batch.mask), obs=batch.x)
            if aux_weight > 0:
                pyro.factor(AUX_SITE, aux_weight * self.aux_log_prob(batch, h, z))
            if bwd_weight > 0:
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
        param = next(self.parameters())
        tokens = self.config.emission == "categorical"
        state = self.fwd.initial(num, param)
        u = self.embed.start(num, param)[:, 0]
        outputs = []
        for t in range(steps):
            if z is not None and t < z.shape[1]:
                z_t = z[:, t]
            else:
                loc, scale = self.prior(state[0])
                z_t = loc + scale * torch.randn_like(loc)
            gates, w_z = self.fwd.input_gates(u[:, None])
            state = self.fwd.step(gates[:, 0], w_z, z_t, state)
            if prime is not None and t < prime.shape[1]:
                y_t = out_t = prime[:, t]
            elif mean:
                out_t, y_t = self.emission_mean(state[0])
            else:
                y_t = out_t = self.emission.step_dist(state[0]).sample()
                if tokens:
                    y_t = out_t = y_t.long()
            outputs.append(out_t)
            u = self.embed(y_t)
        return torch.stack(outputs, dim=1)

    def emission_mean(self, h: torch.Tensor):
        """(mean, mode) of p(y_t | h_t): pixel probabilities and pixels > 1/2, the Gaussian mean
        twice, or the most likely token twice."""
        step = self.emission.step_dist(h)
        if self.config.emission == "categorical":
            token = step.logits.argmax(-1)
            return token, token
        if self.config.emission == "bernoulli":
            return step.probs, (step.probs > 0.5).to(step.probs.dtype)
        return step.mean, step.mean
