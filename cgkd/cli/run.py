"""``cgkd run SPEC --preset quick --dir DIR``: the whole pipeline, each stage cached and resumable."""

from __future__ import annotations


def add_parser(subparsers):
    from cgkd.pipeline import PRESETS, STAGES

    p = subparsers.add_parser(
        "run",
        help="run the whole pipeline: AA MD -> map -> teachers -> labels -> student -> export -> CG MD -> compare",
        description="Run the main job in a run directory. Every stage (" + ", ".join(STAGES) + ") writes its "
        "outputs into its own folder and is skipped when rerun with the same settings, so an interrupted run "
        "continues where it stopped. Ends by printing where the report is.",
    )
    p.add_argument("spec", help="system spec: a YAML path or a shipped name (reline, water)")
    p.add_argument("--preset", default="quick", metavar="|".join(sorted(PRESETS)) + "|FILE",
                   help="sizes and lengths: test (seconds), quick (~20 min on 2 CPU cores), paper (GPU), or a YAML "
                        "file of cgkd.pipeline.Preset fields (unknown keys rejected); default quick")
    p.add_argument("--dir", default=None,
                   help="run directory (default: runs/<system>-<preset>, the file's stem for a preset file)")
    p.add_argument("--device", default="cpu", help="torch device for training: cpu or cuda (default cpu)")
    return p


def run(args) -> int:
    from pathlib import Path

    from cgkd.io.spec import load_spec
    from cgkd.pipeline import PRESETS, load_preset, run_pipeline

    spec = load_spec(args.spec)
    preset = load_preset(args.preset, spec)  # fails before anything runs
    label = args.preset if args.preset in PRESETS else Path(args.preset).stem
    run_dir = args.dir or f"runs/{spec.name}-{label}"
    report = run_pipeline(spec, preset, run_dir, device=args.device)
    print(f"done: the report is {report}")
    return 0
