"""The networks of Z-Forcing, one small ``nn.Module`` per density or state.

Shapes are batch first: sequences ``(B, T, ...)``, one step ``(B, ...)``. Every head accepts
any leading shape, so the same module serves one step of a loop and a whole sequence at once.
Sizes and non-linearities follow the authors' code: a leaky ReLU with slope 1/3 clamped to
[-3, 3] between layers, and Gaussian parameters clamped to [-logvar_clamp, logvar_clamp].
"""

from __future__ import annotations

import math
from typing import Callable, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import pyro.distributions as dist
from pyro.distributions.util import is_validation_enabled

from .distributions import MaskedEmission

LEAKY_SLOPE = 1.0 / 3.0
LOG_2PI = math.log(2 * math.pi)
LEAKY_BOUND = 3.0


class BoundedLeakyReLU(nn.Module):
    """clamp(leaky_relu(x, 1/3), -3, 3): the authors' ``LReLU``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, LEAKY_SLOPE).clamp(-LEAKY_BOUND, LEAKY_BOUND)


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Linear -> bounded leaky ReLU -> Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), BoundedLeakyReLU(), nn.Linear(hidden_dim, out_dim))


class InputEmbedding(nn.Module):
    """Embeds frames ``(..., D)`` by Linear + bounded leaky ReLU, or token ids ``(...)`` by lookup.

    Token id ``vocab_size`` is the start symbol fed before the first token.
    """

    def __init__(self, input_dim: int, emb_dim: int, *, tokens: bool):
        super().__init__()
        self.tokens = tokens
        if tokens:
            self.lookup = nn.Embedding(input_dim + 1, emb_dim)
            self.start_id = input_dim
        else:
            self.linear = nn.Linear(input_dim, emb_dim)
            self.act = BoundedLeakyReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tokens:
            return self.lookup(x)
        return self.act(self.linear(x))

    def start(self, batch_size: int, like: torch.Tensor) -> torch.Tensor:
        """Embedding of the start input, ``(B, 1, E)``: a zero frame or the start token."""
        if self.tokens:
            ids = torch.full((batch_size, 1), self.start_id, dtype=torch.long, device=like.device)
            return self.lookup(ids)
        zero = like.new_zeros((batch_size, 1, self.linear.in_features))
        return self.act(self.linear(zero))


class ForwardRNN(nn.Module):
    """The generative state h_t = LSTM([e(u_t), W z_t + c], h_{t-1}), h_0 = 0.

    One ``nn.LSTM`` holds the weights. ``states`` runs it fused over a whole given z
    trajectory; ``input_gates`` + ``step`` advance it one step at a time while z is being
    sampled, with the input part of the gates computed once for all steps and the latent
    projection folded into the recurrent weights.
    """

    def __init__(self, emb_dim: int, z_dim: int, proj_dim: int, rnn_dim: int):
        super().__init__()
        self.emb_dim = emb_dim
        self.rnn_dim = rnn_dim
        self.z_proj = nn.Linear(z_dim, proj_dim)
        self.lstm = nn.LSTM(emb_dim + proj_dim, rnn_dim, batch_first=True)

    def states(self, emb_inputs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """h_{0:T} for inputs ``(B, T, E)`` and latents ``(B, T, Z)``: returns ``(B, T+1, H)``."""
        out, _ = self.lstm(torch.cat([emb_inputs, self.z_proj(z)], dim=-1))
        return torch.cat([out.new_zeros(out.shape[0], 1, out.shape[2]), out], dim=1)

    def input_gates(self, emb_inputs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Gate pre-activations from the inputs ``(B, T, 4H)`` and the folded latent weights ``(4H, Z)``."""
        w_ih = self.lstm.weight_ih_l0
        w_emb, w_proj = w_ih[:, : self.emb_dim], w_ih[:, self.emb_dim:]
        bias = self.lstm.bias_ih_l0 + self.lstm.bias_hh_l0 + w_proj @ self.z_proj.bias
        gates = torch.addmm(bias, emb_inputs.reshape(-1, self.emb_dim), w_emb.t())
        return gates.view(emb_inputs.shape[0], emb_inputs.shape[1], -1), w_proj @ self.z_proj.weight

    def initial(self, batch_size: int, like: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        zero = like.new_zeros(batch_size, self.rnn_dim)
        return zero, zero

    def step(self, input_gates: torch.Tensor, w_z: torch.Tensor, z: torch.Tensor,
             state: Tuple[torch.Tensor, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """One LSTM step from precomputed input gates ``(B, 4H)`` and the new latent ``(B, Z)``."""
        h, c = state
        gates = torch.addmm(torch.addmm(input_gates, z, w_z.t()), h, self.lstm.weight_hh_l0.t())
        i, f, g, o = gates.chunk(4, dim=-1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class BackwardRNN(nn.Module):
    """b_t = LSTM_b(e(y_t), b_{t+1}): b_t summarises the targets y_{t..T} of each sequence.

    Ragged batches are reversed per sequence, so padding never enters a real step's state.
    """

    def __init__(self, emb_dim: int, rnn_dim: int):
        super().__init__()
        self.lstm = nn.LSTM(emb_dim, rnn_dim, batch_first=True)

    def forward(self, emb_targets: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``emb_targets: (B, T, E)``, ``lengths: (B,)`` -> ``b: (B, T, H)``."""
        index = reverse_index(lengths, emb_targets.shape[1])
        flipped = emb_targets.gather(1, index[..., None].expand_as(emb_targets))
        out, _ = self.lstm(flipped)
        return out.gather(1, index[..., None].expand(-1, -1, out.shape[-1]))


def reverse_index(lengths: torch.Tensor, steps: int) -> torch.Tensor:
    """Per-sequence time reversal ``(B, T)``: step t <-> length-1-t on real steps, padding fixed."""
    t = torch.arange(steps, device=lengths.device)[None, :]
    lengths = lengths[:, None]
    return torch.where(t < lengths, lengths - 1 - t, t)


class GaussianHead(nn.Module):
    """A diagonal Gaussian N(loc, exp(logvar)) from an MLP; both outputs clamped to +-clamp.

    Parameterises the conditional prior p(z_t | h_{t-1}) and every guide's q(z_t | ...).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, *, clamp: float):
        super().__init__()
        self.net = mlp(in_dim, hidden_dim, 2 * out_dim)
        self.clamp = clamp

    def forward(self, *inputs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=-1)
        return self._loc_scale(self.net(x))

    def _loc_scale(self, out: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        loc, logvar = out.clamp(-self.clamp, self.clamp).chunk(2, dim=-1)
        return loc, torch.exp(0.5 * logvar)

    def stepwise(self, context: torch.Tensor) -> Callable[[torch.Tensor, int], Tuple[torch.Tensor, torch.Tensor]]:
        """``f(h_prev, t) = self(h_prev, context[:, t])`` for a loop over t, ``context: (B, T, C)``.

        The context's share of the first layer is computed for all steps at once, so each step
        multiplies only ``h_prev`` (what a hand-written loop does; same values as ``forward``).
        """
        if type(self).forward is not GaussianHead.forward:  # a subclass scores differently: no shortcut
            steps = context.unbind(1)
            return lambda h_prev, t: self(h_prev, steps[t])
        first, rest = self.net[0], self.net[1:]
        split = first.in_features - context.shape[-1]
        w_h, w_c = first.weight[:, :split], first.weight[:, split:]
        from_context = torch.addmm(first.bias, context.reshape(-1, context.shape[-1]), w_c.t())
        from_context = from_context.view(context.shape[0], context.shape[1], -1).unbind(1)

        def params(h_prev: torch.Tensor, t: int) -> Tuple[torch.Tensor, torch.Tensor]:
            return self._loc_scale(rest(torch.addmm(from_context[t], h_prev, w_h.t())))
        return params


class AuxHead(nn.Module):
    """The auxiliary reconstruction p(b_t | z_t) or p(b_t | h_{t-1}, z_t) = N(b_t; tanh(mu), exp(logvar)).

    With ``loss="l2"`` the score is -||b_t - tanh(mu)||^2, as the authors' ``use_l2`` option.
    """

    def __init__(self, z_dim: int, rnn_dim: int, hidden_dim: int, *, use_h: bool, loss: str, clamp: float):
        super().__init__()
        self.use_h = use_h
        self.loss = loss
        self.net = mlp(z_dim + (rnn_dim if use_h else 0), hidden_dim, 2 * rnn_dim)
        self.clamp = clamp

    def forward(self, h_prev: torch.Tensor, z: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Per-step score ``(..., )`` of targets ``b`` (already detached by the caller)."""
        x = torch.cat([h_prev, z], dim=-1) if self.use_h else z
        mu, logvar = self.net(x).clamp(-self.clamp, self.clamp).chunk(2, dim=-1)
        mean = torch.tanh(mu)
        if self.loss == "l2":
            return -((b - mean) ** 2).sum(-1)
        # log N(b; mean, exp(logvar)) from the log-variance directly: b is (B, T, H), the largest
        # tensor of the step, and Normal(mean, exp(logvar / 2)) would add a sqrt, a log and a square
        return -0.5 * (LOG_2PI + logvar + (b - mean) ** 2 * torch.exp(-logvar)).sum(-1)


class EmissionHead(nn.Module):
    """p(y_t | state): Bernoulli logits, a diagonal Gaussian, or a Categorical over tokens.

    ``dist(state, mask)`` returns the masked distribution of a whole sequence with batch shape
    ``(B,)``: event ``(T, D)`` for frames, ``(T,)`` for tokens. Padded steps score 0.
    """

    def __init__(self, rnn_dim: int, out_dim: int, family: str, *, clamp: float):
        super().__init__()
        self.family = family
        self.clamp = clamp
        self.linear = nn.Linear(rnn_dim, 2 * out_dim if family == "gaussian" else out_dim)

    def step_dist(self, state: torch.Tensor) -> dist.TorchDistribution:
        """The per-step distribution, batch shape ``state.shape[:-1]`` (+ ``(D,)`` for frames)."""
        out = self.linear(state)
        if self.family == "bernoulli":
            return dist.Bernoulli(logits=out)
        if self.family == "categorical":
            return dist.Categorical(logits=out)
        loc, logvar = out.clamp(-self.clamp, self.clamp).chunk(2, dim=-1)
        return dist.Normal(loc, torch.exp(0.5 * logvar))

    def step_log_prob(self, state: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """log p(y_t | state_t) for states ``(..., H)`` and targets ``(...)`` tokens or ``(..., D)``
        frames, summed over D: returns ``state.shape[:-1]``.

        Tokens score only their own logit, log_softmax gathered at the target
        (logit_y - logsumexp(logits)), without a normalised copy of the logits; under Pyro's
        validation the torch distribution scores (and checks) instead.
        """
        if is_validation_enabled():
            log_prob = self.step_dist(state).log_prob(y)
            return log_prob if self.family == "categorical" else log_prob.sum(-1)
        if self.family != "categorical":
            return self.step_dist(state).log_prob(y).sum(-1)
        logits = self.linear(state)
        return logits.gather(-1, y.long()[..., None]).squeeze(-1) - logits.logsumexp(-1)

    def dist(self, state: torch.Tensor, mask: torch.Tensor) -> dist.TorchDistribution:
        """p(y_{1:T} | state_{1:T}) of a padded batch, ``state: (B, T, H)``, ``mask: (B, T)``."""
        return MaskedEmission(self, state, mask, tokens=self.family == "categorical")
