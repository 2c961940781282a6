"""Mappings read off an ``openmm.app.Topology``: from atom groups, one bead per residue, a system spec, or automatic grouping.

Each function takes the class to build (``Mapping``) as its first argument, so this module never
imports ``cgkd.mapping.mapping`` (which binds them as classmethods: ``Mapping.from_spec(...)``).
Molecules are the connected pieces of the atom bond graph, with all atoms of one residue kept
together (:func:`cgkd.topology.connected_pieces`); a bead never spans two molecules.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from cgkd import units
from cgkd.topology import connected_pieces


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
    weights: Optional[Sequence[Optional[Sequence[float]]]] = None,
) -> "Mapping":
    """A mapping with one bead per group of atom indices.

    Atoms in no group are left out of the CG model: a slice map (``groups=[[ca] for ca in calphas]``)
    or a solute without its solvent.

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
    weights : sequence of (sequence of float or None), optional
        Explicit position weights per group (same order as the group's atoms), normalised to 1;
        ``None`` for a group uses ``center``.
    """
    info = topology_info(topology, masses)
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
    default = default_names(bead_mol, info["molecule_names"], groups)
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
        bead_molecule=bead_mol,
        molecule_names=info["molecule_names"],
        atom_masses=info["masses"],
        atom_bonds=info["bonds"],
        molecule_atoms=info["molecule_atoms"],
        periodic=info["periodic"],
        center=center,
        name=name,
        allow_overlap=allow_overlap,
        type_names=type_names,
        bead_weights=weights,
    )

def one_bead_per_residue(cls, topology, center: str = "mass", masses=None) -> "Mapping":
    """One bead per residue, named and typed by the residue name."""
    groups = [[a.index for a in r.atoms()] for r in topology.residues()]
    rnames = [r.name for r in topology.residues()]
    return from_groups(cls, topology, groups, types=rnames, names=rnames, center=center, masses=masses, name="residue")

def from_spec(cls, topology, mapping_spec, masses=None, name: str = "") -> "Mapping":
    """A mapping from a ``cgkd.io.spec.MappingSpec`` (per residue name, a list of ``BeadSpec``).

    Type names come in the order they first appear in the spec, so two systems mapped with the
    same spec share type indices. ``atoms: ["*"]`` means the whole residue. Residues listed in
    ``mapping_spec.unmapped`` (solvent, ions) are left out; atoms of a mapped residue that no bead
    names are left out too (slice maps). A residue that is neither mapped nor left out is refused.
    """
    groups, types, names, weights = [], [], [], []
    type_names = list(dict.fromkeys(b.type for beads in mapping_spec.residues.values() for b in beads))
    left_out = set(mapping_spec.unmapped)
    for res in topology.residues():
        if res.name in left_out:
            continue
        if res.name not in mapping_spec.residues:
            raise ValueError(
                f"residue {res.name!r} (index {res.index}) has no beads in the mapping; "
                f"the mapping covers {sorted(mapping_spec.residues)} and leaves out {sorted(left_out)} "
                "(add it to 'unmapped' to leave it out of the CG model)"
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
            weights.append(bead.weights)
    if not groups:
        raise ValueError(f"the mapping gives no beads for this topology (residues: "
                         f"{sorted({r.name for r in topology.residues()})})")
    m = from_groups(
        cls, topology, groups, types=types, names=names, center=mapping_spec.center, masses=masses,
        name=name or "spec", type_names=type_names, weights=weights,
    )
    m.named_dihedrals = named_quadruples(m, mapping_spec.dihedrals)
    imps = named_quadruples(m, {f"impropers[{k}]": q for k, q in enumerate(mapping_spec.impropers)})
    m.impropers = (np.concatenate(list(imps.values())) if imps else np.zeros((0, 4), dtype=np.int64))
    return m


def named_quadruples(m, dihedrals: Dict[str, Sequence[str]]) -> Dict[str, np.ndarray]:
    """Bead quadruples of each named dihedral (bead names, looked up molecule by molecule)."""
    out = {}
    for key, beads in dihedrals.items():
        quads = []
        for mol in np.unique(m.bead_molecule):
            idx = np.flatnonzero(m.bead_molecule == mol)
            by_name = {m.bead_names[b]: int(b) for b in idx}
            if all(b in by_name for b in beads):
                quads.append([by_name[b] for b in beads])
        if not quads:
            raise ValueError(f"dihedral {key!r}: no molecule has all of the beads {list(beads)}; bead names are "
                             f"{sorted(set(m.bead_names))}")
        out[str(key)] = np.asarray(quads, dtype=np.int64)
    return out

def auto(cls, topology, heavy_atoms_per_bead: int = 4, center: str = "mass", masses=None) -> "Mapping":
    """Split each molecule into connected beads of about ``heavy_atoms_per_bead`` heavy atoms.

    Hydrogens go with their heavy atom. See :func:`cgkd.mapping.grouping.auto_groups` and
    docs/mapping.md for the algorithm.
    """
    from cgkd.mapping.grouping import auto_groups

    groups = auto_groups(topology, heavy_atoms_per_bead)
    return from_groups(cls, topology, groups, center=center, masses=masses, name=f"auto{heavy_atoms_per_bead}")




def default_names(bead_mol: List[int], molecule_names: List[str], groups) -> List[str]:
    counts: Dict[int, int] = {}
    for m in bead_mol:
        counts[m] = counts.get(m, 0) + 1
    seen: Dict[int, int] = {}
    out = []
    for m in bead_mol:
        k = seen.get(m, 0)
        seen[m] = k + 1
        out.append(molecule_names[m] if counts[m] == 1 else f"{molecule_names[m]}{k}")
    return out


def topology_info(topology, masses) -> dict:
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
    head = {r.index: a.index for r in topology.residues() for a in [next(iter(r.atoms()), None)] if a is not None}
    piece = connected_pieces(n, bonds.tolist() + [(a.index, head[a.residue.index]) for a in atoms])
    molecules = [np.flatnonzero(piece == m).tolist() for m in range(int(piece.max()) + 1 if n else 0)]
    res_of = [a.residue.name for a in atoms]
    return dict(
        n_atoms=n,
        masses=masses,
        bonds=bonds,
        molecule_atoms=molecules,
        molecule_names=[res_of[m[0]] for m in molecules],
        periodic=topology.getPeriodicBoxVectors() is not None,
    )
