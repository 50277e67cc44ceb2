#!/usr/bin/env python
"""Command line of pyro-zforcing. argparse lives here only; the work is in the library.

    python run.py [train] [flags]        train (the default command; digits by default)
    python run.py compare [flags]        train and compare models (rnn, vrnn, srnn, zforcing)
    python run.py --help                 every flag with its default
"""

from __future__ import annotations

import argparse
import difflib
import math
import logging
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import pyro

from pyro_zforcing.studies.ablation import MODEL_VARIANTS, VARIANTS, Study, load_study_file, run_study, select_variants
from pyro_zforcing.checkpoint import CheckpointError, checkpoint_file
from pyro_zforcing.config import (AUX_INPUTS, AUX_LOSSES, EMBEDDINGS, EMISSIONS, INITS, PRIORS, Z_CONDITIONINGS,
                                   DataConfig, ModelConfig, TrainConfig)
from pyro_zforcing.files import WriteError
from pyro_zforcing.training.interrupt import Interrupted
from pyro_zforcing.data import DATASETS, DataError
from pyro_zforcing.guides import GUIDES, is_guide_spec
from pyro_zforcing.models import MODELS, default_guide
from pyro_zforcing.training import distributed
from pyro_zforcing.training.recipes import apply_recipe, check_dataset, find_recipe, preset_names
from pyro_zforcing.training.trainer import RESUMABLE, Trainer, TrainingDiverged

MODEL_DEFAULTS = ModelConfig(input_dim=1)
TRAIN_DEFAULTS = TrainConfig()
DEFAULT_DATASET = DataConfig().dataset
# Flags whose destination is not the config field of the same name.
FIELDS_OF_FLAG = {"patience": ("early_stop_patience",), "aux_weight": ("aux_start", "aux_end")}


COMMANDS = {
    "train": "train a model (the default command: `run.py [train] --dataset ...`)",
    "evaluate": "ELBO, IWAE(K), KL of a split from a checkpoint (eval-<split>.json/.md)",
    "sample": "unconditional, primed and interpolated samples from a checkpoint",
    "plot": "(re)draw a run's figures",
    "ablate": "train and compare named variants (guides, objectives) over seeds",
    "compare": "train and compare models (rnn, vrnn, srnn, zforcing) with matched sizes: a Table-1-style table",
}


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (``run.py CMD: error: ...``) and exit code 2."""

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


def add_data_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--dataset", default=DEFAULT_DATASET, choices=sorted(DATASETS),
                       help="dataset to train on (default: %(default)s, embedded; with a recipe, the recipe's)")
    group.add_argument("--preset", default=None, metavar="NAME",
                       help="a shipped recipe of the authors' settings: " + ", ".join(preset_names())
                            + "; typed flags override it (see README)")
    group.add_argument("--config", default=None, metavar="FILE.toml",
                       help="a recipe file of the same form as the presets")
    group.add_argument("--data-dir", default=None, help="where the dataset's files are (default: none)")
    group.add_argument("--data-option", dest="data_options", action="append", default=[], type=parse_option,
                       metavar="KEY=VALUE", help="a dataset-specific option, repeatable (see README)")
    group.add_argument("--skip-bad-files", action="store_true",
                       help="skip unreadable files and list them at the end instead of stopping")
    group.add_argument("--cache-dir", default=None, help="preprocessing cache folder (default: ~/.cache/pyro-zforcing)")


def add_train_flags(parser: argparse.ArgumentParser) -> None:
    m, t = MODEL_DEFAULTS, TRAIN_DEFAULTS
    model = parser.add_argument_group("model")
    model.add_argument("--model", choices=list(MODELS), default=m.model,
                       help="zforcing (the paper's), rnn (no latents), vrnn (Chung et al. 2015), srnn "
                            "(Fraccaro et al. 2016) (default: %(default)s)")
    model.add_argument("--emission", choices=EMISSIONS, default=None,
                       help="output distribution (default: the dataset's; gmm can replace gaussian)")
    model.add_argument("--mixtures", type=positive_int, default=m.mixtures,
                       help="components of the gmm emission (default: %(default)s)")
    model.add_argument("--prior", choices=PRIORS, default=m.prior,
                       help="vrnn: conditional p(z_t | h_{t-1}) or standard N(0, I) (VRNN-I) (default: %(default)s)")
    model.add_argument("--emb-dim", type=positive_int, default=m.emb_dim, help="input embedding size (default: %(default)s)")
    model.add_argument("--rnn-dim", type=positive_int, default=m.rnn_dim, help="LSTM state size (default: %(default)s)")
    model.add_argument("--z-dim", type=positive_int, default=m.z_dim, help="latent size per step (default: %(default)s)")
    model.add_argument("--mlp-dim", type=positive_int, default=m.mlp_dim, help="hidden size of the MLP heads (default: %(default)s)")
    model.add_argument("--aux-input", choices=AUX_INPUTS, default=m.aux_input,
                       help="aux cost reconstructs b_t from [h_{t-1}, z_t] (hz, authors' code) or z_t (z, paper text) (default: %(default)s)")
    model.add_argument("--aux-loss", choices=AUX_LOSSES, default=m.aux_loss,
                       help="aux cost as a Gaussian log-density or a negative squared error (default: %(default)s)")
    model.add_argument("--z-conditioning", choices=Z_CONDITIONINGS, default=m.z_conditioning,
                       help="z_t enters the forward LSTM concatenated to its input, or as the gains and biases of "
                            "a layer-normalised LSTM (cond-ln, the authors' cond_ln) (default: %(default)s)")
    model.add_argument("--embedding", choices=EMBEDDINGS, default=m.embedding,
                       help="frame embedding: Linear (the authors') or Linear + bounded leaky ReLU (default: %(default)s)")
    model.add_argument("--init", choices=INITS, default=m.init,
                       help="orthogonal recurrent weights and zero forward-LSTM biases (the authors') or "
                            "PyTorch's defaults (default: %(default)s)")
    model.add_argument("--emission-clamp", type=finite_float, default=m.emission_clamp, metavar="FLOAT",
                       help="clamp the Gaussian emission's mean and log-variance to +-FLOAT (default: none, as the "
                            "authors; 8 was this project's earlier setting)")

    obj = parser.add_argument_group("objective")
    obj.add_argument("--guide", type=guide_name, default=None, metavar="NAME|FILE.py:CLASS|MODULE:CLASS",
                     help=f"inference network: {', '.join(sorted(GUIDES))}, or your own class, built as "
                          "CLASS(model) and recorded in the run's config (default: the model's: " + ", ".join(
                              f"{name} {default_guide(name)}" for name in MODELS) + ")")
    obj.add_argument("--aux-weight", type=finite_float, default=None,
                     help="constant aux weight beta, 0 disables the aux cost (sets --aux-start and --aux-end)")
    obj.add_argument("--aux-start", type=finite_float, default=t.aux_start, help="initial aux weight (default: %(default)s)")
    obj.add_argument("--aux-end", type=finite_float, default=t.aux_end, help="final aux weight (default: %(default)s)")
    obj.add_argument("--aux-step", type=finite_float, default=t.aux_step, help="aux weight change per update (default: %(default)s)")
    obj.add_argument("--kl-start", type=finite_float, default=t.kl_start, help="initial KL weight, 1 disables annealing (default: %(default)s)")
    obj.add_argument("--kl-step", type=finite_float, default=t.kl_step, help="KL weight increase per update (default: %(default)s)")
    obj.add_argument("--bwd-weight", type=finite_float, default=t.bwd_weight,
                     help="weight of the backward language-model cost on b, applied while the aux weight is > 0 (default: %(default)s)")

    opt = parser.add_argument_group("optimisation")
    opt.add_argument("--batch-size", type=positive_int, default=t.batch_size, help="sequences per update (default: %(default)s)")
    opt.add_argument("--lr", type=finite_float, default=t.lr, help="Adam learning rate (default: %(default)s)")
    opt.add_argument("--clip-norm", type=finite_float, default=t.clip_norm, help="global gradient-norm clip (default: %(default)s)")
    opt.add_argument("--epochs", type=positive_int, default=t.epochs, help="passes over the training set (default: %(default)s)")
    opt.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many updates (default: no limit)")
    opt.add_argument("--patience", type=positive_int, default=t.early_stop_patience,
                     help="epochs without validation improvement before stopping (default: %(default)s)")
    opt.add_argument("--log-every", type=positive_int, default=t.log_every, help="updates between metric records (default: %(default)s)")
    opt.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="N",
                     help="also write checkpoints/last.pt every N updates within an epoch (default: at epoch ends)")
    opt.add_argument("--seed", type=seed_int, default=t.seed, help="seed for everything (default: %(default)s)")
    opt.add_argument("--device", default=t.device, help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    opt.add_argument("--validate", action="store_true", help="turn on Pyro's argument and shape validation (about 10%% slower)")


def add_run_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None, help="run directory (default: runs/<dataset>-<timestamp>)")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR",
                        help="continue the run in RUN_DIR from its last checkpoint (--epochs/--max-steps/--device may change)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run already in --out (its files of ours are deleted; others are kept)")
    parser.add_argument("--tensorboard", action="store_true",
                        help="also log to RUN_DIR/tensorboard: scalars, KL per step and samples at each epoch")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")


def train_parser() -> argparse.ArgumentParser:
    commands = "\n".join(f"  {name:<9} {line}" for name, line in COMMANDS.items())
    parser = Parser(
        prog="run.py [train]", formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
        description="Z-Forcing in Pyro. Commands (`run.py COMMAND --help` lists each one's flags):\n"
                    f"{commands}\n\nThe flags below are train's: SVI with Trace_ELBO and the aux factor.")
    add_data_flags(parser)
    add_train_flags(parser)
    add_run_flags(parser)
    return parser


def data_config_from(args) -> DataConfig:
    return DataConfig(dataset=args.dataset, data_dir=args.data_dir, seed=args.seed,
                      skip_bad_files=args.skip_bad_files, cache_dir=args.cache_dir,
                      options=dict(args.data_options))


def train_config_from(args) -> TrainConfig:
    aux_start, aux_end = args.aux_start, args.aux_end
    if args.aux_weight is not None:
        aux_start = aux_end = args.aux_weight
    return TrainConfig(guide=args.guide or default_guide(args.model), batch_size=args.batch_size, lr=args.lr, clip_norm=args.clip_norm,
                       epochs=args.epochs, max_steps=args.max_steps, kl_start=args.kl_start, kl_step=args.kl_step,
                       aux_start=aux_start, aux_end=aux_end, aux_step=args.aux_step, bwd_weight=args.bwd_weight,
                       early_stop_patience=args.patience, log_every=args.log_every,
                       checkpoint_every=args.checkpoint_every, seed=args.seed, device=args.device, validate=args.validate)


def model_sizes_from(args) -> Dict:
    sizes = {"emb_dim": args.emb_dim, "rnn_dim": args.rnn_dim, "z_dim": args.z_dim, "mlp_dim": args.mlp_dim,
             "aux_input": args.aux_input, "aux_loss": args.aux_loss, "z_conditioning": args.z_conditioning,
             "embedding": args.embedding, "init": args.init, "emission_clamp": args.emission_clamp,
             "model": args.model, "mixtures": args.mixtures, "prior": args.prior}
    if args.emission is not None:
        sizes["emission"] = args.emission
    return sizes


def typed_fields(parser: argparse.ArgumentParser, argv: List[str]) -> set:
    """The config fields set by flags typed in ``argv`` (or by ``parser.set_defaults``, as a study
    file does): ``argv`` parsed again with every flag's default suppressed."""
    saved = [(action, action.default) for action in parser._actions]
    try:
        for action, _ in saved:
            action.default = argparse.SUPPRESS
        given = set(vars(parser.parse_args(argv)))
    finally:
        for action, default in saved:
            action.default = default
    return {name for dest in given for name in FIELDS_OF_FLAG.get(dest, (dest,))}


def resolve_settings(parser: argparse.ArgumentParser, argv: List[str], args):
    """(data config, train config, model sizes, recipe description or None): the dataclass
    defaults, then the recipe of ``--preset``/``--config``, then the flags typed in ``argv``."""
    data, train, model = data_config_from(args), train_config_from(args), model_sizes_from(args)
    recipe = find_recipe(preset=args.preset, config=args.config)
    if recipe is None:
        return data, train, model, None
    given = typed_fields(parser, argv)
    dataset = check_dataset(recipe, args.dataset if "dataset" in given else None)
    from dataclasses import replace
    model, train, data = apply_recipe(recipe, model=model, train=train, data=replace(data, dataset=dataset),
                                      given=given)
    return replace(data, seed=train.seed), train, model, recipe.describe()  # one seed, as --seed sets both


def default_out_dir(dataset: str) -> Path:
    return Path("runs") / f"{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


RESUME_FLAGS = ("--resume", "--epochs", "--max-steps", "--device", "--checkpoint-every", "--tensorboard", "--quiet")


def resume_overrides(parser: argparse.ArgumentParser, argv: List[str]) -> Dict:
    """The settings a ``--resume`` may change (epochs, max steps, device), only those given.

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
    try:
        ranks = {"rank": group.rank, "world_size": group.world_size}
        if args.resume:
            overrides = resume_overrides(parser, argv)
            trainer = Trainer.resume(args.resume, quiet=args.quiet, tensorboard=args.tensorboard, **ranks, **overrides)
            if trainer.finished():
                raise ValueError(trainer.finished())
        else:
            data, train, model, recipe = resolve_settings(parser, argv, args)
            out = Path(args.out) if args.out else distributed.from_main(default_out_dir(data.dataset))
            trainer = Trainer.create(data_config=data, train_config=train, out_dir=out, model_sizes=model,
                                     quiet=args.quiet, recipe=recipe, overwrite=args.overwrite,
                                     tensorboard=args.tensorboard, **ranks)
        pyro.enable_validation(trainer.config.validate)  # Pyro validates by default; training only with --validate
        summary = trainer.fit()
    finally:
        distributed.shutdown()
    if not group.is_main:
        return 0
    write_training_plots(trainer.out_dir)
    logging.getLogger("run").info("run directory: %s (%.1f s)", trainer.out_dir, summary["time_s"])
    return 0


def write_training_plots(run_dir: Path) -> None:
    """Learning curves (and the evaluation figures, if the run was evaluated) into ``run_dir``."""
    from pyro_zforcing.evaluation.plots import plot_run

    try:
        for path in plot_run(run_dir):
            logging.getLogger("run").info("wrote %s", path)
    except (OSError, ValueError, KeyError) as error:  # a figure must never fail a finished run
        logging.getLogger("run").warning("could not draw the figures of %s: %s", run_dir, error)


def ablate_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="run.py ablate",
        description="Train named variants (guides, objectives) with identical data, sizes and budget, "
                    "evaluate each on the test split with IWAE, and compare them. The train flags set "
                    "the base every variant starts from; an interrupted study resumes where it stopped.")
    parser.add_argument("--variants", default=None,
                        help="comma-separated variant names (default: no-aux,aux,kla); known: "
                             + ", ".join(VARIANTS))
    parser.add_argument("--seeds", type=positive_int, default=3,
                        help="seeds per variant: --seed, --seed+1, ... (default: %(default)s)")
    parser.add_argument("--study", default=None, metavar="FILE.json",
                        help="study file: {\"variants\": {name: {setting: value}} or [names], and any flag "
                             "of this command by its long name with underscores, as defaults}")
    parser.add_argument("--iwae-samples", type=positive_int, default=25,
                        help="importance samples K of the test IWAE bound (default: %(default)s)")
    parser.add_argument("--eval-batch-size", type=positive_int, default=50,
                        help="sequences per evaluation batch (default: %(default)s)")
    add_data_flags(parser)
    add_train_flags(parser)
    parser.add_argument("--study-dir", "--out", dest="study_dir", default=None,
                        help="study directory (default: runs/ablate-<dataset>-<timestamp>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    return parser


def study_defaults(parser: argparse.ArgumentParser, values: Dict, path: str) -> Dict:
    """A study file's flag values, checked and converted as the flags' own types would."""
    actions = {action.dest: action for action in parser._actions}
    checked = {}
    for key, value in values.items():
        action = actions[key]
        try:
            if isinstance(action, argparse._StoreTrueAction):
                if not isinstance(value, bool):
                    raise argparse.ArgumentTypeError(f"expected true or false, got {value!r}")
            elif key == "data_options":
                if not isinstance(value, dict):
                    raise argparse.ArgumentTypeError(f"expected an object of options, got {value!r}")
                value = [parse_option(f"{k}={v}") for k, v in value.items()]
            elif value is not None and action.type is not None:
                if isinstance(value, (dict, list, bool)):
                    raise argparse.ArgumentTypeError(f"expected a single value, got {value!r}")
                value = action.type(str(value))
            if action.choices is not None and value not in action.choices:
                raise argparse.ArgumentTypeError(f"must be one of {', '.join(map(str, action.choices))}, got {value!r}")
        except argparse.ArgumentTypeError as error:
            raise ValueError(f"{path}: {key}: {error}") from None
        checked[key] = value
    return checked


def parse_study_args(parser: argparse.ArgumentParser, argv: List[str]):
    """(args, variants a --study file defines, variant names it lists) with the file's keys as defaults."""
    args = parser.parse_args(argv)
    extra_variants, file_names = {}, None
    if args.study:
        values = load_study_file(args.study)
        variants = values.pop("variants", None)
        known = {action.dest for action in parser._actions} - {"help", "study"}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{args.study}: unknown keys {unknown}")
        if isinstance(variants, dict):
            extra_variants, file_names = variants, list(variants)
        elif variants is not None:
            file_names = list(variants)
        parser.set_defaults(**study_defaults(parser, values, args.study))
        args = parser.parse_args(argv)
    return args, extra_variants, file_names


def study_from(parser: argparse.ArgumentParser, argv: List[str], args, names: List[str],
               extra_variants: Dict) -> Study:
    """The study the flags (and recipe, and study file) describe, over the variants ``names``."""
    data, train, model, _ = resolve_settings(parser, argv, args)
    return Study(data=data, train=train, model=model,
                 variants=select_variants([n.strip() for n in names], extra_variants),
                 seeds=tuple(range(args.seed, args.seed + args.seeds)),
                 iwae_samples=args.iwae_samples, eval_batch_size=args.eval_batch_size)


def study_dir_of(args, command: str, dataset: str) -> Path:
    return Path(args.study_dir) if args.study_dir else Path("runs") / f"{command}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def command_ablate(argv: List[str]) -> int:
    parser = ablate_parser()
    args, extra_variants, file_names = parse_study_args(parser, argv)
    setup_logging(args.quiet)
    names = args.variants.split(",") if args.variants else (file_names or ["no-aux", "aux", "kla"])
    study = study_from(parser, argv, args, names, extra_variants)
    study_dir = study_dir_of(args, "ablate", study.data.dataset)
    run_study(study, study_dir, quiet=args.quiet)
    logging.getLogger("run").info("study directory: %s (study.csv, study.md, study.png)", study_dir)
    print((study_dir / "study.md").read_text(), end="")
    return 0


def compare_parser() -> argparse.ArgumentParser:
    parser = ablate_parser()
    parser.prog = "run.py compare"
    parser.description = ("Train models (rnn, vrnn, srnn, zforcing and their variants) with identical data, "
                          "budget and, with --match-params, parameter counts; evaluate each on the test split "
                          "(ELBO, IWAE) and write compare.csv, compare.md and compare.png (an ablation whose "
                          "variants are models). The train flags set the base every model starts from.")
    parser.add_argument("--models", default="rnn,vrnn,srnn,zforcing",
                        help="comma-separated models or model variants (default: %(default)s); known: "
                             + ", ".join(MODEL_VARIANTS))
    parser.add_argument("--match-params", action="store_true",
                        help="resize each model's --rnn-dim (and --mlp-dim in proportion) so its parameters "
                             "(model + guide) are within 5%% of --match-to's; sizes are printed and saved")
    parser.add_argument("--match-to", default=None,
                        help="the model whose size is kept (default: zforcing if compared, else the first)")
    return parser


def command_compare(argv: List[str]) -> int:
    from pyro_zforcing.studies.compare import match_parameters, sizes_table, write_comparison, write_sizes
    from pyro_zforcing.data import load_dataset

    parser = compare_parser()
    args, extra_variants, _ = parse_study_args(parser, argv)
    if args.variants:
        raise ValueError("compare takes --models, not --variants")
    setup_logging(args.quiet)
    names = [n.strip() for n in args.models.split(",")]
    study = study_from(parser, argv, args, names, extra_variants)
    study_dir = study_dir_of(args, "compare", study.data.dataset)
    splits = load_dataset(study.data)
    if args.match_params:
        reference = args.match_to or ("zforcing" if "zforcing" in names else names[0])
        study, chosen = match_parameters(study, splits.info, reference=reference)
        write_sizes(study_dir, chosen, reference=reference)
        print(sizes_table(chosen, reference=reference))
    results = run_study(study, study_dir, quiet=args.quiet, splits=splits)
    print(write_comparison(study_dir, results, splits.info, iwae_samples=study.iwae_samples), end="")
    logging.getLogger("run").info("study directory: %s (compare.csv, compare.md, compare.png)", study_dir)
    return 0


def add_checkpoint_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="a checkpoint file, or a run directory (its checkpoints/best.pt)")
    parser.add_argument("--data-dir", default=None, help="where the data lives now, if it moved since training")
    parser.add_argument("--cache-dir", default=None, help="preprocessing cache, if it moved since training")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    parser.add_argument("--seed", type=seed_int, default=0, help="seed of the sampled latents (default: %(default)s)")
    parser.add_argument("--out", default=None, help="output directory (default: the checkpoint's run directory)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")


def evaluate_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="run.py evaluate", description="Per-sequence ELBO, IWAE(K), KL and reconstruction of a split "
        "(aux factor excluded), in nats per sequence, per step and per unit; writes eval-<split>.json, "
        "eval-<split>.md and plots.")
    add_checkpoint_flags(parser)
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"), help="(default: %(default)s)")
    parser.add_argument("--iwae-samples", type=positive_int, default=25, help="importance samples K (default: %(default)s)")
    parser.add_argument("--iwae-chunk", type=positive_int, default=None,
                        help="particles traced at once (default: as many as keep about 16M input values in memory)")
    parser.add_argument("--batch-size", type=positive_int, default=32, help="sequences per batch (default: %(default)s)")
    parser.add_argument("--no-plots", action="store_true", help="skip the KL-per-step and gap figures")
    parser.add_argument("--validate", action="store_true",
                        help="turn on Pyro's distribution validation (off by default: it costs time and memory)")
    parser.add_argument("--protocol", default="ours", choices=("ours", "paper", "both"),
                        help="ours: whole sequences, ELBO and IWAE (eval-<split>.json); paper: the authors' eval_timit.py "
                             "(40-frame windows, states reset, one sample, analytic KL; eval_paper-<split>.json), the number "
                             "to compare with the paper's Table 1; both (default: %(default)s)")
    return parser


def load_for(args):
    """(objective, splits, device) of ``--checkpoint``, with logging set up and the seed set."""
    from pyro_zforcing.evaluation.bounds import load_trained
    from pyro_zforcing.training.trainer import resolve_device, set_seed

    setup_logging(args.quiet)
    args.checkpoint = checkpoint_file(args.checkpoint)  # a run directory means its best.pt
    device = resolve_device(args.device)
    objective, splits, _ = load_trained(args.checkpoint, device=device, data_dir=args.data_dir,
                                        cache_dir=args.cache_dir)
    set_seed(args.seed)
    return objective, splits, device


def command_evaluate(argv: List[str]) -> int:
    from pyro_zforcing.evaluation.bounds import evaluate_split, markdown_table, report_name, run_dir_of, write_report

    args = evaluate_parser().parse_args(argv)
    objective, splits, device = load_for(args)
    meta = {"checkpoint": str(args.checkpoint), "split": args.split, "seed": args.seed, "device": str(device)}
    out = Path(args.out) if args.out else run_dir_of(args.checkpoint)
    if args.protocol in ("ours", "both"):
        result = evaluate_split(objective, splits.split(args.split), splits.info, num_samples=args.iwae_samples,
                                batch_size=args.batch_size, chunk=args.iwae_chunk, device=device, quiet=args.quiet,
                                validate=args.validate)
        result.meta = meta
        report = write_report(result, out)
        if not args.no_plots:
            from pyro_zforcing.evaluation.plots import eval_figures
            eval_figures(report, out)
        print(markdown_table(report), end="")
        name = report_name(args.split)
        logging.getLogger("run").info("wrote %s and %s", out / f"{name}.json", out / f"{name}.md")
    if args.protocol in ("paper", "both"):
        from pyro_zforcing.evaluation.paper_protocol import evaluate_paper, markdown_lines

        paper = evaluate_paper(objective, splits.split(args.split), splits.info, device=device, quiet=args.quiet)
        paper.meta = meta
        report = write_report(paper, out, name="eval_paper", render=markdown_lines)
        print(("\n" if args.protocol == "both" else "") + markdown_lines(report), end="")
        name = report_name(args.split, "eval_paper")
        logging.getLogger("run").info("wrote %s and %s", out / f"{name}.json", out / f"{name}.md")
    return 0


def pair_of(text: str):
    try:
        first, second = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two sequence indices I,J, got {text!r}") from None
    return first, second


def sample_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="run.py sample", description="Samples from a trained model: unconditional, primed with real "
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
                        help="points on the latent interpolation, 0 for none (default: %(default)s)")
    parser.add_argument("--pair", type=pair_of, default=(0, 1), metavar="I,J",
                        help="the two sequences of --split to interpolate between (default: 0,1)")
    return parser


def command_sample(argv: List[str]) -> int:
    from pyro_zforcing.evaluation.bounds import run_dir_of
    from pyro_zforcing.evaluation.samples import sample_all

    args = sample_parser().parse_args(argv)
    objective, splits, device = load_for(args)
    out = Path(args.out) if args.out else run_dir_of(args.checkpoint) / "samples"
    written = sample_all(objective, splits.info, splits.split(args.split), out, num=args.num, steps=args.steps,
                         prime_steps=args.prime_steps, interpolation=args.interpolate, pair=args.pair, device=device)
    for paths in written.values():
        for path in paths:
            print(path)
    return 0


def plot_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="run.py plot", description="(Re)draw a run's figures as PNG in the run directory.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (with metrics.jsonl, eval-<split>.json)")
    parser.add_argument("--quiet", action="store_true", help="warnings only")
    return parser


def command_plot(argv: List[str]) -> int:
    from pyro_zforcing.evaluation.plots import plot_run

    args = plot_parser().parse_args(argv)
    setup_logging(args.quiet)
    for path in plot_run(args.run_dir):
        print(path)
    return 0


def setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


HANDLERS = {"train": command_train, "ablate": command_ablate, "compare": command_compare, "evaluate": command_evaluate,
            "sample": command_sample, "plot": command_plot}


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-") and argv[0] not in HANDLERS:
        nearest = difflib.get_close_matches(argv[0], list(HANDLERS), n=1)
        guess = f"; did you mean {nearest[0]!r}?" if nearest else ""
        print(f"run.py: error: unknown command {argv[0]!r}{guess} (commands: {', '.join(COMMANDS)}; "
              "see run.py --help)", file=sys.stderr)
        return 2
    command = argv.pop(0) if argv and argv[0] in HANDLERS else "train"
    try:
        return HANDLERS[command](argv)
    except SystemExit as done:  # argparse: --help (0) or a bad flag (2, its one line already printed)
        return done.code if isinstance(done.code, int) else 2
    except (ValueError, DataError, CheckpointError, TrainingDiverged, FileNotFoundError, WriteError) as error:
        print(f"run.py {command}: error: {error}", file=sys.stderr)
        return 1 if isinstance(error, (TrainingDiverged, WriteError)) else 2
    except Interrupted as stop:
        print(f"run.py {command}: {stop}", file=sys.stderr)
        return stop.exit_code
    except KeyboardInterrupt:
        print(f"run.py {command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
