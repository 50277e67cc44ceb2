"""Guides by name: ``GUIDES[name](model)`` returns a guide with the model's signature.

Which guides fit which model is declared by the model (``type(model).guides``);
:func:`make_guide` refuses a guide the model does not list.
"""

from typing import Callable, Dict

from .backward import BackwardGuide
from .base import TrajectoryGuide
from .exact import ExactGuide
from .filtering import FilteringGuide
from .future_only import FutureOnlyGuide
from .prior import PriorGuide
from .smoothing import PlainSmoothingGuide, SmoothingGuide

GUIDES: Dict[str, Callable] = {
    "backward": BackwardGuide,
    "filtering": FilteringGuide,
    "future-only": FutureOnlyGuide,
    "prior": PriorGuide,
    "exact": ExactGuide,
    "smoothing": SmoothingGuide,
    "smoothing-plain": PlainSmoothingGuide,
}


def make_guide(name: str, model) -> TrajectoryGuide:
    """The guide registered as ``name`` for ``model``; unknown or unfitting names list the fitting ones."""
    if name not in GUIDES:
        raise ValueError(f"unknown guide {name!r}; known: {', '.join(sorted(GUIDES))}")
    fitting = type(model).guides
    if name not in fitting:
        raise ValueError(f"--guide {name} does not fit --model {type(model).name}; "
                         f"its guides: {', '.join(fitting)}")
    return GUIDES[name](model)


__all__ = ["GUIDES", "TrajectoryGuide", "BackwardGuide", "ExactGuide", "FilteringGuide", "FutureOnlyGuide",
           "PriorGuide", "SmoothingGuide", "PlainSmoothingGuide", "make_guide"]
