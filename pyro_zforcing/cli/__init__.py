"""The command line: ``zforcing``, ``python -m pyro_zforcing`` and ``python run.py`` are this program.

:func:`run` is its entry point: a SIGINT or SIGTERM while the program starts (importing torch
takes seconds) ends it with one line and exit code 130 or 143, as it does any command later on
(:func:`.main.main`).
"""

import os
import signal
import sys


def run() -> None:
    """Start the program: the start-up signal handlers, then the command of ``sys.argv``."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _stopped_while_starting)
    from .main import main

    sys.exit(main())


def _stopped_while_starting(signum, frame) -> None:
    sys.stderr.write(f"zforcing: stopped by {signal.Signals(signum).name} while starting; nothing was written\n")
    sys.stderr.flush()
    os._exit(128 + signum)  # nothing of ours is open yet
