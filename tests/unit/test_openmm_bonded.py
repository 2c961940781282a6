"""Native bonded forces from a cgkd Topology against the torch priors of cgkd.nn.priors."""

from contextlib import contextmanager

import numpy as np
import openmm
import openmm.unit as u
import pytest
import torch

from cgkd.nn.priors import FourierDihedrals, FourierImpropers, HarmonicAngles, HarmonicBonds
from cgkd.openmm.bonded import BONDED_FORCES, add_bonded_priors
from cgkd.topology import Topology

TYPES = ["A", "B"]
#: Triclinic box in OpenMM's reduced form (rows are box vectors, nm).
BOX = np.array([[2.0, 0.0, 0.0], [0.4, 1.9, 0.0], [-0.3, 0.5, 1.8]])
BONDS = [{"types": ["A", "B"], "r0": 0.32, "k": 900.0}, {"types": ["A", "A"], "r0": 0.28, "k": 600.0}]
ANGLES = [{"types": ["A", "B", "A"], "theta0": 2.0, "k": 50.0}, {"types": ["B", "A", "B"], "theta0": 1.7, "k": 30.0},
          {"types": ["B", "A", "A"], "theta0": 1.9, "k": 45.0}]
# given as B-A-B-A, the reverse of the A-B-A-B chain: a tuple and its reverse share parameters
DIHEDRALS = [{"types": ["B", "A", "B", "A"], "terms": [{"n": 1, "k": 3.0, "phase": 0.7},
                                                       {"n": 2, "k": 1.5, "phase": -1.1}]},
             {"types": ["B", "A", "A", "B"], "terms": [{"n": 1, "k": 2.5, "phase": 0.7}]}]
# impropers: chosen quadruples that are no bonded path (0-2-1-3 and 4-6-5-7)
IMPROPERS = [{"types": ["A", "A", "B", "B"], "terms": [{"n": 1, "k": 40.0, "phase": 0.4}]},
             {"types": ["B", "A", "A", "B"], "terms": [{"n": 1, "k": 25.0, "phase": -2.0}]}]


def _topology():
    """Two 4-bead chains, A-B-A-B and B-A-A-B."""
    types = [0, 1, 0, 1, 1, 0, 0, 1]
    bonds = [(0, 1), (1, 2), (2, 3), (4, 5), (5, 6), (6, 7)]
    return Topology(TYPES, types, [40.0, 60.0, 40.0, 60.0, 60.0, 40.0, 40.0, 60.0], molecules=[0] * 4 + [1] * 4,
                    bonds=bonds, impropers=[(0, 2, 1, 3), (4, 6, 5, 7)])


def _chains(seed=3):
    """Random chains (bond length 0.3 nm), whole; the second one reaches past the box's far corner."""
    rng = np.random.default_rng(seed)
    pos = []
    for start in (np.array([0.3, 0.4, 0.5]) @ BOX, np.array([0.97, 0.96, 0.95]) @ BOX):
        p = start.copy()
        for _ in range(4):
            pos.append(p.copy())
            step = rng.normal(size=3)
            p = p + 0.3 * step / np.linalg.norm(step)
    return np.array(pos)


def _wrapped(pos):
    """Every bead moved into the box: a chain across the boundary is split."""
    frac = pos @ np.linalg.inv(BOX)
    return (frac - np.floor(frac)) @ BOX


@contextmanager
def _float64():
    """Default dtype float64 inside (the priors' parameter buffers are made in the default dtype)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def _priors(top):
    n = top.n_particles
    with _float64():
        return [HarmonicBonds(TYPES, BONDS, top.bonds, n), HarmonicAngles(TYPES, ANGLES, top.angles, n),
                FourierDihedrals(TYPES, DIHEDRALS, top.dihedrals, n),
                FourierImpropers(TYPES, IMPROPERS, top.impropers, n)]


def _metadata(priors):
    spec = {}
    for p in priors:
        spec.update(p.bonded_prior_spec())
    return {"type_names": TYPES, "bonded_priors": spec}


def _system(top, metadata, periodic, **kwargs):
    system = openmm.System()
    for m in top.masses:
        system.addParticle(float(m))
    if periodic:
        system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in BOX])
    counts = add_bonded_priors(system, top, metadata, periodic, **kwargs)
    return system, counts


def _openmm(system, pos, group):
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(pos * u.nanometer)
    st = ctx.getState(getEnergy=True, getForces=True, groups={group})
    return st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole), st.getForces(asNumpy=True).value_in_unit(
        u.kilojoule_per_mole / u.nanometer)


def _torch(prior, pos, top, box):
    x = torch.tensor(pos, requires_grad=True)
    batch = torch.zeros(len(pos), dtype=torch.int64)
    e = prior(x, torch.tensor(top.types), torch.tensor(box).unsqueeze(0), batch, 1).sum()
    (g,) = torch.autograd.grad(e, x)
    return float(e.detach()), -g.numpy()


@pytest.mark.parametrize("periodic", [True, False])
def test_native_forces_match_torch_priors(periodic):
    top = _topology()
    priors = _priors(top)
    pos = _wrapped(_chains()) if periodic else _chains()  # without a box the chains must be whole
    if periodic:
        assert not np.allclose(pos[4:], _chains()[4:])  # the second chain is split
    system, counts = _system(top, _metadata(priors), periodic)
    assert counts == {"bonds": 6, "angles": 4, "dihedrals": 2, "impropers": 2}
    box = BOX if periodic else np.zeros((3, 3))
    for spec, prior in zip(BONDED_FORCES, priors):
        e_ref, f_ref = _torch(prior, pos, top, box)
        e, f = _openmm(system, pos, spec.group)
        assert e_ref > 1e-2, spec.kind  # the term is switched on at these positions
        assert e == pytest.approx(e_ref, rel=1e-9), spec.kind
        np.testing.assert_allclose(f, f_ref, rtol=1e-7, atol=1e-7 * np.abs(f_ref).max(), err_msg=spec.kind)


def test_dihedral_sign_matters():
    """Mirrored chains flip every dihedral's sign; with phase 0.7 the energy changes, in both codes alike."""
    top = _topology()
    priors = _priors(top)
    system, _ = _system(top, _metadata(priors), False)
    pos = _chains()
    mirrored = pos * np.array([-1.0, 1.0, 1.0])
    e, _ = _openmm(system, pos, 3)
    e_mirror, _ = _openmm(system, mirrored, 3)
    assert e == pytest.approx(_torch(priors[2], pos, top, np.zeros((3, 3)))[0], rel=1e-9)
    assert e_mirror == pytest.approx(_torch(priors[2], mirrored, top, np.zeros((3, 3)))[0], rel=1e-9)
    assert abs(e - e_mirror) > 0.1


def test_groups_names_and_missing_parameters():
    top = _topology()
    # only the A-B bond and the A-B-A angle have parameters; no dihedrals in the artefact
    metadata = {"type_names": TYPES, "bonded_priors": {"bonds": BONDS[:1], "angles": ANGLES[:1], "dihedrals": []}}
    system, counts = _system(top, metadata, True)
    assert counts == {"bonds": 5, "angles": 1, "dihedrals": 0, "impropers": 0}
    forces = [system.getForce(i) for i in range(system.getNumForces())]
    assert [(type(f).__name__, f.getName(), f.getForceGroup()) for f in forces] == [
        ("HarmonicBondForce", "cgkd bond prior", 1), ("HarmonicAngleForce", "cgkd angle prior", 2)]
    assert all(f.usesPeriodicBoundaryConditions() for f in forces)
    system, _ = _system(top, metadata, False, force_group=7)
    assert {system.getForce(i).getForceGroup() for i in range(system.getNumForces())} == {7}
    system, counts = _system(top, {"type_names": TYPES}, True)
    assert system.getNumForces() == 0 and counts == {"bonds": 0, "angles": 0, "dihedrals": 0, "impropers": 0}


def test_bad_arguments():
    top = _topology()
    metadata = {"type_names": TYPES, "bonded_priors": {"bonds": BONDS}}
    system = openmm.System()
    for _ in range(3):
        system.addParticle(1.0)
    with pytest.raises(ValueError, match="topology has 8 particles but the system has 3"):
        add_bonded_priors(system, top, metadata, False)
    with pytest.raises(ValueError, match="topology must be a cgkd.topology.Topology"):
        add_bonded_priors(system, top.to_openmm(), metadata, False)
    with pytest.raises(ValueError, match="force_group must be 0..31"):
        _system(top, metadata, False, force_group=32)
