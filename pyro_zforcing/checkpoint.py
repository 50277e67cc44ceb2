"""Checkpoints: one self-contained file, written atomically, loaded with ``weights_only=True``.

A checkpoint holds the model and guide weights, the optimiser and LR-scheduler states, the
three config dataclasses, the dataset description (normalisation, vocabulary), the position
in training (epoch, step, step within the epoch), the best validation score, the RNG states
and the package version, so that ``--resume`` continues exactly where training stopped.
"""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np
import torch

from . import __version__
from .config import DataConfig, ModelConfig, TrainConfig, from_dict, to_dict
from .data.base import DataInfo
from .files import write_atomic

FORMAT = 1
REQUIRED = ("model_config", "data_config", "train_config", "data_info", "objective")


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable or not one of ours: the message names the file."""


def rng_state() -> Dict[str, Any]:
    """The torch, numpy and Python RNG states in a ``weights_only``-loadable form."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    numpy = state["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached"]))
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))


def save_checkpoint(path: Union[str, Path], payload: Dict[str, Any]) -> None:
    """Write ``payload`` (plus format and version) to ``path`` atomically (:func:`write_atomic`),
    so a crash mid-write never leaves a truncated checkpoint in place of a good one."""
    buffer = io.BytesIO()
    torch.save({**payload, "format": FORMAT, "version": __version__}, buffer)
    write_atomic(path, buffer.getvalue())


def checkpoint_file(path: Union[str, Path]) -> Path:
    """``path`` itself, or for a run directory its ``checkpoints/best.pt``."""
    path = Path(path)
    if not path.is_dir():
        return path
    for candidate in (path / "checkpoints" / "best.pt", path / "best.pt"):
        if candidate.is_file():
            return candidate
    raise CheckpointError(f"{path} is a directory without checkpoints/best.pt; give a run directory "
                          "or a checkpoint file")


# what a checkpoint saved before these ModelConfig fields existed was trained with
BEFORE_FIDELITY_FIELDS = {"emission_clamp": 8.0, "z_conditioning": "concat", "embedding": "leaky", "init": "torch"}
# what a checkpoint saved before these TrainConfig fields existed was trained with
TRAIN_BEFORE_FIELDS = {"kl": "sampled"}


def load_checkpoint(path: Union[str, Path], *, map_location="cpu") -> Dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, with configs rebuilt as dataclasses.

    ``path`` may be a run directory (its ``checkpoints/best.pt``). Every failure is a one-line
    :class:`CheckpointError` naming the file.
    """
    path = checkpoint_file(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (a write was interrupted?)")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for bad files; its advice is not ours to give
        raise CheckpointError(f"{path} is not a pyro-zforcing checkpoint or is corrupt "
                              "(torch cannot read it)") from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pyro-zforcing checkpoint (format {FORMAT})")
    missing = [key for key in REQUIRED if key not in payload]
    if missing:
        raise CheckpointError(f"{path} is not a complete pyro-zforcing checkpoint: no {missing[0]!r} entry")
    try:
        payload["model_config"] = from_dict(ModelConfig, {**BEFORE_FIDELITY_FIELDS, **payload["model_config"]})
        payload["data_config"] = from_dict(DataConfig, payload["data_config"])
        payload["train_config"] = from_dict(TrainConfig, {**TRAIN_BEFORE_FIELDS, **payload["train_config"]})
        payload["data_info"] = DataInfo.from_dict(payload["data_info"])
    except (TypeError, ValueError, KeyError) as error:
        raise CheckpointError(f"{path}: its configs do not fit this version of pyro-zforcing "
                              f"({str(error).splitlines()[0] if str(error) else type(error).__name__})") from None
    return payload


def load_weights(module: torch.nn.Module, state: Dict[str, torch.Tensor], path: Union[str, Path]) -> None:
    """``module.load_state_dict(state)``, failing with the file and the first mismatching key."""
    expected = module.state_dict()
    for key, value in expected.items():
        if key not in state:
            raise CheckpointError(f"{path}: weight {key!r} is missing from the checkpoint")
        if tuple(state[key].shape) != tuple(value.shape):
            raise CheckpointError(f"{path}: weight {key!r} has shape {tuple(state[key].shape)} in the checkpoint "
                                  f"but {tuple(value.shape)} in the model its config builds")
    unexpected = [key for key in state if key not in expected]
    if unexpected:
        raise CheckpointError(f"{path}: weight {unexpected[0]!r} in the checkpoint has no place in the model")
    module.load_state_dict(state)


def config_payload(model_config: ModelConfig, data_config: DataConfig, train_config: TrainConfig,
                   data_info: DataInfo) -> Dict[str, Any]:
    """The configs and data description as plain dicts, for a checkpoint or ``config.json``."""
    return {
        "model_config": to_dict(model_config),
        "data_config": to_dict(data_config),
        "train_config": to_dict(train_config),
        "data_info": data_info.to_dict(),
    }
