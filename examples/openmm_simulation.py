"""Run an exported cgkd potential in a plain openmm.app.Simulation.

    python examples/openmm_simulation.py MODEL.pt CG.h5 --steps 1000 --out traj.dcd

MODEL.pt comes from ``cgkd export``; CG.h5 (a mapped dataset) gives the CG topology, bead types,
masses, box and the start frame. Everything after ``create_system`` is ordinary OpenMM.
"""

import argparse
import sys

import torch  # noqa: F401  (import torch before openmm-torch)
import openmm
import openmm.app as app
import openmm.unit as u

from cgkd.data import read_cg
from cgkd.export import load_potential_artefact
from cgkd.openmm import create_system


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("cg")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--timestep", type=float, default=0.004, help="ps")
    p.add_argument("--friction", type=float, default=1.0, help="1/ps")
    p.add_argument("--backend", choices=["torch", "python"], default=None)
    p.add_argument("--platform", default="CPU")
    p.add_argument("--out", default="cg_traj.dcd")
    args = p.parse_args(argv)

    data = read_cg(args.cg, frames=slice(0, 1))
    module, meta = load_potential_artefact(args.model)
    # the CG topology (types, masses, bonds) of the dataset; types are matched to the artefact's by name
    system = create_system((module, meta), data.topology, box=None if data.box is None else data.box[0],
                           backend=args.backend)
    topology = data.openmm_topology()

    integrator = openmm.LangevinMiddleIntegrator(data.temperature * u.kelvin, args.friction / u.picosecond,
                                                 args.timestep * u.picosecond)
    simulation = app.Simulation(topology, system, integrator, openmm.Platform.getPlatformByName(args.platform))
    simulation.context.setPositions(data.positions[0].astype(float) * u.nanometer)
    simulation.context.setVelocitiesToTemperature(data.temperature * u.kelvin, 1)
    interval = max(1, args.steps // 10)
    simulation.reporters.append(app.DCDReporter(args.out, interval))
    simulation.reporters.append(app.StateDataReporter(sys.stdout, interval, step=True, potentialEnergy=True,
                                                      temperature=True, speed=True))
    simulation.step(args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
