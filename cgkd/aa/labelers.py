"""Local labelers for atomistic data, behind one interface, and MD sampling of configurations with them.

A :class:`Labeler` gives energies and forces of structures (cgkd units out: kJ/mol, kJ/mol/nm). Registered by
name in :data:`LABELERS`:

- ``emt``: ASE's effective-medium theory for fcc metals (Al, Cu, Ag, Au, Ni, Pd, Pt; Jacobsen, Stoltze & Norskov,
  Surf. Sci. 366, 394 (1996)); about 11 ms per 32-atom Al cell here. Its energy is an explicit per-atom sum.
- ``xtb``: GFN2-xTB (Bannwarth, Ehlert & Grimme, JCTC 15, 1652 (2019)) through the ``tblite`` package, for
  molecules; about 3 ms per ethanol label. Needs ``pip install "cgkd[qm]"``.
- ``chgnet``, ``sevennet``: pretrained universal models whose weights ship in their wheels (loaded from the
  package, never from the network). Need ``pip install "cgkd[universal]"``.
- ``dft``: Kohn-Sham DFT in PySCF (PBE/def2-SVP with density fitting by default), molecules only; seconds per
  ethanol label. Needs ``pip install "cgkd[qm]"``.
- ``openmm``: a classical force field, any OpenMM ``System`` (serialized XML, e.g. from ``ForceField.createSystem``)
  whose particles are the structures' atoms in order: ``get_labeler("openmm", {"system": "system.xml"})``. The
  cheapest labels; build the System without constraints (flexible water, ``constraints=None``) when the labels
  are to be unconstrained forces or when ASE MD samples with it.

:func:`sample_md` runs Langevin MD with a labeler's calculator over temperatures and strains and keeps every
``interval``-th frame with its labels (the MD computes them anyway) and its provenance.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ase.calculators.calculator import Calculator, all_changes

from cgkd import units
from cgkd.errors import require
from cgkd.io.atomic import atomic_path
from cgkd.io.atoms import EV_PER_A_TO_KJ_PER_MOL_NM, AtomsData, concatenate, from_ase
from cgkd.progress import note, progress
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

    def label(self, data: AtomsData, *, cache=None, show_progress: bool = True, executor=None,
              chunk: int = 32) -> AtomsData:
        """A copy of ``data`` with this labeler's energies and forces, and its provenance in each structure's info.

        Parameters
        ----------
        data : AtomsData
        cache : path, optional
            A folder of finished labels, one file per configuration and labeler setting (keyed by a digest of
            the provenance, atomic numbers, positions and cell). Labels found there are reused and new ones
            are written as soon as they are computed, so an interrupted run resumes where it stopped.
        show_progress : bool
        executor : cgkd.parallel.ExecutorConfig, dict or int, optional
            Label chunks of ``chunk`` structures as parallel tasks (a local pool, a Dask cluster); with a
            ``cache`` a lost worker costs only its unfinished structures. Default: in this process.
        chunk : int
            Structures per task.
        """
        from cgkd.parallel import as_executor, run_tasks

        ex = as_executor(executor)
        if not ex.in_process:
            if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
                raise ValueError(f"chunk must be a positive integer (structures per task), got {chunk!r}")
            parts = [list(range(i, min(i + chunk, data.n_structures))) for i in range(0, data.n_structures, chunk)]
            jobs = [(self, data.select(idx), None if cache is None else str(cache)) for idx in parts]
            done = run_tasks(label_task, jobs, ex, labels=[f"structures {p[0]}-{p[-1]}" for p in parts],
                             desc=f"{self.name} label chunks", show_progress=show_progress)
            return concatenate(done)
        calc = self.calculator()
        cache_dir = None if cache is None else Path(cache)
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
        energy = np.zeros(data.n_structures)
        forces = np.zeros((int(data.offsets[-1]), 3))
        reused = 0
        bar = progress(data.n_structures, f"labelling with {self.name}", unit="structure", enabled=show_progress)
        for s in range(data.n_structures):
            a, b = data.offsets[s], data.offsets[s + 1]
            entry = None if cache_dir is None else cache_dir / f"{self._key(data, s)}.npz"
            if entry is not None and entry.is_file():
                with np.load(entry) as z:
                    energy[s], forces[a:b] = float(z["energy"]), z["forces"]
                reused += 1
            else:
                atoms = data.to_ase(s)
                atoms.calc = calc
                energy[s] = float(atoms.get_potential_energy()) * units.EV_TO_KJ_PER_MOL
                forces[a:b] = np.asarray(atoms.get_forces()) * EV_PER_A_TO_KJ_PER_MOL_NM
                if entry is not None:
                    with atomic_path(entry, suffix=".npz") as tmp, open(tmp, "wb") as fh:
                        np.savez(fh, energy=energy[s], forces=forces[a:b])
            bar.update(1)
        bar.close()
        if reused and show_progress:
            note(f"{self.name}: {reused} of {data.n_structures} labels reused from {cache_dir}")
        return AtomsData(numbers=data.numbers, positions=data.positions, offsets=data.offsets, cells=data.cells,
                         energy=energy, forces=forces,
                         info=[dict(data.info[s], **self.provenance()) for s in range(data.n_structures)])

    def _key(self, data: AtomsData, s: int) -> str:
        a, b = data.offsets[s], data.offsets[s + 1]
        h = hashlib.sha256(json.dumps(self.provenance(), sort_keys=True).encode())
        h.update(np.ascontiguousarray(data.numbers[a:b], dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(np.round(data.positions[a:b], 9), dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(np.round(data.cells[s], 9), dtype=np.float64).tobytes())
        return h.hexdigest()[:32]


def label_task(labeler: Labeler, data: AtomsData, cache) -> AtomsData:
    """One chunk of a parallel :meth:`Labeler.label` (Dask workers start with ``OMP_NUM_THREADS=1``)."""
    return labeler.label(data, cache=cache, show_progress=False)


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


class _PySCFCalculator:
    """A minimal ASE calculator running restricted Kohn-Sham DFT in PySCF (energy and forces)."""

    def __new__(cls, xc: str, basis: str, density_fit: bool, charge: int, spin: int):
        from ase.calculators.calculator import Calculator, all_changes

        require("pyscf", "qm", "the dft labeler")
        import pyscf.dft
        import pyscf.gto

        class PySCFCalculator(Calculator):
            implemented_properties = ["energy", "forces"]

            def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
                import ase.units

                super().calculate(atoms, properties, system_changes)
                if np.any(self.atoms.pbc):
                    raise ValueError("the dft labeler runs molecules only (PySCF's molecular code); got a periodic cell")
                mol = pyscf.gto.M(atom=[(a.symbol, tuple(a.position)) for a in self.atoms], basis=basis,
                                  unit="Angstrom", charge=charge, spin=spin, verbose=0)
                mf = (pyscf.dft.RKS if spin == 0 else pyscf.dft.UKS)(mol)
                mf.xc = xc
                if density_fit:
                    mf = mf.density_fit()
                energy = mf.kernel()
                if not mf.converged:
                    raise RuntimeError(f"PySCF SCF did not converge for {self.atoms.get_chemical_formula()}")
                grad = mf.nuc_grad_method().kernel()
                self.results["energy"] = float(energy) * ase.units.Hartree
                self.results["forces"] = -np.asarray(grad) * ase.units.Hartree / ase.units.Bohr

        return PySCFCalculator()


@LABELERS.register("dft")
class DFTLabeler(Labeler):
    """Kohn-Sham DFT through PySCF (``pip install "cgkd[qm]"``): PBE/def2-SVP with density fitting by default."""

    name = "dft"

    def __init__(self, xc: str = "PBE", basis: str = "def2-svp", density_fit: bool = True, charge: int = 0,
                 spin: int = 0):
        self.xc, self.basis, self.density_fit, self.charge, self.spin = xc, basis, bool(density_fit), int(charge), int(spin)

    def calculator(self):
        return _PySCFCalculator(self.xc, self.basis, self.density_fit, self.charge, self.spin)

    def provenance(self) -> dict:
        return {"labeler": self.name, "xc": self.xc, "basis": self.basis, "density_fit": self.density_fit}


@LABELERS.register("chgnet")
class CHGNetLabeler(Labeler):
    """CHGNet (Deng et al., Nat. Mach. Intell. 5, 1031 (2023)), weights from the ``chgnet`` wheel
    (``pip install "cgkd[universal]"``); ``model`` is one of the shipped versions (0.3.0, 0.2.0, r2scan)."""

    name = "chgnet"

    def __init__(self, model: str = "0.3.0"):
        self.model = str(model)

    def calculator(self):
        require("chgnet", "universal", "the chgnet labeler")
        from chgnet.model import CHGNet
        from chgnet.model.dynamics import CHGNetCalculator

        return CHGNetCalculator(model=CHGNet.load(model_name=self.model, use_device="cpu", verbose=False),
                                use_device="cpu")

    def provenance(self) -> dict:
        return {"labeler": self.name, "model": self.model}


@LABELERS.register("sevennet")
class SevenNetLabeler(Labeler):
    """SevenNet (Park et al., JCTC 20, 4857 (2024)), weights from the ``sevenn`` wheel
    (``pip install "cgkd[universal]"``); ``model`` e.g. ``7net-0``, ``7net-l3i5``; ``modal`` picks the head of a
    multi-fidelity model (``7net-mf-0``)."""

    name = "sevennet"

    def __init__(self, model: str = "7net-0", modal: Optional[str] = None):
        self.model, self.modal = str(model), modal

    def calculator(self):
        require("sevenn", "universal", "the sevennet labeler")
        from sevenn.calculator import SevenNetCalculator

        kw = {"modal": self.modal} if self.modal else {}
        return SevenNetCalculator(model=self.model, device="cpu", **kw)

    def provenance(self) -> dict:
        return {"labeler": self.name, "model": self.model, **({"modal": self.modal} if self.modal else {})}


def thermalize(atoms, temperature: float, rng) -> None:
    """Maxwell-Boltzmann momenta at ``temperature`` (K) from ``rng`` (ASE's function of the installed version)."""
    import ase.md.velocitydistribution as vd

    draw = getattr(vd, "thermalize_momenta", None) or vd.MaxwellBoltzmannDistribution  # the former from ASE 3.29
    draw(atoms, temperature_K=temperature, rng=rng)


@LABELERS.register("openmm")
class OpenMMLabeler(Labeler):
    """A classical force field through OpenMM: energies and forces of a serialized ``openmm.System``.

    Parameters
    ----------
    system : path
        The System as XML (``openmm.XmlSerializer.serialize``); its particles are the structures' atoms, in order.
    platform : str
        OpenMM platform (default ``Reference``: double precision, no threads).
    """

    name = "openmm"

    def __init__(self, system=None, platform: str = "Reference"):
        if system is None:
            raise ValueError("the openmm labeler needs system, the path of a serialized openmm.System (XML); e.g. "
                             "get_labeler('openmm', {'system': 'system.xml'}) or cgkd atoms label --labeler openmm "
                             "--system system.xml")
        path = Path(system).resolve()
        if not path.is_file():
            raise FileNotFoundError(f"system {str(path)!r} does not exist")
        # the XML itself travels with the labeler (parallel tasks on other machines; a file edited later)
        self.system, self.platform, self._xml = str(path), str(platform), path.read_text()
        self._digest = hashlib.sha256(self._xml.encode()).hexdigest()[:16]

    def calculator(self):
        return OpenMMCalculator(self._xml, self.platform)

    def provenance(self) -> dict:
        return {"labeler": self.name, "system": self.system, "system_digest": self._digest, "platform": self.platform}


class OpenMMCalculator(Calculator):
    """An ASE calculator (energy, forces) over one OpenMM Context of a System; positions and cell from the Atoms.

    Parameters
    ----------
    system_xml : str
        The serialized ``openmm.System``.
    platform : str
    """

    implemented_properties = ["energy", "forces"]

    def __init__(self, system_xml: str, platform: str = "Reference"):
        super().__init__()
        import openmm

        self.omm_system = openmm.XmlSerializer.deserialize(system_xml)
        self.n = self.omm_system.getNumParticles()
        self.context = openmm.Context(self.omm_system, openmm.VerletIntegrator(0.001),
                                      openmm.Platform.getPlatformByName(platform))

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        if len(self.atoms) != self.n:
            raise ValueError(f"the OpenMM System has {self.n} particles but the structure has {len(self.atoms)} atoms")
        nm = units.ANGSTROM_TO_NM
        pos, rot = np.asarray(self.atoms.positions, dtype=np.float64), None
        if self.atoms.pbc.all():
            cell = np.asarray(self.atoms.cell[:], dtype=np.float64)
            if np.abs(cell[np.triu_indices(3, 1)]).max() > 1e-12:  # OpenMM wants a lower-triangular cell: rotate
                reduced, rot = self.atoms.cell.standard_form()
                cell, pos = np.asarray(reduced[:]), pos @ rot.T
            self.context.setPeriodicBoxVectors(*(cell * nm))
        elif self.omm_system.usesPeriodicBoundaryConditions():
            raise ValueError("the OpenMM System is periodic but the structure is not (give it a cell and pbc)")
        self.context.setPositions(pos * nm)
        state = self.context.getState(getEnergy=True, getForces=True)
        energy = units.strip(state.getPotentialEnergy(), units.ENERGY, "OpenMM energy")  # kJ/mol
        forces = np.asarray(units.strip(state.getForces(asNumpy=True), units.FORCE, "OpenMM forces"))  # kJ/mol/nm
        if rot is not None:
            forces = forces @ rot  # back to the structure's frame
        self.results["energy"] = float(energy) / units.EV_TO_KJ_PER_MOL
        self.results["forces"] = forces / EV_PER_A_TO_KJ_PER_MOL_NM


def get_labeler(name: str, options: Optional[dict] = None) -> Labeler:
    """An instance of the labeler registered as ``name`` (the error lists the available ones), built with the
    keyword arguments in ``options`` (an unknown one is refused with the accepted ones named)."""
    cls = LABELERS.get(name)
    options = dict(options or {})
    import inspect

    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(f"labeler {name!r} does not take option(s) {unknown}; it takes {accepted or 'none'}")
    return cls(**options)


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


__all__ = ["CHGNetLabeler", "DFTLabeler", "EMTLabeler", "SevenNetLabeler", "LABELERS", "Labeler", "XTBLabeler", "fcc_cells", "get_labeler", "sample_md", "thermalize"]
