"""What every guide shares: the model it proposes for, held without owning its parameters."""

from __future__ import annotations

from typing import Tuple

import pyro
import torch
import torch.nn as nn

from ..data.base import Batch
from ..distributions import LatentTrajectory
from ..models.base import LATENT_SITE, SequenceModel


class TrajectoryGuide(nn.Module):
    """A guide q(z_{1:T} | y) with the model's signature and its one latent site ``"z"``.

    Subclasses build the proposal in :meth:`proposal`; the model is referenced, not
    registered as a submodule, so its parameters are counted and saved once, with the model.
    ``model_modules`` names the model's ``side_modules`` the proposal reads (Z-Forcing's
    backward LSTM): with the guide's own parameters they are the inference network.
    """

    model_modules: Tuple[str, ...] = ()

    def __init__(self, model: SequenceModel):
        super().__init__()
        self._model = (model,)

    @property
    def model(self) -> SequenceModel:
        return self._model[0]

    def proposal(self, batch: Batch) -> LatentTrajectory:
        raise NotImplementedError

    def forward(self, batch: Batch, **weights) -> torch.Tensor:
        """Samples z ~ q(z | y); ``weights`` (aux/bwd) are the model's and are ignored here."""
        with pyro.plate("sequences", batch.batch_size):
            return pyro.sample(LATENT_SITE, self.proposal(batch))
