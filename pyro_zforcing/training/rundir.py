"""A run directory belongs to one run, written by one live process at a time.

``RUN/.lock`` holds an exclusive ``fcntl.flock`` of the writing process (rank 0 under
torchrun) with its pid in the file. A second writer is refused with that pid; after a crash
(even ``kill -9``) the kernel has released the lock, so the file left behind is stale and the
next writer simply takes it. A new run goes only into a missing or empty directory; with
``overwrite`` the files the old run's ``manifest.json`` lists (every file this program wrote
there, in every subfolder: see :func:`~pyro_zforcing.files.track`) are first moved aside (one
rename each) and deleted, while every other file stays. A directory that holds a run but no
manifest is refused rather than guessed at.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
from pathlib import Path
from typing import Optional

from ..files import (MANIFEST, SET_ASIDE, TEMPORARY, OutputDirError, manifest_entries, prepare_output_dir,
                     remove_orphans, reset_manifest, track, writing)

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"
# what a run without a manifest (another program's, or one of ours lost its manifest) is known by
RUN_MARKERS = ("config.json", "checkpoints")
# folders of a run directory whose temporaries a lock holder may remove
SUBFOLDERS = ("checkpoints", "samples")


class RunDirError(OutputDirError):
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
        try:
            with writing(self.path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        except OSError as error:
            os.close(fd)
            raise RunDirError(f"run directory {self.run_dir}: {error}") from None
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


def _prepare(run_dir: Path) -> Path:
    try:
        return prepare_output_dir(run_dir, what="run directory")
    except OutputDirError as error:
        raise RunDirError(str(error)) from None


def clean_orphans(run_dir: Path) -> None:
    """Remove what killed writers left in a run directory we hold the lock of."""
    remove_orphans(run_dir, exclusive=True)
    for folder in SUBFOLDERS:
        remove_orphans(run_dir / folder, exclusive=True)


def claim_new(run_dir, *, overwrite: bool = False) -> RunLock:
    """Lock ``run_dir`` for a new run: it must be missing or empty, or ``overwrite`` must be set;
    from then on every file written into it joins its manifest."""
    run_dir = _prepare(run_dir)
    lock = RunLock(run_dir).acquire()
    try:
        clean_orphans(run_dir)
        left = [p for p in run_dir.iterdir() if p.name not in (LOCK_NAME, MANIFEST)
                and not TEMPORARY.match(p.name) and not SET_ASIDE.match(p.name)]
        if left and not overwrite:
            names = ", ".join(sorted(p.name for p in left)[:3]) + (", ..." if len(left) > 3 else "")
            raise RunDirError(f"run directory {run_dir} is not empty ({names}); continue it with "
                              f"--resume {run_dir}, replace it with --overwrite, or choose another --out")
        if left:
            _remove_previous_run(run_dir)
        reset_manifest(run_dir)
        track(run_dir)
    except BaseException:
        lock.release()
        raise
    return lock


def _remove_previous_run(run_dir: Path) -> None:
    """Move the files the manifest lists into ``.overwritten.<pid>`` (renames), delete that folder,
    then the subfolders it left empty; every file the manifest does not list stays."""
    if not (run_dir / MANIFEST).exists():
        markers = [name for name in RUN_MARKERS if (run_dir / name).exists()]
        if markers:
            raise RunDirError(f"run directory {run_dir} holds a run ({', '.join(markers)}) but no {MANIFEST} "
                              "saying which files are its own, so --overwrite removes nothing; delete them "
                              "yourself or choose another --out")
    root = run_dir.resolve()
    ours = []
    for name in manifest_entries(run_dir):
        path = run_dir / name
        # a listed path through a folder the user replaced by a link elsewhere is not ours to move
        if (path.is_file() or path.is_symlink()) and path.parent.resolve().is_relative_to(root):
            ours.append(path)
    aside = run_dir / f".overwritten.{os.getpid()}"
    aside.mkdir(exist_ok=True)
    for number, path in enumerate(ours):
        os.replace(path, aside / str(number))
    shutil.rmtree(aside)
    for folder in sorted({p.parent for p in ours}, key=lambda p: -len(p.parts)):
        while folder != run_dir and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
            folder = folder.parent
    kept = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")
                  if p.is_file() and p.name not in (LOCK_NAME, MANIFEST))
    log.info("--overwrite: removed the previous run's %d files from %s%s", len(ours), run_dir,
             f"; kept files that are not ours: {', '.join(kept[:10])}" + (", ..." if len(kept) > 10 else "")
             if kept else "")


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
        track(run_dir)
    except BaseException:
        lock.release()
        raise
    return lock
