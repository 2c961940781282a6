"""``cgkd map AA.h5 --out CG.h5``: map an all-atom trajectory with forces to a CG dataset.

A thin shell over :func:`cgkd.data.mapped.map_aa` (AA data in, ``CGData`` out).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("map", help="map an AA trajectory with forces to a CG dataset")
    p.add_argument("aa", help="AA trajectory file (cgkd-aa HDF5)")
    p.add_argument("--out", required=True, help="CG dataset to write (cgkd-cg HDF5)")
    p.add_argument(
        "--mapping", default=None,
        help="mapping name of the embedded spec, 'residue', 'auto<N>' or a mapping .json (default: the spec's default)",
    )
    p.add_argument("--force-map", default="optimal", metavar="NAME",
                   help="a force map of cgkd.mapping.FORCE_MAPS: basic, optimal or one a plugin registers "
                        "(default optimal, as in cgkd run)")
    p.add_argument(
        "--allow-constraint-crossing", action="store_true",
        help="let the basic force map sum forces across constraints between beads (biased)",
    )
    p.add_argument("--chunk-frames", type=int, default=None, metavar="K",
                   help="stream: read, map and write K frames at a time (memory for K frames, not the whole file)")
    p.add_argument("--fit-frames", type=int, default=None, metavar="N",
                   help="with --chunk-frames: frames the force map is fitted on, spread evenly (default 1000)")
    return p


def run(args) -> int:
    from cgkd.data.cg_h5 import write_cg
    from cgkd.data.mapped import map_aa
    from cgkd.io.aa_h5 import read_aa

    if args.chunk_frames is not None:
        from cgkd.data.cg_h5 import read_topology
        from cgkd.data.mapped import FIT_FRAMES, map_aa_file

        report = map_aa_file(args.aa, args.out, mapping=args.mapping, force_map=args.force_map,
                             allow_constraint_crossing=args.allow_constraint_crossing, chunk_frames=args.chunk_frames,
                             fit_frames=args.fit_frames or FIT_FRAMES, progress=True)
        top = read_topology(args.out)
        print(f"wrote {Path(args.out).resolve()}: {report['n_frames']} frames, {top.n_particles} beads, types "
              f"{top.type_names} (streamed; force map fitted on {report['fit_frames']} frames)")
    else:
        if args.fit_frames is not None:
            raise ValueError("--fit-frames needs --chunk-frames (the in-memory mapping fits on all frames)")
        aa = read_aa(args.aa)
        data, report = map_aa(
            aa, mapping=args.mapping, force_map=args.force_map,
            allow_constraint_crossing=args.allow_constraint_crossing, source=str(Path(args.aa).resolve()),
        )
        write_cg(args.out, data)
        print(f"wrote {Path(args.out).resolve()}: {data.n_frames} frames, {data.n_beads} beads, types {data.type_names}")
    print(f"mapping {report['mapping']!r}, force map {report['force_map']!r}")
    msf = report["msf"]
    base = msf.get("basic")
    for name in sorted(msf, key=lambda n: (n != "basic", n)):
        value = msf[name]
        if isinstance(value, float):
            ratio = f", ratio to basic {value / base:.4f}" if isinstance(base, float) and base > 0 else ""
            print(f"  mapped-force mean square ({name}): {value:.6g} (kJ/mol/nm)^2{ratio}")
        else:
            print(f"  {name}: {value}")
    return 0
