"""Writing our files safely: atomic replacement, orphaned temporaries, full disks.

A file we rewrite (checkpoint, ``config.json``, ``metrics.jsonl`` on resume, a dataset cache,
a study's JSON, reports, tables and figures) is written whole to ``NAME.<pid>.<random>.tmp`` beside it, flushed to disk and
moved over ``NAME`` with ``os.replace``: a crash at any moment leaves the old ``NAME`` intact,
at worst with a temporary beside it, which :func:`remove_orphans` deletes at the next start.
Errors of the disk (full, read-only, no permission) become a one-line :class:`WriteError`
naming the file.
"""

from __future__ import annotations

import csv
import errno
import io
import logging
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Dict, Iterable, Iterator, List, Sequence, Union

log = logging.getLogger(__name__)

# NAME.<pid>.<random>.tmp (this module), NAME.<random>.tmp (earlier versions): NAME ends in a
# suffix of ours, so a user's own *.tmp files are never matched. Figures (.png) were never
# written the older way, so only this module's form with the writer's pid counts for them.
TEMPORARY = re.compile(r"^.+\.(?:(?:pt|json|jsonl|md|npz|csv)(?:\.(?P<pid>\d+))?|png\.(?P<png_pid>\d+))"
                       r"\.[A-Za-z0-9_]+\.tmp$")
# a folder of an overwritten run, moved aside before it is deleted (rundir.py)
SET_ASIDE = re.compile(r"^\.overwritten\.(?P<pid>\d+)$")
# a temporary whose writer may live on another host (shared cache) must be this old to go
QUIET_SECONDS = 600


class WriteError(OSError):
    """Writing one of our files failed (disk full, read-only, no permission); names the file."""

    def __str__(self) -> str:
        return self.strerror


@contextmanager
def writing(path: Union[str, Path]) -> Iterator[None]:
    """Turn the disk's refusals while writing ``path`` into a :class:`WriteError` naming it."""
    try:
        yield
    except WriteError:
        raise
    except OSError as error:
        if error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise WriteError(error.errno, f"disk full while writing {path}") from error
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise WriteError(error.errno, f"cannot write {path}: {os.strerror(error.errno)}") from error
        raise


def write_all(handle, data: bytes) -> None:
    """``handle.write(data)``; one place for tests to simulate a full disk."""
    handle.write(data)


def write_atomic(path: Union[str, Path], data: Union[bytes, str, Callable[[BinaryIO], None]]) -> None:
    """Replace ``path`` by ``data`` so that it is always either old or new.

    ``data``: bytes, text (written as UTF-8), or a function that writes into a binary file.
    """
    path = Path(path)
    data = data.encode("utf-8") if isinstance(data, str) else data
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, tmp = tempfile.mkstemp(prefix=f"{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
        try:
            os.close(handle)
            with open(tmp, "wb") as f:  # by name, so ``f.name`` says what is written
                if callable(data):
                    data(f)
                else:
                    write_all(f, data)
                f.flush()
                os.fsync(f.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the usual file mode
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise


def append_line(path: Union[str, Path], line: str) -> None:
    """Append one line to ``path`` (a log that only grows; a torn last line is the worst case)."""
    with writing(path), open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_orphans(folder: Union[str, Path], *, exclusive: bool) -> List[Path]:
    """Delete the temporaries of ours that a killed writer left in ``folder``; returns them.

    ``exclusive``: we hold the folder's lock (a run directory), so every temporary of ours is
    an orphan. Otherwise (a shared cache or study folder) only one whose writer process is gone
    and that nobody touched for ``QUIET_SECONDS``.
    """
    folder = Path(folder)
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    now = time.time()
    for path in entries:
        match = TEMPORARY.match(path.name) or SET_ASIDE.match(path.name)
        if match is None:
            continue
        pid = match.group("pid") or match.group("png_pid")
        if not exclusive:
            try:
                quiet = now - path.lstat().st_mtime > QUIET_SECONDS
            except OSError:
                continue
            if not quiet or (pid is not None and _alive(int(pid))):
                continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError as error:
            log.warning("could not remove the orphaned temporary %s: %s", path, error)
            continue
        removed.append(path)
    if removed:
        log.info("removed %d orphaned temporary file(s) in %s: %s", len(removed), folder,
                 ", ".join(p.name for p in removed))
    return removed


def csv_text(rows: Iterable[Dict], fieldnames: Sequence[str]) -> str:
    """``rows`` as CSV text with a header (keys outside ``fieldnames`` ignored), for :func:`write_atomic`."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fieldnames), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
