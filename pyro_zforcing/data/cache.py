"""On-disk cache of prepared datasets, so a large corpus is framed/tokenised only once.

One ``.npz`` file per (dataset, source location, options, seed, skip policy) holds every
split's sequences concatenated (``{split}_data``) with their lengths (``{split}_lengths``),
the training sequences' first inputs where the data have them (``train_first``), and a JSON ``meta`` entry (the :class:`DataInfo`, the skipped-file list and a fingerprint of
the source files: relative path, size and mtime of each). A cache whose fingerprint or format
version differs is rebuilt and overwritten, so editing, adding or removing a source file
invalidates it. Files are written to a temporary file in the cache folder and moved into
place with ``os.replace``, so a crash never leaves a half-written cache.

Where: ``DataConfig.cache_dir`` if given, else ``$XDG_CACHE_HOME/pyro-zforcing``
(``~/.cache/pyro-zforcing``): never inside the corpus folder, which is often a read-only or
shared copy. The cache key includes the source location, so one folder serves every corpus.
If the folder is not writable the data are prepared without caching and a warning is logged.
Stale entries of other option sets are never deleted automatically; removing the folder is
always safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Callable, Iterable, List, Optional

import numpy as np

from ..files import remove_orphans, write_atomic
from .base import DataInfo, SequenceSplits

logger = logging.getLogger(__name__)

CACHE_VERSION = 3  # 2: audio files are checked for truncated WAV data, absurd peaks, rates below 4 kHz;
# 3: stream training chunks keep the frame before each chunk (train_first)
SPLITS = ("train", "valid", "test")


def _digest(value) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fingerprint(root: Path, files: Iterable[Path]) -> str:
    """Hash of (path relative to ``root``, size, mtime in ns) of every source file; a missing file
    or dangling symbolic link (a bad file the loader skips or refuses) counts by its link target."""
    rows = []
    for path in files:
        try:
            rel = str(Path(path).relative_to(root))
        except ValueError:
            rel = str(path)
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            rows.append((rel, "missing", os.readlink(path) if os.path.islink(path) else None))
            continue
        rows.append((rel, stat.st_size, stat.st_mtime_ns))
    return _digest(rows)


def _writable_dir(path: Path) -> Optional[Path]:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    if not os.access(path, os.W_OK | os.X_OK):
        return None
    remove_orphans(path, exclusive=False)  # temporaries of killed writers (shared folder: cautiously)
    return path


def cache_folder(config, root: Path) -> Optional[Path]:
    """The folder to cache into (see the module docstring), or None if none is writable."""
    if config.cache_dir:
        folder = _writable_dir(Path(config.cache_dir).expanduser())
        if folder is None:
            logger.warning("cache_dir %s is not writable; preparing without a cache", config.cache_dir)
        return folder
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pyro-zforcing"
    folder = _writable_dir(user)
    if folder is None:
        logger.warning("no writable cache folder for %s; preparing without a cache", root)
    return folder


def save_splits(path: Path, splits: SequenceSplits, meta: dict) -> None:
    """Write ``splits`` to ``path`` atomically (temp file in the same folder + os.replace)."""
    arrays = {}
    for name in SPLITS:
        seqs = splits.split(name)
        trailing = seqs[0].shape[1:] if seqs else ()
        dtype = seqs[0].dtype if seqs else np.float32
        arrays[f"{name}_data"] = (np.concatenate(seqs, axis=0) if seqs
                                  else np.zeros((0,) + trailing, dtype=dtype))
        arrays[f"{name}_lengths"] = np.array([len(s) for s in seqs], dtype=np.int64)
    if splits.train_first is not None:
        arrays["train_first"] = np.stack(splits.train_first)
    meta = {**meta, "info": splits.info.to_dict(), "skipped": list(splits.skipped)}
    arrays["meta"] = np.array(json.dumps(meta))
    write_atomic(path, lambda handle: np.savez(handle, **arrays))


def load_splits(path: Path) -> tuple:
    """``(SequenceSplits, meta)`` from a cache file written by :func:`save_splits`."""
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
        lists = {}
        for name in SPLITS:
            data, lengths = npz[f"{name}_data"], npz[f"{name}_lengths"]
            if int(lengths.sum()) != len(data):
                raise ValueError("lengths do not match the data")
            lists[name] = np.split(data, np.cumsum(lengths)[:-1]) if len(lengths) else []
        first = list(npz["train_first"]) if "train_first" in npz else None
    info = DataInfo.from_dict(meta["info"])
    return SequenceSplits(info, lists["train"], lists["valid"], lists["test"],
                          skipped=list(meta["skipped"]), train_first=first), meta


def cached(config, *, dataset: str, root: Path, files: List[Path], options: dict,
           build: Callable[[], SequenceSplits]) -> SequenceSplits:
    """The prepared splits of ``files`` under ``options``: from the cache when it is current,
    else ``build()`` and store it. Files skipped when the cache was built are reported again."""
    folder = cache_folder(config, root)
    if folder is None:
        return build()
    key = _digest({"dataset": dataset, "root": str(Path(root).resolve()), "options": options,
                   "seed": config.seed, "skip_bad_files": config.skip_bad_files})
    path = folder / f"{dataset}-{key[:24]}.npz"
    stamp = {"version": CACHE_VERSION, "fingerprint": fingerprint(root, files)}
    if path.exists():
        try:
            splits, meta = load_splits(path)
            if all(meta.get(k) == v for k, v in stamp.items()):
                logger.info("%s: read prepared data from cache %s", dataset, path)
                if splits.skipped:
                    logger.warning("%s: skipped %d bad file(s) (cached):\n  %s", dataset,
                                   len(splits.skipped), "\n  ".join(splits.skipped))
                return splits
            logger.info("%s: source files or format changed; rebuilding cache %s", dataset, path)
        except Exception as err:  # noqa: BLE001 - any unreadable cache is rebuilt
            logger.warning("%s: unreadable cache %s (%s); rebuilding it", dataset, path, err)
    splits = build()
    try:
        save_splits(path, splits, stamp)
        logger.info("%s: cached prepared data in %s", dataset, path)
    except OSError as err:
        logger.warning("%s: could not write cache %s (%s)", dataset, path, err)
    return splits
