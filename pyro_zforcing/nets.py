"""The networks of Z-Forcing, one small ``nn.Module`` per density or state.

Shapes are batch first: sequences ``(B, T, ...)``, one step ``(B, ...)``. Every head accepts
any leading shape, so the same module serves one step of a loop and a whole sequence at once.
Sizes and non-linearities follow the authors' code: a leaky ReLU with slope 1/3 clamped to
[-3, 3] between layers, the latent Gaussians' parameters clamped to [-logvar_clamp,
logvar_clamp]. The emission families live in :mod:`~pyro_zforcing.emissions`.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import pyro.distributions as dist

from .distributions import logvar_normal_log_prob
from .emissions import emission_head
from .steps import Recurrence, StepFunction, call_with_context

LEAKY_SLOPE = 1.0 / 3.0
LEAKY_BOUND = 3.0
GATE_BOUND = 3.0  # the authors' clamp on cond_ln's z-given gains and biases
LAYER_NORM_EPS = 1e-5


class BoundedLeakyReLU(nn.Module):
    """clamp(leaky_relu(x, 1/3), -3, 3): the authors' ``LReLU``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, LEAKY_SLOPE).clamp(-LEAKY_BOUND, LEAKY_BOUND)


def mlp(in_dim: int, hidden_dim: int, out_dim: int) -> nn.Sequential:
    """Linear -> bounded leaky ReLU -> Linear."""
    return nn.Sequential(nn.Linear(in_dim, hidden_dim), BoundedLeakyReLU(), nn.Linear(hidden_dim, out_dim))


class InputEmbedding(nn.Module):
    """Embeds frames ``(..., D)`` by a Linear layer (``kind="linear"``, the authors') or Linear +
    bounded leaky ReLU (``kind="leaky"``), or token ids ``(...)`` by lookup.

    Token id ``vocab_size`` is the start symbol fed before the first token.
    """

    def __init__(self, input_dim: int, emb_dim: int, *, tokens: bool, kind: str = "linear"):
        super().__init__()
        self.tokens = tokens
        if tokens:
            self.lookup = nn.Embedding(input_dim + 1, emb_dim)
            self.start_id = input_dim
        else:
            self.linear = nn.Linear(input_dim, emb_dim)
            self.act = BoundedLeakyReLU() if kind == "leaky" else nn.Identity()

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


def init_recurrent(rnn: nn.Module, init: str, *, zero_biases: bool) -> None:
    """The initialisation of every recurrent layer of every model, by ``ModelConfig.init``.

    ``init="orthogonal"`` (the authors'): each recurrent matrix ``weight_hh*`` ``(G*H, H)`` gets
    orthonormal columns, W_hh^T W_hh = I_H (their ``nn.init.orthogonal`` of the ``(H, 4H)``
    layout of their cell, transposed), and with ``zero_biases`` every bias is zero. Generative
    recurrences (their forward cell: Z-Forcing's h, the RNN's, VRNN's, SRNN's d) pass
    ``zero_biases=True``; inference recurrences (their backward LSTM: Z-Forcing's b, SRNN's
    a) keep PyTorch's biases. Input weights keep U(-1/sqrt(H), 1/sqrt(H)) as theirs.
    ``init="torch"`` leaves PyTorch's defaults: every weight and bias U(-1/sqrt(H), 1/sqrt(H)).
    """
    if init == "torch":
        return
    with torch.no_grad():
        for name, param in rnn.named_parameters():
            if name.startswith("weight_hh"):
                nn.init.orthogonal_(param)
            elif zero_biases and name.startswith("bias"):
                param.zero_()


def lstm_pointwise(gates: torch.Tensor, c: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(h_t, c_t) from the gate pre-activations ``(B, 4H)`` in PyTorch's i, f, g, o order."""
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def concat_lstm_step(w_z: torch.Tensor, w_hh: torch.Tensor, gates_t: torch.Tensor, z_t: torch.Tensor,
                     h: torch.Tensor, c: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(h_t, c_t) of an LSTM step whose input gates ``gates_t: (B, 4H)`` are precomputed and whose
    latent input enters through ``w_z: (4H, Z)``: gates = gates_t + W_z z_t + W_hh h_{t-1}."""
    return lstm_pointwise(torch.addmm(torch.addmm(gates_t, z_t, w_z.t()), h, w_hh.t()), c)


class ForwardRNN(nn.Module):
    """The generative state h_t = LSTM([e(u_t), W z_t + c], h_{t-1}), h_0 = 0 (``z_conditioning="concat"``).

    One ``nn.LSTM`` holds the weights. ``states`` runs it fused over a whole given z
    trajectory; ``recurrence`` is its step while z is being sampled.
    """

    def __init__(self, emb_dim: int, z_dim: int, proj_dim: int, rnn_dim: int, *, init: str):
        super().__init__()
        self.emb_dim = emb_dim
        self.rnn_dim = rnn_dim
        self.z_proj = nn.Linear(z_dim, proj_dim)
        self.lstm = nn.LSTM(emb_dim + proj_dim, rnn_dim, batch_first=True)
        init_recurrent(self.lstm, init, zero_biases=True)

    def states(self, emb_inputs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """h_{0:T} for inputs ``(B, T, E)`` and latents ``(B, T, Z)``: returns ``(B, T+1, H)``."""
        out = self.outputs(emb_inputs, z)
        return torch.cat([out.new_zeros(out.shape[0], 1, out.shape[2]), out], dim=1)

    def outputs(self, emb_inputs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """h_{1:T} ``(B, T, H)``: :meth:`states` without h_0."""
        return self.lstm(torch.cat([emb_inputs, self.z_proj(z)], dim=-1))[0]

    def recurrence(self, emb_inputs: torch.Tensor) -> Recurrence:
        """The sampling loop's step for inputs ``(B, T, E)``: :func:`concat_lstm_step` with the
        input part of the gates computed once for all steps and the latent projection folded
        into the recurrent weights; carry (h, c), h_0 = c_0 = 0."""
        w_ih = self.lstm.weight_ih_l0
        w_emb, w_proj = w_ih[:, : self.emb_dim], w_ih[:, self.emb_dim:]
        bias = self.lstm.bias_ih_l0 + self.lstm.bias_hh_l0 + w_proj @ self.z_proj.bias
        gates = torch.addmm(bias, emb_inputs.reshape(-1, self.emb_dim), w_emb.t())
        gates = gates.view(emb_inputs.shape[0], emb_inputs.shape[1], -1)
        advance = StepFunction(concat_lstm_step, shared=(w_proj @ self.z_proj.weight, self.lstm.weight_hh_l0),
                               per_step=(gates,))
        return Recurrence(advance, self.initial(emb_inputs.shape[0], emb_inputs))

    def initial(self, batch_size: int, like: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        zero = like.new_zeros(batch_size, self.rnn_dim)
        return zero, zero


def unbiased_layer_norm(x: torch.Tensor, eps: float = LAYER_NORM_EPS) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the last dim, var with Bessel's correction as the
    authors' ``LayerNorm`` (``torch.var``); ``F.layer_norm`` divides by n instead."""
    mean = x.mean(-1, keepdim=True)
    return (x - mean) * torch.rsqrt(x.var(-1, keepdim=True) + eps)


class CondLayerNormRNN(nn.Module):
    """The authors' ``cond_ln`` forward state (``z_conditioning="cond-ln"``), h_0 = 0:

        [g_t, k_t] = clamp(MLP(z_t), -3, 3)
        gates_t = LN(W_ih e(u_t)) * a + d + LN(W_hh h_{t-1}) * (1 + g_t) + k_t
        (h_t, c_t) = LSTM pointwise(gates_t, c_{t-1}),

    layer norms over all 4H gates, with learned (a, d) for the input part and the z-given
    gains and biases for the recurrent part; no other biases. Everything z- or input-dependent
    is computed for all steps at once; the loop holds only the recurrent matmul and its norm.
    """

    def __init__(self, emb_dim: int, z_dim: int, hidden_dim: int, rnn_dim: int, *, init: str):
        super().__init__()
        self.rnn_dim = rnn_dim
        bound = 1.0 / math.sqrt(rnn_dim)
        self.weight_ih = nn.Parameter(torch.empty(4 * rnn_dim, emb_dim).uniform_(-bound, bound))
        self.weight_hh = nn.Parameter(torch.empty(4 * rnn_dim, rnn_dim).uniform_(-bound, bound))
        self.ln_ih_gain = nn.Parameter(torch.ones(4 * rnn_dim))
        self.ln_ih_bias = nn.Parameter(torch.zeros(4 * rnn_dim))
        self.z_gates = mlp(z_dim, hidden_dim, 8 * rnn_dim)
        init_recurrent(self, init, zero_biases=False)

    def input_part(self, emb_inputs: torch.Tensor) -> torch.Tensor:
        """LN(W_ih e(u_t)) * a + d for inputs ``(..., E)``: ``(..., 4H)``."""
        return torch.addcmul(self.ln_ih_bias, unbiased_layer_norm(emb_inputs @ self.weight_ih.t()), self.ln_ih_gain)

    def gains_biases(self, z: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(1 + g, k) from latents ``(..., Z)``, each ``(..., 4H)``."""
        gain, bias = self.z_gates(z).clamp(-GATE_BOUND, GATE_BOUND).chunk(2, dim=-1)
        return 1.0 + gain, bias

    def _advance(self, inputs: torch.Tensor, gain: torch.Tensor, bias: torch.Tensor, state):
        h, c = state
        recurrent = unbiased_layer_norm(h @ self.weight_hh.t())
        return lstm_pointwise(torch.addcmul(inputs + bias, recurrent, gain), c)

    def states(self, emb_inputs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """h_{0:T} for inputs ``(B, T, E)`` and latents ``(B, T, Z)``: returns ``(B, T+1, H)``."""
        gain, bias = self.gains_biases(z)
        inputs = self.input_part(emb_inputs).unbind(1)
        gain, bias = gain.unbind(1), bias.unbind(1)
        state = self.initial(emb_inputs.shape[0], emb_inputs)
        hs = [state[0]]
        for t in range(len(inputs)):
            state = self._advance(inputs[t], gain[t], bias[t], state)
            hs.append(state[0])
        return torch.stack(hs, dim=1)

    def recurrence(self, emb_inputs: torch.Tensor) -> Recurrence:
        """The sampling loop's step for inputs ``(B, T, E)``: the input part for all steps at once,
        the z-given gains and biases and the recurrent part per step; carry (h, c), h_0 = c_0 = 0."""
        advance = StepFunction(self._sampling_step, per_step=(self.input_part(emb_inputs),))
        return Recurrence(advance, self.initial(emb_inputs.shape[0], emb_inputs))

    def _sampling_step(self, inputs_t: torch.Tensor, z_t: torch.Tensor, h: torch.Tensor, c: torch.Tensor):
        return self._advance(inputs_t, *self.gains_biases(z_t), (h, c))

    def initial(self, batch_size: int, like: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        zero = like.new_zeros(batch_size, self.rnn_dim)
        return zero, zero


class BackwardRNN(nn.Module):
    """b_t = LSTM_b(e(y_t), b_{t+1}): b_t summarises the targets y_{t..T} of each sequence.

    An inference recurrence (:func:`init_recurrent` with PyTorch's biases). Ragged batches are reversed per sequence, so padding never enters a real step's state.
    """

    def __init__(self, emb_dim: int, rnn_dim: int, *, init: str):
        super().__init__()
        self.lstm = nn.LSTM(emb_dim, rnn_dim, batch_first=True)
        init_recurrent(self.lstm, init, zero_biases=False)

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

    def stepwise(self, context: torch.Tensor) -> StepFunction:
        """The head's step for a loop over t, ``self(h_prev, context[:, t])``, ``context: (B, T, C)``.

        The context's share of the first layer is computed for all steps at once, so each step
        multiplies only ``h_prev`` (what a hand-written loop does; same values as ``forward``).
        """
        if type(self).forward is not GaussianHead.forward:  # a subclass scores differently: no shortcut
            return StepFunction(call_with_context, shared=(self,), per_step=(context,))
        first = self.net[0]
        split = first.in_features - context.shape[-1]
        from_context = torch.addmm(first.bias, context.reshape(-1, context.shape[-1]), first.weight[:, split:].t())
        return StepFunction(self.step_from_context, shared=(first.weight[:, :split],),
                            per_step=(from_context.view(context.shape[0], context.shape[1], -1),))

    def step_from_context(self, w_h: torch.Tensor, from_context_t: torch.Tensor,
                          h_prev: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) from the context's share of the first layer ``(B, M)`` and ``h_prev``."""
        return self._loc_scale(self.net[2](self.net[1](torch.addmm(from_context_t, h_prev, w_h.t()))))


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
        return logvar_normal_log_prob(b, mean, logvar).sum(-1)


class ConditionalEmission(nn.Module):
    """p(y_t | a_t, c_t) = emission(LReLU(W [a_t, c_t] + w)): VRNN's p(x_t | z_t, h_{t-1}) and
    SRNN's p(x_t | z_t, d_t), one hidden layer of ``hidden_dim`` before the emission ``head``
    (any family of :mod:`~pyro_zforcing.emissions`), which reads ``features(a_t, c_t)``."""

    def __init__(self, config, in_dim: int):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(in_dim, config.mlp_dim), BoundedLeakyReLU())
        self.head = emission_head(config, config.mlp_dim)

    def features(self, *inputs: torch.Tensor) -> torch.Tensor:
        """LReLU(W [a_t, c_t] + w), the state the head reads: ``(..., mlp_dim)``."""
        return self.hidden(torch.cat(inputs, dim=-1))

    def step_dist(self, *inputs: torch.Tensor) -> dist.TorchDistribution:
        return self.head.step_dist(self.features(*inputs))

    def dist(self, *inputs: torch.Tensor, mask: torch.Tensor) -> dist.TorchDistribution:
        return self.head.dist(self.features(*inputs), mask)


class StandardNormalHead(nn.Module):
    """N(0, I) for every step whatever the state: VRNN-I's prior p(z_t) (no parameters)."""

    def __init__(self, z_dim: int):
        super().__init__()
        self.z_dim = z_dim

    def forward(self, state: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        loc = state.new_zeros(state.shape[:-1] + (self.z_dim,))
        return loc, torch.ones_like(loc)
