"""``cgkd aa``: build, equilibrate and run all-atom MD with forces for a system spec."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "aa",
        help="all-atom MD with forces -> cgkd-aa HDF5 file",
        description=(
            "Build a box for SPEC (random insertion at the spec's density, minimisation), equilibrate "
            "(NPT with a Monte Carlo barostat, then NVT at the NPT-average box) and run NVT production, "
            "saving positions, total per-atom forces, box, potential energy and time every report interval. "
            "An interrupted run continues from its last checkpoint when started again with the same arguments."
        ),
        epilog="example: cgkd aa reline --size quick --out runs/reline-quick/aa.h5",
    )
    p.add_argument("spec", metavar="SPEC", help="spec YAML path, or the name of a shipped system (reline, water)")
    p.add_argument("--size", default="quick", help="size defined in the spec: test, quick, default, paper (default: quick)")
    p.add_argument("--out", required=True, metavar="FILE", help="output HDF5 file (checkpoint side file FILE.chk)")
    p.add_argument("--steps", type=int, default=None, metavar="N",
                   help="production MD steps (default: the size's production_steps)")
    p.add_argument("--report-interval", type=int, default=None, metavar="N",
                   help="steps between saved frames (default: the size's report_interval)")
    p.add_argument("--platform", default=None, metavar="NAME",
                   help="OpenMM platform: CUDA, OpenCL, CPU or Reference (default: fastest available)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: the spec's seed)")
    p.add_argument("--temperature", type=float, default=None, metavar="K",
                   help="run at this temperature instead of the spec's (recorded in the file)")
    p.add_argument("--no-resume", dest="resume", action="store_false",
                   help="start over even if FILE exists (default: resume from its last checkpoint)")
    p.add_argument("--quiet", dest="progress", action="store_false", help="no progress reports")
    p.add_argument("--no-sampling", dest="sampling", action="store_false",
                   help="skip the sampling report (autocorrelation times and effective sample sizes of the potential "
                        "energy and the structure, written to FILE.sampling.json)")
    p.add_argument("--replicas", type=int, default=1, metavar="K",
                   help="K independent runs (seeds SEED..SEED+K-1) into the folder --out as replica_<k>.h5, as "
                        "parallel tasks (--workers, --executor); default 1")
    from cgkd.cli.executor import add_executor_args

    add_executor_args(p, workers_help="replicas run")
    return p


def run(args: argparse.Namespace) -> int:
    from cgkd.aa.simulate import simulate

    if args.replicas != 1:
        from cgkd.aa.simulate import simulate_replicas
        from cgkd.cli.executor import executor_from_args

        if not args.resume:
            raise ValueError("--no-resume is not offered with --replicas; remove the folder to start over")
        for path in simulate_replicas(args.spec, args.size, args.out, args.replicas, seed=args.seed,
                                      platform=args.platform, production_steps=args.steps,
                                      report_interval=args.report_interval, temperature=args.temperature,
                                      executor=executor_from_args(args), progress=args.progress):
            print(path)
        return 0
    out = simulate(args.spec, args.size, args.out, platform=args.platform, production_steps=args.steps,
                   report_interval=args.report_interval, seed=args.seed, temperature=args.temperature,
                   progress=args.progress, resume=args.resume)
    print(out)
    if args.sampling:
        import json
        import sys

        from cgkd.analysis.sampling import aa_sampling_report, format_report
        from cgkd.io.aa_h5 import read_aa
        from cgkd.io.atomic import write_text

        rep = aa_sampling_report(read_aa(out))
        path = out.with_name(out.name + ".sampling.json")
        write_text(path, json.dumps(rep, indent=1))
        print(f"sampling ({path}):\n" + format_report(rep), file=sys.stderr)
    return 0
