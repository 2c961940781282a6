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

import numpy as np

from cgkd.nn.calculator import CgkdCalculator as _BaseCalculator


def _load_any(model):
    """(module, type_names, dtype) of a CGPotential, a model file or an exported artefact."""
    from cgkd.export.artefact import DTYPES, load_potential_artefact
    from cgkd.nn.calculator import _load

    if isinstance(model, (str, Path)) and Path(model).is_file():
        try:  # an exported artefact (TorchScript)
            module, meta = load_potential_artefact(model)
            return module, list(meta["type_names"]), DTYPES[meta["dtype"]]
        except ValueError:
            pass
    return _load(model)


class CgkdCalculator(_BaseCalculator):
    """ASE calculator running a cgkd potential, a model file or an exported artefact (see the module docstring).

    Parameters
    ----------
    model : CGPotential, str or Path
        A potential, a model file (``cgkd.nn.save_potential``) or an exported artefact (``cgkd export``).
    types : sequence of int, optional
        Type index of each atom; default: each atom's chemical symbol looked up in the model's type names.
    """

    _load = staticmethod(_load_any)


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
