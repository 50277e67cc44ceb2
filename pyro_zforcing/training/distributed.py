"""Several processes, one model: ``torchrun`` + ``DistributedDataParallel``.

    torchrun --nproc_per_node 2 run.py --device cpu ...          # gloo, 2 CPU processes
    torchrun --nproc_per_node 4 run.py --device cuda ...         # nccl, rank r on cuda:LOCAL_RANK
    torchrun --nnodes 2 --node_rank N --master_addr HOST --nproc_per_node 8 run.py --device cuda ...

``torchrun`` sets RANK, WORLD_SIZE, LOCAL_RANK (and the rendezvous address); :func:`from_env`
reads them and joins the process group, gloo on CPU and nccl on CUDA. The training loss is the
:class:`~pyro_zforcing.infer.Objective` (model and guide as submodules), wrapped whole in DDP,
so every parameter's gradient is averaged across ranks during ``backward``; the loss is a mean
per sequence of each rank's shard, so with equal shards the averaged gradient is the gradient
of the mean over the global batch (tests/test_distributed.py checks this exactly).

Pyro's parameter store plays no part: the networks are plain ``nn.Module`` s held by the
Objective, and nothing calls ``pyro.param`` or ``pyro.module``, which is what
``pyro.settings.set(module_local_params=True)`` achieves for ``PyroModule`` s (DESIGN.md).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Dict, Optional

import torch
import torch.distributed as dist
import torch.nn as nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProcessGroup:
    """This process's place in the job: global ``rank`` of ``world_size``, ``local_rank`` on its host."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = ProcessGroup()


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def from_env(device_name: str) -> ProcessGroup:
    """Join the process group torchrun describes (a single process outside torchrun).

    With ``--device cuda``/``auto`` each rank takes ``cuda:LOCAL_RANK``; a fixed ``cuda:N``
    would put every rank on one GPU and is refused.
    """
    if not launched_by_torchrun():
        return SINGLE
    try:
        group = ProcessGroup(rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]),
                             local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    except ValueError:
        raise ValueError("torchrun environment: RANK, WORLD_SIZE and LOCAL_RANK must be integers, got "
                         f"{os.environ.get('RANK')!r}, {os.environ.get('WORLD_SIZE')!r}, "
                         f"{os.environ.get('LOCAL_RANK')!r}") from None
    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        if ":" in device_name and group.world_size > 1:
            raise ValueError(f"--device {device_name}: under torchrun use --device cuda; "
                             "rank r takes cuda:LOCAL_RANK")
        torch.cuda.set_device(group.local_rank)
    if group.world_size > 1 and not dist.is_initialized():
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend=backend)
        log.info("rank %d of %d joined the %s process group", group.rank, group.world_size, backend)
    return group


def shutdown(*, peers_finished: bool) -> None:
    """Leave the process group. After a run every rank finished (``peers_finished``), the ranks
    first meet at a barrier, so none tears its connections down while rank 0 still writes its
    checkpoints; after an error on one rank they may never arrive, and the group is left at once."""
    if not dist.is_initialized():
        return
    if peers_finished and dist.get_world_size() > 1:
        dist.barrier()
    dist.destroy_process_group()


def wrap(objective: nn.Module, device: torch.device) -> nn.Module:
    """The Objective inside DDP: call the wrapper for the loss, never the submodules directly.

    ``find_unused_parameters`` is on because a factor switched off (aux or backward weight 0)
    leaves its head without a gradient in that step.
    """
    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(objective, device_ids=device_ids, find_unused_parameters=True)


def all_reduce_weighted(values: Dict[str, float], weights: Dict[str, float],
                        device: Optional[torch.device] = None) -> Dict[str, float]:
    """``sum_r w_r v_r / sum_r w_r`` across ranks for every key (one all-reduce; identity alone).

    A per-sequence mean is weighted by the rank's sequence count, a per-unit figure by its units.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return dict(values)
    keys = sorted(values)
    flat = [values[k] * weights[k] for k in keys] + [weights[k] for k in keys]
    packed = torch.tensor(flat, dtype=torch.float64, device=device)
    dist.all_reduce(packed)
    n = len(keys)
    reduced = {k: float(packed[i] / packed[n + i]) for i, k in enumerate(keys)}
    return {k: reduced[k] for k in values}


def max_across_ranks(value: int, *, device: Optional[torch.device] = None) -> int:
    """The largest ``value`` of any rank (e.g. a signal one rank received); identity alone."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    packed = torch.tensor([value], dtype=torch.int64, device=device)
    dist.all_reduce(packed, op=dist.ReduceOp.MAX)
    return int(packed.item())


def from_main(value):
    """Rank 0's ``value`` on every rank (e.g. a timestamped run directory); identity alone."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
