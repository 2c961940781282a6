"""Build an all-atom box from a :class:`~cgkd.io.spec.SystemSpec`: random insertion, force field, minimisation.

Molecule copies (from the one-molecule PDB templates of the spec) are inserted one by one at
random positions with random rotations into a cubic box sized for ``spec.density``; a copy is
rejected when any of its atoms comes closer than ``min_distance`` to an atom already placed
(minimum image). The box is then minimised with the spec's force field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u

from cgkd import units
from cgkd.progress import note
from cgkd.io.spec import MoleculeSpec, ProtocolSpec, SystemSpec, load_spec

#: Platforms in order of preference when none is named.
PLATFORM_ORDER = ("CUDA", "OpenCL", "CPU", "Reference")

_NONBONDED = {"PME": app.PME, "CutoffPeriodic": app.CutoffPeriodic, "NoCutoff": app.NoCutoff}
_CONSTRAINTS = {None: None, "HBonds": app.HBonds, "AllBonds": app.AllBonds, "HAngles": app.HAngles}


@dataclass
class AASystem:
    """A built all-atom system.

    Attributes
    ----------
    topology : openmm.app.Topology
    system : openmm.System
        Without barostat.
    positions : np.ndarray, shape=(n_atoms, 3), float64, nm
    box : np.ndarray or None, shape=(3, 3), float64, nm
        Box vectors as rows; None when the nonbonded method is NoCutoff.
    spec : SystemSpec
    size : str
    """

    topology: app.Topology
    system: openmm.System
    positions: np.ndarray
    box: Optional[np.ndarray]
    spec: SystemSpec
    size: str

    @property
    def masses(self) -> np.ndarray:
        """np.ndarray, shape=(n_atoms,), float64, amu."""
        return system_masses(self.system)

    @property
    def constraints(self) -> np.ndarray:
        """np.ndarray, shape=(n_constraints, 2), int64: atom pairs of the system's constraints."""
        return system_constraints(self.system)


def system_masses(system: openmm.System) -> np.ndarray:
    """Particle masses of ``system``: np.ndarray, shape=(n_atoms,), float64, amu."""
    return np.array([system.getParticleMass(i).value_in_unit(units.MASS) for i in range(system.getNumParticles())])


def system_constraints(system: openmm.System) -> np.ndarray:
    """Constrained atom pairs of ``system``: np.ndarray, shape=(n_constraints, 2), int64."""
    pairs = [system.getConstraintParameters(i)[:2] for i in range(system.getNumConstraints())]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def choose_platform(name: Optional[str] = None) -> openmm.Platform:
    """The named OpenMM platform, or the fastest available (CUDA > OpenCL > CPU > Reference)."""
    available = [openmm.Platform.getPlatform(i).getName() for i in range(openmm.Platform.getNumPlatforms())]
    if name is not None:
        if name not in available:
            raise ValueError(f"platform {name!r} is not available; available platforms: {available}")
        return openmm.Platform.getPlatformByName(name)
    for cand in PLATFORM_ORDER:
        if cand in available:
            return openmm.Platform.getPlatformByName(cand)
    raise ValueError(f"none of the platforms {PLATFORM_ORDER} is available (found {available})")


def make_context(system: openmm.System, integrator: openmm.Integrator, platform: openmm.Platform) -> openmm.Context:
    """A Context on ``platform`` (mixed precision on GPUs)."""
    props = {"Precision": "mixed"} if platform.getName() in ("CUDA", "OpenCL") else {}
    return openmm.Context(system, integrator, platform, props)


def make_integrator(spec: SystemSpec, seed: int) -> openmm.LangevinMiddleIntegrator:
    integ = openmm.LangevinMiddleIntegrator(spec.temperature * u.kelvin, spec.friction / u.picosecond,
                                            spec.timestep * u.picosecond)
    integ.setRandomNumberSeed(int(seed) % (2**31 - 1) or 1)
    return integ


def forcefield(spec: SystemSpec) -> app.ForceField:
    """The spec's force field; files are looked up next to the spec first, then among OpenMM's."""
    files = []
    for f in spec.forcefield:
        local = spec.folder / f
        files.append(str(local) if local.is_file() else f)
    try:
        return app.ForceField(*files)
    except ValueError as exc:
        raise ValueError(f"spec {spec.name!r}: cannot load force field {spec.forcefield}: {exc}") from exc


def effective_cutoff(spec: SystemSpec, protocol: ProtocolSpec) -> tuple[float, Optional[float]]:
    """(cutoff, switch distance) in nm for one size: a size's ``cutoff`` shifts the switch by the same amount."""
    nb = spec.nonbonded
    cutoff = protocol.cutoff if protocol.cutoff is not None else nb.cutoff
    switch = None
    if nb.switch_distance is not None:
        switch = nb.switch_distance - (nb.cutoff - cutoff)
        if not 0 < switch < cutoff:  # SystemSpec refuses such sizes; a spec object built by hand may not
            raise ValueError(f"size cutoff {cutoff} nm leaves no room for the switch ({switch:.3g} nm)")
    return cutoff, switch


def create_system(spec: SystemSpec, topology: app.Topology, size: str) -> openmm.System:
    """``ForceField.createSystem`` with the spec's nonbonded, constraint and water settings (no barostat)."""
    protocol = spec.size(size)
    cutoff, switch = effective_cutoff(spec, protocol)
    nb = spec.nonbonded
    ff = forcefield(spec)
    kwargs_switch = {"switchDistance": switch * u.nanometer} if switch is not None else {}
    system = ff.createSystem(
        topology,
        nonbondedMethod=_NONBONDED[nb.method],
        nonbondedCutoff=cutoff * u.nanometer,
        constraints=_CONSTRAINTS[spec.constraints],
        rigidWater=spec.rigid_water,
        ewaldErrorTolerance=nb.ewald_error_tolerance,
        **kwargs_switch,
    )
    for force in system.getForces():
        if isinstance(force, openmm.NonbondedForce):
            force.setUseDispersionCorrection(nb.dispersion_correction)
        elif isinstance(force, openmm.CustomNonbondedForce):
            force.setUseLongRangeCorrection(nb.dispersion_correction)
    fold_lj_table(system)
    return system


def fold_lj_table(system: openmm.System, rtol: float = 1e-9) -> bool:
    """Move CHARMM's tabulated LJ (``acoef/r^12 - bcoef/r^6``) into the NonbondedForce when it is plain LB.

    OpenMM's CHARMM files put all Lennard-Jones terms in a ``CustomNonbondedForce`` with per-type-pair
    tables (to allow NBFIX). When no NBFIX pair applies to the types present, the table equals
    Lorentz-Berthelot mixing and the same energy is computed 3-4x faster by the NonbondedForce.
    The custom force is then removed and its per-type sigma/epsilon set on the NonbondedForce
    (exceptions, exclusions, switching and dispersion correction carry over unchanged).

    Returns True when the system was changed.
    """
    nbs = [f for f in system.getForces() if isinstance(f, openmm.NonbondedForce)]
    customs = [
        (k, f) for k, f in enumerate(system.getForces())
        if isinstance(f, openmm.CustomNonbondedForce)
        and f.getEnergyFunction().replace(" ", "").startswith("acoef(type1,type2)/r^12-bcoef(type1,type2)/r^6")
    ]
    if len(nbs) != 1 or len(customs) != 1:
        return False
    nbf = nbs[0]
    index, cnb = customs[0]
    names = [cnb.getTabulatedFunctionName(i) for i in range(cnb.getNumTabulatedFunctions())]
    if sorted(names) != ["acoef", "bcoef"] or cnb.getNumPerParticleParameters() != 1:
        return False
    tables = {}
    for i, name in enumerate(names):
        nx, ny, values = cnb.getTabulatedFunction(i).getFunctionParameters()
        tables[name] = np.asarray(values).reshape(ny, nx)
    a, b = tables["acoef"], tables["bcoef"]  # a = 4 eps sigma^12, b = 4 eps sigma^6 (sqrt-free form)
    diag_a, diag_b = np.diag(a), np.diag(b)
    sigma = np.where(diag_b > 0, (diag_a / np.where(diag_b > 0, diag_b, 1.0)) ** (1.0 / 6.0), 1.0)
    eps = np.where(diag_a > 0, diag_b**2 / (4.0 * np.where(diag_a > 0, diag_a, 1.0)), 0.0)
    s = 0.5 * (sigma[:, None] + sigma[None, :])
    e = np.sqrt(eps[:, None] * eps[None, :])
    if not (np.allclose(4 * e * s**12, a, rtol=rtol, atol=0) and np.allclose(4 * e * s**6, b, rtol=rtol, atol=0)):
        return False  # a real NBFIX pair: keep the table
    if abs(cnb.getCutoffDistance().value_in_unit(u.nanometer) - nbf.getCutoffDistance().value_in_unit(u.nanometer)) > 1e-9:
        return False
    for i in range(system.getNumParticles()):
        t = int(cnb.getParticleParameters(i)[0])
        q, _, eps_old = nbf.getParticleParameters(i)
        if eps_old.value_in_unit(u.kilojoule_per_mole) != 0.0:
            return False
        nbf.setParticleParameters(i, q, sigma[t], eps[t])
    nbf.setUseSwitchingFunction(cnb.getUseSwitchingFunction())
    nbf.setSwitchingDistance(cnb.getSwitchingDistance())
    nbf.setUseDispersionCorrection(cnb.getUseLongRangeCorrection())
    system.removeForce(index)
    return True


def solvate(spec: SystemSpec, topology: app.Topology, positions: np.ndarray, length: float):
    """Fill a cubic box of edge ``length`` (nm) around the solute with the spec's solvent (``Modeller.addSolvent``).

    Returns the new topology and positions (np.ndarray, shape=(n_atoms, 3), float64, nm); the solute
    is centred in the box.
    """
    sol = spec.solvent
    centred = positions - positions.mean(axis=0) + 0.5 * length
    modeller = app.Modeller(topology, centred * u.nanometer)
    try:
        modeller.addSolvent(forcefield(spec), model=sol.model, boxSize=openmm.Vec3(length, length, length) * u.nanometer,
                            positiveIon=sol.positive_ion, negativeIon=sol.negative_ion,
                            ionicStrength=sol.ionic_strength * u.molar, neutralize=sol.neutralize)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"spec {spec.name!r}: cannot add solvent {sol.model!r}: {exc}") from exc
    pos = np.asarray(modeller.getPositions().value_in_unit(u.nanometer), dtype=np.float64)
    return modeller.topology, pos


# --- random insertion -------------------------------------------------------------------------


@dataclass
class _Template:
    residue: str
    names: list
    elements: list
    bonds: list  # (i, j) within the molecule
    positions: np.ndarray  # (n, 3) nm, centred at the origin
    residues: list  # (residue name, atom indices) in order; one entry for a one-residue molecule

    @property
    def mass(self) -> float:
        return float(sum(e.mass.value_in_unit(u.dalton) for e in self.elements))


def _load_template(spec: SystemSpec, mol: MoleculeSpec) -> _Template:
    path = spec.template_path(mol)
    if not mol.template or not path.is_file():
        raise FileNotFoundError(f"spec {spec.name!r}: template for residue {mol.residue} not found at {str(path)!r}")
    pdb = app.PDBFile(str(path))
    found = [r.name for r in pdb.topology.residues()]
    if not mol.residues and len(found) != 1:
        raise ValueError(f"template {path} must hold exactly one residue, found {len(found)} (a multi-residue template "
                         "lists its residues under 'residues')")
    if mol.residues and sorted(set(found)) != sorted(set(mol.residues)):
        raise ValueError(f"template {path} holds residues {found} but the spec names {mol.residues} for molecule "
                         f"{mol.residue}")
    atoms = list(pdb.topology.atoms())
    if any(a.element is None for a in atoms):
        raise ValueError(f"template {path}: every atom needs an element (columns 77-78)")
    pos = pdb.getPositions(asNumpy=True).value_in_unit(u.nanometer)
    return _Template(
        residue=mol.residue,
        names=[a.name for a in atoms],
        elements=[a.element for a in atoms],
        bonds=[(b[0].index, b[1].index) for b in pdb.topology.bonds()],
        positions=pos - pos.mean(axis=0),
        residues=([(r.name, [a.index for a in r.atoms()]) for r in pdb.topology.residues()] if mol.residues
                  else [(mol.residue, list(range(len(atoms))))]),
    )


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


class _Grid:
    """Cell list over a cubic periodic box for overlap checks."""

    def __init__(self, length: float, min_distance: float):
        self.length = length
        self.n = max(1, int(length // min_distance))
        self.cell = length / self.n
        self.min2 = min_distance**2
        self.cells: dict = {}
        self.points: list = []

    def _keys(self, wrapped: np.ndarray) -> np.ndarray:
        return np.floor(wrapped / self.cell).astype(int) % self.n

    def fits(self, xyz: np.ndarray) -> bool:
        wrapped = xyz % self.length
        near = set()
        for c in self._keys(wrapped):
            for dx in (-1, 0, 1):
                for dy in (-1, 0, 1):
                    for dz in (-1, 0, 1):
                        near.update(self.cells.get(((c[0] + dx) % self.n, (c[1] + dy) % self.n, (c[2] + dz) % self.n), ()))
        if not near:
            return True
        other = np.asarray([self.points[i] for i in near])
        d = wrapped[:, None, :] - other[None, :, :]
        d -= self.length * np.round(d / self.length)
        return bool((d * d).sum(-1).min() > self.min2)

    def add(self, xyz: np.ndarray) -> None:
        wrapped = xyz % self.length
        for p, c in zip(wrapped, self._keys(wrapped)):
            self.cells.setdefault(tuple(c), []).append(len(self.points))
            self.points.append(p)


def insert_molecules(
    templates: list,
    counts: list,
    length: float,
    rng: np.random.Generator,
    min_distance: float = 0.15,
    max_attempts: int = 5000,
) -> list:
    """Random insertion into a cubic periodic box.

    Returns, for each template, a list of ``counts[k]`` arrays, shape=(n_atoms_k, 3), float64, nm
    (whole molecules, centres inside the box). Larger molecules are inserted first.
    """
    grid = _Grid(length, min_distance)
    placed = [[None] * c for c in counts]
    order = sorted(range(len(templates)), key=lambda k: -len(templates[k].names))
    jobs = [(k, i) for k in order for i in range(counts[k])]
    for k, i in jobs:
        tmpl = templates[k]
        for _ in range(max_attempts):
            xyz = tmpl.positions @ _random_rotation(rng).T + rng.uniform(0.0, length, size=3)
            if grid.fits(xyz):
                grid.add(xyz)
                placed[k][i] = xyz
                break
        else:
            raise ValueError(
                f"could not insert copy {i + 1} of {tmpl.residue} after {max_attempts} attempts into a "
                f"{length:.2f} nm box; lower the spec's density (packing density) or min_distance"
            )
    return placed


def build(
    spec: SystemSpec | str | Path,
    size: str = "quick",
    *,
    seed: Optional[int] = None,
    platform: Optional[str] = None,
    minimize: bool = True,
    progress: bool = True,
    min_distance: float = 0.15,
) -> AASystem:
    """Build, parametrise and minimise a box of ``spec`` at ``size``.

    Parameters
    ----------
    spec : SystemSpec, or path / shipped name of a spec
    size : str
        A size defined in the spec (``test``, ``quick``, ``default``, ``paper``).
    seed : int, optional
        Random seed for insertion (default ``spec.seed``).
    platform : str, optional
        OpenMM platform for the minimisation (default: fastest available).
    minimize : bool
        Run ``LocalEnergyMinimizer`` for the size's ``minimize_iterations``.
    progress : bool
        Say on stderr what was built and that minimisation runs.
    min_distance : float, nm
        Smallest distance allowed between atoms of different molecules at insertion.
    """
    if not isinstance(spec, SystemSpec):
        spec = load_spec(spec)
    protocol = spec.size(size)
    seed = spec.seed if seed is None else int(seed)
    rng = np.random.default_rng(seed)
    templates = [_load_template(spec, m) for m in spec.molecules]
    counts = [protocol.units * m.per_unit for m in spec.molecules]
    periodic = spec.nonbonded.method != "NoCutoff"
    cutoff, _ = effective_cutoff(spec, protocol)
    if spec.solvent is not None:
        if sum(counts) != 1:
            raise ValueError(f"size {size!r} of {spec.name!r}: a solvated system holds one solute molecule, but units "
                             f"and per_unit give {sum(counts)}; set units: 1")
        length = float(np.ptp(templates[0].positions, axis=0).max()) + 2 * spec.solvent.padding
        placed = [[templates[0].positions.copy()]]
    else:
        mass = sum(t.mass * c for t, c in zip(templates, counts))  # amu
        density = spec.density / units.AMU_PER_NM3_TO_G_PER_CM3  # amu/nm^3
        length = (mass / density) ** (1.0 / 3.0)
        placed = None
    if periodic and length <= 2 * cutoff:
        raise ValueError(
            f"size {size!r} of {spec.name!r}: box edge {length:.3f} nm is not larger than twice the cutoff ({cutoff} nm); "
            + ("use a larger solvent padding" if spec.solvent is not None else
               f"at density {spec.density} g/cm^3 use more units")
            + " or set a smaller cutoff for this size"
        )
    if placed is None:
        placed = insert_molecules(templates, counts, length, rng, min_distance=min_distance)

    top = app.Topology()
    chain = top.addChain()
    positions = []
    res_id = 0
    for tmpl, copies in zip(templates, placed):
        for xyz in copies:
            atoms = [None] * len(tmpl.names)
            for rname, members in tmpl.residues:
                res_id += 1
                res = top.addResidue(rname, chain, str(res_id))
                for i in members:
                    atoms[i] = top.addAtom(tmpl.names[i], tmpl.elements[i], res)
            for i, j in tmpl.bonds:
                top.addBond(atoms[i], atoms[j])
            positions.append(xyz)
    positions = np.concatenate(positions)
    box = np.eye(3) * length if periodic else None
    if periodic:
        top.setPeriodicBoxVectors(box * u.nanometer)
    if spec.solvent is not None:
        top, positions = solvate(spec, top, positions, length)
    try:
        system = create_system(spec, top, size)
    except ValueError as exc:
        raise ValueError(f"spec {spec.name!r}: the force field does not match the templates: {exc}") from exc
    if progress:
        n_mol = sum(counts) + (sum(1 for r in top.residues() if r.name in spec.solvent.residue_names)
                               if spec.solvent is not None else 0)
        note(f"{spec.name} build: {len(positions)} atoms, {n_mol} molecules in a {length:.3f} nm box"
             + (f"; minimising ({protocol.minimize_iterations} iterations)" if minimize and protocol.minimize_iterations
                > 0 else ""))
    if minimize and protocol.minimize_iterations > 0:
        ctx = make_context(system, make_integrator(spec, seed), choose_platform(platform))
        if periodic:
            ctx.setPeriodicBoxVectors(*box)
        ctx.setPositions(positions)
        openmm.LocalEnergyMinimizer.minimize(ctx, 10.0, protocol.minimize_iterations)
        positions = ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
        del ctx
    return AASystem(topology=top, system=system, positions=np.asarray(positions), box=box, spec=spec, size=size)
