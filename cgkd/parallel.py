"""Executors for the embarrassingly parallel stages: teacher members, CG MD replicas, label chunks.

One setting, :class:`ExecutorConfig`, chooses where independent tasks run:

``local`` (the default)
    In this process (``workers=1``) or a local process pool of ``workers`` processes (started with
    "spawn"; each worker exits when its parent dies, so a killed run leaves no orphan).
``dask``
    On a running Dask ``distributed`` scheduler (``scheduler="tcp://host:8786"``), e.g. one started by
    ``dask scheduler`` with workers ``dask worker tcp://host:8786 --nworkers 4 --nthreads 1``.
``jobqueue``
    On workers that ``dask-jobqueue`` submits as batch jobs (``system="slurm"`` or ``"pbs"``); the
    scheduler runs in this process. :func:`job_script` shows the script without submitting anything.

Every task cgkd submits is idempotent and resumable (a teacher member resumes from its checkpoint,
a replica from its OpenMM checkpoint, a label from its cache entry), so a lost worker costs only the
part of its task since the last checkpoint: Dask runs the task again on another worker (up to
``retries`` times after an error; a worker that dies is handled by the scheduler's own
``distributed.scheduler.allowed-failures``).

The Dask backends need ``pip install "cgkd[dask]"``. Tasks are top-level functions with arguments
that pickle (paths, numbers, plain dicts); each runs with one thread per task by default
(``threads``), which the calling stage applies.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import threading
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

from cgkd.errors import CgkdError, require

#: Backends of :class:`ExecutorConfig`.
BACKENDS = ("local", "dask", "jobqueue")
#: Batch systems of the ``jobqueue`` backend -> dask-jobqueue job class.
JOB_SYSTEMS = {"slurm": "dask_jobqueue.slurm.SLURMJob", "pbs": "dask_jobqueue.pbs.PBSJob"}
#: Cluster classes of the ``jobqueue`` backend.
CLUSTERS = {"slurm": "dask_jobqueue.SLURMCluster", "pbs": "dask_jobqueue.PBSCluster"}
#: Seconds between checks of a pool worker that its parent is alive.
PARENT_POLL_S = 0.5


class TaskError(CgkdError, RuntimeError):
    """One or more tasks failed; the message names each with its error (a rerun resumes them)."""


@dataclass(frozen=True)
class ExecutorConfig:
    """Where the tasks of a parallel stage run (YAML-loadable).

    Attributes
    ----------
    backend : str
        ``local``, ``dask`` or ``jobqueue``.
    workers : int
        ``local``: processes in the pool (1 = in this process). ``jobqueue``: batch jobs to start.
        ``dask``: ignored (the scheduler's workers).
    scheduler : str
        ``dask``: address of a running scheduler, ``tcp://host:port``.
    system : str
        ``jobqueue``: ``slurm`` or ``pbs``.
    cores, memory, walltime, queue, account : int, str, str, str, str
        ``jobqueue``: per batch job; each job runs ``cores`` one-threaded Dask workers.
    job_directives : tuple of str
        ``jobqueue``: extra scheduler directives (``--gres=gpu:1``; ``-l ngpus=1``).
    prologue : tuple of str
        ``jobqueue``: shell lines run before the worker starts (``module load ...``, ``source .venv/bin/activate``).
    retries : int
        Dask: times a task that raised is run again.
    threads : int
        torch/OpenMP threads per task.
    """

    backend: str = "local"
    workers: int = 1
    scheduler: str = ""
    system: str = "slurm"
    cores: int = 1
    memory: str = "4GB"
    walltime: str = "01:00:00"
    queue: str = ""
    account: str = ""
    job_directives: Tuple[str, ...] = field(default_factory=tuple)
    prologue: Tuple[str, ...] = field(default_factory=tuple)
    retries: int = 1
    threads: int = 1

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"ExecutorConfig.backend must be one of {BACKENDS}, got {self.backend!r}")
        for name in ("workers", "cores", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ExecutorConfig.{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"ExecutorConfig.retries must be an integer >= 0, got {self.retries!r}")
        if self.backend == "dask" and not self.scheduler:
            raise ValueError("ExecutorConfig.backend 'dask' needs scheduler, the address of a running Dask scheduler "
                             "(tcp://host:8786); got none")
        if self.scheduler and "://" not in self.scheduler:
            raise ValueError(f"ExecutorConfig.scheduler must be an address like tcp://host:8786, got {self.scheduler!r}")
        if self.system not in JOB_SYSTEMS:
            raise ValueError(f"ExecutorConfig.system must be one of {sorted(JOB_SYSTEMS)}, got {self.system!r}")
        object.__setattr__(self, "job_directives", tuple(self.job_directives))
        object.__setattr__(self, "prologue", tuple(self.prologue))

    @property
    def in_process(self) -> bool:
        """True when tasks run one after another in this process."""
        return self.backend == "local" and self.workers == 1


def as_executor(executor) -> ExecutorConfig:
    """An :class:`ExecutorConfig` from None (local, 1 worker), an int (local pool size), a config or a dict."""
    if executor is None:
        return ExecutorConfig()
    if isinstance(executor, ExecutorConfig):
        return executor
    if isinstance(executor, bool):
        raise ValueError(f"executor must be an ExecutorConfig, a dict or a number of local workers, got {executor!r}")
    if isinstance(executor, int):
        return ExecutorConfig(workers=executor)
    if isinstance(executor, dict):
        from cgkd.io.config import from_dict

        return from_dict(ExecutorConfig, executor)
    raise ValueError(f"executor must be an ExecutorConfig, a dict or a number of local workers, got {type(executor).__name__}")


def _job_kwargs(cfg: ExecutorConfig) -> dict:
    kw = dict(cores=cfg.cores, processes=cfg.cores, memory=cfg.memory, walltime=cfg.walltime, name="cgkd",
              job_extra_directives=list(cfg.job_directives), job_script_prologue=list(cfg.prologue))
    if cfg.queue:
        kw["queue"] = cfg.queue
    if cfg.account:
        kw["account"] = cfg.account
    return kw


def _import(dotted: str):
    module, name = dotted.rsplit(".", 1)
    return getattr(require(module, "dask", "the jobqueue executor"), name)


def job_script(executor, scheduler: str = "tcp://SCHEDULER:8786") -> str:
    """The batch script the ``jobqueue`` backend would submit per job (nothing is started or submitted)."""
    cfg = as_executor(executor)
    require("distributed", "dask", "the jobqueue executor")
    job = _import(JOB_SYSTEMS[cfg.system])(scheduler=scheduler, **_job_kwargs(cfg))
    return job.job_script()


def _watch_parent(parent: int) -> None:
    """Pool-worker initializer: exit at once when the parent process dies (SIGKILL included)."""

    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(70)
            threading.Event().wait(PARENT_POLL_S)

    threading.Thread(target=watch, name="cgkd-parent-watch", daemon=True).start()


def run_tasks(fn: Callable, jobs: Sequence[tuple], executor=None, labels: Optional[Sequence[str]] = None,
              desc: str = "tasks", show_progress: bool = False) -> List:
    """Run ``fn(*job)`` for every job and return the results in the order of ``jobs``.

    Parameters
    ----------
    fn : callable
        A top-level (importable) function; it must be idempotent (a task may run again after a lost worker).
    jobs : sequence of tuple
        Positional arguments of each task (picklable).
    executor : ExecutorConfig, dict, int or None
        See :func:`as_executor`.
    labels : sequence of str, optional
        Names of the tasks in errors and progress (default ``task <i>``).
    desc : str
    show_progress : bool

    Raises
    ------
    TaskError
        After every task has finished or failed, naming each failed one.
    """
    cfg = as_executor(executor)
    jobs = [tuple(j) for j in jobs]
    labels = [f"task {i}" for i in range(len(jobs))] if labels is None else [str(x) for x in labels]
    if len(labels) != len(jobs):
        raise ValueError(f"labels has {len(labels)} entries but there are {len(jobs)} jobs")
    if not jobs:
        return []
    from cgkd.progress import progress

    bar = progress(len(jobs), desc, unit="task", enabled=show_progress)
    results: dict = {}
    errors: dict = {}
    try:
        if cfg.in_process or (cfg.backend == "local" and len(jobs) == 1):
            for i, job in enumerate(jobs):
                results[i] = fn(*job)  # in process: errors propagate as they are
                bar.update(1)
        elif cfg.backend == "local":
            ctx = multiprocessing.get_context("spawn")
            pool = cf.ProcessPoolExecutor(max_workers=min(cfg.workers, len(jobs)), mp_context=ctx,
                                          initializer=_watch_parent, initargs=(os.getpid(),))
            try:
                futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
                for fut in cf.as_completed(futures):
                    i = futures[fut]
                    try:
                        results[i] = fut.result()
                    except Exception as exc:  # noqa: BLE001 - reported together below
                        errors[i] = exc
                    bar.update(1)
            except BaseException:  # Ctrl-C or a kill of the stage: drop the queue, end the workers, re-raise
                pool.shutdown(wait=False, cancel_futures=True)
                for proc in list(getattr(pool, "_processes", {}).values()):
                    proc.terminate()
                raise
            pool.shutdown(wait=True)
        else:
            _run_dask(cfg, fn, jobs, labels, desc, results, errors, bar)
    finally:
        bar.close()
    if errors:
        lines = "; ".join(f"{labels[i]}: {type(e).__name__}: {e}" for i, e in sorted(errors.items()))
        raise TaskError(f"{len(errors)} of {len(jobs)} {desc} failed (rerun to resume them): {lines}")
    return [results[i] for i in range(len(jobs))]


def _run_dask(cfg: ExecutorConfig, fn, jobs, labels, desc, results, errors, bar) -> None:
    distributed = require("distributed", "dask", f"the {cfg.backend} executor")
    import uuid

    cluster = None
    if cfg.backend == "jobqueue":
        cluster = _import(CLUSTERS[cfg.system])(**_job_kwargs(cfg))
        try:
            cluster.scale(jobs=cfg.workers)
            client = distributed.Client(cluster, set_as_default=False)
        except BaseException:  # no submitted job outlives a failed start
            cluster.close()
            raise
    else:
        try:
            client = distributed.Client(cfg.scheduler, set_as_default=False, timeout="30s")
        except OSError as exc:
            raise TaskError(f"could not reach the Dask scheduler at {cfg.scheduler!r} ({exc}); start one with "
                            "`dask scheduler` and workers with `dask worker <address> --nthreads 1`") from None
    run = uuid.uuid4().hex[:8]
    try:
        futures = {}
        for i, job in enumerate(jobs):
            key = f"cgkd-{desc.replace(' ', '-')}-{run}-{i}"
            futures[client.submit(fn, *job, key=key, pure=False, retries=cfg.retries)] = i
        with client.as_current():
            for fut in distributed.as_completed(list(futures)):
                i = futures[fut]
                try:
                    results[i] = fut.result()
                except Exception as exc:  # noqa: BLE001 - reported together
                    errors[i] = exc
                bar.update(1)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


__all__ = ["BACKENDS", "ExecutorConfig", "TaskError", "as_executor", "job_script", "run_tasks"]
