"""The DMM's guide (Krishnan et al., 2017; Pyro's ``examples/dmm.py``): q(z_t | z_{t-1}, y_{t:T}).

A backward RNN summarises the future, r_t = relu(W_ih e(y_t) + W_hh r_{t+1} + b) with a learned
r_{T+1} (Pyro's ``nn.RNN(nonlinearity="relu")`` over the reversed sequence and its ``h_0``), and
the "combiner" mixes it with the previous latent:

    c_t = (tanh(W z_{t-1} + b) + r_t) / 2,   loc_t = W_l c_t + b_l,   scale_t = softplus(W_s c_t + b_s),

from a learned z_0 of the guide's own (Pyro's ``z_q_0``). The paper's "DKS" (ST-R) network.
The RNN reads the embedded targets e(y_t): with the default linear embedding that is Pyro's
RNN over the raw frames with a factorised input matrix.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.base import Batch
from ..distributions import LatentTrajectory
from ..nets import init_recurrent, reverse_index
from ..steps import StepFunction
from .base import TrajectoryGuide


class ReversedRNN(nn.Module):
    """r_t = relu(W_ih x_t + W_hh r_{t+1} + b), r_{T+1} = h_0 (learned): r_t summarises x_{t..T}.

    Ragged batches are reversed per sequence, so padding never enters a real step's state.
    """

    def __init__(self, in_dim: int, rnn_dim: int, *, init: str):
        super().__init__()
        self.rnn = nn.RNN(in_dim, rnn_dim, nonlinearity="relu", batch_first=True)
        init_recurrent(self.rnn, init, zero_biases=False)
        self.h_0 = nn.Parameter(torch.zeros(1, 1, rnn_dim))

    def forward(self, inputs: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``inputs: (B, T, E)``, ``lengths: (B,)`` -> ``r: (B, T, H)``."""
        index = reverse_index(lengths, inputs.shape[1])
        flipped = inputs.gather(1, index[..., None].expand_as(inputs))
        h_0 = self.h_0.expand(1, inputs.shape[0], self.h_0.shape[-1]).contiguous()
        out, _ = self.rnn(flipped, h_0)
        return out.gather(1, index[..., None].expand(-1, -1, out.shape[-1]))


class Combiner(nn.Module):
    """Parameterises q(z_t | z_{t-1}, y_{t:T}) from z_{t-1} and r_t: the guide's per-step cell.

    ``out`` holds Pyro's ``lin_hidden_to_loc`` and ``lin_hidden_to_scale`` as one layer (rows
    ``[:Z]`` and ``[Z:]``): one matrix product per step instead of two.
    """

    def __init__(self, z_dim: int, rnn_dim: int):
        super().__init__()
        self.z_to_hidden = nn.Linear(z_dim, rnn_dim)
        self.out = nn.Linear(rnn_dim, 2 * z_dim)

    def _loc_scale(self, combined: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        loc, scale = self.out(combined).chunk(2, dim=-1)
        return loc, F.softplus(scale)

    def forward(self, z_prev: torch.Tensor, r: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        return self._loc_scale(0.5 * (torch.tanh(self.z_to_hidden(z_prev)) + r))

    def stepwise(self, context: torch.Tensor) -> StepFunction:
        """The step ``self(z_{t-1}, context[:, t])`` of a loop over t, with r_t / 2 computed once."""
        return StepFunction(self.step_from_half, per_step=(0.5 * context,))

    def step_from_half(self, half_t: torch.Tensor, z_prev: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """(loc, scale) from r_t / 2 ``(B, H)`` and z_{t-1}."""
        return self._loc_scale(torch.add(half_t, torch.tanh(self.z_to_hidden(z_prev)), alpha=0.5))


class CombinerGuide(TrajectoryGuide):
    """q(z_{1:T} | y) = prod_t N(z_t; combiner(z_{t-1}, r_t)), r_t summarising y_{t..T}."""

    model_modules = ("embed",)  # the DMM's input embedding e(y_t), read by this guide alone

    def __init__(self, model):
        super().__init__(model)
        c = model.config
        self.rnn = ReversedRNN(c.emb_dim, c.rnn_dim, init=c.init)
        self.combiner = Combiner(c.z_dim, c.rnn_dim)
        self.z_q_0 = nn.Parameter(torch.zeros(c.z_dim))

    def future_states(self, batch: Batch) -> torch.Tensor:
        """r_{1:T} ``(B, T, H)``."""
        return self.rnn(self.model.embedded(batch)[1], batch.lengths)

    def proposal(self, batch: Batch) -> LatentTrajectory:
        return self.model.trajectory(batch, self.combiner, self.future_states(batch), start=self.z_q_0)
