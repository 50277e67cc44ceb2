"""The ``zforcing`` program: picks the command (``train`` when none is named), turns every
expected failure into one line on stderr and an exit code (2 bad input, 1 a run that failed,
130/143 a signal), and never shows a traceback for them.

    zforcing [train] [flags]        train (the default command; digits by default)
    zforcing compare [flags]        train and compare models
    zforcing --help                 the commands, and train's flags with their defaults
"""

from __future__ import annotations

import difflib
import sys
from typing import List, Optional

from ..checkpoint import CheckpointError
from ..data import DataError
from ..files import WriteError
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
        return HANDLERS[command](argv)
    except SystemExit as done:  # argparse: --help (0) or a bad flag (2, its one line already printed)
        return done.code if isinstance(done.code, int) else 2
    except (ValueError, DataError, CheckpointError, TrainingDiverged, FileNotFoundError, WriteError) as error:
        print(f"{PROG} {command}: error: {error}", file=sys.stderr)
        return 1 if isinstance(error, (TrainingDiverged, WriteError)) else 2
    except Interrupted as stop:
        print(f"{PROG} {command}: {stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print(f"{PROG} {command}: interrupted", file=sys.stderr)
        return 130
