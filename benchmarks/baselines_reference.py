"""The baselines (RNN, VRNN, SRNN, DMM, STORN) written in plain PyTorch: speed baselines and loss oracles.

Each class is the model and its guide as one would write them without Pyro, with everything
that does not depend on the sampled z hoisted out of the time loop (fused LSTMs for every
z-independent recurrence, the context share of each head's first layer computed once). They
share no code with ``pyro_zforcing``; ``like(objective)`` copies a library objective's weights,
so equal losses from the same noise check the Pyro programs against an independent computation.

``log_weights`` returns per sequence ``(B,)`` rec - kl_weight * (log q(z) - log p(z)) from one z
(the exact log-likelihood for the RNN); ``loss`` is minus its batch mean. The DMM and STORN also
take ``kl="analytic"``: the KL term is then the closed-form KL of every step's diagonal Gaussians
along the same z (:func:`gauss_kl`), the library's default training estimator.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .reference import LOG_2PI, TwoLayer, gauss_log_density, lrelu


def emission_log_lik(params, y, *, family, clamp, mixtures=1):
    """log p(y_t | params_t) per step ``(B, T)`` for the four emission families."""
    if family == "bernoulli":
        return -F.binary_cross_entropy_with_logits(params, y, reduction="none").sum(-1)
    if family == "categorical":
        return -F.cross_entropy(params.transpose(1, 2), y, reduction="none")
    if family == "gaussian":
        mu, logvar = (params if clamp is None else params.clamp(-clamp, clamp)).chunk(2, -1)
        return gauss_log_density(y, mu, logvar)
    logits, comps = params[..., :mixtures], params[..., mixtures:]
    comps = comps if clamp is None else comps.clamp(-clamp, clamp)
    mu, logvar = comps.reshape(params.shape[:-1] + (mixtures, -1)).chunk(2, -1)
    per_component = gauss_log_density(y[..., None, :], mu, logvar)            # (B, T, K)
    return torch.logsumexp(torch.log_softmax(logits, -1) + per_component, -1)


def per_sequence_reverse(seq, lengths):
    """Reverse each sequence's real steps ``(B, T, ...)``; padding stays in place (an involution)."""
    t = torch.arange(seq.shape[1], device=seq.device)[None]
    index = torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)
    return torch.gather(seq, 1, index[..., None].expand_as(seq))


def lstm_cell(gates, c):
    i, f, g, o = gates.chunk(4, -1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def copy_two_layer(mine: TwoLayer, sequential) -> None:
    mine.l1.load_state_dict(sequential[0].state_dict())
    mine.l2.load_state_dict(sequential[2].state_dict())


class PlainBase(nn.Module):
    """Input embedding (frames: Linear, or LReLU(Linear) with ``leaky_embedding``; tokens: lookup with a
    start id) and the emission (its log-variance clamped to +-``emission_clamp`` when given)."""

    def __init__(self, *, input_dim, emission, emb_dim, mixtures=1, clamp=8.0, emission_clamp=None,
                 leaky_embedding=False):
        super().__init__()
        self.family, self.clamp, self.mixtures, self.input_dim = emission, clamp, mixtures, input_dim
        self.emission_clamp = emission_clamp
        self.frame_act = lrelu if leaky_embedding else (lambda v: v)
        self.emb = nn.Embedding(input_dim + 1, emb_dim) if emission == "categorical" else nn.Linear(input_dim, emb_dim)
        self.out_size = {"gaussian": 2 * input_dim, "gmm": mixtures * (2 * input_dim + 1)}.get(emission, input_dim)

    def embed(self, y):
        return self.emb(y) if self.family == "categorical" else self.frame_act(self.emb(y))

    def inputs(self, e_y):
        """e(u_{1:T}): the start input then e(y_{1:T-1})."""
        B = e_y.shape[0]
        if self.family == "categorical":
            start = self.emb(torch.full((B, 1), self.input_dim, dtype=torch.long, device=e_y.device))
        else:
            start = self.frame_act(self.emb(e_y.new_zeros(B, 1, self.input_dim)))
        return torch.cat([start, e_y[:, :-1]], 1)

    def log_lik(self, params, y):
        return emission_log_lik(params, y, family=self.family, clamp=self.emission_clamp, mixtures=self.mixtures)

    def loss(self, x, mask, lengths, *, kl_weight=1.0, eps=None, **estimator):
        return -self.log_weights(x, mask, lengths, kl_weight=kl_weight, eps=eps, **estimator).mean()

    @staticmethod
    def config_of(objective) -> dict:
        c = objective.model.config
        return dict(input_dim=c.input_dim, emission=c.emission, emb_dim=c.emb_dim, rnn_dim=c.rnn_dim,
                    z_dim=c.z_dim, mlp_dim=c.mlp_dim, mixtures=c.mixtures, clamp=c.logvar_clamp,
                    emission_clamp=c.emission_clamp, leaky_embedding=c.embedding == "leaky")

    @torch.no_grad()
    def copy_embedding(self, model) -> None:
        self.emb.load_state_dict((model.embed.lookup if self.family == "categorical" else model.embed.linear).state_dict())


class PlainRNN(PlainBase):
    """log p(y) = sum_t log p(y_t | h_t), h_t = LSTM(e(u_t), h_{t-1})."""

    def __init__(self, *, rnn_dim, z_dim=None, mlp_dim=None, **base):
        super().__init__(**base)
        self.lstm = nn.LSTM(base["emb_dim"], rnn_dim, batch_first=True)
        self.out = nn.Linear(rnn_dim, self.out_size)

    @classmethod
    def like(cls, objective) -> "PlainRNN":
        plain = cls(**cls.config_of(objective))
        m = objective.model
        with torch.no_grad():
            plain.copy_embedding(m)
            plain.lstm.load_state_dict(m.lstm.state_dict())
            plain.out.load_state_dict(m.emission.linear.state_dict())
        return plain.to(next(objective.parameters()).dtype)

    def log_weights(self, x, mask, lengths, *, kl_weight=1.0, eps=None):
        h, _ = self.lstm(self.inputs(self.embed(x)))
        return (self.log_lik(self.out(h), x) * mask.to(h.dtype)).sum(-1)


class PlainVRNN(PlainBase):
    """VRNN with its filtering posterior q(z_t | y_t, h_{t-1}); ``standard_prior`` for VRNN-I."""

    def __init__(self, *, rnn_dim, z_dim, mlp_dim, standard_prior=False, **base):
        super().__init__(**base)
        E = base["emb_dim"]
        self.z_dim, self.standard_prior = z_dim, standard_prior
        self.phi_z = nn.Linear(z_dim, mlp_dim)
        self.lstm = nn.LSTM(E + mlp_dim, rnn_dim, batch_first=True)
        self.prior = TwoLayer(rnn_dim, mlp_dim, 2 * z_dim)
        self.post = TwoLayer(rnn_dim + E, mlp_dim, 2 * z_dim)
        self.dec = nn.Linear(mlp_dim + rnn_dim, mlp_dim)
        self.out = nn.Linear(mlp_dim, self.out_size)

    @classmethod
    def like(cls, objective) -> "PlainVRNN":
        standard = objective.model.config.prior == "standard"
        plain = cls(**cls.config_of(objective), standard_prior=standard)
        m, g = objective.model, objective.guide
        with torch.no_grad():
            plain.copy_embedding(m)
            plain.phi_z.load_state_dict(m.phi_z[0].state_dict())
            plain.lstm.load_state_dict(m.lstm.state_dict())
            if not standard:
                copy_two_layer(plain.prior, m.prior.net)
            copy_two_layer(plain.post, g.posterior.net)
            plain.dec.load_state_dict(m.emission.hidden[0].state_dict())
            plain.out.load_state_dict(m.emission.head.linear.state_dict())
        return plain.to(next(objective.parameters()).dtype)

    def _gaussian(self, net, x):
        return net(x).clamp(-self.clamp, self.clamp).chunk(2, -1)

    def log_weights(self, x, mask, lengths, *, kl_weight=1.0, eps=None):
        e_y = self.embed(x)
        B, T, E = e_y.shape
        H = self.lstm.hidden_size
        w_ih = self.lstm.weight_ih_l0
        gates_x = torch.addmm(self.lstm.bias_ih_l0 + self.lstm.bias_hh_l0, e_y.reshape(B * T, E),
                              w_ih[:, :E].t()).view(B, T, 4 * H).unbind(1)
        w_z, w_hh = w_ih[:, E:], self.lstm.weight_hh_l0
        w1 = self.post.l1.weight
        post_x = torch.addmm(self.post.l1.bias, e_y.reshape(B * T, E), w1[:, H:].t()).view(B, T, -1).unbind(1)
        if eps is None:
            eps = torch.randn(B, T, self.z_dim, dtype=e_y.dtype, device=e_y.device)
        eps = eps.unbind(1)
        h = e_y.new_zeros(B, H)
        c = torch.zeros_like(h)
        hs, zs, mus, lvs = [h], [], [], []
        for t in range(T):
            q_mu, q_lv = self.post.l2(lrelu(torch.addmm(post_x[t], h, w1[:, :H].t()))).clamp(
                -self.clamp, self.clamp).chunk(2, -1)
            z = q_mu + torch.exp(0.5 * q_lv) * eps[t]
            gates = torch.addmm(torch.addmm(gates_x[t], lrelu(self.phi_z(z)), w_z.t()), h, w_hh.t())
            h, c = lstm_cell(gates, c)
            hs.append(h)
            zs.append(z)
            mus.append(q_mu)
            lvs.append(q_lv)
        h_prev, z = torch.stack(hs[:-1], 1), torch.stack(zs, 1)
        log_q = gauss_log_density(z, torch.stack(mus, 1), torch.stack(lvs, 1))
        if self.standard_prior:
            log_p = gauss_log_density(z, torch.zeros_like(z), torch.zeros_like(z))
        else:
            log_p = gauss_log_density(z, *self._gaussian(self.prior, h_prev))
        rec = self.log_lik(self.out(lrelu(self.dec(torch.cat([lrelu(self.phi_z(z)), h_prev], -1)))), x)
        return ((rec - kl_weight * (log_q - log_p)) * mask.to(rec.dtype)).sum(-1)


class PlainSRNN(PlainBase):
    """SRNN with the guide ``smoothing`` (Resq), ``smoothing-plain`` or ``filtering``."""

    def __init__(self, *, rnn_dim, z_dim, mlp_dim, guide="smoothing", **base):
        super().__init__(**base)
        E = base["emb_dim"]
        self.z_dim, self.guide = z_dim, guide
        self.rnn = nn.LSTM(E, rnn_dim, batch_first=True)
        self.prior = TwoLayer(z_dim + rnn_dim, mlp_dim, 2 * z_dim)
        self.dec = nn.Linear(z_dim + rnn_dim, mlp_dim)
        self.out = nn.Linear(mlp_dim, self.out_size)
        if guide == "filtering":
            self.post = TwoLayer(z_dim + rnn_dim + E, mlp_dim, 2 * z_dim)
        else:
            self.back = nn.LSTM(rnn_dim + E, rnn_dim, batch_first=True)
            self.post = TwoLayer(z_dim + rnn_dim, mlp_dim, 2 * z_dim)

    @classmethod
    def like(cls, objective, guide: str) -> "PlainSRNN":
        plain = cls(**cls.config_of(objective), guide=guide)
        m, g = objective.model, objective.guide
        with torch.no_grad():
            plain.copy_embedding(m)
            plain.rnn.load_state_dict(m.rnn.state_dict())
            copy_two_layer(plain.prior, m.prior.net)
            plain.dec.load_state_dict(m.emission.hidden[0].state_dict())
            plain.out.load_state_dict(m.emission.head.linear.state_dict())
            copy_two_layer(plain.post, g.posterior.net)
            if guide != "filtering":
                plain.back.load_state_dict(g.backward.lstm.state_dict())
        return plain.to(next(objective.parameters()).dtype)

    def log_weights(self, x, mask, lengths, *, kl_weight=1.0, eps=None):
        e_y = self.embed(x)
        B, T, _ = e_y.shape
        Z = self.z_dim
        d, _ = self.rnn(self.inputs(e_y))
        if self.guide == "filtering":
            context = torch.cat([d, e_y], -1)
        else:
            a, _ = self.back(per_sequence_reverse(torch.cat([d, e_y], -1), lengths))
            context = per_sequence_reverse(a, lengths)
        w1 = self.post.l1.weight
        post_c = torch.addmm(self.post.l1.bias, context.reshape(B * T, -1), w1[:, Z:].t()).view(B, T, -1).unbind(1)
        p1 = self.prior.l1.weight
        prior_d = torch.addmm(self.prior.l1.bias, d.reshape(B * T, -1), p1[:, Z:].t()).view(B, T, -1).unbind(1)
        if eps is None:
            eps = torch.randn(B, T, Z, dtype=e_y.dtype, device=e_y.device)
        eps = eps.unbind(1)
        z = e_y.new_zeros(B, Z)
        zs, mus, lvs = [], [], []
        for t in range(T):
            q_mu, q_lv = self.post.l2(lrelu(torch.addmm(post_c[t], z, w1[:, :Z].t()))).clamp(
                -self.clamp, self.clamp).chunk(2, -1)
            if self.guide == "smoothing":  # Resq: the prior mean plus the correction
                p_mu = self.prior.l2(lrelu(torch.addmm(prior_d[t], z, p1[:, :Z].t()))).clamp(
                    -self.clamp, self.clamp)[:, :Z]
                q_mu = p_mu + q_mu
            z = q_mu + torch.exp(0.5 * q_lv) * eps[t]
            zs.append(z)
            mus.append(q_mu)
            lvs.append(q_lv)
        z = torch.stack(zs, 1)
        z_prev = torch.cat([z.new_zeros(B, 1, Z), z[:, :-1]], 1)
        p_mu, p_lv = self.prior(torch.cat([z_prev, d], -1)).clamp(-self.clamp, self.clamp).chunk(2, -1)
        log_q = gauss_log_density(z, torch.stack(mus, 1), torch.stack(lvs, 1))
        log_p = gauss_log_density(z, p_mu, p_lv)
        rec = self.log_lik(self.out(lrelu(self.dec(torch.cat([z, d], -1)))), x)
        return ((rec - kl_weight * (log_q - log_p)) * mask.to(rec.dtype)).sum(-1)


def gauss_scale_log_density(x, mu, scale):
    """sum over the last dim of log N(x; mu, scale^2)."""
    return (-0.5 * LOG_2PI - torch.log(scale) - 0.5 * ((x - mu) / scale) ** 2).sum(-1)


def gauss_kl(mu_q, scale_q, mu_p, scale_p):
    """sum over the last dim of KL(N(mu_q, scale_q^2) || N(mu_p, scale_p^2)), in closed form."""
    ratio = (scale_q / scale_p) ** 2
    return 0.5 * (ratio + ((mu_q - mu_p) / scale_p) ** 2 - 1.0 - torch.log(ratio)).sum(-1)


def parameter_pairs(pairs):
    """(plain parameter, library parameter, rows or None) for every pair of modules (same layout),
    parameters, or a parameter and ``(library parameter, rows)``, a block of its rows."""
    out = []
    for mine, theirs in pairs:
        if isinstance(theirs, tuple):
            out.append((mine, *theirs))
        elif isinstance(mine, nn.Parameter):
            out.append((mine, theirs, None))
        else:
            out.extend((a, b, None) for a, b in zip(mine.parameters(), theirs.parameters(), strict=True))
    return out


class PairedPlain(PlainBase):
    """A transcription whose parameters correspond one to one to a library objective's (``pairs``)."""

    def pairs(self, objective) -> list:
        raise NotImplementedError

    @classmethod
    def like(cls, objective):
        plain = cls(**cls.config_of(objective)).to(next(objective.parameters()).dtype)
        with torch.no_grad():
            for mine, theirs, rows in parameter_pairs(plain.pairs(objective)):
                mine.copy_(theirs if rows is None else theirs[rows])
        return plain

    def parameter_pairs(self, objective) -> list:
        return parameter_pairs(self.pairs(objective))


class PlainDMM(PairedPlain):
    """The DMM and its combiner guide as Pyro's ``examples/dmm.py`` writes them, with the sampled
    trajectory drawn in one loop over the guide's combiner and scored afterwards:

    gated transition p(z_t | z_{t-1}) from a learned z_0, emitter relu(relu(z W5) W6), guide
    q(z_t | z_{t-1}, r_t) with r_t = relu-RNN over the reversed embedded targets (learned h_0)."""

    def __init__(self, *, rnn_dim, z_dim, mlp_dim, **base):
        super().__init__(**base)
        E, Z, M, H = base["emb_dim"], z_dim, mlp_dim, rnn_dim
        self.z_dim = Z
        self.gate1, self.gate2 = nn.Linear(Z, 2 * M), nn.Linear(2 * M, Z)
        self.prop1, self.prop2 = nn.Linear(Z, 2 * M), nn.Linear(2 * M, Z)
        self.sig, self.z_to_loc = nn.Linear(Z, Z), nn.Linear(Z, Z)
        self.emit1, self.emit2, self.out = nn.Linear(Z, M), nn.Linear(M, M), nn.Linear(M, self.out_size)
        self.z_0 = nn.Parameter(torch.zeros(Z))
        self.rnn = nn.RNN(E, H, nonlinearity="relu", batch_first=True)
        self.h_0 = nn.Parameter(torch.zeros(1, 1, H))
        self.comb_z, self.comb_loc, self.comb_scale = nn.Linear(Z, H), nn.Linear(H, Z), nn.Linear(H, Z)
        self.z_q_0 = nn.Parameter(torch.zeros(Z))

    def pairs(self, objective) -> list:
        m, g = objective.model, objective.guide
        t = m.transition
        embed = m.embed.lookup if self.family == "categorical" else m.embed.linear
        return [(self.emb, embed), (self.gate1, t.gate[0]), (self.gate2, t.gate[2]), (self.prop1, t.proposed[0]),
                (self.prop2, t.proposed[2]), (self.sig, t.scale), (self.z_to_loc, t.linear),
                (self.emit1, m.emitter.hidden[0]), (self.emit2, m.emitter.hidden[2]), (self.out, m.emitter.head.linear),
                (self.z_0, m.z_0), (self.rnn, g.rnn.rnn), (self.h_0, g.rnn.h_0), (self.comb_z, g.combiner.z_to_hidden),
                (self.z_q_0, g.z_q_0)] + [
                    (mine, (theirs, rows)) for rows, layer in ((slice(None, self.z_dim), self.comb_loc),
                                                               (slice(self.z_dim, None), self.comb_scale))
                    for mine, theirs in zip(layer.parameters(), g.combiner.out.parameters())]

    def transition(self, z_prev):
        gate = torch.sigmoid(self.gate2(F.relu(self.gate1(z_prev))))
        proposed = self.prop2(F.relu(self.prop1(z_prev)))
        loc = (1 - gate) * self.z_to_loc(z_prev) + gate * proposed
        return loc, F.softplus(self.sig(F.relu(proposed)))

    def log_weights(self, x, mask, lengths, *, kl_weight=1.0, eps=None, kl="sampled"):
        e_y = self.embed(x)
        B, T, _ = e_y.shape
        Z = self.z_dim
        h_0 = self.h_0.expand(1, B, self.h_0.shape[-1]).contiguous()
        r, _ = self.rnn(per_sequence_reverse(e_y, lengths), h_0)
        r = per_sequence_reverse(r, lengths).unbind(1)
        if eps is None:
            eps = torch.randn(B, T, Z, dtype=e_y.dtype, device=e_y.device)
        eps = eps.unbind(1)
        z = self.z_q_0.expand(B, Z)
        zs, locs, scales = [], [], []
        for t in range(T):
            combined = 0.5 * (torch.tanh(self.comb_z(z)) + r[t])
            loc, scale = self.comb_loc(combined), F.softplus(self.comb_scale(combined))
            z = loc + scale * eps[t]
            zs.append(z)
            locs.append(loc)
            scales.append(scale)
        z = torch.stack(zs, 1)
        z_prev = torch.cat([self.z_0.expand(B, 1, Z), z[:, :-1]], 1)
        q = (torch.stack(locs, 1), torch.stack(scales, 1))
        p = self.transition(z_prev)
        if kl == "analytic":
            kl_t = gauss_kl(*q, *p)
        else:
            kl_t = gauss_scale_log_density(z, *q) - gauss_scale_log_density(z, *p)
        rec = self.log_lik(self.out(F.relu(self.emit2(F.relu(self.emit1(z))))), x)
        return ((rec - kl_weight * kl_t) * mask.to(rec.dtype)).sum(-1)


class PlainSTORN(PairedPlain):
    """STORN with its recognition network: z ~ q(z_t | y_{1:t}) from a separate LSTM over e(y), drawn at
    once; h = LSTM([e(u_t), W z_t]) fused; prior N(0, I). No loop over time at all."""

    def __init__(self, *, rnn_dim, z_dim, mlp_dim, **base):
        super().__init__(**base)
        E = base["emb_dim"]
        self.z_dim = z_dim
        self.gen = nn.Linear(z_dim, mlp_dim)
        self.lstm = nn.LSTM(E + mlp_dim, rnn_dim, batch_first=True)
        self.out = nn.Linear(rnn_dim, self.out_size)
        self.recognition = nn.LSTM(E, rnn_dim, batch_first=True)
        self.post = TwoLayer(rnn_dim, mlp_dim, 2 * z_dim)

    def pairs(self, objective) -> list:
        m, g = objective.model, objective.guide
        embed = m.embed.lookup if self.family == "categorical" else m.embed.linear
        return [(self.emb, embed), (self.gen, m.fwd.z_proj), (self.lstm, m.fwd.lstm), (self.out, m.emission.linear),
                (self.recognition, g.rnn), (self.post.l1, g.posterior.net[0]), (self.post.l2, g.posterior.net[2])]

    def log_weights(self, x, mask, lengths, *, kl_weight=1.0, eps=None, kl="sampled"):
        e_y = self.embed(x)
        g, _ = self.recognition(e_y)
        mu, logvar = self.post(g).clamp(-self.clamp, self.clamp).chunk(2, -1)
        if eps is None:
            eps = torch.randn(mu.shape, dtype=mu.dtype, device=mu.device)
        z = mu + torch.exp(0.5 * logvar) * eps
        h, _ = self.lstm(torch.cat([self.inputs(e_y), self.gen(z)], -1))
        if kl == "analytic":
            kl_t = gauss_kl(mu, torch.exp(0.5 * logvar), torch.zeros_like(mu), torch.ones_like(mu))
        else:
            kl_t = gauss_log_density(z, mu, logvar) - gauss_log_density(z, torch.zeros_like(z), torch.zeros_like(z))
        rec = self.log_lik(self.out(h), x)
        return ((rec - kl_weight * kl_t) * mask.to(rec.dtype)).sum(-1)
