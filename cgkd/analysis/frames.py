"""Trajectories for analysis: one small container for mapped AA data and CG MD output alike."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from cgkd.data.cg_h5 import CGData, read_cg


@dataclass
class Frames:
    """Bead positions of one continuous trajectory with what analysis needs to know about the beads.

    Attributes
    ----------
    positions : np.ndarray, shape=(F, N, 3), float64, nm
        Not necessarily wrapped.
    box : np.ndarray or None, shape=(F, 3, 3), float64, nm
    types : np.ndarray, shape=(N,), int64
        Index into ``type_names``.
    type_names : list of str
    masses : np.ndarray, shape=(N,), float64, amu
    bonds : np.ndarray, shape=(n_bonds, 2), int64
    dt : float or None, ps
        Time between consecutive frames (None: unknown, no dynamics).
    """

    positions: np.ndarray
    box: Optional[np.ndarray]
    types: np.ndarray
    type_names: list
    masses: np.ndarray
    bonds: np.ndarray
    dt: Optional[float] = None

    def __post_init__(self):
        self.positions = np.asarray(self.positions, dtype=np.float64)
        if self.positions.ndim != 3 or self.positions.shape[2] != 3:
            raise ValueError(f"positions must have shape (F, N, 3), got {self.positions.shape}")
        f, n, _ = self.positions.shape
        if self.box is not None:
            self.box = np.asarray(self.box, dtype=np.float64)
            if self.box.shape != (f, 3, 3):
                raise ValueError(f"box must have shape ({f}, 3, 3), got {self.box.shape}")
        self.types = np.asarray(self.types, dtype=np.int64)
        self.masses = np.asarray(self.masses, dtype=np.float64)
        self.bonds = np.asarray(self.bonds, dtype=np.int64).reshape(-1, 2)
        if self.types.shape != (n,) or self.masses.shape != (n,):
            raise ValueError(f"types and masses must have shape ({n},), got {self.types.shape} and {self.masses.shape}")

    @property
    def n_frames(self) -> int:
        return self.positions.shape[0]

    def subsample(self, max_frames: Optional[int]) -> "Frames":
        """At most ``max_frames`` evenly spaced frames (dt becomes None when frames are skipped unevenly)."""
        if max_frames is None or self.n_frames <= max_frames:
            return self
        step = int(np.ceil(self.n_frames / max_frames))
        sel = slice(None, None, step)
        return Frames(self.positions[sel], None if self.box is None else self.box[sel], self.types, self.type_names,
                      self.masses, self.bonds, None if self.dt is None else self.dt * step)


def from_cg_data(data: CGData) -> Frames:
    """Frames of a mapped dataset; ``dt`` from its time axis when evenly spaced."""
    dt = None
    if data.time is not None and len(data.time) > 1:
        steps = np.diff(data.time)
        if np.allclose(steps, steps[0], rtol=1e-6):
            dt = float(steps[0])
    return Frames(data.positions, data.box, data.types, list(data.type_names), data.masses, data.bonds, dt)


def _from_run_dir(path: Path) -> List[Frames]:
    import mdtraj

    info = json.loads((path / "system.json").read_text())
    summary = json.loads((path / "summary.json").read_text()) if (path / "summary.json").is_file() else {}
    dt = summary.get("timestep_ps", 0) * summary.get("report_interval", 0) or None
    out = []
    for dcd in sorted(path.glob("replica_*.dcd"), key=lambda p: int(p.stem.split("_")[1])):
        traj = mdtraj.load_dcd(str(dcd), top=str(path / "topology.pdb"))
        if traj.n_frames == 0:
            continue
        out.append(Frames(traj.xyz, None if traj.unitcell_vectors is None else traj.unitcell_vectors, info["types"],
                          info["type_names"], info["masses"], info["bonds"], dt))
    if not out:
        raise ValueError(f"{path} holds no replica trajectory with frames (replica_*.dcd)")
    return out


def load_frames(source, type_names: Optional[Sequence[str]] = None) -> List[Frames]:
    """Trajectory segments from a CGData, a Frames, a CG dataset file, a CG MD output folder or an mdtraj.Trajectory.

    Parameters
    ----------
    source : CGData, Frames, str, Path or mdtraj.Trajectory
        A folder is read as ``cgkd simulate`` output (``system.json``, ``topology.pdb``,
        ``replica_*.dcd``: one segment per replica); a file as a ``cgkd-cg`` dataset.
    type_names : sequence of str, optional
        For an mdtraj.Trajectory: atom names are looked up in this list to find bead types.

    Returns
    -------
    list of Frames
        One per continuous trajectory (replica).
    """
    if isinstance(source, Frames):
        return [source]
    if isinstance(source, CGData):
        return [from_cg_data(source)]
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            if not (path / "system.json").is_file():
                raise ValueError(f"{path} is a folder but not a cgkd simulate output (no system.json)")
            return _from_run_dir(path)
        return [from_cg_data(read_cg(path))]
    try:
        import mdtraj
    except ImportError:  # pragma: no cover - mdtraj is a dependency
        mdtraj = None
    if mdtraj is not None and isinstance(source, mdtraj.Trajectory):
        if type_names is None:
            raise ValueError("an mdtraj.Trajectory needs type_names to find bead types from atom names")
        names = list(type_names)
        missing = sorted({a.name for a in source.topology.atoms} - set(names))
        if missing:
            raise ValueError(f"atom names {missing} of the trajectory are not bead types {names}")
        types = [names.index(a.name) for a in source.topology.atoms]
        masses = [a.element.mass if a.element is not None and a.element.mass > 0 else 1.0 for a in source.topology.atoms]
        bonds = [(b[0].index, b[1].index) for b in source.topology.bonds]
        dt = float(source.timestep) if source.n_frames > 1 and source.timestep > 0 else None
        return [Frames(source.xyz, source.unitcell_vectors, types, names, masses, bonds, dt)]
    raise ValueError(f"cannot read frames from a {type(source).__name__}; expected CGData, Frames, a path or mdtraj.Trajectory")


def concat(segments: Sequence[Frames]) -> Frames:
    """All frames of several segments of the same system, in one Frames (dt None: not continuous)."""
    first = segments[0]
    box = None if first.box is None else np.concatenate([s.box for s in segments])
    return Frames(np.concatenate([s.positions for s in segments]), box, first.types, first.type_names, first.masses,
                  first.bonds, None)


def minimum_image(d: np.ndarray, box: Optional[np.ndarray]) -> np.ndarray:
    """Minimum-image difference vectors ``d`` (..., 3) nm for one box (3, 3) nm (exact for orthorhombic boxes)."""
    if box is None:
        return d
    frac = d @ np.linalg.inv(box)
    return (frac - np.round(frac)) @ box
