"""``cgkd export MODEL --cg CG.h5 --out student.pt``: a model file -> self-describing TorchScript artefact."""

from __future__ import annotations

import json


def add_parser(subparsers):
    p = subparsers.add_parser("export", help="export a model file as a TorchScript artefact for OpenMM")
    p.add_argument("model", metavar="MODEL",
                   help="model file written by cgkd.nn.save_potential (a teacher's or student's model.pt)")
    p.add_argument("--cg", required=True, help="CG dataset (cgkd-cg .h5): bead masses per type and periodicity")
    p.add_argument("--out", required=True, help="output artefact (.pt)")
    p.add_argument("--dtype", choices=["float32", "float64"], default=None, help="default: the model's dtype")
    return p


def run(args) -> int:
    from cgkd.export.artefact import export_model

    meta = export_model(args.model, args.cg, args.out, dtype=args.dtype)
    print(json.dumps({k: meta[k] for k in ("type_names", "type_masses", "cutoff", "periodic", "dtype")}))
    return 0
