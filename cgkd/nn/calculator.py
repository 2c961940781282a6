"""ASE ``Calculator`` for a cgkd potential (a ``CGPotential`` or a model file): energy, forces, stress.

The export layer's :class:`cgkd.export.ase_calculator.CgkdCalculator` also takes exported artefacts; this one,
below the export layer, serves code that has model files (``cgkd.kd``). Atoms are typed by element symbol (or
``types=``); ASE's Angstrom and eV outside, cgkd's nm and kJ/mol inside; the stress is (1/V) dE/d(strain).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from cgkd import units
from cgkd.io.atoms import EV_PER_A_TO_KJ_PER_MOL_NM


def _load(model):
    """(module, type_names, dtype) of a CGPotential, a model file or an exported artefact."""
    if isinstance(model, torch.nn.Module):
        if not hasattr(model, "type_names"):
            raise ValueError(f"model must be a cgkd potential with type_names, got a {type(model).__name__}")
        dtype = next(model.parameters()).dtype
        return model, list(model.type_names), dtype
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"model {str(path)!r} does not exist")
    import cgkd.nn.priors  # noqa: F401  (registers the prior kinds)
    from cgkd.nn.potential import load_potential

    pot = load_potential(path)
    return pot, list(pot.type_names), next(pot.parameters()).dtype


class CgkdCalculator(Calculator):
    """ASE calculator running a cgkd potential.

    Parameters
    ----------
    model : CGPotential, str or Path
        A potential or a model file (``cgkd.nn.save_potential``).
    types : sequence of int, optional
        Type index of each atom; default: each atom's chemical symbol looked up in the model's type names.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]
    _load = staticmethod(_load)

    def __init__(self, model, types: Optional[Sequence[int]] = None, **kwargs):
        super().__init__(**kwargs)
        self.module, self.type_names, self.dtype = self._load(model)
        self.fixed_types = None if types is None else np.asarray(types, dtype=np.int64)

    def _types(self, atoms) -> torch.Tensor:
        if self.fixed_types is not None:
            if len(self.fixed_types) != len(atoms):
                raise ValueError(f"types has {len(self.fixed_types)} entries but atoms has {len(atoms)}")
            return torch.as_tensor(self.fixed_types)
        symbols = atoms.get_chemical_symbols()
        unknown = sorted(set(symbols) - set(self.type_names))
        if unknown:
            raise ValueError(f"atoms hold elements {unknown} that the model does not know; its types are "
                             f"{self.type_names}")
        lookup = {name: k for k, name in enumerate(self.type_names)}
        return torch.as_tensor([lookup[s] for s in symbols], dtype=torch.int64)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        pbc = np.asarray(atoms.pbc, dtype=bool)
        if pbc.any() and not pbc.all():
            raise ValueError(f"atoms are periodic along {pbc.tolist()} only; cgkd handles full or no periodicity")
        periodic = bool(pbc.all())
        pos = torch.as_tensor(atoms.positions * units.ANGSTROM_TO_NM, dtype=self.dtype)
        box = torch.as_tensor(atoms.cell.array * units.ANGSTROM_TO_NM if periodic else np.zeros((3, 3)),
                              dtype=self.dtype)
        strain = torch.zeros(3, 3, dtype=self.dtype, requires_grad=True)
        deform = torch.eye(3, dtype=self.dtype) + strain
        pos = pos.detach().requires_grad_(True)
        types = self._types(atoms)
        energies = None
        if hasattr(self.module, "forward_batch"):
            out = self.module.forward_batch((pos @ deform), types, (box @ deform)[None],
                                            torch.zeros(len(atoms), dtype=torch.int64), 1, include_bonded=False)
            energy = out["energy"].sum()
            node = out.get("node_energy")
            if node is not None and not self.module.nonbonded_priors and not self.module.bonded_priors:
                energies = node.detach().double().numpy() / units.EV_TO_KJ_PER_MOL
        else:
            energy = self.module(pos @ deform, types, box @ deform)
        grads = torch.autograd.grad(energy, [pos, strain] if periodic else [pos], allow_unused=True)
        e_ev = float(energy.detach()) / units.EV_TO_KJ_PER_MOL
        self.results["energy"] = e_ev
        self.results["free_energy"] = e_ev
        self.results["forces"] = -grads[0].detach().double().numpy() / EV_PER_A_TO_KJ_PER_MOL_NM
        if energies is not None:
            self.results["energies"] = energies
        if periodic:
            volume_nm3 = abs(float(np.linalg.det(box.detach().double().numpy())))
            sigma = grads[1].detach().double().numpy() / volume_nm3  # kJ/mol/nm^3
            sigma = 0.5 * (sigma + sigma.T) / units.EV_TO_KJ_PER_MOL * units.ANGSTROM_TO_NM**3  # eV/A^3
            self.results["stress"] = sigma.ravel()[[0, 4, 8, 5, 2, 1]]


__all__ = ["CgkdCalculator"]
