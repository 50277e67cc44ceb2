"""Checkpoints: one self-contained file, written atomically, loaded with ``weights_only=True``.

A checkpoint holds the model and guide weights, the optimiser and LR-scheduler states, the
three config dataclasses, the dataset description (normalisation, vocabulary), the position
in training (epoch, step, step within the epoch), the best validation score, the RNG states
and the package version, so that ``--resume`` continues exactly where training stopped.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np
import torch

from . import __version__
from .config import DataConfig, ModelConfig, TrainConfig, from_dict, to_dict
from .data.base import DataInfo

FORMAT = 1


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
    """Write ``payload`` (plus format and version) to ``path`` via a temp file and a rename,
    so a crash mid-write never leaves a truncated checkpoint in place of a good one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {**payload, "format": FORMAT, "version": __version__}
    handle, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


# what a checkpoint saved before these ModelConfig fields existed was trained with
BEFORE_FIDELITY_FIELDS = {"emission_clamp": 8.0, "z_conditioning": "concat", "embedding": "leaky", "init": "torch"}


def load_checkpoint(path: Union[str, Path], *, map_location="cpu") -> Dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, with configs rebuilt as dataclasses."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for bad files
        raise CheckpointError(f"cannot read checkpoint {path}: {error}".splitlines()[0]) from error
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a pyro-zforcing checkpoint (format {FORMAT})")
    payload["model_config"] = from_dict(ModelConfig, {**BEFORE_FIDELITY_FIELDS, **payload["model_config"]})
    payload["data_config"] = from_dict(DataConfig, payload["data_config"])
    payload["train_config"] = from_dict(TrainConfig, payload["train_config"])
    payload["data_info"] = DataInfo.from_dict(payload["data_info"])
    return payload


def config_payload(model_config: ModelConfig, data_config: DataConfig, train_config: TrainConfig,
                   data_info: DataInfo) -> Dict[str, Any]:
    """The configs and data description as plain dicts, for a checkpoint or ``config.json``."""
    return {
        "model_config": to_dict(model_config),
        "data_config": to_dict(data_config),
        "train_config": to_dict(train_config),
        "data_info": data_info.to_dict(),
    }
