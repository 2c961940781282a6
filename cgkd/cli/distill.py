"""``cgkd distill CG.h5 --teachers DIR --out DIR``: ensemble labels, then a student.

A thin shell over :func:`cgkd.kd.labels.make_labels` and :func:`cgkd.kd.students.train_student`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cgkd.cli.teachers import add_common_training_args, arch_preset_arg, training_config
from cgkd.keys import ENERGY_TARGETS, FORCE_TARGETS


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "distill",
        help="label the CG data with a teacher ensemble and train a student on the labels",
        description=(
            "Evaluate every teacher on every frame and write the ensemble labels (mean/member forces and "
            "energies, force spread) into the CG file's group 'labels' (atomically; skipped when labels from "
            "the same teacher folder exist, unless --relabel), then train a student potential on the chosen "
            "force and energy targets. Resumable: rerunning continues an interrupted student."
        ),
    )
    p.add_argument("cg", help="CG dataset (HDF5, from cgkd map)")
    p.add_argument("--teachers", default=None,
                   help="teacher folder (from cgkd teachers); needed unless --student native --force-target mapped")
    p.add_argument("--out", required=True, help="student folder")
    p.add_argument("--student", choices=["neural", "native"], default="neural",
                   help="neural: a small network (default); native: tabulated pair potentials + bonded priors fitted "
                        "by force matching, a plain OpenMM System (OUT/native.json; --force-target mapped is MS-CG)")
    p.add_argument("--basis", choices=["spline", "powers"], default="spline",
                   help="native student: pair tables (spline, default) or an analytic inverse-power expansion "
                        "(powers: about 3x cheaper per pair in OpenMM, less structure)")
    p.add_argument("--cutoff", type=float, default=None, help="native student: pair cutoff in nm (default 1, less in "
                                                              "a small box)")
    p.add_argument("--force-target", choices=FORCE_TARGETS, default="mean", help="force labels; default mean")
    p.add_argument("--energy-target", choices=ENERGY_TARGETS, default="none", help="energy labels; default none")
    p.add_argument("--teacher-index", type=int, default=0, help="member used by --force-target teacher; default 0")
    p.add_argument("--energy-weight", type=float, default=1.0, help="weight of the energy term; default 1")
    p.add_argument("--energy-gauge", choices=["free", "fixed"], default="free",
                   help="free (default): energy terms ignore the teachers' arbitrary per-type constants; fixed: "
                        "match the raw ensemble-mean energies")
    p.add_argument(
        "--uncertainty-weighting",
        action="store_true",
        help="weight each bead's force loss by 1/(sigma^2 + mean sigma^2) of the ensemble spread",
    )
    p.add_argument("--relabel", action="store_true", help="recompute the labels even if they exist")
    add_common_training_args(p)
    from cgkd.cli.executor import add_executor_args

    add_executor_args(p, workers_help="label chunks (member x frames) computed")
    return p


def run(args) -> int:
    from cgkd.kd.labels import ensemble_errors, labels_are_current, make_labels
    from cgkd.kd.students import train_student
    from cgkd.kd.teachers import read_split

    cg = Path(args.cg)
    if not cg.is_file():
        raise FileNotFoundError(f"CG dataset {str(cg)!r} does not exist")
    if args.teachers is None:
        if args.student == "native" and args.force_target == "mapped":
            from cgkd.kd.native import train_native_student

            print(json.dumps(train_native_student(cg, args.out, force_target="mapped", cutoff=args.cutoff,
                                                  basis=args.basis)))
            return 0
        raise ValueError("--teachers is required (only --student native --force-target mapped fits without teachers)")
    tdir = Path(args.teachers)
    from cgkd.train import distributed

    if distributed.is_main() and (args.relabel or not labels_are_current(cg, tdir)):  # rank 0 under torchrun
        from cgkd.cli.executor import executor_from_args

        make_labels(cg, tdir, executor=executor_from_args(args))
        errors = ensemble_errors(cg, tdir, "test" if read_split(tdir)["test"] else "val")
        print(json.dumps({"teacher_force_rmse_vs_mapped": errors}))
    distributed.barrier()
    if args.student == "native":
        from cgkd.kd.native import train_native_student

        if args.energy_target != "none":
            raise ValueError("--energy-target must be none for --student native (it is fitted to forces)")
        print(json.dumps(train_native_student(cg, args.out, teacher_dir=tdir, force_target=args.force_target,
                                              teacher_index=args.teacher_index, cutoff=args.cutoff,
                                              basis=args.basis)))
        return 0
    info = train_student(
        cg,
        tdir,
        Path(args.out),
        force_target=args.force_target,
        energy_target=args.energy_target,
        teacher_index=args.teacher_index,
        arch=args.arch,
        preset=arch_preset_arg(args.arch_preset),
        uncertainty_weighting=args.uncertainty_weighting,
        config=training_config(args),
        energy_weight=args.energy_weight,
        energy_gauge=args.energy_gauge,
    )
    print(json.dumps({k: v for k, v in info.items() if k != "config"}))
    return 0
