"""Pyro models. ``ZForcing`` is the paper's model."""

from .zforcing import LATENT_SITE, OBS_SITE, TRAINING_ONLY_SITES, ZForcing

__all__ = ["ZForcing", "LATENT_SITE", "OBS_SITE", "TRAINING_ONLY_SITES"]
