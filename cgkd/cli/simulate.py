"""``cgkd simulate MODEL.pt CG.h5 --out DIR``: CG Langevin MD replicas from mapped AA frames; a rerun resumes."""

from __future__ import annotations

import json


def add_parser(subparsers):
    p = subparsers.add_parser("simulate", help="run CG MD with an exported potential or a native student")
    p.add_argument("model", help="exported artefact (cgkd export, .pt) or native student (cgkd distill --student native, .json)")
    p.add_argument("cg", help="CG dataset (.h5) whose frames start the replicas")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--timestep", type=float, default=None,
                   help="ps (default 0.016, or 0.002 for a model with bonded priors: cgkd.openmm.md.default_timestep)")
    p.add_argument("--friction", type=float, default=1.0, help="1/ps (default 1)")
    p.add_argument("--temperature", type=float, default=None, help="K (default: the CG dataset's)")
    p.add_argument("--report-interval", type=int, default=100, help="steps between frames and checks")
    p.add_argument("--checkpoint-interval", type=int, default=None,
                   help="steps between checkpoints of each replica (default: 10 report intervals)")
    p.add_argument("--backend", choices=["torch", "python"], default=None)
    p.add_argument("--platform", default=None, help="OpenMM platform (Reference, CPU, CUDA, ...)")
    p.add_argument("--seed", type=int, default=0,
                   help="replica k uses a fixed seed derived from SEED and k: the same SEED gives the same run (default 0)")
    p.add_argument("--min-distance", type=float, default=None, help="nm; a pair below it at two checks in a row is a collapse (default 0.75 x the smallest mapped AA distance of its type pair)")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch threads for the model (default 1: fastest for small CG models, robust on busy machines)")
    p.add_argument("--no-progress", action="store_true", help="no progress reports")
    p.add_argument("--no-resume", action="store_true",
                   help="start over (default: continue an interrupted run in --out from its checkpoints); the old "
                        "folder is replaced only when the new run has finished")
    from cgkd.cli.executor import add_executor_args

    add_executor_args(p, workers_help="replicas run")
    return p


def run(args) -> int:
    from cgkd.cli.executor import executor_from_args
    from cgkd.openmm.md import run_cg_md

    summary = run_cg_md(args.model, args.cg, args.out, n_replicas=args.replicas, steps=args.steps,
                        timestep=args.timestep, friction=args.friction, temperature=args.temperature,
                        report_interval=args.report_interval, checkpoint_interval=args.checkpoint_interval,
                        resume=not args.no_resume, backend=args.backend, platform=args.platform,
                        seed=args.seed, min_distance=args.min_distance, progress=not args.no_progress,
                        torch_threads=args.torch_threads, executor=executor_from_args(args))
    print(json.dumps({k: summary[k] for k in ("n_replicas", "survived", "steps_per_s", "ns_per_day", "platform")}))
    return 0 if summary["survived"] > 0 else 1
