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
    except Exception as error:  # the user's file: any error it raises while importing
        raise ValueError(f"--guide {spec}: cannot import {source}: {type(error).__name__}: {error}") from None
    cls = getattr(module, name, None)
    if not callable(cls):
        raise ValueError(f"--guide {spec}: {source} defines no class {name}")
    return cls


def make_guide(name: str, model):
    """The guide registered as ``name`` (one the model lists as fitting), or the user's class
    ``FILE.py:Class`` / ``module:Class``, built for ``model``; unknown names list the known ones."""
    if is_guide_spec(name):
        guide = load_guide_class(name)(model)
        if not callable(guide):
            raise ValueError(f"--guide {name}: {type(guide).__name__}(model) is not callable like the model")
        return guide
    if name not in GUIDES:
        raise ValueError(f"unknown guide {name!r}; known: {', '.join(sorted(GUIDES))}, "
                         "or path/to/file.py:ClassName, or module:ClassName")
    fitting = type(model).guides
    if name not in fitting:
        raise ValueError(f"--guide {name} does not fit --model {type(model).name}; "
                         f"its guides: {', '.join(fitting)}")
    return GUIDES[name](model)


__all__ = ["GUIDES", "TrajectoryGuide", "BackwardGuide", "ExactGuide", "FilteringGuide", "FutureOnlyGuide",
           "PriorGuide", "SmoothingGuide", "PlainSmoothingGuide", "CombinerGuide", "RecognitionGuide", "make_guide", "load_guide_class", "is_guide_spec"]
