"""The contract every model of the registry keeps, and the pieces they share.

A model is an ``nn.Module`` whose ``forward(batch, *, aux_weight=0., bwd_weight=0.)`` is a Pyro
model of a padded batch (``batch.x``: ``(B, T, D)`` frames or ``(B, T)`` tokens) that observes
the targets y_{1:T} at the site ``"x"`` under the batch mask. Class attributes declare:

- ``latent_sites``: the sample sites a guide must propose (``()`` for a model without latents:
  its bound is then the exact log-likelihood);
- ``guides``: the names of ``pyro_zforcing.guides.GUIDES`` that fit it, ``default_guide`` first.

Run on ``batch.unobserved()`` a model draws the site ``"x"`` from its emission instead of
observing it (:class:`DrawObservations`, entered by :meth:`SequenceModel.__call__`), so
``pyro.infer.Predictive`` gives one-step-ahead predictive draws of every model: each y_t given
the observed y_{<t} (the inputs stay the batch's) and z (``docs/pyro-tools.md``).

A model may add training-only factors, ``pyro.factor(AUX_SITE, aux_weight * ...)`` and
``pyro.factor(BWD_SITE, bwd_weight * ...)`` where :func:`active` says the weight is on: they shape
training and are never part of a bound (every reported number runs the model with both weights
at 0). A weight may be a 0-d tensor (a captured training step); the model must then not read its
value on the host.

A model whose recurrence depends on the sampled z draws its trajectory with
:class:`~pyro_zforcing.distributions.LatentTrajectory`, giving it ``recurrence()``: a
:class:`~pyro_zforcing.steps.Recurrence` whose step is a function of explicit tensors (weights
and per-step inputs, no closure over a batch's tensors). That is the per-step cell ``--compile``
compiles (:mod:`pyro_zforcing.steps`); a model with its own loop calls
:func:`~pyro_zforcing.steps.sample_loop` with its head's :class:`~pyro_zforcing.steps.StepFunction`.

Parameters by role (what ``compare`` counts and matches): every parameter of the model is the
generative model p(y, z)'s, except the submodules named in ``side_modules``, each with what
gives it a gradient: ``GUIDE_READS`` (a guide that lists the module in its ``model_modules``
reads it: part of the inference network) and/or a training-only factor (``AUX_SITE``,
``BWD_SITE``: trained only while that factor's weight is > 0). The guide's own parameters are
the inference network's. :func:`pyro_zforcing.infer.parameter_roles` sorts them for a run.

Every downstream piece (objective, bounds, evaluation, samples, studies, checkpoints) talks to
this contract. Inputs follow one convention for every model: u_t = y_{t-1}, u_1 a start frame
(or start token), so all models score every step of every sequence and bounds are comparable.
"""

from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional, Tuple

import torch
import torch.nn as nn
from pyro.poutine.messenger import Messenger

from ..cache import LastResult
from ..config import ModelConfig
from ..data.base import Batch
from ..emissions import Emission
from ..nets import InputEmbedding

LATENT_SITE = "z"
OBS_SITE = "x"
AUX_SITE = "aux"  # training-only factors, weighted by aux_weight and bwd_weight
BWD_SITE = "bwd"
TRAINING_ONLY_SITES = (AUX_SITE, BWD_SITE)
GUIDE_READS = "guide"  # in ``side_modules``: a module that the guides listing it read


def active(weight) -> bool:
    """Whether a training-only factor of this weight is in the model: a float > 0, or any tensor
    (a captured CUDA graph reads the weight from a tensor whose value changes between replays,
    so the model's structure must not depend on it)."""
    return isinstance(weight, torch.Tensor) or weight > 0


def inputs_of(batch: Batch) -> tuple:
    """The tensors the inputs u_{1:T} are made of: the targets, the given first input and the
    dropped words (``batch.inputs``, word dropout) if any."""
    return (batch.x,) + tuple(t for t in (batch.first, batch.inputs) if t is not None)


class DrawObservations(Messenger):
    """Samples the observation site ``"x"`` from its distribution instead of observing the value
    given (Pyro's ``uncondition`` for that one site; training-only factors stay as they are)."""

    def _pyro_sample(self, msg) -> None:
        if msg["name"] == OBS_SITE and msg["is_observed"]:
            msg["is_observed"] = False
            msg["value"] = None
            msg["done"] = False


class PartialLatents:
    """A latent trajectory given only in part, for ``generate(z=...)``: z_t = ``values[:, t]`` +
    (1 - ``weight[:, t]``) * mu^p_t, where mu^p_t is the prior's mean at step t of the sequence
    being generated (its conditional prior given the decoded past). ``weight`` 1 gives z_t as is,
    0 fills the step with the prior's mean, and steps past ``values`` are the prior's mean.
    ``values``: (N, S, Z); ``weight``: (N, S). Latent interpolation mixes trajectories of different
    lengths with it (:func:`pyro_zforcing.evaluation.samples.interpolate`)."""

    def __init__(self, values: torch.Tensor, weight: torch.Tensor):
        if weight.shape != values.shape[:2]:
            raise ValueError(f"weight {tuple(weight.shape)} must be values' (N, S) {tuple(values.shape[:2])}")
        self.values, self.weight = values, weight.to(values.dtype)

    @property
    def shape(self) -> torch.Size:
        return self.values.shape

    def at(self, t: int, prior) -> torch.Tensor:
        """z_t ``(N, Z)`` given ``prior() -> (loc, scale)`` of step t."""
        loc, _ = prior()
        if t >= self.values.shape[1]:
            return loc
        return self.values[:, t] + (1 - self.weight[:, t, None]) * loc


class SequenceModel(nn.Module):
    """Base of the registered models: config, the input embedding e(.), and the guide->model memo.

    Calling a model on ``batch.unobserved()`` runs it under :class:`DrawObservations`.
    """

    name: str = ""
    latent_sites: Tuple[str, ...] = (LATENT_SITE,)
    guides: Tuple[str, ...] = ()
    side_modules: Dict[str, Tuple[str, ...]] = {}  # submodules outside p(y, z): see the module docstring
    # wraps the step loop of ``generate`` (``range(steps)`` -> an iterable of the same steps), e.g.
    # in a progress bar; set on an instance by whoever samples (``evaluation.samples``)
    step_progress: Optional[Callable[[range], Iterable[int]]] = None

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed = InputEmbedding(config.input_dim, config.emb_dim, tokens=config.emission == "categorical",
                                    kind=config.embedding)
        self._embedded = LastResult(self.embed.parameters)

    def __call__(self, batch: Batch, *args, **kwargs):
        if batch.observed:
            return super().__call__(batch, *args, **kwargs)
        with DrawObservations():
            return super().__call__(batch, *args, **kwargs)

    @property
    def default_guide(self) -> str:
        return self.guides[0]

    def generation_steps(self, steps: int) -> Iterable[int]:
        """The steps 0..steps-1 of ``generate``'s loop, through ``step_progress`` when set."""
        return range(steps) if self.step_progress is None else self.step_progress(range(steps))

    def forget(self) -> None:
        """Drop every remembered embedding and state: a new evaluation of the loss begins.

        A remembered value with grad history belongs to one autograd graph; reusing it in the
        next evaluation (the same batch twice without an update in between, as in gradient
        accumulation or an LBFGS closure) would backpropagate through a freed graph.
        """
        for value in vars(self).values():
            if isinstance(value, LastResult):
                value.clear()

    # ----- what a filtering guide reads: q(z_t | s_{t-1}, c_t) (SRNN overrides both) -----

    @property
    def state_dim(self) -> int:
        """Size of the state s_{t-1} every proposal head reads (h_{t-1} here)."""
        return self.config.rnn_dim

    @property
    def filtering_context_dim(self) -> int:
        return self.config.emb_dim

    def filtering_context(self, batch: Batch) -> torch.Tensor:
        """c_t = e(y_t) ``(B, T, E)``: what a guide without look-ahead sees besides s_{t-1}."""
        return self.embedded(batch)[1]

    def embedded(self, batch: Batch):
        """(e(u_{1:T}), e(y_{1:T})), each ``(B, T, E)``, for the inputs and targets of ``batch``;
        u_1 is ``batch.first`` when given, else the start frame or token, and u_{t+1} is y_t, or
        ``batch.inputs[:, t]`` when set (word dropout)."""
        return self._embeddings(batch)[:2]

    def fed_back(self, batch: Batch) -> torch.Tensor:
        """e(y_{1:T}) as a recurrence that reads each emitted y_t reads it back, ``(B, T, E)``: the
        targets' embedding, or ``batch.inputs``' under word dropout (VRNN's h_t reads phi_x(y_t))."""
        return self._embeddings(batch)[2]

    def _embeddings(self, batch: Batch):
        keys = inputs_of(batch)
        cached = self._embedded.get(*keys)
        if cached is None:
            targets = self.embed(batch.x)
            fed = targets if batch.inputs is None else self.embed(batch.inputs)
            if batch.first is None:
                first = self.embed.start(batch.batch_size, targets)
            else:
                first = self.embed(batch.first.unsqueeze(1))
            cached = (torch.cat([first, fed[:, :-1]], dim=1), targets, fed)
            self._embedded.put(cached, *keys)
        return cached

    @staticmethod
    def latent_at(t: int, z, prior) -> torch.Tensor:
        """z_t of a generated sequence: ``z[:, t]`` where given, else a draw from ``prior()`` = (loc, scale);
        ``z`` may be a :class:`PartialLatents`, which fills what it does not give with the prior's mean."""
        if isinstance(z, PartialLatents):
            return z.at(t, prior)
        if z is not None and t < z.shape[1]:
            return z[:, t]
        loc, scale = prior()
        return loc + scale * torch.randn_like(loc)

    @staticmethod
    def emit(emission: Emission, state: torch.Tensor, *, mean: bool, prime_t: Optional[torch.Tensor]):
        """(output, fed-back value) of one generated step: the prime if given, else
        ``emission.mean_and_mode(state)`` or a draw ``emission.sample(state)`` (twice)."""
        if prime_t is not None:
            return prime_t, prime_t
        if mean:
            return emission.mean_and_mode(state)
        y = emission.sample(state)
        return y, y


@torch.no_grad()
def generate_through_forward_rnn(model: SequenceModel, num: int, steps: int, prior, *,
                                 prime: Optional[torch.Tensor], z: Optional[torch.Tensor], mean: bool) -> torch.Tensor:
    """Ancestral samples ``(num, steps, ...)`` of a model whose state is ``model.fwd`` (h_t from u_t and z_t)
    and whose emission reads h_t (Z-Forcing, STORN): z_t from ``prior(h_{t-1}) -> (loc, scale)`` unless
    given in ``z``; ``prime``, ``z`` and ``mean`` as in :meth:`ZForcing.generate`."""
    param = next(model.parameters())
    state = model.fwd.initial(num, param)
    u = model.embed.start(num, param)[:, 0]
    outputs = []
    for t in model.generation_steps(steps):
        z_t = model.latent_at(t, z, lambda: prior(state[0]))
        state = model.fwd.recurrence(u[:, None]).advance(0, z_t, *state)
        prime_t = prime[:, t] if prime is not None and t < prime.shape[1] else None
        out_t, y_t = model.emit(model.emission, state[0], mean=mean, prime_t=prime_t)
        outputs.append(out_t)
        u = model.embed(y_t)
    return torch.stack(outputs, dim=1)
