"""Atomistic datasets of varying size and composition, and their files (extended XYZ, ASE databases).

An :class:`AtomsData` holds S structures of any size side by side, flat: the atoms of structure ``s`` are
``offsets[s]:offsets[s + 1]`` of ``numbers``, ``positions`` and ``forces``. Periodic and non-periodic
structures may share one set (a non-periodic structure has an all-zero cell).

Units are cgkd's inside (nm, kJ/mol, kJ/mol/nm); files are read and written through ASE in ASE's units (Angstrom,
eV, eV/Angstrom), converted here with factors derived from ``openmm.unit`` (:mod:`cgkd.units`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from cgkd import units
from cgkd.arrays import check_array
from cgkd.io.atomic import atomic_path

#: eV/Angstrom -> kJ/mol/nm
EV_PER_A_TO_KJ_PER_MOL_NM = units.EV_TO_KJ_PER_MOL / units.ANGSTROM_TO_NM
#: File suffixes read as ASE databases; anything else goes through ``ase.io`` (extended XYZ for ``.xyz``).
DB_SUFFIXES = (".db", ".json")


@dataclass
class AtomsData:
    """Labelled (or unlabelled) atomistic structures.

    Attributes
    ----------
    numbers : np.ndarray, shape=(n_atoms,), int64
        Atomic numbers of every structure's atoms, structure after structure.
    positions : np.ndarray, shape=(n_atoms, 3), float64, nm
    offsets : np.ndarray, shape=(n_structures + 1,), int64
        Structure ``s`` holds atoms ``offsets[s]:offsets[s + 1]``; ``offsets[0] == 0``.
    cells : np.ndarray, shape=(n_structures, 3, 3), float64, nm
        Cell vectors as rows; all zero for a non-periodic structure.
    energy : np.ndarray or None, shape=(n_structures,), float64, kJ/mol
    forces : np.ndarray or None, shape=(n_atoms, 3), float64, kJ/mol/nm
    info : list of dict
        Per-structure provenance (labeler, temperature, strain, source file, ...), JSON-serialisable.
    """

    numbers: np.ndarray
    positions: np.ndarray
    offsets: np.ndarray
    cells: np.ndarray
    energy: Optional[np.ndarray] = None
    forces: Optional[np.ndarray] = None
    info: List[dict] = field(default_factory=list)

    def __post_init__(self):
        self.offsets = check_array(self.offsets, "offsets", shape=(None,), integer=True, min=0)
        if self.offsets.size < 1 or self.offsets[0] != 0 or np.any(np.diff(self.offsets) < 1):
            raise ValueError(f"offsets must start at 0 and increase by at least one atom per structure, got "
                             f"{self.offsets[:6].tolist()}...")
        n_atoms, n_struct = int(self.offsets[-1]), len(self.offsets) - 1
        self.numbers = check_array(self.numbers, "numbers", shape=(n_atoms,), integer=True, min=1, max=118)
        self.positions = check_array(self.positions, "positions", shape=(n_atoms, 3), dtype=np.float64, unit="nm")
        self.cells = check_array(self.cells, "cells", shape=(n_struct, 3, 3), dtype=np.float64, unit="nm")
        if self.energy is not None:
            self.energy = check_array(self.energy, "energy", shape=(n_struct,), dtype=np.float64, unit="kJ/mol")
        if self.forces is not None:
            self.forces = check_array(self.forces, "forces", shape=(n_atoms, 3), dtype=np.float64, unit="kJ/mol/nm")
        self.info = [dict(i) for i in self.info] if self.info else [{} for _ in range(n_struct)]
        if len(self.info) != n_struct:
            raise ValueError(f"info must hold one dict per structure ({n_struct}), got {len(self.info)}")

    @property
    def n_structures(self) -> int:
        return len(self.offsets) - 1

    @property
    def n_atoms(self) -> np.ndarray:
        """Atoms per structure, shape (n_structures,), int64."""
        return np.diff(self.offsets)

    @property
    def periodic(self) -> np.ndarray:
        """Whether each structure has a cell, shape (n_structures,), bool."""
        return np.any(self.cells != 0.0, axis=(1, 2))

    @property
    def elements(self) -> List[str]:
        """Element symbols present, ordered by atomic number."""
        from ase.data import chemical_symbols

        return [chemical_symbols[z] for z in np.unique(self.numbers)]

    def composition(self, elements: Optional[Sequence[str]] = None) -> np.ndarray:
        """Atom counts per structure and element, shape (n_structures, n_elements), float64."""
        from ase.data import atomic_numbers

        elements = list(self.elements if elements is None else elements)
        z = np.array([atomic_numbers[e] for e in elements])
        out = np.zeros((self.n_structures, len(z)))
        struct = np.repeat(np.arange(self.n_structures), self.n_atoms)
        for k, zk in enumerate(z):
            out[:, k] = np.bincount(struct, weights=(self.numbers == zk).astype(float), minlength=self.n_structures)
        return out

    def select(self, indices: Sequence[int]) -> "AtomsData":
        """The structures ``indices`` (in that order) as a new set."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_structures):
            raise ValueError(f"indices must lie in 0..{self.n_structures - 1}, got {idx.min()}..{idx.max()}")
        atoms = np.concatenate([np.arange(self.offsets[s], self.offsets[s + 1]) for s in idx]) if idx.size else \
            np.zeros(0, dtype=np.int64)
        return AtomsData(numbers=self.numbers[atoms], positions=self.positions[atoms],
                         offsets=np.concatenate([[0], np.cumsum(self.n_atoms[idx])]), cells=self.cells[idx],
                         energy=None if self.energy is None else self.energy[idx],
                         forces=None if self.forces is None else self.forces[atoms],
                         info=[self.info[s] for s in idx])

    def to_ase(self, index: int):
        """Structure ``index`` as an ``ase.Atoms`` (Angstrom), with its labels as a single-point calculator."""
        import ase
        from ase.calculators.singlepoint import SinglePointCalculator

        a, b = self.offsets[index], self.offsets[index + 1]
        periodic = bool(self.periodic[index])
        atoms = ase.Atoms(numbers=self.numbers[a:b], positions=self.positions[a:b] / units.ANGSTROM_TO_NM,
                          cell=self.cells[index] / units.ANGSTROM_TO_NM if periodic else None, pbc=periodic)
        atoms.info.update({k: v for k, v in self.info[index].items() if isinstance(v, (int, float, str, bool))})
        if self.energy is not None or self.forces is not None:
            atoms.calc = SinglePointCalculator(
                atoms,
                energy=None if self.energy is None else float(self.energy[index]) / units.EV_TO_KJ_PER_MOL,
                forces=None if self.forces is None else self.forces[a:b] / EV_PER_A_TO_KJ_PER_MOL_NM)
        return atoms


def _plain_info(info: dict) -> dict:
    """The entries of an ``atoms.info`` that are plain numbers, strings or booleans (numpy scalars unwrapped)."""
    out = {}
    for key, v in info.items():
        if isinstance(v, np.generic):
            v = v.item()
        if isinstance(v, (int, float, str, bool)):
            out[str(key)] = v
    return out


def from_ase(structures, labels: bool = True) -> AtomsData:
    """An :class:`AtomsData` from ``ase.Atoms`` objects (their calculator's energy and forces when ``labels``).

    A structure is periodic when all three of its ``pbc`` flags are set; mixed periodicity is refused. Energies and
    forces are taken only if every structure has them (``atoms.get_potential_energy()`` of an attached
    calculator, e.g. the single-point one ASE attaches when it reads a labelled file).
    """
    structures = list(structures)
    if not structures:
        raise ValueError("structures must hold at least one ase.Atoms, got none")
    numbers, positions, cells, energy, forces, info, counts = [], [], [], [], [], [], []
    have_labels = labels and all(a.calc is not None for a in structures)
    for k, a in enumerate(structures):
        pbc = np.asarray(a.pbc, dtype=bool)
        if pbc.any() and not pbc.all():
            raise ValueError(f"structures[{k}] is periodic along {pbc.tolist()} only; cgkd handles fully periodic "
                             "or non-periodic structures")
        numbers.append(np.asarray(a.numbers, dtype=np.int64))
        positions.append(np.asarray(a.positions, dtype=np.float64) * units.ANGSTROM_TO_NM)
        cells.append(np.asarray(a.cell.array, dtype=np.float64) * units.ANGSTROM_TO_NM if pbc.all() else np.zeros((3, 3)))
        counts.append(len(a))
        info.append(_plain_info(a.info))
        if have_labels:
            energy.append(float(a.get_potential_energy()) * units.EV_TO_KJ_PER_MOL)
            forces.append(np.asarray(a.get_forces(), dtype=np.float64) * EV_PER_A_TO_KJ_PER_MOL_NM)
    return AtomsData(numbers=np.concatenate(numbers), positions=np.concatenate(positions),
                     offsets=np.concatenate([[0], np.cumsum(counts)]), cells=np.stack(cells),
                     energy=np.asarray(energy) if have_labels else None,
                     forces=np.concatenate(forces) if have_labels else None, info=info)


def concatenate(sets: Sequence[AtomsData]) -> AtomsData:
    """One set holding the structures of ``sets`` in order (labels kept only if every set has them)."""
    sets = list(sets)
    if not sets:
        raise ValueError("sets must hold at least one AtomsData, got none")
    offsets = [np.zeros(1, dtype=np.int64)]
    total = 0
    for s in sets:
        offsets.append(s.offsets[1:] + total)
        total += int(s.offsets[-1])
    energy = np.concatenate([s.energy for s in sets]) if all(s.energy is not None for s in sets) else None
    forces = np.concatenate([s.forces for s in sets]) if all(s.forces is not None for s in sets) else None
    return AtomsData(numbers=np.concatenate([s.numbers for s in sets]),
                     positions=np.concatenate([s.positions for s in sets]), offsets=np.concatenate(offsets),
                     cells=np.concatenate([s.cells for s in sets]), energy=energy, forces=forces,
                     info=[i for s in sets for i in s.info])


def read_atoms(path, index: str = ":") -> AtomsData:
    """Read structures (with labels where present) from an extended XYZ file or an ASE database.

    Parameters
    ----------
    path : str or Path
        ``.db``/``.json``: an ASE database; anything else is read by ``ase.io.read`` (extended XYZ for
        ``.xyz``/``.extxyz``), in ASE's units (Angstrom, eV, eV/Angstrom).
    index : str
        ASE's index selection, default all structures.
    """
    import ase.io

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"atoms file {str(path)!r} does not exist")
    try:
        if path.suffix in DB_SUFFIXES:
            import ase.db

            with ase.db.connect(str(path)) as db:
                structures = []
                for row in db.select():
                    atoms = row.toatoms()
                    atoms.info = dict(row.key_value_pairs)
                    structures.append(atoms)
        else:
            structures = ase.io.read(str(path), index=index)
    except Exception as exc:  # ASE raises many exception types for damaged or foreign files
        raise ValueError(f"{path} is not a structure file ASE can read ({type(exc).__name__}: {exc})") from None
    data = from_ase(structures if isinstance(structures, list) else [structures])
    for item in data.info:
        item.setdefault("source", str(path))
    return data


def write_atoms(path, data: AtomsData) -> None:
    """Write ``data`` as extended XYZ (or an ASE database for ``.db``/``.json``) in ASE's units, atomically.

    Provenance (``info``) goes in each structure's comment line (extended XYZ) or key-value pairs (database);
    values that are not plain numbers, strings or booleans are written as JSON strings.
    """
    import ase.io

    if not isinstance(data, AtomsData):
        raise ValueError(f"data must be an AtomsData, got {type(data).__name__}")
    path = Path(path)
    structures = []
    for s in range(data.n_structures):
        atoms = data.to_ase(s)
        atoms.info = {k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v))
                      for k, v in data.info[s].items()}
        structures.append(atoms)
    with atomic_path(path, suffix=path.suffix) as tmp:
        if path.suffix in DB_SUFFIXES:
            import ase.db

            tmp.unlink()  # ASE refuses to open an existing empty file as a database
            with ase.db.connect(str(tmp), type="json" if path.suffix == ".json" else "db") as db:
                for atoms in structures:
                    db.write(atoms, **{k: v for k, v in atoms.info.items() if k.isidentifier()})
        else:
            ase.io.write(str(tmp), structures, format="extxyz")


__all__ = ["AtomsData", "DB_SUFFIXES", "EV_PER_A_TO_KJ_PER_MOL_NM", "concatenate", "from_ase", "read_atoms",
           "write_atoms"]
