"""``cgkd synthetic CG.h5 --teachers DIR --out DIR``: rounds of the student's own MD, labelled by the ensemble.

A thin shell over :func:`cgkd.synthetic.synthetic_rounds`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cgkd.cli.teachers import add_common_training_args, arch_preset_arg, training_config


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "synthetic",
        help="train a student on AA frames plus configurations from its own CG MD, labelled by the ensemble",
        description=(
            "Round 0 trains a student on the ensemble-mean forces of the AA training frames. Each later round runs "
            "CG MD with the previous student, picks --per-round of its frames (half where the teachers disagree "
            "most, half spread in time), labels them with the ensemble mean and trains a fresh student on the AA "
            "frames plus every synthetic frame so far. With --stop-ratio the rounds end once the ensemble disagrees "
            "on the student's own MD no more than that many times as much as on held-out AA frames. Writes "
            "OUT/round_XX/ per round, OUT/rounds.json and OUT/student.pt (the last round's student, for cgkd "
            "simulate). Resumable: rerunning continues after the last finished round."
        ),
    )
    p.add_argument("cg", help="CG dataset (HDF5, from cgkd map); its split is the teacher folder's")
    p.add_argument("--teachers", required=True, help="teacher folder (from cgkd teachers)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--rounds", type=int, default=4,
                   help="rounds after round 0 (default 4: on water the force error converged in 3-4)")
    p.add_argument("--per-round", type=int, default=32, help="synthetic frames added per round (default 32)")
    p.add_argument("--coverage", type=float, default=0.5,
                   help="share of them spread in time rather than chosen by disagreement (default 0.5)")
    p.add_argument("--md-ps", type=float, default=20.0, help="CG MD per replica and round in ps (default 20)")
    p.add_argument("--replicas", type=int, default=2, help="CG MD replicas per round (default 2)")
    p.add_argument("--skip-ps", type=float, default=2.0, help="ps dropped at the start of each replica (default 2)")
    p.add_argument("--sampler", choices=["student", "ensemble", "frames"], default="student",
                   help="where the candidates come from: the round's student's MD (default), the teacher ensemble's "
                        "MD, or the configurations of --frames")
    p.add_argument("--frames", default=None,
                   help="--sampler frames: a CG dataset (cgkd map) of further configurations, e.g. AA frames not "
                        "used for training; its forces are not used")
    p.add_argument("--stop-ratio", type=float, default=None,
                   help="stop at the first round whose own MD survives and on which the ensemble disagrees at most "
                        "this many times as much as on held-out AA frames (>= 1; default: run every round)")
    add_common_training_args(p)
    return p


def run(args) -> int:
    from cgkd.synthetic import synthetic_rounds

    cg = Path(args.cg)
    if not cg.is_file():
        raise FileNotFoundError(f"CG dataset {str(cg)!r} does not exist")
    cfg = training_config(args)
    recs = synthetic_rounds(cg, Path(args.teachers), Path(args.out), rounds=args.rounds, per_round=args.per_round,
                            coverage=args.coverage, md_ps=args.md_ps, replicas=args.replicas, skip_ps=args.skip_ps,
                            sampler=args.sampler, frames=args.frames, arch=args.arch, preset=arch_preset_arg(args.arch_preset),
                            config=cfg, seed=cfg.seed, stop_ratio=args.stop_ratio, progress=cfg.progress)
    print(json.dumps(json.loads((Path(args.out) / "rounds.json").read_text())
                     | {"rounds": [{k: r[k] for k in ("round", "n_synthetic", "force_rmse_vs_mapped",
                                                      "own_md_mean_force_std", "aa_mean_force_std",
                                                      "own_md_survived")} for r in recs]}))
    return 0
