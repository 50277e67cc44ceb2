"""Metrics of a trained model's latents: active units, the mutual information I(y; z), what the
posterior means follow (sentence length, position), and the aux score.

Active units (after Burda et al., 2016, adapted to a conditional prior): unit u of z_t is
*active* when Var_{(n, t)}( E_q[z_{t,u} | y_n] - E[mu^p_{t,u}] ) > 0.01, where the variance runs
over every real (sequence, step) pair of the split, mu^p_t = prior(h_{t-1}) is the
conditional prior's mean on the same trajectory, and both expectations are Monte Carlo
averages over ``particles`` trajectories z ~ q. With a standard-normal prior this is Burda's
Cov_x(E_q[z_u | x]); with a conditional prior, the prior's own mean varies from step to step
even when q has collapsed onto p, so only what q adds to the prior counts. ``raw`` is Burda's
statistic without the prior subtracted, for comparison (it counts collapsed units as active).

Mutual information (Hoffman and Johnson, 2016: the KL term averaged over the data is I(x; z)
under the aggregate posterior plus KL(q(z) || p(z))), estimated as He et al. (2019, "Lagging
inference networks") do: I = E_m E_{q_m}[log q_m(z)] - E_m E_{q_m}[log q_agg(z)], with q_agg the
mixture (1/M) sum_m q_m, log q_agg(z) a log-mean-exp over the M posteriors. For sequences we take
**one step as the data point**: m runs over the (sequence, step) pairs of the split and q_m is
the guide's Gaussian q(z_t | z_{<t}, y) at that step along one sampled trajectory. Per step rather
than per whole trajectory because trajectories have different lengths (a density of one
sequence's z_{1:T} under another sequence's posterior of a different length is not defined) and
because KL, active units and the paper's figures are per step too. The result is in nats per
step (per word for text): how much z_t tells about which sentence and step it came from, beyond
the aggregate. The log-mean-exp makes it an estimate that cannot exceed log M (M is capped at
:data:`MI_PAIRS` pairs drawn with a fixed seed); its standard error treats the M terms as
independent. Caveat for a conditional prior (Z-Forcing, VRNN, SRNN): a posterior that has
collapsed onto p(z_t | h_{t-1}) still varies with the past words through h_{t-1}, so this MI can
exceed the KL and is not zero under collapse; read it beside the KL and the active units (which
remove the prior's mean), not instead of them.
"""

from __future__ import annotations

import logging
import math
from typing import Dict, List, Optional

import numpy as np
import pyro.poutine as poutine
import torch
from scipy.stats import spearmanr

from ..infer import Objective, Weights, sequence_terms
from ..models.base import LATENT_SITE
from .bounds import eval_batches

log = logging.getLogger(__name__)

ACTIVE_THRESHOLD = 0.01
#: (sequence, step) pairs over which the aggregate posterior of the MI estimate is formed
MI_PAIRS = 4096


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



def aggregate_posterior_mi(z: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, *,
                           chunk: int = 256) -> Dict[str, float]:
    """He et al.'s (2019) estimate of I(x; z) from one draw ``z`` ``(M, Z)`` of each of M diagonal
    Gaussian posteriors N(``loc``, ``scale``) ``(M, Z)``:
    (1/M) sum_i [log q_i(z_i) - log (1/M) sum_j q_j(z_i)].

    Returns ``{"nats", "stderr", "pairs": M, "log_pairs": log M}`` (the estimate cannot exceed log M;
    the standard error treats the M terms as independent). Computed in float64, ``chunk`` rows of
    the M x M table at a time."""
    z, loc, scale = (t.double() for t in (z, loc, scale))
    count = z.shape[0]
    if count < 2:
        raise ValueError(f"the mutual information needs at least 2 posteriors, got {count}")
    terms = []
    log_scale = scale.log()
    for start in range(0, count, chunk):
        rows = z[start:start + chunk, None]  # (c, 1, Z)
        log_q = (-0.5 * ((rows - loc[None]) / scale[None]) ** 2 - log_scale[None] - 0.5 * math.log(2 * math.pi)).sum(-1)
        own = log_q[torch.arange(rows.shape[0]), torch.arange(start, start + rows.shape[0])]
        terms.append(own - (torch.logsumexp(log_q, dim=1) - math.log(count)))
    values = torch.cat(terms)
    return {"nats": float(values.mean()), "stderr": float(values.std() / math.sqrt(count)), "pairs": count,
            "log_pairs": math.log(count)}


@torch.no_grad()
def posterior_steps(objective: Objective, sequences, *, batch_size: int = 50) -> Optional[Dict[str, torch.Tensor]]:
    """One trajectory z ~ q(z | y) per sequence, as its real (sequence, step) pairs: ``z``, the
    guide's per-step ``loc`` and ``scale`` ``(M, Z)``, the sequence's ``length`` and the ``position``
    t (1-based) ``(M,)``. None for a model without latents or a guide without ``proposal``."""
    model, guide = objective.model, objective.guide
    if not model.latent_sites or not hasattr(guide, "proposal"):
        return None
    dtype = next(objective.parameters()).dtype
    device = next(objective.parameters()).device
    out = {key: [] for key in ("z", "loc", "scale", "length", "position")}
    for batch in eval_batches(sequences, batch_size):
        batch = batch.to(device, dtype)
        q = guide.proposal(batch)
        z = q.rsample()
        loc, scale = q.loc_scale(z)
        mask = batch.mask
        steps = torch.arange(1, batch.num_steps + 1, device=device).expand_as(mask)
        for key, value in (("z", z), ("loc", loc), ("scale", scale), ("length", batch.lengths[:, None].expand_as(mask)),
                           ("position", steps)):
            out[key].append(value[mask].double().cpu())
    return {key: torch.cat(values) for key, values in out.items()}


def mutual_information(steps: Optional[Dict[str, torch.Tensor]], *, pairs: int = MI_PAIRS,
                       seed: int = 0) -> Optional[Dict[str, float]]:
    """I(y; z_t) per step under the aggregate posterior (module docstring) of the pairs of
    :func:`posterior_steps`, at most ``pairs`` of them drawn with ``seed``; None without them."""
    if steps is None or len(steps["z"]) < 2:
        return None
    count = len(steps["z"])
    keep = torch.randperm(count, generator=torch.Generator().manual_seed(seed))[:pairs] if count > pairs \
        else torch.arange(count)
    return aggregate_posterior_mi(steps["z"][keep], steps["loc"][keep], steps["scale"][keep])


def mean_correlations(steps: Optional[Dict[str, torch.Tensor]]) -> Optional[Dict[str, List[Optional[float]]]]:
    """Pearson's r over the (sequence, step) pairs between each latent dimension's posterior mean
    and the sequence's length, and its position t: ``{"length": [r_u], "position": [r_u]}`` (None
    where a dimension or the lengths do not vary)."""
    if steps is None or len(steps["loc"]) < 3:
        return None
    loc = steps["loc"].numpy()
    out = {}
    for name in ("length", "position"):
        other = steps[name].numpy().astype(np.float64)
        out[name] = [pearson(loc[:, u], other) for u in range(loc.shape[1])]
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> Optional[float]:
    """Pearson's r of two arrays; None where one of them is constant."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def latent_summary(objective: Objective, sequences, info, *, batch_size: int = 50, particles: int = 5,
                   seed: int = 0, threshold: float = ACTIVE_THRESHOLD) -> Optional[Dict]:
    """What z carries on ``sequences``: KL is in the bounds; here active units (:func:`active_units`),
    I(y; z_t) per step (:func:`mutual_information`) and, for text, the correlations of each
    dimension's posterior mean with sentence length and word position (:func:`mean_correlations`).
    None for a model without latents. The MI and correlations need a guide with ``proposal``."""
    if not objective.model.latent_sites:
        return None
    torch.manual_seed(seed)
    active = active_units(objective, sequences, batch_size=batch_size, particles=particles, threshold=threshold)
    steps = posterior_steps(objective, sequences, batch_size=batch_size)
    summary = {"active_units": active["count"], "active_units_raw": active["raw_count"], "active_threshold": threshold,
               "z_dim": objective.model.config.z_dim, "mutual_information": mutual_information(steps, seed=seed)}
    if info.unit == "word":
        summary["correlations"] = mean_correlations(steps)
    return summary
