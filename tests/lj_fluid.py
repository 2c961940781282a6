"""Lennard-Jones argon simulated with OpenMM: a CG system whose true forces are known (shared by tests)."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import openmm as mm
import openmm.unit as u

SIGMA, EPSILON, MASS = 0.34, 0.996, 39.948  # nm, kJ/mol, amu


def simulate_lj(n_side: int, n_frames: int, stride: int, temperature: float = 120.0, seed: int = 1,
                cutoff: Optional[float] = None, equilibration: int = 300) -> Tuple[np.ndarray, np.ndarray, float]:
    """Positions (F, N, 3) nm (wrapped), exact forces (F, N, 3) kJ/mol/nm and the cubic box edge (nm).

    N = n_side**3 atoms at reduced density 0.8 on the Reference platform; ``cutoff`` defaults to 0.49 box.
    """
    n = n_side**3
    box = (n / 0.8) ** (1 / 3) * SIGMA
    system = mm.System()
    system.setDefaultPeriodicBoxVectors(mm.Vec3(box, 0, 0), mm.Vec3(0, box, 0), mm.Vec3(0, 0, box))
    nb = mm.NonbondedForce()
    nb.setNonbondedMethod(mm.NonbondedForce.CutoffPeriodic)
    nb.setCutoffDistance(0.49 * box if cutoff is None else cutoff)
    for _ in range(n):
        system.addParticle(MASS)
        nb.addParticle(0.0, SIGMA, EPSILON)
    system.addForce(nb)
    g = (np.arange(n_side) + 0.5) * box / n_side
    integ = mm.LangevinMiddleIntegrator(temperature, 5.0, 0.005)
    integ.setRandomNumberSeed(seed)
    ctx = mm.Context(system, integ, mm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3))
    ctx.setVelocitiesToTemperature(temperature, seed)
    integ.step(equilibration)
    pos, frc = [], []
    for _ in range(n_frames):
        integ.step(stride)
        st = ctx.getState(getPositions=True, getForces=True)
        pos.append(st.getPositions(asNumpy=True).value_in_unit(u.nanometer) % box)
        frc.append(st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer))
    return np.array(pos), np.array(frc), box


def lj_cg_data(positions: np.ndarray, forces: np.ndarray, box: float, temperature: float = 120.0):
    """A one-type ("AR") CGData of LJ frames: positions and force labels (F, N, 3), cubic box edge (nm)."""
    from cgkd.data.cg_h5 import CGData
    from cgkd.topology import Topology

    f, n = positions.shape[:2]
    return CGData(
        positions=positions,
        forces=forces,
        box=np.tile(np.eye(3) * box, (f, 1, 1)),
        topology=Topology(["AR"], np.zeros(n, dtype=np.int64), np.full(n, MASS), molecule_names=["AR"] * n),
        temperature=temperature,
    )
