"""Bonded priors of an exported potential as native OpenMM forces.

The bead tuples come from :class:`cgkd.topology.Topology` (its bonds, and the angles and dihedrals
derived from them there); the parameters per bead-type tuple from the artefact's
``bonded_priors`` (a tuple and its reverse share parameters). Functional forms are those of
:mod:`cgkd.nn.priors`, which OpenMM's forces share:

- bonds: ``HarmonicBondForce``, ``E = 0.5 k (r - r0)^2`` (k kJ/mol/nm^2, r0 nm);
- angles: ``HarmonicAngleForce``, ``E = 0.5 k (theta - theta0)^2`` (k kJ/mol/rad^2, theta0 rad);
- dihedrals: ``PeriodicTorsionForce``, ``E = sum_n k_n (1 + cos(n phi - phase_n))`` (k kJ/mol,
  phase rad, IUPAC sign of phi), one torsion per Fourier term. The IUPAC dihedral of a quadruple
  and of its reverse are equal, so the orientation :class:`~cgkd.topology.Topology` stores does
  not matter;
- impropers: the same form on the topology's chosen quadruples, a force of its own (group 4).
"""

from __future__ import annotations

from typing import Callable, Dict, List, NamedTuple, Optional

import openmm

from cgkd.topology import KINDS, Topology, canonical


class BondedForce(NamedTuple):
    """How one bonded prior kind becomes an OpenMM force."""

    kind: str  #: key in ``Topology.terms`` and in the artefact's ``bonded_priors``
    force_class: type  #: the OpenMM force
    add: str  #: its method taking ``(*particles, *parameters)``
    name: str  #: ``Force.setName``
    group: int  #: default force group
    parameters: Callable[[dict], List[tuple]]  #: artefact entry -> parameter tuples, one per call of ``add``


#: One row per kind, in the order of ``cgkd.topology.KINDS``.
BONDED_FORCES = (
    BondedForce("bonds", openmm.HarmonicBondForce, "addBond", "cgkd bond prior", 1,
                lambda e: [(e["r0"], e["k"])]),
    BondedForce("angles", openmm.HarmonicAngleForce, "addAngle", "cgkd angle prior", 2,
                lambda e: [(e["theta0"], e["k"])]),
    BondedForce("dihedrals", openmm.PeriodicTorsionForce, "addTorsion", "cgkd dihedral prior", 3,
                lambda e: [(int(t["n"]), t["phase"], t["k"]) for t in e["terms"]]),
    BondedForce("impropers", openmm.PeriodicTorsionForce, "addTorsion", "cgkd improper prior", 4,
                lambda e: [(int(t["n"]), t["phase"], t["k"]) for t in e["terms"]]),
)


def add_bonded_priors(system: openmm.System, topology: Topology, metadata: dict, periodic: bool, *,
                      force_group: Optional[int] = None) -> Dict[str, int]:
    """Add the artefact's bonded priors to ``system`` as native OpenMM forces.

    One force per kind that the artefact has priors for (even if no term of the topology matches);
    a term whose bead-type tuple has no parameters gets no energy.

    Parameters
    ----------
    system : openmm.System
        Holds the topology's particles, in its order.
    topology : cgkd.topology.Topology
        Bonds, angles and dihedrals; its ``type_names`` are matched by name against the prior entries.
    metadata : dict
        The artefact's metadata; ``bonded_priors`` in the list form of
        :func:`cgkd.export.artefact.normalize_bonded_priors`.
    periodic : bool
        Bonded vectors use the minimum image of the periodic box.
    force_group : int, optional
        Force group of every bonded force; default 1 bonds, 2 angles, 3 dihedrals, 4 impropers.

    Returns
    -------
    dict
        ``{"bonds": n, "angles": n, "dihedrals": n, "impropers": n}``: the number of terms of each kind added
        (a dihedral with several Fourier terms counts once).
    """
    if not isinstance(topology, Topology):
        raise ValueError(f"topology must be a cgkd.topology.Topology, got {type(topology).__name__}")
    if topology.n_particles != system.getNumParticles():
        raise ValueError(
            f"topology has {topology.n_particles} particles but the system has {system.getNumParticles()}"
        )
    if force_group is not None and not 0 <= int(force_group) <= 31:
        raise ValueError(f"force_group must be 0..31 or None, got {force_group}")
    priors = metadata.get("bonded_priors") or {}
    counts = {kind: 0 for kind in KINDS}
    for spec in BONDED_FORCES:
        entries = priors.get(spec.kind) or []
        if not entries:
            continue
        table = {canonical(e["types"]): e for e in entries}
        force = spec.force_class()
        add = getattr(force, spec.add)
        for term in topology.terms(spec.kind):
            entry = table.get(topology.type_tuple(term))
            if entry is None:
                continue
            particles = [int(i) for i in term]
            for params in spec.parameters(entry):
                add(*particles, *params)
            counts[spec.kind] += 1
        force.setUsesPeriodicBoundaryConditions(periodic)
        force.setName(spec.name)
        force.setForceGroup(spec.group if force_group is None else int(force_group))
        system.addForce(force)
    return counts


__all__ = ["BONDED_FORCES", "BondedForce", "add_bonded_priors"]
