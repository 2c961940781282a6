"""OpenMM-ML plugin for cgkd: run an exported cgkd CG potential through ``openmmml.MLPotential``.

    from openmmml import MLPotential
    potential = MLPotential("cgkd", model="student.pt")
    system = potential.createSystem(cg_topology)          # bead masses come from the artefact

Registered through the entry point group ``openmmml.potentials`` under the name ``cgkd``.
Bead types are found as in :func:`cgkd.openmm.system.resolve_types` (atom names, or ``type_map``/``types``).
The forces are the ones :func:`cgkd.openmm.create_system` builds, from the same functions:
:func:`cgkd.openmm.backends.make_potential_force` and :func:`cgkd.openmm.bonded.add_bonded_priors`.
"""

from __future__ import annotations

from typing import Iterable, Optional

import openmm
import openmm.app as app
from openmmml.mlpotential import MLPotentialImpl, MLPotentialImplFactory

__all__ = ["CGKDPotentialImplFactory", "CGKDPotentialImpl"]


class CGKDPotentialImplFactory(MLPotentialImplFactory):
    """Creates :class:`CGKDPotentialImpl` for ``MLPotential("cgkd", model=PATH)``."""

    def createImpl(self, name: str, model: Optional[str] = None, **args) -> "CGKDPotentialImpl":
        if args:
            raise ValueError(f"MLPotential('cgkd') takes only model=PATH; unknown argument(s) {sorted(args)}")
        if model is None:
            raise ValueError("MLPotential('cgkd') needs model=PATH of a cgkd-exported potential (cgkd export)")
        return CGKDPotentialImpl(model)


class CGKDPotentialImpl(MLPotentialImpl):
    """Adds a cgkd potential (network + bonded priors) to a System built by OpenMM-ML."""

    def __init__(self, model: str):
        import torch  # noqa: F401  (torch before openmmtorch)

        from cgkd.export import load_potential_artefact

        self.path = str(model)
        self.module, self.metadata = load_potential_artefact(self.path)

    def addForces(self, topology: app.Topology, system: openmm.System, atoms: Optional[Iterable[int]],
                  forceGroup: int, backend: Optional[str] = None, types=None, type_map: Optional[dict] = None,
                  **args) -> None:
        """Add the network (on ``atoms``, default all) and the bonded priors (whole topology only).

        Particles the potential acts on that OpenMM-ML gave mass 0 (element-less CG beads) get the
        artefact's type mass. The periodic box is the topology's.
        """
        if args:
            raise ValueError(f"createSystem() got unknown argument(s) for the cgkd potential: {sorted(args)}")
        from cgkd.openmm.backends import make_potential_force
        from cgkd.openmm.bonded import add_bonded_priors
        from cgkd.openmm.system import artefact_topology
        from cgkd.topology import KINDS

        cg = artefact_topology(topology, self.metadata, types=types, type_map=type_map)
        n = cg.n_particles
        if system.getNumParticles() != n:
            raise ValueError(f"system has {system.getNumParticles()} particles but the topology has {n}")
        atom_list = None if atoms is None else [int(a) for a in atoms]
        if atom_list is not None and any(not 0 <= a < n for a in atom_list):
            raise ValueError(f"atoms must index the topology's {n} particles, got {min(atom_list)}..{max(atom_list)}")
        priors = self.metadata.get("bonded_priors") or {}
        has_priors = any(priors.get(k) for k in KINDS)
        if has_priors and atom_list is not None:
            raise ValueError("bonded priors of a cgkd potential need the whole topology (atoms=None)")
        periodic = topology.getPeriodicBoxVectors() is not None
        if self.metadata["periodic"] and not periodic:
            raise ValueError("the cgkd potential is periodic but the topology has no periodic box vectors")
        acted = range(n) if atom_list is None else atom_list
        for i in acted:
            if system.getParticleMass(i).value_in_unit(openmm.unit.dalton) == 0.0:
                system.setParticleMass(i, float(cg.masses[i]))
        system.addForce(make_potential_force(self.module, self.metadata, cg.types[list(acted)], backend=backend,
                                             periodic=periodic, atoms=atom_list, force_group=forceGroup))
        if has_priors:
            add_bonded_priors(system, cg, self.metadata, periodic, force_group=forceGroup)
