"""External loaders: a real tiny water box with OpenMM forces, written as PDB/DCD/NPY/TRR and read back."""

import mdtraj
import numpy as np
import openmm
import openmm.unit as u
import pytest
from mdtraj.formats import TRRTrajectoryFile

from cgkd import units
from cgkd.aa.build import build, choose_platform, make_context, make_integrator
from cgkd.io.external import FORCE_UNITS, check_nanometres, load_external, read_forces

N_FRAMES = 4


@pytest.fixture(scope="module")
def water(tmp_path_factory):
    """4 frames of the 'test' water box (180 atoms) with their force-field forces, in several formats."""
    d = tmp_path_factory.mktemp("ext")
    aa = build("water", "test", platform="Reference", minimize=False)
    ctx = make_context(aa.system, make_integrator(aa.spec, 1), choose_platform("Reference"))
    ctx.setPeriodicBoxVectors(*aa.box)
    ctx.setPositions(aa.positions)
    openmm.LocalEnergyMinimizer.minimize(ctx, 10.0, 50)
    ctx.setVelocitiesToTemperature(300 * u.kelvin, 1)
    xyz, frc = [], []
    for _ in range(N_FRAMES):
        ctx.getIntegrator().step(5)
        st = ctx.getState(getPositions=True, getForces=True)
        xyz.append(st.getPositions(asNumpy=True).value_in_unit(u.nanometer))
        frc.append(st.getForces(asNumpy=True).value_in_unit(units.FORCE))
    xyz, frc = np.array(xyz, dtype=np.float32), np.array(frc, dtype=np.float32)
    top = mdtraj.Topology.from_openmm(aa.topology)
    traj = mdtraj.Trajectory(xyz, top, time=np.arange(N_FRAMES) * 0.01,
                             unitcell_lengths=np.tile(np.diag(aa.box), (N_FRAMES, 1)),
                             unitcell_angles=np.full((N_FRAMES, 3), 90.0))
    traj[0].save_pdb(str(d / "top.pdb"))
    traj.save_dcd(str(d / "traj.dcd"))
    np.save(d / "forces.npy", frc)
    np.savez(d / "forces.npz", f=frc / FORCE_UNITS["kcal/mol/A"])
    np.save(d / "pos_angstrom.npy", xyz * 10.0)
    with TRRTrajectoryFile(str(d / "traj.trr"), "w") as fh:
        fh._write(xyz, np.arange(N_FRAMES, dtype=np.float32) * 0.01, np.arange(N_FRAMES, dtype=np.int32),
                  np.ascontiguousarray(traj.unitcell_vectors, dtype=np.float32), np.zeros(N_FRAMES, dtype=np.float32), None, frc)
    with TRRTrajectoryFile(str(d / "noforces.trr"), "w") as fh:
        fh._write(xyz, np.arange(N_FRAMES, dtype=np.float32), np.arange(N_FRAMES, dtype=np.int32),
                  np.ascontiguousarray(traj.unitcell_vectors, dtype=np.float32), np.zeros(N_FRAMES, dtype=np.float32), None, None)
    return {"dir": d, "xyz": xyz, "frc": frc, "box": aa.box, "n": aa.topology.getNumAtoms()}


def test_dcd_with_npy_forces(water):
    d = water["dir"]
    data = load_external(d / "traj.dcd", d / "top.pdb", d / "forces.npy", temperature=300.0, constraints="HBonds")
    np.testing.assert_allclose(data.positions, water["xyz"], atol=1e-5)
    np.testing.assert_array_equal(data.forces, water["frc"])
    np.testing.assert_allclose(data.box[0], water["box"], atol=1e-5)
    np.testing.assert_allclose(data.masses[:3], [15.999, 1.008, 1.008], atol=1e-2)
    assert data.constraints.shape == (2 * water["n"] // 3, 2)  # two O-H per water
    assert np.all(np.isnan(data.potential_energy)) and data.spec is None and data.temperature == 300.0


def test_trr_carries_forces(water):
    d = water["dir"]
    data = load_external(d / "traj.trr", d / "top.pdb", temperature=300.0)
    np.testing.assert_array_equal(data.forces, water["frc"])
    np.testing.assert_array_equal(data.positions, water["xyz"])
    np.testing.assert_allclose(data.time, np.arange(N_FRAMES) * 0.01, atol=1e-6)
    assert data.constraints.shape == (0, 2)
    stride = load_external(d / "traj.trr", d / "top.pdb", temperature=300.0, stride=2)
    np.testing.assert_array_equal(stride.forces, water["frc"][::2])
    # a trr without forces plus a forces file
    other = load_external(d / "noforces.trr", d / "top.pdb", d / "forces.npy", temperature=300.0)
    np.testing.assert_array_equal(other.forces, water["frc"])


def test_force_unit_conversion(water):
    d = water["dir"]
    data = load_external(d / "traj.dcd", d / "top.pdb", d / "forces.npz", temperature=300.0, forces_key="f",
                         forces_unit="kcal/mol/A")
    np.testing.assert_allclose(data.forces, water["frc"], rtol=1e-5, atol=1e-3)
    # 1 kcal/mol/A = 41.84 kJ/mol/nm (derived from openmm.unit, checked against the definition)
    assert FORCE_UNITS["kcal/mol/A"] == pytest.approx(41.84)


def test_forces_in_hdf5(water, tmp_path):
    import h5py

    with h5py.File(tmp_path / "f.h5", "w") as h5:
        h5["frc"] = water["frc"]
    np.testing.assert_array_equal(read_forces(tmp_path / "f.h5", "frc"), water["frc"])
    with pytest.raises(ValueError, match="no dataset 'forces'"):
        read_forces(tmp_path / "f.h5")


def test_angstrom_positions_are_caught(water):
    d = water["dir"]
    with pytest.raises(ValueError, match="look like Angstrom"):
        load_external(d / "pos_angstrom.npy", d / "top.pdb", d / "forces.npy", temperature=300.0)
    data = load_external(d / "pos_angstrom.npy", d / "top.pdb", d / "forces.npy", temperature=300.0, length_unit="A",
                         timestep=0.01, box=water["box"])
    np.testing.assert_allclose(data.box, np.tile(water["box"], (N_FRAMES, 1, 1)))
    np.testing.assert_allclose(data.positions, water["xyz"], atol=1e-5)
    np.testing.assert_allclose(data.time, np.arange(N_FRAMES) * 0.01)
    check_nanometres(water["xyz"][0])  # nm passes
    with pytest.raises(ValueError, match="look like Angstrom"):
        check_nanometres(water["xyz"][0] * 10)


def test_error_paths(water, tmp_path):
    d = water["dir"]
    with pytest.raises(FileNotFoundError, match="trajectory"):
        load_external(d / "missing.dcd", d / "top.pdb", d / "forces.npy", temperature=300.0)
    with pytest.raises(FileNotFoundError, match="topology"):
        load_external(d / "traj.dcd", d / "missing.pdb", d / "forces.npy", temperature=300.0)
    with pytest.raises(FileNotFoundError, match="forces file"):
        load_external(d / "traj.dcd", d / "top.pdb", d / "missing.npy", temperature=300.0)
    with pytest.raises(ValueError, match="forces is required"):
        load_external(d / "traj.dcd", d / "top.pdb", temperature=300.0)
    with pytest.raises(ValueError, match="carries no forces"):
        load_external(d / "noforces.trr", d / "top.pdb", temperature=300.0)
    with pytest.raises(ValueError, match="topology is required"):
        load_external(d / "traj.trr", temperature=300.0)
    np.save(tmp_path / "short.npy", water["frc"][:, :10])
    with pytest.raises(ValueError, match="forces has shape"):
        load_external(d / "traj.dcd", d / "top.pdb", tmp_path / "short.npy", temperature=300.0)
    np.save(tmp_path / "flat.npy", water["frc"].reshape(N_FRAMES, -1))
    with pytest.raises(ValueError, match="forces must have shape"):
        read_forces(tmp_path / "flat.npy")
    with pytest.raises(ValueError, match="forces_unit must be one of"):
        read_forces(d / "forces.npy", unit="kcal/mol/nm/s")
    with pytest.raises(ValueError, match="no entry 'forces'"):
        read_forces(d / "forces.npz")
    (tmp_path / "forces.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match="must be .npy"):
        read_forces(tmp_path / "forces.txt")
    with pytest.raises(ValueError, match="stride"):
        load_external(d / "traj.dcd", d / "top.pdb", d / "forces.npy", temperature=300.0, stride=0)
    with pytest.raises(ValueError, match="temperature"):
        load_external(d / "traj.dcd", d / "top.pdb", d / "forces.npy", temperature=-1.0)
    with pytest.raises(ValueError, match="length_unit"):
        load_external(d / "traj.dcd", d / "top.pdb", d / "forces.npy", temperature=300.0, length_unit="bohr")
    with pytest.raises(ValueError, match="constraints must be"):
        load_external(d / "traj.dcd", d / "top.pdb", d / "forces.npy", temperature=300.0, constraints="AllBonds")


BOX2 = np.eye(3) * 2.0


def _nacl(tmp_path):
    """A GRO file with a Na+ and a Cl- ion (no element columns: mdtraj guesses N and C) and two frames of forces."""
    (tmp_path / "ions.gro").write_text(
        "ions\n    2\n    1NA      NA    1   0.500   0.500   0.500\n    2CL      CL    2   0.800   0.500   0.500\n"
        "   2.00000   2.00000   2.00000\n")
    xyz = np.array([[[0.5, 0.5, 0.5], [0.8, 0.5, 0.5]]] * 2, dtype=np.float32)
    np.save(tmp_path / "ions.npy", xyz)
    np.save(tmp_path / "ions_f.npy", np.ones_like(xyz))
    return tmp_path / "ions.npy", tmp_path / "ions.gro", tmp_path / "ions_f.npy"


def test_guessed_elements_warn_and_masses_override(tmp_path):
    traj, top, frc = _nacl(tmp_path)
    with pytest.warns(UserWarning, match=r"guessed elements.*NA:NA -> N.*CL:CL -> C"):
        guessed = load_external(traj, top, frc, temperature=300.0, box=BOX2)
    np.testing.assert_allclose(guessed.masses, [14.007, 12.011], atol=1e-2)  # what the guess gives, hence the warning
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        by_name = load_external(traj, top, frc, temperature=300.0, box=BOX2, masses={"NA": 22.99, "CL:CL": 35.45})
        by_array = load_external(traj, top, frc, temperature=300.0, box=BOX2, masses=[22.99, 35.45])
    np.testing.assert_allclose(by_name.masses, [22.99, 35.45])
    np.testing.assert_array_equal(by_array.masses, by_name.masses)
    assert by_name.attrs["masses"] == "given"
    with pytest.raises(ValueError, match=r"masses must have shape \(2,\)"):
        load_external(traj, top, frc, temperature=300.0, box=BOX2, masses=[1.0])
    with pytest.raises(ValueError, match=r"masses names atoms \['K'\]"):
        load_external(traj, top, frc, temperature=300.0, box=BOX2, masses={"K": 39.1})
    with pytest.raises(ValueError, match="no positive mass"):
        load_external(traj, top, frc, temperature=300.0, box=BOX2, masses=[22.99, -1.0])


def test_explicit_length_unit_skips_the_angstrom_check_and_trr_force_unit_is_recorded(water, tmp_path):
    d = water["dir"]
    # a dilute system in nm that the nearest-neighbour heuristic misreads: the same atoms spread 10x apart
    sparse = tmp_path / "sparse.npy"
    np.save(sparse, water["xyz"] * 10.0)
    with pytest.raises(ValueError, match="look like Angstrom"):
        load_external(sparse, d / "top.pdb", d / "forces.npy", temperature=300.0)
    data = load_external(sparse, d / "top.pdb", d / "forces.npy", temperature=300.0, length_unit="nm",
                         box=water["box"] * 10.0)
    np.testing.assert_allclose(data.positions, water["xyz"] * 10.0)
    with pytest.raises(ValueError, match="may only be 'nm'"):
        load_external(d / "traj.trr", d / "top.pdb", temperature=300.0, length_unit="A")
    assert load_external(d / "traj.trr", d / "top.pdb", temperature=300.0, length_unit="nm").n_frames == N_FRAMES
    with pytest.warns(UserWarning, match="forces_unit='kcal/mol/A' is ignored"):
        trr = load_external(d / "traj.trr", d / "top.pdb", temperature=300.0, forces_unit="kcal/mol/A")
    np.testing.assert_array_equal(trr.forces, water["frc"])
    assert trr.attrs["forces_unit"] == "kJ/mol/nm (from the .trr)"


def test_periodic_topology_without_unit_cells_is_refused(water):
    d = water["dir"]
    np.save(d / "pos.npy", water["xyz"])
    with pytest.raises(ValueError, match="has no unit cells but the topology top.pdb is periodic; pass box="):
        load_external(d / "pos.npy", d / "top.pdb", d / "forces.npy", temperature=300.0)
    with pytest.raises(ValueError, match="has unit cells of its own"):
        load_external(d / "traj.dcd", d / "top.pdb", d / "forces.npy", temperature=300.0, box=water["box"])
    with pytest.raises(ValueError, match="box must have shape"):
        load_external(d / "pos.npy", d / "top.pdb", d / "forces.npy", temperature=300.0, box=np.eye(2))
