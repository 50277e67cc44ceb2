"""Where a study's runs train: processes of this machine (``--jobs N``) or jobs of a cluster engine.

A study is a set of independent runs that share only the study directory: each run trains in its
own run directory (locked, written atomically) and returns its result. So running them side by
side is a question of launching, not of training. A :class:`Task` is one run: a name
(``variant-seed``) and a module-level function with its keyword arguments, picklable, so that it
can cross a process boundary. A launcher runs tasks and returns ``{name: result}``, or raises:

- :class:`RunsFailed` when any task failed (after every other task has finished; the message
  names each failed run and its error in one line);
- :class:`~pyro_zforcing.training.interrupt.Interrupted` when SIGINT or SIGTERM reached this
  process: it is passed on to every task still running, each saves its checkpoint the way a
  single run does on a signal (:mod:`pyro_zforcing.training.interrupt`) and stops; running the
  study again resumes them.

:class:`LocalProcesses` starts up to ``jobs`` fresh processes at once (the ``spawn`` start
method: nothing of this process's state is inherited), each with ``threads`` intra-op threads.
:class:`SubmititJobs` hands the same tasks to `submitit <https://github.com/facebookincubator/submitit>`_:
one job per run on a SLURM cluster (submitit pickles the function into the study directory's
``.submitit`` folder and the job unpickles it on its node; the study directory must be on a
file system every node sees), or submitit's local executor on this machine, which runs the same
job files (what the tests use). It is an optional extra: ``pip install "pyro-zforcing[cluster]"``.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence, Tuple

from tqdm.auto import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ..evaluation.progress import duration_text
from ..training.interrupt import Interrupted, SignalCatcher

log = logging.getLogger(__name__)

#: ``--launcher``: processes of this machine; SLURM jobs through submitit; submitit's local executor.
LAUNCHERS = ("local", "slurm", "submitit-local")
#: Seconds between two looks at the state of submitted jobs.
POLL_SECONDS = 2.0
#: The thread-count variables of the numerical libraries a run's process may load.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class Task:
    """One run: ``function(**kwargs)`` returns its result; ``name`` says which run it is."""

    name: str
    function: Callable[..., Dict]
    kwargs: Dict = field(default_factory=dict)


class RunsFailed(RuntimeError):
    """Some runs failed while the others finished: ``failures`` is ``{name: one-line error}``."""

    def __init__(self, failures: Dict[str, str], *, finished: int):
        self.failures = dict(failures)
        listed = "; ".join(f"{name}: {message}" for name, message in failures.items())
        super().__init__(f"{len(failures)} of {len(failures) + finished} runs failed ({listed}); the {finished} "
                         f"finished run(s) are kept, no table was written; run the study again to retry the "
                         f"failed ones")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. ``taskset`` or a cpuset), else
    ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_job(jobs: int, cores: Optional[int] = None) -> int:
    """Intra-op threads of each of ``jobs`` runs side by side: ``max(1, cores // jobs)``."""
    return max(1, (cores if cores is not None else usable_cores()) // jobs)


def one_line(error: BaseException) -> str:
    """``Type: first line of the message``."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


# ----------------------------------------------------------------------------- inside a run's process

def set_threads(threads: int) -> None:
    """``threads`` intra-op threads here and in whatever this process starts."""
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _prepare_run_process(task: Task, threads: int, level: int) -> None:
    """A run's process or job: its threads, and log lines prefixed by the run's name."""
    set_threads(threads)
    logging.basicConfig(level=level, format=f"%(asctime)s %(levelname)s [{task.name}] %(name)s: %(message)s",
                        datefmt="%H:%M:%S")


def _raise_interrupted(signum, frame):
    raise Interrupted(f"stopped by {signal.Signals(signum).name} before training began or after it ended; "
                      "nothing partial was kept", signum)


def _watch_parent(parent: int) -> None:
    """Stop this run (SIGTERM: it saves its checkpoint) once the process that started it is gone."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGTERM)


def _child(task: Task, threads: int, level: int, parent: int, results) -> None:
    """A run's process (``spawn``): its threads, its signals, its log lines prefixed by its name;
    sends ``(status, result or one-line message)`` and exits with the run's exit code."""
    _prepare_run_process(task, threads, level)
    signal.signal(signal.SIGTERM, _raise_interrupted)  # training replaces it by its own, which saves
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    try:
        outcome, code = ("done", task.function(**task.kwargs)), 0
    except Interrupted as stop:
        outcome, code = ("stopped", str(stop).splitlines()[0]), stop.exit_code
    except KeyboardInterrupt:
        outcome, code = ("stopped", "stopped by SIGINT without saving (a second Ctrl-C)"), 130
    except BaseException as error:  # noqa: B902 - every failure is reported, named, to the parent
        outcome, code = ("failed", one_line(error)), 1
    for signum in (signal.SIGTERM, signal.SIGINT):  # the outcome is decided: a late signal must not
        signal.signal(signum, signal.SIG_IGN)       # interrupt sending it or the interpreter's exit
    try:
        results.send(outcome)
    except (BrokenPipeError, OSError):
        pass
    results.close()
    sys.exit(code)


def run_task(task: Task, threads: int, level: int) -> Dict:
    """A run inside a submitted job: its threads and log format, then the task."""
    _prepare_run_process(task, threads, level)
    return task.function(**task.kwargs)


# ----------------------------------------------------------------------------- the parent

class _Signals(SignalCatcher):
    """Records SIGINT/SIGTERM (main thread only) for the scheduling loop; ``count`` of them."""

    def __init__(self):
        super().__init__()
        self.first: Optional[int] = None
        self.last: Optional[int] = None
        self.count = 0

    def _record(self, signum, frame) -> None:
        self.first = self.first if self.first is not None else signum
        self.last = signum
        self.count += 1


class _Tally:
    """What the runs came to, with one log line per run and a bar over runs (a TTY only)."""

    def __init__(self, tasks: Sequence[Task], *, quiet: bool):
        self.total = len(tasks)
        self.results: Dict[str, Dict] = {}
        self.failures: Dict[str, str] = {}
        self.stopped: Dict[str, str] = {}
        self.bar = tqdm(total=self.total, unit="run", desc="study", dynamic_ncols=True,
                        disable=quiet or not sys.stderr.isatty())

    def done(self, name: str, result: Dict, seconds: float) -> None:
        self.results[name] = result
        self.bar.update(1)
        log.info("%s: finished in %s (%d of %d runs done)", name, duration_text(seconds), len(self.results), self.total)

    def failed(self, name: str, message: str) -> None:
        self.failures[name] = message
        self.bar.update(1)
        log.error("%s: failed: %s", name, message)

    def stop(self, name: str, message: str) -> None:
        self.stopped[name] = message
        log.warning("%s: %s", name, message)

    def outcome(self, signals: _Signals, not_started: int) -> Dict[str, Dict]:
        self.bar.close()
        if signals.first is not None:
            name = signal.Signals(signals.first).name
            raise Interrupted(f"stopped by {name}: {len(self.stopped)} run(s) stopped ({', '.join(self.stopped) or 'none'}), "
                              f"{len(self.results)} finished, {not_started} not started; every stopped run saved its "
                              "checkpoint: run the study again to continue it", signals.first)
        failures = {**self.failures, **self.stopped}  # a run stopped by a signal from elsewhere
        if failures:
            raise RunsFailed(failures, finished=len(self.results))
        return self.results


@dataclass
class LocalProcesses:
    """Up to ``jobs`` runs at once, each in a fresh process with ``threads`` intra-op threads."""

    jobs: int
    threads: int = 1

    def run(self, tasks: Sequence[Task], *, quiet: bool = True) -> Dict[str, Dict]:
        context = multiprocessing.get_context("spawn")
        level = logging.WARNING if quiet else logging.INFO
        pending = list(tasks)
        running: Dict[str, Tuple] = {}  # name -> (process, connection, start, outcome)
        tally = _Tally(tasks, quiet=quiet)
        forwarded = 0
        with _Signals() as signals, logging_redirect_tqdm():
            try:
                while running or (pending and signals.first is None):  # after a signal, start nothing more
                    while pending and len(running) < self.jobs and signals.first is None:
                        task = pending.pop(0)
                        receive, send = context.Pipe(duplex=False)
                        process = context.Process(target=_child, name=task.name,
                                                  args=(task, self.threads, level, os.getpid(), send))
                        process.start()
                        send.close()
                        running[task.name] = [process, receive, time.time(), None]
                        log.info("%s: started (process %d, %d thread(s))", task.name, process.pid, self.threads)
                    if signals.count > forwarded:  # the first: stop and save; a second SIGINT: quit at once
                        signum = signal.SIGTERM if forwarded == 0 else signals.last
                        for process, *_ in running.values():
                            _send(process, signum)
                        forwarded = signals.count
                    waiting = {entry[1]: name for name, entry in running.items() if entry[3] is None}
                    waiting.update({entry[0].sentinel: name for name, entry in running.items()})
                    for ready in multiprocessing.connection.wait(list(waiting), timeout=0.5):
                        name = waiting[ready]
                        entry = running[name]
                        if ready is entry[1]:
                            try:
                                entry[3] = entry[1].recv()
                            except EOFError:
                                entry[3] = ("lost", None)
                            continue
                    for name in [n for n, entry in running.items() if not entry[0].is_alive()]:
                        process, receive, start, outcome = running.pop(name)
                        process.join()
                        if outcome is None and receive.poll():
                            try:
                                outcome = receive.recv()
                            except EOFError:
                                outcome = None
                        receive.close()
                        self._report(tally, name, process, outcome, time.time() - start)
            finally:
                for process, *_ in running.values():  # only after an error of this process itself
                    _send(process, signal.SIGKILL)
                    process.join()
        return tally.outcome(signals, len(pending))

    @staticmethod
    def _report(tally: _Tally, name: str, process, outcome, seconds: float) -> None:
        status, value = outcome if outcome and outcome[0] != "lost" else (None, None)
        if status == "done" and process.exitcode == 0:
            tally.done(name, value, seconds)
        elif status == "stopped":
            tally.stop(name, value)
        elif status == "failed":
            tally.failed(name, value)
        elif process.exitcode is not None and process.exitcode < 0:
            tally.failed(name, f"its process was killed by {signal.Signals(-process.exitcode).name}")
        else:
            tally.failed(name, f"its process ended with exit code {process.exitcode} without a result")


def _send(process, signum: int) -> None:
    try:
        os.kill(process.pid, signum)
    except (ProcessLookupError, TypeError):
        pass


@dataclass
class SubmititJobs:
    """One submitit job per run: ``cluster`` ``slurm`` (a job array on SLURM, at most ``jobs``
    running at once) or ``local`` (submitit's local executor: a process per job on this machine).

    ``folder`` keeps submitit's job files (the pickled task, its result, logs); ``threads`` is each
    run's intra-op threads (``cpus_per_task`` on SLURM). ``partition``, ``time_min``,
    ``cpus_per_task`` and ``mem_gb`` are the SLURM request (None: the cluster's defaults).
    """

    folder: Path
    cluster: str = "slurm"
    jobs: int = 1
    threads: int = 1
    partition: Optional[str] = None
    time_min: Optional[int] = None
    cpus_per_task: Optional[int] = None
    mem_gb: Optional[float] = None

    def executor(self):
        try:
            import submitit
        except ImportError:
            raise ValueError(f"--launcher {'slurm' if self.cluster == 'slurm' else 'submitit-local'} needs submitit: "
                             "pip install \"pyro-zforcing[cluster]\"") from None
        executor = submitit.AutoExecutor(folder=Path(self.folder) / "%j", cluster=self.cluster)
        parameters = {"name": "zforcing-study", "cpus_per_task": self.cpus_per_task or self.threads,
                      "timeout_min": self.time_min or 60 * 24}
        if self.mem_gb is not None:
            parameters["mem_gb"] = self.mem_gb
        if self.cluster == "slurm":
            parameters["slurm_array_parallelism"] = self.jobs
            if self.partition is not None:
                parameters["slurm_partition"] = self.partition
        executor.update_parameters(**parameters)
        return executor

    def run(self, tasks: Sequence[Task], *, quiet: bool = True) -> Dict[str, Dict]:
        executor = self.executor()
        level = logging.WARNING if quiet else logging.INFO
        threads = self.cpus_per_task or self.threads
        tally = _Tally(tasks, quiet=quiet)
        with _Signals() as signals, logging_redirect_tqdm():
            with executor.batch():
                submitted = [(task.name, executor.submit(run_task, task, threads, level)) for task in tasks]
            starts = {}
            for name, job in submitted:
                starts[name] = time.time()
                log.info("%s: submitted as job %s (%s)", name, job.job_id, self.folder)
            open_jobs = dict(submitted)
            cancelled = False
            while open_jobs:
                if signals.first is not None and not cancelled:  # each run saves its checkpoint on the signal
                    for job in open_jobs.values():
                        job.cancel(check=False)
                    cancelled = True
                for name, job in list(open_jobs.items()):
                    if not job.done():
                        continue
                    del open_jobs[name]
                    error = job.exception()
                    if error is None:
                        tally.done(name, job.result(), time.time() - starts[name])
                    elif cancelled:
                        tally.stop(name, f"job {job.job_id} cancelled")
                    else:
                        tally.failed(name, _job_error(error))
                if open_jobs:
                    time.sleep(POLL_SECONDS)
        return tally.outcome(signals, 0)


def _job_error(error: BaseException) -> str:
    """The run's own one-line error from submitit's FailedJobError (its last traceback line)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    exceptions = [line for line in lines if not line.startswith(("File ", "Traceback", "^", "~"))
                  and ":" in line and line.split(":")[0].replace(".", "").isidentifier()]
    return exceptions[-1] if exceptions else (lines[0] if lines else type(error).__name__)
