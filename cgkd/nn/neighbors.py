"""Neighbour lists from vesin-torch, for single frames (TorchScript) and batches of frames (training).

``NeighborList`` is the module form an exported potential holds: one vesin calculator built once and reused
on every MD step, with an optional Verlet skin so the cell search runs only after some bead has moved more
than half the skin (the pairs returned are always exactly those within the cutoff).

Convention (docs/design.md, "Models"): ``edge_index[0] = i`` (the centre that receives the message),
``edge_index[1] = j``; the edge vector is ``positions[j] - positions[i] + edge_shifts`` with
``edge_shifts = S @ box`` for the integer cell shift ``S`` of the pair. Lists are full (every pair
appears as i-j and as j-i). A box that is all zero means "not periodic". Neighbour search runs
without gradients; distances are recomputed from positions (and box) so forces flow through them.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Optional, Tuple

import torch
import vesin_torch
from torch import Tensor, nn

#: Verlet skin (nm) of the neighbour list an exported potential keeps between MD steps.
DEFAULT_SKIN = 0.1


def _check_frame(positions: Tensor, box: Tensor, cutoff: float) -> None:
    if positions.dim() != 2 or positions.size(1) != 3:
        raise ValueError("positions must have shape (N, 3)")
    if box.dim() != 2 or box.size(0) != 3 or box.size(1) != 3:
        raise ValueError("box must have shape (3, 3)")
    if not cutoff > 0.0:
        raise ValueError("cutoff must be positive")


class NeighborList(nn.Module):
    """A full neighbour list that keeps its vesin calculator (and, with a skin, its pairs) between calls.

    Parameters
    ----------
    cutoff : float, nm
    skin : float, nm
        Verlet skin: the cell search is redone only when some bead has moved more than ``skin / 2`` since
        the last search, or the box or the number of beads changed; 0 searches on every call. The result
        is the same either way (pairs within ``cutoff``), only the cost differs.

    ``forward(positions (N, 3) nm, box (3, 3) nm) -> (edge_index (2, E) int64, edge_shifts (E, 3) nm)``,
    as :func:`neighbor_list`. TorchScript-able.

    The scripted module builds its calculator on its first call and keeps it; it is never saved with the
    module, because vesin-torch 0.6 pickles a calculator without its skin (a loaded one would search on
    every call). Eager calls use a shared skin-free calculator and keep nothing.
    """

    def __init__(self, cutoff: float, skin: float = DEFAULT_SKIN):
        super().__init__()
        if not float(cutoff) > 0.0:
            raise ValueError(f"cutoff must be a positive number of nm, got {cutoff}")
        if not float(skin) >= 0.0:
            raise ValueError(f"skin must be a non-negative number of nm, got {skin}")
        self.cutoff = float(cutoff)
        self.skin = float(skin)
        self.calculator = None

    def forward(self, positions: Tensor, box: Tensor) -> Tuple[Tensor, Tensor]:
        if not torch.jit.is_scripting():
            return neighbor_list(positions, box, self.cutoff)
        _check_frame(positions, box, self.cutoff)
        box = box.to(positions.dtype)
        periodic = bool((box != 0.0).any())
        calculator = self.calculator
        if calculator is None:
            calculator = torch.classes.vesin._NeighborList(
                cutoff=self.cutoff, full_list=True, sorted=False, algorithm="auto", skin=self.skin, n_threads=0)
            self.calculator = calculator
        i, j, cell = calculator.compute(points=positions.detach().to(torch.float64),
                                        box=box.detach().to(torch.float64), periodic=torch.tensor(periodic),
                                        quantities="ijS", copy=True)
        shifts = cell.to(positions.dtype) @ box
        return torch.stack([i.to(torch.int64), j.to(torch.int64)], dim=0), shifts

    @torch.jit.export
    def forget(self) -> None:
        """Drop the calculator (and its cached pairs); the next call builds a fresh one."""
        self.calculator = None


# A real (not string) annotation, which TorchScript needs to type the attribute before it is first set.
NeighborList.__annotations__["calculator"] = Optional[torch.classes.vesin._NeighborList]


def forget_neighbor_lists(module) -> None:
    """Call ``forget()`` on every :class:`NeighborList` inside ``module`` (eager or scripted), e.g. before saving."""
    for sub in module.modules():
        if isinstance(sub, NeighborList) or (isinstance(sub, torch.jit.ScriptModule) and
                                            sub.original_name == "NeighborList"):
            sub.forget()


@lru_cache(maxsize=16)
def _cached_calculator(cutoff: float, thread: int):
    return vesin_torch.NeighborList(cutoff, True)


def _calculator(cutoff: float):
    """One skin-free vesin calculator per cutoff and thread for eager code (training batches, analysis).

    A calculator holds buffers between calls, so threads do not share one.
    """
    return _cached_calculator(cutoff, threading.get_ident())


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
    _check_frame(positions, box, cutoff)
    box = box.to(positions.dtype)
    periodic = bool((box != 0.0).any())
    if torch.jit.is_scripting():
        calculator = vesin_torch.NeighborList(cutoff, True)
    else:
        calculator = _calculator(float(cutoff))
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
