"""Frames of one CG system as tensors, with targets and weights, cut into batches for the trainer.

All frames of a CG system share one topology (same beads, same types), so a batch of G frames is
the frames' beads concatenated: N = G * n_beads. A batch is a plain ``dict``:

=================  ==============  ======================================================
key                shape           meaning
=================  ==============  ======================================================
positions          (N, 3)          nm, dtype of the set
types              (N,) int64      bead type indices
batch              (N,) int64      frame (graph) index of each bead inside the batch
box                (G, 3, 3)       nm, rows are box vectors; all zero for non-periodic
n_graphs           int             G
frame              (G,) int64      index of each frame in the set
sample_weight      (G,)            per-frame weights
bead_weight        (N,)            per-bead weights (only if the set has them)
<target>           (N, ...)        per-bead targets (arrays shaped (F, B, ...))
<target>           (G, ...)        per-frame targets (arrays shaped (F,) or (F, k) with k != B)
=================  ==============  ======================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from cgkd import keys
from cgkd.train.losses import BEAD_WEIGHT, SAMPLE_WEIGHT


def cut_batches(make_batch, indices: np.ndarray, batch_size: int, device, shard: bool) -> Iterator[Dict[str, Tensor]]:
    """``make_batch(frames, device=)`` of consecutive slices of ``indices``; with ``shard`` each batch is this
    rank's part of the global batch (:func:`cgkd.train.distributed.shard`), a rank left without frames getting
    one frame of weight zero."""
    for start in range(0, len(indices), batch_size):
        frames = indices[start : start + batch_size]
        stand_in = False
        if shard:
            from cgkd.train.distributed import shard as rank_part

            frames, stand_in = rank_part(frames)
        out = make_batch(frames, device=device)
        if stand_in:
            out[SAMPLE_WEIGHT] = torch.zeros_like(out[SAMPLE_WEIGHT])
        yield out


@dataclass
class FrameSet:
    """Frames and targets of one CG system.

    Attributes
    ----------
    positions : torch.Tensor, shape=(F, B, 3), nm
    types : torch.Tensor, shape=(B,), int64
    box : torch.Tensor or None, shape=(F, 3, 3), nm
    targets : dict of str -> torch.Tensor
        Each of shape (F, B, ...) (per bead) or (F, ...) (per frame); units of the quantity
        (forces kJ/mol/nm, energies kJ/mol).
    sample_weight : torch.Tensor or None, shape=(F,)
    bead_weight : torch.Tensor or None, shape=(F, B)
    """

    positions: Tensor
    types: Tensor
    box: Optional[Tensor] = None
    targets: Dict[str, Tensor] = field(default_factory=dict)
    sample_weight: Optional[Tensor] = None
    bead_weight: Optional[Tensor] = None

    def __post_init__(self):
        self.positions = torch.as_tensor(self.positions)
        self.types = torch.as_tensor(self.types, dtype=torch.int64)
        if self.positions.dim() != 3 or self.positions.shape[2] != 3:
            raise ValueError(f"positions must have shape (n_frames, n_beads, 3), got {tuple(self.positions.shape)}")
        f, b, _ = self.positions.shape
        if self.types.shape != (b,):
            raise ValueError(f"types must have shape ({b},), got {tuple(self.types.shape)}")
        if self.box is not None:
            self.box = torch.as_tensor(self.box, dtype=self.positions.dtype)
            if self.box.shape != (f, 3, 3):
                raise ValueError(f"box must have shape ({f}, 3, 3), got {tuple(self.box.shape)}")
        self.targets = {k: torch.as_tensor(v) for k, v in self.targets.items()}
        for k, v in self.targets.items():
            if v.shape[0] != f:
                raise ValueError(f"target {k!r} has {v.shape[0]} frames but positions has {f}")
        if self.sample_weight is not None:
            self.sample_weight = torch.as_tensor(self.sample_weight, dtype=self.positions.dtype)
            if self.sample_weight.shape != (f,):
                raise ValueError(f"sample_weight must have shape ({f},), got {tuple(self.sample_weight.shape)}")
            if torch.any(self.sample_weight < 0):
                raise ValueError("sample_weight must be >= 0")
        if self.bead_weight is not None:
            self.bead_weight = torch.as_tensor(self.bead_weight, dtype=self.positions.dtype)
            if self.bead_weight.shape != (f, b):
                raise ValueError(f"bead_weight must have shape ({f}, {b}), got {tuple(self.bead_weight.shape)}")
            if torch.any(self.bead_weight < 0):
                raise ValueError("bead_weight must be >= 0")

    @property
    def n_frames(self) -> int:
        return self.positions.shape[0]

    @property
    def n_beads(self) -> int:
        return self.positions.shape[1]

    def to(self, dtype: torch.dtype) -> "FrameSet":
        """A copy with floating tensors in ``dtype`` (integer tensors unchanged)."""

        def conv(t):
            return None if t is None else (t.to(dtype) if t.is_floating_point() else t)

        return FrameSet(
            positions=conv(self.positions),
            types=self.types,
            box=conv(self.box),
            targets={k: conv(v) for k, v in self.targets.items()},
            sample_weight=conv(self.sample_weight),
            bead_weight=conv(self.bead_weight),
        )

    def batch(self, frames: Sequence[int], device: torch.device | str = "cpu") -> Dict[str, Tensor]:
        """The batch dict (see module docstring) of ``frames``."""
        idx = torch.as_tensor(np.asarray(frames, dtype=np.int64))
        g, b = len(idx), self.n_beads
        out: Dict[str, Tensor] = {
            keys.POSITIONS: self.positions[idx].reshape(g * b, 3),
            keys.TYPES: self.types.repeat(g),
            "batch": torch.arange(g).repeat_interleave(b),
            keys.BOX: self.box[idx] if self.box is not None else torch.zeros(g, 3, 3, dtype=self.positions.dtype),
            "frame": idx,
            SAMPLE_WEIGHT: (
                self.sample_weight[idx] if self.sample_weight is not None else torch.ones(g, dtype=self.positions.dtype)
            ),
        }
        if self.bead_weight is not None:
            out[BEAD_WEIGHT] = self.bead_weight[idx].reshape(g * b)
        for k, v in self.targets.items():
            sel = v[idx]
            if v.dim() >= 2 and v.shape[1] == b:
                sel = sel.reshape(g * b, *v.shape[2:])
            out[k] = sel
        out = {k: t.to(device) for k, t in out.items()}
        out["n_graphs"] = g
        return out

    def batches(
        self,
        indices: Sequence[int],
        batch_size: int,
        generator: Optional[torch.Generator] = None,
        device: torch.device | str = "cpu",
        shard: bool = False,
    ) -> Iterator[Dict[str, Tensor]]:
        """Batches over ``indices`` (repeats allowed, e.g. a bootstrap resample), shuffled when a generator is given.

        With ``shard`` each batch is this rank's part of the global batch (:func:`cgkd.train.distributed.shard`).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= self.n_frames):
            raise ValueError(f"frame indices must lie in 0..{self.n_frames - 1}, got {indices.min()}..{indices.max()}")
        if generator is not None:
            order = torch.randperm(len(indices), generator=generator).numpy()
            indices = indices[order]
        yield from cut_batches(self.batch, indices, batch_size, device, shard)


def frameset_from_cg(data, targets: Optional[Dict[str, np.ndarray]] = None, dtype: torch.dtype = torch.float32) -> FrameSet:
    """A :class:`FrameSet` of a :class:`cgkd.data.cg_h5.CGData` with the mapped forces as target ``forces``.

    Parameters
    ----------
    data : CGData
    targets : dict of str -> np.ndarray, optional
        Extra targets (labels), each with the frames on the first axis.
    """
    t = {keys.FORCES: torch.from_numpy(np.asarray(data.forces)).to(dtype)}
    for k, v in (targets or {}).items():
        arr = torch.from_numpy(np.asarray(v))
        t[k] = arr.to(dtype) if arr.is_floating_point() else arr
    return FrameSet(
        positions=torch.from_numpy(np.asarray(data.positions)).to(dtype),
        types=torch.from_numpy(np.array(data.types)),  # a writable copy of the topology's types
        box=None if data.box is None else torch.from_numpy(np.asarray(data.box)).to(dtype),
        targets=t,
    )


class StreamingFrameSet:
    """The frames of a CG dataset file read batch by batch: memory for about two chunks of frames, not the file.

    Drop-in for :class:`FrameSet` in :func:`cgkd.train.fit` (``n_frames``, ``n_beads``, ``to``, ``batch``,
    ``batches``). Shuffling is by chunk: the order of the chunks of ``chunk_frames`` consecutive frames is
    drawn from the generator, then the order of the requested frames inside each chunk, so each chunk is
    read once per epoch. (Frames next to each other in a trajectory are correlated anyway; a chunk much
    shorter than the training set keeps the batches mixed.) The batches hold the same arrays as
    :meth:`FrameSet.batch` of the same frames.

    Parameters
    ----------
    path : path
        A ``cgkd-cg`` file.
    targets : dict of str -> str, optional
        Batch key -> dataset in the file (``forces``, or ``labels/mean_forces`` for ensemble labels); default
        the mapped forces as ``forces``.
    chunk_frames : int
    dtype : torch.dtype
    """

    def __init__(self, path, targets: Optional[Dict[str, str]] = None, chunk_frames: int = 256,
                 dtype: torch.dtype = torch.float32):
        from cgkd.data.cg_h5 import n_frames, read_topology

        if isinstance(chunk_frames, bool) or not isinstance(chunk_frames, (int, np.integer)) or chunk_frames < 1:
            raise ValueError(f"chunk_frames must be a positive integer, got {chunk_frames!r}")
        self.path = str(path)
        self.targets = dict(targets) if targets is not None else {keys.FORCES: keys.FORCES}
        self.chunk_frames = int(chunk_frames)
        self.dtype = dtype
        self._n = n_frames(path)
        self.types = torch.as_tensor(np.array(read_topology(path).types), dtype=torch.int64)
        self._cache: Dict[int, FrameSet] = {}

    @property
    def n_frames(self) -> int:
        return self._n

    @property
    def n_beads(self) -> int:
        return int(self.types.shape[0])

    def to(self, dtype: torch.dtype) -> "StreamingFrameSet":
        out = StreamingFrameSet.__new__(StreamingFrameSet)
        out.__dict__.update(self.__dict__)
        out.dtype, out._cache = dtype, {}
        return out

    def _chunk(self, c: int) -> FrameSet:
        if c not in self._cache:
            from cgkd.data.cg_h5 import read_frames

            if len(self._cache) >= 2:  # the chunk being served and the next one
                self._cache.pop(next(iter(self._cache)))
            a, b = c * self.chunk_frames, min((c + 1) * self.chunk_frames, self._n)
            arr = read_frames(self.path, np.arange(a, b), names=sorted(set(self.targets.values())))
            conv = lambda x: torch.from_numpy(np.ascontiguousarray(x)).to(self.dtype)  # noqa: E731
            self._cache[c] = FrameSet(positions=conv(arr[keys.POSITIONS]), types=self.types,
                                      box=conv(arr[keys.BOX]) if keys.BOX in arr else None,
                                      targets={k: conv(arr[v]) for k, v in self.targets.items()})
        return self._cache[c]

    def batch(self, frames: Sequence[int], device: torch.device | str = "cpu") -> Dict[str, Tensor]:
        """The batch dict of ``frames`` (global frame indices), as :meth:`FrameSet.batch`."""
        idx = np.asarray(frames, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= self._n):
            raise ValueError(f"frame indices must lie in 0..{self._n - 1}, got {idx.min()}..{idx.max()}")
        parts = []
        for c in np.unique(idx // self.chunk_frames):
            parts.append(self._chunk(int(c)))
        if len(parts) == 1:
            fs, local = parts[0], idx - (idx[0] // self.chunk_frames) * self.chunk_frames
        else:  # a batch across chunk boundaries: stack the frames it needs
            rows = [self._chunk(int(i // self.chunk_frames)) for i in idx]
            off = [int(i % self.chunk_frames) for i in idx]
            pick = lambda t: None if getattr(rows[0], t) is None else torch.stack(  # noqa: E731
                [getattr(r, t)[o] for r, o in zip(rows, off)])
            fs = FrameSet(positions=pick("positions"), types=self.types, box=pick("box"),
                          targets={k: torch.stack([r.targets[k][o] for r, o in zip(rows, off)]) for k in self.targets})
            local = np.arange(len(idx))
        out = fs.batch(local, device=device)
        out["frame"] = torch.as_tensor(idx).to(device)
        return out

    def batches(self, indices: Sequence[int], batch_size: int, generator: Optional[torch.Generator] = None,
                device: torch.device | str = "cpu", shard: bool = False) -> Iterator[Dict[str, Tensor]]:
        """Batches over ``indices`` (repeats allowed), shuffled by chunk when a generator is given."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= self._n):
            raise ValueError(f"frame indices must lie in 0..{self._n - 1}, got {indices.min()}..{indices.max()}")
        if generator is not None:
            chunk_of = indices // self.chunk_frames
            chunks = np.unique(chunk_of)
            order = []
            for c in chunks[torch.randperm(len(chunks), generator=generator).numpy()]:
                mine = indices[chunk_of == c]
                order.append(mine[torch.randperm(len(mine), generator=generator).numpy()])
            indices = np.concatenate(order) if order else indices
        yield from cut_batches(self.batch, indices, batch_size, device, shard)


__all__ = ["FrameSet", "StreamingFrameSet", "frameset_from_cg"]
