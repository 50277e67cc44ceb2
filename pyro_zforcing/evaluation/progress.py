"""Progress a user sees with or without a terminal: tqdm's bar on a TTY, else a line at a steady interval.

Output sent to a file or a pipe gets no bar (tqdm's redraws would fill it); :class:`ProgressLines`
logs instead, every ``every`` seconds (and once at the end), one line with the count done of the
total, the rate and the time left, e.g.

    train: 1,200/3,260 updates (36.8%), 4.10 updates/s, 8 min 22 s left; epoch 8/20, loss 71.3

:func:`progress` picks one of the two; both take ``update(n)``, ``set_postfix(**values)`` and
``close()``. ``--quiet`` turns both off.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable, Optional

from tqdm.auto import tqdm

log = logging.getLogger(__name__)

EVERY_S = 30.0  # seconds between two progress lines in a log that is not a terminal


def duration_text(seconds: float) -> str:
    """``45 s``, ``8 min 22 s``, ``3 h 05 min``: a time left, to the second below an hour."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


class ProgressLines:
    """A progress bar's interface that logs one line per ``every`` seconds (default
    :data:`EVERY_S`; module docstring).

    ``clock`` (``time.monotonic``) is the time source; the rate counts the updates of this
    process only (``initial`` of them were done before it started)."""

    def __init__(self, what: str, total: int, *, unit: str, initial: int = 0, every: Optional[float] = None,
                 clock: Callable[[], float] = time.monotonic, logger: Optional[logging.Logger] = None):
        self.what, self.total, self.unit = what, int(total), unit
        self.every = float(EVERY_S if every is None else every)
        self.done = self.initial = int(initial)
        self.clock = clock
        self.logger = logger or log
        self.started = self.last = clock()
        self.postfix = ""
        self.closed = False

    def set_postfix(self, **values) -> None:
        self.postfix = ", ".join(f"{key} {value}" for key, value in values.items())

    def update(self, n: int = 1) -> None:
        self.done += n
        now = self.clock()
        if now - self.last >= self.every:
            self.last = now
            self.logger.info("%s", self.line(now))

    def line(self, now: Optional[float] = None) -> str:
        """The progress line at time ``now``."""
        now = self.clock() if now is None else now
        elapsed = now - self.started
        share = f" ({100.0 * self.done / self.total:.1f}%)" if self.total else ""
        text = f"{self.what}: {self.done:,}/{self.total:,} {self.unit}s{share}"
        ran = self.done - self.initial
        if elapsed > 0 and ran > 0:
            rate = ran / elapsed
            text += f", {rate:.2f} {self.unit}s/s, {duration_text(max(0, self.total - self.done) / rate)} left"
        return text + (f"; {self.postfix}" if self.postfix else "")

    def close(self) -> None:
        """A last line, if any progress was made since the last one."""
        if not self.closed and self.done > self.initial and self.clock() - self.started >= self.every:
            self.logger.info("%s", self.line())
        self.closed = True


def progress(total: int, *, desc: str, unit: str, initial: int = 0, quiet: bool = False):
    """tqdm's bar on a terminal (stderr a TTY), else :class:`ProgressLines`; off with ``quiet``."""
    if sys.stderr.isatty() or quiet:
        return tqdm(total=total, initial=initial, unit=unit, desc=desc, disable=quiet, dynamic_ncols=True)
    return ProgressLines(desc, total, unit=unit, initial=initial)
