"""The CG mapping: which atoms form each bead, with what position weights, and how to apply it.

A :class:`Mapping` is built from plain arrays (so it can be saved as JSON and loaded without a
topology); the constructors ``from_spec``, ``one_bead_per_residue``, ``from_groups`` and ``auto``
read an ``openmm.app.Topology``. Molecules are the connected pieces of the atom bond graph, with all
atoms of one residue kept together; a bead never spans two molecules.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import networkx as nx
import numpy as np
import scipy.sparse as sp

from cgkd import units
from cgkd.io.atomic import write_text
from cgkd.mapping import checks
from cgkd.mapping.pbc import bfs_levels, make_whole

FORMAT = "cgkd-mapping"
FORMAT_VERSION = 1
CENTERS = ("mass", "geometry")


class Mapping:
    """A linear map from atoms to beads.

    Parameters
    ----------
    n_atoms : int
    bead_atoms : sequence of sequences of int
        Atom indices of each bead.
    bead_names, bead_types : sequences of str, length n_beads
        Bead names and type names; ``type_names`` lists the distinct types in first-seen order
        unless ``type_names`` is given.
    bead_residue : sequence of int, length n_beads
        Molecule index of each bead.
    residue_names : sequence of str, length n_molecules
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
    """

    def __init__(
        self,
        n_atoms: int,
        bead_atoms: Sequence[Sequence[int]],
        bead_names: Sequence[str],
        bead_types: Sequence[str],
        bead_residue: Sequence[int],
        residue_names: Sequence[str],
        atom_masses: np.ndarray,
        atom_bonds: np.ndarray,
        molecule_atoms: Sequence[Sequence[int]],
        periodic: bool,
        center: str = "mass",
        name: str = "",
        allow_overlap: bool = False,
        type_names: Optional[Sequence[str]] = None,
    ):
        if center not in CENTERS:
            raise ValueError(f"center must be one of {CENTERS}, got {center!r}")
        self.n_atoms = int(n_atoms)
        self.bead_atoms = [np.asarray(sorted(int(a) for a in atoms), dtype=np.int64) for atoms in bead_atoms]
        self.bead_names = [str(n) for n in bead_names]
        if type_names is None:
            type_names = list(dict.fromkeys(str(t) for t in bead_types))
        self.type_names = [str(t) for t in type_names]
        unknown = sorted(set(bead_types) - set(self.type_names))
        if unknown:
            raise ValueError(f"bead_types {unknown} are not in type_names {self.type_names}")
        self.bead_types = np.asarray([self.type_names.index(t) for t in bead_types], dtype=np.int64)
        self.bead_residue = np.asarray(bead_residue, dtype=np.int64)
        self.residue_names = [str(n) for n in residue_names]
        self.atom_masses = np.asarray(atom_masses, dtype=np.float64)
        self.atom_bonds = np.asarray(atom_bonds, dtype=np.int64).reshape(-1, 2)
        self.molecule_atoms = [np.asarray(sorted(int(a) for a in m), dtype=np.int64) for m in molecule_atoms]
        self.periodic = bool(periodic)
        self.center = center
        self.name = str(name)
        self.allow_overlap = bool(allow_overlap)
        checks.check_mapping(self)
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
    def bonds(self) -> np.ndarray:
        """np.ndarray, shape=(n_cg_bonds, 2), int64: bead pairs (i < j) joined by at least one atom bond."""
        beads_of = [[] for _ in range(self.n_atoms)]
        for b, atoms in enumerate(self.bead_atoms):
            for a in atoms:
                beads_of[a].append(b)
        pairs = set()
        for i, j in self.atom_bonds:
            for bi in beads_of[i]:
                for bj in beads_of[j]:
                    if bi != bj:
                        pairs.add((min(bi, bj), max(bi, bj)))
        return np.asarray(sorted(pairs), dtype=np.int64).reshape(-1, 2)

    def weights(self, bead: int) -> np.ndarray:
        """Position weights of ``bead``'s atoms (same order as ``bead_atoms[bead]``), summing to 1."""
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
        return _apply_matrix(self.position_matrix, whole)

    def force_map(
        self,
        method: str = "basic",
        forces=None,
        constraints=None,
        allow_constraint_crossing: bool = False,
        regularization: float = 1e-4,
        pool: bool = True,
    ):
        """Build a force map by name from ``cgkd.mapping.forcemap.FORCE_MAPS`` (see there)."""
        from cgkd.mapping.forcemap import make_force_map

        return make_force_map(
            method,
            self,
            forces=forces,
            constraints=constraints,
            allow_constraint_crossing=allow_constraint_crossing,
            regularization=regularization,
            pool=pool,
        )

    def map_forces(self, forces, method="basic", constraints=None, allow_constraint_crossing: bool = False) -> np.ndarray:
        """Map atomic forces to beads.

        Parameters
        ----------
        forces : np.ndarray or Quantity, shape=(n_frames, n_atoms, 3), kJ/mol/nm
        method : str or ForceMap
            A registered force-map name (``"basic"``, ``"optimal"``; an optimal map is fitted on
            ``forces`` themselves) or an already built ``ForceMap``.
        constraints : np.ndarray, shape=(n_constraints, 2), int64, optional
            Constrained atom pairs of the AA simulation.
        allow_constraint_crossing : bool
            Let the basic map sum forces across constraints between beads (biased; off by default).

        Returns
        -------
        np.ndarray, shape=(n_frames, n_beads, 3), float64, kJ/mol/nm
        """
        forces = checks.check_forces(units.strip(forces, units.FORCE, "forces"), self.n_atoms)
        if isinstance(method, str):
            method = self.force_map(method, forces, constraints, allow_constraint_crossing)
        return method.apply(forces)

    def to_cg_arrays(self, positions, forces, box, force_map) -> Dict[str, object]:
        """Map a trajectory to the arrays of a CG dataset (the keyword arguments of ``cgkd.data.CGData``).

        ``cgkd.mapping`` must not import ``cgkd.data`` (layering), so this returns plain arrays;
        ``cgkd.data.mapped.map_aa`` adds temperature, time and provenance and builds the ``CGData``.

        Parameters
        ----------
        positions : np.ndarray, shape=(n_frames, n_atoms, 3), nm
        forces : np.ndarray, shape=(n_frames, n_atoms, 3), kJ/mol/nm
        box : np.ndarray, shape=(n_frames, 3, 3), nm, or None
        force_map : ForceMap or str

        Returns
        -------
        dict with ``positions``, ``forces`` (float32, (F, B, 3)), ``box``, ``types``, ``type_names``,
        ``bead_names``, ``masses``, ``bead_residue``, ``residue_names``, ``bonds``.
        """
        positions = checks.check_xyz(units.strip(positions, units.DISTANCE, "positions"), self.n_atoms, "positions")
        forces = checks.check_forces(units.strip(forces, units.FORCE, "forces"), self.n_atoms)
        if forces.shape[0] != positions.shape[0]:
            raise ValueError(f"forces has {forces.shape[0]} frames but positions has {positions.shape[0]}")
        cg_pos = self.map_positions(positions, box)
        cg_f = self.map_forces(forces, force_map)
        return dict(
            positions=cg_pos.astype(np.float32),
            forces=cg_f.astype(np.float32),
            box=None if box is None else np.asarray(units.strip(box, units.DISTANCE, "box"), dtype=np.float32),
            types=self.bead_types.copy(),
            type_names=list(self.type_names),
            bead_names=list(self.bead_names),
            masses=self.bead_masses,
            bead_residue=self.bead_residue.copy(),
            residue_names=list(self.residue_names),
            bonds=self.bonds,
        )

    def cg_topology(self, box=None):
        """The CG system as an ``openmm.app.Topology``: one residue per molecule, one atom per bead.

        Beads have no element; their masses are :attr:`bead_masses` (amu). ``box`` (3, 3) nm sets
        the periodic box vectors.
        """
        import openmm.app as app

        top = app.Topology()
        chain = top.addChain()
        residues = [top.addResidue(n, chain) for n in self.residue_names]
        atoms = [top.addAtom(self.bead_names[b], None, residues[self.bead_residue[b]]) for b in range(self.n_beads)]
        for i, j in self.bonds:
            top.addBond(atoms[i], atoms[j])
        if box is not None:
            box = np.asarray(units.strip(box, units.DISTANCE, "box"), dtype=np.float64)
            if box.shape != (3, 3):
                raise ValueError(f"box must have shape (3, 3) nm, got {box.shape}")
            top.setPeriodicBoxVectors(box.tolist())
        return top

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
                {"name": n, "type": self.type_names[t], "residue": int(r), "atoms": a.tolist()}
                for n, t, r, a in zip(self.bead_names, self.bead_types, self.bead_residue, self.bead_atoms)
            ],
            "residue_names": self.residue_names,
            "molecule_atoms": [m.tolist() for m in self.molecule_atoms],
            "atom_masses": self.atom_masses.tolist(),
            "atom_bonds": self.atom_bonds.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Mapping":
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"mapping data must have format {FORMAT!r}, got {got!r}")
        if int(d["format_version"]) > FORMAT_VERSION:
            raise ValueError(f"mapping format version {d['format_version']} is newer than {FORMAT_VERSION}")
        beads = d["beads"]
        return cls(
            n_atoms=d["n_atoms"],
            bead_atoms=[b["atoms"] for b in beads],
            bead_names=[b["name"] for b in beads],
            bead_types=[b["type"] for b in beads],
            bead_residue=[b["residue"] for b in beads],
            residue_names=d["residue_names"],
            atom_masses=np.asarray(d["atom_masses"], dtype=np.float64),
            atom_bonds=np.asarray(d["atom_bonds"], dtype=np.int64),
            molecule_atoms=d["molecule_atoms"],
            periodic=d["periodic"],
            center=d["center"],
            name=d["name"],
            allow_overlap=d["allow_overlap"],
            type_names=d["type_names"],
        )

    def save(self, path) -> None:
        """Write the mapping as JSON (atomically)."""
        write_text(path, json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path) -> "Mapping":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"mapping file {str(path)!r} does not exist")
        return cls.from_dict(json.loads(path.read_text()))

    def __repr__(self) -> str:
        return (
            f"Mapping(name={self.name!r}, n_atoms={self.n_atoms}, n_beads={self.n_beads}, "
            f"types={self.type_names}, center={self.center!r}, periodic={self.periodic})"
        )

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_groups(
        cls,
        topology,
        groups: Sequence[Sequence[int]],
        types: Optional[Sequence[str]] = None,
        names: Optional[Sequence[str]] = None,
        center: str = "mass",
        masses=None,
        allow_overlap: bool = False,
        name: str = "groups",
        type_names: Optional[Sequence[str]] = None,
    ) -> "Mapping":
        """A mapping with one bead per group of atom indices.

        Parameters
        ----------
        topology : openmm.app.Topology
        groups : sequence of sequences of int
            Atom indices of each bead.
        types, names : sequences of str, optional
            Default for both: residue name followed by the bead's index inside its molecule
            (just the residue name for one-bead molecules), so equal molecules get equal types.
        center : {"mass", "geometry"}
        masses : np.ndarray, shape=(n_atoms,), amu, optional
            Atom masses (e.g. from the AA system, which may repartition hydrogen mass); default:
            element masses from the topology.
        """
        info = _topology_info(topology, masses)
        groups = [list(g) for g in groups]
        for g, atoms in enumerate(groups):
            bad = [a for a in atoms if not (0 <= int(a) < info["n_atoms"])]
            if bad or not atoms:
                raise ValueError(f"groups[{g}] must hold atom indices in 0..{info['n_atoms'] - 1}, got {atoms}")
        mol_of = np.empty(info["n_atoms"], dtype=np.int64)
        for m, atoms in enumerate(info["molecule_atoms"]):
            mol_of[atoms] = m
        bead_mol = []
        for g, atoms in enumerate(groups):
            mols = sorted(set(mol_of[atoms].tolist()))
            if len(mols) != 1:
                raise ValueError(f"groups[{g}] spans molecules {mols}; a bead must lie inside one molecule")
            bead_mol.append(mols[0])
        default = _default_names(bead_mol, info["residue_names"], groups)
        types = list(types) if types is not None else default
        names = list(names) if names is not None else list(types)
        for label, seq in (("types", types), ("names", names)):
            if len(seq) != len(groups):
                raise ValueError(f"{label} has {len(seq)} entries but there are {len(groups)} groups")
        return cls(
            n_atoms=info["n_atoms"],
            bead_atoms=groups,
            bead_names=names,
            bead_types=types,
            bead_residue=bead_mol,
            residue_names=info["residue_names"],
            atom_masses=info["masses"],
            atom_bonds=info["bonds"],
            molecule_atoms=info["molecule_atoms"],
            periodic=info["periodic"],
            center=center,
            name=name,
            allow_overlap=allow_overlap,
            type_names=type_names,
        )

    @classmethod
    def one_bead_per_residue(cls, topology, center: str = "mass", masses=None) -> "Mapping":
        """One bead per residue, named and typed by the residue name."""
        groups = [[a.index for a in r.atoms()] for r in topology.residues()]
        rnames = [r.name for r in topology.residues()]
        return cls.from_groups(topology, groups, types=rnames, names=rnames, center=center, masses=masses, name="residue")

    @classmethod
    def from_spec(cls, topology, mapping_spec, masses=None, name: str = "") -> "Mapping":
        """A mapping from a ``cgkd.io.spec.MappingSpec`` (per residue name, a list of ``BeadSpec``).

        Type names come in the order they first appear in the spec, so two systems mapped with the
        same spec share type indices. ``atoms: ["*"]`` means the whole residue.
        """
        groups, types, names = [], [], []
        type_names = list(dict.fromkeys(b.type for beads in mapping_spec.residues.values() for b in beads))
        for res in topology.residues():
            if res.name not in mapping_spec.residues:
                raise ValueError(
                    f"residue {res.name!r} (index {res.index}) has no beads in the mapping; "
                    f"the mapping covers {sorted(mapping_spec.residues)}"
                )
            by_name = {a.name: a.index for a in res.atoms()}
            for bead in mapping_spec.residues[res.name]:
                if list(bead.atoms) == ["*"]:
                    atoms = [a.index for a in res.atoms()]
                else:
                    missing = [n for n in bead.atoms if n not in by_name]
                    if missing:
                        raise ValueError(
                            f"bead {bead.name!r} of residue {res.name!r} names atoms {missing} that the residue "
                            f"does not have; its atoms are {sorted(by_name)}"
                        )
                    atoms = [by_name[n] for n in bead.atoms]
                groups.append(atoms)
                types.append(bead.type)
                names.append(bead.name)
        return cls.from_groups(
            topology, groups, types=types, names=names, center=mapping_spec.center, masses=masses,
            name=name or "spec", type_names=type_names,
        )

    @classmethod
    def auto(cls, topology, heavy_atoms_per_bead: int = 4, center: str = "mass", masses=None) -> "Mapping":
        """Split each molecule into connected beads of about ``heavy_atoms_per_bead`` heavy atoms.

        Hydrogens go with their heavy atom. See :func:`cgkd.mapping.grouping.auto_groups` and
        docs/mapping.md for the algorithm.
        """
        from cgkd.mapping.grouping import auto_groups

        groups = auto_groups(topology, heavy_atoms_per_bead)
        return cls.from_groups(topology, groups, center=center, masses=masses, name=f"auto{heavy_atoms_per_bead}")


def _apply_matrix(matrix: sp.spmatrix, x: np.ndarray) -> np.ndarray:
    """(B, A) sparse matrix applied to (F, A, 3) -> (F, B, 3), float64."""
    f, a, _ = x.shape
    flat = np.ascontiguousarray(np.transpose(np.asarray(x, dtype=np.float64), (1, 0, 2))).reshape(a, f * 3)
    out = matrix @ flat
    return np.ascontiguousarray(np.transpose(np.asarray(out).reshape(-1, f, 3), (1, 0, 2)))


def _default_names(bead_mol: List[int], residue_names: List[str], groups) -> List[str]:
    counts: Dict[int, int] = {}
    for m in bead_mol:
        counts[m] = counts.get(m, 0) + 1
    seen: Dict[int, int] = {}
    out = []
    for m in bead_mol:
        k = seen.get(m, 0)
        seen[m] = k + 1
        out.append(residue_names[m] if counts[m] == 1 else f"{residue_names[m]}{k}")
    return out


def _topology_info(topology, masses) -> dict:
    """Atoms, element masses, bonds, molecules and periodicity of an ``openmm.app.Topology``."""
    atoms = list(topology.atoms())
    n = len(atoms)
    if masses is None:
        masses = np.asarray(
            [a.element.mass.value_in_unit(units.MASS) if a.element is not None else 0.0 for a in atoms],
            dtype=np.float64,
        )
    else:
        masses = np.asarray(units.strip(masses, units.MASS, "masses"), dtype=np.float64)
        if masses.shape != (n,):
            raise ValueError(f"masses must have shape ({n},) (one per topology atom), got {masses.shape}")
    bonds = np.asarray([(b[0].index, b[1].index) for b in topology.bonds()], dtype=np.int64).reshape(-1, 2)
    graph = nx.Graph()
    graph.add_nodes_from(range(n))
    graph.add_edges_from(bonds.tolist())
    for res in topology.residues():
        idx = [a.index for a in res.atoms()]
        graph.add_edges_from(zip(idx[:-1], idx[1:]))
    molecules = sorted((sorted(c) for c in nx.connected_components(graph)), key=lambda c: c[0])
    res_of = [a.residue.name for a in atoms]
    return dict(
        n_atoms=n,
        masses=masses,
        bonds=bonds,
        molecule_atoms=molecules,
        residue_names=[res_of[m[0]] for m in molecules],
        periodic=topology.getPeriodicBoxVectors() is not None,
    )
