"""Input validation for mapping: every error names the argument, what was expected and what was received."""

from __future__ import annotations

from typing import Optional

import numpy as np

from cgkd.arrays import check_array, check_box as _valid_box

#: Median bond length (nm) above which positions are taken to be in Angstrom. Bonds are 0.09-0.2 nm.
MAX_MEDIAN_BOND_NM = 0.4


def check_mapping(m) -> None:
    """Consistency of a freshly built ``Mapping`` (partition of atoms, masses, molecules)."""
    n = m.n_atoms
    if m.atom_masses.shape != (n,):
        raise ValueError(f"atom_masses must have shape ({n},), got {m.atom_masses.shape}")
    if np.any(~np.isfinite(m.atom_masses)) or np.any(m.atom_masses < 0):
        raise ValueError("atom_masses must be finite and >= 0 amu")
    nb = len(m.bead_atoms)
    for label, seq in (("bead_names", m.bead_names), ("bead_types", m.bead_types), ("bead_molecule", m.bead_molecule)):
        if len(seq) != nb:
            raise ValueError(f"{label} has {len(seq)} entries but there are {nb} beads")
    count = np.zeros(n, dtype=np.int64)
    for b, atoms in enumerate(m.bead_atoms):
        if atoms.size == 0:
            raise ValueError(f"bead {b} ({m.bead_names[b]!r}) has no atoms")
        if atoms.min() < 0 or atoms.max() >= n:
            raise ValueError(f"bead {b} ({m.bead_names[b]!r}) has atom indices outside 0..{n - 1}: {atoms.tolist()}")
        if len(np.unique(atoms)) != len(atoms):
            raise ValueError(f"bead {b} ({m.bead_names[b]!r}) lists an atom twice: {atoms.tolist()}")
        count[atoms] += 1
    if nb == 0:
        raise ValueError("a mapping needs at least one bead; bead_atoms is empty")
    shared = np.flatnonzero(count > 1)
    if shared.size and not m.allow_overlap:
        raise ValueError(
            f"{shared.size} atom(s) are in more than one bead (first: {shared[:10].tolist()}); "
            "pass allow_overlap=True if that is intended"
        )
    masses = np.asarray([m.atom_masses[a].sum() for a in m.bead_atoms])
    light = np.flatnonzero(masses <= 0)
    if light.size:
        raise ValueError(f"bead(s) {light[:10].tolist()} have mass 0 amu; every bead needs a positive mass")
    mol = np.full(n, -1, dtype=np.int64)
    for k, atoms in enumerate(m.molecule_atoms):
        if np.any(mol[atoms] >= 0):
            raise ValueError(f"molecule_atoms must partition the atoms; molecule {k} repeats atoms")
        mol[atoms] = k
    if np.any(mol < 0):
        raise ValueError(f"molecule_atoms must cover all {n} atoms; missing {np.flatnonzero(mol < 0)[:10].tolist()}")
    if len(m.molecule_names) != len(m.molecule_atoms):
        raise ValueError(f"molecule_names has {len(m.molecule_names)} entries but there are {len(m.molecule_atoms)} molecules")
    for b, atoms in enumerate(m.bead_atoms):
        mols = np.unique(mol[atoms])
        if len(mols) != 1 or mols[0] != m.bead_molecule[b]:
            raise ValueError(
                f"bead {b} ({m.bead_names[b]!r}) must lie inside molecule {m.bead_molecule[b]}, but its atoms are "
                f"in molecules {mols.tolist()}"
            )
    if m.atom_bonds.size and (m.atom_bonds.min() < 0 or m.atom_bonds.max() >= n):
        raise ValueError(f"atom_bonds must index atoms 0..{n - 1}")


def check_weights(weights, n: int, bead: int) -> np.ndarray:
    """Position weights of one bead: ``n`` finite numbers with a positive sum, returned normalised (float64)."""
    w = check_array(weights, f"bead_weights[{bead}]", shape=(n,), dtype=np.float64)
    total = float(w.sum())
    if not total > 0:
        raise ValueError(f"bead_weights[{bead}] must sum to a positive number (they are normalised to 1), got "
                         f"{w.tolist()} with sum {total}")
    return w / total


def check_xyz(xyz, n_atoms: int, name: str) -> np.ndarray:
    """(F, A, 3) finite array with A == n_atoms."""
    xyz = np.asarray(xyz)
    if xyz.ndim == 3 and xyz.shape[2] == 3 and xyz.shape[1] != n_atoms:
        raise ValueError(f"{name} has {xyz.shape[1]} atoms but the mapping (topology) has {n_atoms}")
    return check_array(xyz, name, shape=("n_frames", n_atoms, 3))


def check_forces(forces, n_atoms: int) -> np.ndarray:
    """(F, A, 3) finite force array with A == n_atoms."""
    return check_xyz(forces, n_atoms, "forces")


def check_box(box, n_frames: int, periodic: bool) -> Optional[np.ndarray]:
    """(F, 3, 3) box with positive volume, or None for a non-periodic mapping."""
    if box is None:
        if periodic:
            raise ValueError(
                "box is None but the mapping is periodic (its topology has box vectors); pass box with shape "
                f"({n_frames}, 3, 3) nm so molecules split by the boundary can be made whole"
            )
        return None
    return _valid_box(box, "box", n_frames=n_frames)


def check_not_angstrom(whole: np.ndarray, bonds: np.ndarray) -> None:
    """Refuse positions whose median bond length (first frame) is far above chemical bond lengths in nm."""
    if bonds.size == 0 or whole.shape[0] == 0:
        return
    d = np.linalg.norm(whole[0, bonds[:, 0]] - whole[0, bonds[:, 1]], axis=-1)
    med = float(np.median(d))
    if med > MAX_MEDIAN_BOND_NM:
        raise ValueError(
            f"positions look like Angstrom, not nm: the median bond length is {med:.3f} (expected about 0.1-0.2 nm); "
            "multiply by cgkd.units.ANGSTROM_TO_NM"
        )


def check_constraints(constraints, n_atoms: int) -> np.ndarray:
    """(C, 2) int64 atom pairs inside 0..n_atoms-1 (None -> empty)."""
    if constraints is None:
        return np.zeros((0, 2), dtype=np.int64)
    c = np.asarray(constraints)
    if c.size == 0:
        return np.zeros((0, 2), dtype=np.int64)
    if c.ndim != 2 or c.shape[1] != 2:
        raise ValueError(f"constraints must have shape (n_constraints, 2), got {c.shape}")
    c = c.astype(np.int64)
    if c.min() < 0 or c.max() >= n_atoms:
        raise ValueError(f"constraints must index atoms 0..{n_atoms - 1}, got values {c.min()}..{c.max()}")
    if np.any(c[:, 0] == c[:, 1]):
        raise ValueError("constraints must join two different atoms")
    return c
