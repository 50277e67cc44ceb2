"""Plain PyTorch Z-Forcing as a speed-minded developer would write it: the strict baseline.

:class:`~benchmarks.reference.PlainZForcing` follows the authors' code (an ``LSTMCell`` loop
that also evaluates the prior and the aux head at every step). Here everything that does not
depend on the sampled z_t leaves the time loop: the input part of the LSTM gates and the b_t
part of the posterior's first layer are computed for all steps at once, the latent projection
is folded into the recurrent weights, and the prior, aux head and emission run once over the
whole trajectory afterwards, and per-step slices come from one ``unbind`` (slicing ``x[:, t]``
inside the loop makes autograd fill a full-size zero gradient per step: O(T^2) work).
Only the posterior MLP and the LSTM update stay sequential.
Same weights, same noise, same loss as ``PlainZForcing`` (tests/test_benchmarks.py).
"""

from __future__ import annotations

import torch

from .reference import PlainZForcing, gauss_log_density, lrelu


class FastPlainZForcing(PlainZForcing):
    """``loss`` as in :class:`PlainZForcing`, with the z-independent work hoisted out of the loop."""

    def _gaussian(self, net, x):
        return net(x).clamp(-self.clamp, self.clamp).chunk(2, -1)

    def log_weights(self, x, mask, lengths, *, eps=None, aux_weight=0.0, bwd_weight=0.0, kl_weight=1.0):
        """Per-sequence objective ``(B,)``: rec - kl_weight * kl (+ weighted aux, bwd), one z each."""
        B, T = x.shape[0], x.shape[1]
        maskf = mask.to(self.out.weight.dtype)
        e_y, e_u, b = self.embed_and_look_back(x, lengths)

        H, E = self.cell.hidden_size, e_u.shape[-1]
        w_ih = self.cell.weight_ih
        w_e, w_g = w_ih[:, :E], w_ih[:, E:]
        w_z = w_g @ self.gen.weight                                           # (4H, Z)
        gates_in = torch.addmm(self.cell.bias_ih + self.cell.bias_hh + w_g @ self.gen.bias,
                               e_u.reshape(B * T, E), w_e.t()).view(B, T, 4 * H)
        w1 = self.inf.l1.weight
        w1_h, w1_b = w1[:, :H], w1[:, H:]
        inf_b = torch.addmm(self.inf.l1.bias, b.reshape(B * T, H), w1_b.t()).view(B, T, -1)
        if eps is None:
            eps = torch.randn(B, T, self.z_dim, dtype=e_y.dtype, device=x.device)
        h = e_y.new_zeros(B, H)
        c = torch.zeros_like(h)
        hs, zs, q_mus, q_lvs = [h], [], [], []
        # unbind: one backward node for all steps (x[:, t] in the loop costs T full-size zero fills)
        gates_in, inf_b, eps = gates_in.unbind(1), inf_b.unbind(1), eps.unbind(1)
        for t in range(T):
            q = self.inf.l2(lrelu(torch.addmm(inf_b[t], h, w1_h.t())))
            q_mu, q_lv = q.clamp(-self.clamp, self.clamp).chunk(2, -1)
            z = q_mu + torch.exp(0.5 * q_lv) * eps[t]
            gates = torch.addmm(torch.addmm(gates_in[t], z, w_z.t()), h, self.cell.weight_hh.t())
            i, f, g, o = gates.chunk(4, -1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            hs.append(h)
            zs.append(z)
            q_mus.append(q_mu)
            q_lvs.append(q_lv)
        hs, z = torch.stack(hs, 1), torch.stack(zs, 1)
        h_prev = hs[:, :-1]
        pri_mu, pri_lv = self._gaussian(self.pri, h_prev)
        kl = gauss_log_density(z, torch.stack(q_mus, 1), torch.stack(q_lvs, 1)) - gauss_log_density(z, pri_mu, pri_lv)
        rec = self.emission_log_lik(self.out(hs[:, 1:]), x)
        objective = ((rec - kl_weight * kl) * maskf).sum(-1)
        if aux_weight > 0:
            a_mu, a_lv = self._gaussian(self.aux, torch.cat([h_prev, z], -1) if self.aux_input == "hz" else z)
            target = b.detach()
            if self.aux_loss == "l2":
                aux = -((target - torch.tanh(a_mu)) ** 2).sum(-1)
            else:
                aux = gauss_log_density(target, torch.tanh(a_mu), a_lv)
            objective = objective + aux_weight * (aux * maskf).sum(-1)
        if bwd_weight > 0:
            bwd_ll = self.emission_log_lik(self.bwd_out(b[:, 1:]), x[:, :-1])
            objective = objective + bwd_weight * (bwd_ll * maskf[:, 1:]).sum(-1)
        return objective

    def loss(self, x, mask, lengths, *, aux_weight=0.0, bwd_weight=0.0, kl_weight=1.0, eps=None):
        return -self.log_weights(x, mask, lengths, eps=eps, aux_weight=aux_weight, bwd_weight=bwd_weight,
                                 kl_weight=kl_weight).mean()


@torch.no_grad()
def plain_iwae_bound(plain: FastPlainZForcing, x, mask, lengths, *, num_samples: int) -> torch.Tensor:
    """Vectorised IWAE per sequence ``(B,)``: all K particles as K*B rows of one pass.

    Rows are particle-major (row i*B + b is particle i of sequence b), as ``Batch.repeat``.
    """
    k, B = num_samples, x.shape[0]
    reps = (k,) + (1,) * (x.dim() - 1)
    log_w = plain.log_weights(x.repeat(reps), mask.repeat(k, 1), lengths.repeat(k)).view(k, B)
    return torch.logsumexp(log_w, 0) - torch.log(torch.tensor(float(k), dtype=log_w.dtype))
