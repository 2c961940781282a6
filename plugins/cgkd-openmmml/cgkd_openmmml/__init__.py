"""OpenMM-ML plugin for cgkd: run an exported cgkd CG potential through ``openmmml.MLPotential``.

    from openmmml import MLPotential
    potential = MLPotential("cgkd", model="student.pt")
    system = potential.createSystem(cg_topology)          # bead masses come from the artefact

Registered through the entry point group ``openmmml.potentials`` under the name ``cgkd``.
Bead types are found as in :func:`cgkd.openmm.resolve_types` (atom names, or ``type_map``/``types``).
"""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np
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
        if args:
            raise ValueError(f"createSystem() got unknown argument(s) for the cgkd potential: {sorted(args)}")
        from cgkd.openmm.system import add_bonded_priors, add_potential_force, resolve_types

        all_types = resolve_types(topology, self.metadata["type_names"], types=types, type_map=type_map)
        atom_list = None if atoms is None else list(atoms)
        sel = all_types if atom_list is None else all_types[np.asarray(atom_list, dtype=np.int64)]
        # OpenMM-ML gives element-less particles (CG beads) mass 0, which would freeze them.
        masses = np.asarray(self.metadata["type_masses"], dtype=float)
        for i, t in zip(range(len(all_types)) if atom_list is None else atom_list, sel):
            if system.getParticleMass(i).value_in_unit(openmm.unit.dalton) == 0.0:
                system.setParticleMass(i, float(masses[t]))
        periodic = topology.getPeriodicBoxVectors() is not None
        add_potential_force(system, (self.module, self.metadata), sel, backend=backend, periodic=periodic,
                            atoms=atom_list, force_group=forceGroup)
        priors = self.metadata.get("bonded_priors") or {}
        if any(priors.get(k) for k in ("bonds", "angles", "dihedrals")):
            if atom_list is not None:
                raise ValueError("bonded priors of a cgkd potential need the whole topology (atoms=None)")
            n = system.getNumForces()
            add_bonded_priors(system, topology, all_types, self.metadata, periodic)
            for f in range(n, system.getNumForces()):
                system.getForce(f).setForceGroup(forceGroup)
