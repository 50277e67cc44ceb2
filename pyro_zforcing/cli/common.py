"""What every command shares: the program's name, one-line argparse errors, value types, logging,
loading a trained model from ``--checkpoint`` (saying which one), and preparing the folder a
command writes into."""

from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Dict, Optional

from ..build import load_trained, resolve_device, run_dir_of, set_seed
from ..checkpoint import CheckpointError, checkpoint_file
from ..files import MANIFEST, manifest_entries, prepare_output_dir, remove_orphans, track
from ..guides import GUIDES, is_guide_spec

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


def path_text(text: str) -> str:
    """An argparse type: a path, never empty (an empty ``--out`` must not mean the default)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a path, got an empty string")
    return text


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


def guide_name(text: str) -> str:
    """A registered guide name, or ``FILE.py:Class`` (made absolute, so the config records where
    it is) or ``module:Class``."""
    if text in GUIDES:
        return text
    if is_guide_spec(text):
        source, _, name = text.rpartition(":")
        return f"{Path(source).resolve()}:{name}" if source.endswith(".py") else text
    raise argparse.ArgumentTypeError(
        f"unknown guide {text!r}; known: {', '.join(sorted(GUIDES))}, or FILE.py:CLASS, or MODULE:CLASS")


def add_checkpoint_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, type=path_text,
                        help="a checkpoint file, or a run directory (its checkpoints/best.pt)")
    parser.add_argument("--data-dir", default=None, type=path_text, help="where the data lives now, if it moved since training")
    parser.add_argument("--cache-dir", default=None, type=path_text, help="preprocessing cache, if it moved since training")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of the sampled latents (default: %(default)s)")
    parser.add_argument("--out", default=None, type=path_text, help="output directory (default: the checkpoint's run directory)")
    add_guide_trust_flags(parser, named=True)
    parser.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")


def add_guide_trust_flags(parser: argparse.ArgumentParser, *, named: bool) -> None:
    """``--trust-guide`` (and, with ``named``, ``--guide``): how a checkpoint's custom guide may be imported."""
    if named:
        parser.add_argument("--guide", type=guide_name, default=None, metavar="FILE.py:CLASS|MODULE:CLASS",
                            help="the custom guide the checkpoint was trained with, named again so that its "
                                 "code may be imported (a checkpoint never imports code by itself)")
    parser.add_argument("--trust-guide", action="store_true",
                        help="import the custom guide class the checkpoint records without naming it")


def load_for(args):
    """(objective, splits, device, checkpoint state) of ``--checkpoint``, with logging set up, the
    seed set, and a line saying which checkpoint (and training step) is used."""
    setup_logging(args.quiet)
    args.checkpoint = checkpoint_file(args.checkpoint)  # a run directory means its best.pt
    device = resolve_device(args.device)
    objective, splits, state = load_trained(args.checkpoint, device=device, data_dir=args.data_dir,
                                            cache_dir=args.cache_dir, guide=args.guide,
                                            trust_guide=args.trust_guide)
    set_seed(args.seed)
    logging.getLogger(PROG).info("using %s", describe_checkpoint(args.checkpoint, state))
    return objective, splits, device, state


def checkpoint_position(state: Dict) -> Dict:
    """The training step and epoch a checkpoint's weights are from (None if it does not say)."""
    progress = state.get("progress") or {}
    return {"checkpoint_step": progress.get("step"), "checkpoint_epoch": progress.get("epoch")}


def describe_checkpoint(path, state: Dict) -> str:
    """``PATH (step N, epoch E)``, and a warning when it is a run's untrained ``best.pt``."""
    position = checkpoint_position(state)
    step, epoch = position["checkpoint_step"], position["checkpoint_epoch"]
    text = f"{path}" + (f" (step {step}, epoch {epoch})" if step is not None else "")
    last = Path(path).with_name("last.pt")
    if step == 0 and Path(path).name == "best.pt" and last.is_file():
        logging.getLogger(PROG).warning("%s is the untrained model (step 0): no trained model of this run "
                                        "was validated; %s holds the latest weights", path, last)
    return text


def prepare_out(out, *, what: str = "output directory") -> Path:
    """Check the folder a command writes into (:func:`~pyro_zforcing.files.prepare_output_dir`; it
    is made at the first write), remove the temporaries that killed writers left in it, and, when
    it is a run directory or a folder of one, record what is written there in that run's manifest."""
    out = prepare_output_dir(out, what=what, create=False)
    remove_orphans(out, exclusive=False, quiet_seconds=0)
    for folder in (out, out.parent):
        if (folder / MANIFEST).is_file():
            manifest_entries(folder)  # a manifest that is not ours is a one-line error naming it
            track(folder)
            break
    return out


def checked_out(args, folder: str = "") -> Path:
    """The checked output folder of a command reading ``--checkpoint`` (which must exist, so a
    mistyped checkpoint is said first): ``--out``, else the checkpoint's run directory (or its
    ``folder``); see :func:`prepare_out`."""
    args.checkpoint = checkpoint_file(args.checkpoint)  # a run directory means its best.pt
    if not args.checkpoint.is_file():
        raise CheckpointError(f"checkpoint not found: {args.checkpoint}")
    run_dir = run_dir_of(args.checkpoint)
    return prepare_out(Path(args.out) if args.out else run_dir / folder if folder else run_dir)


def setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
