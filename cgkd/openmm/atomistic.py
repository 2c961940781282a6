"""OpenMM MD of an atomistic structure with an element-typed cgkd model (``cgkd atoms md --engine openmm``).

The structure's atoms become an ``openmm.app.Topology`` (one residue, elements from the atomic numbers, atom names
= element symbols), typed by element by :func:`cgkd.openmm.create_system`; masses are the elements'. A model file is
exported to an artefact first (``cgkd.export.export_atomistic``).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u

from cgkd import seeds, units


def structure_topology(data, index: int = 0) -> app.Topology:
    """An OpenMM topology of structure ``index`` of an ``AtomsData`` (box vectors set when it is periodic)."""
    a, b = data.offsets[index], data.offsets[index + 1]
    top = app.Topology()
    res = top.addResidue("MOL", top.addChain())
    for z in data.numbers[a:b]:
        element = app.Element.getByAtomicNumber(int(z))
        top.addAtom(element.symbol, element, res)
    if data.periodic[index]:
        top.setPeriodicBoxVectors([openmm.Vec3(*row) for row in data.cells[index]] * u.nanometer)
    return top


def run_openmm_md(model, start, out, *, steps: int = 1000, timestep_fs: float = 1.0, temperature: float = 300.0,
                  every: int = 10, friction: float = 1.0, seed: int = 0, platform=None) -> dict:
    """Langevin MD in OpenMM from the first structure of ``start``; writes an extended XYZ trajectory.

    Parameters
    ----------
    model : path
        A model file (``cgkd atoms train``) or an exported artefact (``cgkd atoms export``).
    start : path
        An ASE-readable structure file.
    out : path
        Trajectory (extended XYZ) with a frame, its energy and forces every ``every`` steps.
    steps, timestep_fs, temperature, every, friction, seed : the run (fs, K, 1/ps); ``platform`` an OpenMM
        platform name (default: OpenMM's choice).

    Returns
    -------
    dict with the frames written, the mean kinetic temperature (K) and the wall time per atom-step (us).
    """
    from cgkd.export.artefact import export_atomistic, load_potential_artefact
    from cgkd.io.atoms import AtomsData, read_atoms, write_atoms
    from cgkd.openmm.system import create_system

    if steps < 1 or every < 1:
        raise ValueError(f"steps and every must be >= 1, got {steps} and {every}")
    data = read_atoms(start).select([0])
    with tempfile.TemporaryDirectory() as tmp:
        try:
            artefact = load_potential_artefact(model)
        except ValueError:  # a model file: export it for this structure's periodicity
            export_atomistic(model, Path(tmp) / "model.pt", periodic=bool(data.periodic[0]))
            artefact = load_potential_artefact(Path(tmp) / "model.pt")
    top = structure_topology(data)
    box = data.cells[0] if data.periodic[0] else None
    system = create_system(artefact, top, box=box)
    integrator = openmm.LangevinMiddleIntegrator(temperature * u.kelvin, friction / u.picosecond,
                                                 timestep_fs * u.femtosecond)
    integrator.setRandomNumberSeed(seeds.openmm_seed(seed))
    args = () if platform is None else (openmm.Platform.getPlatformByName(platform),)
    ctx = openmm.Context(system, integrator, *args)
    if box is not None:
        ctx.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    ctx.setPositions(data.positions * u.nanometer)
    ctx.setVelocitiesToTemperature(temperature * u.kelvin, seeds.openmm_seed(seed, 1))
    n = data.positions.shape[0]
    dof = 3 * n
    positions, forces, energies, temps = [], [], [], []
    t0 = time.perf_counter()
    for _ in range(steps // every):
        integrator.step(every)
        state = ctx.getState(getPositions=True, getForces=True, getEnergy=True)
        positions.append(state.getPositions(asNumpy=True).value_in_unit(u.nanometer))
        forces.append(state.getForces(asNumpy=True).value_in_unit(units.FORCE))
        energies.append(state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole))
        temps.append(2 * state.getKineticEnergy().value_in_unit(u.kilojoule_per_mole) / (dof * units.KB))
    wall = time.perf_counter() - t0
    k = len(positions)
    traj = AtomsData(numbers=np.tile(data.numbers, k), positions=np.concatenate(positions),
                     offsets=np.arange(k + 1) * n, cells=np.repeat(data.cells, k, axis=0), energy=np.array(energies),
                     forces=np.concatenate(forces),
                     info=[{"engine": "openmm", "md_step": (f + 1) * every, "temperature_K": temperature}
                           for f in range(k)])
    write_atoms(out, traj)
    return {"out": str(out), "frames": k, "mean_temperature_K": float(np.mean(temps)) if temps else None,
            "us_per_atom_step": 1e6 * wall / max(1, (steps // every) * every * n),
            "platform": ctx.getPlatform().getName()}


__all__ = ["run_openmm_md", "structure_topology"]
