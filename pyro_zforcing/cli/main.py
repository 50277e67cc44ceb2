"""The ``zforcing`` program: picks the command (``train`` when none is named), turns every
expected failure into one line on stderr and an exit code (2 bad input, 1 a run that failed or
ran out of memory, 130/143 a signal: SIGINT and SIGTERM stop every command with one line), and
never shows a traceback for them.

    zforcing [train] [flags]        train (the default command; digits by default)
    zforcing compare [flags]        train and compare models
    zforcing --help                 the commands, and train's flags with their defaults
"""

from __future__ import annotations

import difflib
import signal
import sys
import threading
from contextlib import contextmanager
from typing import Iterator, List, Optional

from ..checkpoint import CheckpointError
from ..data import DataError
from ..files import WriteError
from ..studies.launch import RunsFailed
from ..training.interrupt import Interrupted
from ..training.trainer import TrainingDiverged
from .common import COMMANDS, PROG
from .evaluate import command_evaluate
from .plot import command_plot
from .sample import command_sample
from .study import command_ablate, command_compare
from .train import command_train

HANDLERS = {"train": command_train, "ablate": command_ablate, "compare": command_compare, "evaluate": command_evaluate,
            "sample": command_sample, "plot": command_plot}


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command of ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-") and argv[0] not in HANDLERS:
        nearest = difflib.get_close_matches(argv[0], list(HANDLERS), n=1)
        guess = f"; did you mean {nearest[0]!r}?" if nearest else ""
        print(f"{PROG}: error: unknown command {argv[0]!r}{guess} (commands: {', '.join(COMMANDS)}; "
              f"see {PROG} --help)", file=sys.stderr)
        return 2
    command = argv.pop(0) if argv and argv[0] in HANDLERS else "train"
    try:
        with stopped_by_signals():
            return HANDLERS[command](argv)
    except SystemExit as done:  # argparse: --help (0) or a bad flag (2, its one line already printed)
        return done.code if isinstance(done.code, int) else 2
    except (ValueError, DataError, CheckpointError, TrainingDiverged, FileNotFoundError, WriteError, RunsFailed) as error:
        lines = str(error).strip().splitlines() or [type(error).__name__]
        print(f"{PROG} {command}: error: {lines[0]}", file=sys.stderr)  # one line, whatever raised it
        return 1 if isinstance(error, (TrainingDiverged, WriteError, RunsFailed)) else 2
    except Interrupted as stop:
        print(f"{PROG} {command}: {stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print(f"{PROG} {command}: stopped by SIGINT before it finished; every file it wrote is complete",
              file=sys.stderr)
        return 130
    except MemoryError:
        print(f"{PROG} {command}: error: out of memory (a size beyond what the memory estimate foresaw); "
              "reduce the sizes or the batch", file=sys.stderr)
        return 1
    except RuntimeError as error:
        if not out_of_memory(error):
            raise
        print(f"{PROG} {command}: error: out of memory: {str(error).splitlines()[0][:200]}", file=sys.stderr)
        return 1


def out_of_memory(error: RuntimeError) -> bool:
    """Whether torch's allocator refused (CPU: "can't allocate memory"; CUDA: OutOfMemoryError)."""
    import torch

    return isinstance(error, torch.OutOfMemoryError) or "can't allocate memory" in str(error)


@contextmanager
def stopped_by_signals() -> Iterator[None]:
    """While a command runs, SIGTERM raises :class:`Interrupted` (exit 143 with one line) instead of
    killing the process silently, and SIGINT raises ``KeyboardInterrupt`` (exit 130) even where the
    parent started us with it ignored; training catches both first and stops at its next safe point."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_stopped),
                signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


def _raise_stopped(signum, frame):
    raise Interrupted("stopped by SIGTERM before it finished; every file it wrote is complete", signum)
