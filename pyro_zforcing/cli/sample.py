"""``zforcing sample``: unconditional, primed and interpolated samples from a checkpoint."""

from __future__ import annotations

import argparse
from typing import List

from .common import PROG, Parser, add_checkpoint_flags, checked_out, load_for, non_negative_int, positive_int


def pair_of(text: str):
    try:
        first, second = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two sequence indices I,J, got {text!r}") from None
    return first, second


def sample_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=f"{PROG} sample", description="Samples from a trained model: unconditional, primed with real "
        "sequences, and a latent interpolation. Speech -> WAV + PNG, pixels -> PNG grid, text -> .txt.")
    add_checkpoint_flags(parser)
    parser.add_argument("-n", "--num", type=positive_int, default=8, help="samples of each kind (default: %(default)s)")
    parser.add_argument("--steps", type=positive_int, default=None,
                        help="steps per sample (default: a whole image, 2 s of speech, 40 words)")
    parser.add_argument("--prime-steps", type=positive_int, default=None,
                        help="real steps that prime the conditional samples (default: half of --steps)")
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"),
                        help="where primes and interpolation end points come from (default: %(default)s)")
    parser.add_argument("--interpolate", type=non_negative_int, default=7, metavar="N",
                        help="points on the latent interpolation between two whole sequences (the shorter padded with "
                             "the prior's mean; text decoded to <eos>, at most twice the longer), 0 for none "
                             "(default: %(default)s)")
    parser.add_argument("--pair", type=pair_of, default=(0, 1), metavar="I,J",
                        help="the two sequences of --split to interpolate between (default: 0,1)")
    return parser


def command_sample(argv: List[str]) -> int:
    from ..evaluation.samples import sample_all

    args = sample_parser().parse_args(argv)
    out = checked_out(args, "samples")  # before anything is loaded or generated
    objective, splits, device, _ = load_for(args)
    written = sample_all(objective, splits.info, splits.split(args.split), out, num=args.num, steps=args.steps,
                         prime_steps=args.prime_steps, interpolation=args.interpolate, pair=args.pair, device=device,
                         quiet=args.quiet)
    for paths in written.values():
        for path in paths:
            print(path)
    return 0

