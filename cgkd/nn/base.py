"""Registries of architectures and priors, the per-type energy scale, and ``build_model``.

Energy scale (how training on kJ/mol forces stays well conditioned): every architecture ends in
:class:`TypeScaleShift`, ``E_i = energy_scale * scale[t_i] * e_i + shift[t_i]`` where ``e_i`` is the
network's dimensionless per-bead output, ``energy_scale`` (kJ/mol) a buffer set from the data
before training (``set_energy_scale``; :func:`energy_scale_from_forces` gives RMS force x 0.1 nm)
and ``scale``/``shift`` learnable per bead type (initialised to 1 and 0). The network itself then
works with O(1) numbers while forces come out in kJ/mol/nm.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor, nn

from cgkd.io.config import from_dict
from cgkd.registry import Registry

#: Representation models by name; each entry is an ``nn.Module`` class with class attributes
#: ``config_class`` (a frozen dataclass) and ``presets`` (dict name -> config).
ARCHITECTURES: Registry = Registry("architectures")
#: Prior energy terms by name; each entry is an ``nn.Module`` class with ``from_config``/``config``.
PRIORS: Registry = Registry("priors")

#: Length used to turn an RMS force into an energy scale, nm.
ENERGY_SCALE_LENGTH = 0.1


class TypeScaleShift(nn.Module):
    """Per-type learnable scale and shift on a global energy scale (kJ/mol)."""

    def __init__(self, n_types: int, energy_scale: float = 1.0):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(n_types))
        self.shift = nn.Parameter(torch.zeros(n_types))
        self.register_buffer("energy_scale", torch.tensor(float(energy_scale)))

    def forward(self, e: Tensor, types: Tensor) -> Tensor:
        return e * self.energy_scale * self.scale[types] + self.shift[types]


def energy_scale_from_forces(forces) -> float:
    """RMS force component (kJ/mol/nm) times 0.1 nm: a kJ/mol scale for :class:`TypeScaleShift`.

    Parameters
    ----------
    forces : np.ndarray, shape=(..., 3), kJ/mol/nm
    """
    f = np.asarray(forces, dtype=np.float64)
    if f.size == 0 or f.shape[-1] != 3:
        raise ValueError(f"forces must be a non-empty array with last dimension 3, got shape {f.shape}")
    rms = float(np.sqrt(np.mean(f * f)))
    if not np.isfinite(rms) or rms <= 0.0:
        raise ValueError(f"forces must be finite and not all zero, RMS is {rms}")
    return rms * ENERGY_SCALE_LENGTH


def resolve_config(arch: str, preset_or_config: Union[str, dict, Any]):
    """The frozen config dataclass of ``arch`` from a preset name, a dict or a config instance."""
    cls = ARCHITECTURES.get(arch)
    if isinstance(preset_or_config, str):
        if preset_or_config not in cls.presets:
            raise ValueError(
                f"preset_or_config: unknown preset {preset_or_config!r} for architecture {arch!r}; "
                f"available presets are {sorted(cls.presets)}"
            )
        return cls.presets[preset_or_config]
    if isinstance(preset_or_config, dict):
        return from_dict(cls.config_class, preset_or_config, where=f"{arch} config")
    if isinstance(preset_or_config, cls.config_class):
        return preset_or_config
    raise ValueError(
        f"preset_or_config must be a preset name, a dict or a {cls.config_class.__name__}, "
        f"got {type(preset_or_config).__name__}"
    )


def build_model(arch: str, preset_or_config: Union[str, dict, Any], n_types: int) -> nn.Module:
    """Build a representation model.

    Parameters
    ----------
    arch : str
        Name in :data:`ARCHITECTURES` ("hipnn", "painn").
    preset_or_config : str, dict or config dataclass
        Preset name ("small", "large"), a dict of config fields or the config itself.
    n_types : int
        Number of bead types.
    """
    if int(n_types) < 1:
        raise ValueError(f"n_types must be >= 1, got {n_types}")
    cfg = resolve_config(arch, preset_or_config)
    return ARCHITECTURES.get(arch)(cfg, int(n_types))


def config_dict(cfg) -> dict:
    """A config dataclass as a plain dict."""
    return dataclasses.asdict(cfg)


def one_hot(types: Tensor, n_types: int, dtype: torch.dtype) -> Tensor:
    """One-hot encoding, shape (N, n_types), ``dtype``."""
    return torch.nn.functional.one_hot(types, n_types).to(dtype)


def edge_geometry(positions: Tensor, edge_index: Tensor, edge_shifts: Tensor):
    """Edge vectors j - i (nm, with periodic shifts), their lengths (E,) and unit vectors (E, 3)."""
    vec = positions[edge_index[1]] - positions[edge_index[0]] + edge_shifts
    r = torch.sqrt((vec * vec).sum(-1))
    return vec, r, vec / r.unsqueeze(-1)


class RepresentationModel(nn.Module):
    """Common base of the architectures: a per-type scale/shift of the node energies (``self.scale_shift``)."""

    scale_shift: TypeScaleShift

    def set_energy_scale(self, value: float) -> None:
        """Set the global energy scale, kJ/mol (see :mod:`cgkd.nn.base`)."""
        if not value > 0:
            raise ValueError(f"energy scale must be positive (kJ/mol), got {value}")
        self.scale_shift.energy_scale.fill_(float(value))
