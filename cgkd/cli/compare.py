"""``cgkd compare AA_CG.h5 RUN... --labels ... --out DIR``: AA vs CG structure and dynamics report."""

from __future__ import annotations


def add_parser(subparsers):
    p = subparsers.add_parser("compare", help="compare CG MD runs with the mapped AA reference")
    p.add_argument("reference", help="mapped AA data (CG dataset .h5)")
    p.add_argument("runs", nargs="+", help="CG MD output folders (cgkd simulate) or CG dataset files")
    p.add_argument("--labels", nargs="+", default=None, help="one label per run (default: folder names)")
    p.add_argument("--out", required=True, help="output folder for plots, metrics.json and report.md")
    p.add_argument("--r-max", type=float, default=None, help="RDF range, nm")
    p.add_argument("--adf-cutoff", type=float, default=None, help="neighbour cutoff for ADF/CDF, nm")
    p.add_argument("--max-frames", type=int, default=100, help="frames per trajectory for structure")
    return p


def run(args) -> int:
    from pathlib import Path

    from cgkd.analysis.report import CompareSettings, compare

    labels = args.labels or [Path(r).name for r in args.runs]
    if len(labels) != len(args.runs):
        raise ValueError(f"--labels has {len(labels)} entries but {len(args.runs)} runs were given")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be unique, got {labels}")
    settings = CompareSettings(r_max=args.r_max, adf_cutoff=args.adf_cutoff, max_frames=args.max_frames)
    compare(args.reference, dict(zip(labels, args.runs)), args.out, settings=settings)
    print(Path(args.out) / "report.md")
    return 0
