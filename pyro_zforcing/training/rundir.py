"""A run directory belongs to one run, written by one live process at a time.

``RUN/.lock`` holds an exclusive ``fcntl.flock`` of the writing process (rank 0 under
torchrun) with its pid in the file. A second writer is refused with that pid; after a crash
(even ``kill -9``) the kernel has released the lock, so the file left behind is stale and the
next writer simply takes it. A new run goes only into a missing or empty directory; with
``overwrite`` the files of ours from the old run are first moved aside (one rename each) and
deleted, while files that are not ours stay.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from pathlib import Path
from typing import List, Optional

from ..files import SET_ASIDE, TEMPORARY, remove_orphans

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
# what a run (train, evaluate, sample, plot, ablate) writes into its directory
OURS = ("config.json", "metrics.jsonl", "checkpoints", "samples", "tensorboard", "result.json",
        "eval.json", "eval.md", "eval-*.json", "eval-*.md", "learning_curves.png", "kl_per_step*.png",
        "iwae_gap_vs_kl*.png")


class RunDirError(ValueError):
    """The run directory cannot be used as asked; the message names it and says what to do."""


class RunLock:
    """An exclusive lock on ``RUN/.lock``, held until :meth:`release` or the process ends."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: Optional[int] = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "RunLock":
        if self.held:
            return self
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise RunDirError(f"run directory {self.run_dir} is not writable: {error.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise RunDirError(f"run directory {self.run_dir} is in use by process {holder} "
                              f"(lock {self.path}); wait for it to finish or use another --out") from None
        previous = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if previous and previous != str(os.getpid()):
            log.info("took over the stale lock of process %s in %s (it is no longer running)", previous, self.run_dir)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Unlock; the file stays (a later writer takes it over), emptied of our pid."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
        except OSError:
            pass
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None


def our_entries(run_dir: Path) -> List[Path]:
    """The files and folders of a previous run in ``run_dir`` (see ``OURS``)."""
    found = {path for pattern in OURS for path in run_dir.glob(pattern)}
    return sorted(found)


def _prepare(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} is a file, not a directory")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunDirError(f"cannot create the run directory {run_dir}: {error.strerror}") from None
    return run_dir


def clean_orphans(run_dir: Path) -> None:
    """Remove what killed writers left in a run directory we hold the lock of."""
    remove_orphans(run_dir, exclusive=True)
    remove_orphans(run_dir / "checkpoints", exclusive=True)


def claim_new(run_dir, *, overwrite: bool = False) -> RunLock:
    """Lock ``run_dir`` for a new run: it must be missing or empty, or ``overwrite`` must be set."""
    run_dir = _prepare(run_dir)
    lock = RunLock(run_dir).acquire()
    try:
        clean_orphans(run_dir)
        left = [p for p in run_dir.iterdir()
                if p.name != LOCK_NAME and not TEMPORARY.match(p.name) and not SET_ASIDE.match(p.name)]
        if left and not overwrite:
            names = ", ".join(sorted(p.name for p in left)[:3]) + (", ..." if len(left) > 3 else "")
            raise RunDirError(f"run directory {run_dir} is not empty ({names}); continue it with "
                              f"--resume {run_dir}, replace it with --overwrite, or choose another --out")
        if left:
            _remove_previous_run(run_dir)
    except BaseException:
        lock.release()
        raise
    return lock


def _remove_previous_run(run_dir: Path) -> None:
    """Move our entries into ``.overwritten.<pid>`` (renames), then delete that folder."""
    ours = our_entries(run_dir)
    aside = run_dir / f".overwritten.{os.getpid()}"
    aside.mkdir(exist_ok=True)
    for path in ours:
        os.replace(path, aside / path.name)
    shutil.rmtree(aside)
    kept = sorted(p.name for p in run_dir.iterdir() if p.name != LOCK_NAME)
    log.info("--overwrite: removed the previous run's %d entries from %s%s", len(ours), run_dir,
             f"; kept files that are not ours: {', '.join(kept)}" if kept else "")


def claim_existing(run_dir) -> RunLock:
    """Lock the existing run directory ``run_dir`` to continue its run."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        hint = run_dir.parent.parent if run_dir.parent.name == "checkpoints" else run_dir.parent
        raise RunDirError(f"--resume takes a run directory, not a file: {run_dir} (did you mean --resume {hint}?)")
    if not run_dir.is_dir():
        raise RunDirError(f"run directory not found: {run_dir}")
    lock = RunLock(run_dir).acquire()
    try:
        clean_orphans(run_dir)
    except BaseException:
        lock.release()
        raise
    return lock
