"""``zforcing ablate`` and ``zforcing compare``: one study runner over variants of guides,
objectives or models, from flags and an optional study file."""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List

from ..data import load_dataset
from ..evaluation.bounds import check_iwae_samples
from ..files import prepare_output_dir
from ..studies.ablation import (MODEL_VARIANTS, STUDY_EPOCHS, VARIANTS, Study, budget_text, budgets, default_jobs,
                                finished_runs, load_study_file, run_study, select_variants)
from ..studies.launch import LAUNCHERS, LocalProcesses, SubmititJobs, threads_per_job
from ..studies.compare import MATCH_KINDS, match_parameters, sizes_table, write_comparison, write_sizes
from ..training.recipes import apply_recipe, find_recipe, preset_names
from .common import PROG, Parser, finite_float, guide_name, parse_option, path_text, positive_int, setup_logging
from .flags import add_data_flags, add_train_flags, data_config_from, model_sizes_from, resolve_settings, \
    train_config_from, typed_fields


def ablate_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog=f"{PROG} ablate",
        description="Train named variants (guides, objectives) with identical data, sizes and budget, "
                    "evaluate each on the test split with IWAE, and compare them. The train flags set "
                    "the base every variant starts from; an interrupted study resumes where it stopped.")
    parser.add_argument("--variants", default=None,
                        help="comma-separated variant names (default: no-aux,aux,kla); known: "
                             + ", ".join(VARIANTS))
    parser.add_argument("--seeds", type=positive_int, default=3,
                        help="seeds per variant: --seed, --seed+1, ... (default: %(default)s)")
    parser.add_argument("--study", default=None, type=path_text, metavar="FILE.json",
                        help="study file: {\"variants\": {name: {setting: value}} or [names], and any flag "
                             "of this command by its long name with underscores, as defaults}")
    parser.add_argument("--iwae-samples", type=positive_int, default=25,
                        help="importance samples K of the test IWAE bound (default: %(default)s)")
    parser.add_argument("--eval-batch-size", type=positive_int, default=50,
                        help="sequences per evaluation batch (default: %(default)s)")
    add_data_flags(parser)
    add_train_flags(parser)
    for action in parser._actions:  # the action's own default, so that a recipe's epochs still apply
        if action.dest == "epochs":
            action.default = STUDY_EPOCHS
            action.help = ("epoch cap of every run; runs end earlier by validation early stopping (--patience) "
                           "(default: %(default)s)")
    parser.add_argument("--study-dir", "--out", dest="study_dir", default=None, type=path_text,
                        help="study directory (default: runs/ablate-<dataset>-<timestamp>)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    add_launch_flags(parser)
    return parser


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = finite_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def jobs_count(text: str):
    """``--jobs``: a whole number >= 1, or ``auto``."""
    return text if text == "auto" else positive_int(text)


def add_launch_flags(parser: argparse.ArgumentParser) -> None:
    """Where the runs train: ``--jobs``, ``--launcher`` and the SLURM request (pyro_zforcing.studies.launch)."""
    parser.add_argument("--jobs", type=jobs_count, default="auto", metavar="N|auto",
                        help="runs trained at once: N processes of this machine, each with max(1, cores // N) "
                             "threads (1: one after another in this process); with --launcher slurm, jobs running "
                             "at once. auto: the fewest of the usable cores, the runs left to train and the runs "
                             "whose memory estimate fits in the available memory (default: %(default)s)")
    parser.add_argument("--launcher", choices=LAUNCHERS, default="local",
                        help="local: processes of this machine (--jobs); slurm: one SLURM job per run through "
                             "submitit (pip install \"pyro-zforcing[cluster]\"; the study directory must be on a "
                             "file system every node sees); submitit-local: the same jobs run by submitit on this "
                             "machine, all at once (default: %(default)s)")
    parser.add_argument("--slurm-partition", default=None, help="SLURM partition of the jobs (default: the cluster's)")
    parser.add_argument("--slurm-time", type=positive_int, default=24 * 60, metavar="MINUTES",
                        help="time limit of each job in minutes (default: %(default)s)")
    parser.add_argument("--slurm-cpus", type=positive_int, default=1, metavar="N",
                        help="CPUs per job, and the run's threads (default: %(default)s)")
    parser.add_argument("--slurm-mem", type=positive_float, default=None, metavar="GB",
                        help="memory per job in GB (default: the cluster's)")


def launcher_from(args, study: Study, splits, study_dir: Path):
    """The launcher of ``--launcher`` and ``--jobs``; None: the runs train in this process."""
    if args.launcher == "local":
        runs = len(study.variants) * len(study.seeds) - len(finished_runs(study, study_dir))
        jobs = default_jobs(study, splits, runs=runs) if args.jobs == "auto" else args.jobs
        return None if jobs == 1 else LocalProcesses(jobs=jobs, threads=threads_per_job(jobs))
    runs = len(study.variants) * len(study.seeds)
    if args.launcher == "slurm":
        return SubmititJobs(folder=study_dir / ".submitit", cluster="slurm", jobs=runs if args.jobs == "auto" else args.jobs,
                            threads=args.slurm_cpus, partition=args.slurm_partition, time_min=args.slurm_time,
                            cpus_per_task=args.slurm_cpus, mem_gb=args.slurm_mem)
    return SubmititJobs(folder=study_dir / ".submitit", cluster="local", jobs=runs, threads=threads_per_job(runs),
                        time_min=args.slurm_time)


TEXT_TYPES = (path_text, guide_name)  # flag types that take text, not numbers


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
            elif value is not None and (action.type in TEXT_TYPES or action.type is None):
                if not isinstance(value, str):  # a flag that takes text: no number stands for it
                    raise argparse.ArgumentTypeError(f"expected a string, got {value!r}")
                value = action.type(value) if action.type is not None else value
            elif value is not None:
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


MAX_RUNS = 10_000  # runs (variants x seeds) beyond which a study is refused before it starts


def check_study_size(args, variants: int) -> None:
    """Refuse, before any work, a study that cannot finish: more than ``MAX_RUNS`` runs, or a test
    IWAE beyond ``MAX_IWAE_SAMPLES`` samples (:func:`~pyro_zforcing.evaluation.bounds.check_iwae_samples`)."""
    runs = variants * args.seeds
    if runs > MAX_RUNS:
        raise ValueError(f"--seeds {args.seeds:,} x {variants} variant(s) = {runs:,} runs: each trains and evaluates "
                         f"a model, so this study cannot finish; at most {MAX_RUNS:,} runs")
    check_iwae_samples(args.iwae_samples)


def study_from(parser: argparse.ArgumentParser, argv: List[str], args, names: List[str],
               extra_variants: Dict, *, flag: str = "--variants") -> Study:
    """The study the flags (and recipe, and study file) describe, over the variants ``names``."""
    check_study_size(args, len(names))
    data, train, model, _ = resolve_settings(parser, argv, args)
    return Study(data=data, train=train, model=model,
                 variants=select_variants([n.strip() for n in names], extra_variants, flag=flag),
                 seeds=tuple(range(args.seed, args.seed + args.seeds)),
                 iwae_samples=args.iwae_samples, eval_batch_size=args.eval_batch_size)


def study_dir_of(args, command: str, dataset: str) -> Path:
    return Path(args.study_dir) if args.study_dir else Path("runs") / f"{command}-{dataset}-{time.strftime('%Y%m%d-%H%M%S')}"


def command_ablate(argv: List[str]) -> int:
    parser = ablate_parser()
    args, extra_variants, file_names = parse_study_args(parser, argv)
    setup_logging(args.quiet)
    names = args.variants.split(",") if args.variants is not None else (file_names or ["no-aux", "aux", "kla"])
    study = study_from(parser, argv, args, names, extra_variants)
    study_dir = prepare_output_dir(study_dir_of(args, "ablate", study.data.dataset), what="study directory")
    splits = load_dataset(study.data)
    print(budget_text(budgets(study, splits)), end="")
    run_study(study, study_dir, quiet=args.quiet, splits=splits,
              launcher=launcher_from(args, study, splits, study_dir))
    logging.getLogger(PROG).info("study directory: %s (study.csv, study.md, study.png)", study_dir)
    print((study_dir / "study.md").read_text(), end="")
    return 0


def compare_parser() -> argparse.ArgumentParser:
    parser = ablate_parser()
    parser.prog = f"{PROG} compare"
    parser.description = ("Train models (rnn, vrnn, srnn, zforcing and their variants) with identical data, "
                          "budget and matched generative parameter counts (--match-params); evaluate each on the test split "
                          "(ELBO, IWAE) and write compare.csv, compare.md and compare.png (an ablation whose "
                          "variants are models). The train flags set the base every model starts from.")
    for action in parser._actions:  # ablate's variants (no-aux, aux, kla) are not compare's: it takes --models
        if action.dest == "variants":
            action.help = argparse.SUPPRESS
    parser.add_argument("--models", default="rnn,vrnn,srnn,zforcing",
                        help="comma-separated models or model variants (default: %(default)s); known: "
                             + ", ".join(MODEL_VARIANTS))
    parser.add_argument("--match-params", choices=MATCH_KINDS, nargs="?", const="generative", default="generative",
                        help="resize each model's --rnn-dim (and --mlp-dim in proportion) so that its generative "
                             "model p(y, z) (generative: each model keeps its own inference network) or all its "
                             "trained parameters (all) are within 5%% of --match-to's; none keeps the typed sizes; "
                             "counts by role are printed and saved (default: %(default)s; none with --presets)")
    parser.add_argument("--match-to", default=None,
                        help="the model whose size is kept (default: zforcing if compared, else the first)")
    parser.add_argument("--presets", default=None, metavar="NAME,NAME,...",
                        help="compare recipes instead of --models: each variant is one shipped recipe (its model, "
                             "sizes, optimiser, schedule and epochs; flags typed here override every recipe), all "
                             "for one dataset, e.g. jsb-rnn,jsb-srnn,jsb-dmm (see docs/polyphonic.md)")
    return parser


def study_from_presets(parser: argparse.ArgumentParser, argv: List[str], args, names: List[str]) -> Study:
    """One variant per recipe: the defaults and typed flags are the base, each recipe's [model] and
    [train] values (those not typed) its overrides; the recipes must agree on the dataset and data."""
    given = typed_fields(parser, argv)
    if not all(names):
        raise ValueError(f"--presets {','.join(names)!r} names no recipe or has an empty name between its commas; "
                         f"known: {', '.join(preset_names())}")
    check_study_size(args, len(names))
    recipes = [find_recipe(preset=name, config=None) for name in names]
    data, train, model = data_config_from(args), train_config_from(args), model_sizes_from(args)
    datas = []
    for recipe in recipes:
        dataset = args.dataset if "dataset" in given else recipe.dataset
        if dataset != recipe.dataset:
            raise ValueError(f"--presets: recipe {recipe.name!r} is for dataset {recipe.dataset!r}, not --dataset {dataset}")
        datas.append(apply_recipe(recipe, model={}, train=train, data=replace(data, dataset=dataset), given=given)[2])
    for recipe, other in zip(recipes[1:], datas[1:]):
        if other != datas[0]:
            raise ValueError(f"--presets: recipes {recipes[0].name!r} and {recipe.name!r} read different data "
                             f"({datas[0].dataset} {datas[0].options} vs {other.dataset} {other.options})")
    variants = {recipe.name: {key: value for key, value in {**recipe.model, **recipe.train}.items()
                              if key not in given and key != "seed"} for recipe in recipes}
    return Study(data=replace(datas[0], seed=train.seed), train=train, model=model,
                 variants=select_variants(names, variants, flag="--presets"), seeds=tuple(range(args.seed, args.seed + args.seeds)),
                 iwae_samples=args.iwae_samples, eval_batch_size=args.eval_batch_size)


def command_compare(argv: List[str]) -> int:
    parser = compare_parser()
    args, extra_variants, _ = parse_study_args(parser, argv)
    if args.variants is not None:
        raise ValueError("compare takes --models, not --variants")
    setup_logging(args.quiet)
    if args.presets is not None:
        if "models" in typed_fields(parser, argv):
            raise ValueError("compare takes --presets or --models, not both")
        names = [n.strip() for n in args.presets.split(",")]
        study = study_from_presets(parser, argv, args, names)
    else:
        names = [n.strip() for n in args.models.split(",")]
        study = study_from(parser, argv, args, names, extra_variants, flag="--models")
    study_dir = prepare_output_dir(study_dir_of(args, "compare", study.data.dataset), what="study directory")
    splits = load_dataset(study.data)
    match = args.match_params
    if args.presets and "match_params" not in typed_fields(parser, argv):
        match = "none"  # recipes keep their own sizes unless matching is asked for
    if match != "none":
        reference = args.match_to or ("zforcing" if "zforcing" in names else names[0])
        study, chosen = match_parameters(study, splits.info, reference=reference, match=match)
        write_sizes(study_dir, chosen, reference=reference, match=match)
        print(sizes_table(chosen, reference=reference, match=match))
    print(budget_text(budgets(study, splits)), end="")
    results = run_study(study, study_dir, quiet=args.quiet, splits=splits,
                        launcher=launcher_from(args, study, splits, study_dir))
    print(write_comparison(study_dir, results, splits.info, iwae_samples=study.iwae_samples), end="")
    logging.getLogger(PROG).info("study directory: %s (compare.csv, compare.md, compare.png)", study_dir)
    return 0

