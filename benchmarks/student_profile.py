"""Where a neural student's MD step goes (issue 10, Deliver 2), every piece timed in one OpenMM process.

Each piece of a trained ``CGPotential`` runs as its own ``TorchForce`` on the same beads (one thread, CPU
platform, Langevin 4 fs), back to back in one process, so the shares are differences of step times measured
under the same machine state:

- ``empty``: a TorchForce returning zero energy (the integrator + TorchForce call);
- ``neighbours``: the neighbour list alone;
- ``neighbours + prior``: neighbour list and the pair-repulsion prior;
- ``neighbours + network``: neighbour list and the network;
- ``full``: the exported student as ``cgkd`` runs it (``cgkd.openmm.create_system``).

``--old-artefact`` adds the full step of an artefact exported by an earlier cgkd (TorchScript keeps the code it
was exported with), so a before/after comparison shares one run.

Usage (after ``make demo``)::

    python -m benchmarks.student_profile --run-dir runs/reline-quick --reps 1 4
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from benchmarks.common import machine_info, save_result
from benchmarks.speed import replicate_box


def _pieces(potential):
    """TorchScript modules ``(positions, types, box) -> energy`` for each piece of ``potential``."""
    import torch
    from torch import Tensor

    class Empty(torch.nn.Module):
        def forward(self, positions: Tensor, types: Tensor, box: Tensor) -> Tensor:
            return (positions * 0.0).sum()

    class Neighbours(torch.nn.Module):
        def __init__(self, pot):
            super().__init__()
            self.neighbors = pot.neighbors

        def forward(self, positions: Tensor, types: Tensor, box: Tensor) -> Tensor:
            edge_index, shifts = self.neighbors(positions, box)
            return (positions * 0.0).sum() + (shifts * 0.0).sum() + 0.0 * edge_index.size(1)

    class WithPrior(torch.nn.Module):
        def __init__(self, pot):
            super().__init__()
            self.neighbors = pot.neighbors
            self.priors = pot.nonbonded_priors

        def forward(self, positions: Tensor, types: Tensor, box: Tensor) -> Tensor:
            edge_index, shifts = self.neighbors(positions, box)
            batch = torch.zeros(positions.size(0), dtype=torch.int64, device=positions.device)
            energy = (positions * 0.0).sum()
            for prior in self.priors:
                energy = energy + prior(positions, types, edge_index, shifts, batch, 1).sum()
            return energy

    class WithNetwork(torch.nn.Module):
        def __init__(self, pot):
            super().__init__()
            self.neighbors = pot.neighbors
            self.model = pot.model

        def forward(self, positions: Tensor, types: Tensor, box: Tensor) -> Tensor:
            edge_index, shifts = self.neighbors(positions, box)
            batch = torch.zeros(positions.size(0), dtype=torch.int64, device=positions.device)
            return self.model(positions, types, edge_index, shifts, batch, 1)["node_energy"].sum()

    return {"empty": Empty(), "neighbours": Neighbours(potential), "neighbours + prior": WithPrior(potential),
            "neighbours + network": WithNetwork(potential)}


def _system_for(module, metadata, topology, box):
    import io

    import torch

    from cgkd.openmm.system import create_system

    scripted = torch.jit.script(module)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    return create_system((torch.jit.load(buf), metadata), topology, box=box, backend="torch")


def profile(model_file, cg_path, reps_list, steps: Dict[int, int], old_artefact=None, dt: float = 0.004) -> List[dict]:
    """ms per MD step of each piece (and of the full student) at each box size."""
    import torch

    import cgkd.nn.priors  # noqa: F401  (registers the prior kinds)
    from benchmarks.native_speed import ms_per_step
    from cgkd.data.cg_h5 import read_cg
    from cgkd.export.artefact import load_potential_artefact, make_metadata
    from cgkd.nn.potential import load_potential
    from cgkd.topology import Topology

    potential = load_potential(model_file)
    data = read_cg(cg_path, frames=slice(0, 1))
    top0 = data.topology.with_type_names(potential.type_names, str(model_file))
    masses = top0.masses_by_type().tolist()
    metadata = make_metadata(type_names=potential.type_names, type_masses=masses, cutoff=potential.cutoff,
                             periodic=True)
    full = (torch.jit.script(potential), dict(metadata, bonded_priors=metadata["bonded_priors"]))
    old = load_potential_artefact(old_artefact) if old_artefact else None
    rows = []
    old_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for reps in reps_list:
            pos, types, box = replicate_box(data.positions[0], top0.types, data.box[0], reps)
            top = Topology(top0.type_names, types, np.tile(top0.masses, reps**3))
            n_steps = steps.get(reps, 100)
            row = {"n_beads": int(len(pos)), "steps": int(n_steps), "ms_per_step": {}}
            for name, module in _pieces(potential).items():
                row["ms_per_step"][name] = ms_per_step(_system_for(module, metadata, top, box), pos, box, n_steps,
                                                       dt=dt, temperature=data.temperature)
            from cgkd.openmm.system import create_system

            row["ms_per_step"]["full"] = ms_per_step(create_system(full, top, box=box, backend="torch"), pos, box,
                                                     n_steps, dt=dt, temperature=data.temperature)
            if old is not None:
                row["ms_per_step"]["full, old artefact"] = ms_per_step(
                    create_system(old, top, box=box, backend="torch"), pos, box, n_steps, dt=dt,
                    temperature=data.temperature)
            ms = row["ms_per_step"]
            total = ms["full"]
            row["shares"] = {
                "integrator + TorchForce call": ms["empty"] / total,
                "neighbour list": (ms["neighbours"] - ms["empty"]) / total,
                "network forward + backward": (ms["neighbours + network"] - ms["neighbours"]) / total,
                "pair prior": (ms["neighbours + prior"] - ms["neighbours"]) / total,
            }
            row["us_per_bead_step"] = 1e3 * total / len(pos)
            print(f"  {len(pos)} beads: " + ", ".join(f"{k} {v:.3f}" for k, v in ms.items()) + " ms/step", flush=True)
            rows.append(row)
    finally:
        torch.set_num_threads(old_threads)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/reline-quick", help="a cgkd run directory (default %(default)s)")
    parser.add_argument("--model", default=None, help="model file (default <run-dir>/student/model.pt)")
    parser.add_argument("--cg", default=None, help="CG dataset (default <run-dir>/map/cg.h5)")
    parser.add_argument("--reps", type=int, nargs="+", default=[1, 4],
                        help="box replications per axis (default %(default)s: 120 and 7,680 beads on reline)")
    parser.add_argument("--steps", type=int, nargs="+", default=[2000, 40], help="MD steps timed per replication")
    parser.add_argument("--old-artefact", default=None, help="an artefact exported by an earlier cgkd, timed too")
    parser.add_argument("--tag", default="", help="suffix of the result file name")
    args = parser.parse_args(argv)
    run = Path(args.run_dir)
    model = Path(args.model) if args.model else run / "student" / "model.pt"
    cg = Path(args.cg) if args.cg else run / "map" / "cg.h5"
    if len(args.steps) != len(args.reps):
        parser.error(f"--steps needs one value per --reps entry ({len(args.reps)}), got {len(args.steps)}")
    t0 = time.perf_counter()
    rows = profile(model, cg, args.reps, dict(zip(args.reps, args.steps)), old_artefact=args.old_artefact)
    result = {"machine": machine_info(), "model": str(model), "cg": str(cg), "rows": rows,
              "wall_s": time.perf_counter() - t0}
    out = save_result("student_profile" + (f"_{args.tag}" if args.tag else ""), result)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
