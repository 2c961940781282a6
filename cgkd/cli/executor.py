"""Options that choose where a parallel stage runs (``--executor``, ``--scheduler``, ``--executor-config``).

Shared by every verb with independent tasks (``cgkd teachers``, ``cgkd simulate``, ``cgkd atoms label``);
they build one :class:`cgkd.parallel.ExecutorConfig`.
"""

from __future__ import annotations

import argparse


def add_executor_args(p: argparse.ArgumentParser, workers_help: str = "local processes") -> None:
    g = p.add_argument_group("parallel execution (cgkd.parallel)")
    g.add_argument("--workers", type=int, default=1, help=f"{workers_help} in parallel (local executor); default 1")
    g.add_argument("--executor", choices=["local", "dask", "jobqueue"], default=None,
                   help="where tasks run: local processes (default), a running Dask scheduler (--scheduler), or "
                        "SLURM/PBS jobs started by dask-jobqueue (--executor-config); Dask needs cgkd[dask]")
    g.add_argument("--scheduler", default=None, metavar="ADDRESS", help="Dask scheduler address, tcp://host:8786")
    g.add_argument("--executor-config", default=None, metavar="YAML",
                   help="cgkd.parallel.ExecutorConfig fields (system, cores, memory, walltime, queue, account, "
                        "job_directives, prologue, retries, threads); --executor/--scheduler/--workers override")


def executor_from_args(args):
    """The :class:`cgkd.parallel.ExecutorConfig` of the parsed options."""
    from dataclasses import replace

    from cgkd.io.config import load_yaml
    from cgkd.parallel import ExecutorConfig

    base = load_yaml(ExecutorConfig, args.executor_config) if args.executor_config else ExecutorConfig()
    over = {}
    if args.executor is not None:
        over["backend"] = args.executor
    elif args.scheduler:
        over["backend"] = "dask"
    if args.scheduler:
        over["scheduler"] = args.scheduler
    if args.workers != 1 or not args.executor_config:
        over["workers"] = args.workers
    return replace(base, **over)
