"""Writing and reading our files safely: atomic replacement, orphaned temporaries, full disks,
output folders checked before use, the manifest of a run directory, JSON read back with checks.

A file we rewrite (checkpoint, ``config.json``, ``metrics.jsonl`` on resume, a dataset cache,
a study's JSON, reports, tables and figures) is written whole to ``NAME.<pid>.<random>.tmp`` beside it, flushed to disk and
moved over ``NAME`` with ``os.replace``: a crash at any moment leaves the old ``NAME`` intact,
at worst with a temporary beside it, which :func:`remove_orphans` deletes at the next start.
Errors of the disk (full, read-only, no permission) become a one-line :class:`WriteError`
naming the file; :func:`prepare_output_dir` refuses an output folder that is a file, lies under
a file, is read-only or has no byte free before anything is written into it.

A run directory keeps ``manifest.json``, the relative paths of every file this program wrote
into it (:func:`track`: each write of :func:`write_atomic` or :func:`append_line` below a tracked
folder adds its path, atomically), so ``--overwrite`` removes exactly those and nothing of the
user's. Every JSON file we read back goes through :func:`read_json` / :func:`read_jsonl`, whose
errors name the file (and the line).
"""

from __future__ import annotations

import csv
import errno
import fcntl
import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

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
        if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS, errno.EISDIR, errno.ENOTDIR):
            raise WriteError(error.errno, f"cannot write {path}: {os.strerror(error.errno)}") from error
        raise


def write_all(handle, data: bytes) -> None:
    """``handle.write(data)``; one place for tests to simulate a full disk."""
    handle.write(data)


def write_atomic(path: Union[str, Path], data: Union[bytes, str, Callable[[BinaryIO], None]]) -> None:
    """Replace ``path`` by ``data`` so that it is always either old or new.

    ``data``: bytes, text (written as UTF-8), or a function that writes into a binary file.
    A path below a tracked run directory joins its manifest.
    """
    _replace(Path(path), data)
    record_written(path)


def _replace(path: Path, data: Union[bytes, str, Callable[[BinaryIO], None]]) -> None:
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
    record_written(path)


# ----------------------------------------------------------------------------- output folders

class OutputDirError(ValueError):
    """An output folder cannot be used (a file, under a file, read-only, full); names it."""


def prepare_output_dir(path: Union[str, Path], *, what: str = "output directory", create: bool = True) -> Path:
    """Check that ``path``, a folder we are about to write into, takes files; with ``create``
    make it now, else only check the nearest folder that exists (it is made at the first write).

    Refused with a one-line :class:`OutputDirError` naming it (``what``: "run directory",
    "study directory", ...): a file, a path under a file, a folder we cannot create or write
    into (read-only, no permission), a disk with no byte free, and, before any work, a path the
    system cannot make: a name longer than the file system allows, a loop of symbolic links or a
    broken one on the way.
    """
    path = Path(path)
    existing, missing = _nearest_existing(path, what)
    if existing == path and not path.is_dir():
        raise OutputDirError(f"{what} {path} is a file, not a directory")
    if not existing.is_dir():
        raise OutputDirError(f"cannot create the {what} {path}: {existing} is a file")
    longest = _name_max(existing)
    for name in missing:
        if longest is not None and len(os.fsencode(name)) > longest:
            raise OutputDirError(f"cannot create the {what} {path}: {os.strerror(errno.ENAMETOOLONG)} "
                                 f"({len(os.fsencode(name))}-byte name, at most {longest})")
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputDirError(f"cannot create the {what} {path}: {error.strerror or error}") from None
        existing = path
    try:
        handle, probe = tempfile.mkstemp(prefix=f".write-probe.json.{os.getpid()}.", suffix=".tmp", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as error:
        where = "" if existing == path else f" (in {existing})"
        raise OutputDirError(f"{what} {path} is not writable{where}: {error.strerror or error}") from None
    if free_bytes(existing) == 0:
        raise OutputDirError(f"{what} {path} is on a full disk (0 bytes free)")
    return path


def _nearest_existing(path: Path, what: str) -> Tuple[Path, List[str]]:
    """(the nearest folder of ``path`` that exists, the names below it still to be made); a part
    that cannot be looked at (a symlink loop, a name too long) or a broken symlink is an
    :class:`OutputDirError` in the words ``prepare_output_dir`` uses."""
    missing: List[str] = []
    existing = path
    while True:
        try:
            os.stat(existing)
            return existing, missing[::-1]
        except (FileNotFoundError, NotADirectoryError):  # not made yet, or under a file (said below)
            if os.path.islink(existing) and not os.path.exists(existing):
                raise OutputDirError(f"cannot create the {what} {path}: {existing} is a broken symbolic link") from None
        except OSError as error:
            raise OutputDirError(f"cannot create the {what} {path}: {error.strerror or error}") from None
        if existing == existing.parent:
            return existing, missing[::-1]
        missing.append(existing.name)
        existing = existing.parent


def _name_max(folder: Path) -> Optional[int]:
    """The longest file name (bytes) the file system of ``folder`` takes, or None if unknown."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return None


def free_bytes(path: Union[str, Path]) -> Optional[int]:
    """Bytes an unprivileged writer may still use on the disk of ``path`` (None if unknown)."""
    try:
        stats = os.statvfs(path)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


# ----------------------------------------------------------------------------- the manifest

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
_tracked: Dict[Path, set] = {}  # run directory (resolved) -> the relative paths its manifest lists


def track(run_dir: Union[str, Path]) -> None:
    """Record, from now on, every file this process writes below ``run_dir`` in its manifest
    (created empty if missing)."""
    run_dir = Path(run_dir).resolve()
    if not (run_dir / MANIFEST).exists():
        _replace(run_dir / MANIFEST, _manifest_text([]))
    _tracked[run_dir] = set(manifest_entries(run_dir))


def untrack(run_dir: Union[str, Path]) -> None:
    _tracked.pop(Path(run_dir).resolve(), None)


def reset_manifest(run_dir: Union[str, Path]) -> None:
    """An empty manifest: the run directory holds no file of ours any more."""
    run_dir = Path(run_dir).resolve()
    _replace(run_dir / MANIFEST, _manifest_text([]))
    if run_dir in _tracked:
        _tracked[run_dir] = set()


def manifest_entries(run_dir: Union[str, Path]) -> List[str]:
    """The relative paths ``run_dir``'s manifest lists ([] without a manifest); a manifest that is
    not ours, or lists a path outside ``run_dir``, is a one-line error naming it."""
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return []
    values = read_json(path, expect=dict)
    files = values.get("files")
    if values.get("format") != MANIFEST_FORMAT or not isinstance(files, list) \
            or not all(isinstance(f, str) for f in files):
        raise ValueError(f"{path}: not a manifest of pyro-zforcing (format {MANIFEST_FORMAT}, a list of files); "
                         "repair or remove it")
    for name in files:
        parts = Path(name).parts
        if not parts or Path(name).is_absolute() or ".." in parts:
            raise ValueError(f"{path}: lists {name!r}, which is not a path inside the run directory")
    return files


def _manifest_text(files: Iterable[str]) -> str:
    return json.dumps({"format": MANIFEST_FORMAT, "files": sorted(set(files))}, indent=1) + "\n"


def record_written(path: Union[str, Path]) -> None:
    """Add ``path`` to the manifest of every tracked run directory it lies in."""
    if not _tracked:
        return
    path = Path(path).resolve()
    for run_dir, known in _tracked.items():
        try:
            relative = path.relative_to(run_dir).as_posix()
        except ValueError:
            continue
        if relative == MANIFEST or relative in known:
            continue
        with writing(run_dir / MANIFEST), _folder_lock(run_dir):  # evaluate may write while train runs
            listed = set(manifest_entries(run_dir)) | {relative}
            _replace(run_dir / MANIFEST, _manifest_text(listed))
        known.update(listed)


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """An exclusive ``flock`` of ``folder`` itself (not the run's ``.lock``), held briefly."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # a file system without flock on folders: updates are then unserialised
            pass
        yield
    finally:
        os.close(fd)  # drops the flock


# ----------------------------------------------------------------------------- reading JSON back

class JSONFileError(ValueError):
    """A JSON file we read back is missing its structure; the message names the file (and line)."""


def read_json(path: Union[str, Path], *, expect: type = dict, finite: bool = False) -> Any:
    """The JSON value of ``path``, of type ``expect``; a missing, unreadable, empty or malformed
    file is a one-line error naming it (``FileNotFoundError`` or :class:`JSONFileError`).
    ``finite``: NaN and infinities are refused (they are not JSON, but Python writes them)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found") from None
    except UnicodeDecodeError:
        raise JSONFileError(f"{path} is not a JSON file (not UTF-8 text)") from None
    except OSError as error:
        raise JSONFileError(f"cannot read {path}: {error.strerror or error}") from None
    if not text.strip():
        raise JSONFileError(f"{path} is empty (a write was interrupted?)")
    value = _parse(text, path, finite=finite)
    if not isinstance(value, expect):
        raise JSONFileError(f"{path}: expected a JSON {_kind(expect)} at the top level, got {_kind(type(value))}")
    return value


def _parse(text: str, path: Path, *, finite: bool, line: Optional[int] = None) -> Any:
    where = f"{path}: line {line}" if line is not None else str(path)

    def not_finite(constant):
        raise JSONFileError(f"{where}: {constant} is not a finite number")

    try:
        return json.loads(text, parse_constant=not_finite if finite else None)
    except json.JSONDecodeError as error:
        position = f"column {error.colno}" if line is not None else f"line {error.lineno} column {error.colno}"
        raise JSONFileError(f"{where}: not valid JSON ({error.msg} at {position})") from None
    except RecursionError:
        raise JSONFileError(f"{where}: nested too deeply to read") from None


def _kind(cls: type) -> str:
    return {dict: "object", list: "array", str: "string", int: "number", float: "number",
            bool: "true/false", type(None): "null"}.get(cls, cls.__name__)


def read_jsonl(path: Union[str, Path], *, check: Optional[Callable[[Any], Optional[str]]] = None
               ) -> List[Tuple[str, Any]]:
    """(line, value) of every record of the JSON-lines file ``path``. ``check(value)`` returns
    what is wrong with a record (or None). A bad last line without its newline is a write cut
    short (torn): dropped with a warning; any other bad line, a complete last line included, is a
    :class:`JSONFileError` naming the file and the line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
        lines = text.splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} not found") from None
    except OSError as error:
        raise JSONFileError(f"cannot read {path}: {error.strerror or error}") from None
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = _parse(line, path, finite=False, line=number)
            problem = check(value) if check is not None else None
            if problem:
                raise JSONFileError(f"{path}: line {number} is {problem}")
        except JSONFileError:
            if number == len(lines) and not text.endswith(("\n", "\r")):
                log.warning("%s: dropped its torn last line %d (a write was interrupted)", path, number)
                break
            raise
        records.append((line, value))
    return records


def metrics_problem(record: Any) -> Optional[str]:
    """What keeps ``record`` from being a ``metrics.jsonl`` record (an object with a ``kind``, an
    integer ``step`` and numbers, true/false or null elsewhere), or None."""
    if not isinstance(record, dict):
        return "not a metrics record (not a JSON object)"
    if not isinstance(record.get("kind"), str):
        return "not a metrics record (no \"kind\")"
    step = record.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return "not a metrics record (no whole \"step\" >= 0)"
    for key, value in record.items():
        if key != "kind" and value is not None and not isinstance(value, (int, float)):
            return f"not a metrics record ({key!r} is not a number)"
    return None


def read_metrics(path: Union[str, Path]) -> List[Dict]:
    """The records of a ``metrics.jsonl`` (:func:`read_jsonl` with :func:`metrics_problem`)."""
    return [record for _, record in read_jsonl(path, check=metrics_problem)]


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


def remove_orphans(folder: Union[str, Path], *, exclusive: bool, quiet_seconds: float = QUIET_SECONDS) -> List[Path]:
    """Delete the temporaries of ours that a killed writer left in ``folder``; returns them.

    ``exclusive``: we hold the folder's lock (a run directory), so every temporary of ours is
    an orphan. Otherwise (a shared cache or study folder) only one whose writer process is gone
    and that nobody touched for ``quiet_seconds`` (0 for a folder written from this host only).
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
                quiet = now - path.lstat().st_mtime >= quiet_seconds
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
