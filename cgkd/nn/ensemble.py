"""``EnsemblePotential``: the mean of several ``CGPotential`` members used as one potential.

``E(x) = (1/M) sum_k E_k(x)``, so the forces are the mean of the members' forces. The members share one
neighbour list (they must have the same cutoff) and the same bead types; their bonded priors must be
identical (teachers of one ensemble fit them on the same frames), so the bonded part of the mean is the
bonded part of any member and can be exported as native OpenMM forces like a single ``CGPotential``.
The module is TorchScript-able and has the ``CGPotential.forward`` signature, so
:func:`cgkd.export.export_cg_potential` exports it.
"""

from __future__ import annotations

import json
from typing import Dict, List, Sequence

import torch
from torch import Tensor, nn

from cgkd.nn.neighbors import DEFAULT_SKIN, NeighborList


class EnsemblePotential(nn.Module):
    """Mean energy of ``members`` (``cgkd.nn.CGPotential`` objects).

    Parameters
    ----------
    members : sequence of CGPotential
        At least one; same ``type_names``, same ``cutoff``, same ``bonded_prior_spec()``.
    """

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        members = list(members)
        if len(members) == 0:
            raise ValueError("members must hold at least one CGPotential, got none")
        for k, m in enumerate(members):
            for attr in ("type_names", "cutoff", "model", "nonbonded_priors", "bonded_prior_spec"):
                if not hasattr(m, attr):
                    raise ValueError(f"members[{k}] must be a cgkd.nn.CGPotential, got a {type(m).__name__} without {attr!r}")
        names = list(members[0].type_names)
        cutoff = float(members[0].cutoff)
        bonded = json.dumps(members[0].bonded_prior_spec(), sort_keys=True)
        for k, m in enumerate(members[1:], start=1):
            if list(m.type_names) != names:
                raise ValueError(f"members[{k}] has type_names {list(m.type_names)}, members[0] has {names}")
            if abs(float(m.cutoff) - cutoff) > 1e-12:
                raise ValueError(f"members[{k}] has cutoff {m.cutoff} nm, members[0] has {cutoff} nm; they must share one")
            if json.dumps(m.bonded_prior_spec(), sort_keys=True) != bonded:
                raise ValueError(f"members[{k}] has bonded priors different from members[0]; their mean is not exportable")
        self.members = nn.ModuleList(members)
        self.type_names: List[str] = names
        self.cutoff = cutoff
        self.n_members = len(members)
        self.neighbors = NeighborList(cutoff, DEFAULT_SKIN)

    def forward(self, positions: Tensor, types: Tensor, box: Tensor) -> Tensor:
        """Mean energy of the members for one frame.

        Parameters
        ----------
        positions : Tensor, shape=(N, 3), float32 or float64 (the members' dtype), nm
        types : Tensor, shape=(N,), int64
        box : Tensor, shape=(3, 3), nm; all zero for a non-periodic system

        Returns
        -------
        Tensor, shape=(), kJ/mol
        """
        edge_index, edge_shifts = self.neighbors(positions, box)
        energy = torch.zeros((), dtype=positions.dtype, device=positions.device)
        for member in self.members:
            energy = energy + member.energy_on_edges(positions, types, edge_index, edge_shifts)
        return energy / self.n_members

    @torch.jit.unused
    def bonded_prior_spec(self) -> Dict[str, list]:
        """The members' (identical) bonded priors, see ``CGPotential.bonded_prior_spec``."""
        return self.members[0].bonded_prior_spec()


__all__ = ["EnsemblePotential"]
