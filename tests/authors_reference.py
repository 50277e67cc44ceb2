"""The authors' Z-Forcing (``model.py`` of github.com/sordonia/zforcing), transcribed to current PyTorch.

Written from their code, not from this package: time-major tensors ``(T, B, ...)``, their
``LSTMCell`` (``weight_ih`` is ``(input, 4H)``, ``h @ W``) and ``LayerNorm`` (``torch.var``, so
Bessel-corrected, eps inside the square root), the fused LSTM pointwise step written out in its
gate order (in, forget, cell, out), their ``gaussian_kld`` and ``log_prob_gaussian``, their
clamps (prior, posterior, aux to +-8, cond_ln's z-gates to +-3, nothing on the output layer),
``z_force`` as ``h * 0`` in the aux input and ``use_l2`` as a squared error. The only pieces
replaced are the CUDA-only ones (``assert input_.is_cuda``, ``LSTMFused``) and the noise, which
is passed in so both implementations can use the same.

:meth:`AuthorsZForcing.forward` returns their per-sequence ``fwd_nll, bwd_nll, aux_nll, kld,
log_pz, log_qz`` (``return_stats=True``); their training loss is
``fwd_nll + (aux_weight > 0) * bwd * bwd_nll + aux_weight * aux_nll + kld_weight * kld``,
averaged over the batch (``train_timit.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def log_prob_gaussian(x, mu, log_vars):
    lp = -0.5 * math.log(2 * math.pi) - log_vars / 2 - (x - mu) ** 2 / (2 * torch.exp(log_vars))
    return torch.sum(lp, -1)


def gaussian_kld(mu_left, logvar_left, mu_right, logvar_right):
    """KL(N(mu_left, exp(logvar_left)) || N(mu_right, exp(logvar_right))) summed over dim 1."""
    gauss_klds = 0.5 * (logvar_right - logvar_left + (torch.exp(logvar_left) / torch.exp(logvar_right))
                        + ((mu_left - mu_right) ** 2.0 / torch.exp(logvar_right)) - 1.0)
    return torch.sum(gauss_klds, 1)


class LayerNorm(nn.Module):
    def __init__(self, nb_features, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(1, nb_features))
        self.bias = nn.Parameter(torch.zeros(1, nb_features))

    def forward(self, x, gain=None, bias=None):
        if gain is None:
            gain = self.gain
        if bias is None:
            bias = self.bias
        mean = torch.mean(x, dim=-1, keepdim=True)
        std = torch.sqrt(torch.var(x, dim=-1, keepdim=True) + self.eps)
        z = (x - mean.expand_as(x)) / std.expand_as(x)
        return z * gain.expand_as(z) + bias.expand_as(z)


def lstm_fused(igates, hgates, c_0, bias_ih=None, bias_hh=None):
    """What ``rnnFusedPointwise.LSTMFused`` computes."""
    gates = igates + hgates
    if bias_ih is not None:
        gates = gates + bias_ih + bias_hh
    ingate, forgetgate, cellgate, outgate = gates.chunk(4, 1)
    c_1 = torch.sigmoid(forgetgate) * c_0 + torch.sigmoid(ingate) * torch.tanh(cellgate)
    return torch.sigmoid(outgate) * torch.tanh(c_1), c_1


class LSTMCell(nn.Module):
    def __init__(self, input_size, hidden_size, use_layernorm=False):
        super().__init__()
        self.use_layernorm = use_layernorm
        self.weight_ih = nn.Parameter(torch.empty(input_size, 4 * hidden_size))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, 4 * hidden_size))
        if use_layernorm:
            self.ln_ih = LayerNorm(4 * hidden_size)
            self.ln_hh = LayerNorm(4 * hidden_size)
        else:
            self.bias_ih = nn.Parameter(torch.zeros(4 * hidden_size))
            self.bias_hh = nn.Parameter(torch.zeros(4 * hidden_size))

    def forward(self, input_, hx, gain_hh=None, bias_hh=None):
        h_0, c_0 = hx
        igates = torch.mm(input_, self.weight_ih)
        hgates = torch.mm(h_0, self.weight_hh)
        if self.use_layernorm:
            igates = self.ln_ih(igates)
            hgates = self.ln_hh(hgates, gain=gain_hh, bias=bias_hh)
            return lstm_fused(igates, hgates, c_0)
        return lstm_fused(igates, hgates, c_0, self.bias_ih, self.bias_hh)


class LReLU(nn.Module):
    def forward(self, x):
        return torch.clamp(F.leaky_relu(x, 1.0 / 3), -3.0, 3.0)


class AuthorsZForcing(nn.Module):
    """Their ``ZForcing`` for ``out_type="gaussian"`` (``emb_mod`` a Linear) or ``"softmax"``."""

    def __init__(self, inp_dim, emb_dim, rnn_dim, z_dim, mlp_dim, out_dim, out_type="gaussian",
                 cond_ln=False, z_force=False, use_l2=False):
        super().__init__()
        self.out_type, self.cond_ln, self.z_force, self.use_l2 = out_type, cond_ln, z_force, use_l2
        self.z_dim = z_dim
        self.emb_mod = nn.Embedding(inp_dim, emb_dim) if out_type == "softmax" else nn.Linear(inp_dim, emb_dim)
        self.bwd_mod = nn.LSTM(emb_dim, rnn_dim, 1)
        self.fwd_mod = LSTMCell(emb_dim if cond_ln else emb_dim + mlp_dim, rnn_dim, use_layernorm=cond_ln)
        self.pri_mod = nn.Sequential(nn.Linear(rnn_dim, mlp_dim), LReLU(), nn.Linear(mlp_dim, z_dim * 2))
        self.inf_mod = nn.Sequential(nn.Linear(rnn_dim * 2, mlp_dim), LReLU(), nn.Linear(mlp_dim, z_dim * 2))
        if cond_ln:
            self.gen_mod = nn.Sequential(nn.Linear(z_dim, mlp_dim), LReLU(), nn.Linear(mlp_dim, 8 * rnn_dim))
        else:
            self.gen_mod = nn.Linear(z_dim, mlp_dim)
        self.aux_mod = nn.Sequential(nn.Linear(z_dim + rnn_dim, mlp_dim), LReLU(), nn.Linear(mlp_dim, 2 * rnn_dim))
        self.fwd_out_mod = nn.Linear(rnn_dim, out_dim)
        self.bwd_out_mod = nn.Linear(rnn_dim, out_dim)

    def reparametrize(self, mu, logvar, eps):
        return eps * torch.exp(0.5 * logvar) + mu

    def fwd_pass(self, x_fwd, hidden, bwd_states, eps):
        x_fwd = self.emb_mod(x_fwd)
        nsteps = x_fwd.size(0)
        states = [(hidden[0][0], hidden[1][0])]
        klds, zs, log_pz, log_qz, aux_cs = [], [], [], [], []
        for step in range(nsteps):
            h_step, c_step = states[step]
            x_step = x_fwd[step]
            pri_params = torch.clamp(self.pri_mod(h_step), -8.0, 8.0)
            pri_mu, pri_logvar = torch.chunk(pri_params, 2, 1)
            b_step = bwd_states[step]
            inf_params = torch.clamp(self.inf_mod(torch.cat((h_step, b_step), 1)), -8.0, 8.0)
            inf_mu, inf_logvar = torch.chunk(inf_params, 2, 1)
            kld = gaussian_kld(inf_mu, inf_logvar, pri_mu, pri_logvar)
            z_step = self.reparametrize(inf_mu, inf_logvar, eps[step])
            h_step_ = h_step * 0.0 if self.z_force else h_step
            aux_params = torch.clamp(self.aux_mod(torch.cat((h_step_, z_step), 1)), -8.0, 8.0)
            aux_mu, aux_logvar = torch.chunk(aux_params, 2, 1)
            b_step_ = b_step.detach()
            if self.use_l2:
                aux_step = torch.sum((b_step_ - torch.tanh(aux_mu)) ** 2.0, 1)
            else:
                aux_step = -log_prob_gaussian(b_step_, torch.tanh(aux_mu), aux_logvar)
            i_step = self.gen_mod(z_step)
            if self.cond_ln:
                i_step = torch.clamp(i_step, -3, 3)
                gain_hh, bias_hh = torch.chunk(i_step, 2, 1)
                gain_hh = 1.0 + gain_hh
                h_new, c_new = self.fwd_mod(x_step, (h_step, c_step), gain_hh=gain_hh, bias_hh=bias_hh)
            else:
                h_new, c_new = self.fwd_mod(torch.cat((i_step, x_step), 1), (h_step, c_step))
            states.append((h_new, c_new))
            klds.append(kld)
            zs.append(z_step)
            aux_cs.append(aux_step)
            log_pz.append(log_prob_gaussian(z_step, pri_mu, pri_logvar))
            log_qz.append(log_prob_gaussian(z_step, inf_mu, inf_logvar))
        outputs = self.fwd_out_mod(torch.stack([s[0] for s in states[1:]], 0))
        return (outputs, torch.stack(klds, 0), torch.stack(aux_cs, 0), torch.stack(zs, 0),
                torch.stack(log_pz, 0), torch.stack(log_qz, 0))

    def bwd_pass(self, x, y, hidden):
        idx = torch.arange(y.size(0) - 1, -1, -1)
        x_bwd = torch.cat([y.index_select(0, idx), x[:1]], 0)
        states, _ = self.bwd_mod(self.emb_mod(x_bwd), hidden)
        outputs = self.bwd_out_mod(states[:-1])
        return states.index_select(0, idx), outputs.index_select(0, idx)

    def forward(self, x, y, x_mask, hidden, eps, bwd_mask=None):
        """Per-sequence ``fwd_nll, bwd_nll, aux_nll, kld, log_pz, log_qz``, each ``(B,)``.

        ``x, y: (T, B, D)`` (or ``(T, B)`` tokens), ``x_mask: (T, B)``, ``eps: (T, B, Z)``.
        ``bwd_mask`` (default ``x_mask``) selects the steps whose input the backward LM scores.
        """
        bwd_mask = x_mask if bwd_mask is None else bwd_mask
        bwd_states, bwd_outputs = self.bwd_pass(x, y, hidden)
        fwd_outputs, klds, aux_nll, zs, log_pz, log_qz = self.fwd_pass(x, hidden, bwd_states, eps)
        kld = (klds * x_mask).sum(0)
        log_pz = (log_pz * x_mask).sum(0)
        log_qz = (log_qz * x_mask).sum(0)
        aux_nll = (aux_nll * x_mask).sum(0)
        if self.out_type == "gaussian":
            out_mu, out_logvar = torch.chunk(fwd_outputs, 2, -1)
            fwd_nll = (-log_prob_gaussian(y, out_mu, out_logvar) * x_mask).sum(0)
            out_mu, out_logvar = torch.chunk(bwd_outputs, 2, -1)
            bwd_nll = (-log_prob_gaussian(x, out_mu, out_logvar) * bwd_mask).sum(0)
        else:
            fwd_out = F.log_softmax(fwd_outputs, -1)
            fwd_nll = -(torch.gather(fwd_out, 2, y[..., None]).squeeze(2) * x_mask).sum(0)
            bwd_out = F.log_softmax(bwd_outputs, -1)
            bwd_nll = -(torch.gather(bwd_out, 2, x[..., None]).squeeze(2) * bwd_mask).sum(0)
        return fwd_nll, bwd_nll, aux_nll, kld, log_pz, log_qz
