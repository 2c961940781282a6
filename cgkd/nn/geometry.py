"""Torch twins of :mod:`cgkd.geometry` for use inside models (TorchScript-able, differentiable).

Same conventions as the numpy module, and tested to agree with it: box rows are box vectors; a box
in OpenMM's reduced (lower-triangular) form is reduced c, b, a in turn as OpenMM does, any other by
rounding fractional coordinates; an all-zero box means no periodicity. Dihedrals have the IUPAC
sign that OpenMM's ``PeriodicTorsionForce`` uses.
"""

from __future__ import annotations

import torch
from torch import Tensor


def minimum_image(d: Tensor, box: Tensor) -> Tensor:
    """Minimum-image vectors.

    Parameters
    ----------
    d : Tensor, shape=(T, 3), nm
    box : Tensor, shape=(T, 3, 3) (one box per vector) or (3, 3), nm; all zeros: non-periodic

    Returns
    -------
    Tensor, shape=(T, 3), nm (gradients flow through ``d``)
    """
    if box.dim() == 2:
        box = box.unsqueeze(0).expand(d.size(0), 3, 3)
    box = box.to(d.dtype)
    periodic = (box != 0.0).flatten(1).any(1)
    reduced = (box[:, 0, 1] == 0.0) & (box[:, 0, 2] == 0.0) & (box[:, 1, 2] == 0.0)
    eye = torch.eye(3, dtype=d.dtype, device=d.device).expand_as(box)
    safe = torch.where(periodic.view(-1, 1, 1), box, eye)
    # OpenMM's reduction for lower-triangular boxes: c, then b, then a
    seq = d
    for k in [2, 1, 0]:
        n = torch.round(seq[:, k] / safe[:, k, k]).detach()
        seq = seq - n.unsqueeze(-1) * safe[:, k, :]
    # fractional rounding for any other box
    inv = torch.linalg.inv(safe)
    frac = torch.bmm(d.unsqueeze(1), inv).squeeze(1)
    gen = d - torch.bmm(torch.round(frac).detach().unsqueeze(1), safe).squeeze(1)
    out = torch.where(reduced.unsqueeze(-1), seq, gen)
    return torch.where(periodic.unsqueeze(-1), out, d)


def bond_vectors(positions: Tensor, i: Tensor, j: Tensor, box: Tensor) -> Tensor:
    """``x_j - x_i`` at the minimum image; ``box`` (T, 3, 3) per term or (3, 3)."""
    return minimum_image(positions[j] - positions[i], box)


def distances(positions: Tensor, pairs: Tensor, box: Tensor) -> Tensor:
    """Distances (T,) nm of pairs (T, 2)."""
    d = bond_vectors(positions, pairs[:, 0], pairs[:, 1], box)
    return torch.sqrt((d * d).sum(-1))


def angles(positions: Tensor, triplets: Tensor, box: Tensor, clamp: float = 1.0 - 1e-7) -> Tensor:
    """Angles i-j-k (T,) radians; the cosine is clamped to +-``clamp`` so the gradient stays finite."""
    a = bond_vectors(positions, triplets[:, 1], triplets[:, 0], box)
    b = bond_vectors(positions, triplets[:, 1], triplets[:, 2], box)
    cos = (a * b).sum(-1) / torch.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    return torch.acos(torch.clamp(cos, -clamp, clamp))


def dihedrals(positions: Tensor, quadruples: Tensor, box: Tensor) -> Tensor:
    """IUPAC dihedrals (T,) radians in (-pi, pi] (as OpenMM and :func:`cgkd.geometry.dihedrals`)."""
    b1 = bond_vectors(positions, quadruples[:, 0], quadruples[:, 1], box)
    b2 = bond_vectors(positions, quadruples[:, 1], quadruples[:, 2], box)
    b3 = bond_vectors(positions, quadruples[:, 2], quadruples[:, 3], box)
    n1 = torch.cross(b1, b2, dim=-1)
    n2 = torch.cross(b2, b3, dim=-1)
    y = torch.sqrt((b2 * b2).sum(-1)) * (b1 * n2).sum(-1)
    x = (n1 * n2).sum(-1)
    return torch.atan2(y, x)


__all__ = ["angles", "bond_vectors", "dihedrals", "distances", "minimum_image"]
