"""A hand-written plain-PyTorch Z-Forcing: the speed baseline and an independent loss oracle.

This is the model as one would write it without Pyro (close to the authors' code): one
``nn.LSTMCell`` loop that samples z_t from the posterior, scores it under prior and posterior
with the Gaussian density written out, adds the aux cost and the emission log-likelihood.
It shares no code with ``pyro_zforcing`` beyond copying the weights (:meth:`load_from`), so
equal losses from the same noise check the Pyro program against an independent computation.

The estimate matches ``Trace_ELBO`` for a reparameterised guide: per sequence,
rec + kl_weight * (log p(z) - log q(z)) + aux_weight * aux + bwd_weight * bwd, from one z.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

LOG_2PI = math.log(2 * math.pi)


def lrelu(x):
    return torch.clamp(F.leaky_relu(x, 1.0 / 3.0), -3.0, 3.0)


def gauss_log_density(x, mu, logvar):
    """sum over the last dim of log N(x; mu, exp(logvar))."""
    return -0.5 * (LOG_2PI + logvar + (x - mu) ** 2 / torch.exp(logvar)).sum(-1)


class TwoLayer(nn.Module):
    def __init__(self, i, h, o):
        super().__init__()
        self.l1, self.l2 = nn.Linear(i, h), nn.Linear(h, o)

    def forward(self, x):
        return self.l2(lrelu(self.l1(x)))


class PlainZForcing(nn.Module):
    """Z-Forcing in plain PyTorch; ``loss(x, mask, lengths, ...)`` is the mean per-sequence -objective."""

    def __init__(self, *, input_dim, emission, emb_dim, rnn_dim, z_dim, mlp_dim, aux_input="hz",
                 aux_loss="gaussian", clamp=8.0, emission_clamp=None, embedding="linear"):
        super().__init__()
        self.emission, self.clamp, self.emission_clamp = emission, clamp, emission_clamp
        self.leaky_embedding = embedding == "leaky"
        self.aux_input, self.aux_loss = aux_input, aux_loss
        self.input_dim, self.z_dim = input_dim, z_dim
        if emission == "categorical":
            self.emb = nn.Embedding(input_dim + 1, emb_dim)
        else:
            self.emb = nn.Linear(input_dim, emb_dim)
        self.gen = nn.Linear(z_dim, mlp_dim)
        self.cell = nn.LSTMCell(emb_dim + mlp_dim, rnn_dim)
        self.bwd = nn.LSTM(emb_dim, rnn_dim, batch_first=True)
        self.pri = TwoLayer(rnn_dim, mlp_dim, 2 * z_dim)
        self.inf = TwoLayer(2 * rnn_dim, mlp_dim, 2 * z_dim)
        self.aux = TwoLayer(z_dim + (rnn_dim if aux_input == "hz" else 0), mlp_dim, 2 * rnn_dim)
        out = 2 * input_dim if emission == "gaussian" else input_dim
        self.out = nn.Linear(rnn_dim, out)
        self.bwd_out = nn.Linear(rnn_dim, out)

    @classmethod
    def like(cls, objective) -> "PlainZForcing":
        c = objective.model.config
        if c.z_conditioning != "concat":
            raise ValueError(f"PlainZForcing writes out z_conditioning='concat' only, got {c.z_conditioning!r}")
        plain = cls(input_dim=c.input_dim, emission=c.emission, emb_dim=c.emb_dim, rnn_dim=c.rnn_dim,
                    z_dim=c.z_dim, mlp_dim=c.mlp_dim, aux_input=c.aux_input, aux_loss=c.aux_loss,
                    clamp=c.logvar_clamp, emission_clamp=c.emission_clamp, embedding=c.embedding)
        plain.load_from(objective)
        return plain.to(next(objective.parameters()).dtype)

    @torch.no_grad()
    def load_from(self, objective) -> None:
        """Copy the weights of a ``pyro_zforcing`` Objective (model + backward guide)."""
        m, g = objective.model, objective.guide
        emb = m.embed.lookup if self.emission == "categorical" else m.embed.linear
        self.emb.load_state_dict(emb.state_dict())
        self.gen.load_state_dict(m.fwd.z_proj.state_dict())
        lstm = m.fwd.lstm
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(self.cell, name).copy_(getattr(lstm, name + "_l0"))
        self.bwd.load_state_dict(m.bwd.lstm.state_dict())
        for mine, theirs in ((self.pri, m.prior.net), (self.inf, g.posterior.net), (self.aux, m.aux.net)):
            mine.l1.load_state_dict(theirs[0].state_dict())
            mine.l2.load_state_dict(theirs[2].state_dict())
        self.out.load_state_dict(m.emission.linear.state_dict())
        self.bwd_out.load_state_dict(m.bwd_head.linear.state_dict())

    def embed(self, y):
        return lrelu(self.emb(y)) if self.leaky_embedding and self.emission != "categorical" else self.emb(y)

    def emission_log_lik(self, params, y):
        """log p(y_t | params) per step (B, T)."""
        if self.emission == "bernoulli":
            return -F.binary_cross_entropy_with_logits(params, y, reduction="none").sum(-1)
        if self.emission == "categorical":
            return -F.cross_entropy(params.transpose(1, 2), y, reduction="none")
        if self.emission_clamp is not None:
            params = params.clamp(-self.emission_clamp, self.emission_clamp)
        mu, logvar = params.chunk(2, -1)
        limit = 0.5 * math.log(torch.finfo(logvar.dtype).max)  # the library's float range guard
        return gauss_log_density(y, mu, logvar.clamp(-limit, limit))

    def embed_and_look_back(self, x, lengths):
        """Embedded targets e(y), embedded inputs e(u) (start + shifted targets), backward states b."""
        B, T = x.shape[0], x.shape[1]
        e_y = self.embed(x)
        if self.emission == "categorical":
            start = self.emb(torch.full((B, 1), self.input_dim, dtype=torch.long, device=x.device))
        else:
            start = self.embed(x.new_zeros(B, 1, self.input_dim))
        e_u = torch.cat([start, e_y[:, :-1]], 1)
        # backward states over the targets, reversed within each sequence
        t_idx = torch.arange(T, device=x.device)[None]
        rev = torch.where(t_idx < lengths[:, None], lengths[:, None] - 1 - t_idx, t_idx)
        b, _ = self.bwd(torch.gather(e_y, 1, rev[..., None].expand_as(e_y)))
        return e_y, e_u, torch.gather(b, 1, rev[..., None].expand_as(b))

    def loss(self, x, mask, lengths, *, aux_weight=0.0, bwd_weight=0.0, kl_weight=1.0, eps=None):
        B, T = x.shape[0], x.shape[1]
        maskf = mask.to(self.out.weight.dtype)
        e_y, e_u, b = self.embed_and_look_back(x, lengths)
        if eps is None:
            eps = torch.randn(B, T, self.z_dim, dtype=e_y.dtype, device=x.device)
        h = x.new_zeros(B, self.cell.hidden_size, dtype=e_y.dtype)
        c = torch.zeros_like(h)
        kl_terms, aux_terms, hs = [], [], []
        for t in range(T):
            pri_mu, pri_lv = self.pri(h).clamp(-self.clamp, self.clamp).chunk(2, -1)
            q_mu, q_lv = self.inf(torch.cat([h, b[:, t]], -1)).clamp(-self.clamp, self.clamp).chunk(2, -1)
            z = q_mu + torch.exp(0.5 * q_lv) * eps[:, t]
            kl_terms.append(gauss_log_density(z, q_mu, q_lv) - gauss_log_density(z, pri_mu, pri_lv))
            if aux_weight > 0:
                a_mu, a_lv = self.aux(torch.cat([h, z], -1) if self.aux_input == "hz" else z) \
                    .clamp(-self.clamp, self.clamp).chunk(2, -1)
                target = b[:, t].detach()
                if self.aux_loss == "l2":
                    aux_terms.append(-((target - torch.tanh(a_mu)) ** 2).sum(-1))
                else:
                    aux_terms.append(gauss_log_density(target, torch.tanh(a_mu), a_lv))
            h, c = self.cell(torch.cat([e_u[:, t], self.gen(z)], -1), (h, c))
            hs.append(h)
        rec = (self.emission_log_lik(self.out(torch.stack(hs, 1)), x) * maskf).sum(-1)
        kl = (torch.stack(kl_terms, 1) * maskf).sum(-1)
        objective = rec - kl_weight * kl
        if aux_weight > 0:
            objective = objective + aux_weight * (torch.stack(aux_terms, 1) * maskf).sum(-1)
        if bwd_weight > 0:
            bwd_ll = self.emission_log_lik(self.bwd_out(b[:, 1:]), x[:, :-1])
            objective = objective + bwd_weight * (bwd_ll * maskf[:, 1:]).sum(-1)
        return -objective.mean()
