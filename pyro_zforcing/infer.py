"""The training objective and per-sequence bounds.

Training minimises, per sequence on average,

    -( E_q[ log p(y | h) ] - w_kl * E_q[ log q(z | y) - log p(z | u) ] + beta * aux + w_bwd * bwd )

with ``pyro.infer.Trace_ELBO``: the aux and backward factors are ``pyro.factor`` sites of the
model, the KL weight scales the latent site in both model and guide. Reported numbers come
from :func:`sequence_terms` and :func:`iwae_bound`, which run the model with the training-only
factors switched off, per sequence (Pyro's ``Importance`` would sum over the batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import pyro.poutine as poutine
import torch
import torch.nn as nn
from pyro.distributions import Normal
from pyro.infer import Trace_ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites

from .data.base import Batch
from .models.base import AUX_SITE, BWD_SITE, LATENT_SITE, OBS_SITE


class ScaleSite(Messenger):
    """Multiplies the log-density of the named sites by ``weight`` (KL annealing)."""

    def __init__(self, names: Sequence[str], weight: float):
        super().__init__()
        self.names = tuple(names)
        self.weight = weight

    def _process_message(self, msg):
        if msg["name"] in self.names:
            msg["scale"] = msg["scale"] * self.weight


@dataclass(frozen=True)
class Weights:
    """The objective's weights at one update: KL, aux (beta) and backward-LM; floats, or 0-d
    tensors in a captured training step (a tensor weight is always applied, see ``models.base.active``)."""

    kl: float = 1.0
    aux: float = 0.0
    bwd: float = 0.0


def anneal(start: float, end: float, step: float, updates: int) -> float:
    """``start`` moved toward ``end`` by ``step`` per update, never past ``end``."""
    if step <= 0 or start == end:
        return start
    if end > start:
        return min(end, start + step * updates)
    return max(end, start - step * updates)


def weights_at(train_config, updates: int) -> Weights:
    """The annealed weights after ``updates`` optimiser steps; the backward-LM cost is on only
    while the aux weight is > 0, as in the authors' ``train_timit.py``."""
    aux = anneal(train_config.aux_start, train_config.aux_end, train_config.aux_step, updates)
    return Weights(kl=anneal(train_config.kl_start, 1.0, train_config.kl_step, updates), aux=aux,
                   bwd=train_config.bwd_weight if aux > 0 else 0.0)


class Objective(nn.Module):
    """-(ELBO + aux) per sequence, averaged over the batch, as a differentiable torch loss.

    Holds the model and guide as submodules (so ``parameters()`` and ``state_dict()`` cover
    both once) and evaluates ``Trace_ELBO().differentiable_loss``; wrap it in
    DistributedDataParallel for multi-process training.
    """

    def __init__(self, model: nn.Module, guide: nn.Module):
        super().__init__()
        self.model = model
        self.guide = guide
        self.elbo = Trace_ELBO()

    def scaled(self, batch: Batch, weights: Weights):
        """(model, guide) for one evaluation of the loss: every site per sequence (1/B), the latent
        sites by the KL weight; the guide->model memo starts afresh."""
        model, guide = self.model, self.guide
        if hasattr(model, "forget"):
            model.forget()  # the guide->model reuse is within this evaluation only
        per_sequence = 1.0 / batch.batch_size
        model = poutine.scale(model, scale=per_sequence)
        guide = poutine.scale(guide, scale=per_sequence)
        if isinstance(weights.kl, torch.Tensor) or weights.kl != 1.0:
            model = ScaleSite(self.model.latent_sites, weights.kl)(model)
            guide = ScaleSite(self.model.latent_sites, weights.kl)(guide)
        return model, guide

    def forward(self, batch: Batch, weights: Weights = Weights()) -> torch.Tensor:
        model, guide = self.scaled(batch, weights)
        return self.elbo.differentiable_loss(model, guide, batch, aux_weight=weights.aux, bwd_weight=weights.bwd)

    def reparameterised_loss(self, batch: Batch, weights: Weights = Weights()) -> torch.Tensor:
        """:meth:`forward`'s value and gradients without a host sync, for a captured CUDA graph:
        -(log p(y, z) - log q(z | y)) of one z drawn from the guide, each site scaled as in forward.

        ``Trace_ELBO``'s surrogate is this very sum when every guide site is reparameterised (its
        score-function terms are 0); it also reads the loss on the host (``torch_item``, the NaN
        warning), which a graph being captured cannot do. Refuses a guide site without ``rsample``.
        """
        model, guide = self.scaled(batch, weights)
        guide_trace, model_trace = (prune_subsample_sites(trace) for trace in trace_pair(model, guide, batch, weights))
        for name in latent_sites(guide_trace):
            if not guide_trace.nodes[name]["fn"].has_rsample:
                raise ValueError(f"--cuda-graphs needs reparameterised guide sites; site {name!r} of "
                                 f"{type(self.guide).__name__} has no rsample")
        return guide_trace.log_prob_sum() - model_trace.log_prob_sum()


def trace_pair(model, guide, batch: Batch, weights: Weights = Weights()):
    """Guide trace and the model trace replayed on it, with per-site ``log_prob`` (B,) computed."""
    guide_trace = poutine.trace(guide).get_trace(batch, aux_weight=weights.aux, bwd_weight=weights.bwd)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
        batch, aux_weight=weights.aux, bwd_weight=weights.bwd)
    guide_trace.compute_log_prob()
    model_trace.compute_log_prob()
    return guide_trace, model_trace


def latent_sites(guide_trace) -> list:
    """The names of the latent sites a guide trace proposed (none for a model without latents)."""
    return [name for name, node in guide_trace.nodes.items()
            if node["type"] == "sample" and not node["is_observed"]]


def bound_terms(guide_trace, model_trace) -> Dict[str, torch.Tensor]:
    """Per-sequence ``rec`` = log p(y | h), ``kl`` = log q(z) - log p(z) and ``elbo`` = rec - kl
    (the log importance weight) from a guide trace and the model trace replayed on it.

    The latent sites are those the guide proposed; with none (a model without latents) the KL
    is 0 and the ELBO is the exact log-likelihood log p(y)."""
    rec = model_trace.nodes[OBS_SITE]["log_prob"]
    kl = torch.zeros_like(rec)
    for name in latent_sites(guide_trace):
        kl = kl + guide_trace.nodes[name]["log_prob"] - model_trace.nodes[name]["log_prob"]
    return {"rec": rec, "kl": kl, "elbo": rec - kl}


def sequence_terms(model, guide, batch: Batch, weights: Weights = Weights(kl=1.0, aux=0.0)) -> Dict[str, torch.Tensor]:
    """One-sample per-sequence terms ``(B,)``: rec = log p(y | h), kl = log q(z) - log p(z),
    elbo = rec - kl, and ``aux``/``bwd`` (the factors' unweighted values, 0 when off)."""
    guide_trace, model_trace = trace_pair(model, guide, batch, weights)
    terms = bound_terms(guide_trace, model_trace)
    rec = terms["rec"]
    for name, weight in ((AUX_SITE, weights.aux), (BWD_SITE, weights.bwd)):
        node = model_trace.nodes.get(name)
        terms[name] = node["log_prob"] / weight if node is not None else torch.zeros_like(rec)
    return terms


def step_kl(guide_trace, model_trace) -> torch.Tensor:
    """Analytic KL(q(z_t | .) || p(z_t | h_{t-1})) per step ``(B, T)`` along the traced trajectory,
    summed over latent dimensions and zero on padded steps (needs both sites' ``loc_scale``)."""
    guide_site, model_site = guide_trace.nodes[LATENT_SITE], model_trace.nodes[LATENT_SITE]
    z = guide_site["value"]
    q_loc, q_scale = guide_site["fn"].loc_scale(z)
    p_loc, p_scale = model_site["fn"].loc_scale(z)
    kl = torch.distributions.kl_divergence(Normal(q_loc, q_scale), Normal(p_loc, p_scale)).sum(-1)
    return kl * model_site["fn"].mask


def has_step_params(guide_trace, model_trace) -> bool:
    """Whether both traces have the latent site ``z`` with per-step ``loc_scale`` (sequence-level Gaussians do)."""
    return LATENT_SITE in guide_trace.nodes and all(hasattr(trace.nodes[LATENT_SITE]["fn"], "loc_scale") for trace in (guide_trace, model_trace))


@torch.no_grad()
def importance_terms(model, guide, batch: Batch, *, num_samples: int = 25, chunk: Optional[int] = None,
                     kl_per_step: bool = False) -> Dict[str, torch.Tensor]:
    """Per-sequence bounds ``(B,)`` from K importance samples z_k ~ q(z | y), training factors off:

    - ``iwae``: log (1/K) sum_k p(y, z_k) / q(z_k | y), the IWAE bound;
    - ``elbo``, ``rec``, ``kl``: the K-sample averages of log w_k, log p(y | z_k) and
      log q(z_k | y) - log p(z_k) (so ``elbo = rec - kl``);
    - with ``kl_per_step``, ``kl_steps`` ``(B, T)``: the analytic per-step KL averaged over the K
      (absent when the guide's or prior's distribution has no per-step ``loc_scale``).

    The K particles are copies of the batch (``Batch.repeat``), traced in chunks of ``chunk``
    particles; the log-weights are the traces' per-sequence ``log_prob`` (never summed over the
    batch, as ``pyro.infer.Importance`` would) merged with a streaming logsumexp, so K need not
    fit in memory at once.
    """
    if num_samples < 1:
        raise ValueError(f"--iwae-samples must be >= 1, got {num_samples}")
    chunk = num_samples if chunk is None else max(1, min(chunk, num_samples))
    size = batch.batch_size
    log_sum = None
    sums: Dict[str, torch.Tensor] = {}
    done = 0
    while done < num_samples:
        k = min(chunk, num_samples - done)
        guide_trace, model_trace = trace_pair(model, guide, batch.repeat(k))
        parts = {key: value.view(k, size) for key, value in bound_terms(guide_trace, model_trace).items()}
        part = torch.logsumexp(parts["elbo"], dim=0)  # the log-weights of this chunk's particles
        log_sum = part if log_sum is None else torch.logaddexp(log_sum, part)
        if kl_per_step and has_step_params(guide_trace, model_trace):
            parts["kl_steps"] = step_kl(guide_trace, model_trace).view(k, size, -1)
        for key, value in parts.items():
            total = value.sum(0)
            sums[key] = total if key not in sums else sums[key] + total
        done += k
    terms = {key: value / num_samples for key, value in sums.items()}
    terms["iwae"] = log_sum - math.log(num_samples)
    return terms


def iwae_bound(model, guide, batch: Batch, *, num_samples: int = 25, chunk: Optional[int] = None) -> torch.Tensor:
    """log (1/K) sum_k p(y, z_k) / q(z_k | y) per sequence ``(B,)`` (see :func:`importance_terms`)."""
    return importance_terms(model, guide, batch, num_samples=num_samples, chunk=chunk)["iwae"]
