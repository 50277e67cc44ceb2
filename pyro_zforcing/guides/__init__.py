"""Guides by name: ``GUIDES[name](model)`` returns a guide with the model's signature.

Which guides fit which model is declared by the model (``type(model).guides``);
:func:`make_guide` refuses a registered guide the model does not list.

A guide is any ``nn.Module`` with the model's signature whose only sample site is ``"z"``.
Besides the registry names, ``make_guide`` accepts a user's class as ``path/to/file.py:Class``
or ``package.module:Class`` (constructed as ``Class(model)``); that text is what the config
records, so a checkpoint rebuilds its guide from it.
"""

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Callable, Dict

import pyro
import pyro.poutine as poutine
from pyro.poutine.util import site_is_subsample
import torch
import torch.nn as nn

from ..config import EMISSION_DATA
from ..data.base import Batch

from .backward import BackwardGuide
from .base import TrajectoryGuide
from .combiner import CombinerGuide
from .exact import ExactGuide
from .filtering import FilteringGuide
from .future_only import FutureOnlyGuide
from .prior import PriorGuide
from .recognition import RecognitionGuide
from .smoothing import PlainSmoothingGuide, SmoothingGuide

GUIDES: Dict[str, Callable] = {
    "backward": BackwardGuide,
    "filtering": FilteringGuide,
    "future-only": FutureOnlyGuide,
    "prior": PriorGuide,
    "exact": ExactGuide,
    "smoothing": SmoothingGuide,
    "smoothing-plain": PlainSmoothingGuide,
    "combiner": CombinerGuide,
    "recognition": RecognitionGuide,
}


def is_guide_spec(name: str) -> bool:
    """Whether ``name`` names a user's guide class (``FILE.py:Class`` or ``module:Class``)."""
    return ":" in name


def load_guide_class(spec: str) -> Callable:
    """The class ``spec`` names: ``path/to/file.py:Class`` or ``package.module:Class``."""
    source, _, name = spec.rpartition(":")
    if not source or not name.isidentifier():
        raise ValueError(f"--guide {spec}: expected path/to/file.py:ClassName or module:ClassName")
    try:
        if source.endswith(".py"):
            path = Path(source)
            if not path.is_file():
                raise ValueError(f"--guide {spec}: file {path} not found (moved? give its new place with --guide)")
            module_name = "pyro_zforcing_user_guide_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
            module = sys.modules.get(module_name)
            if module is None:
                loader_spec = importlib.util.spec_from_file_location(module_name, path)
                module = importlib.util.module_from_spec(loader_spec)
                sys.modules[module_name] = module
                try:
                    loader_spec.loader.exec_module(module)
                except BaseException:
                    del sys.modules[module_name]
                    raise
        else:
            module = importlib.import_module(source)
    except ValueError:
        raise
    except SystemExit as error:  # a guide file that exits would end the run silently
        raise ValueError(f"--guide {spec}: importing {source} exits the program (sys.exit({error.code!r})); "
                         "a guide file must only define classes") from None
    except Exception as error:  # the user's file: any error it raises while importing
        raise ValueError(f"--guide {spec}: cannot import {source}: {described(error)}") from None
    cls = getattr(module, name, None)
    if not callable(cls):
        raise ValueError(f"--guide {spec}: {source} defines no class {name}")
    return cls


def described(error: BaseException) -> str:
    """``Type: first line of the message`` (Pyro appends the trace's shapes on further lines)."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


def make_guide(name: str, model):
    """The guide registered as ``name`` (one the model lists as fitting), or the user's class
    ``FILE.py:Class`` / ``module:Class``, built for ``model``; unknown names list the known ones."""
    if is_guide_spec(name):
        cls = load_guide_class(name)
        try:
            guide = cls(model)
        except (Exception, SystemExit) as error:
            raise ValueError(f"--guide {name}: {name.rpartition(':')[2]}(model) failed: "
                             f"{described(error)}") from None
        if not isinstance(guide, nn.Module):
            raise ValueError(f"--guide {name}: {type(guide).__name__}(model) is not a torch.nn.Module "
                             "(a guide must be one, so its parameters are trained and saved)")
        return guide
    if name not in GUIDES:
        raise ValueError(f"unknown guide {name!r}; known: {', '.join(sorted(GUIDES))}, "
                         "or path/to/file.py:ClassName, or module:ClassName")
    fitting = type(model).guides
    if name not in fitting:
        raise ValueError(f"--guide {name} does not fit --model {type(model).name}; "
                         f"its guides: {', '.join(fitting)}")
    return GUIDES[name](model)


def contract_batch(model, *, batch_size: int = 2, steps: int = 3) -> Batch:
    """A small ragged batch of the model's data kind (lengths ``steps`` and ``steps - 1``), made up
    from its config: tokens for a categorical emission, binary frames for Bernoulli, else Gaussian."""
    config = model.config
    dtype = next(model.parameters()).dtype
    generator = torch.Generator().manual_seed(0)
    data = EMISSION_DATA[config.emission]
    if data == "categorical":
        x = torch.randint(0, config.input_dim, (batch_size, steps), generator=generator)
    elif data == "bernoulli":
        x = torch.randint(0, 2, (batch_size, steps, config.input_dim), generator=generator).to(dtype)
    else:
        x = torch.randn(batch_size, steps, config.input_dim, generator=generator, dtype=dtype)
    lengths = torch.tensor([steps] + [max(1, steps - 1)] * (batch_size - 1))
    mask = torch.arange(steps)[None] < lengths[:, None]
    x = x * mask.reshape(mask.shape + (1,) * (x.dim() - 2)).to(x.dtype)
    return Batch(x, mask, lengths, None)


def check_guide(guide, model, name: str) -> None:
    """The guide contract, from one trace of a small batch: an ``nn.Module`` whose sample sites are
    the model's latent sites, each with the model's shape and per-sequence ``log_prob`` ``(B,)``.
    Each violation is a one-line ValueError naming the guide (``name``) and the site."""
    if not isinstance(guide, nn.Module):
        raise ValueError(f"--guide {name}: {type(guide).__name__} is not a torch.nn.Module")
    batch = contract_batch(model)
    wanted = list(model.latent_sites)
    try:
        _check_traces(guide, model, name, batch, wanted)
    finally:
        model.forget()  # nothing the check computed is remembered for a later batch


def _check_traces(guide, model, name: str, batch: Batch, wanted) -> None:
    with torch.random.fork_rng(), torch.no_grad(), pyro.validation_enabled(False):
        try:
            guide_trace = poutine.trace(guide).get_trace(batch, aux_weight=0.0, bwd_weight=0.0)
        except (Exception, SystemExit) as error:
            raise ValueError(f"--guide {name}: calling it on a batch failed: {described(error)}") from None
        samples = {site: node for site, node in guide_trace.nodes.items()
                   if node["type"] == "sample" and not site_is_subsample(node)}  # plates are not sites
        sites = {site: node for site, node in samples.items() if not node["is_observed"]}
        observed = [site for site, node in samples.items() if node["is_observed"]]
        known = ", ".join(repr(s) for s in wanted) or "none"
        for site in list(sites) + observed:
            if site not in wanted:
                raise ValueError(f"--guide {name}: samples site {site!r}, which is not a latent site of the "
                                 f"{model.name} model (its latent sites: {known})")
        for site in wanted:
            if site not in sites:
                raise ValueError(f"--guide {name}: samples no site {site!r}; the {model.name} model's latent "
                                 f"sites ({known}) must each be sampled by the guide")
        if not wanted:
            return
        prior_trace = poutine.trace(model).get_trace(batch, aux_weight=0.0, bwd_weight=0.0)
        guide_trace.compute_log_prob()
        prior_trace.compute_log_prob()
        for site in wanted:
            ours, theirs = sites[site], prior_trace.nodes[site]
            if tuple(ours["value"].shape) != tuple(theirs["value"].shape):
                raise ValueError(f"--guide {name}: site {site!r} has shape {tuple(ours['value'].shape)} for a batch "
                                 f"of {batch.batch_size} x {batch.x.shape[1]} steps, but the model's has "
                                 f"{tuple(theirs['value'].shape)}")
            if tuple(ours["log_prob"].shape) != tuple(theirs["log_prob"].shape):
                raise ValueError(f"--guide {name}: site {site!r} has a log-density of shape "
                                 f"{tuple(ours['log_prob'].shape)}, the model's has {tuple(theirs['log_prob'].shape)} "
                                 "(one per sequence: declare the steps and latent dimensions as event dimensions, "
                                 ".to_event(2))")
        try:
            poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(batch, aux_weight=0.0, bwd_weight=0.0)
        except Exception as error:
            raise ValueError(f"--guide {name}: the {model.name} model cannot score the guide's sites: "
                             f"{described(error)}") from None


__all__ = ["GUIDES", "TrajectoryGuide", "BackwardGuide", "ExactGuide", "FilteringGuide", "FutureOnlyGuide",
           "PriorGuide", "SmoothingGuide", "PlainSmoothingGuide", "CombinerGuide", "RecognitionGuide", "make_guide",
           "load_guide_class", "is_guide_spec", "check_guide", "contract_batch"]
