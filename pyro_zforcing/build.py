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
from .config import DEFAULT_KL, EMISSION_DATA, ModelConfig
from .data import SequenceSplits, load_dataset
from .data.base import DataInfo
from .guides import check_guide, is_guide_spec, make_guide
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
    from the dataset; an emission for the same kind of data may replace the dataset's
    (``config.EMISSION_DATA``: nade for binary frames; gmm, ar-gmm or ar-rnn for real-valued ones)."""
    emission = sizes.pop("emission", None) or info.emission
    if EMISSION_DATA[emission] != info.emission:
        fits = ", ".join(name for name, data in EMISSION_DATA.items() if data == info.emission)
        raise ValueError(f"--emission {emission} does not fit dataset {info.name!r} ({info.emission} data); "
                         f"its emissions: {fits}")
    return ModelConfig(input_dim=info.dim, emission=emission, **sizes)


def build_objective(model_config: ModelConfig, guide_name: Optional[str] = None, *, kl: str = DEFAULT_KL) -> Objective:
    """The model ``model_config.model``, the named guide (default: the model's), and the loss that
    trains both with the KL estimator ``kl`` (``TrainConfig.kl``). A user's guide class is checked
    against the guide contract (``check_guide``), unless the networks are built without storage
    (``meta``) to be counted."""
    model = make_model(model_config)
    name = guide_name or model.default_guide
    guide = make_guide(name, model)
    if is_guide_spec(name) and not next(model.parameters()).is_meta:
        check_guide(guide, model, name)
    return Objective(model, guide, kl=kl)


def allow_recorded_guide(recorded: str, *, named: Optional[str], trust: bool, source) -> str:
    """The guide to build for a checkpoint (``source``) trained with the guide ``recorded``.

    A checkpoint never brings in code: a user's class (``FILE.py:Class`` or ``module:Class``) is
    imported only when the user names it again (``named``, which must be the recorded guide, or
    the same class in a new place if the recorded file is gone) or trusts the checkpoint
    (``trust``). Anything else is a one-line ValueError saying which guide the checkpoint needs.
    """
    if named is None:
        if is_guide_spec(recorded) and not trust:
            raise ValueError(f"{source} was trained with the custom guide {recorded}: its code is imported only "
                             f"if you name it again with --guide {recorded} (or pass --trust-guide)")
        return recorded
    if named == recorded:
        return named
    moved = (is_guide_spec(recorded) and is_guide_spec(named) and recorded.partition(":")[0].endswith(".py")
             and recorded.rpartition(":")[2] == named.rpartition(":")[2]
             and not Path(recorded.rpartition(":")[0]).is_file())
    if moved:
        log.info("%s: its guide file %s is gone; using %s, as named", source, recorded.rpartition(":")[0], named)
        return named
    raise ValueError(f"--guide {named} is not the guide {source} was trained with ({recorded})")


def load_trained(checkpoint, *, device="cpu", data_dir: Optional[str] = None,
                 cache_dir: Optional[str] = None, need_data: bool = True, guide: Optional[str] = None,
                 trust_guide: bool = False):
    """(objective in eval mode, splits or None, checkpoint state) rebuilt from a checkpoint file.

    ``data_dir``/``cache_dir`` override where the data lives if it moved since training;
    ``guide``/``trust_guide``: see :func:`allow_recorded_guide`.
    """
    state = load_checkpoint(checkpoint)
    name = allow_recorded_guide(state["train_config"].guide, named=guide, trust=trust_guide, source=checkpoint)
    try:
        objective = build_objective(state["model_config"], name, kl=state["train_config"].kl)
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

