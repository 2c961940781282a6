"""The coarse-grained dataset file (format ``cgkd-cg``, see docs/formats.md).

One HDF5 file holds the mapped trajectory of one CG system: positions, forces and box per frame,
and per bead the type, name, mass and molecule (residue). Knowledge-distillation labels live in the
group ``labels`` of the same file (written by ``cgkd.kd.labels``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from cgkd import keys
from cgkd.io.atomic import atomic_path

FORMAT = "cgkd-cg"
FORMAT_VERSION = 1


@dataclass
class CGData:
    """A mapped (coarse-grained) trajectory.

    Attributes
    ----------
    positions : np.ndarray, shape=(n_frames, n_beads, 3), float32, nm
    forces : np.ndarray, shape=(n_frames, n_beads, 3), float32, kJ/mol/nm
        Mapped forces (the noisy CG force labels).
    box : np.ndarray or None, shape=(n_frames, 3, 3), float32, nm
        Box vectors as rows; None for a non-periodic system.
    types : np.ndarray, shape=(n_beads,), int64
        Index of each bead's type in ``type_names``.
    type_names : list of str
    bead_names : list of str, length n_beads
    masses : np.ndarray, shape=(n_beads,), float64, amu
    bead_residue : np.ndarray, shape=(n_beads,), int64
        Molecule (residue) index of each bead.
    residue_names : list of str, length n_residues
    bonds : np.ndarray, shape=(n_bonds, 2), int64
        CG bonds (bead index pairs inside a molecule).
    temperature : float, K
    time : np.ndarray or None, shape=(n_frames,), float64, ps
    attrs : dict
        Free-form provenance (mapping name, force map, source file, ...), JSON-serialisable.
    """

    positions: np.ndarray
    forces: np.ndarray
    box: Optional[np.ndarray]
    types: np.ndarray
    type_names: list
    bead_names: list
    masses: np.ndarray
    bead_residue: np.ndarray
    residue_names: list
    bonds: np.ndarray
    temperature: float
    time: Optional[np.ndarray] = None
    attrs: dict = field(default_factory=dict)

    def __post_init__(self):
        self.positions = np.asarray(self.positions, dtype=np.float32)
        self.forces = np.asarray(self.forces, dtype=np.float32)
        if self.positions.ndim != 3 or self.positions.shape[2] != 3:
            raise ValueError(f"positions must have shape (n_frames, n_beads, 3), got {self.positions.shape}")
        if self.forces.shape != self.positions.shape:
            raise ValueError(f"forces has shape {self.forces.shape} but positions has {self.positions.shape}")
        f, b, _ = self.positions.shape
        if self.box is not None:
            self.box = np.asarray(self.box, dtype=np.float32)
            if self.box.shape != (f, 3, 3):
                raise ValueError(f"box must have shape ({f}, 3, 3), got {self.box.shape}")
        self.types = np.asarray(self.types, dtype=np.int64)
        self.masses = np.asarray(self.masses, dtype=np.float64)
        self.bead_residue = np.asarray(self.bead_residue, dtype=np.int64)
        self.bonds = np.asarray(self.bonds, dtype=np.int64).reshape(-1, 2)
        for name, arr in (("types", self.types), ("masses", self.masses), ("bead_residue", self.bead_residue)):
            if arr.shape != (b,):
                raise ValueError(f"{name} must have shape ({b},), got {arr.shape}")
        if len(self.bead_names) != b:
            raise ValueError(f"bead_names has {len(self.bead_names)} entries but there are {b} beads")
        if b and (self.types.min() < 0 or self.types.max() >= len(self.type_names)):
            raise ValueError(f"types must index type_names (0..{len(self.type_names) - 1})")
        if np.any(self.masses <= 0):
            raise ValueError("every bead needs a positive mass (mass 0 freezes a particle in OpenMM)")
        if self.time is not None:
            self.time = np.asarray(self.time, dtype=np.float64)

    @property
    def n_frames(self) -> int:
        return self.positions.shape[0]

    @property
    def n_beads(self) -> int:
        return self.positions.shape[1]

    @property
    def periodic(self) -> bool:
        return self.box is not None

    def subset(self, frames) -> "CGData":
        """A copy with only ``frames`` (index array or slice)."""
        return CGData(
            positions=self.positions[frames],
            forces=self.forces[frames],
            box=None if self.box is None else self.box[frames],
            types=self.types,
            type_names=list(self.type_names),
            bead_names=list(self.bead_names),
            masses=self.masses,
            bead_residue=self.bead_residue,
            residue_names=list(self.residue_names),
            bonds=self.bonds,
            temperature=self.temperature,
            time=None if self.time is None else self.time[frames],
            attrs=dict(self.attrs),
        )

    def topology(self):
        """The CG system as an ``openmm.app.Topology`` (one residue per molecule, one chain)."""
        import openmm.app as app

        top = app.Topology()
        chain = top.addChain()
        residues = [top.addResidue(n, chain) for n in self.residue_names]
        atoms = [top.addAtom(self.bead_names[i], None, residues[self.bead_residue[i]]) for i in range(self.n_beads)]
        for i, j in self.bonds:
            top.addBond(atoms[i], atoms[j])
        if self.box is not None:
            top.setPeriodicBoxVectors(self.box[0].astype(float).tolist())
        return top

    def mdtraj_topology(self):
        """The CG system as an ``mdtraj.Topology`` (for trajectories and analysis)."""
        import mdtraj

        return mdtraj.Topology.from_openmm(self.topology())


def write_cg(path: str | Path, data: CGData) -> None:
    """Write ``data`` to ``path`` atomically (an existing file is replaced, its labels dropped)."""
    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.attrs["format"] = FORMAT
            h5.attrs["format_version"] = FORMAT_VERSION
            h5.attrs["units"] = json.dumps({"length": "nm", "force": "kJ/mol/nm", "mass": "amu", "time": "ps"})
            h5.attrs["temperature"] = float(data.temperature)
            h5.attrs["type_names"] = json.dumps(list(data.type_names))
            h5.attrs["bead_names"] = json.dumps(list(data.bead_names))
            h5.attrs["residue_names"] = json.dumps(list(data.residue_names))
            h5.attrs["attrs"] = json.dumps(data.attrs)
            chunk = (min(max(data.n_frames, 1), 64), data.n_beads, 3)
            h5.create_dataset(keys.POSITIONS, data=data.positions, chunks=chunk if data.n_frames else None)
            h5.create_dataset(keys.FORCES, data=data.forces, chunks=chunk if data.n_frames else None)
            if data.box is not None:
                h5.create_dataset(keys.BOX, data=data.box)
            if data.time is not None:
                h5.create_dataset(keys.TIME, data=data.time)
            h5.create_dataset(keys.TYPES, data=data.types)
            h5.create_dataset(keys.MASSES, data=data.masses)
            h5.create_dataset("bead_residue", data=data.bead_residue)
            h5.create_dataset("bonds", data=data.bonds)


def read_cg(path: str | Path, frames=None) -> CGData:
    """Read a CG dataset; ``frames`` (slice or sorted index array) selects frames."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CG dataset {str(path)!r} does not exist")
    sel = slice(None) if frames is None else frames
    with h5py.File(path, "r") as h5:
        if h5.attrs.get("format") != FORMAT:
            raise ValueError(f"{path} is not a cgkd CG dataset (format attribute {h5.attrs.get('format')!r})")
        version = int(h5.attrs["format_version"])
        if version > FORMAT_VERSION:
            raise ValueError(f"{path} has format version {version}; this cgkd reads up to {FORMAT_VERSION}")
        return CGData(
            positions=h5[keys.POSITIONS][sel],
            forces=h5[keys.FORCES][sel],
            box=h5[keys.BOX][sel] if keys.BOX in h5 else None,
            types=h5[keys.TYPES][()],
            type_names=json.loads(h5.attrs["type_names"]),
            bead_names=json.loads(h5.attrs["bead_names"]),
            masses=h5[keys.MASSES][()],
            bead_residue=h5["bead_residue"][()],
            residue_names=json.loads(h5.attrs["residue_names"]),
            bonds=h5["bonds"][()],
            temperature=float(h5.attrs["temperature"]),
            time=h5[keys.TIME][sel] if keys.TIME in h5 else None,
            attrs=json.loads(h5.attrs["attrs"]),
        )
