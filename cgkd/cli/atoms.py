"""``cgkd atoms {label,train,asteroid,export,md}``: atomistic data, teachers and students on the same trainer.

    cgkd atoms label --labeler emt --fcc Al --repeats 2x2x2 2x2x3 --temperatures 300 900 --out al.xyz
    cgkd atoms train al.xyz --out runs/al/teacher --preset medium
    cgkd atoms train al.xyz --out runs/al/student --preset small --teacher runs/al/teacher/model.pt
    cgkd atoms export runs/al/student/model.pt --out al_student.pt --periodic
    cgkd atoms md runs/al/student/model.pt --start al.xyz --steps 200 --out md.xyz
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _repeat(text: str):
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected a repeat like 2x2x3, got {text!r}")
    return tuple(int(p) for p in parts)


def add_parser(subparsers):
    p = subparsers.add_parser("atoms", help="atomistic data, teachers and students (label, train, export, md)")
    sub = p.add_subparsers(dest="atoms_verb", metavar="STEP", required=True)

    lab = sub.add_parser("label", help="sample configurations by MD with a labeler and write them labelled")
    src = lab.add_mutually_exclusive_group(required=True)
    src.add_argument("--fcc", metavar="SYMBOL", help="start from cubic fcc cells of this element (e.g. Al)")
    src.add_argument("--molecule", metavar="NAME", help="start from an ase.build.molecule name (e.g. CH3CH2OH)")
    src.add_argument("--start", metavar="FILE", help="start from every structure of an ASE-readable file")
    src.add_argument("--relabel", metavar="FILE", help="no MD: label the structures of this file as they are")
    lab.add_argument("--labeler", default="emt",
                     help="labeler name (emt, xtb, dft, chgnet, sevennet, openmm; default %(default)s)")
    lab.add_argument("--system", default=None, metavar="XML",
                     help="with --labeler openmm: the serialized openmm.System whose particles are the atoms")
    lab.add_argument("--cache", default=None, metavar="DIR",
                     help="with --relabel: keep each label in DIR as it is computed and reuse it (resumable)")
    lab.add_argument("--repeats", nargs="+", type=_repeat, default=[(2, 2, 2)], metavar="AxBxC",
                     help="fcc supercell repeats, one cell size each (default 2x2x2)")
    lab.add_argument("--temperatures", nargs="+", type=float, default=[300.0], metavar="K")
    lab.add_argument("--strains", nargs="+", type=float, default=[1.0], help="cell scale factors (periodic only)")
    lab.add_argument("--frames", type=int, default=10, help="frames kept per MD run (default %(default)s)")
    lab.add_argument("--interval", type=int, default=10, help="MD steps between kept frames (default %(default)s)")
    lab.add_argument("--timestep-fs", type=float, default=2.0)
    lab.add_argument("--seed", type=int, default=0)
    lab.add_argument("--out", required=True, help="output file: .xyz (extended XYZ) or .db (ASE database)")
    lab.add_argument("--chunk", type=int, default=32, help="with --relabel and a parallel executor: structures per task")
    from cgkd.cli.executor import add_executor_args

    add_executor_args(lab, workers_help="label chunks (--relabel) run")

    tr = sub.add_parser("train", help="train an atomistic teacher, control or student (resumable)")
    tr.add_argument("data", metavar="DATA", help="labelled structures (.xyz or .db)")
    tr.add_argument("--out", required=True, help="run folder")
    tr.add_argument("--arch", default="hipnn")
    tr.add_argument("--preset", default="small", help="architecture preset or a JSON dict of its config")
    tr.add_argument("--cutoff", type=float, default=0.5, help="nm (default %(default)s)")
    tr.add_argument("--epochs", type=int, default=100)
    tr.add_argument("--batch-size", type=int, default=16)
    tr.add_argument("--lr", type=float, default=1e-3)
    tr.add_argument("--seed", type=int, default=0, help="training seed (the split uses --split-seed)")
    tr.add_argument("--split-seed", type=int, default=0)
    tr.add_argument("--energy-weight", type=float, default=0.1)
    tr.add_argument("--teacher", default=None, help="teacher model.pt: its per-atom energies become a target")
    tr.add_argument("--atom-energy-weight", type=float, default=1.0)
    tr.add_argument("--born-again-epoch", type=int, default=0,
                    help="with --teacher: hand the weight from the teacher to the labels at this epoch (0: off)")

    ast = sub.add_parser("asteroid", help="ASTEROID: bias-weighted training on cheap labels, fine-tuned on accurate ones")
    ast.add_argument("--cheap", required=True, help="many cheaply labelled structures (.xyz or .db)")
    ast.add_argument("--accurate", required=True, help="a few accurately labelled structures")
    ast.add_argument("--out", required=True, help="run folder (bias_model/, cheap_weighted/, finetuned/)")
    ast.add_argument("--preset", default="small", help="architecture preset or a JSON dict of its config")
    ast.add_argument("--gamma", type=float, default=None, help="kJ/mol/nm; default the median bias")
    ast.add_argument("--epochs", type=int, default=100)
    ast.add_argument("--seed", type=int, default=0)

    ex = sub.add_parser("export", help="export an atomistic model file as a TorchScript artefact (OpenMM, OpenMM-ML)")
    ex.add_argument("model", metavar="MODEL")
    ex.add_argument("--out", required=True)
    ex.add_argument("--periodic", action=argparse.BooleanOptionalAction, required=True,
                    help="whether the systems it runs on are periodic")

    md = sub.add_parser("md", help="Langevin MD (ASE or OpenMM) with a cgkd model; writes an extended XYZ trajectory")
    md.add_argument("--engine", choices=["ase", "openmm"], default="ase",
                    help="ase: cgkd's ASE calculator; openmm: the exported model in an OpenMM System (TorchForce)")
    md.add_argument("model", metavar="MODEL", help="model.pt or an exported artefact")
    md.add_argument("--start", required=True, help="ASE-readable file; its first structure starts the run")
    md.add_argument("--steps", type=int, default=1000)
    md.add_argument("--timestep-fs", type=float, default=2.0)
    md.add_argument("--temperature", type=float, default=300.0, help="K")
    md.add_argument("--every", type=int, default=10, help="steps between written frames")
    md.add_argument("--seed", type=int, default=0)
    md.add_argument("--out", required=True, help="trajectory (.xyz)")
    return p


def _label(args) -> int:
    from cgkd.aa.labelers import fcc_cells, get_labeler, sample_md
    from cgkd.io.atoms import concatenate, read_atoms, write_atoms
    from cgkd.progress import note

    out = Path(args.out)
    if out.exists():
        note(f"{out} exists; nothing to do (delete it to label again)")
        return 0
    if args.system is not None and args.labeler != "openmm":
        raise ValueError(f"--system is for --labeler openmm, got --labeler {args.labeler}")
    labeler = get_labeler(args.labeler, {"system": args.system} if args.labeler == "openmm" else None)
    if args.relabel:
        from cgkd.cli.executor import executor_from_args

        data = labeler.label(read_atoms(args.relabel), cache=args.cache, executor=executor_from_args(args),
                             chunk=args.chunk)
    else:
        if args.fcc:
            starts = fcc_cells(args.fcc, args.repeats)
        elif args.molecule:
            from ase.build import molecule

            try:
                starts = [molecule(args.molecule)]
            except KeyError:
                raise ValueError(f"--molecule {args.molecule!r} is not a name ase.build.molecule knows") from None
        else:
            given = read_atoms(args.start)
            starts = [given.to_ase(s) for s in range(given.n_structures)]
        data = concatenate([sample_md(labeler, start, temperatures=args.temperatures, strains=args.strains,
                                      frames_per_run=args.frames, interval=args.interval,
                                      timestep_fs=args.timestep_fs, seed=args.seed + 1000 * k)
                            for k, start in enumerate(starts)])
    write_atoms(out, data)
    print(json.dumps({"out": str(out), "structures": data.n_structures, "atoms": sorted(set(data.n_atoms.tolist())),
                      "elements": data.elements, "labeler": labeler.name}))
    return 0


def _train(args) -> int:
    from cgkd.kd.atomistic import train_atomistic
    from cgkd.train.trainer import TrainConfig

    preset = json.loads(args.preset) if args.preset.lstrip().startswith("{") else args.preset
    cfg = TrainConfig(max_epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, progress=True)
    s = train_atomistic(args.data, args.out, arch=args.arch, preset=preset, cutoff=args.cutoff, config=cfg,
                        energy_weight=args.energy_weight, teacher=args.teacher,
                        atom_energy_weight=args.atom_energy_weight, born_again_epoch=args.born_again_epoch,
                        split_seed=args.split_seed)
    print(json.dumps({"model": s["model"], "n_parameters": s["n_parameters"], "test": s["test"]}))
    return 0


def _asteroid(args) -> int:
    from cgkd.kd.asteroid import run_asteroid
    from cgkd.train.trainer import TrainConfig

    preset = json.loads(args.preset) if args.preset.lstrip().startswith("{") else args.preset
    s = run_asteroid(args.cheap, args.accurate, args.out, preset=preset, gamma=args.gamma,
                     config=TrainConfig(max_epochs=args.epochs, seed=args.seed, progress=True))
    print(json.dumps({k: s[k] for k in ("model", "gamma", "finetuned")}))
    return 0


def _export(args) -> int:
    from cgkd.export.artefact import export_atomistic

    meta = export_atomistic(args.model, args.out, periodic=args.periodic)
    print(json.dumps({k: meta[k] for k in ("type_names", "type_masses", "cutoff", "periodic", "dtype")}))
    return 0


def _md(args) -> int:
    if args.engine == "openmm":
        from cgkd.openmm.atomistic import run_openmm_md as run_md
    else:
        from cgkd.export.ase_calculator import run_ase_md as run_md

    s = run_md(args.model, args.start, args.out, steps=args.steps, timestep_fs=args.timestep_fs,
               temperature=args.temperature, every=args.every, seed=args.seed)
    print(json.dumps(s))
    return 0


def run(args) -> int:
    return {"label": _label, "train": _train, "asteroid": _asteroid, "export": _export, "md": _md}[args.atoms_verb](args)
