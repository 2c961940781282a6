"""Build an ``openmm.System`` for a CG topology from an exported potential (see docs/export.md).

The network runs as an ``openmmtorch.TorchForce`` (backend ``"torch"``) or an ``openmm.PythonForce``
(backend ``"python"``); bonded priors of the artefact become native ``HarmonicBondForce``,
``HarmonicAngleForce`` and ``PeriodicTorsionForce`` on the topology's bond graph.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import networkx as nx
import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import torch

from cgkd import units
from cgkd.export.artefact import DTYPES, load_potential_artefact

BACKENDS = ("torch", "python")


_TORCH_PLUGINS_RELOADED = False


def _reload_torch_plugins() -> None:
    """Load openmm-torch's kernel plugins that failed because openmm was imported before torch.

    OpenMM loads its plugins when ``openmm`` is first imported; ``libOpenMMTorchReference.so`` needs
    libraries that only ``import torch`` puts in place, so ``import openmm; import torch`` leaves the
    TorchForce without kernels ("does not support all required kernels"). Loading the failed
    libraries again once torch is imported fixes that; it is done once per process.
    """
    global _TORCH_PLUGINS_RELOADED
    if _TORCH_PLUGINS_RELOADED:
        return
    _TORCH_PLUGINS_RELOADED = True
    for message in openmm.Platform.getPluginLoadFailures():
        match = re.match(r"Error loading library (.+?): ", message)
        if match and os.path.basename(match.group(1)).startswith("libOpenMMTorch"):
            try:
                openmm.Platform.loadPluginLibrary(match.group(1))
            except openmm.OpenMMException:
                pass  # e.g. the OpenCL kernels where no OpenCL runtime exists


def torch_force_available() -> bool:
    """True where ``openmmtorch`` can be imported (the ``"torch"`` backend works)."""
    try:
        import openmmtorch  # noqa: F401  (torch is imported first, at module level)
    except ImportError:
        return False
    _reload_torch_plugins()
    return True


class _OpenMMModule(torch.nn.Module):
    """``forward(positions, box=None) -> energy`` for TorchForce, with the bead types baked in.

    ``atoms`` (optional) selects the particles the potential acts on (an OpenMM-ML subset).
    """

    def __init__(self, model: torch.nn.Module, types: torch.Tensor, dtype: torch.dtype,
                 atoms: Optional[torch.Tensor] = None):
        super().__init__()
        self.model = model
        self.register_buffer("types", types)
        self.register_buffer("dtype_probe", torch.zeros(0, dtype=dtype))
        self.subset = atoms is not None
        self.register_buffer("atoms", atoms if atoms is not None else torch.zeros(0, dtype=torch.int64))

    def forward(self, positions: torch.Tensor, boxvectors: Optional[torch.Tensor] = None) -> torch.Tensor:
        dtype = self.dtype_probe.dtype
        pos = positions.to(dtype)
        if self.subset:
            pos = pos.index_select(0, self.atoms)
        if boxvectors is None:
            box = torch.zeros((3, 3), dtype=dtype, device=positions.device)
        else:
            box = boxvectors.to(dtype)
        return self.model(pos, self.types, box).to(torch.float64)


class TorchCompute:
    """The computation function of a ``PythonForce``: energy and forces of a scripted potential.

    Picklable (it pickles the TorchScript bytes, not the module), so a System holding it survives
    ``XmlSerializer``.

    Parameters
    ----------
    model_bytes : bytes
        ``torch.jit.save`` output of the potential.
    types : np.ndarray, shape=(N,), int64
    dtype : {"float32", "float64"}
    periodic : bool
    """

    def __init__(self, model_bytes: bytes, types: np.ndarray, dtype: str, periodic: bool,
                 atoms: Optional[np.ndarray] = None):
        self.model_bytes = bytes(model_bytes)
        self.types_np = np.asarray(types, dtype=np.int64)
        self.dtype = dtype
        self.periodic = bool(periodic)
        self.atoms = None if atoms is None else np.asarray(atoms, dtype=np.int64)
        self._setup()

    def _setup(self) -> None:
        self.model = torch.jit.load(io.BytesIO(self.model_bytes), map_location="cpu")
        self.model.eval()
        self.types = torch.from_numpy(self.types_np.copy())
        self.torch_dtype = DTYPES[self.dtype]

    def __getstate__(self):
        return {"model_bytes": self.model_bytes, "types_np": self.types_np, "dtype": self.dtype,
                "periodic": self.periodic, "atoms": self.atoms}

    def __setstate__(self, state):
        state.setdefault("atoms", None)
        self.__dict__.update(state)
        self._setup()

    def energy_forces(self, positions: np.ndarray, box: Optional[np.ndarray]) -> Tuple[float, np.ndarray]:
        """Energy (kJ/mol) and forces ((N, 3) float64 kJ/mol/nm) for positions (N, 3) nm and box (3, 3) nm."""
        x = torch.tensor(np.asarray(positions), dtype=self.torch_dtype).requires_grad_(True)
        if box is None:
            b = torch.zeros((3, 3), dtype=self.torch_dtype)
        else:
            b = torch.tensor(np.asarray(box), dtype=self.torch_dtype)
        energy = self.model(x, self.types, b)
        (grad,) = torch.autograd.grad(energy, x)
        return float(energy.detach()), -grad.detach().to(torch.float64).numpy()

    def __call__(self, state):
        pos = state.getPositions(asNumpy=True).value_in_unit(u.nanometer)
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer) if self.periodic else None
        if self.atoms is None:
            return self.energy_forces(pos, box)
        energy, sub = self.energy_forces(np.asarray(pos)[self.atoms], box)
        forces = np.zeros((len(pos), 3))
        forces[self.atoms] = sub
        return energy, forces


def _as_artefact(artefact) -> Tuple[torch.jit.ScriptModule, dict]:
    if isinstance(artefact, (str, Path)):
        return load_potential_artefact(artefact)
    if isinstance(artefact, tuple) and len(artefact) == 2 and isinstance(artefact[1], dict):
        return artefact
    raise ValueError(
        f"artefact must be a path to an exported potential or the (module, metadata) pair returned by "
        f"load_potential_artefact, got {type(artefact).__name__}"
    )


def resolve_types(topology: app.Topology, type_names: Sequence[str], types=None, type_map=None) -> np.ndarray:
    """Type index of each particle of ``topology``.

    Parameters
    ----------
    topology : openmm.app.Topology
    type_names : sequence of str
        The artefact's bead types.
    types : array-like, shape=(N,), int, optional
        Explicit type indices; wins over everything else.
    type_map : dict, optional
        ``{"RES:BEAD" or "BEAD": type name}``; a key with residue name is tried first.
        Without ``types`` and ``type_map`` each atom's name must be a type name.

    Returns
    -------
    np.ndarray, shape=(N,), int64
    """
    n = topology.getNumAtoms()
    if types is not None:
        types = np.asarray(types)
        if types.shape != (n,) or not np.issubdtype(types.dtype, np.integer):
            raise ValueError(f"types must be an integer array of shape ({n},), got {types.dtype} {types.shape}")
        if n and (types.min() < 0 or types.max() >= len(type_names)):
            raise ValueError(f"types must index the artefact's {len(type_names)} type names, got {types.min()}..{types.max()}")
        return types.astype(np.int64)
    index = {t: i for i, t in enumerate(type_names)}
    type_map = dict(type_map or {})
    out = np.empty(n, dtype=np.int64)
    for atom in topology.atoms():
        name = type_map.get(f"{atom.residue.name}:{atom.name}", type_map.get(atom.name, atom.name))
        if name not in index:
            raise ValueError(
                f"bead {atom.index} ({atom.residue.name}:{atom.name}) maps to type {name!r}, which is not one of "
                f"the artefact's types {list(type_names)}; pass types= or type_map="
            )
        out[atom.index] = index[name]
    return out


def _prior_table(entries: List[dict]) -> Dict[tuple, dict]:
    table = {}
    for e in entries:
        key = tuple(e["types"])
        table[key] = e
        table[key[::-1]] = e
    return table


def _bond_graph(topology: app.Topology) -> nx.Graph:
    g = nx.Graph()
    g.add_nodes_from(range(topology.getNumAtoms()))
    g.add_edges_from((b[0].index, b[1].index) for b in topology.bonds())
    return g


def bonded_terms(topology: app.Topology) -> Tuple[list, list, list]:
    """Bonds, angles and proper dihedrals (bead index tuples) from the topology's bond graph."""
    g = _bond_graph(topology)
    bonds = sorted(tuple(sorted(e)) for e in g.edges())
    angles = []
    for j in g.nodes():
        nb = sorted(g.neighbors(j))
        angles += [(i, j, k) for a, i in enumerate(nb) for k in nb[a + 1 :]]
    dihedrals = []
    for j, k in bonds:
        for i in g.neighbors(j):
            if i == k:
                continue
            for m in g.neighbors(k):
                if m not in (j, i):
                    dihedrals.append((i, j, k, m))
    return bonds, angles, dihedrals


def add_bonded_priors(system: openmm.System, topology: app.Topology, types: np.ndarray, metadata: dict,
                      periodic: bool) -> Dict[str, int]:
    """Add the artefact's bonded priors as native OpenMM forces; return how many terms of each kind."""
    names = metadata["type_names"]
    priors = metadata.get("bonded_priors") or {}
    bonds, angles, dihedrals = bonded_terms(topology)
    counts = {"bonds": 0, "angles": 0, "dihedrals": 0}
    tname = [names[t] for t in types]
    if priors.get("bonds"):
        table, force = _prior_table(priors["bonds"]), openmm.HarmonicBondForce()
        for i, j in bonds:
            p = table.get((tname[i], tname[j]))
            if p is not None:
                force.addBond(i, j, p["r0"], p["k"])
                counts["bonds"] += 1
        force.setUsesPeriodicBoundaryConditions(periodic)
        force.setName("cgkd bond prior")
        system.addForce(force)
    if priors.get("angles"):
        table, force = _prior_table(priors["angles"]), openmm.HarmonicAngleForce()
        for i, j, k in angles:
            p = table.get((tname[i], tname[j], tname[k]))
            if p is not None:
                force.addAngle(i, j, k, p["theta0"], p["k"])
                counts["angles"] += 1
        force.setUsesPeriodicBoundaryConditions(periodic)
        force.setName("cgkd angle prior")
        system.addForce(force)
    if priors.get("dihedrals"):
        table, force = _prior_table(priors["dihedrals"]), openmm.PeriodicTorsionForce()
        for i, j, k, m in dihedrals:
            p = table.get((tname[i], tname[j], tname[k], tname[m]))
            if p is not None:
                for term in p["terms"]:
                    force.addTorsion(i, j, k, m, term["n"], term["phase"], term["k"])
                counts["dihedrals"] += 1
        force.setUsesPeriodicBoundaryConditions(periodic)
        force.setName("cgkd dihedral prior")
        system.addForce(force)
    return counts


def create_system(
    artefact,
    topology: app.Topology,
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
    topology : openmm.app.Topology
        One particle per bead; bonds define bonded priors (angles and dihedrals follow from the
        bond graph).
    types : array-like, shape=(N,), int, optional
        Bead type indices into the artefact's ``type_names``; see :func:`resolve_types` for the
        ``type_map`` / atom-name fallbacks.
    type_map : dict, optional
    backend : {"torch", "python", None}
        ``"torch"``: ``openmmtorch.TorchForce``; ``"python"``: ``openmm.PythonForce``; None: torch
        where openmmtorch loads, else python.
    box : array-like, shape=(3, 3), nm, or Quantity, optional
        Periodic box vectors (rows); default: the topology's. None on both means non-periodic.
    use_cuda_graphs : bool
        Set the TorchForce property ``useCUDAGraphs`` (CUDA platform only).
    masses : array-like, shape=(N,), amu, optional
        Bead masses; default: the artefact's ``type_masses`` per type. Must be positive.

    Returns
    -------
    openmm.System
        Force group 0 holds the network, groups 1-3 bonds, angles, dihedrals (only those present).
    """
    module, metadata = _as_artefact(artefact)
    if not isinstance(topology, app.Topology):
        raise ValueError(f"topology must be an openmm.app.Topology, got {type(topology).__name__}")
    if backend is None:
        backend = "torch" if torch_force_available() else "python"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    if backend == "torch" and not torch_force_available():
        raise ValueError("backend 'torch' needs openmmtorch, which cannot be imported here; use backend='python'")
    if use_cuda_graphs and backend != "torch":
        raise ValueError("use_cuda_graphs=True needs backend 'torch'")
    n = topology.getNumAtoms()
    if n == 0:
        raise ValueError("topology has no particles")
    type_idx = resolve_types(topology, metadata["type_names"], types=types, type_map=type_map)

    if masses is None:
        mass_arr = np.asarray(metadata["type_masses"], dtype=np.float64)[type_idx]
    else:
        mass_arr = np.asarray(units.strip(masses, units.MASS, "masses"), dtype=np.float64)
        if mass_arr.shape != (n,):
            raise ValueError(f"masses must have shape ({n},), got {mass_arr.shape}")
    if np.any(~np.isfinite(mass_arr)) or np.any(mass_arr <= 0):
        raise ValueError(f"masses must be positive amu (mass 0 freezes a particle), got min {mass_arr.min()}")

    if box is None and topology.getPeriodicBoxVectors() is not None:
        box = topology.getPeriodicBoxVectors()
    if box is not None:
        box = np.asarray(units.strip(box, units.DISTANCE, "box"), dtype=np.float64)
        if box.shape != (3, 3):
            raise ValueError(f"box must have shape (3, 3) (rows are box vectors, nm), got {box.shape}")
        if abs(np.linalg.det(box)) <= 0:
            raise ValueError(f"box must have positive volume, got {box.tolist()}")
    periodic = box is not None
    if metadata["periodic"] and not periodic:
        raise ValueError("the artefact is a periodic potential but neither box= nor the topology gives a box")

    system = openmm.System()
    for m in mass_arr:
        system.addParticle(float(m))
    if periodic:
        system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])

    add_potential_force(system, (module, metadata), type_idx, backend=backend, periodic=periodic,
                        use_cuda_graphs=use_cuda_graphs, force_group=0)
    n_forces = system.getNumForces()
    add_bonded_priors(system, topology, type_idx, metadata, periodic)
    for g, f in enumerate(range(n_forces, system.getNumForces()), start=1):
        system.getForce(f).setForceGroup(g)
    return system


def add_potential_force(system: openmm.System, artefact, types, *, backend: Optional[str] = None, periodic: bool,
                        use_cuda_graphs: bool = False, atoms: Optional[Sequence[int]] = None,
                        force_group: int = 0) -> openmm.Force:
    """Add the network of an exported potential to an existing ``system`` and return the new force.

    Parameters
    ----------
    system : openmm.System
    artefact : str, Path or (module, metadata)
    types : array-like, shape=(n,), int
        Type index (into the artefact's ``type_names``) of each particle the potential acts on.
    backend : {"torch", "python", None}
    periodic : bool
    use_cuda_graphs : bool
    atoms : sequence of int, optional
        The particles the potential acts on (default: all particles of ``system``, in order).
    force_group : int
    """
    module, metadata = _as_artefact(artefact)
    if backend is None:
        backend = "torch" if torch_force_available() else "python"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    type_idx = np.asarray(types, dtype=np.int64)
    atom_idx = None
    if atoms is not None:
        atom_idx = np.asarray(list(atoms), dtype=np.int64)
        if atom_idx.size and (atom_idx.min() < 0 or atom_idx.max() >= system.getNumParticles()):
            raise ValueError(f"atoms must index the system's {system.getNumParticles()} particles")
        n = len(atom_idx)
    else:
        n = system.getNumParticles()
    if type_idx.shape != (n,):
        raise ValueError(f"types must have shape ({n},) (one per particle the potential acts on), got {type_idx.shape}")
    dtype = metadata["dtype"]
    if backend == "torch":
        if not torch_force_available():
            raise ValueError("backend 'torch' needs openmmtorch, which cannot be imported here; use backend='python'")
        import openmmtorch

        sub = None if atom_idx is None else torch.from_numpy(atom_idx)
        wrapper = torch.jit.script(_OpenMMModule(module, torch.from_numpy(type_idx), DTYPES[dtype], sub))
        force = openmmtorch.TorchForce(wrapper)
        force.setUsesPeriodicBoundaryConditions(periodic)
        force.setOutputsForces(False)
        if use_cuda_graphs:
            force.setProperty("useCUDAGraphs", "true")
    else:
        buf = io.BytesIO()
        torch.jit.save(module, buf)
        force = openmm.PythonForce(TorchCompute(buf.getvalue(), type_idx, dtype, periodic, atom_idx))
        force.setUsesPeriodicBoundaryConditions(periodic)
    force.setName(f"cgkd potential ({backend})")
    force.setForceGroup(force_group)
    system.addForce(force)
    return force
