"""Bias-aware multi-fidelity training: a shared potential plus a learned bias per non-reference fidelity.

Force labels of different fidelities (e.g. mapped forces of a cheap and of an accurate all-atom force field)
disagree systematically. Pooling them teaches the model their average. :class:`MultiFidelityPotential`
models the disagreement instead::

    E_f(x) = E_base(x) + B_f(x),    B_ref = 0,
    B_f(x) = sum_i s_f[t_i] + 1/2 sum_{i != j, r_ij < r_b} sum_k w_f[t_i, t_j, k] g_k(r_ij) fcut(r_ij)

with Gaussian radial functions ``g_k`` on [0, r_b], the cosine cutoff ``fcut`` and learned per-type shifts
``s_f`` (kJ/mol) and pair weights ``w_f`` (kJ/mol). The bias is deliberately small (a pair function per
type pair), so the shared base potential has to carry the many-body physics and the bias can only absorb
a smooth pairwise difference between fidelities. ``base`` alone is the reference-fidelity model: export or
fine-tune it after training (:func:`cgkd.kd.workflows.multi_fidelity`).

The trainer passes the per-frame batch target named in ``batch_inputs`` (``"fidelity"``, (G,) int64) to
:meth:`forward_batch`; frames of the reference fidelity get no bias.
"""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor, nn

from cgkd import keys
from cgkd.nn.neighbors import batch_neighbor_list, edge_vectors
from cgkd.nn.radial import CosineCutoff, GaussianBasis

#: Batch key of the per-frame fidelity index, shape (G,), int64.
FIDELITY = "fidelity"


class MultiFidelityPotential(nn.Module):
    """A base potential plus one learned pairwise bias per non-reference fidelity.

    Parameters
    ----------
    base : nn.Module
        The shared potential with the batched entry point ``forward_batch`` (a :class:`cgkd.nn.CGPotential`).
    n_types : int
        Number of bead types.
    n_fidelities : int
        >= 2; fidelity indices are 0 .. n_fidelities - 1.
    reference : int
        The fidelity the base model stands for (no bias).
    cutoff : float, nm
        Range of the pair bias.
    n_radial : int
        Gaussians in the pair bias.
    """

    batch_inputs = (FIDELITY,)

    def __init__(self, base: nn.Module, n_types: int, n_fidelities: int, reference: int = 0, cutoff: float = 0.8,
                 n_radial: int = 8):
        super().__init__()
        if n_fidelities < 2:
            raise ValueError(f"n_fidelities must be >= 2, got {n_fidelities}")
        if not 0 <= reference < n_fidelities:
            raise ValueError(f"reference must lie in 0..{n_fidelities - 1}, got {reference}")
        if n_types < 1:
            raise ValueError(f"n_types must be >= 1, got {n_types}")
        if not cutoff > 0:
            raise ValueError(f"cutoff must be positive (nm), got {cutoff}")
        self.base = base
        self.n_types = int(n_types)
        self.n_fidelities = int(n_fidelities)
        self.reference = int(reference)
        self.cutoff = float(cutoff)
        self.rbf = GaussianBasis(n_radial, cutoff)
        self.fcut = CosineCutoff(cutoff)
        self.pair_weights = nn.Parameter(torch.zeros(n_fidelities, n_types * n_types, n_radial))
        self.shifts = nn.Parameter(torch.zeros(n_fidelities, n_types))
        active = torch.ones(n_fidelities)
        active[reference] = 0.0
        self.register_buffer("active", active)

    def bias(self, positions: Tensor, types: Tensor, box: Tensor, batch: Tensor, n_graphs: int, fidelity: Tensor) -> Tensor:
        """B_f per frame, shape (G,), kJ/mol (0 for reference-fidelity frames)."""
        fidelity = fidelity.to(torch.int64)
        if fidelity.shape != (n_graphs,):
            raise ValueError(f"fidelity must have shape ({n_graphs},) (one index per frame), got {tuple(fidelity.shape)}")
        if fidelity.numel() and (int(fidelity.min()) < 0 or int(fidelity.max()) >= self.n_fidelities):
            raise ValueError(f"fidelity indices must lie in 0..{self.n_fidelities - 1}, got "
                             f"{int(fidelity.min())}..{int(fidelity.max())}")
        node_f = fidelity[batch]
        gate = self.active.to(positions.dtype)
        shift = self.shifts.to(positions.dtype)[node_f, types] * gate[node_f]
        energy = torch.zeros(n_graphs, dtype=positions.dtype, device=positions.device).index_add(0, batch, shift)
        edge_index, edge_shifts = batch_neighbor_list(positions, box.to(positions.dtype), batch, n_graphs, self.cutoff)
        if edge_index.shape[1] == 0:
            return energy
        i, j = edge_index[0], edge_index[1]
        r = torch.linalg.norm(edge_vectors(positions, edge_index, edge_shifts), dim=-1)
        fi = node_f[i]
        w = self.pair_weights.to(positions.dtype)[fi, types[i] * self.n_types + types[j]]  # (E, K)
        pair = 0.5 * (w * self.rbf(r).to(positions.dtype)).sum(-1) * self.fcut(r) * gate[fi]
        return energy.index_add(0, batch[i], pair)

    def forward_batch(self, positions: Tensor, types: Tensor, box: Tensor, batch: Tensor, n_graphs: int,
                      fidelity: Optional[Tensor] = None, include_bonded: bool = True) -> Dict[str, Tensor]:
        """The base model's outputs with ``keys.ENERGY`` = base + bias (``"fidelity_bias"`` (G,) kJ/mol too).

        ``fidelity=None`` gives the reference fidelity (the base model unchanged). Forces are left to the
        caller (``cgkd.train.model_outputs`` differentiates ``keys.ENERGY``).
        """
        out = dict(self.base.forward_batch(positions, types, box, batch, n_graphs, include_bonded=include_bonded))
        if fidelity is None:
            return out
        b = self.bias(positions, types, box, batch, n_graphs, fidelity)
        out[keys.ENERGY] = out[keys.ENERGY] + b
        out["fidelity_bias"] = b
        return out


__all__ = ["MultiFidelityPotential", "FIDELITY"]
