"""``cgkd jobscript``: print the batch script the ``jobqueue`` executor submits per job (a dry run)."""

from __future__ import annotations


def add_parser(subparsers):
    p = subparsers.add_parser(
        "jobscript", help="show the SLURM/PBS job script of the jobqueue executor (submits nothing)",
        description="Print the batch script that `--executor jobqueue` would submit for each Dask worker job, built by "
                    "dask-jobqueue from an ExecutorConfig YAML and the options below. Nothing is submitted or started.")
    p.add_argument("--executor-config", default=None, metavar="YAML", help="cgkd.parallel.ExecutorConfig fields")
    p.add_argument("--system", choices=["slurm", "pbs"], default=None)
    p.add_argument("--cores", type=int, default=None, help="one-threaded Dask workers per job")
    p.add_argument("--memory", default=None, help="memory per job, e.g. 8GB")
    p.add_argument("--walltime", default=None, help="e.g. 02:00:00")
    p.add_argument("--queue", default=None)
    p.add_argument("--account", default=None)
    p.add_argument("--scheduler", default="tcp://SCHEDULER:8786", help="address written into the script")
    return p


def run(args) -> int:
    from dataclasses import replace

    from cgkd.io.config import load_yaml
    from cgkd.parallel import ExecutorConfig, job_script

    cfg = load_yaml(ExecutorConfig, args.executor_config) if args.executor_config else ExecutorConfig()
    over = {k: getattr(args, k) for k in ("system", "cores", "memory", "walltime", "queue", "account")
            if getattr(args, k) is not None}
    cfg = replace(cfg, backend="jobqueue", **over)
    print(job_script(cfg, scheduler=args.scheduler))
    return 0
