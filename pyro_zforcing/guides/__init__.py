"""Guides by name: ``GUIDES[name](model)`` returns a guide with the model's signature."""

from typing import Callable, Dict

from .backward import BackwardGuide
from .base import TrajectoryGuide
from .filtering import FilteringGuide
from .future_only import FutureOnlyGuide
from .prior import PriorGuide

GUIDES: Dict[str, Callable] = {
    "backward": BackwardGuide,
    "filtering": FilteringGuide,
    "future-only": FutureOnlyGuide,
    "prior": PriorGuide,
}


def make_guide(name: str, model) -> TrajectoryGuide:
    """The guide registered as ``name`` for ``model``; unknown names list the known ones."""
    if name not in GUIDES:
        raise ValueError(f"unknown guide {name!r}; known: {', '.join(sorted(GUIDES))}")
    return GUIDES[name](model)


__all__ = ["GUIDES", "TrajectoryGuide", "BackwardGuide", "FilteringGuide", "FutureOnlyGuide", "PriorGuide",
           "make_guide"]
