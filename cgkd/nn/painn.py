"""PaiNN-like equivariant message passing (Schuett, Unke & Gastegger, ICML 2021).

Scalar features s (N, H) and vector features v (N, 3, H). Message: ``phi(s_j) * W(r_ij) f_c(r_ij)``
split into three channels that update s, carry v_j and create vectors along ``r_hat_ij``. Update:
``U v``, ``V v`` and an MLP of ``[s, |V v|]`` gate the vectors and feed ``<U v, V v>`` back to the
scalars. Readout: per-bead MLP of the last scalars, then the per-type energy scale
(:class:`cgkd.nn.base.TypeScaleShift`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch
from torch import Tensor, nn

from cgkd import keys
from cgkd.nn.base import ARCHITECTURES, RepresentationModel, TypeScaleShift, edge_geometry, one_hot
from cgkd.nn.radial import CosineCutoff, GaussianBasis, activation

#: Added under the square root of |V v| so its gradient is finite when v = 0.
NORM_EPS = 1e-8


@dataclass(frozen=True)
class PaiNNConfig:
    """Hyperparameters of :class:`PaiNN` (cutoff nm, energy_scale kJ/mol)."""

    cutoff: float = 0.8
    n_features: int = 64
    n_interactions: int = 3
    n_radial: int = 16
    r_min: float = 0.1
    activation: str = "silu"
    energy_scale: float = 1.0

    def __post_init__(self):
        if not self.cutoff > 0:
            raise ValueError(f"cutoff must be positive (nm), got {self.cutoff}")
        for name in ("n_features", "n_interactions", "n_radial"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class PaiNNMessage(nn.Module):
    def __init__(self, h: int, n_radial: int, act: nn.Module):
        super().__init__()
        self.h = h
        self.phi = nn.Sequential(nn.Linear(h, h), act, nn.Linear(h, 3 * h))
        self.filter = nn.Linear(n_radial, 3 * h)

    def forward(self, s: Tensor, v: Tensor, rbf: Tensor, fcut: Tensor, unit: Tensor, edge_index: Tensor):
        i = edge_index[0]
        j = edge_index[1]
        h = self.h
        x = self.phi(s)[j] * self.filter(rbf) * fcut.unsqueeze(-1)
        xs = x[:, :h]
        xvv = x[:, h : 2 * h]
        xvs = x[:, 2 * h :]
        ds = torch.zeros_like(s).index_add(0, i, xs)
        dv_edge = v[j] * xvv.unsqueeze(1) + unit.unsqueeze(-1) * xvs.unsqueeze(1)
        dv = torch.zeros_like(v).index_add(0, i, dv_edge)
        return s + ds, v + dv, xs


class PaiNNUpdate(nn.Module):
    def __init__(self, h: int, act: nn.Module):
        super().__init__()
        self.h = h
        self.eps = NORM_EPS
        self.u = nn.Linear(h, h, bias=False)
        self.v = nn.Linear(h, h, bias=False)
        self.mlp = nn.Sequential(nn.Linear(2 * h, h), act, nn.Linear(h, 3 * h))

    def forward(self, s: Tensor, v: Tensor):
        h = self.h
        uv = self.u(v)
        vv = self.v(v)
        norm = torch.sqrt((vv * vv).sum(1) + self.eps)
        a = self.mlp(torch.cat([s, norm], dim=-1))
        avv = a[:, :h]
        asv = a[:, h : 2 * h]
        ass = a[:, 2 * h :]
        v = v + avv.unsqueeze(1) * uv
        s = s + asv * (uv * vv).sum(1) + ass
        return s, v


class PaiNNBlock(nn.Module):
    def __init__(self, h: int, n_radial: int, act: nn.Module):
        super().__init__()
        self.message = PaiNNMessage(h, n_radial, act)
        self.update = PaiNNUpdate(h, act)

    def forward(self, s: Tensor, v: Tensor, rbf: Tensor, fcut: Tensor, unit: Tensor, edge_index: Tensor):
        s, v, edge_features = self.message(s, v, rbf, fcut, unit, edge_index)
        s, v = self.update(s, v)
        return s, v, edge_features


@ARCHITECTURES.register("painn")
class PaiNN(RepresentationModel):
    """PaiNN-like equivariant CG potential; see the module docstring.

    ``forward`` follows docs/design.md ("Models") and returns NODE_ENERGY (N,) kJ/mol,
    NODE_FEATURES (N, H), VECTOR_FEATURES (N, 3, H) and EDGE_FEATURES (E, H).
    """

    config_class = PaiNNConfig
    presets: Dict[str, PaiNNConfig] = {
        "small": PaiNNConfig(n_features=16, n_interactions=1, n_radial=8),
        "medium": PaiNNConfig(n_features=32, n_interactions=2, n_radial=12),
        "large": PaiNNConfig(n_features=64, n_interactions=3, n_radial=16),
    }

    def __init__(self, config: PaiNNConfig, n_types: int):
        super().__init__()
        self.config = config
        self.n_types = n_types
        self.cutoff = float(config.cutoff)
        h = config.n_features
        self.h = h
        act = activation(config.activation)
        self.embedding = nn.Linear(n_types, h, bias=False)
        self.rbf = GaussianBasis(config.n_radial, config.cutoff, config.r_min)
        self.fcut = CosineCutoff(config.cutoff)
        self.blocks = nn.ModuleList([PaiNNBlock(h, config.n_radial, act) for _ in range(config.n_interactions)])
        self.readout = nn.Sequential(nn.Linear(h, h), act, nn.Linear(h, 1))
        self.scale_shift = TypeScaleShift(n_types, config.energy_scale)

    def forward(
        self, positions: Tensor, types: Tensor, edge_index: Tensor, edge_shifts: Tensor, batch: Tensor, n_graphs: int
    ) -> Dict[str, Tensor]:
        _, r, unit = edge_geometry(positions, edge_index, edge_shifts)
        rbf = self.rbf(r)
        fcut = self.fcut(r)
        s = self.embedding(one_hot(types, self.n_types, positions.dtype))
        v = torch.zeros(s.size(0), 3, self.h, dtype=s.dtype, device=s.device)
        edge_features = torch.zeros(edge_index.size(1), self.h, dtype=s.dtype, device=s.device)
        for block in self.blocks:
            s, v, edge_features = block(s, v, rbf, fcut, unit, edge_index)
        node_energy = self.scale_shift(self.readout(s).squeeze(-1), types)
        return {
            keys.NODE_ENERGY: node_energy,
            keys.NODE_FEATURES: s,
            keys.VECTOR_FEATURES: v,
            keys.EDGE_FEATURES: edge_features,
        }
