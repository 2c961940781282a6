"""Load all-atom trajectories with forces made elsewhere into :class:`~cgkd.io.aa_h5.AAData`.

Supported: anything ``mdtraj.load`` reads (DCD, XTC, PDB, H5, NetCDF, ...) plus a separate forces
array (``.npy``, ``.npz`` or an HDF5 dataset); GROMACS ``.trr`` files that carry forces; and bare
``.npy`` position arrays with a topology file. Units are converted with :mod:`cgkd.units`;
coordinates that look like Angstrom where nm are expected raise an error.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from cgkd import units
from cgkd.io.aa_h5 import AAData

#: Force units accepted for external force arrays -> factor to kJ/mol/nm.
FORCE_UNITS = {
    "kJ/mol/nm": 1.0,
    "kJ/mol/A": 1.0 / units.ANGSTROM_TO_NM,
    "kcal/mol/A": units.KCAL_TO_KJ / units.ANGSTROM_TO_NM,
    "eV/A": units.EV_TO_KJ_PER_MOL / units.ANGSTROM_TO_NM,
}
#: Length units accepted for bare position arrays -> factor to nm.
LENGTH_UNITS = {"nm": 1.0, "A": units.ANGSTROM_TO_NM}

#: Median nearest-neighbour distance (nm) above which coordinates are taken to be Angstrom.
_MAX_NN_NM = 0.5


def check_nanometres(positions: np.ndarray, name: str = "positions") -> None:
    """Raise ValueError when coordinates look like Angstrom rather than nm.

    In a molecular system in nm the median nearest-neighbour distance is about 0.1 nm (bonds);
    read as Angstrom it is about 1.

    Parameters
    ----------
    positions : np.ndarray, shape=(n_atoms, 3), nm (expected)
    """
    from scipy.spatial import cKDTree

    x = np.asarray(positions, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != 3:
        raise ValueError(f"{name} must have shape (n_atoms, 3), got {x.shape}")
    if x.shape[0] < 2:
        return
    d, _ = cKDTree(x).query(x, k=2)
    nn = float(np.median(d[:, 1]))
    if nn > _MAX_NN_NM:
        raise ValueError(
            f"{name} look like Angstrom, not nm: the median nearest-neighbour distance is {nn:.3f} (expected ~0.1 nm); "
            f"convert to nm (multiply by {units.ANGSTROM_TO_NM}) or declare the unit"
        )


def read_forces(path: str | Path, key: str = "forces", unit: str = "kJ/mol/nm") -> np.ndarray:
    """Read a forces array from ``.npy``, ``.npz`` (entry ``key``) or HDF5 (dataset ``key``).

    Returns
    -------
    np.ndarray, shape=(n_frames, n_atoms, 3), float32, kJ/mol/nm
    """
    path = Path(path)
    if unit not in FORCE_UNITS:
        raise ValueError(f"forces_unit must be one of {sorted(FORCE_UNITS)}, got {unit!r}")
    if not path.is_file():
        raise FileNotFoundError(f"forces file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        arr = np.load(path)
    elif suffix == ".npz":
        with np.load(path) as z:
            if key not in z.files:
                raise ValueError(f"forces file {path} has no entry {key!r}; entries: {z.files}")
            arr = z[key]
    elif suffix in (".h5", ".hdf5"):
        import h5py

        with h5py.File(path, "r") as h5:
            if key not in h5:
                raise ValueError(f"forces file {path} has no dataset {key!r}; top-level entries: {sorted(h5)}")
            arr = h5[key][()]
    else:
        raise ValueError(f"forces file must be .npy, .npz, .h5 or .hdf5, got {path.name!r}")
    arr = np.asarray(arr)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"forces must have shape (n_frames, n_atoms, 3), got {arr.shape} from {path}")
    return (arr * FORCE_UNITS[unit]).astype(np.float32)


def _constraint_pairs(topology, constraints) -> np.ndarray:
    if constraints is None:
        return np.zeros((0, 2), dtype=np.int64)
    if isinstance(constraints, str):
        if constraints != "HBonds":
            raise ValueError(f"constraints must be None, 'HBonds' or an (n, 2) index array, got {constraints!r}")
        pairs = [
            (b[0].index, b[1].index)
            for b in topology.bonds()
            if any(a.element is not None and a.element.symbol == "H" for a in b)
        ]
        return np.array(pairs, dtype=np.int64).reshape(-1, 2)
    arr = np.asarray(constraints)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"constraints must have shape (n, 2), got {arr.shape}")
    return arr.astype(np.int64)


def _read_trr(path: Path, stride: int, want_forces: bool):
    from mdtraj.formats import TRRTrajectoryFile

    with TRRTrajectoryFile(str(path)) as fh:
        n = len(fh)
        try:
            xyz, time, _step, box, _lambd, _vel, forces = fh._read(n, None, get_velocities=False,
                                                                   get_forces=want_forces)
        except RuntimeError as exc:  # mdtraj: "Forces requested, but none in file"
            raise ValueError(f"trajectory {path} carries no forces ({exc}); pass them with forces=...") from exc
    if not want_forces:
        return xyz[::stride], box[::stride], time[::stride].astype(np.float64), None
    if forces is None or not np.any(forces):
        raise ValueError(f"trajectory {path} carries no forces; pass them with forces=...")
    return xyz[::stride], box[::stride], time[::stride].astype(np.float64), forces[::stride]


def _topology_has_cell(topology) -> bool:
    """True when a topology file (PDB CRYST1, GRO box line) states a periodic cell."""
    if topology is None or Path(topology).suffix.lower() not in (".pdb", ".ent", ".gro"):
        return False
    import mdtraj

    try:
        cell = mdtraj.load_frame(str(topology), 0).unitcell_vectors
    except Exception:  # noqa: BLE001 - an unreadable first frame says nothing about the cell
        return False
    return cell is not None and bool(np.any(cell))


def elements_guessed(topology: Optional[Path], trajectory: Path) -> bool:
    """True when mdtraj had to guess elements from atom names: GRO files, or PDB atom records whose element
    columns (77-78) are blank."""
    source = topology if topology is not None else trajectory
    suffix = source.suffix.lower()
    if suffix == ".gro":
        return True
    if suffix in (".pdb", ".ent"):
        with open(source, errors="replace") as fh:
            for line in fh:
                if line.startswith(("ATOM", "HETATM")) and not line[76:78].strip():
                    return True
    return False


def _masses(md_top, masses, topology: Optional[Path], trajectory: Path) -> np.ndarray:
    atoms = list(md_top.atoms)
    element = np.array([a.element.mass if a.element is not None and a.element.mass else 0.0 for a in atoms])
    if masses is None:
        if elements_guessed(topology, trajectory):
            guesses = {}
            for a in atoms:
                guesses.setdefault(f"{a.residue.name}:{a.name}", "?" if a.element is None else a.element.symbol)
            shown = ", ".join(f"{k} -> {v}" for k, v in list(guesses.items())[:10])
            warnings.warn(
                f"{(topology or trajectory).name} has no element columns: mdtraj guessed elements from atom names "
                f"({shown}{', ...' if len(guesses) > 10 else ''}); check them, and pass masses= where a guess is "
                "wrong (e.g. NA is read as nitrogen, CL as carbon)", stacklevel=3)
        out = element
    elif isinstance(masses, dict):
        out = element.copy()
        for k, a in enumerate(atoms):
            key = f"{a.residue.name}:{a.name}"
            if key in masses or a.name in masses:
                out[k] = float(masses[key] if key in masses else masses[a.name])
        unused = sorted(set(masses) - {f"{a.residue.name}:{a.name}" for a in atoms} - {a.name for a in atoms})
        if unused:
            raise ValueError(f"masses names atoms {unused} that the topology does not have")
    else:
        out = np.asarray(masses, dtype=np.float64)
        if out.shape != (len(atoms),):
            raise ValueError(f"masses must have shape ({len(atoms)},) (one per atom, amu), got {out.shape}")
    if not np.all(np.isfinite(out)) or np.any(out <= 0):
        bad = [a.name for a, m in zip(atoms, out) if not m > 0][:5]
        raise ValueError(f"atoms {bad} have no positive mass (virtual sites, or an unknown element); pass masses=")
    return out.astype(np.float64)


def load_external(
    trajectory: str | Path,
    topology: Optional[str | Path] = None,
    forces: Optional[str | Path] = None,
    *,
    temperature: float,
    forces_key: str = "forces",
    forces_unit: str = "kJ/mol/nm",
    length_unit: Optional[str] = None,
    masses=None,
    box=None,
    constraints=None,
    stride: int = 1,
    timestep: Optional[float] = None,
) -> AAData:
    """Load an external all-atom trajectory with forces.

    Parameters
    ----------
    trajectory : str or Path
        A file mdtraj reads (DCD, XTC, PDB, ...), a GROMACS ``.trr`` (forces taken from it unless
        ``forces`` is given), or a ``.npy`` array of positions, shape=(n_frames, n_atoms, 3).
    topology : str or Path, optional
        Topology file (PDB, GRO, ...) when ``trajectory`` has none (DCD, XTC, TRR, NPY).
    forces : str or Path, optional
        ``.npy``, ``.npz`` or HDF5 file with forces, shape=(n_frames, n_atoms, 3), before ``stride``.
    temperature : float, K
        Temperature of the simulation (needed downstream for kT).
    forces_key : str
        Entry of the ``.npz`` / HDF5 forces file.
    forces_unit : str
        Unit of the ``forces`` file: one of ``FORCE_UNITS`` (``kJ/mol/nm`` as in GROMACS/OpenMM,
        ``kcal/mol/A``, ``eV/A``, ...). Forces read from a ``.trr`` are kJ/mol/nm by the format; a
        ``forces_unit`` other than that is then ignored with a warning, and the file records what was used.
    length_unit : {None, "nm", "A"}
        None (default): positions are nm (mdtraj converts the files it reads to nm; a ``.npy`` array is
        taken to be nm), and coordinates that look like Angstrom are refused. Given explicitly, the
        unit is trusted and that check is skipped: the unit of a ``.npy`` array, or ``"nm"`` for a file
        mdtraj reads (to accept a system the check misjudges).
    masses : array-like, shape=(n_atoms,), amu, or dict, optional
        Atom masses; a dict maps atom names (``"NA"``) or ``"RESIDUE:ATOM"`` to amu, the other atoms take
        their element's mass. Default: element masses from the topology. Formats without element
        columns (GRO, PDB files that leave them blank) make mdtraj guess elements from atom names, which
        reads ``NA`` as nitrogen and ``CL`` as carbon: then a warning lists the guesses, and ``masses=``
        sets them right.
    box : array-like, shape=(3, 3) or (n_frames, 3, 3), nm, optional
        Box vectors (rows) for a trajectory that has no unit cells (``.npy``, a DCD written without them)
        of a periodic system; a (3, 3) box is used for every frame (constant volume). Periodic data
        (the topology has box vectors) without a box are refused.
    constraints : None, "HBonds" or np.ndarray, shape=(n, 2), int
        Constraints used in the simulation: None (none), "HBonds" (every bond to hydrogen) or index pairs.
    stride : int
        Keep every ``stride``-th frame.
    timestep : float, ps, optional
        Time between stored frames (before ``stride``) for sources without time (``.npy``); default 1 ps.

    Returns
    -------
    AAData
        ``potential_energy`` is NaN (not available); ``spec`` is None.
    """
    import mdtraj

    masses_given = masses is not None
    given_box = box
    trajectory = Path(trajectory)
    if not trajectory.is_file():
        raise FileNotFoundError(f"trajectory {str(trajectory)!r} does not exist")
    if topology is not None and not Path(topology).is_file():
        raise FileNotFoundError(f"topology {str(topology)!r} does not exist")
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    if length_unit is not None and length_unit not in LENGTH_UNITS:
        raise ValueError(f"length_unit must be None or one of {sorted(LENGTH_UNITS)}, got {length_unit!r}")
    temperature = float(units.strip(temperature, units.TEMPERATURE, "temperature"))
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0 K, got {temperature}")
    suffix = trajectory.suffix.lower()
    frc = None
    if suffix in (".trr", ".npy"):
        if topology is None:
            raise ValueError(f"topology is required for a {suffix} trajectory (e.g. a PDB or GRO file)")
        md_top = mdtraj.load_topology(str(topology))
        if suffix == ".trr":
            xyz, box, time, frc = _read_trr(trajectory, stride, want_forces=forces is None)
        else:
            xyz = np.load(trajectory)
            if xyz.ndim != 3 or xyz.shape[2] != 3:
                raise ValueError(f"positions in {trajectory} must have shape (n_frames, n_atoms, 3), got {xyz.shape}")
            xyz = (xyz * LENGTH_UNITS[length_unit or "nm"])[::stride]
            box = None
            time = np.arange(0, len(np.load(trajectory, mmap_mode="r")), stride) * (1.0 if timestep is None else timestep)
    else:
        traj = mdtraj.load(str(trajectory), top=None if topology is None else str(topology), stride=stride)
        md_top, xyz, time = traj.topology, traj.xyz, traj.time.astype(np.float64)
        box = traj.unitcell_vectors
    if suffix not in (".npy",) and length_unit not in (None, "nm"):
        raise ValueError(f"length_unit for a {suffix} file may only be 'nm' (mdtraj converts it to nm; 'nm' skips the "
                         f"Angstrom check), got {length_unit!r}")
    if md_top.n_atoms != xyz.shape[1]:
        raise ValueError(f"topology has {md_top.n_atoms} atoms but the trajectory has {xyz.shape[1]}")
    if length_unit is None:
        check_nanometres(xyz[0], f"positions of {trajectory.name}")
    used_forces_unit = forces_unit
    if forces is not None:
        frc = read_forces(forces, forces_key, forces_unit)[::stride]
    elif frc is not None:
        used_forces_unit = "kJ/mol/nm (from the .trr)"
        if forces_unit != "kJ/mol/nm":
            warnings.warn(f"forces_unit={forces_unit!r} is ignored: the forces come from {trajectory.name}, and .trr "
                          "forces are kJ/mol/nm", stacklevel=2)
    if frc is None:
        raise ValueError(f"forces is required for {trajectory.name} (a .npy/.npz/.h5 file); only .trr files carry them")
    if frc.shape != xyz.shape:
        raise ValueError(f"forces has shape {frc.shape} but the trajectory has {xyz.shape} (after stride {stride})")
    top = md_top.to_openmm()
    masses = _masses(md_top, masses, None if topology is None else Path(topology), trajectory)
    if box is not None and not np.any(box):
        box = None
    if given_box is not None:
        if box is not None:
            raise ValueError(f"box is given but {trajectory.name} has unit cells of its own; leave box out")
        gb = np.asarray(units.strip(given_box, units.DISTANCE, "box"), dtype=np.float64)
        if gb.shape == (3, 3):
            box = np.broadcast_to(gb, (len(xyz), 3, 3)).copy()
        elif gb.ndim == 3 and stride > 1 and len(gb) != len(xyz) and len(gb[::stride]) == len(xyz):
            box = gb[::stride]  # one box per frame of the file, strided like the positions
        else:
            box = gb
    elif box is None and (top.getPeriodicBoxVectors() is not None or _topology_has_cell(topology)):
        raise ValueError(
            f"{trajectory.name} has no unit cells but the topology {Path(topology).name if topology else ''} is periodic; "
            "pass box= (3, 3) or (n_frames, 3, 3) nm, or a trajectory with unit cells")
    return AAData(
        positions=xyz,
        forces=frc,
        box=box,
        potential_energy=np.full(len(xyz), np.nan),
        time=time,
        masses=masses,
        constraints=_constraint_pairs(top, constraints),
        topology=top,
        spec=None,
        temperature=temperature,
        attrs={"source": str(trajectory), "topology": str(topology or ""), "forces": str(forces or ""),
               "forces_unit": used_forces_unit, "length_unit": length_unit or "nm (checked)", "stride": stride,
               "masses": "given" if masses_given else "elements of the topology"},
    )


__all__ = ["load_external", "read_forces", "check_nanometres", "FORCE_UNITS", "LENGTH_UNITS"]
