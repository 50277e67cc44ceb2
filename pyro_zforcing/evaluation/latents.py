"""Metrics of a trained model's latents: active units and the aux score.

Active units (after Burda et al., 2016, adapted to a conditional prior): unit u of z_t is
*active* when Var_{(n, t)}( E_q[z_{t,u} | y_n] - E[mu^p_{t,u}] ) > 0.01, where the variance runs
over every real (sequence, step) pair of the split, mu^p_t = prior(h_{t-1}) is the
conditional prior's mean on the same trajectory, and both expectations are Monte Carlo
averages over ``particles`` trajectories z ~ q. With a standard-normal prior this is Burda's
Cov_x(E_q[z_u | x]); with a conditional prior, the prior's own mean varies from step to step
even when q has collapsed onto p, so only what q adds to the prior counts. ``raw`` is Burda's
statistic without the prior subtracted, for comparison (it counts collapsed units as active).
"""

from __future__ import annotations

import logging
from typing import Dict, Optional

import numpy as np
import pyro.poutine as poutine
import torch
from scipy.stats import spearmanr

from ..infer import Objective, Weights, sequence_terms
from ..models.base import LATENT_SITE
from .bounds import eval_batches

log = logging.getLogger(__name__)

ACTIVE_THRESHOLD = 0.01


@torch.no_grad()
def active_units(objective: Objective, sequences, *, batch_size: int = 50, particles: int = 5,
                 threshold: float = ACTIVE_THRESHOLD) -> Dict:
    """Per-unit variance over (sequence, step) pairs of the posterior mean, prior mean removed.

    Returns ``{"count", "variance" (Z,), "raw_count", "raw_variance" (Z,), "method"}``; see the
    module docstring for the definition. ``particles`` trajectories per sequence estimate the
    means: from the guide's per-step means where its proposal has them (``"guide means"``), else
    (any guide whose only sample site is ``z``) the traced z themselves (``"monte carlo"``); a
    model without latents has none (``"no latent variables"``).
    """
    model, guide = objective.model, objective.guide
    if not model.latent_sites:
        return {"count": 0, "variance": [], "raw_count": 0, "raw_variance": [], "method": "no latent variables"}
    dtype = next(objective.parameters()).dtype
    device = next(objective.parameters()).device
    means_of_guide = hasattr(guide, "proposal")
    if not means_of_guide:
        log.info("guide %s has no proposal(): active units from Monte Carlo means of %d traced z per sequence",
                 type(guide).__name__, particles)
    deltas, means = [], []
    for batch in eval_batches(sequences, batch_size):
        batch = batch.to(device, dtype)
        repeated = batch.repeat(particles)
        if means_of_guide:
            q = guide.proposal(repeated)
            z = q.rsample()
            q_loc, _ = q.loc_scale(z)
        else:
            z = q_loc = poutine.trace(guide).get_trace(repeated).nodes[LATENT_SITE]["value"]
        p_loc, _ = model.prior_trajectory(repeated).loc_scale(z)
        shape = (particles, batch.batch_size) + tuple(z.shape[1:])
        q_mean = q_loc.view(shape).mean(0)
        delta = (q_loc - p_loc).view(shape).mean(0)
        deltas.append(delta[batch.mask].double().cpu())
        means.append(q_mean[batch.mask].double().cpu())
    delta, mean = torch.cat(deltas), torch.cat(means)
    variance, raw = delta.var(0, unbiased=False), mean.var(0, unbiased=False)
    return {"count": int((variance > threshold).sum()), "variance": variance.tolist(),
            "raw_count": int((raw > threshold).sum()), "raw_variance": raw.tolist(),
            "method": "guide means" if means_of_guide else "monte carlo"}


@torch.no_grad()
def mean_aux(objective: Objective, sequences, *, batch_size: int = 50) -> float:
    """Mean over sequences of the unweighted aux score sum_t log p(b_t | [h_{t-1},] z_t), z ~ q."""
    dtype = next(objective.parameters()).dtype
    device = next(objective.parameters()).device
    total, count = 0.0, 0
    for batch in eval_batches(sequences, batch_size):
        batch = batch.to(device, dtype)
        terms = sequence_terms(objective.model, objective.guide, batch, Weights(aux=1.0))
        total += float(terms["aux"].sum())
        count += batch.batch_size
    return total / count


def rank_correlation(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    """Spearman's rho of two per-sequence arrays; None where it is undefined (a constant array)."""
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b)[0])

