"""``cgkd compare AA_CG.h5 RUN... --labels ... --out DIR``: AA vs CG structure and dynamics report."""

from __future__ import annotations


def add_parser(subparsers):
    p = subparsers.add_parser("compare", help="compare CG MD runs with the mapped AA reference")
    p.add_argument("reference", help="mapped AA data (CG dataset .h5)")
    p.add_argument("runs", nargs="+", help="CG MD output folders (cgkd simulate) or CG dataset files")
    p.add_argument("--labels", nargs="+", default=None, help="one label per run (default: folder names)")
    p.add_argument("--out", required=True, help="output folder for plots, metrics.json and report.md")
    p.add_argument("--settings", default=None, metavar="FILE",
                   help="YAML of cgkd.analysis.CompareSettings fields (unknown keys rejected); the options below "
                        "override it")
    p.add_argument("--r-max", type=float, default=None, help="RDF range, nm (default: from the reference box)")
    p.add_argument("--adf-cutoff", type=float, default=None,
                   help="neighbour cutoff for ADF/CDF, nm (default: first RDF minimum of the reference)")
    p.add_argument("--max-frames", type=int, default=None, help="frames per trajectory for structure (default 100)")
    return p


def run(args) -> int:
    from dataclasses import replace
    from pathlib import Path

    from cgkd.analysis.report import CompareSettings, compare
    from cgkd.io.config import load_yaml

    labels = args.labels or [Path(r).name for r in args.runs]
    if len(labels) != len(args.runs):
        raise ValueError(f"--labels has {len(labels)} entries but {len(args.runs)} runs were given")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be unique, got {labels}")
    settings = load_yaml(CompareSettings, args.settings) if args.settings else CompareSettings()
    over = {"r_max": args.r_max, "adf_cutoff": args.adf_cutoff, "max_frames": args.max_frames}
    settings = replace(settings, **{k: v for k, v in over.items() if v is not None})
    compare(args.reference, dict(zip(labels, args.runs)), args.out, settings=settings)
    print(Path(args.out) / "report.md")
    return 0
