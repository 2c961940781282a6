"""The CG mapping: which atoms form each bead, with what position weights, and how to apply it.

A :class:`Mapping` is built from plain arrays (so it can be saved as JSON and loaded without a
topology); the constructors ``from_spec``, ``one_bead_per_residue``, ``from_groups`` and ``auto``
(module :mod:`cgkd.mapping.constructors`) read an ``openmm.app.Topology``. Molecules are the
connected pieces of the atom bond graph, with all atoms of one residue kept together; a bead never
spans two molecules. :meth:`Mapping.topology` gives the CG topology (:class:`cgkd.topology.Topology`)
that every later layer reads.

Applying the map is :meth:`Mapping.map_positions` and, with a force map fitted by an explicit call
(:meth:`Mapping.fit_force_map`, :func:`cgkd.mapping.forcemap.fit_force_map`), :meth:`Mapping.map_forces`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import scipy.sparse as sp

from cgkd import units
from cgkd.io.atomic import write_text
from cgkd.io.formats import check_format, read_json
from cgkd.mapping import checks, constructors
from cgkd.mapping.forcemap import ForceMap, fit_force_map
from cgkd.mapping.linear import apply_matrix
from cgkd.mapping.pbc import bfs_levels, make_whole
from cgkd.topology import Topology

FORMAT = "cgkd-mapping"
#: 1: per-bead key "residue" and "residue_names"; 2: "molecule" and "molecule_names"; 3: atoms may be left out
#: of every bead (subset maps) and a bead may carry explicit position "weights".
FORMAT_VERSION = 3
CENTERS = ("mass", "geometry")


class Mapping:
    """A linear map from atoms to beads.

    Parameters
    ----------
    n_atoms : int
    bead_atoms : sequence of sequences of int
        Atom indices of each bead. Atoms in no bead are simply not part of the CG model (a slice
        such as C-alpha only, or solvent left out); their forces still reach the beads through the
        force map where constraints or the optimal map call for it.
    bead_names, bead_types : sequences of str, length n_beads
        Bead names and type names; ``type_names`` lists the distinct types in first-seen order
        unless ``type_names`` is given.
    bead_molecule : sequence of int, length n_beads
        Molecule index of each bead.
    molecule_names : sequence of str, length n_molecules
    atom_masses : np.ndarray, shape=(n_atoms,), float64, amu
    atom_bonds : np.ndarray, shape=(n_bonds, 2), int64
        Atom bonds (used to make molecules whole and to derive CG bonds).
    molecule_atoms : sequence of sequences of int
        Atom indices of each molecule, a partition of all atoms.
    periodic : bool
        If True, :meth:`map_positions` requires a box.
    center : {"mass", "geometry"}
        Position weights: atom mass or uniform.
    name : str
    allow_overlap : bool
        Allow an atom to belong to several beads (only the optimal force map can handle it).
    type_names : sequence of str, optional
        Full list of type names (may contain types not present in this system).
    bead_weights : sequence of (sequence of float or None), optional
        Explicit position weights of each bead's atoms, in the order of ``bead_atoms[b]``; they
        are normalised to sum to 1. ``None`` (for the whole list or one bead) uses ``center``.
    named_dihedrals : dict of str -> array-like, shape=(n, 4), int, optional
        Collective dihedrals worth analysing by name (``phi``, ``psi``), as bead quadruples.
    impropers : array-like, shape=(n, 4), int, optional
        Bead quadruples for improper priors (the handedness at a branch bead); they go into the CG topology.
    """

    def __init__(
        self,
        n_atoms: int,
        bead_atoms: Sequence[Sequence[int]],
        bead_names: Sequence[str],
        bead_types: Sequence[str],
        bead_molecule: Sequence[int],
        molecule_names: Sequence[str],
        atom_masses: np.ndarray,
        atom_bonds: np.ndarray,
        molecule_atoms: Sequence[Sequence[int]],
        periodic: bool,
        center: str = "mass",
        name: str = "",
        allow_overlap: bool = False,
        type_names: Optional[Sequence[str]] = None,
        bead_weights: Optional[Sequence[Optional[Sequence[float]]]] = None,
        named_dihedrals: Optional[Dict[str, object]] = None,
        impropers=None,
    ):
        if center not in CENTERS:
            raise ValueError(f"center must be one of {CENTERS}, got {center!r}")
        self.n_atoms = int(n_atoms)
        bead_atoms = [list(atoms) for atoms in bead_atoms]
        if bead_weights is None:
            bead_weights = [None] * len(bead_atoms)
        if len(bead_weights) != len(bead_atoms):
            raise ValueError(f"bead_weights has {len(bead_weights)} entries but there are {len(bead_atoms)} beads")
        self.bead_atoms, self.bead_weights = [], []
        for b, (atoms, w) in enumerate(zip(bead_atoms, bead_weights)):
            order = np.argsort(np.asarray([int(a) for a in atoms], dtype=np.int64), kind="stable")
            self.bead_atoms.append(np.asarray([int(atoms[k]) for k in order], dtype=np.int64))
            self.bead_weights.append(None if w is None else checks.check_weights(w, len(atoms), b)[order])
        self.bead_names = [str(n) for n in bead_names]
        if type_names is None:
            type_names = list(dict.fromkeys(str(t) for t in bead_types))
        self.type_names = [str(t) for t in type_names]
        unknown = sorted(set(bead_types) - set(self.type_names))
        if unknown:
            raise ValueError(f"bead_types {unknown} are not in type_names {self.type_names}")
        self.bead_types = np.asarray([self.type_names.index(t) for t in bead_types], dtype=np.int64)
        self.bead_molecule = np.asarray(bead_molecule, dtype=np.int64)
        self.molecule_names = [str(n) for n in molecule_names]
        self.atom_masses = np.asarray(atom_masses, dtype=np.float64)
        self.atom_bonds = np.asarray(atom_bonds, dtype=np.int64).reshape(-1, 2)
        self.molecule_atoms = [np.asarray(sorted(int(a) for a in m), dtype=np.int64) for m in molecule_atoms]
        self.periodic = bool(periodic)
        self.center = center
        self.name = str(name)
        self.allow_overlap = bool(allow_overlap)
        checks.check_mapping(self)
        self.named_dihedrals = {}
        for key, quads in (named_dihedrals or {}).items():
            q = np.asarray(quads, dtype=np.int64).reshape(-1, 4)
            if q.size and (q.min() < 0 or q.max() >= self.n_beads):
                raise ValueError(f"named_dihedrals[{key!r}] must index beads 0..{self.n_beads - 1}, got {q.tolist()}")
            self.named_dihedrals[str(key)] = q
        imp = np.asarray([] if impropers is None else impropers, dtype=np.int64).reshape(-1, 4)
        if imp.size and (imp.min() < 0 or imp.max() >= self.n_beads):
            raise ValueError(f"impropers must index beads 0..{self.n_beads - 1}, got {imp.tolist()}")
        self.impropers = imp
        self._levels = None
        self._matrix = None

    # ------------------------------------------------------------------ derived properties
    @property
    def n_beads(self) -> int:
        return len(self.bead_atoms)

    @property
    def n_molecules(self) -> int:
        return len(self.molecule_atoms)

    @property
    def bead_masses(self) -> np.ndarray:
        """np.ndarray, shape=(n_beads,), float64, amu: sum of the masses of each bead's atoms."""
        return np.asarray([self.atom_masses[a].sum() for a in self.bead_atoms], dtype=np.float64)

    @property
    def atom_molecule(self) -> np.ndarray:
        """np.ndarray, shape=(n_atoms,), int64: molecule index of each atom."""
        out = np.empty(self.n_atoms, dtype=np.int64)
        for m, atoms in enumerate(self.molecule_atoms):
            out[atoms] = m
        return out

    @property
    def mapped_atoms(self) -> np.ndarray:
        """np.ndarray, shape=(n_mapped,), int64: atoms that belong to at least one bead (sorted)."""
        return np.unique(np.concatenate(self.bead_atoms)) if self.bead_atoms else np.zeros(0, dtype=np.int64)

    @property
    def is_partition(self) -> bool:
        """True when every atom is in exactly one bead (the classic map of whole groups)."""
        return bool(np.array_equal(np.sort(np.concatenate(self.bead_atoms)), np.arange(self.n_atoms)))

    @property
    def dropped_molecules(self) -> np.ndarray:
        """np.ndarray, shape=(n,), int64: molecules without any bead (solvent left out of the CG model)."""
        return np.setdiff1d(np.arange(self.n_molecules), self.bead_molecule)

    @property
    def cg_periodic(self) -> bool:
        """Whether the CG system keeps the box: the AA system is periodic and no molecule was left out.

        Leaving whole molecules out (the solvent of a solvated peptide) makes an implicit-solvent CG
        model, which is not periodic.
        """
        return self.periodic and self.dropped_molecules.size == 0

    @property
    def bonds(self) -> np.ndarray:
        """np.ndarray, shape=(n_cg_bonds, 2), int64: bead pairs (i < j) joined through the atom bond graph.

        Two beads are bonded when an atom of one is bonded to an atom of the other, or when a chain
        of bonds joins them through atoms that are in no bead (C-alpha beads of neighbouring
        residues, joined through the unmapped C and N). Paths never pass through a third bead's atoms.
        """
        beads_of = [[] for _ in range(self.n_atoms)]
        for b, atoms in enumerate(self.bead_atoms):
            for a in atoms:
                beads_of[a].append(b)
        nbrs = [[] for _ in range(self.n_atoms)]
        for i, j in self.atom_bonds:
            nbrs[i].append(int(j))
            nbrs[j].append(int(i))
        pairs = set()
        for b, atoms in enumerate(self.bead_atoms):
            seen = set(int(a) for a in atoms)
            stack = list(seen)
            while stack:
                a = stack.pop()
                for nb in nbrs[a]:
                    if nb in seen:
                        continue
                    seen.add(nb)
                    if beads_of[nb]:
                        pairs.update((min(b, c), max(b, c)) for c in beads_of[nb] if c != b)
                    else:
                        stack.append(nb)
        return np.asarray(sorted(pairs), dtype=np.int64).reshape(-1, 2)

    def weights(self, bead: int) -> np.ndarray:
        """Position weights of ``bead``'s atoms (same order as ``bead_atoms[bead]``), summing to 1."""
        if self.bead_weights[bead] is not None:
            return self.bead_weights[bead]
        atoms = self.bead_atoms[bead]
        w = self.atom_masses[atoms] if self.center == "mass" else np.ones(len(atoms))
        return w / w.sum()

    @property
    def position_matrix(self) -> sp.csr_matrix:
        """scipy.sparse.csr_matrix, shape=(n_beads, n_atoms), float64: the position map C (rows sum to 1)."""
        if self._matrix is None:
            rows = np.concatenate([np.full(len(a), b) for b, a in enumerate(self.bead_atoms)])
            cols = np.concatenate(self.bead_atoms)
            vals = np.concatenate([self.weights(b) for b in range(self.n_beads)])
            self._matrix = sp.csr_matrix((vals, (rows, cols)), shape=(self.n_beads, self.n_atoms))
        return self._matrix

    @property
    def membership_matrix(self) -> sp.csr_matrix:
        """scipy.sparse.csr_matrix, shape=(n_beads, n_atoms), float64: 1 where the atom belongs to the bead.

        Unlike ``position_matrix`` it also marks atoms of zero position weight (massless sites).
        """
        rows = np.concatenate([np.full(len(a), b) for b, a in enumerate(self.bead_atoms)])
        cols = np.concatenate(self.bead_atoms)
        return sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(self.n_beads, self.n_atoms))

    # ------------------------------------------------------------------ applying the map
    def make_whole(self, xyz, box=None) -> np.ndarray:
        """Atom positions with every molecule made whole (minimum-image steps along its bond graph).

        Parameters
        ----------
        xyz : np.ndarray or Quantity, shape=(n_frames, n_atoms, 3), nm
        box : np.ndarray or Quantity, shape=(n_frames, 3, 3), nm, or None for a non-periodic mapping

        Returns
        -------
        np.ndarray, shape=(n_frames, n_atoms, 3), float64, nm
        """
        xyz = checks.check_xyz(units.strip(xyz, units.DISTANCE, "xyz"), self.n_atoms, "xyz")
        box = checks.check_box(units.strip(box, units.DISTANCE, "box"), xyz.shape[0], self.periodic)
        if box is None:
            out = np.asarray(xyz, dtype=np.float64)
        else:
            if self._levels is None:
                self._levels = bfs_levels(self.n_atoms, self.atom_bonds, self.molecule_atoms)
            out = make_whole(xyz, box, self._levels)
        checks.check_not_angstrom(out, self.atom_bonds)
        return out

    def map_positions(self, xyz, box=None) -> np.ndarray:
        """Bead positions: the weighted centre of each bead's atoms after making molecules whole.

        Parameters
        ----------
        xyz : np.ndarray or Quantity, shape=(n_frames, n_atoms, 3), nm
        box : np.ndarray or Quantity, shape=(n_frames, 3, 3), nm
            Required when the mapping is periodic. Beads are not wrapped back into the box: each
            molecule stays next to its lowest-index atom.

        Returns
        -------
        np.ndarray, shape=(n_frames, n_beads, 3), float64, nm
        """
        whole = self.make_whole(xyz, box)
        return apply_matrix(self.position_matrix, whole)

    def fit_force_map(self, method: str = "basic", forces=None, constraints=None,
                      allow_constraint_crossing: bool = False, regularization: float = 1e-4,
                      pool: bool = True) -> ForceMap:
        """Fit (or, for ``basic``, build) the force map registered as ``method``; see
        :func:`cgkd.mapping.forcemap.fit_force_map`."""
        return fit_force_map(method, self, forces=forces, constraints=constraints,
                             allow_constraint_crossing=allow_constraint_crossing, regularization=regularization,
                             pool=pool)

    def map_forces(self, forces, force_map: ForceMap) -> np.ndarray:
        """Map atomic forces to beads with an already built force map.

        Parameters
        ----------
        forces : np.ndarray or Quantity, shape=(n_frames, n_atoms, 3), kJ/mol/nm
        force_map : ForceMap
            From :meth:`fit_force_map` (fitting is never hidden in applying).

        Returns
        -------
        np.ndarray, shape=(n_frames, n_beads, 3), float64, kJ/mol/nm
        """
        if not isinstance(force_map, ForceMap):
            raise ValueError(
                f"force_map must be a ForceMap, got {type(force_map).__name__} {force_map!r}; build one with "
                "mapping.fit_force_map(name, forces, constraints)"
            )
        if force_map.n_beads != self.n_beads or force_map.n_atoms != self.n_atoms:
            raise ValueError(f"force_map maps {force_map.n_atoms} atoms to {force_map.n_beads} beads but the mapping "
                             f"maps {self.n_atoms} to {self.n_beads}")
        forces = checks.check_forces(units.strip(forces, units.FORCE, "forces"), self.n_atoms)
        return force_map.apply(forces)

    def map(self, positions, forces, box, force_map: ForceMap) -> Tuple[np.ndarray, np.ndarray]:
        """Bead positions and forces (float32, (F, B, 3), nm and kJ/mol/nm) of a trajectory.

        ``cgkd.data.mapped.map_aa`` puts them into a ``CGData`` with :meth:`topology`.
        """
        positions = checks.check_xyz(units.strip(positions, units.DISTANCE, "positions"), self.n_atoms, "positions")
        forces = checks.check_forces(units.strip(forces, units.FORCE, "forces"), self.n_atoms)
        if forces.shape[0] != positions.shape[0]:
            raise ValueError(f"forces has {forces.shape[0]} frames but positions has {positions.shape[0]}")
        return (self.map_positions(positions, box).astype(np.float32),
                self.map_forces(forces, force_map).astype(np.float32))

    def topology(self) -> Topology:
        """The CG topology: one particle per bead, with :attr:`bead_masses`, molecules and :attr:`bonds`.

        Molecules without beads (left-out solvent) are not in it; the others keep their order.
        """
        kept, bead_molecule = np.unique(self.bead_molecule, return_inverse=True)
        return Topology(self.type_names, self.bead_types, self.bead_masses, self.bead_names, bead_molecule,
                        [self.molecule_names[m] for m in kept], self.bonds, self.impropers)

    # ------------------------------------------------------------------ save / load
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "units": {"mass": "amu"},
            "name": self.name,
            "center": self.center,
            "periodic": self.periodic,
            "allow_overlap": self.allow_overlap,
            "n_atoms": self.n_atoms,
            "type_names": self.type_names,
            "beads": [
                {"name": n, "type": self.type_names[t], "molecule": int(r), "atoms": a.tolist(),
                 **({} if w is None else {"weights": w.tolist()})}
                for n, t, r, a, w in zip(self.bead_names, self.bead_types, self.bead_molecule, self.bead_atoms,
                                         self.bead_weights)
            ],
            "molecule_names": self.molecule_names,
            "molecule_atoms": [m.tolist() for m in self.molecule_atoms],
            "atom_masses": self.atom_masses.tolist(),
            "atom_bonds": self.atom_bonds.tolist(),
            "named_dihedrals": {k: v.tolist() for k, v in self.named_dihedrals.items()},
            "impropers": self.impropers.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = "mapping") -> "Mapping":
        """Inverse of :meth:`to_dict`; reads every format version."""
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(d).__name__}")
        version = check_format(d.get("format"), d.get("format_version"), FORMAT, FORMAT_VERSION, where)
        beads = d["beads"]
        mol_key, names_key = ("residue", "residue_names") if version == 1 else ("molecule", "molecule_names")
        return cls(
            n_atoms=d["n_atoms"],
            bead_atoms=[b["atoms"] for b in beads],
            bead_names=[b["name"] for b in beads],
            bead_types=[b["type"] for b in beads],
            bead_molecule=[b[mol_key] for b in beads],
            molecule_names=d[names_key],
            atom_masses=np.asarray(d["atom_masses"], dtype=np.float64),
            atom_bonds=np.asarray(d["atom_bonds"], dtype=np.int64),
            molecule_atoms=d["molecule_atoms"],
            periodic=d["periodic"],
            center=d["center"],
            name=d["name"],
            allow_overlap=d["allow_overlap"],
            type_names=d["type_names"],
            bead_weights=[b.get("weights") for b in beads],
            named_dihedrals=d.get("named_dihedrals"),
            impropers=d.get("impropers"),
        )

    def save(self, path) -> None:
        """Write the mapping as JSON (atomically)."""
        write_text(path, json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path) -> "Mapping":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"mapping file {str(path)!r} does not exist")
        return cls.from_dict(read_json(path, "mapping file"), str(path))

    def __repr__(self) -> str:
        return (
            f"Mapping(name={self.name!r}, n_atoms={self.n_atoms}, n_beads={self.n_beads}, "
            f"types={self.type_names}, center={self.center!r}, periodic={self.periodic})"
        )

    # ------------------------------------------------------------------ constructors (cgkd.mapping.constructors)
    from_groups = classmethod(constructors.from_groups)
    one_bead_per_residue = classmethod(constructors.one_bead_per_residue)
    from_spec = classmethod(constructors.from_spec)
    auto = classmethod(constructors.auto)
