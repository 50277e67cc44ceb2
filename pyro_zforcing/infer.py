"""The training objective, per-sequence bounds, and the parameters a run trains.

Training minimises, per sequence on average,

    -( E_q[ log p(y | h) ] - w_kl * KL(q(z | y) || p(z | u)) + beta * aux + w_bwd * bwd )

where the aux and backward factors are ``pyro.factor`` sites of the model and the KL weight
scales the latent site in both model and guide. The KL is estimated along one trajectory
z ~ q (``TrainConfig.kl``, default ``"analytic"``, ``config.DEFAULT_KL``): ``"sampled"`` is ``pyro.infer.Trace_ELBO``'s log q(z) - log p(z);
``"analytic"`` (:func:`analytic_kl_elbo`, the authors' estimator) is sum_t KL(q(z_t | .) ||
p(z_t | .)) in closed form given the sampled z_{<t}. Both have the same expectation.
Reported numbers come from :func:`sequence_terms` and :func:`iwae_bound`, which run the model
with the training-only factors switched off, per sequence (Pyro's ``Importance`` would sum over
the batch), and always use the sampled log-weights log p(y, z) - log q(z) (IWAE needs them).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Collection, Dict, List, Optional, Sequence

import pyro.poutine as poutine
import torch
import torch.nn as nn
from pyro.distributions import Normal
from pyro.distributions.util import is_validation_enabled, scale_and_mask
from pyro.infer import Trace_ELBO
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import prune_subsample_sites
from pyro.util import check_model_guide_match, warn_if_nan

from .config import DEFAULT_KL, KL_ESTIMATORS
from .data.base import Batch
from .emissions import Emission
from .models.base import AUX_SITE, BWD_SITE, GUIDE_READS, LATENT_SITE, OBS_SITE

log = logging.getLogger(__name__)

GENERATIVE, INFERENCE, TRAINING_ONLY, UNTRAINED = "generative", "inference", "training_only", "untrained"
PARAMETER_ROLES = (GENERATIVE, INFERENCE, TRAINING_ONLY, UNTRAINED)


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


def active_factors(train_config) -> frozenset:
    """The training-only factors whose weight is > 0 at some update of a run of ``train_config``
    (``AUX_SITE``, and ``BWD_SITE`` only with it, as :func:`weights_at`)."""
    c = train_config
    rising = c.aux_end > 0 and (c.aux_step > 0 or c.aux_anneal_epochs is not None)
    if not (c.aux_start > 0 or rising):
        return frozenset()
    return frozenset({AUX_SITE, BWD_SITE} if c.bwd_weight > 0 else {AUX_SITE})


def parameter_roles(model: nn.Module, guide: nn.Module, *, factors: Collection[str]) -> Dict[str, List[nn.Parameter]]:
    """The parameters of ``model`` and ``guide`` by role in a run whose active training-only
    factors are ``factors`` (:func:`active_factors`):

    - ``generative``: p(y, z), every model parameter outside ``model.side_modules``;
    - ``inference``: the guide's own parameters and the side modules it reads (``model_modules``);
    - ``training_only``: side modules trained by an active factor alone (aux and backward-LM heads);
    - ``untrained``: side modules nothing gives a gradient in such a run (built, never trained).
    """
    reads = set(getattr(guide, "model_modules", ()))
    side = {}
    for name, trained_by in getattr(model, "side_modules", {}).items():
        if GUIDE_READS in trained_by and name in reads:
            role = INFERENCE
        elif any(factor in factors for factor in trained_by):
            role = TRAINING_ONLY
        else:
            role = UNTRAINED
        side.update({id(p): role for p in getattr(model, name).parameters()})
    roles: Dict[str, List[nn.Parameter]] = {role: [] for role in PARAMETER_ROLES}
    for p in model.parameters():
        roles[side.get(id(p), GENERATIVE)].append(p)
    owned = {id(p) for p in model.parameters()}
    roles[INFERENCE] += [p for p in guide.parameters() if id(p) not in owned]
    return roles


def weight_masks(*modules: nn.Module) -> Dict[int, torch.Tensor]:
    """``id(weight) -> mask`` of every masked weight in ``modules`` (:meth:`Emission.masked_weights`)."""
    return {id(weight): mask for root in modules for module in root.modules() if isinstance(module, Emission)
            for weight, mask in module.masked_weights()}


def scalar_count(params, masks: Dict[int, torch.Tensor]) -> int:
    """Scalars of ``params`` that act: every entry of a plain parameter, the entries a mask keeps of
    a masked one (MADE's W and V: the masked-out entries are stored but never act)."""
    return sum(int(masks[id(p)].count_nonzero()) if id(p) in masks else p.numel() for p in params)


def parameter_counts(model: nn.Module, guide: nn.Module, *, factors: Collection[str]) -> Dict[str, int]:
    """Acting scalars (:func:`scalar_count`) per role of :func:`parameter_roles`."""
    masks = weight_masks(model, guide)
    return {role: scalar_count(params, masks)
            for role, params in parameter_roles(model, guide, factors=factors).items()}


def analytic_kl_elbo(model, guide, *args, **kwargs) -> Optional[torch.Tensor]:
    """The ELBO of one trajectory z ~ q with the analytic per-step KL (the authors' estimator):
    the observed sites' log-densities (emission, training factors) minus, for every latent site,
    sum_t KL(q(z_t | .) || p(z_t | .)) in closed form along the sampled z (:func:`site_step_kl`),
    each term scaled as its site (the per-sequence scale, KL annealing's ``ScaleSite``).

    ``Trace_ELBO`` uses log q(z) - log p(z) instead: the same expectation, more variance. None when
    a latent site's guide or prior distribution has no per-step Gaussian ``loc_scale`` (a user's
    guide of another family): the analytic KL is not defined for it.
    """
    return traced_analytic_elbo(*traced(model, guide, *args, **kwargs))


def traced(model, guide, *args, **kwargs):
    """Guide trace and the model trace replayed on it, subsample sites pruned, no log-density computed
    (the model and guide are checked to match under Pyro's validation)."""
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
    if is_validation_enabled():
        check_model_guide_match(model_trace, guide_trace)
    return prune_subsample_sites(guide_trace), prune_subsample_sites(model_trace)  # plates


def traced_analytic_elbo(guide_trace, model_trace) -> Optional[torch.Tensor]:
    """:func:`analytic_kl_elbo` of a guide trace and the model trace replayed on it (:func:`traced`)."""
    model_trace.compute_log_prob(site_filter=lambda name, site: site["is_observed"])
    elbo = 0.0
    for name, site in model_trace.nodes.items():
        if site["type"] != "sample":
            continue
        if site["is_observed"]:
            elbo = elbo + site["log_prob_sum"]
            continue
        proposal = guide_trace.nodes[name]
        if not all(hasattr(s["fn"], "loc_scale") for s in (proposal, site)):
            return None
        kl = site_step_kl(proposal, site).sum(-1)
        elbo = elbo - scale_and_mask(kl, scale=proposal["scale"], mask=proposal["mask"]).sum()
    return elbo


class Objective(nn.Module):
    """-(ELBO + aux) per sequence, averaged over the batch, as a differentiable torch loss.

    Holds the model and guide as submodules (so ``parameters()`` and ``state_dict()`` cover
    both once) and evaluates :func:`analytic_kl_elbo` (``kl="analytic"``, the default) or
    ``Trace_ELBO().differentiable_loss`` (``kl="sampled"``; for a guide without per-step Gaussian parameters,
    ``Trace_ELBO`` again, with a warning the first time); wrap it in DistributedDataParallel for
    multi-process training.
    """

    def __init__(self, model: nn.Module, guide: nn.Module, *, kl: str = DEFAULT_KL):
        super().__init__()
        if kl not in KL_ESTIMATORS:
            raise ValueError(f"kl must be one of {KL_ESTIMATORS}, got {kl!r}")
        self.model = model
        self.guide = guide
        self.kl = kl
        self.elbo = Trace_ELBO()
        self._analytic_fits: Optional[bool] = None  # known after the first evaluation under kl="analytic"

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
        factors = {"aux_weight": weights.aux, "bwd_weight": weights.bwd}
        if self._analytic():
            elbo = analytic_kl_elbo(model, guide, batch, **factors)
            if self._analytic_fit(elbo is not None):
                warn_if_nan(elbo, "loss")  # as Trace_ELBO.differentiable_loss does
                return -elbo
            self.model.forget()
        return self.elbo.differentiable_loss(model, guide, batch, **factors)

    def _analytic(self) -> bool:
        """Whether this evaluation tries the analytic KL (``kl="analytic"``, not yet found unfit)."""
        return self.kl == "analytic" and self._analytic_fits is not False

    def _analytic_fit(self, fits: bool) -> bool:
        """Records whether the analytic KL fits this guide (warning once when it does not); returns ``fits``."""
        if self._analytic_fits is None and not fits:
            log.warning("--kl analytic: the guide %s (or the model's prior) has no per-step Gaussian parameters "
                        "(loc_scale); its KL is estimated by log q - log p, as with --kl sampled",
                        type(self.guide).__name__)
        self._analytic_fits = fits
        return fits

    def reparameterised_loss(self, batch: Batch, weights: Weights = Weights()) -> torch.Tensor:
        """:meth:`forward`'s value and gradients without a host sync, for a captured CUDA graph:
        -(log p(y, z) - log q(z | y)) of one z drawn from the guide (``kl="sampled"``), or
        :func:`analytic_kl_elbo`'s value from the same traces (``kl="analytic"``), each site
        scaled as in forward.

        ``Trace_ELBO``'s surrogate is the sampled sum when every guide site is reparameterised (its
        score-function terms are 0); it also reads the loss on the host (``torch_item``, the NaN
        warning), which a graph being captured cannot do. Refuses a guide site without ``rsample``.
        """
        model, guide = self.scaled(batch, weights)
        guide_trace, model_trace = traced(model, guide, batch, aux_weight=weights.aux, bwd_weight=weights.bwd)
        for name in latent_sites(guide_trace):
            if not guide_trace.nodes[name]["fn"].has_rsample:
                raise ValueError(f"--cuda-graphs needs reparameterised guide sites; site {name!r} of "
                                 f"{type(self.guide).__name__} has no rsample")
        if self._analytic():
            elbo = traced_analytic_elbo(guide_trace, model_trace)
            if self._analytic_fit(elbo is not None):
                return -elbo
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


def site_step_kl(guide_site: Dict, model_site: Dict) -> torch.Tensor:
    """Analytic KL(q(z_t | .) || p(z_t | .)) per step ``(B, T)`` along the traced trajectory of one
    latent site (its guide and model trace nodes), summed over latent dimensions and zero on
    padded steps (needs both distributions' ``loc_scale``)."""
    z = guide_site["value"]
    q_loc, q_scale = guide_site["fn"].loc_scale(z)
    p_loc, p_scale = model_site["fn"].loc_scale(z)
    kl = torch.distributions.kl_divergence(Normal(q_loc, q_scale), Normal(p_loc, p_scale)).sum(-1)
    return kl * model_site["fn"].mask


def step_kl(guide_trace, model_trace) -> torch.Tensor:
    """:func:`site_step_kl` of the latent site ``z`` ``(B, T)``: the authors' ``gaussian_kld`` per step."""
    return site_step_kl(guide_trace.nodes[LATENT_SITE], model_trace.nodes[LATENT_SITE])


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
