"""The VRNN (Chung et al., 2015) as a sequence-level Pyro model.

With x_t = y_t (the target of step t; the recurrence has consumed y_{<t} through h_{t-1}):

    z_t ~ p(z_t | h_{t-1}) = N(prior(h_{t-1}))              conditional prior ("VRNN-Gauss")
                           = N(0, I)  with prior="standard"  ("VRNN-I-Gauss")
    y_t ~ p(y_t | z_t, h_{t-1}) = emission(LReLU(W [phi_z(z_t), h_{t-1}]))
    h_t = LSTM([phi_x(y_t), phi_z(z_t)], h_{t-1}),  h_0 = 0
    q(z_t | y_t, h_{t-1}) = N(posterior([h_{t-1}, phi_x(y_t)]))   the "filtering" guide

phi_x is the package's input embedding e(.) (``ModelConfig.embedding``: a Linear layer by
default, Linear + bounded leaky ReLU with ``"leaky"``, or a token lookup), phi_z = LReLU(Linear(z)),
the LSTM initialised by ``ModelConfig.init`` as every generative recurrence
(``nets.init_recurrent``). When the batch gives the frame before the sequence
(``Batch.first``: a window of a longer signal, a stream chunk), the recurrence reads it first,
with z_0 = 0: h_0 = LSTM([phi_x(first), phi_z(0)], 0), as every model takes u_1 = first.
Choices where the paper is open follow the authors' Theano code
(jych/nips2015_vrnn, models/blizzard/vrnn_gmm.py): an LSTM recurrence on [phi_x(x_t),
phi_z(z_t)], the posterior on [phi_x(x_t), h_{t-1}], the emission on [phi_z(z_t), h_{t-1}],
h_0 = 0. Differences: one hidden layer per feature extractor and head with the package's
bounded leaky ReLU (the reference: four ReLU layers of 500 each), Gaussian heads with a
log-variance clamped to +-8 (the reference: softplus standard deviations + 1e-4); the
reference trains with the analytic Gaussian KL, here ``TrainConfig.kl`` (analytic by
default). Because h_{t-1} already summarises y_{<t}, no start
frame is needed: every step t = 1..T is scored, as by every model of the package.
The z-driven recurrence loops in Python while the guide samples; the model reuses the guide's
states (``cache.LastResult``) and scores prior and emission fused over the whole sequence.
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
from ..nets import BoundedLeakyReLU, ConditionalEmission, GaussianHead, StandardNormalHead, init_recurrent, lstm_pointwise
from ..steps import Recurrence, StepFunction
from .base import LATENT_SITE, OBS_SITE, SequenceModel, inputs_of


def vrnn_step(phi_z: nn.Module, w_z: torch.Tensor, w_hh: torch.Tensor, gates_t: torch.Tensor, z_t: torch.Tensor,
              h: torch.Tensor, c: torch.Tensor):
    """h_t, c_t from the precomputed phi_x gates ``(B, 4H)`` and the new latent ``(B, Z)``:
    gates = gates_t + W_z phi_z(z_t) + W_hh h_{t-1}."""
    return lstm_pointwise(torch.addmm(torch.addmm(gates_t, phi_z(z_t), w_z.t()), h, w_hh.t()), c)


class VRNN(SequenceModel):
    """p(y, z) of the VRNN; owns phi_x (``embed``), phi_z, the LSTM, prior and emission."""

    name = "vrnn"
    guides = ("filtering", "prior")

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        c = config
        self.phi_z = nn.Sequential(nn.Linear(c.z_dim, c.mlp_dim), BoundedLeakyReLU())
        self.lstm = nn.LSTM(c.emb_dim + c.mlp_dim, c.rnn_dim, batch_first=True)
        init_recurrent(self.lstm, c.init, zero_biases=True)
        if c.prior == "standard":
            self.prior = StandardNormalHead(c.z_dim)
        else:
            self.prior = GaussianHead(c.rnn_dim, c.mlp_dim, c.z_dim, clamp=c.logvar_clamp)
        self.emission = ConditionalEmission(c, c.mlp_dim + c.rnn_dim)
        self._forward = LastResult(lambda: (*self.embed.parameters(), *self.phi_z.parameters(),
                                            *self.lstm.parameters()))

    def forward_states(self, batch: Batch, z: torch.Tensor) -> torch.Tensor:
        """h_{0:T} ``(B, T+1, H)`` for the inputs of ``batch`` and the latents ``z: (B, T, Z)``, fused."""
        cached = self._forward.get(*inputs_of(batch), z)
        if cached is None:
            inputs = torch.cat([self.fed_back(batch), self.phi_z(z)], dim=-1)
            if batch.first is None:
                out, _ = self.lstm(inputs)
                cached = torch.cat([out.new_zeros(out.shape[0], 1, out.shape[2]), out], dim=1)
            else:  # h_0 reads the frame before the sequence, with z_0 = 0
                cached, _ = self.lstm(torch.cat([self._first_input(batch), inputs], dim=1))
            self._forward.put(cached, *inputs_of(batch), z)
        return cached

    def _first_input(self, batch: Batch) -> torch.Tensor:
        """[phi_x(first), phi_z(0)] ``(B, 1, E + M)``: the input that gives h_0 when ``batch.first`` is set."""
        phi_x = self.embedded(batch)[0][:, :1]
        return torch.cat([phi_x, self.phi_z(phi_x.new_zeros(phi_x.shape[0], 1, self.config.z_dim))], dim=-1)

    def _input_gates(self, phi_x: torch.Tensor):
        """LSTM gate pre-activations from phi_x ``(B, T, 4H)`` (biases folded in) and W_ih's phi_z part."""
        emb_dim = self.config.emb_dim
        w_ih = self.lstm.weight_ih_l0
        bias = self.lstm.bias_ih_l0 + self.lstm.bias_hh_l0
        gates = torch.addmm(bias, phi_x.reshape(-1, emb_dim), w_ih[:, :emb_dim].t())
        return gates.view(phi_x.shape[0], phi_x.shape[1], -1), w_ih[:, emb_dim:]

    def recurrence(self, phi_x: torch.Tensor, *, first: Optional[torch.Tensor] = None) -> Recurrence:
        """The sampling loop's step (:func:`vrnn_step`) for embedded targets ``phi_x: (B, T, E)``;
        carry (h, c): h_0 = c_0 = 0, or with ``first`` (phi_x of the frame before the sequence,
        ``(B, 1, E)``) h_0 = LSTM([phi_x(first), phi_z(0)], 0)."""
        gates, w_z = self._input_gates(phi_x)
        zero = gates.new_zeros(phi_x.shape[0], self.config.rnn_dim)
        shared = (self.phi_z, w_z, self.lstm.weight_hh_l0)
        initial = (zero, zero)
        if first is not None:
            first_gates, _ = self._input_gates(first)
            initial = vrnn_step(*shared, first_gates[:, 0], zero.new_zeros(phi_x.shape[0], self.config.z_dim), *initial)
        return Recurrence(StepFunction(vrnn_step, shared=shared, per_step=(gates,)), initial)

    def trajectory(self, batch: Batch, head, context: Optional[torch.Tensor] = None) -> LatentTrajectory:
        """The autoregressive Gaussian over z_{1:T} whose step t is ``head(h_{t-1}[, context_t])``."""
        embedded = self.embedded(batch)
        first = None if batch.first is None else embedded[0][:, :1]
        return LatentTrajectory(
            head=head, context=context, mask=batch.mask, z_dim=self.config.z_dim,
            states=lambda z: self.forward_states(batch, z),
            recurrence=lambda: self.recurrence(self.fed_back(batch), first=first),
            remember=lambda z, h: self._forward.put(h, *inputs_of(batch), z))

    def prior_trajectory(self, batch: Batch) -> LatentTrajectory:
        """p(z_{1:T} | y) = prod_t N(z_t; prior(h_{t-1})) (or N(0, I))."""
        return self.trajectory(batch, self.prior)

    def forward(self, batch: Batch, *, aux_weight: float = 0.0, bwd_weight: float = 0.0) -> torch.Tensor:
        """Declares z ~ p(z | .), y ~ p(y | z, h) observed; Z-Forcing's training-only weights are ignored."""
        with pyro.plate("sequences", batch.batch_size):
            z = pyro.sample(LATENT_SITE, self.prior_trajectory(batch))
            h = self.forward_states(batch, z)
            pyro.sample(OBS_SITE, self.emission.dist(self.phi_z(z), h[:, :-1], mask=batch.mask), obs=batch.x)
        return z

    @torch.no_grad()
    def generate(self, num: int, steps: int, *, prime: Optional[torch.Tensor] = None,
                 z: Optional[torch.Tensor] = None, mean: bool = False) -> torch.Tensor:
        """Ancestral samples ``(num, steps, ...)``; see :meth:`ZForcing.generate` for ``prime``, ``z``, ``mean``."""
        param = next(self.parameters())
        h = param.new_zeros(num, self.config.rnn_dim)
        state = (h, h)
        outputs = []
        for t in self.generation_steps(steps):
            z_t = self.latent_at(t, z, lambda: self.prior(state[0]))
            prime_t = prime[:, t] if prime is not None and t < prime.shape[1] else None
            out_t, y_t = self.emit(self.emission.head, self.emission.features(self.phi_z(z_t), state[0]), mean=mean, prime_t=prime_t)
            outputs.append(out_t)
            state = self.recurrence(self.embed(y_t)[:, None]).advance(0, z_t, *state)
        return torch.stack(outputs, dim=1)
