"""A reference pair potential with the ``CGPotential.forward`` signature.

:class:`LennardJonesPair` is a TorchScript-able shifted Lennard-Jones potential between bead types,
with the neighbour list computed inside by vesin-torch. It serves two purposes: it lets the export
and OpenMM layers be tested without a trained network, and it is a physics-based "control" model
for AA-vs-CG comparisons.
"""

from __future__ import annotations

from typing import List, Sequence

import numpy as np
import torch
import vesin_torch


class LennardJonesPair(torch.nn.Module):
    """Shifted Lennard-Jones pair potential per bead-type pair (energy is zero at the cutoff).

    ``E = sum_{i<j, r_ij < cutoff} 4 eps_ab [(sig_ab/r)^12 - (sig_ab/r)^6] - shift_ab``

    Parameters
    ----------
    type_names : sequence of str
        Bead type names; the type index of a bead indexes this list.
    sigma : array-like, shape=(n_types, n_types), float, nm
        Symmetric size parameters.
    epsilon : array-like, shape=(n_types, n_types), float, kJ/mol
        Symmetric well depths.
    cutoff : float, nm
    """

    def __init__(self, type_names: Sequence[str], sigma, epsilon, cutoff: float):
        super().__init__()
        n = len(type_names)
        sigma = np.asarray(sigma, dtype=np.float64)
        epsilon = np.asarray(epsilon, dtype=np.float64)
        for name, arr in (("sigma", sigma), ("epsilon", epsilon)):
            if arr.shape != (n, n):
                raise ValueError(f"{name} must have shape ({n}, {n}) for {n} types, got {arr.shape}")
            if not np.allclose(arr, arr.T):
                raise ValueError(f"{name} must be symmetric, got {arr.tolist()}")
        if np.any(sigma <= 0):
            raise ValueError(f"sigma must be positive, got {sigma.tolist()}")
        if not cutoff > 0:
            raise ValueError(f"cutoff must be positive (nm), got {cutoff}")
        self.type_names: List[str] = list(type_names)
        self.cutoff: float = float(cutoff)
        self.register_buffer("sigma", torch.tensor(sigma))
        self.register_buffer("epsilon", torch.tensor(epsilon))
        sr6 = (sigma / cutoff) ** 6
        self.register_buffer("shift", torch.tensor(4.0 * epsilon * (sr6 * sr6 - sr6)))
        self.nl = vesin_torch.NeighborList(cutoff=float(cutoff), full_list=False)

    def forward(self, positions: torch.Tensor, types: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
        """Energy of one configuration.

        Parameters
        ----------
        positions : torch.Tensor, shape=(N, 3), float, nm
        types : torch.Tensor, shape=(N,), int64
        box : torch.Tensor, shape=(3, 3), float, nm; all zeros for a non-periodic system

        Returns
        -------
        torch.Tensor, shape=(), kJ/mol
        """
        periodic = bool(torch.any(box != 0))
        nl_box = box.to(positions.dtype)
        if not periodic:
            nl_box = torch.zeros((3, 3), dtype=positions.dtype, device=positions.device)
        out = self.nl.compute(points=positions, box=nl_box, periodic=periodic, quantities="ijd", copy=True)
        i, j, d = out[0], out[1], out[2]
        ti = types[i]
        tj = types[j]
        sig = self.sigma.to(positions.dtype)[ti, tj]
        eps = self.epsilon.to(positions.dtype)[ti, tj]
        sr6 = (sig / d) ** 6
        e = 4.0 * eps * (sr6 * sr6 - sr6) - self.shift.to(positions.dtype)[ti, tj]
        return e.sum()
