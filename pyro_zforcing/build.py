"""The one factory: models, guides and objectives from configs, and trained ones from checkpoints.

The trainer, the evaluation commands, the studies and the benchmarks build through here, so a
checkpoint's configs rebuild exactly the objective that was trained.
"""

from __future__ import annotations

import logging
import random
from dataclasses import replace
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .checkpoint import load_checkpoint, load_weights
from .config import ModelConfig
from .data import SequenceSplits, load_dataset
from .data.base import DataInfo
from .guides import make_guide
from .infer import Objective
from .models import make_model

log = logging.getLogger(__name__)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch at once."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when available) as a checked device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device: unknown device {name!r} (use cpu, cuda, cuda:N or auto)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s)")
    elif device.type != "cpu":
        raise ValueError(f"--device: unsupported device {name!r} (use cpu, cuda, cuda:N or auto)")
    return device


def model_config_for(info: DataInfo, **sizes) -> ModelConfig:
    """A :class:`ModelConfig` whose input size, and emission unless ``emission`` is given, come
    from the dataset; ``gmm`` may replace the ``gaussian`` emission of real-valued frames."""
    emission = sizes.pop("emission", None) or info.emission
    if emission != info.emission and not (info.emission == "gaussian" and emission == "gmm"):
        raise ValueError(f"--emission {emission} does not fit dataset {info.name!r} ({info.emission} data); "
                         "gmm can replace gaussian for real-valued frames")
    return ModelConfig(input_dim=info.dim, emission=emission, **sizes)


def build_objective(model_config: ModelConfig, guide_name: Optional[str] = None, *, kl: str = "sampled") -> Objective:
    """The model ``model_config.model``, the named guide (default: the model's), and the loss that
    trains both with the KL estimator ``kl`` (``TrainConfig.kl``)."""
    model = make_model(model_config)
    return Objective(model, make_guide(guide_name or model.default_guide, model), kl=kl)


def load_trained(checkpoint, *, device="cpu", data_dir: Optional[str] = None,
                 cache_dir: Optional[str] = None, need_data: bool = True):
    """(objective in eval mode, splits or None, checkpoint state) rebuilt from a checkpoint file.

    ``data_dir``/``cache_dir`` override where the data lives if it moved since training.
    """
    state = load_checkpoint(checkpoint)
    try:
        objective = build_objective(state["model_config"], state["train_config"].guide, kl=state["train_config"].kl)
    except ValueError as error:  # a user's guide file recorded at training time may have moved
        raise ValueError(f"{checkpoint}: {error}") from None
    load_weights(objective, state["objective"], checkpoint)
    objective.to(resolve_device(device) if isinstance(device, str) else device).eval()
    data_config = state["data_config"]
    if data_dir is not None:
        data_config = replace(data_config, data_dir=data_dir)
    if cache_dir is not None:
        data_config = replace(data_config, cache_dir=cache_dir)
    splits: Optional[SequenceSplits] = load_dataset(data_config) if need_data else None
    if splits is not None:
        check_same_data(state["data_info"], splits.info, checkpoint)
    return objective, splits, state


def check_same_data(trained: DataInfo, loaded: DataInfo, checkpoint) -> None:
    """The data read now must be what the model was trained on (size, emission, normalisation)."""
    for key in ("emission", "dim", "units_per_step"):
        if getattr(trained, key) != getattr(loaded, key):
            raise ValueError(f"{checkpoint}: the model was trained with {key}={getattr(trained, key)!r} "
                             f"but the data read now has {key}={getattr(loaded, key)!r}")
    for key in ("mean", "std"):  # one number (speech) or one per dimension (arrays)
        a, b = getattr(trained, key), getattr(loaded, key)
        if a is not None and b is not None and (np.shape(a) != np.shape(b) or not np.allclose(a, b, rtol=1e-4, atol=0)):
            log.warning("%s: training normalisation %s=%s differs from the data read now (%s)", checkpoint, key, a, b)


def run_dir_of(checkpoint) -> Path:
    """The run directory a checkpoint belongs to (``RUN/checkpoints/x.pt`` -> ``RUN``)."""
    path = Path(checkpoint).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent

