"""Build an ``openmm.System`` for a CG topology from an exported potential (see docs/export.md).

Assembly only: bead types and masses (:func:`artefact_topology`), the periodic box, then the
network force of :mod:`cgkd.openmm.backends` (``openmmtorch.TorchForce`` or ``openmm.PythonForce``)
and the native bonded forces of :mod:`cgkd.openmm.bonded`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import torch

from cgkd import units
from cgkd.export.artefact import load_potential_artefact
from cgkd.openmm.backends import choose_backend, make_potential_force, torch_force_available
from cgkd.openmm.bonded import add_bonded_priors
from cgkd.topology import Topology

__all__ = ["artefact_topology", "create_system", "resolve_types", "torch_force_available"]


def as_artefact(artefact) -> Tuple[torch.jit.ScriptModule, dict]:
    """The (module, metadata) pair of an artefact given as a path or as that pair already."""
    if isinstance(artefact, (str, Path)):
        return load_potential_artefact(artefact)
    if isinstance(artefact, tuple) and len(artefact) == 2 and isinstance(artefact[1], dict):
        return artefact
    raise ValueError(
        f"artefact must be a path to an exported potential or the (module, metadata) pair returned by "
        f"load_potential_artefact, got {type(artefact).__name__}"
    )


def _from_openmm(topology: app.Topology, type_names: Sequence[str], types, type_map) -> Topology:
    """``Topology.from_openmm`` with unit placeholder masses (CG beads have no element to take them from)."""
    return Topology.from_openmm(topology, type_names, types=types, type_map=type_map,
                                masses=np.ones(topology.getNumAtoms()))


def resolve_types(topology: app.Topology, type_names: Sequence[str], types=None, type_map=None) -> np.ndarray:
    """Type index of each particle of ``topology`` (as :meth:`cgkd.topology.Topology.from_openmm` finds it).

    Parameters
    ----------
    topology : openmm.app.Topology
    type_names : sequence of str
        The artefact's bead types.
    types : array-like, shape=(N,), int, optional
        Explicit type indices; wins over everything else.
    type_map : dict, optional
        ``{"RES:BEAD" or "BEAD": type name}``; a key with residue name is tried first.
        Without ``types`` and ``type_map`` each atom's name must be a type name, or else its element symbol.

    Returns
    -------
    np.ndarray, shape=(N,), int64
    """
    return np.array(_from_openmm(topology, type_names, types, type_map).types)


def artefact_topology(topology, metadata: dict, *, types=None, type_map: Optional[dict] = None,
                      masses=None) -> Topology:
    """The :class:`cgkd.topology.Topology` an artefact runs on: types in its ``type_names``, checked masses.

    Parameters
    ----------
    topology : openmm.app.Topology or cgkd.topology.Topology
        One particle per bead. An OpenMM topology's types are found by :func:`resolve_types`; a
        cgkd topology's are renumbered into the artefact's type names (all must be known).
    metadata : dict
        The artefact's metadata (``type_names``, ``type_masses``).
    types : array-like, shape=(N,), int, optional
        Only with an OpenMM topology: see :func:`resolve_types`.
    type_map : dict, optional
        Only with an OpenMM topology: see :func:`resolve_types`.
    masses : array-like, shape=(N,), amu, or Quantity, optional
        Default: a cgkd topology's masses, else the artefact's ``type_masses`` per type. Must be positive.

    Returns
    -------
    cgkd.topology.Topology
        With ``type_names == metadata["type_names"]``.
    """
    names = list(metadata["type_names"])
    if isinstance(topology, Topology):
        if types is not None or type_map is not None:
            raise ValueError("types= and type_map= apply to an openmm.app.Topology; a cgkd Topology carries its types")
        top = topology.with_type_names(names, where="the artefact")
        default = top.masses
    elif isinstance(topology, app.Topology):
        if topology.getNumAtoms() == 0:
            raise ValueError("topology has no particles")
        top = _from_openmm(topology, names, types, type_map)
        default = np.asarray(metadata["type_masses"], dtype=np.float64)[top.types]
    else:
        raise ValueError(
            f"topology must be an openmm.app.Topology or a cgkd.topology.Topology, got {type(topology).__name__}"
        )
    n = top.n_particles
    if n == 0:
        raise ValueError("topology has no particles")
    if masses is None:
        mass_arr = np.asarray(default, dtype=np.float64)
    else:
        mass_arr = np.asarray(units.strip(masses, units.MASS, "masses"), dtype=np.float64)
        if mass_arr.shape != (n,):
            raise ValueError(f"masses must have shape ({n},), got {mass_arr.shape}")
    if np.any(~np.isfinite(mass_arr)) or np.any(mass_arr <= 0):
        raise ValueError(f"masses must be positive amu (mass 0 freezes a particle), got min {mass_arr.min()}")
    return dataclasses.replace(top, masses=mass_arr)


#: A bare-number box with more volume per bead than this (nm^3) is taken to be in Angstrom (1000x the volume);
#: CG liquids have 0.01-1 nm^3 per bead. A box given as an ``openmm.unit`` Quantity is never second-guessed.
MAX_NM3_PER_BEAD = 50.0


def resolve_box(box, topology, n_particles: Optional[int] = None) -> Optional[np.ndarray]:
    """Box vectors (3, 3) nm from ``box=`` or, failing that, an OpenMM topology; None if neither has one.

    A box of bare numbers (no unit) whose volume per particle exceeds ``MAX_NM3_PER_BEAD`` is refused as
    probably Angstrom; pass it as a Quantity (``box * openmm.unit.nanometer``) to state the unit.
    """
    explicit = box is None or isinstance(box, u.Quantity) or (
        isinstance(box, (list, tuple)) and len(box) and all(isinstance(v, u.Quantity) for v in box))
    if box is None and isinstance(topology, app.Topology) and topology.getPeriodicBoxVectors() is not None:
        box = topology.getPeriodicBoxVectors()
    if box is None:
        return None
    box = np.asarray(units.strip(box, units.DISTANCE, "box"), dtype=np.float64)
    if box.shape != (3, 3):
        raise ValueError(f"box must have shape (3, 3) (rows are box vectors, nm), got {box.shape}")
    if not np.all(np.isfinite(box)) or abs(np.linalg.det(box)) <= 0:
        raise ValueError(f"box must have positive volume, got {box.tolist()}")
    if not explicit and n_particles:
        per = abs(np.linalg.det(box)) / n_particles
        if per > MAX_NM3_PER_BEAD:
            raise ValueError(
                f"box looks like Angstrom, not nm: {per:.3g} nm^3 per bead (CG liquids have 0.01-1); multiply by "
                f"cgkd.units.ANGSTROM_TO_NM, or pass box as an openmm.unit Quantity to state its unit")
    return box


def create_system(
    artefact,
    topology,
    *,
    types=None,
    type_map: Optional[dict] = None,
    backend: Optional[str] = None,
    box=None,
    use_cuda_graphs: bool = False,
    masses=None,
) -> openmm.System:
    """An ``openmm.System`` running an exported CG potential on ``topology``.

    Parameters
    ----------
    artefact : str, Path or (module, metadata)
        Exported potential (:func:`cgkd.export.export_potential`) or what
        :func:`cgkd.export.load_potential_artefact` returned.
    topology : openmm.app.Topology or cgkd.topology.Topology
        One particle per bead; bonds define bonded priors (angles and dihedrals follow from the
        bonds, in :class:`cgkd.topology.Topology`). A cgkd Topology brings its types and masses.
    types : array-like, shape=(N,), int, optional
        Bead type indices into the artefact's ``type_names`` (OpenMM topology only); see
        :func:`resolve_types` for the ``type_map`` / atom-name fallbacks.
    type_map : dict, optional
    backend : {"torch", "python", None}
        ``"torch"``: ``openmmtorch.TorchForce``; ``"python"``: ``openmm.PythonForce``; None: torch
        where openmmtorch loads, else python.
    box : array-like, shape=(3, 3), nm, or Quantity, optional
        Periodic box vectors (rows); default: an OpenMM topology's. None on both (or None with a
        cgkd Topology) means non-periodic.
    use_cuda_graphs : bool
        Set the TorchForce property ``useCUDAGraphs`` (CUDA platform only).
    masses : array-like, shape=(N,), amu, optional
        Bead masses; default: a cgkd Topology's masses, else the artefact's ``type_masses`` per
        type. Must be positive.

    Returns
    -------
    openmm.System
        Force group 0 holds the network; 1 bonds, 2 angles, 3 dihedrals (those the artefact has).
    """
    module, metadata = as_artefact(artefact)
    backend = choose_backend(backend, use_cuda_graphs)
    top = artefact_topology(topology, metadata, types=types, type_map=type_map, masses=masses)
    box = resolve_box(box, topology, top.n_particles)
    periodic = box is not None
    if metadata["periodic"] and not periodic:
        raise ValueError("the artefact is a periodic potential but neither box= nor the topology gives a box")

    system = openmm.System()
    for m in top.masses:
        system.addParticle(float(m))
    if periodic:
        system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    system.addForce(make_potential_force(module, metadata, top.types, backend=backend, periodic=periodic,
                                         use_cuda_graphs=use_cuda_graphs, force_group=0))
    add_bonded_priors(system, top, metadata, periodic)
    return system
