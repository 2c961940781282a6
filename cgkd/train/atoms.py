"""Atomistic structures of varying size and composition as batches for the trainer (the ``FrameSet`` contract).

:class:`AtomsSet` holds an :class:`cgkd.io.atoms.AtomsData` as tensors and cuts batches with the keys of
:mod:`cgkd.train.frames`: ``positions (N, 3)``, ``types (N,)`` (element index into ``type_names``), ``batch (N,)``,
``box (G, 3, 3)`` (all zero for a molecule), ``n_graphs``, ``frame (G,)``, ``sample_weight (G,)``, and the
targets: per-atom ones (N, ...) and per-structure ones (G, ...). The labels of the data are the targets
``forces`` (N, 3) kJ/mol/nm and ``energy`` (G,) kJ/mol; others (teacher labels) can be added.
"""

from __future__ import annotations

from typing import Dict, Iterator, Optional, Sequence

import numpy as np
import torch
from torch import Tensor

from cgkd import keys
from cgkd.io.atoms import AtomsData
from cgkd.train.frames import cut_batches
from cgkd.train.losses import SAMPLE_WEIGHT

#: Target key of the structures' own energies (kJ/mol, per structure).
ENERGY_LABEL = "energy"


class AtomsSet:
    """Batches of atomistic structures for :func:`cgkd.train.fit`.

    Parameters
    ----------
    data : AtomsData
    type_names : sequence of str
        Element symbols, in the model's type order; every element of ``data`` must be one of them.
    atom_targets : dict of str -> array, optional
        Extra per-atom targets, shape (n_atoms, ...) in the data's flat atom order (e.g. teacher atom energies).
    structure_targets : dict of str -> array, optional
        Extra per-structure targets, shape (n_structures, ...).
    sample_weight : array, shape=(n_structures,), optional
    dtype : torch.dtype
    """

    def __init__(self, data: AtomsData, type_names: Sequence[str], *, atom_targets: Optional[Dict[str, object]] = None,
                 structure_targets: Optional[Dict[str, object]] = None, sample_weight=None,
                 dtype: torch.dtype = torch.float32):
        from ase.data import atomic_numbers

        if not isinstance(data, AtomsData):
            raise ValueError(f"data must be an AtomsData, got {type(data).__name__}")
        self.data = data
        self.type_names = [str(t) for t in type_names]
        unknown = [e for e in data.elements if e not in self.type_names]
        if unknown:
            raise ValueError(f"data holds elements {unknown} that are not among type_names {self.type_names}")
        lookup = np.full(119, -1, dtype=np.int64)
        for k, name in enumerate(self.type_names):
            if name not in atomic_numbers:
                raise ValueError(f"type_names must be element symbols, got {name!r}")
            lookup[atomic_numbers[name]] = k
        self.dtype = dtype
        self.offsets = torch.as_tensor(data.offsets)
        self.types = torch.as_tensor(lookup[data.numbers])
        self.positions = torch.as_tensor(data.positions, dtype=dtype)
        self.box = torch.as_tensor(data.cells, dtype=dtype)
        self.atom_targets: Dict[str, Tensor] = {}
        self.structure_targets: Dict[str, Tensor] = {}
        if data.forces is not None:
            self.atom_targets[keys.FORCES] = torch.as_tensor(data.forces, dtype=dtype)
        if data.energy is not None:
            self.structure_targets[ENERGY_LABEL] = torch.as_tensor(data.energy, dtype=torch.float64).to(dtype)
        n_atoms, n_struct = int(data.offsets[-1]), data.n_structures
        for name, value in (atom_targets or {}).items():
            t = torch.as_tensor(np.asarray(value))
            if t.shape[0] != n_atoms:
                raise ValueError(f"atom target {name!r} has {t.shape[0]} rows but the data has {n_atoms} atoms")
            self.atom_targets[name] = t.to(dtype) if t.is_floating_point() else t
        for name, value in (structure_targets or {}).items():
            t = torch.as_tensor(np.asarray(value))
            if t.shape[0] != n_struct:
                raise ValueError(f"structure target {name!r} has {t.shape[0]} rows but the data has {n_struct} "
                                 "structures")
            self.structure_targets[name] = t.to(dtype) if t.is_floating_point() else t
        if sample_weight is None:
            self.sample_weight = torch.ones(n_struct, dtype=dtype)
        else:
            self.sample_weight = torch.as_tensor(np.asarray(sample_weight), dtype=dtype)
            if self.sample_weight.shape != (n_struct,) or bool((self.sample_weight < 0).any()):
                raise ValueError(f"sample_weight must have shape ({n_struct},) and be >= 0, got "
                                 f"{tuple(self.sample_weight.shape)}")

    @property
    def n_frames(self) -> int:
        """Number of structures (the trainer's "frames")."""
        return self.data.n_structures

    def to(self, dtype: torch.dtype) -> "AtomsSet":
        """A copy with floating tensors in ``dtype``."""
        out = AtomsSet.__new__(AtomsSet)
        out.__dict__.update(self.__dict__)
        out.dtype = dtype
        out.positions = self.positions.to(dtype)
        out.box = self.box.to(dtype)
        out.sample_weight = self.sample_weight.to(dtype)
        out.atom_targets = {k: v.to(dtype) if v.is_floating_point() else v for k, v in self.atom_targets.items()}
        out.structure_targets = {k: v.to(dtype) if v.is_floating_point() else v
                                 for k, v in self.structure_targets.items()}
        return out

    def atom_index(self, structures: Sequence[int]) -> Tensor:
        """Flat atom indices of ``structures``, in order, shape (N,), int64."""
        idx = torch.as_tensor(np.asarray(structures, dtype=np.int64))
        starts, ends = self.offsets[idx], self.offsets[idx + 1]
        counts = ends - starts
        base = torch.repeat_interleave(starts - torch.cumsum(counts, 0) + counts, counts)
        return base + torch.arange(int(counts.sum()))

    def batch(self, frames: Sequence[int], device: torch.device | str = "cpu") -> Dict[str, Tensor]:
        """The batch dict (module docstring) of structures ``frames``."""
        idx = torch.as_tensor(np.asarray(frames, dtype=np.int64))
        atoms = self.atom_index(idx)
        counts = self.offsets[idx + 1] - self.offsets[idx]
        out: Dict[str, Tensor] = {
            keys.POSITIONS: self.positions[atoms],
            keys.TYPES: self.types[atoms],
            "batch": torch.repeat_interleave(torch.arange(len(idx)), counts),
            keys.BOX: self.box[idx],
            "frame": idx,
            SAMPLE_WEIGHT: self.sample_weight[idx],
        }
        for k, v in self.atom_targets.items():
            out[k] = v[atoms]
        for k, v in self.structure_targets.items():
            out[k] = v[idx]
        out = {k: t.to(device) for k, t in out.items()}
        out["n_graphs"] = len(idx)
        return out

    def batches(self, indices: Sequence[int], batch_size: int, generator: Optional[torch.Generator] = None,
                device: torch.device | str = "cpu", shard: bool = False) -> Iterator[Dict[str, Tensor]]:
        """Batches over ``indices``, shuffled when a generator is given, sharded over ranks with ``shard``
        (as ``FrameSet.batches``)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= self.n_frames):
            raise ValueError(f"structure indices must lie in 0..{self.n_frames - 1}, got {indices.min()}..{indices.max()}")
        if generator is not None:
            indices = indices[torch.randperm(len(indices), generator=generator).numpy()]
        yield from cut_batches(self.batch, indices, batch_size, device, shard)


__all__ = ["AtomsSet", "ENERGY_LABEL"]
