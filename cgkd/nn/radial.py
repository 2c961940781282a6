"""Radial sensitivity functions and the smooth cosine cutoff shared by the architectures."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class CosineCutoff(nn.Module):
    """``f(r) = 0.5 (cos(pi r / r_c) + 1)`` for r < r_c, else 0; smooth (C1) at the cutoff."""

    def __init__(self, cutoff: float):
        super().__init__()
        self.cutoff = float(cutoff)

    def forward(self, r: Tensor) -> Tensor:
        f = 0.5 * (torch.cos(r * (math.pi / self.cutoff)) + 1.0)
        return torch.where(r < self.cutoff, f, torch.zeros_like(f))


class GaussianBasis(nn.Module):
    """``n_radial`` Gaussians with centres evenly spaced on [r_min, cutoff], width = spacing.

    Input distances r, shape (E,), nm; output shape (E, n_radial), dimensionless.
    """

    def __init__(self, n_radial: int, cutoff: float, r_min: float = 0.0):
        super().__init__()
        if n_radial < 1:
            raise ValueError(f"n_radial must be >= 1, got {n_radial}")
        if not 0.0 <= r_min < cutoff:
            raise ValueError(f"r_min must lie in [0, cutoff={cutoff}), got {r_min}")
        centres = torch.linspace(r_min, cutoff, n_radial, dtype=torch.float64)
        width = (cutoff - r_min) / max(n_radial - 1, 1)
        self.register_buffer("centres", centres.to(torch.get_default_dtype()))
        self.inv_two_width2 = 1.0 / (2.0 * width * width)

    def forward(self, r: Tensor) -> Tensor:
        d = r.unsqueeze(-1) - self.centres
        return torch.exp(-self.inv_two_width2 * d * d)


def activation(name: str) -> nn.Module:
    """Activation module by name: silu, tanh, softplus, gelu."""
    table = {"silu": nn.SiLU, "tanh": nn.Tanh, "softplus": nn.Softplus, "gelu": nn.GELU}
    if name not in table:
        raise ValueError(f"activation must be one of {sorted(table)}, got {name!r}")
    return table[name]()
