"""The all-atom trajectory file (format ``cgkd-aa``, see docs/formats.md).

One HDF5 file holds an all-atom trajectory with total per-atom forces: positions, forces, box,
potential energy and time per frame; masses, constraints, topology (as a JSON table), the system
spec (YAML text) and the temperature once. :class:`AAWriter` appends frames in chunks and can
truncate, which is what makes :func:`cgkd.aa.simulate` resumable.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import h5py
import numpy as np

from cgkd.arrays import check_array, check_box, check_scalar

from cgkd import keys
from cgkd.io.atomic import atomic_path
from cgkd.io.formats import FormatError, check_format
from cgkd.io.spec import SystemSpec, spec_from_yaml_text

FORMAT = "cgkd-aa"
FORMAT_VERSION = 1
UNITS = {"length": "nm", "force": "kJ/mol/nm", "energy": "kJ/mol", "mass": "amu", "time": "ps", "temperature": "K"}
_STR = h5py.string_dtype()


@dataclass
class AAData:
    """An all-atom trajectory with forces.

    Attributes
    ----------
    positions : np.ndarray, shape=(n_frames, n_atoms, 3), float32, nm
    forces : np.ndarray, shape=(n_frames, n_atoms, 3), float32, kJ/mol/nm
        Total per-atom forces of the force field; they exclude constraint forces.
    box : np.ndarray or None, shape=(n_frames, 3, 3), float32, nm
        Box vectors as rows; None for a non-periodic system.
    potential_energy : np.ndarray, shape=(n_frames,), float64, kJ/mol
        NaN where the source did not provide it.
    time : np.ndarray, shape=(n_frames,), float64, ps
    masses : np.ndarray, shape=(n_atoms,), float64, amu
    constraints : np.ndarray, shape=(n_constraints, 2), int64
        Atom index pairs held at fixed distance during the simulation.
    topology : openmm.app.Topology
        With elements and bonds.
    spec : SystemSpec or None
    temperature : float, K
    attrs : dict
        Free-form provenance, JSON-serialisable.
    """

    positions: np.ndarray
    forces: np.ndarray
    box: Optional[np.ndarray]
    potential_energy: np.ndarray
    time: np.ndarray
    masses: np.ndarray
    constraints: np.ndarray
    topology: object
    spec: Optional[SystemSpec]
    temperature: float
    attrs: dict = field(default_factory=dict)

    def __post_init__(self):
        self.positions = check_array(self.positions, "positions", shape=("n_frames", "n_atoms", 3), dtype=np.float32)
        f, a, _ = self.positions.shape
        self.forces = check_array(self.forces, "forces", shape=(f, a, 3), dtype=np.float32)
        if self.box is not None:
            self.box = check_box(self.box, "box", n_frames=f, dtype=np.float32)
        # NaN potential energy is allowed: external data often have none
        self.potential_energy = check_array(self.potential_energy, "potential_energy", shape=(f,), dtype=np.float64,
                                            finite=False)
        self.time = check_array(self.time, "time", shape=(f,), dtype=np.float64)
        self.masses = check_array(self.masses, "masses", shape=(a,), dtype=np.float64, min=0.0, min_exclusive=True,
                                  unit="amu")
        self.constraints = check_array(np.asarray(self.constraints).reshape(-1, 2), "constraints", integer=True,
                                       min=0, max=a - 1).astype(np.int64)
        n_top = self.topology.getNumAtoms()
        if n_top != a:
            raise ValueError(f"topology has {n_top} atoms but positions has {a}")
        self.temperature = check_scalar(self.temperature, "temperature", min=0.0, min_exclusive=True, unit="K")
        if self.box is None and self.topology.getPeriodicBoxVectors() is not None:
            raise ValueError(
                "the topology has periodic box vectors but box is None: periodic data need a box per frame (a "
                "trajectory with unit cells); mapping them without one would make a non-periodic CG dataset")

    @property
    def n_frames(self) -> int:
        return self.positions.shape[0]

    @property
    def n_atoms(self) -> int:
        return self.positions.shape[1]

    @property
    def periodic(self) -> bool:
        return self.box is not None


# --- topology <-> JSON ------------------------------------------------------------------------


def topology_to_json(topology) -> str:
    """Serialise an ``openmm.app.Topology`` (chains, residues, atoms with elements, bonds) to JSON."""
    chains = [c.id for c in topology.chains()]
    residues = [[r.name, r.id, r.chain.index] for r in topology.residues()]
    atoms = [[a.name, a.element.symbol if a.element is not None else None, a.residue.index] for a in topology.atoms()]
    bonds = [[b[0].index, b[1].index] for b in topology.bonds()]
    return json.dumps({"chains": chains, "residues": residues, "atoms": atoms, "bonds": bonds}, separators=(",", ":"))


def topology_from_json(text: str, box: Optional[np.ndarray] = None):
    """Rebuild an ``openmm.app.Topology`` from :func:`topology_to_json` text; ``box`` (3, 3) nm if periodic."""
    import openmm.app as app
    import openmm.unit as u

    d = json.loads(text)
    top = app.Topology()
    chains = [top.addChain(cid) for cid in d["chains"]]
    residues = [top.addResidue(name, chains[ci], rid) for name, rid, ci in d["residues"]]
    atoms = [
        top.addAtom(name, app.Element.getBySymbol(sym) if sym else None, residues[ri]) for name, sym, ri in d["atoms"]
    ]
    for i, j in d["bonds"]:
        top.addBond(atoms[i], atoms[j])
    if box is not None:
        top.setPeriodicBoxVectors(np.asarray(box, dtype=float) * u.nanometer)
    return top


# --- writing ----------------------------------------------------------------------------------


def create_aa(
    path: str | Path,
    *,
    topology,
    masses: np.ndarray,
    constraints: np.ndarray,
    temperature: float,
    periodic: bool,
    spec: Optional[SystemSpec] = None,
    attrs: Optional[dict] = None,
    blobs: Optional[dict] = None,
    chunk_frames: int = 16,
) -> None:
    """Create (atomically, replacing any existing file) an AA file with zero frames.

    Parameters
    ----------
    masses : np.ndarray, shape=(n_atoms,), float64, amu
    constraints : np.ndarray, shape=(n_constraints, 2), int64
    temperature : float, K
    periodic : bool
        Whether a ``box`` dataset is kept.
    blobs : dict of str -> bytes, optional
        Extra binary payloads (e.g. serialised system, equilibrated state), see :meth:`AAWriter.set_blob`.
    chunk_frames : int
        HDF5 chunk length along the frame axis.
    """
    n = topology.getNumAtoms()
    masses = np.asarray(masses, dtype=np.float64)
    if masses.shape != (n,):
        raise ValueError(f"masses must have shape ({n},), got {masses.shape}")
    constraints = np.asarray(constraints, dtype=np.int64).reshape(-1, 2)
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 K, got {temperature}")
    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.attrs["format"] = FORMAT
            h5.attrs["format_version"] = FORMAT_VERSION
            h5.attrs["units"] = json.dumps(UNITS)
            h5.attrs["temperature"] = float(temperature)
            h5.attrs["n_atoms"] = n
            h5.attrs["attrs"] = json.dumps(attrs or {})
            c = max(1, int(chunk_frames))
            for name in (keys.POSITIONS, keys.FORCES):
                h5.create_dataset(name, shape=(0, n, 3), maxshape=(None, n, 3), dtype=np.float32, chunks=(c, n, 3))
            if periodic:
                h5.create_dataset(keys.BOX, shape=(0, 3, 3), maxshape=(None, 3, 3), dtype=np.float32, chunks=(c, 3, 3))
            for name in (keys.POTENTIAL_ENERGY, keys.TIME):
                h5.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(max(c, 64),))
            h5.create_dataset(keys.MASSES, data=masses)
            h5.create_dataset(keys.CONSTRAINTS, data=constraints)
            h5.create_dataset("topology", data=topology_to_json(topology), dtype=_STR)
            if spec is not None:
                h5.create_dataset("spec", data=spec.to_yaml(), dtype=_STR)
            for name, payload in (blobs or {}).items():
                _put_blob(h5, name, payload)


def _put_blob(h5: h5py.File, name: str, payload: bytes) -> None:
    grp = h5.require_group("blobs")
    tmp = f"{name}.new"
    if tmp in grp:
        del grp[tmp]
    grp.create_dataset(tmp, data=np.frombuffer(payload, dtype=np.uint8))
    if name in grp:
        del grp[name]
    grp.move(tmp, name)


class AAWriter:
    """Append frames to an AA file made by :func:`create_aa` (use as a context manager).

    Frames go to disk as they are appended; :meth:`flush` pushes HDF5 buffers to the file and
    :meth:`truncate` drops frames past a given count (used on resume).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"AA file {str(self.path)!r} does not exist")
        self._h5 = h5py.File(self.path, "r+")
        _check_format(self._h5, self.path)
        self.n_atoms = int(self._h5.attrs["n_atoms"])

    def __enter__(self) -> "AAWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._h5.id.valid:
            self._h5.close()

    @property
    def n_frames(self) -> int:
        return int(self._h5[keys.POSITIONS].shape[0])

    @property
    def attrs(self):
        """The file's HDF5 attributes (read/write)."""
        return self._h5.attrs

    def append(self, positions, forces, box, potential_energy, time) -> None:
        """Append one frame or a block of frames.

        Parameters
        ----------
        positions : np.ndarray, shape=(n_atoms, 3) or (k, n_atoms, 3), nm
        forces : np.ndarray, same shape as positions, kJ/mol/nm
        box : np.ndarray or None, shape=(3, 3) or (k, 3, 3), nm
        potential_energy : float or np.ndarray, shape=(k,), kJ/mol
        time : float or np.ndarray, shape=(k,), ps
        """
        pos = np.asarray(positions, dtype=np.float32)
        if pos.ndim == 2:
            pos = pos[None]
        k = pos.shape[0]
        frc = np.asarray(forces, dtype=np.float32).reshape(pos.shape)
        if pos.shape[1:] != (self.n_atoms, 3):
            raise ValueError(f"positions must have {self.n_atoms} atoms x 3, got shape {pos.shape}")
        values = {
            keys.POSITIONS: pos,
            keys.FORCES: frc,
            keys.POTENTIAL_ENERGY: np.asarray(potential_energy, dtype=np.float64).reshape(k),
            keys.TIME: np.asarray(time, dtype=np.float64).reshape(k),
        }
        if keys.BOX in self._h5:
            if box is None:
                raise ValueError("box is None but this file is periodic; expected shape (3, 3) or (k, 3, 3)")
            values[keys.BOX] = np.asarray(box, dtype=np.float32).reshape(k, 3, 3)
        n = self.n_frames
        for name, arr in values.items():
            ds = self._h5[name]
            ds.resize(n + k, axis=0)
            ds[n:] = arr

    def truncate(self, n_frames: int) -> None:
        """Keep only the first ``n_frames`` frames."""
        if not 0 <= n_frames <= self.n_frames:
            raise ValueError(f"n_frames must be in 0..{self.n_frames}, got {n_frames}")
        for name in (keys.POSITIONS, keys.FORCES, keys.BOX, keys.POTENTIAL_ENERGY, keys.TIME):
            if name in self._h5:
                self._h5[name].resize(n_frames, axis=0)

    def set_blob(self, name: str, payload: bytes) -> None:
        """Store bytes under ``blobs/<name>`` (written under a temporary name, then moved)."""
        _put_blob(self._h5, name, payload)

    def get_blob(self, name: str) -> Optional[bytes]:
        return get_blob_h5(self._h5, name)

    def flush(self) -> None:
        self._h5.flush()


def get_blob_h5(h5: h5py.File, name: str) -> Optional[bytes]:
    if "blobs" in h5 and name in h5["blobs"]:
        return h5["blobs"][name][()].tobytes()
    return None


def read_blob(path: str | Path, name: str) -> Optional[bytes]:
    """The bytes stored under ``blobs/<name>`` in an AA file, or None."""
    with _open(path) as h5:
        return get_blob_h5(h5, name)


def write_aa(path: str | Path, data: AAData, *, chunk_frames: int = 16) -> None:
    """Write a whole :class:`AAData` to ``path`` (atomically: a half-written file never appears)."""
    with atomic_path(path, suffix=".h5") as tmp:
        create_aa(
            tmp,
            topology=data.topology,
            masses=data.masses,
            constraints=data.constraints,
            temperature=data.temperature,
            periodic=data.periodic,
            spec=data.spec,
            attrs=data.attrs,
            chunk_frames=chunk_frames,
        )
        with AAWriter(tmp) as w:
            w.append(data.positions, data.forces, data.box, data.potential_energy, data.time)


# --- reading ----------------------------------------------------------------------------------


def _check_format(h5: h5py.File, path: Path) -> None:
    check_format(h5.attrs.get("format"), h5.attrs.get("format_version"), FORMAT, FORMAT_VERSION, str(path))


def _open(path: str | Path) -> h5py.File:
    """Open an AA file for reading and check its format tag and version (errors name the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"AA file {str(path)!r} does not exist")
    try:
        h5 = h5py.File(path, "r")
    except OSError as exc:
        raise FormatError(f"{path} is not a readable HDF5 file ({exc})") from None
    try:
        _check_format(h5, path)
    except Exception:
        h5.close()
        raise
    return h5


def n_frames(path: str | Path) -> int:
    """Number of frames of an AA file, without reading the arrays."""
    with _open(path) as h5:
        return int(h5[keys.POSITIONS].shape[0])


def read_header(path: str | Path) -> dict:
    """What an AA file was made from, without its frames: ``attrs`` (dict), ``spec_yaml`` (str or None), ``n_frames``."""
    with _open(path) as h5:
        spec = _str(h5["spec"][()]) if "spec" in h5 else None
        return {"attrs": json.loads(h5.attrs.get("attrs", "{}")), "spec_yaml": spec,
                "n_frames": int(h5[keys.POSITIONS].shape[0])}


def _str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_aa(path: str | Path, frames=None) -> AAData:
    """Read an AA trajectory file.

    Parameters
    ----------
    path : str or Path
    frames : None, int, slice or np.ndarray of int, optional
        Frames to read (an index array must be increasing); None reads all.
    """
    path = Path(path)
    with _open(path) as h5:
        n = int(h5[keys.POSITIONS].shape[0])
        if frames is None:
            sel = slice(None)
        elif isinstance(frames, slice):
            sel = frames
        else:
            sel = np.atleast_1d(np.asarray(frames, dtype=np.int64))
            sel = np.where(sel < 0, sel + n, sel)
            if sel.size and (sel.min() < 0 or sel.max() >= n):
                raise ValueError(f"frames must index 0..{n - 1}, got {np.asarray(frames).tolist()}")
            if np.any(np.diff(sel) <= 0):
                raise ValueError("frames must be strictly increasing")
        box = h5[keys.BOX][sel] if keys.BOX in h5 else None
        spec = spec_from_yaml_text(_str(h5["spec"][()])) if "spec" in h5 else None
        top_box = h5[keys.BOX][0] if (keys.BOX in h5 and n) else None
        return AAData(
            positions=h5[keys.POSITIONS][sel],
            forces=h5[keys.FORCES][sel],
            box=box,
            potential_energy=h5[keys.POTENTIAL_ENERGY][sel],
            time=h5[keys.TIME][sel],
            masses=h5[keys.MASSES][()],
            constraints=h5[keys.CONSTRAINTS][()],
            topology=topology_from_json(_str(h5["topology"][()]), top_box),
            spec=spec,
            temperature=float(h5.attrs["temperature"]),
            attrs=json.loads(h5.attrs["attrs"]),
        )


__all__ = ["AAData", "AAWriter", "create_aa", "write_aa", "read_aa", "read_blob", "read_header", "n_frames", "topology_to_json",
           "topology_from_json", "FORMAT", "FORMAT_VERSION"]
