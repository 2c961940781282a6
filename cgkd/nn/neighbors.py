"""Neighbour lists from vesin-torch, for single frames (TorchScript) and batches of frames (training).

Convention (docs/design.md, "Models"): ``edge_index[0] = i`` (the centre that receives the message),
``edge_index[1] = j``; the edge vector is ``positions[j] - positions[i] + edge_shifts`` with
``edge_shifts = S @ box`` for the integer cell shift ``S`` of the pair. Lists are full (every pair
appears as i-j and as j-i). A box that is all zero means "not periodic". Neighbour search runs
without gradients; distances are recomputed from positions (and box) so forces flow through them.
"""

from __future__ import annotations

from typing import Tuple

import torch
import vesin_torch
from torch import Tensor


def neighbor_list(positions: Tensor, box: Tensor, cutoff: float) -> Tuple[Tensor, Tensor]:
    """Full neighbour list of one frame (TorchScript-able).

    Parameters
    ----------
    positions : Tensor, shape=(N, 3), float32 or float64, nm
    box : Tensor, shape=(3, 3), nm
        Box vectors as rows (general triclinic); all zero for a non-periodic system.
    cutoff : float, nm

    Returns
    -------
    edge_index : Tensor, shape=(2, E), int64
    edge_shifts : Tensor, shape=(E, 3), positions.dtype, nm
        Cartesian periodic shift to add to ``positions[j] - positions[i]``; differentiable in ``box``.
    """
    if positions.dim() != 2 or positions.size(1) != 3:
        raise ValueError("positions must have shape (N, 3)")
    if box.dim() != 2 or box.size(0) != 3 or box.size(1) != 3:
        raise ValueError("box must have shape (3, 3)")
    if not cutoff > 0.0:
        raise ValueError("cutoff must be positive")
    box = box.to(positions.dtype)
    periodic = bool((box != 0.0).any())
    calculator = vesin_torch.NeighborList(cutoff, True)
    i, j, cell = calculator.compute(positions.detach(), box.detach(), periodic, "ijS")
    shifts = cell.to(positions.dtype) @ box
    return torch.stack([i.to(torch.int64), j.to(torch.int64)], dim=0), shifts


def batch_neighbor_list(positions: Tensor, box: Tensor, batch: Tensor, n_graphs: int, cutoff: float) -> Tuple[Tensor, Tensor]:
    """Per-frame neighbour lists of a batch, concatenated with node offsets.

    Parameters
    ----------
    positions : Tensor, shape=(N, 3), nm
        Beads of all frames, frame by frame (``batch`` sorted).
    box : Tensor, shape=(n_graphs, 3, 3), nm
        Box of each frame; all zero for non-periodic frames.
    batch : Tensor, shape=(N,), int64
        Frame index of each bead, non-decreasing.
    n_graphs : int
    cutoff : float, nm

    Returns
    -------
    edge_index : Tensor, shape=(2, E), int64
        Indices into the batched ``positions``.
    edge_shifts : Tensor, shape=(E, 3), positions.dtype, nm
    """
    if box.dim() != 3 or box.size(0) != n_graphs or box.size(1) != 3 or box.size(2) != 3:
        raise ValueError(f"box must have shape ({n_graphs}, 3, 3), got {tuple(box.shape)}")
    if batch.dim() != 1 or batch.size(0) != positions.size(0):
        raise ValueError(f"batch must have shape ({positions.size(0)},), got {tuple(batch.shape)}")
    if batch.numel() > 1 and bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("batch must be sorted (beads grouped frame by frame)")
    counts = torch.bincount(batch, minlength=n_graphs)
    if counts.numel() != n_graphs:
        raise ValueError(f"batch refers to frame {counts.numel() - 1} but n_graphs is {n_graphs}")
    starts = torch.cumsum(counts, 0) - counts
    indices = []
    shifts = []
    for g, (start, count) in enumerate(zip(starts.tolist(), counts.tolist())):
        ei, sh = neighbor_list(positions[start : start + count], box[g], cutoff)
        indices.append(ei + start)
        shifts.append(sh)
    if not indices:
        return torch.zeros(2, 0, dtype=torch.int64, device=positions.device), positions.new_zeros(0, 3)
    return torch.cat(indices, dim=1), torch.cat(shifts, dim=0)


def edge_vectors(positions: Tensor, edge_index: Tensor, edge_shifts: Tensor) -> Tensor:
    """``positions[j] - positions[i] + edge_shifts``, shape (E, 3), nm (differentiable)."""
    return positions[edge_index[1]] - positions[edge_index[0]] + edge_shifts
