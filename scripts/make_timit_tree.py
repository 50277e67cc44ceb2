#!/usr/bin/env python
"""Build a TIMIT-shaped tree of real NIST SPHERE files from recorded prompts, with sox.

    python scripts/make_timit_tree.py OUT_DIR [--source DIR] [--test-fraction 0.2] [--per-speaker 10]

Every ``*.wav`` of ``--source`` (default: Debian's asterisk-core-sounds-en-wav, one speaker's
568 telephone prompts at 8 kHz) is converted by ``sox IN -r 16000 -b 16 -t sph OUT.WAV`` into
``OUT_DIR/{TRAIN,TEST}/DR<k>/<SPEAKER>/<UTT>.WAV``: the layout and file format of the LDC
TIMIT release, so ``--dataset timit`` / ``--preset timit`` read it as they read TIMIT. The
first files (sorted by name) go to TRAIN, the last ``--test-fraction`` to TEST, in pseudo-
speakers of ``--per-speaker`` utterances spread over dialect regions DR1..DR8.
Prints the number of files written per split.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ASTERISK = Path("/usr/share/asterisk/sounds/en_US_f_Allison")


def build_tree(out_dir: Path, *, source: Path = ASTERISK, test_fraction: float = 0.2, per_speaker: int = 10,
               limit: int = 0) -> dict:
    """Convert the ``*.wav`` files of ``source`` (the first ``limit`` if > 0) into a TIMIT tree."""
    if shutil.which("sox") is None:
        raise SystemExit("make_timit_tree.py: error: sox is not installed (apt-get install sox)")
    files = sorted(source.rglob("*.wav"))
    if limit > 0:
        files = files[:limit]
    if len(files) < 2:
        raise SystemExit(f"make_timit_tree.py: error: {source}: fewer than 2 .wav files")
    test_count = max(1, round(test_fraction * len(files)))
    splits = {"TRAIN": files[:-test_count], "TEST": files[-test_count:]}
    counts = {}
    for split, paths in splits.items():
        for index, path in enumerate(paths):
            speaker = index // per_speaker
            region = f"DR{1 + speaker % 8}"
            name = f"{'FM'[speaker % 2]}{split[:2]}{speaker:02d}0"
            target = out_dir / split / region / name / f"SX{index % per_speaker + 1}.WAV"
            target.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["sox", str(path), "-r", "16000", "-b", "16", "-t", "sph", str(target)],
                           check=True, capture_output=True)
        counts[split] = len(paths)
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, metavar="OUT_DIR")
    parser.add_argument("--source", type=Path, default=ASTERISK, help="folder of .wav files (default: %(default)s)")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="share of files in TEST (default: %(default)s)")
    parser.add_argument("--per-speaker", type=int, default=10, help="utterances per pseudo-speaker (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N files (default: all)")
    args = parser.parse_args(argv)
    counts = build_tree(args.out_dir, source=args.source, test_fraction=args.test_fraction,
                        per_speaker=args.per_speaker, limit=args.limit)
    print(f"{args.out_dir}: " + ", ".join(f"{split} {n} files" for split, n in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
