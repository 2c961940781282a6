"""Local labelers for atomistic data, behind one interface, and MD sampling of configurations with them.

A :class:`Labeler` gives energies and forces of structures (cgkd units out: kJ/mol, kJ/mol/nm). Registered by
name in :data:`LABELERS`:

- ``emt``: ASE's effective-medium theory for fcc metals (Al, Cu, Ag, Au, Ni, Pd, Pt; Jacobsen, Stoltze & Norskov,
  Surf. Sci. 366, 394 (1996)); about 11 ms per 32-atom Al cell here. Its energy is an explicit per-atom sum.
- ``xtb``: GFN2-xTB (Bannwarth, Ehlert & Grimme, JCTC 15, 1652 (2019)) through the ``tblite`` package, for
  molecules; about 3 ms per ethanol label. Needs ``pip install "cgkd[qm]"``.

:func:`sample_md` runs Langevin MD with a labeler's calculator over temperatures and strains and keeps every
``interval``-th frame with its labels (the MD computes them anyway) and its provenance.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from cgkd.errors import require
from cgkd.io.atoms import AtomsData, concatenate, from_ase
from cgkd.progress import progress
from cgkd.registry import Registry

#: Labelers by name; each entry is a :class:`Labeler` subclass.
LABELERS: Registry = Registry("labelers")


class Labeler:
    """Energies and forces of atomistic structures from an ASE calculator.

    Subclasses set ``name`` and implement :meth:`calculator`; ``provenance()`` says what labelled the data.
    """

    name = ""

    def calculator(self):
        """A fresh ASE calculator."""
        raise NotImplementedError

    def provenance(self) -> dict:
        return {"labeler": self.name}

    def label(self, data: AtomsData, *, show_progress: bool = True) -> AtomsData:
        """A copy of ``data`` with this labeler's energies and forces, and its name in each structure's info."""
        calc = self.calculator()
        structures = []
        bar = progress(data.n_structures, f"labelling with {self.name}", unit="structure", enabled=show_progress)
        for s in range(data.n_structures):
            atoms = data.to_ase(s)
            atoms.calc = calc
            atoms.get_potential_energy()
            structures.append(_frozen(atoms))
            bar.update(1)
        bar.close()
        out = from_ase(structures)
        out.info = [dict(data.info[s], **self.provenance()) for s in range(data.n_structures)]
        return out


def _frozen(atoms):
    """``atoms`` with its calculator's energy and forces as a single-point calculator (a copy)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    copy = atoms.copy()
    copy.calc = SinglePointCalculator(copy, energy=float(atoms.get_potential_energy()),
                                      forces=np.array(atoms.get_forces()))
    return copy


@LABELERS.register("emt")
class EMTLabeler(Labeler):
    """ASE's EMT (fcc metals; see the module docstring)."""

    name = "emt"

    def calculator(self):
        from ase.calculators.emt import EMT

        return EMT()


@LABELERS.register("xtb")
class XTBLabeler(Labeler):
    """GFN2-xTB through tblite (``pip install "cgkd[qm]"``)."""

    name = "xtb"

    def __init__(self, method: str = "GFN2-xTB"):
        if method not in ("GFN2-xTB", "GFN1-xTB", "IPEA1-xTB"):
            raise ValueError(f"method must be GFN2-xTB, GFN1-xTB or IPEA1-xTB, got {method!r}")
        self.method = method

    def calculator(self):
        tb = require("tblite.ase", "qm", "the xtb labeler")
        return tb.TBLite(method=self.method, verbosity=0)

    def provenance(self) -> dict:
        return {"labeler": self.name, "method": self.method}


def thermalize(atoms, temperature: float, rng) -> None:
    """Maxwell-Boltzmann momenta at ``temperature`` (K) from ``rng`` (ASE's function of the installed version)."""
    import ase.md.velocitydistribution as vd

    draw = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution  # the former from ASE 3.29
    draw(atoms, temperature_K=temperature, rng=rng)


def get_labeler(name: str) -> Labeler:
    """An instance of the labeler registered as ``name`` (the error lists the available ones)."""
    return LABELERS.get(name)()


def sample_md(labeler: Labeler, start, *, temperatures: Sequence[float], strains: Sequence[float] = (1.0,),
              frames_per_run: int = 10, interval: int = 10, timestep_fs: float = 2.0, friction_per_fs: float = 0.01,
              equilibration: int = 0, seed: int = 0, show_progress: bool = True) -> AtomsData:
    """Configurations sampled by Langevin MD on the labeler's own surface, labelled by it.

    Parameters
    ----------
    labeler : Labeler
    start : ase.Atoms
        Starting structure (Angstrom, ASE's convention); periodic cells are strained, molecules are not.
    temperatures : sequence of float, K
        One run per temperature and strain.
    strains : sequence of float
        Isotropic scale factors of the cell (1.0 = as given); ignored for a non-periodic structure.
    frames_per_run : int
        Frames kept per run, every ``interval`` MD steps after ``equilibration`` steps.
    timestep_fs, friction_per_fs : float
        Langevin time step (fs) and friction (1/fs).
    seed : int
        Seeds the velocities and the thermostat of each run (``seed``, ``seed + 1``, ... in run order).

    Returns
    -------
    AtomsData
        ``info`` of every frame: labeler, temperature_K, strain, run, md_step, seed.
    """
    import ase.units
    from ase.md.langevin import Langevin

    if frames_per_run < 1 or interval < 1 or equilibration < 0:
        raise ValueError(f"frames_per_run and interval must be >= 1 and equilibration >= 0, got {frames_per_run}, "
                         f"{interval}, {equilibration}")
    temps = [float(t) for t in temperatures]
    if not temps or any(not t > 0 for t in temps):
        raise ValueError(f"temperatures must be positive K, got {temperatures}")
    periodic = bool(np.all(start.pbc))
    strains = [float(s) for s in strains] if periodic else [1.0]
    if any(not 0.5 < s < 2.0 for s in strains):
        raise ValueError(f"strains must be cell scale factors in (0.5, 2), got {strains}")
    runs = [(t, s) for s in strains for t in temps]
    sets = []
    bar = progress(len(runs) * frames_per_run, f"sampling with {labeler.name}", unit="frame", enabled=show_progress)
    for k, (temp, strain) in enumerate(runs):
        atoms = start.copy()
        if periodic and strain != 1.0:
            atoms.set_cell(atoms.cell.array * strain, scale_atoms=True)
        atoms.calc = labeler.calculator()
        rng = np.random.RandomState(seed + k)
        thermalize(atoms, temp, rng)
        dyn = Langevin(atoms, timestep=timestep_fs * ase.units.fs, temperature_K=temp,
                       friction=friction_per_fs / ase.units.fs, rng=rng, fixcm=False)
        if equilibration:
            dyn.run(equilibration)
        frames, info = [], []
        for f in range(frames_per_run):
            dyn.run(interval)
            frames.append(_frozen(atoms))
            info.append(dict(labeler.provenance(), temperature_K=temp, strain=strain, run=k,
                             md_step=equilibration + (f + 1) * interval, seed=seed + k))
            bar.update(1)
        data = from_ase(frames)
        data.info = info
        sets.append(data)
    bar.close()
    return concatenate(sets)


def fcc_cells(symbol: str, repeats: Sequence[Sequence[int]], a: Optional[float] = None):
    """Cubic fcc supercells of ``symbol`` (ASE's lattice constant unless ``a``, Angstrom), one per repeat triple."""
    from ase.build import bulk

    cells = []
    for rep in repeats:
        if len(rep) != 3 or any(int(r) < 1 for r in rep):
            raise ValueError(f"repeats must be triples of positive integers, got {rep}")
        cells.append(bulk(symbol, "fcc", a=a, cubic=True).repeat(tuple(int(r) for r in rep)))
    return cells


__all__ = ["EMTLabeler", "LABELERS", "Labeler", "XTBLabeler", "fcc_cells", "get_labeler", "sample_md", "thermalize"]
