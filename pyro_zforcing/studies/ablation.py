"""Ablation studies: train named variants with identical data, sizes and budget, then compare.

A *variant* is a name and a set of overrides of :class:`~pyro_zforcing.config.TrainConfig`
and :class:`~pyro_zforcing.config.ModelConfig` fields (``aux_weight`` is shorthand for a
constant beta, ``aux_start = aux_end``). :data:`VARIANTS` holds the built-in ones; a study
file (JSON) may define more. Each (variant, seed) trains in ``<study>/<variant>-seed<k>/``
with :class:`~pyro_zforcing.training.trainer.Trainer`, is evaluated on the test split (its best
validation checkpoint; ELBO, IWAE(K), KL, reconstruction, aux score, active units, parameters by
role) and writes ``result.json`` atomically. A run with a ``result.json`` is skipped, an
interrupted one resumes from its last checkpoint, so an interrupted study is continued by
running it again. A study run again with a higher ``--epochs`` continues the runs that stopped at
the old cap from their last checkpoint (the cap bounds training and changes nothing else, so
the result is the run a study with the higher cap from the start would have trained); runs
that stopped early keep their result, and a lower cap than a run was trained with is refused.

Budget: a study trains to convergence by default, with the trainer's validation schedule
(``TrainConfig``'s LR decay and early-stopping patience, whatever their defaults are) under a
generous epoch cap (:data:`STUDY_EPOCHS`); each run records whether it stopped early (converged
on validation) or ran into the cap (``epochs``) or ``max_steps``. The budget of every variant is
logged at the start and saved in ``study.json``; a budget that ends before the first validation
(the end of epoch 1) is warned about: such a run is trained and validated where it stops, and
early stopping and the LR schedule never act on it.

The study writes ``study.csv`` (one row per run), ``study.md`` (mean ± std over seeds per
variant) and ``study.png`` (validation bound and KL over training per variant).
Active units and the aux score are defined in :mod:`pyro_zforcing.evaluation.latents`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..build import set_seed
from ..checkpoint import BEFORE_FIDELITY_FIELDS, TRAIN_BEFORE_FIELDS, load_checkpoint
from ..config import SPEED_ONLY_FIELDS, DataConfig, ModelConfig, TrainConfig, to_dict
from ..data import load_dataset
from ..data.base import SequenceSplits
from ..evaluation.bounds import evaluate_split
from ..evaluation.latents import (ACTIVE_THRESHOLD, active_units, mean_aux, mean_correlations, mutual_information,
                                  posterior_steps, rank_correlation)
from ..files import csv_text, prepare_output_dir, read_json, read_metrics, remove_orphans, write_atomic
from ..infer import GENERATIVE, INFERENCE, TRAINING_ONLY, UNTRAINED, Objective, active_factors, parameter_counts
from ..models import default_guide
from ..training.trainer import Trainer, epoch_batches
from .launch import LocalProcesses, Task, usable_cores

log = logging.getLogger(__name__)

RESULT_FILE = "result.json"
#: The epoch cap of a study: generous, so that validation early stopping ends the runs.
STUDY_EPOCHS = 500

MODEL_FIELDS = {f.name for f in fields(ModelConfig)} - {"input_dim"}
TRAIN_FIELDS = {f.name for f in fields(TrainConfig)} - {"seed", "max_steps"}  # a recipe variant keeps its epochs

# name -> overrides; KL annealing starts at 0.2 and reaches 1 after 200 updates.
VARIANTS: Dict[str, Dict] = {
    "aux": {},
    "no-aux": {"aux_weight": 0.0},
    "kla": {"aux_weight": 0.0, "kl_start": 0.2, "kl_step": 0.004},
    "aux+kla": {"kl_start": 0.2, "kl_step": 0.004},
    "aux-1e-4": {"aux_weight": 1e-4},
    "aux-2e-3": {"aux_weight": 2e-3},
    "aux-1e-2": {"aux_weight": 1e-2},
    "aux-anneal": {"aux_start": 1e-2, "aux_end": 5e-4, "aux_step": 2.5e-5},
    "aux-z": {"aux_input": "z"},
    "aux-z-1e-2": {"aux_input": "z", "aux_weight": 1e-2},
    "aux-l2": {"aux_loss": "l2"},
    "cond-ln": {"z_conditioning": "cond-ln"},
    "filtering": {"guide": "filtering"},
    "future-only": {"guide": "future-only"},
    "prior": {"guide": "prior", "aux_weight": 0.0},
    # text only: Bowman et al. (2016) word dropout, alone and with the aux cost
    "word-dropout": {"aux_weight": 0.0, "word_dropout": 0.25},
    "aux+word-dropout": {"word_dropout": 0.25},
}

# Models as variants (``run.py compare``): each trains with its default guide unless it names one.
MODEL_VARIANTS: Dict[str, Dict] = {
    "zforcing": {"model": "zforcing"},
    "rnn": {"model": "rnn"},
    "vrnn": {"model": "vrnn"},
    "vrnn-i": {"model": "vrnn", "prior": "standard"},
    "srnn": {"model": "srnn"},
    "srnn-plain": {"model": "srnn", "guide": "smoothing-plain"},
    "srnn-filtering": {"model": "srnn", "guide": "filtering"},
    "dmm": {"model": "dmm"},
    "storn": {"model": "storn"},
    "zforcing-noaux": {"model": "zforcing", **VARIANTS["no-aux"]},  # the no-aux ablation as a model to compare
    # Table 1's GMM rows (real-valued frames only); 20 components as in Chung et al. (2015)
    "rnn-gmm": {"model": "rnn", "emission": "gmm", "mixtures": 20},
    "vrnn-gmm": {"model": "vrnn", "emission": "gmm", "mixtures": 20},
}
VARIANTS.update(MODEL_VARIANTS)


@dataclass(frozen=True)
class Study:
    """What a study trains: variants (name -> overrides), seeds, and the shared settings.

    ``train``/``model`` are the base :class:`TrainConfig` and model sizes every variant starts
    from; ``data`` is read once and shared (its seed fixes the split for every run).
    """

    data: DataConfig
    train: TrainConfig
    model: Dict = field(default_factory=dict)
    variants: Dict[str, Dict] = field(default_factory=dict)
    seeds: Sequence[int] = (0,)
    iwae_samples: int = 25
    eval_batch_size: int = 50
    active_particles: int = 5

    def configs(self, variant: str, seed: int):
        """(TrainConfig, model sizes) of one run: the base with the variant's overrides."""
        overrides = dict(self.variants[variant])
        if "aux_weight" in overrides:
            weight = overrides.pop("aux_weight")
            overrides.update(aux_start=weight, aux_end=weight, aux_step=0.0)
        if "model" in overrides and "guide" not in overrides:  # a model variant trains with its own guide
            overrides["guide"] = default_guide(overrides["model"])
        train = {k: v for k, v in overrides.items() if k in TRAIN_FIELDS}
        model = {**self.model, **{k: v for k, v in overrides.items() if k in MODEL_FIELDS}}
        return replace(self.train, seed=seed, **train), model


def check_variants(variants: Dict[str, Dict]) -> None:
    """Names must be usable as folder names, overrides must name real config fields."""
    allowed = MODEL_FIELDS | TRAIN_FIELDS | {"aux_weight"}
    for name, overrides in variants.items():
        if not name or "/" in name or name.startswith(".") or "," in name:
            raise ValueError(f"variant name {name!r} is not usable as a folder name")
        if not isinstance(overrides, dict):
            raise ValueError(f"variant {name!r}: overrides must be a mapping, got {overrides!r}")
        unknown = sorted(set(overrides) - allowed)
        if unknown:
            raise ValueError(f"variant {name!r}: unknown settings {unknown}; allowed: {sorted(allowed)}")


def select_variants(names: Sequence[str], extra: Optional[Dict[str, Dict]] = None, *,
                    flag: str = "--variants") -> Dict[str, Dict]:
    """The named variants from :data:`VARIANTS` and ``extra`` (a study file's), in order; ``flag``
    is what the names came from, for the errors."""
    table = {**VARIANTS, **(extra or {})}
    if not any(names):
        raise ValueError(f"{flag} {','.join(names)!r} names no variant; known: {', '.join(sorted(table))}")
    if not all(names):
        raise ValueError(f"{flag} {','.join(names)!r} has an empty name between its commas")
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; known: {', '.join(sorted(table))}")
    if len(set(names)) != len(names):
        raise ValueError(f"{flag} lists a variant twice: {', '.join(names)}")
    check_variants({n: table[n] for n in names})
    return {n: dict(table[n]) for n in names}


def load_study_file(path) -> Dict:
    """A JSON study file: ``{"variants": {name: overrides} or [names], "seeds": n, ...}``.

    Keys other than ``variants`` are the ``ablate`` flags' names (``seeds``, ``max_steps``,
    ``dataset``, ``rnn_dim`` ...) and act as their defaults.
    """
    try:
        values = read_json(path, finite=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"study file not found: {path}") from None
    variants = values.get("variants")
    if variants is not None and not isinstance(variants, (dict, list)):
        raise ValueError(f"{path}: variants must be an object of overrides or a list of names, got {variants!r}")
    if isinstance(variants, list) and not all(isinstance(name, str) for name in variants):
        raise ValueError(f"{path}: variants must be names, got {variants!r}")
    if variants is not None and len(variants) == 0:
        raise ValueError(f"{path}: variants is empty; name at least one (known: {', '.join(sorted(VARIANTS))})")
    return values


# ----------------------------------------------------------------------------- metrics


def evaluate_run(objective: Objective, splits: SequenceSplits, study: Study, *, train_config: TrainConfig) -> Dict:
    """Test-split numbers of a trained objective: bounds per sequence and per unit, aux, active
    units, and its parameters by role in a run of ``train_config``."""
    objective.eval()
    result = evaluate_split(objective, splits.test, splits.info, num_samples=study.iwae_samples,
                            batch_size=study.eval_batch_size)
    means, per_unit, per_step = result.per_sequence_mean(), result.per_unit(), result.per_step()
    steps = float(result.lengths.sum())
    active = active_units(objective, splits.test, batch_size=study.eval_batch_size,
                          particles=study.active_particles)
    counts = parameter_counts(objective.model, objective.guide, factors=active_factors(train_config))
    posteriors = posterior_steps(objective, splits.test, batch_size=study.eval_batch_size)
    mi = mutual_information(posteriors)
    return {
        "test_elbo": means["elbo"], "test_iwae": means["iwae"], "test_kl": means["kl"],
        "test_rec": means["rec"], "test_gap": means["gap"],
        "test_kl_per_step": float(result.kl.sum() / steps),
        "test_elbo_per_unit": per_unit["elbo"], "test_iwae_per_unit": per_unit["iwae"],
        "test_elbo_per_step": per_step["elbo"], "test_iwae_per_step": per_step["iwae"],
        "model": objective.model.name, "exact": result.exact,
        "params": counts[GENERATIVE] + counts[INFERENCE] + counts[TRAINING_ONLY],
        **{f"params_{role}": counts[role] for role in (GENERATIVE, INFERENCE, TRAINING_ONLY, UNTRAINED)},
        "gap_kl_spearman": rank_correlation(result.kl, result.gap),
        "test_aux": mean_aux(objective, splits.test, batch_size=study.eval_batch_size),
        "active_units": active["count"], "active_units_raw": active["raw_count"],
        "active_variance": active["variance"], "active_units_method": active["method"],
        "test_mi": None if mi is None else mi["nats"], "test_mi_stderr": None if mi is None else mi["stderr"],
        "latent_correlations": mean_correlations(posteriors) if splits.info.unit == "word" else None,
    }


# ----------------------------------------------------------------------------- running

def write_json_atomic(path: Path, values: Dict) -> None:
    write_atomic(path, json.dumps(values, indent=1) + "\n")


def run_name(variant: str, seed: int) -> str:
    return f"{variant}-seed{seed}"


def what_trains(train: Dict) -> Dict:
    """A ``TrainConfig`` dict without the speed-only fields and the epoch cap."""
    return {k: v for k, v in train.items() if k not in SPEED_ONLY_FIELDS and k != "epochs"}


def saved_with_defaults(cls, before: Dict, saved: Dict) -> Dict:
    """A saved config dict completed as a checkpoint of it loads: fields it predates take their
    ``before`` value (what it was trained with) or, failing that, ``cls``'s default (fields added
    with a default that keeps the earlier behaviour)."""
    defaults = {f.name: f.default for f in fields(cls) if f.default is not MISSING}
    return {**defaults, **before, **saved}


def check_same_run(run_dir: Path, train_config: TrainConfig, model_sizes: Dict) -> None:
    """An existing run must have been started with the settings this study asks for, aside from
    the speed-only ones and the epoch cap (:func:`raised_cap` decides about that)."""
    path = run_dir / "config.json"
    if not path.exists():
        return
    saved = read_json(path)
    if not isinstance(saved.get("model_config"), dict) or not isinstance(saved.get("train_config"), dict):
        raise ValueError(f"{path}: no 'model_config' and 'train_config' objects; this is not the config.json of a "
                         f"run; use another --study-dir or remove {run_dir}")
    saved_model = saved_with_defaults(ModelConfig, BEFORE_FIDELITY_FIELDS, saved["model_config"])
    model = {k: v for k, v in saved_model.items() if k in model_sizes}
    saved_train = saved_with_defaults(TrainConfig, TRAIN_BEFORE_FIELDS, saved["train_config"])
    if what_trains(saved_train) != what_trains(to_dict(train_config)) or model != model_sizes:
        raise ValueError(f"{run_dir}: existing run was started with other settings than this study "
                         f"asks for; use another --study-dir or remove {run_dir}")


def raised_cap(run_dir: Path, epochs: int) -> bool:
    """Whether the run in ``run_dir`` was trained under a lower epoch cap than ``epochs`` (the cap
    of its last checkpoint); a higher one is a :class:`ValueError`, as its result may have
    trained past the cap asked for."""
    path = run_dir / "checkpoints" / "last.pt"
    if not path.exists():
        return False
    trained_under = load_checkpoint(path)["train_config"].epochs
    if trained_under > epochs:
        raise ValueError(f"{run_dir}: trained under a cap of {trained_under} epochs, more than the --epochs {epochs} "
                         f"this study asks for; raise --epochs, use another --study-dir or remove {run_dir}")
    return trained_under < epochs


def how_it_stopped(trainer: Trainer) -> str:
    """``early`` (validation early stopping: converged), ``max_steps`` or ``epochs`` (the cap)."""
    if trainer.progress.early_stopped:
        return "early"
    if trainer.config.max_steps is not None and trainer.progress.step >= trainer.config.max_steps:
        return "max_steps"
    return "epochs"


def finished_result(study: Study, study_dir: Path, variant: str, seed: int) -> Optional[Dict]:
    """The result of the run of ``variant`` and ``seed`` if it is finished and to be kept, else None
    (it is to train or to continue). An existing run must have this study's settings
    (:func:`check_same_run`) and a cap no higher (:func:`raised_cap`); a run that stopped at a lower
    cap than the study's is continued."""
    run_dir = study_dir / run_name(variant, seed)
    train_config, model_sizes = study.configs(variant, seed)
    check_same_run(run_dir, train_config, model_sizes)
    raised = raised_cap(run_dir, train_config.epochs)
    if not (run_dir / RESULT_FILE).exists():
        return None
    result = read_result(run_dir / RESULT_FILE, variant, seed)
    return None if raised and result["stopped"] == "epochs" else result


def run_one(study: Study, splits: SequenceSplits, study_dir: Path, variant: str, seed: int, *,
            quiet: bool = True) -> Dict:
    """Train (or resume) and evaluate one run; returns its result (read back if already done)."""
    run_dir = study_dir / run_name(variant, seed)
    result_path = run_dir / RESULT_FILE
    train_config, model_sizes = study.configs(variant, seed)
    done = finished_result(study, study_dir, variant, seed)
    if done is not None:
        log.info("%s: finished earlier, skipped", run_dir.name)
        return done
    if result_path.exists():
        log.info("%s: stopped at its cap of %d epochs; continued to the cap of %d", run_dir.name,
                 read_json(result_path)["epochs"], train_config.epochs)
        result_path.unlink()  # an interrupted continuation must not leave the shorter run's result
    if (run_dir / "checkpoints" / "last.pt").exists():
        trainer = Trainer.resume(run_dir, quiet=quiet, splits=splits, guide=train_config.guide,
                                 epochs=train_config.epochs)
    else:
        # no last.pt: the run never got past its start, so it starts again
        trainer = Trainer.create(data_config=study.data, train_config=train_config, out_dir=run_dir,
                                 model_sizes=model_sizes, quiet=quiet, splits=splits, overwrite=True)
    log.info("%s: training", run_dir.name)
    summary = trainer.fit()
    objective = trainer.objective
    best = run_dir / "checkpoints" / "best.pt"
    if best.exists():
        objective.load_state_dict(load_checkpoint(best)["objective"])
    set_seed(seed)  # the evaluation's noise does not depend on how training got here
    result = {"variant": variant, "seed": seed, "steps": summary["step"], "epochs": summary["epoch"],
              "stopped": how_it_stopped(trainer), "best_valid_elbo": summary["best_valid_elbo"],
              **evaluate_run(objective, splits, study, train_config=trainer.config)}
    write_json_atomic(result_path, result)
    log.info("%s: test ELBO %.3f, IWAE(%d) %.3f, KL %.3f, active units %d; stopped: %s after %d epochs",
             run_dir.name, result["test_elbo"], study.iwae_samples, result["test_iwae"], result["test_kl"],
             result["active_units"], result["stopped"], result["epochs"])
    return result


def read_result(path: Path, variant: str, seed: int) -> Dict:
    """A finished run's ``result.json``, checked to be the result of that variant and seed."""
    result = read_json(path)
    missing = [key for key in CSV_COLUMNS if key not in result]
    if missing or result.get("variant") != variant or result.get("seed") != seed:
        what = f"no {missing[0]!r}" if missing else f"not the result of {variant} with seed {seed}"
        raise ValueError(f"{path}: {what}; remove it to evaluate that run again")
    return result


def budgets(study: Study, splits: SequenceSplits) -> Dict[str, Dict]:
    """Per variant: the epoch cap, ``max_steps``, updates per epoch and the validation schedule
    (``TrainConfig``'s LR decay and early-stopping settings) its runs train under."""
    out = {}
    for variant in study.variants:
        train, _ = study.configs(variant, seed=study.seeds[0])
        per_epoch = len(epoch_batches(len(splits.train), train.batch_size, seed=train.seed, epoch=0))
        out[variant] = {"epochs": train.epochs, "max_steps": train.max_steps, "updates_per_epoch": per_epoch,
                        "batch_size": train.batch_size, "early_stop_patience": train.early_stop_patience,
                        "lr_patience": train.lr_patience, "lr_decay": train.lr_decay, "min_epochs": train.min_epochs}
    return out


def describe_budget(variant: str, budget: Dict) -> str:
    steps = "" if budget["max_steps"] is None else f", at most {budget['max_steps']} updates"
    return (f"{variant}: up to {budget['epochs']} epochs of {budget['updates_per_epoch']} updates (batch "
            f"{budget['batch_size']}){steps}; early stopping after {budget['early_stop_patience']} epochs without a "
            f"better validation ELBO, learning rate x{budget['lr_decay']} after {budget['lr_patience']}, neither "
            f"before epoch {budget['min_epochs']}")


def budget_text(budget: Dict[str, Dict]) -> str:
    """The budget of every variant, one line each (what ``ablate`` and ``compare`` print first)."""
    return "budget per run:\n" + "".join(f"  {describe_budget(variant, b)}\n" for variant, b in budget.items())


def check_budgets(budget: Dict[str, Dict]) -> None:
    """Warn where a variant's budget ends before its first validation (the end of epoch 1)."""
    for variant, b in budget.items():
        if b["max_steps"] is not None and b["max_steps"] < b["updates_per_epoch"]:
            log.warning("%s: its budget of %d updates ends before the first validation (update %d, the end of "
                        "epoch 1): it is validated only where it stops, and early stopping and the LR schedule "
                        "never act on it", variant, b["max_steps"], b["updates_per_epoch"])


def data_summary(splits: SequenceSplits) -> Dict:
    """What a run in another process checks that it read the study's data: the dataset's
    description and the number and total length of the sequences of every split."""
    return {"info": repr(splits.info), **{name: [len(part), int(sum(len(s) for s in part))]
                                          for name, part in (("train", splits.train), ("valid", splits.valid),
                                                             ("test", splits.test))}}


def train_run(study: Study, study_dir, variant: str, seed: int, *, splits: Optional[SequenceSplits] = None,
              data: Optional[Dict] = None) -> Dict:
    """One run as a launcher's task (:mod:`.launch`), in a process of its own: :func:`run_one`
    without progress bars, on ``splits`` or, without them, on the data ``study.data`` reads here,
    which must be the data the study was planned on (``data``, its :func:`data_summary`)."""
    if splits is None:
        splits = load_dataset(study.data)
        if data is not None and data_summary(splits) != data:
            raise ValueError(f"{run_name(variant, seed)}: the data {study.data.dataset} reads here ({data_summary(splits)}) "
                             f"is not the data the study was planned on ({data}); a run on another machine must see "
                             f"the same files")
    return run_one(study, splits, Path(study_dir), variant, seed, quiet=True)


#: Memory of a run's own process beyond its model, batch and data: the interpreter with torch, Pyro and
#: this package imported (about 290 MB resident, measured with torch 2.13 CPU), rounded up.
PROCESS_BYTES = 400 * 10 ** 6


def run_bytes(study: Study, splits: SequenceSplits) -> int:
    """The memory one run of ``study`` needs in a process of its own, for its largest variant:
    :data:`PROCESS_BYTES`, the data (each process holds a copy) and the training estimate of
    :func:`~pyro_zforcing.memory.training_bytes`."""
    from ..build import model_config_for
    from ..memory import training_bytes

    data = sum(int(np.asarray(s).nbytes) for part in (splits.train, splits.valid, splits.test) for s in part)
    steps, step_size = max(len(s) for s in splits.train), int(np.prod(splits.train[0].shape[1:]))
    largest = 0
    for variant in study.variants:
        train, sizes = study.configs(variant, seed=study.seeds[0])
        params, activations = training_bytes(model_config_for(splits.info, **sizes), guide=train.guide,
                                             batch_size=train.batch_size, steps=steps, step_size=step_size)
        largest = max(largest, params + activations)
    return PROCESS_BYTES + data + largest


def default_jobs(study: Study, splits: SequenceSplits, *, runs: int) -> int:
    """``--jobs auto``: as many runs at once as there are usable cores
    (:func:`~.launch.usable_cores`), runs left to train, and copies of :func:`run_bytes` that fit
    in the memory this process may use (:func:`~pyro_zforcing.memory.memory_limit`); at least 1."""
    from ..memory import memory_limit

    have, _ = memory_limit()
    return max(1, min(usable_cores(), runs, have // run_bytes(study, splits)))


def finished_runs(study: Study, study_dir: Path) -> Dict[Tuple[str, int], Dict]:
    """Every run already in ``study_dir`` checked against what ``study`` asks of it, and the
    results of those finished and kept (:func:`finished_result`)."""
    kept = {}
    for variant in study.variants:
        for seed in study.seeds:
            result = finished_result(study, study_dir, variant, seed)
            if result is not None:
                kept[variant, seed] = result
    return kept


def run_study(study: Study, study_dir, *, quiet: bool = True, splits: Optional[SequenceSplits] = None,
              launcher=None) -> List[Dict]:
    """Every (variant, seed) run, then ``study.csv``, ``study.md`` and ``study.png``.

    Without ``launcher`` the runs train one after another in this process. A launcher of
    :mod:`.launch` trains the unfinished ones elsewhere (processes of this machine, cluster jobs)
    while this process only schedules them, reads back their results and writes the tables, which
    list the runs in the study's variant and seed order whatever order they finished in. A
    :class:`~.launch.LocalProcesses` launcher's runs receive ``splits``; a submitted job reads
    ``study.data`` itself and checks it is the same data. If a run fails, the others finish, their
    results stay and no table is written (:class:`~.launch.RunsFailed`).
    """
    study_dir = prepare_output_dir(study_dir, what="study directory")
    remove_orphans(study_dir, exclusive=False)
    splits = splits if splits is not None else load_dataset(study.data)
    budget = budgets(study, splits)
    check_budgets(budget)
    spec = {"data": to_dict(study.data), "train": to_dict(study.train), "model": study.model,
            "variants": study.variants, "seeds": list(study.seeds), "iwae_samples": study.iwae_samples,
            "budget": budget}
    kept = finished_runs(study, study_dir)  # before any write: a refused study changes nothing, study.json included
    write_json_atomic(study_dir / "study.json", spec)
    if launcher is None:
        results = []
        for variant in study.variants:
            for seed in study.seeds:
                results.append(run_one(study, splits, study_dir, variant, seed, quiet=quiet))
    else:
        results = run_launched(study, study_dir, splits, launcher, kept=kept, quiet=quiet)
    write_outputs(study_dir, results, splits.info, iwae_samples=study.iwae_samples)
    return results


def run_launched(study: Study, study_dir: Path, splits: SequenceSplits, launcher, *, kept: Dict[Tuple[str, int], Dict],
                 quiet: bool) -> List[Dict]:
    """The study's results in its variant and seed order: the finished runs ``kept``
    (:func:`finished_runs`), the others trained by ``launcher``."""
    for variant, seed in kept:
        log.info("%s: finished earlier, skipped", run_name(variant, seed))
    shipped = {"splits": splits} if isinstance(launcher, LocalProcesses) else {"data": data_summary(splits)}
    tasks = [Task(run_name(variant, seed), train_run,
                  {"study": study, "study_dir": str(study_dir), "variant": variant, "seed": seed, **shipped})
             for variant in study.variants for seed in study.seeds if (variant, seed) not in kept]
    if tasks:
        log.info("%d of %d runs to train, %s", len(tasks), len(study.variants) * len(study.seeds), describe(launcher))
    trained = launcher.run(tasks, quiet=quiet) if tasks else {}
    return [kept[variant, seed] if (variant, seed) in kept else trained[run_name(variant, seed)]
            for variant in study.variants for seed in study.seeds]


def describe(launcher) -> str:
    if isinstance(launcher, LocalProcesses):
        return f"up to {launcher.jobs} at once in processes of this machine, {launcher.threads} thread(s) each"
    return f"as {launcher.cluster} jobs through submitit (job files in {launcher.folder})"


# ----------------------------------------------------------------------------- reports

CSV_COLUMNS = ("variant", "seed", "steps", "epochs", "stopped", "best_valid_elbo", "test_elbo", "test_iwae",
               "test_gap", "test_kl", "test_kl_per_step", "test_rec", "test_aux", "test_elbo_per_unit",
               "test_iwae_per_unit", "test_elbo_per_step", "test_iwae_per_step", "active_units", "active_units_raw",
               "gap_kl_spearman", "model", "params", "params_generative", "params_inference",
               "params_training_only", "params_untrained")

TABLE_COLUMNS = (("test_elbo", "ELBO"), ("test_iwae", "IWAE"), ("test_gap", "IWAE − ELBO"), ("test_kl", "KL"),
                 ("test_kl_per_step", "KL / step"), ("test_mi", "MI / step"), ("test_aux", "aux score"),
                 ("active_units", "active units"), ("epochs", "epochs"))

DIGITS = {"active_units": 1, "test_kl_per_step": 3, "test_mi": 3, "epochs": 1}


def value_text(mean: float, std: float, *, seeds: int, digits: int) -> str:
    """``mean ± std`` over several seeds; the value alone for one (a std of one run is not 0)."""
    return f"{mean:.{digits}f}" if seeds == 1 else f"{mean:.{digits}f} ± {std:.{digits}f}"


def mean_std(values: Sequence[float], digits: int = 2) -> str:
    """The mean ± sample standard deviation of ``values``, or the value alone if there is one."""
    values = np.asarray(values, dtype=float)
    std = values.std(ddof=1) if len(values) > 1 else 0.0
    return value_text(values.mean(), std, seeds=len(values), digits=digits)


def stopped_summary(runs: List[Dict]) -> str:
    """How the runs of one variant ended: ``early 2/3, epochs 1/3`` (runs from before this was
    recorded count as ``?``)."""
    kinds = [r.get("stopped", "?") for r in runs]
    return ", ".join(f"{kind} {kinds.count(kind)}/{len(kinds)}" for kind in dict.fromkeys(kinds))


def paired_difference(results: List[Dict], variant: str, baseline: str, key: str) -> List[float]:
    """``key`` of ``variant`` minus ``baseline``'s, for every seed both ran (same seed, same init)."""
    base = {r["seed"]: r[key] for r in results if r["variant"] == baseline}
    return [r[key] - base[r["seed"]] for r in results if r["variant"] == variant and r["seed"] in base]


def markdown(results: List[Dict], info, *, iwae_samples: int) -> str:
    """Mean ± standard deviation over seeds per variant, in nats per sequence, and the IWAE
    difference to the first variant paired by seed."""
    variants = list(dict.fromkeys(r["variant"] for r in results))
    baseline = variants[0]
    seeds = sorted({r["seed"] for r in results})
    unit = info.extra.get("sequence_unit", "sequence")
    header = ["variant"] + [label for _, label in TABLE_COLUMNS] + ["stopped", f"IWAE − {baseline}'s (paired)"]
    over = "one seed" if len(seeds) == 1 else f"mean ± std over {len(seeds)} seeds"
    lines = [f"{info.name}, test split: {over}; bounds in nats per {unit}, "
             f"IWAE with K = {iwae_samples}; KL / step per time step; aux score = unweighted "
             f"sum_t log p(b_t | .) per {unit}; MI / step = I(y; z_t) under the aggregate posterior, nats "
             f"per step; active units of z_t (of z_dim; variance > {ACTIVE_THRESHOLD}; both defined in "
             f"pyro_zforcing/evaluation/latents.py); epochs trained, and how the runs stopped (early: "
             f"validation early stopping, converged; epochs or max_steps: the budget's cap); the last column "
             f"compares runs of the same seed.",
             "", "| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    for variant in variants:
        rows = [r for r in results if r["variant"] == variant]
        cells = [mean_std([r[key] for r in rows], DIGITS.get(key, 2)) if all(r.get(key) is not None for r in rows)
                 else "–" for key, _ in TABLE_COLUMNS]  # MI: none without latents or from results before it
        cells.append(stopped_summary(rows))
        delta = paired_difference(results, variant, baseline, "test_iwae")
        cells.append(mean_std(delta) if delta and variant != baseline else "")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    estimated = sorted({r["variant"] for r in results if r.get("active_units_method") == "monte carlo"})
    if estimated:
        lines += ["", f"Active units of {', '.join(estimated)}: the guide has no per-step means (no "
                  "`proposal`), so they are Monte Carlo means of the traced z."]
    return "\n".join(lines) + "\n"


def training_curves(study_dir: Path, results: List[Dict]):
    """Validation records of every run as a long pandas frame (variant, seed, step, elbo, kl)."""
    import pandas as pd

    rows = []
    for r in results:
        path = study_dir / run_name(r["variant"], r["seed"]) / "metrics.jsonl"
        if not path.exists():
            continue
        for record in read_metrics(path):
            if record.get("kind") == "epoch" and "valid_elbo" in record and "valid_kl" in record:
                rows.append({"variant": r["variant"], "seed": r["seed"], "step": record["step"],
                             "valid ELBO": record["valid_elbo"], "valid KL": record["valid_kl"]})
    return pd.DataFrame(rows)


def plot_study(study_dir: Path, results: List[Dict], info, path: Path) -> Optional[Path]:
    """Validation ELBO and KL (nats per sequence) over training steps, mean and sd band over seeds,
    and the test ELBO-IWAE gap against the test KL, one point per run."""
    frame = training_curves(study_dir, results)
    if frame.empty:
        log.warning("no validation records in %s: no figure", study_dir)
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    from ..evaluation.plots import save_figure

    unit = info.extra.get("sequence_unit", "sequence")
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    palette = dict(zip(dict.fromkeys(r["variant"] for r in results), sns.color_palette(n_colors=len(results))))
    for ax, column in zip(axes, ("valid ELBO", "valid KL")):
        sns.lineplot(data=frame, x="step", y=column, hue="variant", palette=palette, errorbar="sd", marker="o",
                     markersize=4, ax=ax, legend=False)
        ax.set_xlabel("training step (updates)")
        ax.set_ylabel(f"{column} (nats / {unit})")
    trained = frame[frame["step"] > 0]["valid ELBO"]
    if len(trained):  # the untrained model's bound (step 0) would flatten every later difference
        low, high = trained.min(), trained.max()
        axes[0].set_ylim(low - 0.05 * (high - low + 1e-9), high + 0.05 * (high - low + 1e-9))
    points = pd.DataFrame([{"variant": r["variant"], "KL": r["test_kl"], "gap": r["test_gap"]} for r in results])
    sns.scatterplot(data=points, x="KL", y="gap", hue="variant", palette=palette, s=50, ax=axes[2])
    axes[0].set_title("validation ELBO (after step 0)")
    axes[1].set_title("validation KL(q || p)")
    axes[2].set_title("test: IWAE − ELBO against KL, per run")
    axes[2].set_xlabel(f"test KL (nats / {unit})")
    axes[2].set_ylabel(f"IWAE − ELBO (nats / {unit})")
    axes[2].legend(title="variant", loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    fig.suptitle(f"{info.name}: mean ± sd over seeds")
    return save_figure(fig, path, dpi=100)


def write_outputs(study_dir: Path, results: List[Dict], info, *, iwae_samples: int) -> None:
    write_atomic(study_dir / "study.csv", csv_text(results, CSV_COLUMNS))
    write_atomic(study_dir / "study.md", markdown(results, info, iwae_samples=iwae_samples))
    plot_study(study_dir, results, info, study_dir / "study.png")
