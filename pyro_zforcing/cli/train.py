"""``zforcing [train]``: train a model into a run directory, or continue one with ``--resume``."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Dict, List

import pyro

from ..training import distributed
from ..training.interrupt import Interrupted
from ..training.trainer import RESUMABLE, Trainer, TrainingDiverged
from .common import COMMANDS, PROG, Parser, add_guide_trust_flags, path_text, setup_logging
from .flags import add_data_flags, add_train_flags, resolve_settings


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None, type=path_text, help="run directory (default: runs/<dataset>-<timestamp>)")
    parser.add_argument("--resume", default=None, type=path_text, metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its last checkpoint (--epochs/--max-steps/--device and "
                             "the speed flags may change)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in --out (its files of ours are deleted; others are kept)")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also log to RUN_DIR/tensorboard: scalars, KL per step and samples at each epoch")
    add_guide_trust_flags(parser, named=False)  # with --resume; --guide names the run's custom guide again
    parser.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")


def train_parser() -> argparse.ArgumentParser:
    commands = "\n".join(f"  {name:<9} {line}" for name, line in COMMANDS.items())
    parser = Parser(
        prog=f"{PROG} [train]", formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
        description=f"Z-Forcing in Pyro ({PROG}, python -m pyro_zforcing and python run.py are this program). "
                    f"Commands (`{PROG} COMMAND --help` lists each one's flags):\n"
                    f"{commands}\n\nThe flags below are train's: SVI on the ELBO (the closed-form KL by default, "
                    f"--kl sampled for Trace_ELBO's) and the aux factor.")
    add_data_flags(parser)
    add_train_flags(parser)
    add_run_flags(parser)
    return parser


def default_out_dir(dataset: str) -> Path:
    return Path("runs") / f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


RESUME_FLAGS = ("--resume", "--epochs", "--max-steps", "--device", "--checkpoint-every", "--tensorboard", "--quiet",
                "--compile", "--no-compile", "--cuda-graphs", "--no-cuda-graphs", "--length-bucket", "--guide",
                "--trust-guide")


def resume_overrides(parser: argparse.ArgumentParser, argv: List[str]) -> Dict:
    """The settings a ``--resume`` may change (epochs, max steps, device, the speed flags), only those given.

    A resumed run keeps its saved configs; any other flag is refused rather than ignored.
    """
    given = {option: action.dest for action in parser._actions for option in action.option_strings
             if any(arg == option or arg.startswith(option + "=") for arg in argv)}
    refused = sorted(set(given) - set(RESUME_FLAGS))
    if refused:
        raise ValueError(f"--resume continues a run with its saved settings; only {', '.join(RESUME_FLAGS)} "
                         f"may be given with it (got {', '.join(refused)})")
    args = parser.parse_args(argv)
    return {dest: getattr(args, dest) for option, dest in given.items() if dest in RESUMABLE}


def command_train(argv: List[str]) -> int:
    parser = train_parser()
    args = parser.parse_args(argv)
    group = distributed.from_env(args.device)  # one process unless launched by torchrun
    setup_logging(args.quiet or not group.is_main)
    finished = False
    try:
        ranks = {"rank": group.rank, "world_size": group.world_size}
        if args.resume:
            overrides = resume_overrides(parser, argv)
            trainer = Trainer.resume(args.resume, quiet=args.quiet, tensorboard=args.tensorboard, guide=args.guide,
                                     trust_guide=args.trust_guide, **ranks, **overrides)
            if trainer.finished():
                raise ValueError(trainer.finished())
        else:
            if args.trust_guide:
                raise ValueError("--trust-guide goes with --resume (a new run imports the --guide it names)")
            data, train, model, recipe = resolve_settings(parser, argv, args)
            out = Path(args.out) if args.out else distributed.from_main(default_out_dir(data.dataset))
            trainer = Trainer.create(data_config=data, train_config=train, out_dir=out, model_sizes=model,
                                     quiet=args.quiet, recipe=recipe, overwrite=args.overwrite,
                                     tensorboard=args.tensorboard, **ranks)
        pyro.enable_validation(trainer.config.validate)  # Pyro validates by default; training only with --validate
        try:
            summary = trainer.fit()
        except (Interrupted, TrainingDiverged):
            if group.is_main:
                write_training_plots(trainer.out_dir)  # a stopped run has its learning curves too
            raise
        finished = True
    finally:
        distributed.shutdown(peers_finished=finished)
    if not group.is_main:
        return 0
    write_training_plots(trainer.out_dir)
    logging.getLogger(PROG).info("run directory: %s (%.1f s)", trainer.out_dir, summary["time_s"])
    return 0


def write_training_plots(run_dir: Path) -> None:
    """Learning curves (and the evaluation figures, if the run was evaluated) into ``run_dir``."""
    from ..evaluation.plots import plot_run

    try:
        for path in plot_run(run_dir):
            logging.getLogger(PROG).info("wrote %s", path)
    except (OSError, ValueError, KeyError) as error:  # a figure must never fail a finished run
        logging.getLogger(PROG).warning("could not draw the figures of %s: %s", run_dir, error)

