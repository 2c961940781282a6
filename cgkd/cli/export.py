"""``cgkd export MODEL --cg CG.h5 --out model.pt``: a trained CGPotential -> self-describing TorchScript artefact."""

from __future__ import annotations

import json


def add_parser(subparsers):
    p = subparsers.add_parser("export", help="export a trained potential as a TorchScript artefact for OpenMM")
    p.add_argument("checkpoint", help="model file written by cgkd.nn.save_potential (teacher or student)")
    p.add_argument("--cg", required=True, help="CG dataset (cgkd-cg .h5): bead masses per type and periodicity")
    p.add_argument("--out", required=True, help="output artefact (.pt)")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None, help="default: the model's dtype")
    return p


def run(args) -> int:
    from cgkd.data.cg_h5 import read_cg
    from cgkd.export.artefact import export_cg_potential, type_masses_from_data
    import cgkd.nn.priors  # noqa: F401  (registers the prior kinds load_potential looks up)
    from cgkd.nn.potential import load_potential

    potential = load_potential(args.checkpoint)
    data = read_cg(args.cg, frames=slice(0, 1))
    names = list(potential.type_names)
    missing = sorted(set(data.type_names) - set(names))
    if missing:
        raise ValueError(f"the CG dataset has bead types {missing} that the model does not know ({names})")
    remap = [names.index(data.type_names[t]) for t in data.types]
    masses = type_masses_from_data(names, remap, data.masses)
    meta = export_cg_potential(potential, args.out, type_masses=masses, periodic=data.periodic, dtype=args.dtype,
                               provenance={"checkpoint": str(args.checkpoint), "cg_data": str(args.cg)})
    print(json.dumps({k: meta[k] for k in ("type_names", "type_masses", "cutoff", "periodic", "dtype")}))
    return 0
