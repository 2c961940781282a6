"""HIP-NN-like invariant message passing (Lubbers, Smith & Barros, J. Chem. Phys. 148, 241715 (2018)).

Type embedding (one-hot -> linear), Gaussian radial sensitivities times a cosine cutoff, several
interaction layers each followed by residual atom (MLP) layers, and HIP-NN's hierarchical energy:
every layer (the embedding included) has its own linear energy head and the per-bead energy is
the sum of all heads. The interaction message is factorised SchNet-style,
``m_ij = (W_s s(r_ij) f_c(r_ij)) * (W_z z_j)``; with ``tensor_order`` 1 or 2 the l=1 (``r_hat``)
and l=2 (traceless ``r_hat r_hat^T``) sensitivities of HIP-NN-TS add the squared norms of the
summed vector/tensor messages (``n_tensor_features`` channels, mixed linearly) to the invariant update.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import torch
from torch import Tensor, nn

from cgkd import keys
from cgkd.nn.base import ARCHITECTURES, RepresentationModel, TypeScaleShift
from cgkd.nn.radial import CosineCutoff, GaussianBasis, activation


@dataclass(frozen=True)
class HIPNNConfig:
    """Hyperparameters of :class:`HIPNN`.

    cutoff : nm; n_features : hidden width H; n_interactions : interaction layers;
    n_atom_layers : residual MLP layers after each interaction; n_radial : Gaussian sensitivities;
    r_min : first Gaussian centre, nm; activation : silu/tanh/softplus/gelu;
    tensor_order : 0 (invariant), 1 (+ l=1) or 2 (+ l=1, l=2); n_tensor_features : channels of
    each tensor sensitivity (their squared norms are mixed back to H by a linear layer; fewer
    channels than H keep the (E, 3, C) / (E, 9, C) messages cheap); energy_scale : kJ/mol.
    """

    cutoff: float = 0.8
    n_features: int = 64
    n_interactions: int = 2
    n_atom_layers: int = 2
    n_radial: int = 16
    r_min: float = 0.1
    activation: str = "silu"
    tensor_order: int = 0
    n_tensor_features: int = 8
    energy_scale: float = 1.0

    def __post_init__(self):
        if not self.cutoff > 0:
            raise ValueError(f"cutoff must be positive (nm), got {self.cutoff}")
        for name in ("n_features", "n_interactions", "n_radial", "n_tensor_features"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_atom_layers < 0:
            raise ValueError(f"n_atom_layers must be >= 0, got {self.n_atom_layers}")
        if self.tensor_order not in (0, 1, 2):
            raise ValueError(f"tensor_order must be 0, 1 or 2, got {self.tensor_order}")


class HIPInteraction(nn.Module):
    """One interaction layer: invariant (and optional l=1, l=2 tensor) messages summed on centres."""

    def __init__(self, n_in: int, n_out: int, n_radial: int, tensor_order: int, n_tensor: int):
        super().__init__()
        n_channels = n_out + n_tensor * tensor_order
        self.n_out = n_out
        self.n_tensor = n_tensor
        self.tensor_order = tensor_order
        self.radial = nn.Linear(n_radial, n_channels)
        self.neighbour = nn.Linear(n_in, n_channels, bias=False)
        self.self_term = nn.Linear(n_in, n_out)
        self.tensor_mix = nn.Linear(n_tensor * max(tensor_order, 1), n_out, bias=False)

    def forward(self, z: Tensor, radial_in: Tensor, unit: Tensor, edge_index: Tensor):
        """``radial_in``: (E, n_radial + 1), the sensitivities times the cutoff function, then the cutoff
        function itself, so one matrix product gives ``(W_s s(r) + b) f_c(r)``."""
        i = edge_index[0]
        j = edge_index[1]
        n = z.size(0)
        h = self.n_out
        c = self.n_tensor
        weight = torch.cat([self.radial.weight.t(), self.radial.bias.unsqueeze(0)], dim=0)
        w = (radial_in @ weight) * self.neighbour(z).index_select(0, j)  # (E, h + c * tensor_order)
        m0 = w if self.tensor_order == 0 else w[:, :h]  # a slice would cost a zero-filled copy in backward
        out = self.self_term(z) + torch.zeros(n, h, dtype=z.dtype, device=z.device).index_add(0, i, m0)
        if self.tensor_order >= 1:
            w1 = w[:, h : h + c]
            v = torch.zeros(n, 3, c, dtype=z.dtype, device=z.device)
            v = v.index_add(0, i, unit.unsqueeze(-1) * w1.unsqueeze(1))
            invariants = [(v * v).sum(1)]
            if self.tensor_order >= 2:
                w2 = w[:, h + c : h + 2 * c]
                eye = torch.eye(3, dtype=z.dtype, device=z.device).reshape(1, 9)
                q = (unit.unsqueeze(2) * unit.unsqueeze(1)).reshape(-1, 9) - eye / 3.0  # (E, 9)
                t = torch.zeros(n, 9, c, dtype=z.dtype, device=z.device)
                t = t.index_add(0, i, q.unsqueeze(-1) * w2.unsqueeze(1))
                invariants.append((t * t).sum(1))
            out = out + self.tensor_mix(torch.cat(invariants, dim=-1))
        return out, m0


class HIPBlock(nn.Module):
    """Interaction, residual atom layers and this layer's energy head."""

    def __init__(self, h: int, n_radial: int, tensor_order: int, n_tensor: int, n_atom_layers: int, act: nn.Module):
        super().__init__()
        self.interaction = HIPInteraction(h, h, n_radial, tensor_order, n_tensor)
        self.atom_layers = nn.ModuleList([nn.Linear(h, h) for _ in range(n_atom_layers)])
        self.head = nn.Linear(h, 1)
        self.act = act

    def forward(self, z: Tensor, radial_in: Tensor, unit: Tensor, edge_index: Tensor):
        out, edge_features = self.interaction(z, radial_in, unit, edge_index)
        z = self.act(out)
        for lin in self.atom_layers:
            z = z + self.act(lin(z))
        return z, self.head(z).squeeze(-1), edge_features


@ARCHITECTURES.register("hipnn")
class HIPNN(RepresentationModel):
    """HIP-NN-like invariant CG potential; see the module docstring.

    ``forward`` follows docs/design.md ("Models") and returns NODE_ENERGY (N,) kJ/mol,
    NODE_FEATURES (N, H) and EDGE_FEATURES (E, H) (messages of the last interaction).
    """

    config_class = HIPNNConfig
    presets: Dict[str, HIPNNConfig] = {
        "small": HIPNNConfig(n_features=16, n_interactions=1, n_atom_layers=1, n_radial=8),
        "medium": HIPNNConfig(n_features=32, n_interactions=2, n_atom_layers=1, n_radial=12, tensor_order=1),
        "large": HIPNNConfig(
            n_features=64, n_interactions=3, n_atom_layers=2, n_radial=16, tensor_order=1, n_tensor_features=16
        ),
    }

    def __init__(self, config: HIPNNConfig, n_types: int):
        super().__init__()
        self.config = config
        self.n_types = n_types
        self.cutoff = float(config.cutoff)
        self.tensor_order = int(config.tensor_order)
        h = config.n_features
        self.embedding = nn.Linear(n_types, h, bias=False)
        self.rbf = GaussianBasis(config.n_radial, config.cutoff, config.r_min)
        self.fcut = CosineCutoff(config.cutoff)
        self.act = activation(config.activation)
        self.head0 = nn.Linear(h, 1)
        self.blocks = nn.ModuleList(
            [
                HIPBlock(h, config.n_radial, config.tensor_order, config.n_tensor_features, config.n_atom_layers, self.act)
                for _ in range(config.n_interactions)
            ]
        )
        self.scale_shift = TypeScaleShift(n_types, config.energy_scale)

    def forward(
        self, positions: Tensor, types: Tensor, edge_index: Tensor, edge_shifts: Tensor, batch: Tensor, n_graphs: int
    ) -> Dict[str, Tensor]:
        vec = positions.index_select(0, edge_index[1]) - positions.index_select(0, edge_index[0]) + edge_shifts
        r = torch.sqrt((vec * vec).sum(-1))
        # unit vectors only feed the tensor sensitivities
        unit = vec / r.unsqueeze(-1) if self.tensor_order > 0 else vec
        fcut = self.fcut(r).unsqueeze(-1)
        radial_in = torch.cat([self.rbf(r) * fcut, fcut], dim=1)
        z = self.embedding.weight.t().index_select(0, types).to(positions.dtype)  # = one-hot @ W^T
        e = self.head0(z).squeeze(-1)
        edge_features = z.new_zeros(0, z.size(1))  # n_interactions >= 1: replaced by the last block's messages
        for block in self.blocks:
            z, e_layer, edge_features = block(z, radial_in, unit, edge_index)
            e = e + e_layer
        node_energy = self.scale_shift(e, types)
        return {keys.NODE_ENERGY: node_energy, keys.NODE_FEATURES: z, keys.EDGE_FEATURES: edge_features}
