"""Trajectories for analysis: one small container for mapped AA data and CG MD output alike."""

from __future__ import annotations

from dataclasses import dataclass
import json
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from cgkd.arrays import check_array, check_box, check_scalar
from cgkd.data.cg_h5 import CGData, read_cg
from cgkd.io.formats import read_json
from cgkd.topology import Topology, TopologyView


@dataclass
class Frames(TopologyView):
    """Bead positions of one continuous trajectory with the topology of its beads.

    Attributes
    ----------
    positions : np.ndarray, shape=(F, N, 3), float64, nm
        Not necessarily wrapped.
    box : np.ndarray or None, shape=(F, 3, 3), float64, nm
    topology : cgkd.topology.Topology
        Bead types and names, masses, molecules, bonds (and the angles and dihedrals derived from them).
    dt : float or None, ps
        Time between consecutive frames (None: unknown, no dynamics).

    ``types``, ``type_names``, ``masses`` and ``bonds`` read through to the topology.
    """

    positions: np.ndarray
    box: Optional[np.ndarray]
    topology: Topology
    dt: Optional[float] = None

    def __post_init__(self):
        self.positions = check_array(self.positions, "positions", shape=("F", "N", 3), dtype=np.float64)
        f, n, _ = self.positions.shape
        if self.box is not None:
            self.box = check_box(self.box, "box", n_frames=f)
        if not isinstance(self.topology, Topology):
            raise ValueError(f"topology must be a cgkd.topology.Topology, got {type(self.topology).__name__}")
        if self.topology.n_particles != n:
            raise ValueError(f"topology has {self.topology.n_particles} beads but positions has {n}")
        if self.dt is not None:
            self.dt = check_scalar(self.dt, "dt", min=0.0, min_exclusive=True, unit="ps")

    @property
    def n_frames(self) -> int:
        return self.positions.shape[0]

    def subsample(self, max_frames: Optional[int]) -> "Frames":
        """At most ``max_frames`` evenly spaced frames (dt scales with the stride)."""
        if max_frames is None or self.n_frames <= max_frames:
            return self
        step = int(np.ceil(self.n_frames / max_frames))
        sel = slice(None, None, step)
        return Frames(self.positions[sel], None if self.box is None else self.box[sel], self.topology,
                      None if self.dt is None else self.dt * step)

    def one_type(self, name: str = "all") -> "Frames":
        """The same frames with every bead of one type ``name`` (for all-bead distributions)."""
        t = self.topology
        top = Topology([name], np.zeros(t.n_particles, dtype=np.int64), t.masses, t.names, t.molecules,
                       t.molecule_names, t.bonds)
        return Frames(self.positions, self.box, top, self.dt)


def from_cg_data(data: CGData) -> Frames:
    """Frames of a mapped dataset; ``dt`` from its time axis when evenly spaced."""
    dt = None
    if data.time is not None and len(data.time) > 1:
        steps = np.diff(data.time)
        if np.allclose(steps, steps[0], rtol=1e-6):
            dt = float(steps[0])
    return Frames(data.positions, data.box, data.topology, dt)


def _from_run_dir(path: Path) -> List[Frames]:
    import mdtraj

    topology = Topology.from_json((path / "system.json").read_text(), str(path / "system.json"))
    if not (path / "summary.json").is_file():
        raise ValueError(f"{path} has no summary.json: the CG MD run did not finish (killed or still running); "
                         "rerun cgkd simulate into it, or compare the replicas of a finished run")
    summary = read_json(path / "summary.json", "CG MD summary")
    dt = summary.get("timestep_ps", 0) * summary.get("report_interval", 0) or None
    out = []
    frames_of = {int(r["replica"]): int(r.get("steps_done", 1)) // max(int(summary.get("report_interval", 1)), 1)
                 for r in summary.get("replicas", []) if "replica" in r}
    for dcd in sorted(path.glob("replica_*.dcd"), key=lambda p: int(p.stem.split("_")[1])):
        if frames_of.get(int(dcd.stem.split("_")[1]), 1) == 0:
            continue  # failed before its first frame: the DCD holds a header only
        traj = mdtraj.load_dcd(str(dcd), top=str(path / "topology.pdb"))
        if traj.n_frames == 0:
            continue
        out.append(Frames(traj.xyz, None if traj.unitcell_vectors is None else traj.unitcell_vectors, topology, dt))
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
        masses = [a.element.mass if a.element is not None and a.element.mass > 0 else 1.0 for a in source.topology.atoms]
        topology = Topology.from_openmm(source.topology.to_openmm(), names, masses=masses)
        dt = float(source.timestep) if source.n_frames > 1 and source.timestep > 0 else None
        return [Frames(source.xyz, source.unitcell_vectors, topology, dt)]
    raise ValueError(f"cannot read frames from a {type(source).__name__}; expected CGData, Frames, a path or mdtraj.Trajectory")


def concat(segments: Sequence[Frames]) -> Frames:
    """All frames of several segments of the same system, in one Frames (dt None: not continuous)."""
    first = segments[0]
    box = None if first.box is None else np.concatenate([s.box for s in segments])
    return Frames(np.concatenate([s.positions for s in segments]), box, first.topology, None)
