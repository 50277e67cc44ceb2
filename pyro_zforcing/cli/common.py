"""What every command shares: the program's name, one-line argparse errors, value types, logging,
and loading a trained model from ``--checkpoint``."""

from __future__ import annotations

import argparse
import logging
import math
from typing import Optional

from ..build import load_trained, resolve_device, set_seed
from ..checkpoint import checkpoint_file

PROG = "zforcing"  # also `python -m pyro_zforcing` and `python run.py`: the same program

COMMANDS = {
    "train": "train a model (the default command: `zforcing [train] --dataset ...`)",
    "evaluate": "ELBO, IWAE(K), KL of a split from a checkpoint (eval-<split>.json/.md)",
    "sample": "unconditional, primed and interpolated samples from a checkpoint",
    "plot": "(re)draw a run's figures",
    "ablate": "train and compare named variants (guides, objectives) over seeds",
    "compare": "train and compare models (rnn, vrnn, srnn, zforcing) with matched sizes: a Table-1-style table",
}


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``zforcing CMD: error: ...``) and exit code 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog.split(' [')[0]} --help)\n")


def whole_number(low: int, high: Optional[int] = None):
    """An argparse type: a whole number in [low, high) (high None: no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value >= high):
            bound = f"must be >= {low}" if high is None else f"must be in [{low}, {high})"
            raise argparse.ArgumentTypeError(f"{bound}, got {value}")
        return value

    return parse


positive_int = whole_number(1)


non_negative_int = whole_number(0)


seed_int = whole_number(0, 2**32)  # what NumPy's seeding accepts


def finite_float(text: str) -> float:
    """A float flag's value: any finite number (NaN and infinities are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def parse_option(text: str):
    """``KEY=VALUE`` with VALUE read as int, float, true/false, or a string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    lowered = value.lower()
    if lowered in ("true", "false"):
        return key, lowered == "true"
    for cast in (int, float):
        try:
            number = cast(value)
        except ValueError:
            continue
        if not math.isfinite(number):
            raise argparse.ArgumentTypeError(f"--data-option {key}={value}: must be a finite number")
        return key, number
    return key, value


def add_checkpoint_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="a checkpoint file, or a run directory (its checkpoints/best.pt)")
    parser.add_argument("--data-dir", default=None, help="where the data lives now, if it moved since training")
    parser.add_argument("--cache-dir", default=None, help="preprocessing cache, if it moved since training")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of the sampled latents (default: %(default)s)")
    parser.add_argument("--out", default=None, help="output directory (default: the checkpoint's run directory)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")


def load_for(args):
    """(objective, splits, device) of ``--checkpoint``, with logging set up and the seed set."""
    setup_logging(args.quiet)
    args.checkpoint = checkpoint_file(args.checkpoint)  # a run directory means its best.pt
    device = resolve_device(args.device)
    objective, splits, _ = load_trained(args.checkpoint, device=device, data_dir=args.data_dir,
                                        cache_dir=args.cache_dir)
    set_seed(args.seed)
    return objective, splits, device


def setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")

