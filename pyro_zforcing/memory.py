"""Will it fit? Memory estimates checked before anything large is allocated.

A model too large for the machine (``--rnn-dim 10000000``) or a sequence too long for its
activations must be refused with the estimate in the message, not handed to the allocator.
Parameters are counted exactly by building the networks on PyTorch's ``meta`` device (no
storage); activations are estimated from the batch, the longest sequence and the sizes.
"""

from __future__ import annotations

import os
from typing import Optional

import torch

from .build import build_objective
from .config import ModelConfig

# Values kept per parameter while training: the parameter, its gradient and Adam's two moments.
TRAINING_COPIES = 4
# Saved values per sequence step of one training sequence, as a multiple of what a forward pass
# without gradients holds (LSTM cell gates and states, head activations saved for backward).
BACKWARD_FACTOR = 3


def available_bytes(device: Optional[torch.device] = None) -> int:
    """Memory the process may use: a CUDA device's total memory, else MemAvailable of
    /proc/meminfo (physical pages where that is missing)."""
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def human(size: float) -> str:
    """Bytes as ``12.3 GB`` (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(size) < 1000 or unit == "PB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1000
    return f"{size:.1f} PB"


def parameter_count(model_config: ModelConfig, guide: str) -> int:
    """Parameters of the model and guide (counted once), built without storage on ``meta``."""
    with torch.device("meta"):
        objective = build_objective(model_config, guide)
    return sum(p.numel() for p in objective.parameters())


def values_per_step(model_config: ModelConfig, step_size: int) -> int:
    """About how many values tracing one sequence step keeps alive without gradients: the
    forward LSTM's input gates (4H), backward, forward and stacked states (3H), input and target
    embeddings (2E), the posterior's context share (M), z, loc and scale listed and stacked (6Z)
    and the input step itself."""
    c = model_config
    return 7 * c.rnn_dim + 2 * c.emb_dim + c.mlp_dim + 6 * c.z_dim + step_size


def check_fits(needed: int, *, what: str, detail: str = "", hint: str = "",
               device: Optional[torch.device] = None) -> None:
    """Raise a one-line ValueError when ``needed`` bytes exceed what the device has."""
    have = available_bytes(device)
    if needed > have:
        where = "the CUDA device's memory" if device is not None and device.type == "cuda" else "available memory"
        raise ValueError(f"{what} needs about {human(needed)}" + (f" ({detail})" if detail else "")
                         + f", more than the {human(have)} of {where}" + (f"; {hint}" if hint else ""))


def check_training_fits(model_config: ModelConfig, *, guide: str, batch_size: int, steps: int, step_size: int,
                        dtype: torch.dtype = torch.float32, device: Optional[torch.device] = None) -> None:
    """Refuse a training run whose parameters (with gradients and Adam's moments) plus the
    activations of one batch of ``batch_size`` x ``steps`` cannot fit."""
    size = torch.empty((), dtype=dtype).element_size()
    params = parameter_count(model_config, guide) * TRAINING_COPIES * size
    emission = model_config.input_dim * (2 if model_config.emission == "gaussian" else 1)
    per_step = BACKWARD_FACTOR * (values_per_step(model_config, step_size) + 2 * emission)
    activations = batch_size * steps * per_step * size
    sizes = ", ".join(f"{name} {getattr(model_config, name)}" for name in ("emb_dim", "rnn_dim", "z_dim", "mlp_dim"))
    check_fits(params + activations, device=device, what=f"training with {sizes} and input size {model_config.input_dim}",
               detail=f"{human(params)} of parameters, gradients and Adam states, {human(activations)} of "
                      f"activations for a batch of {batch_size} x {steps} steps",
               hint="reduce the sizes, --batch-size or the sequence length")
