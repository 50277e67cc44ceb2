"""The guide of a model without latent variables: it proposes nothing.

With no latent site the ELBO has no KL term and no sampling: it is the exact log-likelihood
log p(y), and so is every IWAE bound (all K importance weights are equal).
"""

from __future__ import annotations

import torch.nn as nn

from ..data.base import Batch


class ExactGuide(nn.Module):
    """q over no latent sites; holds the model without owning its parameters."""

    def __init__(self, model):
        super().__init__()
        self._model = (model,)

    @property
    def model(self):
        return self._model[0]

    def forward(self, batch: Batch, **weights) -> None:
        return None
