"""What every file-backed loader shares: options, corpus location, bad files, seeded splits.

- :func:`resolve_options` merges ``DataConfig.options`` over a loader's documented defaults
  and rejects unknown keys by name.
- :func:`corpus_path` turns a missing ``--data-dir`` into one line that says what the corpus
  is, where it is obtained and which layout is expected under ``--data-dir``.
- :class:`BadFiles` applies ``DataConfig.skip_bad_files``: a file that cannot be read raises
  a :class:`DataError` naming it, or is skipped, counted and reported once at the end.
- :func:`split_items` is the one seeded, deterministic split of files/speakers/sentences:
  items are sorted, permuted with ``numpy.random.default_rng(seed)``, and the first
  ``round(valid_fraction * n)`` go to valid, the next ``round(test_fraction * n)`` to test
  (at least one each when the fraction is > 0), the rest to train.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Callable, Iterable, List, Optional, Sequence, Tuple, TypeVar

import numpy as np

from .base import DataError

logger = logging.getLogger(__name__)
T = TypeVar("T")


def resolve_options(dataset: str, given: dict, defaults: dict) -> dict:
    """``defaults`` updated with ``given``; an unknown key raises naming it and the known ones."""
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise DataError(f"{dataset}: unknown option(s) {', '.join(map(str, unknown))}; "
                        f"known: {', '.join(sorted(defaults))}")
    return {**defaults, **given}


def check_fraction(dataset: str, name: str, value) -> float:
    """A split fraction in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
        raise DataError(f"{dataset}: option {name} must be a number in [0, 1), got {value!r}")
    return float(value)


def check_int(dataset: str, name: str, value, minimum: int = 1, allow_none: bool = False):
    """An integer option >= ``minimum`` (or None where ``allow_none``)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"{dataset}: option {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_choice(dataset: str, name: str, value, choices: Sequence):
    if value not in choices:
        raise DataError(f"{dataset}: option {name} must be one of {list(choices)}, got {value!r}")
    return value


def corpus_path(config, *, dataset: str, description: str, source: str, layout: str,
                allow_file: bool = False) -> Path:
    """``config.data_dir`` as a Path, or a one-line error saying what to fetch and where to put it."""
    hint = f"{description} is not bundled; obtain it from {source}; expected under --data-dir: {layout}"
    if not config.data_dir:
        raise DataError(f"{dataset}: no --data-dir given. {hint}")
    path = Path(config.data_dir).expanduser()
    if allow_file and path.is_file():
        return path
    if not path.is_dir():
        raise DataError(f"{dataset}: {path} does not exist or is not a directory. {hint}")
    return path


def wrong_layout(dataset: str, path: Path, layout: str, found: str = "") -> DataError:
    extra = f" ({found})" if found else ""
    return DataError(f"{dataset}: {path} does not have the expected layout{extra}; expected: {layout}")


def child_ci(parent: Path, name: str) -> Optional[Path]:
    """The child of ``parent`` called ``name`` in any letter case, or None."""
    exact = parent / name
    if exact.exists():
        return exact
    try:
        for child in sorted(parent.iterdir()):
            if child.name.lower() == name.lower():
                return child
    except OSError:
        return None
    return None


def walk_files(root: Path, accept: Callable[[Path], bool]) -> List[Path]:
    """Files below ``root`` (recursively, sorted, hidden files and folders skipped) that
    ``accept``; symlinks are followed, but every real folder is entered once (a link to an
    ancestor cannot loop) and a file reachable by several names is listed once. Unreadable
    folders are skipped with a warning."""
    found, seen = [], set()
    entered = {os.path.realpath(root)}

    def unreadable(error: OSError) -> None:
        logger.warning("%s: cannot read folder, skipped (%s)", error.filename, error.strerror or error)

    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=unreadable):
        kept = []
        for name in sorted(d for d in dirnames if not d.startswith(".")):
            real = os.path.realpath(os.path.join(dirpath, name))
            if real not in entered:
                entered.add(real)
                kept.append(name)
        dirnames[:] = kept
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if name.startswith(".") or not accept(path):
                continue
            real = os.path.realpath(path)
            if real in seen:
                continue
            seen.add(real)
            found.append(path)
    return sorted(found)


class BadFiles:
    """Reads files under the ``skip_bad_files`` policy and reports what it skipped."""

    def __init__(self, dataset: str, skip: bool):
        self.dataset = dataset
        self.skip = skip
        self.skipped: List[str] = []

    def read(self, path, reader: Callable[[Path], T]) -> Optional[T]:
        """``reader(path)``; a :class:`DataError` (a dangling symbolic link is one) is raised, or
        recorded and None returned."""
        path = Path(path)
        try:
            if path.is_symlink() and not path.exists():
                raise DataError(f"{path}: dangling symbolic link to {os.readlink(path)}")
            return reader(path)
        except DataError as err:
            if not self.skip:
                raise
            self.skipped.append(str(err) if str(err).startswith(str(path)) else f"{path}: {err}")
            return None

    def report(self) -> None:
        """One warning listing every skipped file (call once, after reading everything)."""
        if self.skipped:
            logger.warning("%s: skipped %d bad file(s):\n  %s", self.dataset, len(self.skipped),
                           "\n  ".join(self.skipped))


def split_items(items: Sequence[T], *, valid_fraction: float, test_fraction: float,
                seed: int, dataset: str, what: str = "files") -> Tuple[List[T], List[T], List[T]]:
    """Seeded train/valid/test split of sortable ``items`` (see the module docstring)."""
    items = sorted(items)
    n = len(items)

    def count(fraction):
        return 0 if fraction <= 0 else max(1, int(round(fraction * n)))

    n_valid, n_test = count(valid_fraction), count(test_fraction)
    if n - n_valid - n_test < 1:
        raise DataError(f"{dataset}: {n} {what} are too few for a train/valid/test split "
                        f"with valid_fraction={valid_fraction}, test_fraction={test_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    valid = [items[i] for i in sorted(order[:n_valid])]
    test = [items[i] for i in sorted(order[n_valid:n_valid + n_test])]
    train = [items[i] for i in sorted(order[n_valid + n_test:])]
    return train, valid, test


def progress(iterable: Iterable[T], *, desc: str, total: Optional[int] = None) -> Iterable[T]:
    """tqdm progress on a terminal, a plain iterator otherwise."""
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, disable=not sys.stderr.isatty(), leave=False)
