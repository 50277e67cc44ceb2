"""Pyro models by name: ``MODELS[name](config)``; ``ZForcing`` is the paper's model.

Each model class declares its latent sites (``latent_sites``), the guides that fit it
(``guides``, the default first); see :mod:`.base` for the contract.
"""

from typing import Dict

from ..config import ModelConfig
from .base import LATENT_SITE, OBS_SITE, TRAINING_ONLY_SITES, SequenceModel
from .dmm import DMM
from .rnn import RNN
from .srnn import SRNN
from .storn import STORN
from .vrnn import VRNN
from .zforcing import ZForcing

MODELS: Dict[str, type] = {"zforcing": ZForcing, "rnn": RNN, "vrnn": VRNN, "srnn": SRNN, "dmm": DMM, "storn": STORN}


def make_model(config: ModelConfig) -> SequenceModel:
    """The model ``config.model`` built from ``config``."""
    return MODELS[config.model](config)


def default_guide(model_name: str) -> str:
    """The guide a model trains with unless told otherwise."""
    if model_name not in MODELS:
        raise ValueError(f"unknown model {model_name!r}; known: {', '.join(MODELS)}")
    return MODELS[model_name].guides[0]


__all__ = ["MODELS", "make_model", "default_guide", "SequenceModel", "ZForcing", "RNN", "VRNN", "SRNN", "DMM", "STORN",
           "LATENT_SITE", "OBS_SITE", "TRAINING_ONLY_SITES"]
