"""The CG (or atomistic) topology: one frozen description of the particles every layer reads.

:class:`Topology` holds per particle (bead or atom) its type, name, mass and molecule, the type
names, the molecule names and the bonds; the angles and dihedrals are derived from the bonds once,
here, and every user of bonded terms reads them from here: the prior fit (``cgkd.nn.prior_fit``),
the bonded priors of a model (``cgkd.nn.priors``), the native bonded forces of an exported system
(``cgkd.openmm.bonded``), CG MD output and the bonded distributions of ``cgkd.analysis``.

An atomistic topology is the same object with element symbols as type names and, for a model
without bonded priors, no bonds.

No torch here; ``openmm`` and ``mdtraj`` are imported only by the converters that need them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from cgkd.io.formats import parse_json

FORMAT = "cgkd-topology"
#: 1: bonds only; 2: also "impropers" (chosen quadruples such as a chirality improper, not derived from bonds).
FORMAT_VERSION = 2
KINDS = ("bonds", "angles", "dihedrals", "impropers")


def _neighbours(bonds: np.ndarray) -> Dict[int, set]:
    out: Dict[int, set] = {}
    for a, b in bonds:
        if a == b:
            raise ValueError(f"bonds contains a self bond ({a}, {b})")
        out.setdefault(int(a), set()).add(int(b))
        out.setdefault(int(b), set()).add(int(a))
    return out


def angles_from_bonds(bonds) -> np.ndarray:
    """All triplets i-j-k with bonds i-j and j-k, each once with i < k; shape (n_angles, 3), int64, sorted."""
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    out = {(i, j, k) for j, nbrs in _neighbours(bonds).items() for i in nbrs for k in nbrs if i < k}
    return np.array(sorted(out), dtype=np.int64).reshape(-1, 3)


def dihedrals_from_bonds(bonds) -> np.ndarray:
    """All proper dihedrals i-j-k-l along bonded paths, each once as the lesser of the tuple and its
    reverse (three-membered rings give none); shape (n_dihedrals, 4), int64, sorted."""
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    nb = _neighbours(bonds)
    out = set()
    for j, k in bonds.tolist():
        for i in nb[j] - {k}:
            for m in nb[k] - {j}:
                if i != m:
                    quad = (i, j, k, m)
                    out.add(min(quad, quad[::-1]))
    return np.array(sorted(out), dtype=np.int64).reshape(-1, 4)


def connected_pieces(n: int, links) -> np.ndarray:
    """Piece index (0.., numbered by lowest member) of each of ``n`` nodes joined by ``links`` (pairs)."""
    parent = list(range(n))

    def root(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in links:
        ra, rb = root(int(a)), root(int(b))
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = [root(a) for a in range(n)]
    number: Dict[int, int] = {}
    return np.array([number.setdefault(r, len(number)) for r in roots], dtype=np.int64)


def canonical(type_tuple: Sequence) -> tuple:
    """The key shared by a type tuple and its reverse (the lesser of the two)."""
    t = tuple(type_tuple)
    return min(t, t[::-1])


def _frozen(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class Topology:
    """Particles (beads or atoms), their types, masses and molecules, and the bonds between them.

    Parameters
    ----------
    type_names : sequence of str
        All type names (a type need not occur in this system).
    types : np.ndarray, shape=(N,), int
        Index of each particle's type in ``type_names``.
    masses : np.ndarray, shape=(N,), float, amu
        Positive masses.
    names : sequence of str, length N, optional
        Particle names; default the type names.
    molecules : np.ndarray, shape=(N,), int, optional
        Molecule index of each particle, 0..n_molecules-1; default one molecule per particle.
    molecule_names : sequence of str, optional
        One per molecule; default ``"MOL"``.
    bonds : np.ndarray, shape=(n_bonds, 2), int, optional
        Bonded particle pairs inside a molecule; stored as sorted unique pairs with i < j.
    impropers : np.ndarray, shape=(n_impropers, 4), int, optional
        Chosen quadruples inside a molecule whose dihedral holds a shape the bonds do not: the
        handedness at a branch (``N, C, CA, CB``: its sign tells L from D). Kept as given, not derived.

    The angles and dihedrals (:attr:`angles`, :attr:`dihedrals`) are derived from the bonds.
    Arrays are read-only; the object is hashable by identity only.
    """

    type_names: Tuple[str, ...]
    types: np.ndarray
    masses: np.ndarray
    names: Tuple[str, ...] = ()
    molecules: Optional[np.ndarray] = None
    molecule_names: Tuple[str, ...] = ()
    bonds: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))
    impropers: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), dtype=np.int64))

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        type_names = tuple(str(t) for t in self.type_names)
        if len(set(type_names)) != len(type_names):
            raise ValueError(f"type_names must be distinct, got {list(type_names)}")
        types = np.asarray(self.types)
        if types.ndim != 1 or (types.size and not np.issubdtype(types.dtype, np.integer)):
            raise ValueError(f"types must be a 1-D integer array, got {types.dtype} with shape {types.shape}")
        n = len(types)
        types = types.astype(np.int64)
        if n and (types.min() < 0 or types.max() >= len(type_names)):
            raise ValueError(f"types must index type_names (0..{len(type_names) - 1}), got {types.min()}..{types.max()}")
        masses = np.asarray(self.masses, dtype=np.float64)
        if masses.shape != (n,):
            raise ValueError(f"masses must have shape ({n},) (one per particle), got {masses.shape}")
        if np.any(~np.isfinite(masses)) or np.any(masses <= 0):
            raise ValueError("every particle needs a positive, finite mass in amu (mass 0 freezes a particle in OpenMM)")
        names = tuple(str(x) for x in self.names) if len(self.names) else tuple(type_names[t] for t in types)
        if len(names) != n:
            raise ValueError(f"names has {len(names)} entries but there are {n} particles")
        mol = np.arange(n, dtype=np.int64) if self.molecules is None else np.asarray(self.molecules)
        if mol.shape != (n,):
            raise ValueError(f"molecules must have shape ({n},) (molecule index of each particle), got {mol.shape}")
        mol = mol.astype(np.int64)
        n_mol = int(mol.max()) + 1 if n else 0
        if n and (mol.min() < 0 or len(np.unique(mol)) != n_mol):
            raise ValueError(f"molecules must number the molecules 0..{n_mol - 1} without gaps")
        mol_names = tuple(str(x) for x in self.molecule_names) if len(self.molecule_names) else ("MOL",) * n_mol
        if len(mol_names) != n_mol:
            raise ValueError(f"molecule_names has {len(mol_names)} entries but there are {n_mol} molecules")
        bonds = np.asarray(self.bonds, dtype=np.int64).reshape(-1, 2)
        if bonds.size:
            if bonds.min() < 0 or bonds.max() >= n:
                raise ValueError(f"bonds must index particles 0..{n - 1}, got values {bonds.min()}..{bonds.max()}")
            if np.any(bonds[:, 0] == bonds[:, 1]):
                raise ValueError("bonds must join two different particles")
            if np.any(mol[bonds[:, 0]] != mol[bonds[:, 1]]):
                k = int(np.argmax(mol[bonds[:, 0]] != mol[bonds[:, 1]]))
                raise ValueError(f"bond {bonds[k].tolist()} joins two molecules; bonds must lie inside a molecule")
            bonds = np.unique(np.sort(bonds, axis=1), axis=0)
        imp = np.asarray(self.impropers, dtype=np.int64).reshape(-1, 4)
        if imp.size:
            if imp.min() < 0 or imp.max() >= n:
                raise ValueError(f"impropers must index particles 0..{n - 1}, got values {imp.min()}..{imp.max()}")
            for q in imp:
                if len(set(q.tolist())) != 4:
                    raise ValueError(f"improper {q.tolist()} must name four different particles")
                if len(set(mol[q].tolist())) != 1:
                    raise ValueError(f"improper {q.tolist()} spans molecules; impropers must lie inside a molecule")
        set_("impropers", _frozen(imp))
        set_("type_names", type_names)
        set_("types", _frozen(types))
        set_("masses", _frozen(masses))
        set_("names", names)
        set_("molecules", _frozen(mol))
        set_("molecule_names", mol_names)
        set_("bonds", _frozen(bonds))

    # ------------------------------------------------------------------ sizes and derived terms
    @property
    def n_particles(self) -> int:
        return len(self.types)

    n_beads = n_particles

    @property
    def n_types(self) -> int:
        return len(self.type_names)

    @property
    def n_molecules(self) -> int:
        return len(self.molecule_names)

    @cached_property
    def angles(self) -> np.ndarray:
        """np.ndarray, shape=(n_angles, 3), int64: from the bonds (:func:`angles_from_bonds`)."""
        return _frozen(angles_from_bonds(self.bonds))

    @cached_property
    def dihedrals(self) -> np.ndarray:
        """np.ndarray, shape=(n_dihedrals, 4), int64: from the bonds (:func:`dihedrals_from_bonds`)."""
        return _frozen(dihedrals_from_bonds(self.bonds))

    def terms(self, kind: str) -> np.ndarray:
        """The particle tuples of one bonded kind: ``"bonds"``, ``"angles"``, ``"dihedrals"`` or ``"impropers"``."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        return getattr(self, kind)

    def type_tuple(self, term) -> tuple:
        """Type names of a particle tuple, canonical (a tuple and its reverse share the key)."""
        return canonical(self.type_names[self.types[i]] for i in term)

    def masses_by_type(self, type_names: Optional[Sequence[str]] = None) -> np.ndarray:
        """Mean particle mass (amu) of each type in ``type_names`` (default: this topology's).

        Raises ValueError for a listed type that no particle has (its mass cannot be known).
        """
        names = list(self.type_names) if type_names is None else [str(t) for t in type_names]
        own = {t: i for i, t in enumerate(self.type_names)}
        out = np.empty(len(names))
        for k, name in enumerate(names):
            sel = self.types == own.get(name, -1)
            if not np.any(sel):
                raise ValueError(f"type {name!r} has no particles in the topology; cannot infer its mass")
            out[k] = self.masses[sel].mean()
        return out

    # ------------------------------------------------------------------ types in another name list
    def type_indices(self, type_names: Sequence[str], where: str = "the model") -> np.ndarray:
        """Each particle's type as an index into another list of type names (a model's, an artefact's).

        Raises ValueError naming the types that ``type_names`` lacks.
        """
        names = [str(t) for t in type_names]
        index = {t: i for i, t in enumerate(names)}
        used = sorted({self.type_names[t] for t in np.unique(self.types)})
        missing = [t for t in used if t not in index]
        if missing:
            raise ValueError(f"the topology has particle types {missing} that {where} does not know (its types: {names})")
        lookup = np.array([index.get(t, -1) for t in self.type_names], dtype=np.int64)
        return lookup[self.types]

    def with_type_names(self, type_names: Sequence[str], where: str = "the model") -> "Topology":
        """The same topology with types renumbered into ``type_names`` (which must hold every used type)."""
        return Topology(type_names, self.type_indices(type_names, where), self.masses, self.names, self.molecules,
                        self.molecule_names, self.bonds, self.impropers)

    def same_as(self, other: "Topology") -> bool:
        """True when both describe the same particles, types, masses, molecules and bonds."""
        return (
            isinstance(other, Topology)
            and self.type_names == other.type_names and self.names == other.names
            and self.molecule_names == other.molecule_names
            and np.array_equal(self.types, other.types) and np.allclose(self.masses, other.masses)
            and np.array_equal(self.molecules, other.molecules) and np.array_equal(self.bonds, other.bonds)
            and np.array_equal(self.impropers, other.impropers)
        )

    # ------------------------------------------------------------------ conversions
    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "units": {"mass": "amu"},
            "type_names": list(self.type_names),
            "types": self.types.tolist(),
            "names": list(self.names),
            "masses": self.masses.tolist(),
            "molecules": self.molecules.tolist(),
            "molecule_names": list(self.molecule_names),
            "bonds": self.bonds.tolist(),
            "impropers": self.impropers.tolist(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, d: dict, where: str = "topology") -> "Topology":
        """Inverse of :meth:`to_dict`; reads versions 1 and 2 and the ``system.json`` written by cgkd 0.1 CG MD runs."""
        from cgkd.io.formats import check_format

        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(d).__name__}")
        if "format" not in d and "bead_residue" in d:  # cgkd 0.1 system.json (no format tag)
            return cls(d["type_names"], d["types"], d["masses"], d.get("bead_names", ()), d["bead_residue"],
                       d.get("residue_names", ()), d.get("bonds", []))
        check_format(d.get("format"), d.get("format_version"), FORMAT, FORMAT_VERSION, where)
        return cls(d["type_names"], d["types"], d["masses"], d["names"], d["molecules"], d["molecule_names"], d["bonds"],
                   d.get("impropers", []))  # version 1 has no impropers

    @classmethod
    def from_json(cls, text: str, where: str = "topology") -> "Topology":
        return cls.from_dict(parse_json(text, where), where)

    def to_openmm(self, box=None):
        """An ``openmm.app.Topology``: one chain, one residue per molecule, one atom per particle.

        Particles have no element (their masses live here and in the System). ``box`` (3, 3) nm sets
        the periodic box vectors.
        """
        import openmm.app as app

        top = app.Topology()
        chain = top.addChain()
        residues = [top.addResidue(n, chain) for n in self.molecule_names]
        atoms = [top.addAtom(self.names[i], None, residues[self.molecules[i]]) for i in range(self.n_particles)]
        for i, j in self.bonds:
            top.addBond(atoms[i], atoms[j])
        if box is not None:
            box = np.asarray(box, dtype=np.float64)
            if box.shape != (3, 3):
                raise ValueError(f"box must have shape (3, 3) nm, got {box.shape}")
            top.setPeriodicBoxVectors(box.tolist())
        return top

    def to_mdtraj(self):
        """An ``mdtraj.Topology`` (for trajectories and analysis)."""
        import mdtraj

        return mdtraj.Topology.from_openmm(self.to_openmm())

    @classmethod
    def from_openmm(cls, topology, type_names: Sequence[str], types=None, type_map: Optional[dict] = None,
                    masses=None) -> "Topology":
        """A topology from an ``openmm.app.Topology`` whose atoms are particles.

        Parameters
        ----------
        topology : openmm.app.Topology
        type_names : sequence of str
        types : array-like, shape=(N,), int, optional
            Explicit type indices into ``type_names``; wins over ``type_map``.
        type_map : dict, optional
            ``{"RES:NAME" or "NAME": type name}`` (residue-qualified key first). Without ``types`` and
            ``type_map`` each atom's name must be a type name, or else its element's symbol (element-typed
            atomistic models).
        masses : array-like, shape=(N,), amu, optional
            Default: each particle's element mass; a particle without element then raises (CG beads
            need explicit masses).

        Molecules are the connected pieces of the bond graph, with the atoms of one residue kept
        together; each is named after its first residue.
        """
        atoms = list(topology.atoms())
        n = len(atoms)
        type_names = [str(t) for t in type_names]
        if types is not None:
            types = np.asarray(types)
            if types.shape != (n,) or (n and not np.issubdtype(types.dtype, np.integer)):
                raise ValueError(f"types must be an integer array of shape ({n},), got {types.dtype} {types.shape}")
        else:
            index = {t: i for i, t in enumerate(type_names)}
            type_map = dict(type_map or {})
            types = np.empty(n, dtype=np.int64)
            for a in atoms:
                name = type_map.get(f"{a.residue.name}:{a.name}", type_map.get(a.name, a.name))
                if name not in index and a.element is not None and a.element.symbol in index:
                    name = a.element.symbol  # an element-typed (atomistic) model
                if name not in index:
                    raise ValueError(
                        f"particle {a.index} ({a.residue.name}:{a.name}) maps to type {name!r}, which is not one of "
                        f"the types {type_names}; pass types= or type_map="
                    )
                types[a.index] = index[name]
        if masses is None:
            missing = [a.index for a in atoms if a.element is None]
            if missing:
                raise ValueError(f"particles {missing[:5]} have no element, so masses= must be given (amu)")
            masses = [a.element.mass._value for a in atoms]
        bonds = [(b[0].index, b[1].index) for b in topology.bonds()]
        head = {r.index: a.index for r in topology.residues() for a in [next(iter(r.atoms()), None)] if a is not None}
        links = bonds + [(a.index, head[a.residue.index]) for a in atoms]
        molecules = connected_pieces(n, links)
        first = {}
        for a in atoms:
            first.setdefault(int(molecules[a.index]), a.residue.name)
        return cls(type_names, types, masses, [a.name for a in atoms], molecules,
                   [first[m] for m in range(len(first))], bonds)


class TopologyView:
    """Read-through properties for a data class with a ``topology`` attribute (``CGData``, ``Frames``)."""

    topology: Topology

    @property
    def types(self) -> np.ndarray:
        """np.ndarray, shape=(n_particles,), int64: the topology's type index of each particle."""
        return self.topology.types

    @property
    def type_names(self) -> list:
        return list(self.topology.type_names)

    @property
    def masses(self) -> np.ndarray:
        """np.ndarray, shape=(n_particles,), float64, amu."""
        return self.topology.masses

    @property
    def bonds(self) -> np.ndarray:
        """np.ndarray, shape=(n_bonds, 2), int64."""
        return self.topology.bonds


__all__ = ["FORMAT", "TopologyView", "FORMAT_VERSION", "KINDS", "Topology", "angles_from_bonds", "canonical", "dihedrals_from_bonds"]
