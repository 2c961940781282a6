"""Torch batches of CG frames for training, and the angle/dihedral topology of a bond graph.

A :class:`Batch` holds G frames of one CG system (same beads, same types) concatenated bead-wise,
N = G * n_beads. Neighbour lists are not stored with the data: they change with the positions and
vesin-torch computes them per batch in a few milliseconds (``CGPotential.forward_batch`` does so
with the potential's own cutoff; :func:`cgkd.nn.neighbors.batch_neighbor_list` fills
``edge_index``/``edge_shifts`` here when wanted).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Dict, Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from cgkd import keys
from cgkd.data.cg_h5 import CGData


def angles_from_bonds(bonds) -> np.ndarray:
    """All bead triplets i-j-k with bonds i-j and j-k (each angle once, i < k).

    Parameters
    ----------
    bonds : np.ndarray, shape=(n_bonds, 2), int

    Returns
    -------
    np.ndarray, shape=(n_angles, 3), int64, sorted
    """
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    neighbours: Dict[int, set] = {}
    for a, b in bonds:
        if a == b:
            raise ValueError(f"bonds contains a self bond ({a}, {b})")
        neighbours.setdefault(int(a), set()).add(int(b))
        neighbours.setdefault(int(b), set()).add(int(a))
    out = set()
    for j, nbrs in neighbours.items():
        for i in nbrs:
            for k in nbrs:
                if i < k:
                    out.add((i, j, k))
    return np.array(sorted(out), dtype=np.int64).reshape(-1, 3)


def dihedrals_from_bonds(bonds) -> np.ndarray:
    """All bead quadruples i-j-k-l along bonded paths (each once, oriented so that (i, j) < (l, k)).

    Returns
    -------
    np.ndarray, shape=(n_dihedrals, 4), int64, sorted
    """
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    neighbours: Dict[int, set] = {}
    for a, b in bonds:
        neighbours.setdefault(int(a), set()).add(int(b))
        neighbours.setdefault(int(b), set()).add(int(a))
    out = set()
    for j, k in bonds:
        j, k = int(j), int(k)
        for i in neighbours[j] - {k}:
            for l in neighbours[k] - {j}:
                if i == l:
                    continue  # three-membered ring
                quad = (i, j, k, l)
                out.add(min(quad, quad[::-1]))
    return np.array(sorted(out), dtype=np.int64).reshape(-1, 4)


@dataclass
class Batch:
    """G frames of one system, concatenated bead-wise (N = G * n_beads).

    Attributes
    ----------
    positions : Tensor, shape=(N, 3), nm
    types : Tensor, shape=(N,), int64
    batch : Tensor, shape=(N,), int64, frame index of each bead inside the batch
    n_graphs : int
    box : Tensor, shape=(G, 3, 3), nm; all zero for a non-periodic system
    frame : Tensor, shape=(G,), int64, index of each frame in the dataset
    forces : Tensor or None, shape=(N, 3), kJ/mol/nm
    energy : Tensor or None, shape=(G,), kJ/mol
    node_energy : Tensor or None, shape=(N,), kJ/mol
    frame_weight : Tensor, shape=(G,)
    bead_weight : Tensor or None, shape=(N,)
    edge_index : Tensor or None, shape=(2, E), int64
    edge_shifts : Tensor or None, shape=(E, 3), nm
    """

    positions: Tensor
    types: Tensor
    batch: Tensor
    n_graphs: int
    box: Tensor
    frame: Tensor
    frame_weight: Tensor
    forces: Optional[Tensor] = None
    energy: Optional[Tensor] = None
    node_energy: Optional[Tensor] = None
    bead_weight: Optional[Tensor] = None
    edge_index: Optional[Tensor] = None
    edge_shifts: Optional[Tensor] = None

    def to(self, device) -> "Batch":
        """A copy with every tensor on ``device``."""
        moved = {}
        for f in fields(self):
            v = getattr(self, f.name)
            moved[f.name] = v.to(device) if isinstance(v, Tensor) else v
        return Batch(**moved)

    def as_dict(self) -> Dict[str, object]:
        """Plain dict with cgkd.keys names (positions, types, box, forces, energy, node_energy, ...)."""
        out: Dict[str, object] = {
            keys.POSITIONS: self.positions,
            keys.TYPES: self.types,
            "batch": self.batch,
            "n_graphs": self.n_graphs,
            keys.BOX: self.box,
            "frame": self.frame,
            "frame_weight": self.frame_weight,
        }
        for name, key in (
            ("forces", keys.FORCES),
            ("energy", keys.ENERGY),
            ("node_energy", keys.NODE_ENERGY),
            ("bead_weight", "bead_weight"),
            ("edge_index", "edge_index"),
            ("edge_shifts", "edge_shifts"),
        ):
            v = getattr(self, name)
            if v is not None:
                out[key] = v
        return out


def _check(name: str, arr, shape, dtype) -> Optional[np.ndarray]:
    if arr is None:
        return None
    a = np.asarray(arr, dtype=dtype)
    if a.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains non-finite values")
    return a


class FrameLoader:
    """Iterate over batches of frames of a :class:`CGData`.

    Parameters
    ----------
    data : CGData
    batch_size : int
        Frames per batch.
    forces : np.ndarray or None, shape=(F, B, 3), kJ/mol/nm
        Force targets; default ``data.forces`` (pass KD labels, e.g. ensemble mean forces, here).
    energies : np.ndarray or None, shape=(F,), kJ/mol
    node_energies : np.ndarray or None, shape=(F, B), kJ/mol
    frame_weights : np.ndarray or None, shape=(F,); default ones
    bead_weights : np.ndarray or None, shape=(F, B) or (B,)
    frames : np.ndarray or None, shape=(K,), int
        Frames to use (e.g. the training split); default all.
    shuffle : bool
        Shuffle frames every epoch with ``generator`` (a ``torch.Generator``; global RNG untouched).
    generator : torch.Generator or None
    dtype : torch.dtype
        Floating dtype of positions, box and targets.
    drop_last : bool
    """

    def __init__(
        self,
        data: CGData,
        batch_size: int,
        forces=None,
        energies=None,
        node_energies=None,
        frame_weights=None,
        bead_weights=None,
        frames=None,
        shuffle: bool = False,
        generator: Optional[torch.Generator] = None,
        dtype: torch.dtype = torch.float32,
        drop_last: bool = False,
    ):
        if not isinstance(data, CGData):
            raise ValueError(f"data must be a CGData, got {type(data).__name__}")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if shuffle and generator is None:
            raise ValueError("shuffle=True needs a torch.Generator (generator=...) so the global RNG stays untouched")
        f, b = data.n_frames, data.n_beads
        self.data = data
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.generator = generator
        self.dtype = dtype
        self.drop_last = bool(drop_last)
        forces = data.forces if forces is None else forces
        self.forces = _check("forces", forces, (f, b, 3), np.float32)
        self.energies = _check("energies", energies, (f,), np.float64)
        self.node_energies = _check("node_energies", node_energies, (f, b), np.float32)
        self.frame_weights = _check("frame_weights", frame_weights, (f,), np.float64)
        if self.frame_weights is None:
            self.frame_weights = np.ones(f)
        if np.any(self.frame_weights < 0):
            raise ValueError("frame_weights must be >= 0")
        if bead_weights is not None and np.ndim(bead_weights) == 1:
            bead_weights = np.broadcast_to(np.asarray(bead_weights, dtype=np.float64), (f, b))
        self.bead_weights = _check("bead_weights", bead_weights, (f, b), np.float64)
        frames = np.arange(f) if frames is None else np.asarray(frames, dtype=np.int64).reshape(-1)
        if frames.size and (frames.min() < 0 or frames.max() >= f):
            raise ValueError(f"frames must index 0..{f - 1}, got values {frames.min()}..{frames.max()}")
        self.frames = frames

    def __len__(self) -> int:
        n = len(self.frames)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        order = self.frames
        if self.shuffle:
            order = order[torch.randperm(len(order), generator=self.generator).numpy()]
        for start in range(0, len(order), self.batch_size):
            idx = np.sort(order[start : start + self.batch_size])
            if self.drop_last and len(idx) < self.batch_size:
                return
            yield self.make_batch(idx)

    def make_batch(self, idx) -> Batch:
        """The batch of frames ``idx`` (int array)."""
        idx = np.asarray(idx, dtype=np.int64)
        g, b = len(idx), self.data.n_beads
        d = self.data
        t = lambda a: torch.as_tensor(np.ascontiguousarray(a)).to(self.dtype)  # noqa: E731
        box = np.zeros((g, 3, 3), np.float32) if d.box is None else d.box[idx]
        return Batch(
            positions=t(d.positions[idx].reshape(g * b, 3)),
            types=torch.as_tensor(np.tile(d.types, g)),
            batch=torch.repeat_interleave(torch.arange(g), b),
            n_graphs=g,
            box=t(box),
            frame=torch.as_tensor(idx),
            frame_weight=t(self.frame_weights[idx]),
            forces=t(self.forces[idx].reshape(g * b, 3)),
            energy=None if self.energies is None else t(self.energies[idx]),
            node_energy=None if self.node_energies is None else t(self.node_energies[idx].reshape(g * b)),
            bead_weight=None if self.bead_weights is None else t(self.bead_weights[idx].reshape(g * b)),
        )
