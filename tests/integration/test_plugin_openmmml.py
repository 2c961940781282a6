"""The OpenMM-ML plugin: MLPotential("cgkd", model=...) gives the same energies and forces as create_system."""

import numpy as np
import pytest
import torch  # noqa: F401  (torch before openmm-torch)
import openmm
import openmm.app as app
import openmm.unit as u

openmmml = pytest.importorskip("openmmml", reason="openmmml is not installed")

from cgkd.export import LennardJonesPair, export_potential  # noqa: E402
from cgkd.openmm import create_system  # noqa: E402

TYPES = ["A", "B"]
BOX = 2.0


def _artefact(path, priors=None):
    pot = LennardJonesPair(TYPES, [[0.40, 0.45], [0.45, 0.50]], [[1.0, 1.5], [1.5, 2.0]], cutoff=0.9)
    export_potential(pot, path, type_names=TYPES, type_masses=[40.0, 60.0], cutoff=0.9, periodic=True,
                     dtype="float64", bonded_priors=priors)
    return path


def _topology(n_mol=12):
    top = app.Topology()
    ch = top.addChain()
    for _ in range(n_mol):
        res = top.addResidue("M", ch)
        a, b = top.addAtom("A", None, res), top.addAtom("B", None, res)
        top.addBond(a, b)
    top.setPeriodicBoxVectors(np.eye(3) * BOX * u.nanometer)
    return top


def _state(system, pos):
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(pos * u.nanometer)
    st = ctx.getState(getEnergy=True, getForces=True)
    return st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole), st.getForces(asNumpy=True)._value


@pytest.mark.parametrize("backend", ["torch", "python"])
def test_mlpotential_matches_create_system(tmp_path, backend):
    priors = {"bonds": [{"types": ["A", "B"], "r0": 0.3, "k": 500.0}]}
    path = _artefact(tmp_path / "m.pt", priors)
    top = _topology()
    rng = np.random.default_rng(1)
    pos = rng.uniform(0, BOX, size=(top.getNumAtoms(), 3))
    ml_system = openmmml.MLPotential("cgkd", model=str(path)).createSystem(top, backend=backend)
    ref_system = create_system(path, top, backend=backend)
    masses = [ml_system.getParticleMass(i).value_in_unit(u.dalton) for i in range(top.getNumAtoms())]
    assert masses[:2] == [40.0, 60.0]  # OpenMM-ML alone would give element-less beads mass 0
    e_ml, f_ml = _state(ml_system, pos)
    e_ref, f_ref = _state(ref_system, pos)
    assert e_ml == pytest.approx(e_ref, rel=1e-10)
    np.testing.assert_allclose(f_ml, f_ref, rtol=1e-8, atol=1e-8)


ALL_PRIORS = {
    "bonds": [{"types": ["A", "B"], "r0": 0.3, "k": 500.0}, {"types": ["B", "B"], "r0": 0.35, "k": 400.0}],
    "angles": [{"types": ["A", "B", "B"], "theta0": 2.0, "k": 40.0}],
    "dihedrals": [{"types": ["B", "B", "B", "A"], "terms": [{"n": 1, "k": 2.0, "phase": 0.7}]}],
}


def _chains(n_mol=4):
    """Chains A-B-B-A: every bonded kind has terms."""
    top = app.Topology()
    ch = top.addChain()
    for _ in range(n_mol):
        res = top.addResidue("M", ch)
        atoms = [top.addAtom(name, None, res) for name in "ABBA"]
        for a, b in zip(atoms[:-1], atoms[1:]):
            top.addBond(a, b)
    top.setPeriodicBoxVectors(np.eye(3) * BOX * u.nanometer)
    return top


def test_mlpotential_bonded_priors_match_create_system(tmp_path):
    path = _artefact(tmp_path / "m.pt", ALL_PRIORS)
    top = _chains()
    pos = np.random.default_rng(3).uniform(0, BOX, size=(top.getNumAtoms(), 3))
    ml_system = openmmml.MLPotential("cgkd", model=str(path)).createSystem(top, backend="python")
    ref_system = create_system(path, top, backend="python")
    names = sorted(type(f).__name__ for f in ml_system.getForces())
    assert {"HarmonicBondForce", "HarmonicAngleForce", "PeriodicTorsionForce"} <= set(names)
    assert {f.getForceGroup() for f in ml_system.getForces()} == {0}  # OpenMM-ML's forceGroup for all
    e_ml, f_ml = _state(ml_system, pos)
    e_ref, f_ref = _state(ref_system, pos)
    assert e_ml == pytest.approx(e_ref, rel=1e-10)
    np.testing.assert_allclose(f_ml, f_ref, rtol=1e-8, atol=1e-8)


def test_mlpotential_refuses_what_it_cannot_do(tmp_path):
    impl = openmmml.MLPotential("cgkd", model=str(_artefact(tmp_path / "m.pt", ALL_PRIORS)))._impl
    top = _chains(2)
    system = openmm.System()
    for _ in range(top.getNumAtoms()):
        system.addParticle(0.0)
    with pytest.raises(ValueError, match="bonded priors of a cgkd potential need the whole topology"):
        impl.addForces(top, system, atoms=[0, 1, 2, 3], forceGroup=0)
    with pytest.raises(ValueError, match="atoms must index the topology's 8 particles"):
        impl.addForces(top, system, atoms=[0, 8], forceGroup=0)
    top.setPeriodicBoxVectors(None)
    with pytest.raises(ValueError, match="periodic but the topology has no periodic box"):
        impl.addForces(top, system, atoms=None, forceGroup=0)
    assert system.getNumForces() == 0
    assert system.getParticleMass(0).value_in_unit(u.dalton) == 0.0  # refused before changing anything


def test_mlpotential_subset_acts_only_on_its_atoms(tmp_path):
    path = _artefact(tmp_path / "m.pt")
    top = _topology(6)
    rng = np.random.default_rng(2)
    pos = rng.uniform(0, BOX, size=(top.getNumAtoms(), 3))
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*(np.eye(3) * BOX))
    for _ in range(top.getNumAtoms()):
        system.addParticle(10.0)
    impl = openmmml.MLPotential("cgkd", model=str(path))._impl
    impl.addForces(top, system, atoms=[0, 1, 2, 3], forceGroup=0)
    e, f = _state(system, pos)
    assert np.all(f[4:] == 0.0)
    sub = app.Topology()
    ch = sub.addChain()
    for k in range(2):
        res = sub.addResidue("M", ch)
        sub.addAtom("A", None, res)
        sub.addAtom("B", None, res)
    sub.setPeriodicBoxVectors(np.eye(3) * BOX * u.nanometer)
    e_sub, f_sub = _state(create_system(path, sub), pos[:4])
    assert e == pytest.approx(e_sub, rel=1e-10)
    np.testing.assert_allclose(f[:4], f_sub, rtol=1e-8, atol=1e-8)


def test_unknown_arguments_are_refused(tmp_path):
    path = _artefact(tmp_path / "m.pt")
    with pytest.raises(ValueError, match="needs model=PATH"):
        openmmml.MLPotential("cgkd")
    with pytest.raises(ValueError, match="unknown argument"):
        openmmml.MLPotential("cgkd", model=str(path), modle="x")
    with pytest.raises(ValueError, match="unknown argument"):
        openmmml.MLPotential("cgkd", model=str(path)).createSystem(_topology(), backnd="torch")
