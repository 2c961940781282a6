"""An ASE ``Calculator`` for any cgkd potential: energy, forces and (for periodic cells) stress.

    from cgkd.export.ase_calculator import CgkdCalculator
    atoms.calc = CgkdCalculator("runs/al/student/model.pt")      # or an exported artefact, or a CGPotential
    atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()

Atoms are typed by their element symbols, looked up in the model's type names (an element-typed model,
``cgkd.kd.atomistic``); for a CG model, whose bead types are not elements, pass ``types=``. Units are
converted at the boundary: ASE's Angstrom and eV outside, cgkd's nm and kJ/mol inside. The stress is
``(1/V) dE/d(strain)`` (ASE's sign convention, eV/Angstrom^3), from autograd through positions and cell.
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
    from cgkd.export.artefact import DTYPES, load_potential_artefact

    try:  # an exported artefact (TorchScript)
        module, meta = load_potential_artefact(path)
        return module, list(meta["type_names"]), DTYPES[meta["dtype"]]
    except ValueError:
        import cgkd.nn.priors  # noqa: F401  (registers the prior kinds)
        from cgkd.nn.potential import load_potential

        pot = load_potential(path)
        return pot, list(pot.type_names), next(pot.parameters()).dtype


class CgkdCalculator(Calculator):
    """ASE calculator running a cgkd potential.

    Parameters
    ----------
    model : CGPotential, str or Path
        A potential, a model file (``cgkd.nn.save_potential``) or an exported artefact (``cgkd export``).
    types : sequence of int, optional
        Type index of each atom; default: each atom's chemical symbol looked up in the model's type names.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, model, types: Optional[Sequence[int]] = None, **kwargs):
        super().__init__(**kwargs)
        self.module, self.type_names, self.dtype = _load(model)
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


def run_ase_md(model, start, out, *, steps: int = 1000, timestep_fs: float = 2.0, temperature: float = 300.0,
               every: int = 10, friction_per_fs: float = 0.01, seed: int = 0) -> dict:
    """Langevin MD in ASE with :class:`CgkdCalculator`; writes an extended XYZ trajectory atomically.

    Parameters
    ----------
    model : path or CGPotential
    start : path
        An ASE-readable structure file (its first structure starts the run).
    out : path
        Trajectory (extended XYZ), a frame every ``every`` steps with energies and forces.
    steps, timestep_fs, temperature, every, friction_per_fs, seed : the run (fs, K, 1/fs).

    Returns
    -------
    dict with the frames written, the mean temperature (K) and the wall time per atom-step (us).
    """
    import time

    import ase.io
    import ase.units
    from ase.md.langevin import Langevin

    from cgkd.aa.labelers import thermalize
    from cgkd.io.atomic import atomic_path
    from cgkd.io.atoms import read_atoms

    if steps < 1 or every < 1:
        raise ValueError(f"steps and every must be >= 1, got {steps} and {every}")
    atoms = read_atoms(start).to_ase(0)
    atoms.calc = CgkdCalculator(model)
    rng = np.random.RandomState(seed)
    thermalize(atoms, temperature, rng)
    dyn = Langevin(atoms, timestep=timestep_fs * ase.units.fs, temperature_K=temperature,
                   friction=friction_per_fs / ase.units.fs, rng=rng, fixcm=False)
    frames, temps = [], []
    t0 = time.perf_counter()
    for _ in range(steps // every):
        dyn.run(every)
        frame = atoms.copy()
        from ase.calculators.singlepoint import SinglePointCalculator

        frame.calc = SinglePointCalculator(frame, energy=atoms.get_potential_energy(), forces=atoms.get_forces())
        frames.append(frame)
        temps.append(float(atoms.get_temperature()))
    wall = time.perf_counter() - t0
    out = Path(out)
    with atomic_path(out, suffix=out.suffix) as tmp:
        ase.io.write(str(tmp), frames, format="extxyz")
    n_steps = every * (steps // every)
    return {"out": str(out), "frames": len(frames), "mean_temperature_K": float(np.mean(temps)) if temps else None,
            "us_per_atom_step": 1e6 * wall / max(1, n_steps * len(atoms))}


__all__ = ["CgkdCalculator", "run_ase_md"]
