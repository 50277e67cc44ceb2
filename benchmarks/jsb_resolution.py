#!/usr/bin/env python
"""Is a second piano-roll file the same pieces as the first at a finer time resolution? One JSON line.

For each split, every piece of ``FINE`` (read by the polyphonic loader: the ``.npz`` of SRNN's
release, or any file it reads) is checked against the pieces of the same split of ``COARSE``:
it *matches* when its frames ``offset, offset + r, offset + 2r, ...`` are exactly one coarse
piece, for some ``offset < r`` (``--ratio``, default 2). Training and validation windows of the
release (101 frames each) cut a stream of pieces, so a window matches when those frames are a
contiguous run of one coarse piece, or the end of one followed by the start of another. Printed
per split: pieces and frames of each file, how many fine pieces match, and the
share of frames equal to the frame before them (a repeated frame is nearly free to predict, so
the share bounds how much of a per-step figure is spent on easy steps).

    python benchmarks/jsb_resolution.py data/jsb_raw_batchsize16_seqlen100.npz \\
        ../shared/data/jsb-chorales-quarter.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pyro_zforcing.config import DataConfig  # noqa: E402
from pyro_zforcing.data import load_dataset  # noqa: E402


def repeated_share(pieces: Sequence[np.ndarray]) -> float:
    """Frames equal to the frame before them, over all frames that have one."""
    repeats = sum(int((p[1:] == p[:-1]).all(axis=1).sum()) for p in pieces)
    return repeats / max(1, sum(len(p) - 1 for p in pieces))


def frame_index(coarse: Sequence[np.ndarray]) -> Dict[bytes, List[tuple]]:
    """Every frame of ``coarse`` (its bytes) to the ``(piece, step)`` places it occurs at."""
    where: Dict[bytes, List[tuple]] = {}
    for j, piece in enumerate(coarse):
        for t, frame in enumerate(piece):
            where.setdefault(frame.tobytes(), []).append((j, t))
    return where


def runs(frames: np.ndarray, coarse: Sequence[np.ndarray], where: Dict[bytes, List[tuple]]) -> List[tuple]:
    """``frames`` split greedily into maximal contiguous runs of coarse pieces (``where`` is their
    :func:`frame_index`): ``(piece, start, length)`` each, ``(None, k, 1)`` for a frame found in none."""
    out, k = [], 0
    while k < len(frames):
        best = (None, k, 1)
        for j, t in where.get(frames[k].tobytes(), []):
            piece, n = coarse[j], 0
            while k + n < len(frames) and t + n < len(piece) and np.array_equal(piece[t + n], frames[k + n]):
                n += 1
            if n > best[2] or best[0] is None:
                best = (j, t, n)
        out.append(best)
        k += best[2]
    return out


def is_window_of(frames: np.ndarray, coarse: Sequence[np.ndarray], where: Dict[bytes, List[tuple]]) -> bool:
    """Whether ``frames`` is a run of one coarse piece, or the end of one and the start of another."""
    found = runs(frames, coarse, where)
    if any(piece is None for piece, _, _ in found) or len(found) > 2:
        return False
    if len(found) == 1:
        return True
    (first, start, n), (_, second_start, _) = found
    return start + n == len(coarse[first]) and second_start == 0


def matches(fine: List[np.ndarray], coarse: List[np.ndarray], ratio: int, whole: bool) -> int:
    """Fine pieces whose every ``ratio``-th frame (from some offset) is a coarse piece (``whole``)
    or a window of the coarse stream (:func:`is_window_of`)."""
    keys = {piece.tobytes() for piece in coarse}
    where = None if whole else frame_index(coarse)
    count = 0
    for piece in fine:
        strided = [piece[offset::ratio] for offset in range(ratio)]
        if whole:
            count += any(s.tobytes() in keys for s in strided)
        else:
            count += any(is_window_of(s, coarse, where) for s in strided)
    return count


def compare(fine_path: str, coarse_path: str, ratio: int = 2) -> Dict:
    fine = load_dataset(DataConfig(dataset="polyphonic", data_dir=fine_path))
    coarse = load_dataset(DataConfig(dataset="polyphonic", data_dir=coarse_path))
    report = {"fine": fine_path, "coarse": coarse_path, "ratio": ratio}
    for name in ("train", "valid", "test"):
        f, c = fine.split(name), coarse.split(name)
        whole = fine.train_first is None or name == "test"  # the release's test pieces are whole
        report[name] = {"fine_pieces": len(f), "fine_frames": int(sum(map(len, f))),
                        "coarse_pieces": len(c), "coarse_frames": int(sum(map(len, c))),
                        "matched": matches(f, c, ratio, whole), "matched_as": "whole piece" if whole else "window of the stream",
                        "fine_repeated_share": round(repeated_share(f), 4),
                        "coarse_repeated_share": round(repeated_share(c), 4)}
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fine", help="the finer piano-roll file (e.g. SRNN's .npz)")
    parser.add_argument("coarse", help="the coarser one (e.g. ../shared/data/jsb-chorales-quarter.json)")
    parser.add_argument("--ratio", type=int, default=2, help="frames of FINE per frame of COARSE (default: 2)")
    args = parser.parse_args(argv)
    if args.ratio < 1:
        parser.error(f"--ratio must be >= 1, got {args.ratio}")
    print(json.dumps(compare(args.fine, args.coarse, args.ratio)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
