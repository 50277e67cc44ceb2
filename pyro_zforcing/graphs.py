"""CUDA graphs of the training update and of the bounds, captured once per shape bucket, replayed after.

On a GPU the z-driven loop is launch-bound: dozens of small kernels per time step, forward and
backward, each issued from Python through Pyro. A CUDA graph records the kernels of one call and
replays them with one launch; Python, Pyro's messengers and autograd run only while capturing.
A replay computes what an eager call would because of what holds here:

- Static shapes. A batch is padded to its bucket: lengths up to a multiple of ``length_bucket``
  steps (padded steps are masked out of every term, and every recurrence that reads the future
  reverses each sequence within its own length, so each sequence's terms are unchanged); the
  bounds also pad rows up to the evaluation batch size by repeating the first sequence (its
  results are dropped). One graph per (rows, bucket, which terms are on).
- Static addresses. Each graph reads its batch from its own input tensors (filled before a
  replay); the parameters, their gradients, Adam's state and the learning rate (a tensor, which
  ``ReduceLROnPlateau`` fills in place) keep their storage for the life of the run.
- Pyro's host side is shape-only. At capture Pyro builds its traces, names sites, applies plates
  and scales: all of it depends on shapes and on which factors are present, never on values. The
  KL, aux and backward-LM weights are 0-d tensors filled before each replay (a tensor weight is
  always applied, ``models.base.active``); a term switched on or off is a new graph.
- No host sync inside. ``Trace_ELBO.differentiable_loss`` reads the loss on the host
  (``torch_item``, its NaN warning): the captured step uses ``Objective.reparameterised_loss``,
  the same value and gradients for reparameterised guides, under either KL estimator (``--kl``). Clipping and Adam
  (``capturable=True``) stay on the device, and the trainer's finiteness check becomes
  :func:`guarded_update`: a non-finite loss or gradient norm puts the parameters and Adam's state
  back on the device (the update is skipped, never applied) and counts the step in device flags
  that the trainer reads at logging steps. Pyro's validation reads values and is refused.
- Noise. ``torch.randn`` inside a graph draws from the CUDA generator's graph-safe Philox state
  (PyTorch's note "CUDA Graph-safe RNG states", ``CUDAGeneratorImpl.h``): the graph reads the
  seed and offset from device memory that every replay refreshes, and each replay advances the
  generator's offset by the whole graph's draws. So each replay draws new numbers, and the
  sequence follows from the seed and the order of replays. Warm-up calls before a capture save and
  restore the generator's state, so they draw nothing the run would otherwise have drawn.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Callable, Dict, List, Optional, Tuple

import pyro
import torch

from .data.base import Batch
from .infer import Objective, Weights

log = logging.getLogger(__name__)


def bucket_steps(steps: int, bucket: int, *, longest: Optional[int] = None) -> int:
    """``steps`` rounded up to a multiple of ``bucket``, but never past ``longest`` (the longest
    sequence there is: fixed-length data, TIMIT's 40-frame chunks, keeps its length)."""
    rounded = -(-steps // bucket) * bucket
    return rounded if longest is None else max(steps, min(rounded, longest))


def padded(batch: Batch, *, steps: int, rows: Optional[int] = None) -> Batch:
    """``batch`` with ``steps`` steps (zero frames or token 0, mask False beyond each length) and,
    with ``rows``, that many rows, the first sequence repeated into the extra rows."""
    extra_steps = steps - batch.num_steps
    extra_rows = 0 if rows is None else rows - batch.batch_size
    if extra_steps < 0 or extra_rows < 0:
        raise ValueError(f"cannot pad a batch of {batch.batch_size} x {batch.num_steps} steps to "
                         f"{rows} x {steps}")
    x = torch.cat([batch.x, batch.x.new_zeros((batch.batch_size, extra_steps) + batch.x.shape[2:])], dim=1)
    mask = torch.cat([batch.mask, batch.mask.new_zeros((batch.batch_size, extra_steps))], dim=1)
    out = replace(batch, x=x, mask=mask)
    if extra_rows:
        def grow(t):
            return torch.cat([t, t[:1].expand((extra_rows,) + t.shape[1:])], dim=0)
        out = Batch(grow(out.x), grow(out.mask), grow(out.lengths), None if out.first is None else grow(out.first))
    return out


def fill(static: Batch, batch: Batch) -> None:
    """Copy ``batch`` (same shapes, on any device) into the graph's input tensors ``static``."""
    pinned = static.x.is_cuda and not batch.x.is_cuda
    for name in ("x", "mask", "lengths", "first"):
        source, target = getattr(batch, name), getattr(static, name)
        if source is not None:
            target.copy_(source.pin_memory() if pinned else source, non_blocking=pinned)


def adam_state(optimizer: torch.optim.Adam, params: List[torch.Tensor]) -> List[torch.Tensor]:
    """Adam's state tensors of ``params`` (step, exp_avg, exp_avg_sq[, max_exp_avg_sq]), created
    as Adam creates them at its first step (zeros) where missing, so that they exist before a capture."""
    tensors = []
    for group in optimizer.param_groups:
        on_device = group["capturable"] or group["fused"]
        for p in group["params"]:
            if not any(p is q for q in params):
                continue
            state = optimizer.state[p]
            if not state:
                state["step"] = (torch.zeros((), dtype=torch.float32, device=p.device) if on_device
                                 else torch.tensor(0.0, dtype=torch.float32))
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                if group["amsgrad"]:
                    state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            tensors.extend(value for value in state.values() if isinstance(value, torch.Tensor))
    return tensors


class UpdateFlags:
    """Device counters of the guarded updates: the next step's number, how many were skipped as
    non-finite, and the number of the first one (-1 for none). Read only by :meth:`first_skipped`."""

    def __init__(self, device: torch.device, *, next_step: int):
        self.next_step = torch.tensor(next_step, dtype=torch.long, device=device)
        self.skipped = torch.zeros((), dtype=torch.long, device=device)
        self.first = torch.full((), -1, dtype=torch.long, device=device)

    def record(self, finite: torch.Tensor) -> None:
        bad = ~finite
        self.first.copy_(torch.where((self.first < 0) & bad, self.next_step, self.first))
        self.skipped.add_(bad.long())
        self.next_step.add_(1)

    def tensors(self) -> List[torch.Tensor]:
        return [self.next_step, self.skipped, self.first]

    def first_skipped(self) -> Optional[Tuple[int, int]]:
        """(first skipped step, how many) or None; reads the device (a host sync)."""
        skipped = int(self.skipped)
        return None if skipped == 0 else (int(self.first), skipped)


def guarded_update(objective: Objective, optimizer: torch.optim.Adam, params: List[torch.Tensor],
                   batch: Batch, weights: Weights, *, clip_norm: float,
                   flags: UpdateFlags) -> Tuple[torch.Tensor, torch.Tensor]:
    """One training update without a host sync; returns (loss, gradient norm before clipping).

    The gradients of ``params`` (which must exist) are zeroed, the loss backpropagated, the
    global norm clipped to ``clip_norm`` and Adam stepped. Where the loss or the norm is not
    finite, the parameters and Adam's state are put back as they were (``torch.where`` on the
    device: the update is skipped, not applied) and ``flags`` counts the step.
    """
    torch._foreach_zero_([p.grad for p in params])
    loss = objective.reparameterised_loss(batch, weights)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_norm)
    finite = torch.isfinite(loss.detach() + grad_norm)
    state = params + adam_state(optimizer, params)
    kept = [t.detach().clone() for t in state]
    optimizer.step()
    with torch.no_grad():
        for t, before in zip(state, kept):
            t.copy_(torch.where(finite, t, before))
    flags.record(finite)
    return loss.detach(), grad_norm


def terms_on(weights: Weights) -> Tuple[bool, bool, bool]:
    """Which weighted terms change the loss: the KL weight when it is not 1, aux and backward-LM when > 0."""
    return weights.kl != 1.0, weights.aux > 0, weights.bwd > 0


def graph_weights(weights: Weights, device: torch.device, dtype: torch.dtype) -> Weights:
    """``weights`` with a 0-d tensor for every term that is on (filled before each replay); the
    terms that are off keep their neutral floats, so the captured model leaves them out."""
    values = [torch.tensor(float(w), dtype=dtype, device=device) if on else w
              for w, on in zip((weights.kl, weights.aux, weights.bwd), terms_on(weights))]
    return Weights(*values)


def set_weights(static: Weights, weights: Weights) -> None:
    for name in ("kl", "aux", "bwd"):
        value = getattr(static, name)
        if isinstance(value, torch.Tensor):
            value.fill_(float(getattr(weights, name)))


class CaptureFailed(ValueError):
    """A graph could not be captured; the message names the graph and the first line of the cause."""


def capture(body: Callable[[], object], *, stream: torch.cuda.Stream, what: str):
    """``(graph, outputs)``: ``body()`` warmed up once on ``stream`` (its effects are the caller's to
    undo; the CUDA generator's state is restored), then captured on the same stream, both with
    Pyro's validation off (it reads values on the host). ``body`` must start afresh each call:
    a memo that hit at capture would leave its computation out of the graph."""
    device = torch.cuda.current_device()
    rng = torch.cuda.get_rng_state(device)
    stream.wait_stream(torch.cuda.current_stream())
    try:
        with pyro.validation_enabled(False), torch.cuda.stream(stream):
            body()  # warm-up: cuBLAS/cuDNN handles and workspaces, autograd's lazy state
        torch.cuda.current_stream().wait_stream(stream)
        torch.cuda.synchronize()
        torch.cuda.set_rng_state(rng, device)
        graph = torch.cuda.CUDAGraph()
        with pyro.validation_enabled(False), torch.cuda.graph(graph, stream=stream):
            outputs = body()
    except RuntimeError as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CaptureFailed(f"--cuda-graphs: capturing {what} failed ({first}); run without --cuda-graphs") from error
    return graph, outputs


class Graphs:
    """What the graphs of one kind share: the length buckets (``length_bucket`` steps, capped at
    ``longest``), the device and dtype of their inputs, one side stream for warm-ups and captures,
    and the captured graphs by key."""

    def __init__(self, *, length_bucket: int, device: torch.device, dtype: torch.dtype, longest: Optional[int]):
        self.length_bucket = length_bucket
        self.longest = longest
        self.device = device
        self.dtype = dtype
        self.stream = torch.cuda.Stream(device)
        self._graphs: Dict[tuple, tuple] = {}

    @property
    def captured(self) -> int:
        return len(self._graphs)

    def steps_of(self, batch: Batch) -> int:
        """The bucket length ``batch`` is padded to."""
        return bucket_steps(batch.num_steps, self.length_bucket, longest=self.longest)


class GraphedUpdates(Graphs):
    """The trainer's update as CUDA graphs: :func:`guarded_update` captured once per (batch size,
    length bucket, terms on) and replayed for every batch of that key (see the module docstring)."""

    def __init__(self, objective: Objective, optimizer: torch.optim.Adam, *, clip_norm: float,
                 length_bucket: int, device: torch.device, dtype: torch.dtype, next_step: int,
                 longest: Optional[int] = None):
        for group in optimizer.param_groups:
            if not group["capturable"] or not isinstance(group["lr"], torch.Tensor):
                raise ValueError("--cuda-graphs needs Adam with capturable=True and a tensor learning rate")
        super().__init__(length_bucket=length_bucket, device=device, dtype=dtype, longest=longest)
        self.objective = objective
        self.optimizer = optimizer
        self.clip_norm = clip_norm
        self.flags = UpdateFlags(device, next_step=next_step)
        self.params = [p for p in objective.parameters() if p.requires_grad]
        self._grads: Dict[int, torch.Tensor] = {}  # one gradient tensor per parameter, for the whole run

    def __call__(self, batch: Batch, weights: Weights) -> Tuple[torch.Tensor, torch.Tensor]:
        """Replay the update of ``batch`` (on the host or the device); returns the graph's (loss,
        gradient norm) tensors, valid until the next replay of the same graph."""
        steps = self.steps_of(batch)
        key = (batch.batch_size, steps, batch.first is not None, terms_on(weights))
        if key not in self._graphs:
            self._graphs[key] = self._capture(key, padded(batch, steps=steps), weights)
        graph, static_batch, static_weights, outputs = self._graphs[key]
        fill(static_batch, padded(batch, steps=steps))
        set_weights(static_weights, weights)
        graph.replay()
        return outputs

    def _capture(self, key: tuple, batch: Batch, weights: Weights):
        start = time.perf_counter()
        static_batch = batch.to(self.device, self.dtype)
        static_weights = graph_weights(weights, self.device, self.dtype)
        params = self._reached_params(static_batch, static_weights)
        for p in self.params:  # Adam steps exactly the parameters this key's loss reaches, as eagerly
            p.grad = self._grads.setdefault(id(p), torch.zeros_like(p)) if any(p is q for q in params) else None
        state = params + adam_state(self.optimizer, params) + self.flags.tensors()
        saved = [t.detach().clone() for t in state]

        def body():
            return guarded_update(self.objective, self.optimizer, params, static_batch, static_weights,
                                  clip_norm=self.clip_norm, flags=self.flags)

        graph, outputs = capture(body, stream=self.stream, what=f"the training update of a {key[0]} x {key[1]} batch")
        with torch.no_grad():  # undo the warm-up update
            for t, before in zip(state, saved):
                t.copy_(before)
        log.info("CUDA graph: captured the training update of a %d x %d batch in %.1f s (%d graph(s))",
                 key[0], key[1], time.perf_counter() - start, len(self._graphs) + 1)
        return graph, static_batch, static_weights, outputs

    def _reached_params(self, batch: Batch, weights: Weights) -> List[torch.Tensor]:
        """The parameters the loss of this key reaches (one eager backward; the generator restored)."""
        rng = torch.cuda.get_rng_state(self.device)
        for p in self.params:
            p.grad = None
        with pyro.validation_enabled(False):
            self.objective.reparameterised_loss(batch, weights).backward()
        reached = [p for p in self.params if p.grad is not None]
        for p in self.params:
            p.grad = None
        torch.cuda.set_rng_state(rng, self.device)
        return reached


class GraphedBounds(Graphs):
    """``terms(batch, **options) -> {name: (B, ...) tensor}`` of ``model`` without gradients as CUDA
    graphs, one per (length bucket, whether the batch has given first inputs, ``options``): each
    batch is padded to ``rows`` rows and its bucket, the terms of its own rows returned (copies)."""

    def __init__(self, terms: Callable[..., Dict[str, torch.Tensor]], *, model, rows: int, length_bucket: int,
                 device: torch.device, dtype: torch.dtype, longest: Optional[int] = None):
        super().__init__(length_bucket=length_bucket, device=device, dtype=dtype, longest=longest)
        self.terms = terms
        self.model = model
        self.rows = rows

    @torch.no_grad()
    def __call__(self, batch: Batch, **options) -> Dict[str, torch.Tensor]:
        if batch.batch_size > self.rows:
            raise ValueError(f"a batch of {batch.batch_size} rows does not fit graphs of {self.rows} rows")
        steps = self.steps_of(batch)
        key = (steps, batch.first is not None, tuple(sorted(options.items())))
        full = padded(batch, steps=steps, rows=self.rows)
        if key not in self._graphs:
            static = full.to(self.device, self.dtype)

            def body():
                if hasattr(self.model, "forget"):
                    self.model.forget()  # the guide->model memo must not hit between warm-up and capture
                return self.terms(static, **options)

            graph, outputs = capture(body, stream=self.stream, what=f"the bounds of a {self.rows} x {steps} batch")
            self._graphs[key] = (graph, static, outputs)
            log.info("CUDA graph: captured the bounds of a %d x %d batch (%d graph(s))", self.rows, steps,
                     len(self._graphs))
        graph, static, outputs = self._graphs[key]
        fill(static, full)
        graph.replay()
        return {name: value[:batch.batch_size].clone() for name, value in outputs.items()}
