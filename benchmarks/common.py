"""What the benchmark scripts share: configs, synthetic batches, interleaved timing, memory.

Timing protocol: the contenders run in the same process, interleaved (A, B, A, B, ...), after
warm-up steps, and each is reported as the median of its repeats, so a background load that
comes and goes slows both alike. Peak memory is measured separately: on CUDA with
``torch.cuda.max_memory_allocated`` reset per contender; on CPU in a fresh subprocess per
contender, as the growth of the peak resident set size (reset through /proc/self/clear_refs)
over the resident size just before the measured calls.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch

from pyro_zforcing.data.base import Batch
from pyro_zforcing.build import resolve_device


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of one benchmark point: batch B, steps T, frame size D, LSTM size H (also the
    embedding and MLP sizes unless ``emb``/``mlp`` are given), latent Z."""

    name: str
    batch: int
    steps: int
    dim: int
    hidden: int
    z_dim: int
    emb: Optional[int] = None
    mlp: Optional[int] = None

    def model_sizes(self) -> Dict:
        return dict(input_dim=self.dim, emission="gaussian", emb_dim=self.emb or self.hidden, rnn_dim=self.hidden,
                    z_dim=self.z_dim, mlp_dim=self.mlp or self.hidden)


CONFIGS = {
    "small": BenchConfig("small", batch=16, steps=50, dim=28, hidden=128, z_dim=16),
    "large": BenchConfig("large", batch=32, steps=100, dim=200, hidden=512, z_dim=64),
}

# The TIMIT recipe's full sizes (presets/timit.toml: rnn 1024, z 256, emb 512, mlp 512, batch 32,
# 40-frame chunks of 200 samples); opt-in (``--config timit``), slow on a CPU.
# JSB Chorales at RNN-NADE's scale (88 keys, LSTM 150, batch 20, 100 steps: the test split's
# sequences are 61 steps on average, 160 at most); opt-in, for the emissions' cost (``--emission``).
RECIPE_CONFIGS = {"timit": BenchConfig("timit", batch=32, steps=40, dim=200, hidden=1024, z_dim=256, emb=512, mlp=512),
                  "jsb": BenchConfig("jsb", batch=20, steps=100, dim=88, hidden=150, z_dim=16)}


def synthetic_batch(config: BenchConfig, device: torch.device, *, seed: int = 0, binary: bool = False) -> Batch:
    """Standard-normal frames ``(B, T, D)`` (``binary``: each value 1 with probability 0.05, as
    JSB's 4 keys of 88), ragged: lengths spread over [T/2, T], the longest T."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(config.batch, config.steps, config.dim, generator=gen)
    if binary:
        x = (x > 1.645).to(x.dtype)
    lengths = torch.linspace(config.steps // 2, config.steps, config.batch).round().long()
    mask = torch.arange(config.steps)[None, :] < lengths[:, None]
    x = x * mask[..., None]
    return Batch(x, mask, lengths).to(device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(contenders: Dict[str, Callable[[], None]], *, warmup: int, repeats: int,
                      device: torch.device) -> Dict[str, List[float]]:
    """Seconds per call of each contender, called in turn ``repeats`` times after ``warmup`` rounds."""
    for _ in range(warmup):
        for fn in contenders.values():
            fn()
    synchronize(device)
    times: Dict[str, List[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, fn in contenders.items():
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def median_ms(seconds: List[float]) -> float:
    return round(1000 * statistics.median(seconds), 3)


def min_ms(seconds: List[float]) -> float:
    return round(1000 * min(seconds), 3)


def graphed_torch_step(module: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], *, lr: float, eps: float,
                       clip_norm: float, device: torch.device, warmup: int = 3) -> Callable[[], None]:
    """A plain-PyTorch training step (loss, backward, ``clip_grad_norm_``, Adam with ``capturable=True``)
    captured as one CUDA graph and replayed, as PyTorch's "whole network capture" recipe does:
    warm-up steps on a side stream, gradients allocated by the captured backward. ``torch.randn`` in
    ``loss_fn`` draws new numbers at every replay (the CUDA generator's graph-safe state)."""
    optimizer = torch.optim.Adam(module.parameters(), lr=torch.tensor(lr, device=device), eps=eps, capturable=True)

    def step():
        loss_fn().backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), clip_norm)
        optimizer.step()

    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            optimizer.zero_grad(set_to_none=True)
            step()
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)  # the captured backward allocates the gradients in the graph's pool
    with torch.cuda.graph(graph, stream=stream):
        step()
    return graph.replay


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(key + r":\s+(\d+)", f.read()).group(1))


def peak_memory_mb(fn: Callable[[], None], device: torch.device, *, calls: int = 2) -> float:
    """Extra memory at the peak of ``calls`` calls of ``fn``, after one untimed call.

    CUDA: allocated tensor memory. CPU: resident set growth (Linux), which needs a fresh
    process whose allocator returns freed memory to the system (see :func:`memory_in_subprocess`).
    """
    fn()
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        for _ in range(calls):
            fn()
        synchronize(device)
        return round((torch.cuda.max_memory_allocated(device) - before) / 2**20, 1)
    with open("/proc/self/clear_refs", "w") as f:  # resets the RSS high-water mark
        f.write("5")
    before = _status_kb("VmRSS")
    for _ in range(calls):
        fn()
    return round((_status_kb("VmHWM") - before) / 1024, 1)


def memory_in_subprocess(script: str, args: List[str]) -> Dict[str, float]:
    """Runs ``script ARGS`` in a fresh interpreter and reads its last JSON line.

    glibc is told to hand every freed block above 64 KiB back to the system at once, so the
    resident size follows the live tensors and its peak is the step's peak.
    """
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    out = subprocess.run([sys.executable, script, *args], check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def peak_memory_fields(script: str, calls: Dict[str, Callable[[], None]], device: torch.device,
                       child_args: List[str]) -> Dict[str, float]:
    """``{name}_peak_mb`` for every contender: in this process on CUDA, else one fresh
    ``script CHILD_ARGS --measure-memory NAME`` process each (see :func:`peak_memory_mb`)."""
    fields = {}
    for name, fn in calls.items():
        if device.type == "cuda":
            fields[f"{name}_peak_mb"] = peak_memory_mb(fn, device)
        else:
            fields[f"{name}_peak_mb"] = memory_in_subprocess(script, [*child_args, "--measure-memory", name])["peak_mb"]
    return fields


def device_and_threads(device_name: str, threads: int) -> torch.device:
    """The checked device; ``threads`` > 0 fixes torch's intra-op thread count (0 keeps the default)."""
    if threads > 0:
        torch.set_num_threads(threads)
    return resolve_device(device_name)


def environment(device: torch.device) -> Dict:
    """What the figures were measured on."""
    info = {"device": str(device), "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "torch": torch.__version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    import pyro
    info["pyro"] = pyro.__version__
    return info
