"""SIGINT and SIGTERM as requests to stop at the next safe point (the end of an update).

Inside :class:`StopRequests` the first SIGINT (Ctrl-C) or SIGTERM (what cluster schedulers
send before pre-emption) only records itself; the training loop asks :meth:`requested`
after every update, saves an exact checkpoint and raises :class:`Interrupted`. A second
SIGINT quits at once (``KeyboardInterrupt``), without saving.
"""

from __future__ import annotations

import logging
import signal
import threading
from typing import Optional

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """Stopped on a signal; ``exit_code`` is 128 + the signal number.

    A stop request, not an error: like ``KeyboardInterrupt`` it derives from ``BaseException``,
    so that an ``except Exception`` which rewords failures (an unreadable checkpoint, a damaged
    data file) cannot turn a signal that arrived inside it into that failure.
    """

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class SignalCatcher:
    """Context manager: routes SIGINT/SIGTERM to ``_record(signum, frame)`` while inside (main
    thread only; elsewhere a no-op) and restores the previous handlers on exit."""

    def __init__(self):
        self._previous = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def _record(self, signum, frame) -> None:
        raise NotImplementedError


class StopRequests(SignalCatcher):
    """Catches SIGINT/SIGTERM as a request to stop after the current update."""

    def __init__(self):
        super().__init__()
        self.signum: Optional[int] = None

    def _record(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        if self.signum is None:
            self.signum = signum
            log.warning("%s received: saving a checkpoint after this update (Ctrl-C again quits without saving)",
                        signal.Signals(signum).name)

    def requested(self) -> Optional[int]:
        """The signal received so far, or None."""
        return self.signum
