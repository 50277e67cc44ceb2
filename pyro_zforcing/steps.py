"""One step of a z-driven loop as a pure function of tensors, and the one wrapper that compiles it.

Every latent model whose recurrence depends on the sampled z (Z-Forcing's forward LSTM, the
VRNN's LSTM, SRNN's z_{t-1} -> z_t chain) samples a trajectory with the same loop,

    (loc_t, scale_t) = head(s_{t-1}, c_t),   z_t = loc_t + scale_t * eps_t,
    carry_t = advance(z_t, carry_{t-1}),      s_t = carry_t[0],

the cell :func:`latent_step`. The model supplies ``advance`` and ``carry_0`` as a
:class:`Recurrence`, the head its per-step part as a :class:`StepFunction`: functions of
explicit tensors (the weights and the z-independent share of every step, computed once per
trajectory) that close over no tensor of a batch, so one compiled cell serves every batch.
:func:`sample_loop` runs the loop; inside :func:`compiled_steps` the cell is compiled with
``torch.compile`` (inductor), K = :data:`STEPS_PER_CALL` steps unrolled per compiled call
(:func:`latent_steps`): a chunk's shapes do not depend on the sequence length, and the batch
dimension is marked dynamic, so a configuration compiles one graph with gradients (training) and
one without (evaluation), whatever the lengths and batch sizes of its batches. Step 0, whose carry
is a constant zero state (compiling it would add a graph for inputs that need no gradient), and the
last (T - 1) mod K steps run eagerly.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import time
import warnings
from typing import Callable, Iterator, List, NamedTuple, Optional, Tuple

import torch

log = logging.getLogger(__name__)


class StepFunction(NamedTuple):
    """``fn(*shared, *(x[:, t] for x in per_step), *args)``: step t of a loop over a sequence.

    ``shared`` holds what is the same at every step (weights, their folded products, modules);
    ``per_step`` the ``(B, T, ...)`` sequences computed once for all steps (the z-independent
    share of each step), sliced at t by the loop. ``fn`` reads nothing else that changes between
    batches (no closure over a batch's tensors), so a compiled ``fn`` is reused, not retraced.
    """

    fn: Callable
    shared: tuple = ()
    per_step: tuple = ()

    def __call__(self, t: int, *args):
        """Step t computed directly (generation, one step at a time)."""
        return self.fn(*self.shared, *(x[:, t] for x in self.per_step), *args)


class Recurrence(NamedTuple):
    """The z-driven state of a model: ``advance(*shared, *inputs_t, z_t, *carry) -> carry`` and
    ``initial`` = carry_0, each ``(B, ...)``; ``carry[0]`` is the state the proposal heads read."""

    advance: StepFunction
    initial: Tuple[torch.Tensor, ...]


def latest_latent(z_t: torch.Tensor, z_prev: torch.Tensor) -> Tuple[torch.Tensor]:
    """The advance of a model whose state is the previous latent (SRNN, DMM): carry_t = (z_t,)."""
    return (z_t,)


def call_with_context(head: Callable, context_t: torch.Tensor, state: torch.Tensor):
    """``head(state, context_t)``: the step of a head without a hoisted form."""
    return head(state, context_t)


def call_alone(head: Callable, state: torch.Tensor):
    """``head(state)``: the step of a head that reads only the state (a conditional prior)."""
    return head(state)


def head_step(head: Callable, context: Optional[torch.Tensor]) -> StepFunction:
    """The per-step form of a proposal head ``head(s_{t-1}[, c_t]) -> (loc, scale)`` with the
    per-step context ``context: (B, T, C)`` or None: the head's own ``stepwise(context)`` where it
    has one (its context share hoisted out of the loop), else the head called at every step."""
    if context is None:
        return StepFunction(call_alone, shared=(head,))
    if hasattr(head, "stepwise"):
        return head.stepwise(context)
    return StepFunction(call_with_context, shared=(head,), per_step=(context,))


def paired(first: StepFunction, second: StepFunction, combine: Callable) -> StepFunction:
    """The head whose step is ``combine(first's step, second's step)``, both reading the same state."""
    counts = (len(first.shared), len(second.shared), len(first.per_step))
    return StepFunction(_paired_step, shared=(first.fn, second.fn, combine, *counts, *first.shared, *second.shared),
                        per_step=first.per_step + second.per_step)


def _paired_step(first_fn, second_fn, combine, n_first, n_second, m_first, *args):
    state, args = args[-1], args[:-1]
    shared_first, shared_second = args[:n_first], args[n_first:n_first + n_second]
    steps = args[n_first + n_second:]
    return combine(first_fn(*shared_first, *steps[:m_first], state),
                   second_fn(*shared_second, *steps[m_first:], state))


def latent_step(head_fn: Callable, head_args: tuple, advance_fn: Callable, advance_args: tuple,
                eps_t: torch.Tensor, carry: tuple):
    """One step of the loop: ``(z_t, loc_t, scale_t, carry_t)`` from ``carry_{t-1}`` and the noise
    ``eps_t: (B, Z)``. The unit :func:`torch.compile` compiles (see the module docstring)."""
    loc, scale = head_fn(*head_args, carry[0])
    z_t = loc + scale * eps_t
    return z_t, loc, scale, advance_fn(*advance_args, z_t, *carry)


class CompileUnavailable(ValueError):
    """``--compile`` cannot work on this platform, or compiling failed: the message says why."""


#: Steps per compiled call: a call's fixed cost (guards, autograd bookkeeping: ~0.1 ms on a CPU
#: core) is paid once per chunk, and compile time grows with the chunk (one unrolled graph of K steps).
STEPS_PER_CALL = 8

_compiled_cell: Optional[Callable] = None
_enabled = False
_steps_per_call = STEPS_PER_CALL
_compile_seconds: List[float] = []


def compiler_missing(device_type: str) -> Optional[str]:
    """What torch.compile's inductor backend lacks on ``device_type`` (``cpu``/``cuda``), or None:
    a C++ compiler for CPU kernels, Triton for CUDA kernels."""
    if device_type == "cuda":
        from torch.utils._triton import has_triton
        return None if has_triton() else "Triton (pip install triton) for its CUDA kernels"
    compiler = os.environ.get("CXX", "clang++" if sys.platform == "darwin" else "g++")  # as inductor picks it
    if shutil.which(compiler) is None:
        return f"a C++ compiler for its CPU kernels ({compiler!r} not found: install g++ or set CXX)"
    return None


def check_compile_available(device: torch.device) -> None:
    """Raise :class:`CompileUnavailable` naming what is missing for ``--compile`` on ``device``."""
    missing = compiler_missing(device.type)
    if missing is not None:
        raise CompileUnavailable(f"--compile: torch.compile needs {missing}; run without --compile")


@contextlib.contextmanager
def compiled_steps(enabled: bool = True, *, steps_per_call: Optional[int] = None) -> Iterator[None]:
    """Within this block every :func:`sample_loop` runs its cell compiled (``enabled``), in chunks of
    ``steps_per_call`` steps per compiled call (default :data:`STEPS_PER_CALL`), or eagerly."""
    global _enabled, _steps_per_call
    steps_per_call = STEPS_PER_CALL if steps_per_call is None else steps_per_call
    if steps_per_call < 1:
        raise ValueError(f"steps_per_call must be >= 1, got {steps_per_call}")
    previous = _enabled, _steps_per_call
    _enabled, _steps_per_call = enabled, steps_per_call
    try:
        yield
    finally:
        _enabled, _steps_per_call = previous


def compile_seconds() -> List[float]:
    """Wall time of every call that compiled a new graph of the cell, in order (process-wide)."""
    return list(_compile_seconds)


def _cell() -> Callable:
    global _compiled_cell
    if _compiled_cell is None:
        # dynamic=False: sizes are static (fast kernels) except the batch dimension marked below
        _compiled_cell = torch.compile(latent_steps, dynamic=False, fullgraph=True)
    return _compiled_cell


def _mark_batch_dynamic(tensors) -> None:
    for value in tensors:
        if isinstance(value, torch.Tensor):
            torch._dynamo.maybe_mark_dynamic(value, 0)


def _compiled_call(cell: Callable, head_fn, *args):
    """The compiled cell, the time of any new graph logged once, a failure made one line."""
    from torch._dynamo.utils import counters

    graphs = counters["stats"]["unique_graphs"]
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():  # torch's own warnings while it traces and compiles are not the user's
            warnings.filterwarnings("ignore", module=r"torch(\.|$)")
            warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor that is not a leaf")
            out = cell(head_fn, *args)
    except Exception as error:  # dynamo's and inductor's failures have many types
        if not isinstance(error, torch._dynamo.exc.TorchDynamoException) and "inductor" not in type(error).__module__:
            raise
        cause = getattr(error, "inner_exception", None) or error  # what the backend raised
        lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
        raise CompileUnavailable(f"--compile: torch.compile failed on the per-step cell ({type(cause).__name__}: "
                                 f"{lines[0] if lines else 'no message'}); run without --compile") from error
    if counters["stats"]["unique_graphs"] > graphs:
        seconds = time.perf_counter() - start
        _compile_seconds.append(seconds)
        names = " + ".join(getattr(fn, "__qualname__", type(fn).__name__) for fn in (head_fn, args[2]))
        log.info("torch.compile: per-step cell (%s) compiled in %.1f s, %s", names, seconds,
                 "with gradients" if torch.is_grad_enabled() else "without gradients")
    return out


def latent_steps(head_fn: Callable, head_shared: tuple, head_inputs: tuple, advance_fn: Callable,
                 advance_shared: tuple, advance_inputs: tuple, eps: torch.Tensor, carry: tuple):
    """:func:`latent_step` over the K steps of ``eps: (B, K, Z)``, the per-step inputs ``(B, K, ...)``:
    returns z, loc, scale ``(B, K, Z)``, the states carry[0] of the K steps ``(B, K, S)`` and the
    last carry. Slices come from one ``unbind`` per input: ``x[:, t]`` in a loop would make autograd
    fill a full-size zero gradient at every step (O(K^2) work)."""
    head_columns = [x.unbind(1) for x in head_inputs]
    advance_columns = [x.unbind(1) for x in advance_inputs]
    zs, locs, scales, states = [], [], [], []
    for t, eps_t in enumerate(eps.unbind(1)):
        z_t, loc, scale, carry = latent_step(head_fn, head_shared + tuple(column[t] for column in head_columns),
                                             advance_fn, advance_shared + tuple(column[t] for column in advance_columns),
                                             eps_t, carry)
        zs.append(z_t)
        locs.append(loc)
        scales.append(scale)
        states.append(carry[0])
    return torch.stack(zs, 1), torch.stack(locs, 1), torch.stack(scales, 1), torch.stack(states, 1), carry


def sample_loop(head: StepFunction, recurrence: Recurrence, eps: torch.Tensor):
    """Run the loop over ``eps: (B, T, Z)``: returns z, loc, scale ``(B, T, Z)`` and the states
    s_{0:T} = carry[0] of every step ``(B, T+1, S)``.

    Eagerly, all T steps are one :func:`latent_steps`. Compiled, step 0 (its carry a constant zero
    state) and the last (T - 1) mod K steps run eagerly and the steps between in chunks of K
    (:data:`STEPS_PER_CALL`) through one compiled graph: every chunk has the same shapes whatever
    the length, and a call's fixed cost is paid once per K steps.
    """
    advance = recurrence.advance
    steps = eps.shape[1]
    if not _enabled or steps <= _steps_per_call:
        z, loc, scale, states, _ = latent_steps(head.fn, head.shared, head.per_step, advance.fn, advance.shared,
                                                advance.per_step, eps, recurrence.initial)
        return z, loc, scale, torch.cat([recurrence.initial[0][:, None], states], 1)
    chunks, rest = divmod(steps - 1, _steps_per_call)
    sizes = [1] + [_steps_per_call] * chunks + ([rest] if rest else [])
    head_parts = list(zip(*(x.split(sizes, 1) for x in head.per_step))) or [()] * len(sizes)
    advance_parts = list(zip(*(x.split(sizes, 1) for x in advance.per_step))) or [()] * len(sizes)
    carry = recurrence.initial
    outputs = [[], [], [], [carry[0][:, None]]]
    cell = _cell()
    for i, (eps_part, head_part, advance_part) in enumerate(zip(eps.split(sizes, 1), head_parts, advance_parts)):
        args = (head.fn, head.shared, head_part, advance.fn, advance.shared, advance_part, eps_part, carry)
        if eps_part.shape[1] != _steps_per_call or i == 0:
            *out, carry = latent_steps(*args)
        elif i == 1:  # where a graph is compiled, if any: the batch dimension marked dynamic
            _mark_batch_dynamic(head_part + advance_part + (eps_part,) + tuple(carry))
            *out, carry = _compiled_call(cell, *args)
        else:  # inputs like the first chunk's: the same graph, no compile to watch for
            *out, carry = cell(*args)
        for collected, part in zip(outputs, out):
            collected.append(part)
    return tuple(torch.cat(parts, 1) for parts in outputs)
