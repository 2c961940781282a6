"""The coarse-grained dataset file (format ``cgkd-cg``, see docs/formats.md): the one module that reads and writes it.

One HDF5 file holds the mapped trajectory of one CG system: positions, forces and box per frame,
and the CG topology (:class:`cgkd.topology.Topology`: bead types, names, masses, molecules, bonds).
Knowledge-distillation labels live in the group ``labels`` of the same file; they are written and
read here too (:func:`write_labels`, :func:`read_labels`), so no other module opens the file.

Versions: 1 (cgkd 0.1) stored the topology as separate datasets ``types``, ``masses``,
``bead_residue``, ``bonds`` and attributes ``type_names``, ``bead_names``, ``residue_names``;
2 stores it as one JSON attribute ``topology``. Both are read.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional, Sequence

import h5py
import numpy as np

from cgkd import keys
from cgkd.arrays import check_array, check_box, check_scalar
from cgkd.io.atomic import atomic_path
from cgkd.io.formats import FormatError, check_format
from cgkd.topology import Topology, TopologyView

FORMAT = "cgkd-cg"
FORMAT_VERSION = 2


@dataclass
class CGData(TopologyView):
    """A mapped (coarse-grained) trajectory.

    Attributes
    ----------
    positions : np.ndarray, shape=(n_frames, n_beads, 3), float32, nm
    forces : np.ndarray, shape=(n_frames, n_beads, 3), float32, kJ/mol/nm
        Mapped forces (the noisy CG force labels).
    box : np.ndarray or None, shape=(n_frames, 3, 3), float32, nm
        Box vectors as rows; None for a non-periodic system.
    topology : cgkd.topology.Topology
        Bead types and type names, names, masses, molecules and bonds (angles and dihedrals derived).
    temperature : float, K
    time : np.ndarray or None, shape=(n_frames,), float64, ps
    attrs : dict
        Free-form provenance (mapping name, force map, source file, ...), JSON-serialisable.

    ``types``, ``type_names``, ``masses`` and ``bonds`` read through to the topology.
    """

    positions: np.ndarray
    forces: np.ndarray
    box: Optional[np.ndarray]
    topology: Topology
    temperature: float
    time: Optional[np.ndarray] = None
    attrs: dict = field(default_factory=dict)

    def __post_init__(self):
        self.positions = check_array(self.positions, "positions", shape=("n_frames", "n_beads", 3), dtype=np.float32)
        f, b, _ = self.positions.shape
        self.forces = check_array(self.forces, "forces", shape=(f, b, 3), dtype=np.float32)
        if not isinstance(self.topology, Topology):
            raise ValueError(f"topology must be a cgkd.topology.Topology, got {type(self.topology).__name__}")
        if self.topology.n_particles != b:
            raise ValueError(f"topology has {self.topology.n_particles} beads but positions has {b}")
        if self.box is not None:
            self.box = check_box(self.box, "box", n_frames=f, dtype=np.float32)
        self.temperature = check_scalar(self.temperature, "temperature", min=0.0, min_exclusive=True, unit="K")
        if self.time is not None:
            self.time = check_array(self.time, "time", shape=(f,), dtype=np.float64)
        if not isinstance(self.attrs, dict):
            raise ValueError(f"attrs must be a dict, got {type(self.attrs).__name__}")

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
            topology=self.topology,
            temperature=self.temperature,
            time=None if self.time is None else self.time[frames],
            attrs=dict(self.attrs),
        )

    def openmm_topology(self):
        """The CG system as an ``openmm.app.Topology`` with the first frame's box (one residue per molecule)."""
        return self.topology.to_openmm(None if self.box is None else self.box[0].astype(float))


def write_cg(path: str | Path, data: CGData) -> None:
    """Write ``data`` to ``path`` atomically (an existing file is replaced, its labels dropped)."""
    with atomic_path(path, suffix=".h5") as tmp:
        with h5py.File(tmp, "w") as h5:
            h5.attrs["format"] = FORMAT
            h5.attrs["format_version"] = FORMAT_VERSION
            h5.attrs["units"] = json.dumps({"length": "nm", "force": "kJ/mol/nm", "mass": "amu", "time": "ps"})
            h5.attrs["temperature"] = float(data.temperature)
            h5.attrs["topology"] = data.topology.to_json()
            h5.attrs["attrs"] = json.dumps(data.attrs)
            h5.attrs["content_digest"] = data_digest(data)
            chunk = (min(max(data.n_frames, 1), 64), data.n_beads, 3)
            h5.create_dataset(keys.POSITIONS, data=data.positions, chunks=chunk if data.n_frames else None)
            h5.create_dataset(keys.FORCES, data=data.forces, chunks=chunk if data.n_frames else None)
            if data.box is not None:
                h5.create_dataset(keys.BOX, data=data.box)
            if data.time is not None:
                h5.create_dataset(keys.TIME, data=data.time)


class CGWriter:
    """Write a CG dataset chunk by chunk (streamed mapping); the file appears, whole, only at :meth:`close`.

    Use as a context manager::

        with CGWriter(path, topology, temperature, periodic=True, attrs=...) as w:
            w.append(positions, forces, box, time)   # (k, B, 3), (k, B, 3), (k, 3, 3), (k,)

    The result equals :func:`write_cg` of the concatenated frames, digest included (computed by a second,
    chunked pass over the file).
    """

    def __init__(self, path: str | Path, topology: Topology, temperature: float, *, periodic: bool,
                 with_time: bool = True, attrs: Optional[dict] = None, chunk_frames: int = 64):
        self.path = Path(path)
        self.topology, self.periodic, self.with_time = topology, bool(periodic), bool(with_time)
        self.temperature = check_scalar(temperature, "temperature", min=0.0, min_exclusive=True, unit="K")
        self.attrs = dict(attrs or {})
        self._ctx = atomic_path(self.path, suffix=".h5")
        self._tmp = self._ctx.__enter__()
        b = topology.n_particles
        self.h5 = h5py.File(self._tmp, "w")
        self.h5.attrs["format"] = FORMAT
        self.h5.attrs["format_version"] = FORMAT_VERSION
        self.h5.attrs["units"] = json.dumps({"length": "nm", "force": "kJ/mol/nm", "mass": "amu", "time": "ps"})
        self.h5.attrs["temperature"] = float(self.temperature)
        self.h5.attrs["topology"] = topology.to_json()
        c = max(1, int(chunk_frames))
        for name in (keys.POSITIONS, keys.FORCES):
            self.h5.create_dataset(name, shape=(0, b, 3), maxshape=(None, b, 3), dtype=np.float32, chunks=(c, b, 3))
        if self.periodic:
            self.h5.create_dataset(keys.BOX, shape=(0, 3, 3), maxshape=(None, 3, 3), dtype=np.float32, chunks=(c, 3, 3))
        if self.with_time:
            self.h5.create_dataset(keys.TIME, shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(max(c, 64),))
        self.n_frames = 0

    def append(self, positions, forces, box=None, time=None) -> None:
        """Append frames (arrays as in :class:`CGData`, validated the same way)."""
        part = CGData(positions=positions, forces=forces, box=box if self.periodic else None, topology=self.topology,
                      temperature=self.temperature, time=time if self.with_time else None)
        if self.periodic and part.box is None:
            raise ValueError("box is required: the dataset is periodic")
        if self.with_time and part.time is None:
            raise ValueError("time is required: the dataset was created with_time=True")
        k, a = part.n_frames, self.n_frames
        for name, arr in ((keys.POSITIONS, part.positions), (keys.FORCES, part.forces), (keys.BOX, part.box),
                          (keys.TIME, part.time)):
            if arr is not None:
                self.h5[name].resize(a + k, axis=0)
                self.h5[name][a:a + k] = arr
        self.n_frames = a + k

    def close(self) -> None:
        """Finish: write attrs and the content digest, and move the file into place."""
        self.h5.attrs["attrs"] = json.dumps(self.attrs)
        self.h5.attrs["content_digest"] = _stream_digest(self.h5, self.topology, self.temperature)
        self.h5.close()
        self._ctx.__exit__(None, None, None)

    def __enter__(self) -> "CGWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # nothing is left behind: the temporary file goes, an existing dataset stays as it was
            self.h5.close()
            self._ctx.__exit__(exc_type, exc, tb)


def _stream_digest(h5: h5py.File, topology: Topology, temperature: float, chunk: int = 256) -> str:
    """:func:`data_digest` of an open file, reading ``chunk`` frames at a time."""
    import hashlib

    h = hashlib.sha256()
    for name in (keys.POSITIONS, keys.FORCES, keys.BOX, keys.TIME):
        if name not in h5:
            h.update(b"none")
            continue
        ds = h5[name]
        h.update(f"{ds.dtype.str}{tuple(ds.shape)}".encode())
        for a in range(0, ds.shape[0], chunk):
            h.update(np.ascontiguousarray(ds[a:a + chunk]).tobytes())
    h.update(topology.to_json().encode())
    h.update(repr(float(temperature)).encode())
    return "sha256:" + h.hexdigest()


def concatenate_cg(paths: Sequence[str | Path], out: str | Path, chunk: int = 256) -> Path:
    """One CG dataset of the frames of ``paths`` in order (independent replicas of one system), streamed chunk by
    chunk. Topologies and temperatures must be equal; labels are not carried over. ``attrs["sources"]`` lists the
    inputs with their frame counts."""
    paths = [Path(p) for p in paths]
    if not paths:
        raise ValueError("paths must name at least one CG dataset, got none")
    first = read_cg(paths[0], frames=slice(0, 1))
    counts = []
    for p in paths:
        top, n = read_topology(p), n_frames(p)
        if top.to_json() != first.topology.to_json():
            raise ValueError(f"{p} has another CG topology than {paths[0]}; only replicas of one system concatenate")
        with _open(p) as h5:
            t, periodic, timed = float(h5.attrs["temperature"]), keys.BOX in h5, keys.TIME in h5
        if t != first.temperature or periodic != (first.box is not None) or timed != (first.time is not None):
            raise ValueError(f"{p} differs from {paths[0]} in temperature, periodicity or times")
        counts.append(n)
    attrs = dict(first.attrs, sources=[{"path": str(p.resolve()), "frames": c} for p, c in zip(paths, counts)])
    with CGWriter(out, first.topology, first.temperature, periodic=first.box is not None,
                  with_time=first.time is not None, attrs=attrs) as w:
        for p, n in zip(paths, counts):
            for a in range(0, n, chunk):
                d = read_cg(p, frames=slice(a, min(a + chunk, n)))
                w.append(d.positions, d.forces, d.box, d.time)
    return Path(out)


def read_frames(path: str | Path, frames, names: Sequence[str] = (keys.FORCES,)) -> Dict[str, np.ndarray]:
    """Positions, box and the arrays ``names`` of the frames ``frames`` (increasing indices), read from the file.

    ``names`` are datasets of the file (``forces``) or of its labels group (``labels/mean_forces``); the
    streamed training set (:class:`cgkd.train.frames.StreamingFrameSet`) reads its batches through this.
    """
    sel = np.asarray(frames, dtype=np.int64)
    if sel.size > 1 and np.any(np.diff(sel) <= 0):
        raise ValueError("frames must be strictly increasing")
    with _open(path) as h5:
        out = {keys.POSITIONS: h5[keys.POSITIONS][sel]}
        if keys.BOX in h5:
            out[keys.BOX] = h5[keys.BOX][sel]
        for name in names:
            if name not in h5:
                raise KeyError(f"{path} has no dataset {name!r}")
            out[name] = h5[name][sel]
    return out


def _open(path: str | Path, mode: str = "r") -> h5py.File:
    """Open a CG dataset and check its format tag and version (errors name the file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CG dataset {str(path)!r} does not exist")
    try:
        h5 = h5py.File(path, mode)
    except OSError as exc:
        raise FormatError(f"{path} is not a readable HDF5 file ({exc})") from None
    try:
        check_format(h5.attrs.get("format"), h5.attrs.get("format_version"), FORMAT, FORMAT_VERSION, str(path))
    except Exception:
        h5.close()
        raise
    return h5


def _read_topology(h5: h5py.File, where: str) -> Topology:
    if int(h5.attrs["format_version"]) >= 2:
        return Topology.from_json(h5.attrs["topology"], where)
    # version 1: separate datasets and attributes
    return Topology(
        type_names=json.loads(h5.attrs["type_names"]),
        types=h5[keys.TYPES][()],
        masses=h5[keys.MASSES][()],
        names=json.loads(h5.attrs["bead_names"]),
        molecules=h5["bead_residue"][()],
        molecule_names=json.loads(h5.attrs["residue_names"]),
        bonds=h5["bonds"][()],
    )


def read_cg(path: str | Path, frames=None) -> CGData:
    """Read a CG dataset (any version); ``frames`` (slice or sorted index array) selects frames."""
    sel = slice(None) if frames is None else frames
    with _open(path) as h5:
        return CGData(
            positions=h5[keys.POSITIONS][sel],
            forces=h5[keys.FORCES][sel],
            box=h5[keys.BOX][sel] if keys.BOX in h5 else None,
            topology=_read_topology(h5, f"{path} topology"),
            temperature=float(h5.attrs["temperature"]),
            time=h5[keys.TIME][sel] if keys.TIME in h5 else None,
            attrs=json.loads(h5.attrs["attrs"]),
        )


def read_topology(path: str | Path) -> Topology:
    """The CG topology of a dataset, without reading its frames."""
    with _open(path) as h5:
        return _read_topology(h5, f"{path} topology")


def n_frames(path: str | Path) -> int:
    """Number of frames of a CG dataset, without reading the arrays."""
    with _open(path) as h5:
        return int(h5[keys.POSITIONS].shape[0])


def data_digest(data: CGData) -> str:
    """``"sha256:<hex>"`` of what defines a dataset: positions, forces, box, time, topology and temperature
    (not its labels, not its free-form attrs)."""
    import hashlib

    h = hashlib.sha256()
    for arr in (data.positions, data.forces, data.box, data.time):
        if arr is None:
            h.update(b"none")
        else:
            arr = np.ascontiguousarray(arr)
            h.update(f"{arr.dtype.str}{arr.shape}".encode())
            h.update(arr.tobytes())
    h.update(data.topology.to_json().encode())
    h.update(repr(float(data.temperature)).encode())
    return "sha256:" + h.hexdigest()


def content_digest(path: str | Path) -> str:
    """:func:`data_digest` of the dataset in ``path``: unchanged when labels are added to the file.

    :func:`write_cg` stores it in the file (attribute ``content_digest``), so this reads one attribute; files
    written before that are read whole and digested.
    """
    with _open(path) as h5:
        stored = h5.attrs.get("content_digest")
    return str(stored) if stored else data_digest(read_cg(path))


# ---------------------------------------------------------------------- the labels group
def write_labels(path: str | Path, arrays: Dict[str, np.ndarray], attrs: Dict[str, object]) -> None:
    """(Re)write the group ``labels`` of a CG dataset atomically.

    The whole file is copied to a temporary file in the same folder, the group is written in the
    copy and the copy renamed over the original: a crash leaves the original untouched and readers
    never see a half-written group. ``attrs`` values must be str, int, float or JSON-serialisable.
    """
    path = Path(path)
    with _open(path):
        pass
    with atomic_path(path, suffix=".h5") as tmp:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "r+") as h5:
            if keys.LABELS in h5:
                del h5[keys.LABELS]
            grp = h5.create_group(keys.LABELS)
            for name, arr in arrays.items():
                grp.create_dataset(name, data=arr)
            for name, value in attrs.items():
                grp.attrs[name] = value if isinstance(value, (str, int, float)) else json.dumps(value)


def has_labels(path: str | Path) -> bool:
    with _open(path) as h5:
        return keys.LABELS in h5


def labels_attrs(path: str | Path) -> dict:
    """The attributes of the group ``labels`` ({} when the file has no labels)."""
    with _open(path) as h5:
        return dict(h5[keys.LABELS].attrs) if keys.LABELS in h5 else {}


def read_labels(path: str | Path, names: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """The arrays of the group ``labels`` (all, or ``names``) plus ``"attrs"`` (dict)."""
    with _open(path) as h5:
        if keys.LABELS not in h5:
            raise ValueError(f"{path} has no group {keys.LABELS!r}; run make_labels (cgkd distill does) first")
        grp = h5[keys.LABELS]
        names = list(grp.keys()) if names is None else list(names)
        missing = [n for n in names if n not in grp]
        if missing:
            raise ValueError(f"{path} labels lack {missing}; they hold {sorted(grp.keys())}")
        out = {n: grp[n][()] for n in names}
        out["attrs"] = dict(grp.attrs)
    return out


__all__ = ["CGData", "CGWriter", "concatenate_cg", "FORMAT", "FORMAT_VERSION", "read_frames", "content_digest", "data_digest", "has_labels", "labels_attrs", "n_frames", "read_cg", "read_labels",
           "read_topology", "write_cg", "write_labels"]
