"""Will it fit? Memory estimates checked before anything large is allocated.

A model too large for the machine (``--rnn-dim 10000000``), a sequence too long for its
activations, or a ``sample``/``evaluate`` size beyond memory (``-n``, ``--steps``, particles,
batch) must be refused with the estimate in the message, not handed to the allocator.
Parameters are counted exactly by building the networks on PyTorch's ``meta`` device (no
storage); activations are estimated from the batch, the longest sequence and the sizes.

What the process may use is the tightest of: the memory the kernel reports available, what the
process's own address-space and data limits leave (``RLIMIT_AS``/``RLIMIT_DATA``, as set by
``ulimit -v`` or ``prlimit --as``), and what its cgroup's limit leaves (``memory.max`` of cgroup
v2, ``memory.limit_in_bytes`` of v1, for the cgroup and every ancestor), reclaimable file cache
not counted as used.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path
from typing import List, Optional, Tuple

import torch

from .build import build_objective
from .config import LAYER_SIZES, ModelConfig
from .emissions import emission_head

# A size no tensor dimension reaches here (torch indexes with 64-bit integers; a weight matrix
# of 2^31 x 2^31 values is far beyond any machine)
MAX_DIMENSION = 2 ** 31
# Values kept per parameter while training: the parameter, its gradient and Adam's two moments.
TRAINING_COPIES = 4
# Saved values per sequence step of one training sequence, as a multiple of what a forward pass
# without gradients holds (LSTM cell gates and states, head activations saved for backward).
BACKWARD_FACTOR = 3


def available_bytes(device: Optional[torch.device] = None) -> int:
    """Memory the process may use (see :func:`memory_limit`)."""
    return memory_limit(device)[0]


def memory_limit(device: Optional[torch.device] = None) -> Tuple[int, str]:
    """(bytes the process may still use, what sets that bound): a CUDA device's total memory, else
    the tightest of available memory, the process's RLIMIT_AS/RLIMIT_DATA and its cgroup limits."""
    if device is not None and device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory, "the CUDA device's memory"
    bounds = [(system_available(), "available memory")]
    bounds += process_limits() + cgroup_limits()
    return min(bounds, key=lambda bound: bound[0])


def system_available() -> int:
    """MemAvailable of /proc/meminfo (physical pages where that is missing)."""
    meminfo = _key_values(Path("/proc/meminfo"))
    if "MemAvailable" in meminfo:
        return meminfo["MemAvailable"] * 1024
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def process_limits() -> List[Tuple[int, str]]:
    """What RLIMIT_AS and RLIMIT_DATA leave of the process's address space and data segment
    (their soft limits less VmSize and VmData of /proc/self/status)."""
    status = _key_values(Path("/proc/self/status"))
    bounds = []
    for limit, used, name in ((resource.RLIMIT_AS, "VmSize", "RLIMIT_AS"), (resource.RLIMIT_DATA, "VmData", "RLIMIT_DATA")):
        soft, _ = resource.getrlimit(limit)
        if soft != resource.RLIM_INFINITY and used in status:
            bounds.append((max(0, soft - status[used] * 1024), f"this process's address-space limit ({name})"))
    return bounds


def cgroup_limits(root: Path = Path("/sys/fs/cgroup"), membership: Path = Path("/proc/self/cgroup")
                  ) -> List[Tuple[int, str]]:
    """What the memory limit of the process's cgroup and of each ancestor leaves: ``memory.max`` less
    ``memory.current`` (v2) or ``memory.limit_in_bytes`` less ``memory.usage_in_bytes`` (v1), the
    inactive file cache (reclaimable) not counted as used."""
    try:
        lines = membership.read_text().splitlines()
    except OSError:
        return []
    bounds = []
    for line in lines:
        _, controllers, path = line.split(":", 2) if line.count(":") >= 2 else ("", "", "")
        if controllers == "":  # v2: 0::/path
            base, files, inactive = root, ("memory.max", "memory.current"), "inactive_file"
        elif "memory" in controllers.split(","):
            base, files, inactive = root / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes"), "total_inactive_file"
        else:
            continue
        folder = base / path.lstrip("/")
        while True:
            limit, used = (_number(folder / name) for name in files)
            if limit is not None and used is not None and limit < 2 ** 60:
                cache = _key_values(folder / "memory.stat", separator=" ").get(inactive, 0)
                bounds.append((max(0, limit - max(0, used - cache)), f"the memory limit of cgroup {folder}"))
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    return bounds


def _number(path: Path) -> Optional[int]:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def _key_values(path: Path, separator: str = ":") -> dict:
    """``KEY<separator> VALUE ...`` lines as {key: int(first word of value)}."""
    values = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return values
    for line in lines:
        key, _, rest = line.partition(separator)
        words = rest.split()
        if words and words[0].isdigit():
            values[key.strip()] = int(words[0])
    return values


def human(size: float) -> str:
    """Bytes as ``12.3 GB`` (powers of 1000)."""
    for unit in ("B", "kB", "MB", "GB", "TB", "PB"):
        if abs(size) < 1000 or unit == "PB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1000
    return f"{size:.1f} PB"


def inner_elements(model_config: ModelConfig) -> int:
    """Values one step of an autoregressive emission keeps for the backward pass (``Emission.inner_elements``)."""
    with torch.device("meta"):
        return emission_head(model_config, model_config.rnn_dim).inner_elements


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
    """Raise a one-line ValueError when ``needed`` bytes exceed what the process may use."""
    have, where = memory_limit(device)
    if needed > have:
        raise ValueError(f"{what} needs about {human(needed)}" + (f" ({detail})" if detail else "")
                         + f", more than the {human(have)} of {where}" + (f"; {hint}" if hint else ""))


# Particle-steps one evaluation may trace (K x the split's steps): 2,000 times TIMIT's test set
# (1,680 utterances of about 300 frames) at K = 1,000, i.e. days of computing on one machine.
MAX_TRACED_STEPS = 10 ** 12


def check_work(particle_steps: int, *, what: str, hint: str) -> None:
    """Refuse an evaluation that would trace more than :data:`MAX_TRACED_STEPS` particle-steps:
    memory is not its bound (particles stream in chunks), but it would not end."""
    if particle_steps > MAX_TRACED_STEPS:
        raise ValueError(f"{what} means tracing {particle_steps:.3g} particle-steps, more than the "
                         f"{MAX_TRACED_STEPS:.0e} one evaluation may take; {hint}")


def check_sampling_fits(model_config: ModelConfig, *, num: int, steps: int, step_size: int, flag: str,
                        dtype: torch.dtype = torch.float32, device: Optional[torch.device] = None) -> None:
    """Refuse generating ``num`` sequences of ``steps`` steps that cannot fit: the generated steps
    (kept, stacked and converted: 3 copies, plus a float64 copy of one sequence to write it) and
    the per-step states of the ``num`` sequences."""
    size = torch.empty((), dtype=dtype).element_size()
    outputs = 3 * num * steps * step_size * size + steps * step_size * 8
    states = num * values_per_step(model_config, step_size) * size
    check_fits(outputs + states, device=device, what=f"sampling {num} sequence(s) of {steps} steps",
               detail=f"{human(outputs)} of generated steps, {human(states)} of states",
               hint=f"reduce {flag}")


def training_bytes(model_config: ModelConfig, *, guide: str, batch_size: int, steps: int, step_size: int,
                   dtype: torch.dtype = torch.float32) -> Tuple[int, int]:
    """(bytes of the parameters with their gradients and Adam's moments, bytes of the activations of
    one batch of ``batch_size`` x ``steps``) of a training run."""
    for name in LAYER_SIZES + ("mixtures",):
        if getattr(model_config, name) >= MAX_DIMENSION:
            raise ValueError(f"{name} {getattr(model_config, name)} is beyond any tensor's size (2^31 per dimension)")
    size = torch.empty((), dtype=dtype).element_size()
    params = parameter_count(model_config, guide) * TRAINING_COPIES * size
    emission = model_config.input_dim * (2 if model_config.emission == "gaussian" else 1)
    per_step = BACKWARD_FACTOR * (values_per_step(model_config, step_size) + 2 * emission) + inner_elements(model_config)
    return params, batch_size * steps * per_step * size


def check_training_fits(model_config: ModelConfig, *, guide: str, batch_size: int, steps: int, step_size: int,
                        dtype: torch.dtype = torch.float32, device: Optional[torch.device] = None) -> None:
    """Refuse a training run whose parameters (with gradients and Adam's moments) plus the
    activations of one batch of ``batch_size`` x ``steps`` cannot fit (:func:`training_bytes`)."""
    params, activations = training_bytes(model_config, guide=guide, batch_size=batch_size, steps=steps,
                                         step_size=step_size, dtype=dtype)
    sizes = ", ".join(f"{name} {getattr(model_config, name)}" for name in ("emb_dim", "rnn_dim", "z_dim", "mlp_dim"))
    check_fits(params + activations, device=device, what=f"training with {sizes} and input size {model_config.input_dim}",
               detail=f"{human(params)} of parameters, gradients and Adam states, {human(activations)} of "
                      f"activations for a batch of {batch_size} x {steps} steps",
               hint="reduce the sizes, --batch-size or the sequence length")
