"""The training loop: epochs, validation, LR halving, early stopping (both after ``min_epochs``), checkpoints, metrics.

The loop knows the model only through :class:`~pyro_zforcing.infer.Objective`. Batches of an
epoch come from a permutation seeded by (seed, epoch), so a run resumed from a checkpoint
sees exactly the batches, noise and weights the uninterrupted run would have seen.

The run directory belongs to one run (:mod:`.rundir`: a lock, no silent overwrite); SIGINT and
SIGTERM stop after the current update with an exact checkpoint (:mod:`.interrupt`), and
``checkpoint_every`` updates ``last.pt`` within an epoch too. Every rewrite is atomic
(:mod:`.files`). However training stops (epochs, ``max_steps``, a signal), the model it stopped
with is validated and becomes ``best.pt`` if it is the best trained one, so a run shorter than
an epoch is evaluated trained; ``--resume`` first checks that the checkpoint belongs to the run.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from ..build import allow_recorded_guide, build_objective, check_same_data, model_config_for, resolve_device, set_seed
from ..checkpoint import (CheckpointError, config_payload, load_checkpoint, load_weights, rng_state, save_checkpoint,
                          set_rng_state)
from ..config import SPEED_ONLY_FIELDS, DataConfig, ModelConfig, TrainConfig
from ..data import Batch, SequenceSplits, load_dataset
from ..data.base import drop_words, word_dropout_id
from ..evaluation.bounds import evaluate_elbo, units_of
from ..evaluation.progress import progress as progress_bar
from ..files import JSONFileError, append_line, metrics_problem, read_json, read_jsonl, write_atomic
from ..graphs import CaptureFailed, GraphedBounds, GraphedUpdates
from ..guides import is_guide_spec
from ..infer import (GENERATIVE, INFERENCE, TRAINING_ONLY, UNTRAINED, Objective, Weights, active_factors,
                     parameter_counts, sequence_terms, weights_at)
from ..memory import check_training_fits
from ..steps import CompileUnavailable, check_compile_available, compiled_steps
from . import distributed
from .interrupt import Interrupted, StopRequests
from .rundir import RunDirError, RunLock, claim_existing, claim_new

log = logging.getLogger(__name__)


# The only settings a resumed run may change; everything else comes from its checkpoint.
RESUMABLE = ("epochs", "max_steps", "device", *SPEED_ONLY_FIELDS)


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite, or an update left parameters that make a distribution's
    arguments invalid; the message names the step."""


# torch.distributions' argument check says this when a parameter is NaN, infinite or out of support
INVALID_PARAMETERS = "but found invalid values"


def epoch_batches(num_items: int, batch_size: int, *, seed: int, epoch: int,
                  rank: int = 0, world_size: int = 1) -> List[List[int]]:
    """Index batches of one epoch: a permutation seeded by (seed, epoch), this rank's share."""
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(num_items, generator=generator).tolist()
    usable = num_items - num_items % world_size
    shard = order[rank:usable:world_size]
    return [shard[i:i + batch_size] for i in range(0, len(shard), batch_size)]


def aux_step_over_epochs(config: TrainConfig, num_items: int, *, world_size: int = 1) -> TrainConfig:
    """``config`` with ``aux_step`` = |aux_end - aux_start| / (aux_anneal_epochs * updates per epoch)
    when ``aux_anneal_epochs`` is set (train_blizzard.py: ``abs(aux_end - aux_sta) / (2 * nbatches)``)."""
    if config.aux_anneal_epochs is None:
        return config
    per_epoch = len(epoch_batches(num_items, config.batch_size, seed=config.seed, epoch=0, world_size=world_size))
    step = abs(config.aux_end - config.aux_start) / (config.aux_anneal_epochs * per_epoch)
    return replace(config, aux_step=step)


@dataclass
class Progress:
    """Where training stands; saved in every checkpoint.

    ``best_score`` is the best validation bound at an epoch end (early stopping and the LR
    schedule compare with it); ``best_checkpoint_score`` that of ``best.pt``, which may also come
    from the validation where training stopped inside an epoch.
    """

    epoch: int = 0
    step: int = 0
    step_in_epoch: int = 0
    best_score: float = -math.inf
    bad_epochs: int = 0
    early_stopped: bool = False
    validated_start: bool = False  # the bound before training (epoch 0) is measured
    validated_step: int = -1  # the step of the last validation
    best_checkpoint_score: float = -math.inf


class MetricsError(ValueError):
    """``metrics.jsonl`` has a corrupt line before its last; names the file and line."""


class MetricsLog:
    """``metrics.jsonl``: one JSON object per logged step (``kind: "step"``) or epoch.

    Records are appended; on resume the records after the checkpoint's step are dropped by an
    atomic rewrite (never in place). A torn last line (a kill mid-append: no newline) is dropped
    with a warning; any other bad line is a :class:`MetricsError`.
    """

    def __init__(self, path: Path, *, keep_until_step: Optional[int] = None):
        self.path = path
        if keep_until_step is not None and path.exists():
            kept = [line for line, record in self.read(path) if record["step"] <= keep_until_step]
            write_atomic(path, "".join(line + "\n" for line in kept))

    @staticmethod
    def read(path: Path) -> List[tuple]:
        """(line, record) of every complete record of ``path`` (:func:`~pyro_zforcing.files.read_jsonl`)."""
        try:
            return read_jsonl(path, check=metrics_problem)
        except JSONFileError as error:
            hint = "; repair or remove that line to resume" if ": line " in str(error) else ""
            raise MetricsError(f"{error}{hint}") from None

    def write(self, record: Dict) -> None:
        append_line(self.path, json.dumps(record))


class Trainer:
    """Trains an :class:`Objective` on the splits of a dataset, writing into ``out_dir``."""

    def __init__(self, *, objective: Objective, splits: SequenceSplits, model_config: ModelConfig,
                 data_config: DataConfig, train_config: TrainConfig, out_dir: Path,
                 quiet: bool = False, rank: int = 0, world_size: int = 1, loss_module=None,
                 lock: Optional[RunLock] = None, tensorboard: bool = False):
        self.objective = objective
        self.loss_module = loss_module if loss_module is not None else objective
        self.splits = splits
        self.model_config = model_config
        self.data_config = data_config
        self.config = train_config
        self.out_dir = Path(out_dir)
        self.quiet = quiet
        self.rank = rank
        self.world_size = world_size
        self.device = resolve_device(train_config.device)
        self.unk_id = check_word_dropout(train_config, splits.info, model_config)
        self.dtype = next(objective.parameters()).dtype
        objective.to(self.device)
        check_speed_settings(train_config, self.device, world_size=world_size)
        if world_size > 1:
            if len(splits.valid) < world_size:
                raise ValueError(f"{len(splits.valid)} validation sequences cannot be shared by {world_size} ranks")
            if loss_module is None:  # gradients averaged across ranks inside backward
                self.loss_module = distributed.wrap(objective, self.device)
        graphs = train_config.cuda_graphs
        self.optimizer = torch.optim.Adam(objective.parameters(), eps=train_config.adam_eps, capturable=graphs,
                                          lr=torch.tensor(train_config.lr, device=self.device) if graphs else train_config.lr)
        self.scheduler = None if train_config.lr_decay == 1.0 else torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="max", factor=train_config.lr_decay, patience=train_config.lr_patience)
        self.progress = Progress()
        self.checkpoint_dir = self.out_dir / "checkpoints"
        self.lock = lock
        self.board = None
        if tensorboard and rank == 0:
            from .tensorboard import RunBoard
            self.board = RunBoard(self.out_dir / "tensorboard", splits)
        self._stops: Optional[StopRequests] = None
        self._updates: Optional[GraphedUpdates] = None  # captured on first use (--cuda-graphs)
        self._valid_terms: Optional[GraphedBounds] = None
        self._started = time.time()

    # ----- construction -----

    @classmethod
    def create(cls, *, data_config: DataConfig, train_config: TrainConfig, out_dir, model_sizes=None,
               quiet: bool = False, splits: Optional[SequenceSplits] = None,
               rank: int = 0, world_size: int = 1, recipe: Optional[Dict] = None, overwrite: bool = False,
               tensorboard: bool = False) -> "Trainer":
        """A fresh run: claim ``out_dir`` (missing or empty, or ``overwrite``: see :mod:`.rundir`),
        read the data, size the model from it, write ``config.json`` (with ``recipe``, the name and
        file of the recipe the settings came from, if any).

        With ``world_size > 1`` (under torchrun, see :mod:`.distributed`) every rank builds the
        same initial model from the seed, trains on its shard, and only rank 0 writes files.
        """
        splits = splits if splits is not None else load_dataset(data_config)
        if not splits.valid:
            raise ValueError(f"{data_config.dataset}: the validation split is empty (data option valid_fraction "
                             f"{data_config.options.get('valid_fraction', 'default')}); training needs one")
        train_config = aux_step_over_epochs(train_config, len(splits.train), world_size=world_size)
        model_config = model_config_for(splits.info, **(model_sizes or {}))
        check_training_fits(model_config, guide=train_config.guide, batch_size=train_config.batch_size,
                            steps=max(len(s) for s in splits.train), step_size=int(np.prod(splits.train[0].shape[1:])),
                            device=resolve_device(train_config.device))
        check_speed_settings(train_config, resolve_device(train_config.device), world_size=world_size)
        check_word_dropout(train_config, splits.info, model_config)
        if is_guide_spec(train_config.guide):
            build_objective(model_config, train_config.guide)  # the user's guide keeps the contract (check_guide)
        lock = claim_new(out_dir, overwrite=overwrite) if rank == 0 else None  # nothing is written before the checks
        try:
            set_seed(train_config.seed)
            objective = build_objective(model_config, train_config.guide, kl=train_config.kl)
            trainer = cls(objective=objective, splits=splits, model_config=model_config, data_config=data_config,
                          train_config=train_config, out_dir=Path(out_dir), quiet=quiet, rank=rank,
                          world_size=world_size, lock=lock, tensorboard=tensorboard)
            if rank == 0:
                configs = {**trainer._configs(), "recipe": recipe}
                write_atomic(trainer.out_dir / "config.json", json.dumps(configs, indent=2) + "\n")
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        trainer.metrics = MetricsLog(trainer.out_dir / "metrics.jsonl")
        trainer._seed_rank_noise()
        trainer._log_start()
        return trainer

    @classmethod
    def resume(cls, run_dir, *, quiet: bool = False, splits: Optional[SequenceSplits] = None,
               rank: int = 0, world_size: int = 1, tensorboard: bool = False, guide: Optional[str] = None,
               trust_guide: bool = False, **overrides) -> "Trainer":
        """Continue the run in ``run_dir`` from ``checkpoints/last.pt``; ``overrides`` may raise
        ``epochs`` or ``max_steps`` (or move ``device``) and change nothing else.

        The checkpoints must belong to the run (:func:`check_belongs`). A custom guide recorded
        in them is imported only when ``guide`` names it again or with ``trust_guide``
        (:func:`~pyro_zforcing.build.allow_recorded_guide`).
        """
        unknown = sorted(set(overrides) - set(RESUMABLE))
        if unknown:
            raise ValueError(f"--resume can only change {list(RESUMABLE)}, not {unknown}")
        run_dir = Path(run_dir)
        lock = claim_existing(run_dir) if rank == 0 else None
        try:
            path = run_dir / "checkpoints" / "last.pt"
            if not path.exists() and (run_dir / "config.json").is_file():
                raise CheckpointError(f"--resume {run_dir}: {path} not found: the run stopped before its first "
                                      f"checkpoint was written, so there is nothing to continue; start it again "
                                      f"with its flags and --out {run_dir} --overwrite")
            state = load_checkpoint(path)
            check_belongs(run_dir, state, path)
            train_config = replace(state["train_config"], **overrides)
            guide = allow_recorded_guide(train_config.guide, named=guide, trust=trust_guide, source=path)
            splits = splits if splits is not None else load_dataset(state["data_config"])
            check_same_data(state["data_info"], splits.info, path)
            objective = build_objective(state["model_config"], guide, kl=train_config.kl)
            load_weights(objective, state["objective"], path)
            trainer = cls(objective=objective, splits=splits, model_config=state["model_config"],
                          data_config=state["data_config"], train_config=train_config, out_dir=run_dir,
                          quiet=quiet, rank=rank, world_size=world_size, lock=lock, tensorboard=tensorboard)
            trainer.optimizer.load_state_dict(state["optimizer"])
            optimizer_for_graphs(trainer.optimizer, train_config.cuda_graphs, trainer.device)
            if trainer.scheduler is not None:
                trainer.scheduler.load_state_dict(state["scheduler"])
            # checkpoints before ``validated_start`` existed validated epoch 0 before their first step
            trainer.progress = Progress(**{"validated_start": state["progress"]["step"] > 0, **state["progress"]})
            set_rng_state(state["rng"])
            trainer._seed_rank_noise()
            trainer.metrics = MetricsLog(run_dir / "metrics.jsonl",
                                         keep_until_step=trainer.progress.step if rank == 0 else None)
        except BaseException:
            if lock is not None:
                lock.release()
            raise
        log.info("resumed %s at epoch %d, step %d", run_dir, trainer.progress.epoch, trainer.progress.step)
        trainer._log_start()
        return trainer

    def finished(self) -> Optional[str]:
        """Why there is nothing left to train (and what would continue it), or None."""
        progress, config = self.progress, self.config
        if progress.early_stopped:
            return (f"{self.out_dir} is finished: it stopped early at epoch {progress.epoch} after "
                    f"{progress.bad_epochs} epochs without improvement; nothing is left to train")
        if progress.epoch >= config.epochs:
            return (f"{self.out_dir} is finished: it trained all {config.epochs} epochs (step {progress.step}); "
                    f"pass a larger --epochs to continue it")
        if self._out_of_steps():
            return (f"{self.out_dir} is finished: it reached --max-steps {config.max_steps}; "
                    f"pass a larger --max-steps to continue it")
        return None

    def _log_start(self) -> None:
        """One line: split sizes, dropped items, parameters, device, run directory."""
        if self.rank != 0:
            return
        splits = self.splits
        dropped = f" ({len(splits.skipped)} dropped)" if splits.skipped else ""
        counts = parameter_counts(self.objective.model, self.objective.guide, factors=active_factors(self.config))
        untrained = f", {counts[UNTRAINED]:,} built but given no gradient" if counts[UNTRAINED] else ""
        ranks = f" x {self.world_size} ranks" if self.world_size > 1 else ""
        log.info("%s: %d train / %d valid / %d test sequences%s; parameters: %s p(y, z), %s inference, %s "
                 "training-only%s; device %s%s; run directory %s",
                 self.data_config.dataset, len(splits.train), len(splits.valid), len(splits.test), dropped,
                 f"{counts[GENERATIVE]:,}", f"{counts[INFERENCE]:,}", f"{counts[TRAINING_ONLY]:,}", untrained,
                 self.device, ranks, self.out_dir)

    def _seed_rank_noise(self) -> None:
        """Ranks draw independent guide noise, seeded by (seed, rank, step) so a resumed job
        repeats it; a single process keeps the seeded (or restored) generator untouched."""
        if self.world_size > 1:
            torch.manual_seed(self.config.seed * 1_000_003 + self.progress.step * 7919 + self.rank)

    def _configs(self) -> Dict:
        return config_payload(self.model_config, self.data_config, self.config, self.splits.info)

    # ----- checkpoints -----

    def save(self, name: str) -> None:
        if self.rank != 0:
            return
        payload = {
            **self._configs(),
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "progress": vars(self.progress).copy(),
            "rng": rng_state(),
        }
        save_checkpoint(self.checkpoint_dir / f"{name}.pt", payload)

    # ----- the loop -----

    def _out_of_steps(self) -> bool:
        return self.config.max_steps is not None and self.progress.step >= self.config.max_steps

    def fit(self) -> Dict:
        """Train until ``epochs``, ``max_steps`` or early stopping; returns the final summary.

        SIGINT/SIGTERM save ``last.pt`` after the current update and raise :class:`Interrupted`.
        The run directory's lock is held while training and released on return.
        """
        if self.lock is not None:
            self.lock.acquire()
        try:
            with StopRequests() as self._stops, logging_redirect_tqdm(), compiled_steps(self.config.compile):
                return self._fit()
        except (CompileUnavailable, CaptureFailed) as error:  # Pyro appends its trace's shapes: one line
            raise type(error)(str(error).splitlines()[0]) from error.__cause__
        except ValueError as error:
            if self.progress.step == 0 or INVALID_PARAMETERS not in str(error):
                raise  # before any update an invalid parameter is the model's fault, not the optimiser's
            raise TrainingDiverged(
                f"training diverged: after update {self.progress.step} (epoch {self.progress.epoch}) a distribution "
                f"got parameters that are not finite or outside their support (try a lower --lr or --clip-norm); "
                f"stopped, {self._kept_checkpoint()}; the argument check: {str(error).splitlines()[0].rstrip(':')}") from error
        finally:
            self._stops = None
            if self.board is not None:
                self.board.flush()
            if self.lock is not None:
                self.lock.release()

    def _fit(self) -> Dict:
        config, progress = self.config, self.progress
        train = self.splits.train
        start = self._started = time.time()
        per_epoch = len(epoch_batches(len(train), config.batch_size, seed=config.seed, epoch=0,
                                      rank=self.rank, world_size=self.world_size))
        total = config.epochs * per_epoch if config.max_steps is None else min(config.max_steps, config.epochs * per_epoch)
        bar = progress_bar(total, initial=min(progress.step, total), unit="update", desc="train",
                           quiet=self.quiet or self.rank != 0)
        finished = self.finished()
        if finished:
            log.warning("%s", finished)
        elif not progress.validated_start:
            valid = self._validate(start)  # the bound before training, epoch 0
            progress.validated_start = True
            if math.isfinite(valid["elbo"]):
                # best.pt before the first epoch ends (so a shorter run can be evaluated); early
                # stopping and later best.pt compare trained epochs only, as the authors' code does
                self.save("best")
            self._stop_if_asked()
        try:
            while progress.epoch < config.epochs and not self._out_of_steps() and not progress.early_stopped:
                batches = epoch_batches(len(train), config.batch_size, seed=config.seed, epoch=progress.epoch,
                                        rank=self.rank, world_size=self.world_size)
                for indices in batches[progress.step_in_epoch:]:
                    if self._out_of_steps():
                        break
                    record = self._train_step(self.splits.train_batch(indices), start)
                    bar.update(1)
                    if record is not None:
                        bar.set_postfix(epoch=f"{progress.epoch + 1}/{config.epochs}", loss=f"{record['loss']:.2f}",
                                        elbo=f"{record['elbo']:.2f}")
                    if config.checkpoint_every and progress.step % config.checkpoint_every == 0:
                        self._stop_if_skipped()
                        self.save("last")
                    self._stop_if_asked()
                if self._out_of_steps() and progress.step_in_epoch < len(batches):
                    break
                stop = self._end_epoch(start)
                self._stop_if_asked()
                if stop:
                    break
        finally:
            bar.close()
        self._stop_if_skipped()
        self._validate_at_stop(start)
        self.save("last")
        summary = {"epoch": progress.epoch, "step": progress.step,
                   "best_valid_elbo": progress.best_checkpoint_score, "time_s": time.time() - start}
        log.info("training stopped at epoch %d, step %d; best valid ELBO %.3f nats/sequence",
                 progress.epoch, progress.step, progress.best_checkpoint_score)
        return summary

    def _validate_at_stop(self, start: float) -> None:
        """Validate the model training stopped with (unless this step was validated) and make it
        ``best.pt`` if it beats every trained one. Early stopping and the LR schedule see epoch ends
        only, and the validation's noise comes from saved-and-restored RNG states, so a resumed run
        continues exactly as if it had never stopped."""
        progress = self.progress
        if progress.validated_step == progress.step:
            return
        devices = [self.device] if self.device.type == "cuda" else []
        saved = rng_state()
        with torch.random.fork_rng(devices=devices):
            valid = self._validate(start, stopped=True)
        set_rng_state(saved)
        if valid["elbo"] > progress.best_checkpoint_score:
            progress.best_checkpoint_score = valid["elbo"]
            self.save("best")

    def _stop_if_asked(self) -> None:
        """After SIGINT/SIGTERM (on any rank): save ``last.pt`` here and raise :class:`Interrupted`."""
        signum = self._stops.requested() if self._stops is not None else None
        if self.world_size > 1:
            signum = distributed.max_across_ranks(signum or 0, device=self.device) or None
        if signum is None:
            return
        self.save("last")  # first: a second Ctrl-C during the validation quits without losing it
        self._validate_at_stop(self._started)
        self.save("last")
        name = signal.Signals(signum).name
        raise Interrupted(f"stopped by {name} at epoch {self.progress.epoch}, step {self.progress.step}; saved "
                          f"{self.checkpoint_dir / 'last.pt'}; continue with: zforcing --resume {self.out_dir}",
                          signum)

    def _train_step(self, batch: Batch, start: float) -> Optional[Dict]:
        """One update; returns the metrics record on logging steps.

        Host syncs: one per step, the finiteness check before the update (an update must never
        apply NaN, and the error names the step; ``torch.amp.GradScaler`` syncs the same way to
        skip a step), plus the metrics on logging steps. The check reads the global gradient
        norm, which DDP's all-reduce makes identical on every rank, so all ranks stop together.
        With ``cuda_graphs`` the update is a replayed graph (:mod:`pyro_zforcing.graphs`): a
        non-finite update is skipped on the device and the run stops at the next logging step.
        """
        progress = self.progress
        weights = weights_at(self.config, progress.step)
        if self.config.cuda_graphs:
            if self._updates is None:
                self._updates = GraphedUpdates(self.objective, self.optimizer, clip_norm=self.config.clip_norm,
                                               length_bucket=self.config.length_bucket, device=self.device,
                                               dtype=self.dtype, next_step=progress.step + 1,
                                               longest=max(len(s) for s in self.splits.train))
            loss, grad_norm = self._updates(batch, weights)
        else:
            batch = batch.to(self.device, self.dtype)
            fed = batch if self.unk_id is None else drop_words(batch, self.config.word_dropout, unk_id=self.unk_id)
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.loss_module(fed, weights)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.objective.parameters(), self.config.clip_norm)
            finite = torch.isfinite(grad_norm) if self.world_size > 1 else torch.isfinite(grad_norm + loss.detach())
            if not finite:
                raise TrainingDiverged(
                    f"loss is {loss.detach().item()} (gradient norm {grad_norm.item()}) at step {progress.step + 1} "
                    f"(epoch {progress.epoch}); stopped, {self._kept_checkpoint()}")
            self.optimizer.step()
        progress.step += 1
        progress.step_in_epoch += 1
        if progress.step % self.config.log_every == 0 or progress.step == 1:
            self._stop_if_skipped()
            return self._log_step(batch.to(self.device, self.dtype), weights, loss.detach(), grad_norm, start)
        return None

    def _kept_checkpoint(self) -> str:
        last = self.checkpoint_dir / "last.pt"
        return f"the last good checkpoint is kept: {last}" if last.exists() else "no training checkpoint was written yet"

    def _stop_if_skipped(self) -> None:
        """With CUDA graphs: raise :class:`TrainingDiverged` if a replayed update was skipped as non-finite."""
        found = self._updates.flags.first_skipped() if self._updates is not None else None
        if found is not None:
            first, count = found
            raise TrainingDiverged(
                f"the loss or gradient norm was not finite at step {first} ({count} update(s) skipped on the device, "
                f"none applied; checked at step {self.progress.step}); stopped, {self._kept_checkpoint()}")

    @torch.no_grad()
    def _log_step(self, batch: Batch, weights: Weights, loss, grad_norm, start: float) -> Dict:
        terms = sequence_terms(self.objective.model, self.objective.guide, batch,
                               replace(weights, kl=1.0))
        units = float(units_of(batch, self.splits.info).sum())
        means = {"loss": float(loss), "elbo": float(terms["elbo"].mean()),
                 "elbo_per_unit": float(terms["elbo"].sum()) / units,
                 "rec": float(terms["rec"].mean()), "kl": float(terms["kl"].mean()),
                 "aux": float(terms["aux"].mean()), "bwd": float(terms["bwd"].mean())}
        means = self._across_ranks(means, count=batch.batch_size, units=units)
        record = {"kind": "step", "step": self.progress.step, "epoch": self.progress.epoch, **means,
                  "kl_weight": weights.kl, "aux_weight": weights.aux, "grad_norm": float(grad_norm),
                  "lr": float(self.optimizer.param_groups[0]["lr"]), "time_s": time.time() - start}
        if self.rank == 0:
            self.metrics.write(record)
            if self.board is not None:
                self.board.scalars(record)
        return record

    def _validate(self, start: float, *, stopped: bool = False) -> Dict[str, float]:
        """The validation bound now, written to the metrics as an epoch record (``stopped``: where
        training stopped inside an epoch)."""
        progress = self.progress
        shard = self.splits.valid[self.rank::self.world_size]  # each rank scores its share
        if self.config.cuda_graphs and self._valid_terms is None:
            model, guide = self.objective.model, self.objective.guide
            self._valid_terms = GraphedBounds(lambda batch: sequence_terms(model, guide, batch), model=model,
                                              rows=4 * self.config.batch_size, length_bucket=self.config.length_bucket,
                                              device=self.device, dtype=self.dtype,
                                              longest=max(len(s) for s in self.splits.valid))
        valid = evaluate_elbo(self.objective, shard, self.splits.info, batch_size=4 * self.config.batch_size,
                              device=self.device, dtype=self.dtype, terms=self._valid_terms)
        valid = self._across_ranks(valid, count=len(shard),
                                   units=sum(len(s) for s in shard) * self.splits.info.units_per_step)
        record = {"kind": "epoch", "step": progress.step, "epoch": progress.epoch,
                  **{f"valid_{key}": value for key, value in valid.items()},
                  "lr": float(self.optimizer.param_groups[0]["lr"]), "time_s": time.time() - start,
                  **({"stopped": True} if stopped else {})}
        progress.validated_step = progress.step
        if self.rank == 0:
            self.metrics.write(record)
            if self.board is not None:
                self.board.epoch(self.objective, record, device=self.device, dtype=self.dtype)
        log.info("%s: valid ELBO %.3f nats/sequence (%.4f per %s), KL %.3f",
                 f"stopped at step {progress.step}" if stopped else f"epoch {progress.epoch}/{self.config.epochs}",
                 valid["elbo"], valid["elbo_per_unit"], self.splits.info.unit, valid["kl"])
        return valid

    def _across_ranks(self, means: Dict[str, float], *, count: float, units: float) -> Dict[str, float]:
        """Per-sequence means (weighted by ``count``) and ``*_per_unit`` figures (by ``units``)
        of every rank's shard combined, so all ranks log, schedule and stop on the same numbers."""
        if self.world_size == 1:
            return means
        weights = {key: units if key.endswith("_per_unit") else count for key in means}
        return distributed.all_reduce_weighted(means, weights, device=self.device)

    def _end_epoch(self, start: float) -> bool:
        """Validate, adapt the LR, checkpoint; True when early stopping ends training."""
        progress, config = self.progress, self.config
        self._stop_if_skipped()
        progress.epoch += 1
        progress.step_in_epoch = 0
        valid = self._validate(start)
        improved = valid["elbo"] > progress.best_score
        if improved:
            progress.best_score = valid["elbo"]
            progress.bad_epochs = 0
        else:
            progress.bad_epochs += 1
        settled = progress.epoch >= config.min_epochs  # no rate drop and no stop inside the first epochs
        if settled and self.scheduler is not None:  # lr_decay = 1 keeps the rate
            self.scheduler.step(valid["elbo"])
        stop = settled and progress.bad_epochs >= config.early_stop_patience
        if stop:
            progress.early_stopped = True
            log.info("early stopping: no improvement for %d epochs", progress.bad_epochs)
        if valid["elbo"] > progress.best_checkpoint_score:
            progress.best_checkpoint_score = valid["elbo"]
            self.save("best")
        self.save("last")
        return stop


def check_word_dropout(config: TrainConfig, info, model_config: ModelConfig) -> Optional[int]:
    """The ``<unk>`` id word dropout feeds (None when ``word_dropout`` is 0); a one-line error on
    data without tokens or ``<unk>`` (:func:`~pyro_zforcing.data.base.word_dropout_id`), for a model
    that reads no past word (dmm: its emission depends on z_t only) and with ``cuda_graphs``."""
    if config.word_dropout == 0:
        return None
    unk = word_dropout_id(info)
    if model_config.model == "dmm":
        raise ValueError("--word-dropout: the dmm model reads no past word (its emission depends on z_t only), "
                         "so there is nothing to drop")
    if config.cuda_graphs:
        raise ValueError("--word-dropout draws new inputs every update, which --cuda-graphs does not capture; "
                         "train without one of them")
    return unk


def check_speed_settings(config: TrainConfig, device: torch.device, *, world_size: int) -> None:
    """``--compile`` needs inductor's compiler for ``device``; ``--cuda-graphs`` needs a CUDA device,
    one process and Pyro's validation off (it reads values on the host). One-line errors."""
    if config.compile:
        check_compile_available(device)
    if not config.cuda_graphs:
        return
    if device.type != "cuda":
        raise ValueError(f"--cuda-graphs captures CUDA kernels: it needs --device cuda (this run's device is {device})")
    if world_size > 1:
        raise ValueError("--cuda-graphs runs in one process; under torchrun train without it")
    if config.validate:
        raise ValueError("--cuda-graphs cannot run with --validate: Pyro's validation reads values on the host")


def optimizer_for_graphs(optimizer: torch.optim.Adam, graphs: bool, device: torch.device) -> None:
    """Adam's settings after loading a state saved with or without ``--cuda-graphs``, for this run's
    choice: capturable, a tensor learning rate and ``step`` on the device for graphs; the plain
    float rate and ``step`` on the host otherwise (Adam's own layout for each)."""
    for group in optimizer.param_groups:
        group["capturable"] = graphs
        lr = float(group["lr"])
        group["lr"] = torch.tensor(lr, device=device) if graphs else lr
    for state in optimizer.state.values():
        if "step" in state:
            state["step"] = state["step"].to(dtype=torch.float32, device=device if graphs else "cpu")
def check_belongs(run_dir: Path, state: Dict, path: Path) -> None:
    """The checkpoint ``state`` (read from ``path``) and ``best.pt`` must be of the run whose
    ``config.json`` is in ``run_dir``: the same model, data and sizes (the settings a resume may
    change aside). Otherwise a :class:`RunDirError` names the first difference."""
    config_path = run_dir / "config.json"
    try:
        saved = read_json(config_path)
    except FileNotFoundError:
        raise RunDirError(f"--resume {run_dir}: {config_path} is missing, so nothing says what this run is; "
                          "it cannot be resumed") from None
    for key in ("model_config", "data_config", "train_config", "data_info"):
        if not isinstance(saved.get(key), dict):
            raise RunDirError(f"{config_path}: no {key!r} object; this is not the config.json of a run")
    checked = [(path, state)]
    best = run_dir / "checkpoints" / "best.pt"
    if best.exists() and best.resolve() != path.resolve():
        checked.append((best, load_checkpoint(best)))
    for checkpoint, values in checked:
        mine = json.loads(json.dumps(config_payload(values["model_config"], values["data_config"],
                                                    values["train_config"], values["data_info"])))
        for key in ("model_config", "data_config", "train_config", "data_info"):
            for field in sorted(set(mine[key]) | set(saved[key])):
                if key == "train_config" and field in RESUMABLE:
                    continue
                ours, theirs = mine[key].get(field), saved[key].get(field)
                if ours != theirs:
                    raise RunDirError(f"--resume {run_dir}: {checkpoint} does not belong to this run: its "
                                      f"{key}.{field} is {_short(ours)} but config.json's is {_short(theirs)}")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
