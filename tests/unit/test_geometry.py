"""One geometry for every layer: minimum image (orthorhombic and triclinic), and the IUPAC dihedral
sign agreed by cgkd.geometry, its torch twins, the bonded priors, the analysis, mdtraj and OpenMM."""

import itertools

import mdtraj
import numpy as np
import openmm
import pytest
import torch

from cgkd import geometry
from cgkd.analysis.bonded import bonded_values
from cgkd.analysis.frames import Frames
from cgkd.nn import geometry as tgeometry
from cgkd.nn.priors import FourierDihedrals
from cgkd.topology import Topology

TRICLINIC = np.array([[3.0, 0.0, 0.0], [1.0, 2.8, 0.0], [-0.9, 1.1, 2.5]])


def _smallest_height(box):
    vol = abs(np.linalg.det(box))
    return min(vol / np.linalg.norm(np.cross(box[(i + 1) % 3], box[(i + 2) % 3])) for i in range(3))


@pytest.mark.parametrize("box", [np.diag([2.0, 2.5, 3.0]), TRICLINIC])
def test_minimum_image_is_the_shortest_image(box):
    rng = np.random.default_rng(0)
    d = rng.uniform(-6, 6, (5000, 3))
    images = np.array(list(itertools.product(range(-3, 4), repeat=3))) @ box
    best = np.linalg.norm(d[:, None, :] + images[None], axis=-1).min(1)
    short = best < 0.5 * _smallest_height(box)  # where the minimum image is unique
    assert short.sum() > 500
    r = np.linalg.norm(geometry.minimum_image(d, box), axis=1)
    np.testing.assert_allclose(r[short], best[short], atol=1e-12)
    # the result differs from d by a lattice vector
    frac = (geometry.minimum_image(d, box) - d) @ np.linalg.inv(box)
    np.testing.assert_allclose(frac, np.round(frac), atol=1e-9)
    # a rotated (not reduced) box takes the fractional branch and gives the same lengths
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    r_rot = np.linalg.norm(geometry.minimum_image(d @ q.T, box @ q.T), axis=1)
    np.testing.assert_allclose(r_rot[short], best[short], atol=1e-9)
    # torch twin agrees on both branches
    for dd, bb in ((d, box), (d @ q.T, box @ q.T)):
        t = tgeometry.minimum_image(torch.tensor(dd), torch.tensor(bb))
        np.testing.assert_allclose(t.numpy(), geometry.minimum_image(dd, bb), atol=1e-12)


def test_minimum_image_per_frame_boxes_and_no_box():
    d = np.full((2, 4, 3), 1.6)
    boxes = np.stack([np.eye(3) * 2.0, np.eye(3) * 4.0])
    out = geometry.minimum_image(d, boxes)
    np.testing.assert_allclose(out[0], -0.4)
    np.testing.assert_allclose(out[1], 1.6)
    np.testing.assert_array_equal(geometry.minimum_image(d, None), d)
    t = tgeometry.minimum_image(torch.tensor(d[0]), torch.zeros(4, 3, 3, dtype=torch.float64))
    np.testing.assert_array_equal(t.numpy(), d[0])
    with pytest.raises(ValueError, match="does not match"):
        geometry.minimum_image(d, np.stack([np.eye(3)] * 3))


def _chains(n_chains=12, seed=3):
    """Random 4-bead chains in a periodic triclinic box, some split across the boundary."""
    rng = np.random.default_rng(seed)
    pos = []
    for _ in range(n_chains):
        x = [rng.uniform(0, 3, 3)]
        for _ in range(3):
            v = rng.normal(size=3)
            x.append(x[-1] + 0.3 * v / np.linalg.norm(v))
        pos.extend(x)
    pos = np.array(pos)
    frac = pos @ np.linalg.inv(TRICLINIC)
    wrapped = (frac - np.floor(frac)) @ TRICLINIC  # wrap every bead: chains are split across the box
    quads = np.arange(4 * n_chains).reshape(-1, 4)
    return pos, wrapped, quads


def test_iupac_dihedral_sign_agrees_across_layers_and_openmm():
    pos, wrapped, quads = _chains()
    phi = geometry.dihedrals(wrapped, quads, TRICLINIC)
    # an explicit case: looking down j->k, l is turned 90 degrees counter-clockwise from i: -90 (IUPAC)
    one = np.array([[1.0, 0, 0], [0, 0, 0], [0, 1.0, 0], [0, 1.0, 1.0]])
    assert np.degrees(geometry.dihedrals(one, [[0, 1, 2, 3]]))[0] == pytest.approx(-90.0)
    # unwrapped coordinates, no box: the same angles
    np.testing.assert_allclose(geometry.dihedrals(pos, quads), phi, atol=1e-10)
    assert np.any(phi > 0.3) and np.any(phi < -0.3)
    # mdtraj (IUPAC)
    traj = mdtraj.Trajectory(pos[None], mdtraj.Topology.from_openmm(
        Topology(["A"], np.zeros(len(pos), int), np.ones(len(pos))).to_openmm()))
    np.testing.assert_allclose(mdtraj.compute_dihedrals(traj, quads, periodic=False)[0], phi, atol=1e-5)
    # torch twin
    t = tgeometry.dihedrals(torch.tensor(wrapped), torch.tensor(quads), torch.tensor(TRICLINIC))
    np.testing.assert_allclose(t.numpy(), phi, atol=1e-10)
    # analysis (degrees)
    top = Topology(["A", "B"], np.tile([0, 1, 1, 0], len(quads)), np.ones(len(pos)),
                   molecules=np.repeat(np.arange(len(quads)), 4),
                   bonds=np.concatenate([quads[:, :2], quads[:, 1:3], quads[:, 2:]]))
    assert top.dihedrals.tolist() == quads.tolist()
    values = bonded_values(Frames(wrapped[None], TRICLINIC[None], top))["dihedrals"][(0, 1, 1, 0)]
    np.testing.assert_allclose(values, np.degrees(phi), atol=1e-9)
    # the torch prior E = k (1 + cos(phi - phase)) with an asymmetric phase, against OpenMM's PeriodicTorsionForce
    k, phase = 3.0, 0.7
    prior = FourierDihedrals(["A", "B"], [{"types": ["A", "B", "B", "A"], "terms": [{"n": 1, "k": k, "phase": phase}]}],
                             top.dihedrals, len(pos)).double()
    e_prior = prior(torch.tensor(wrapped), torch.tensor(top.types), torch.tensor(TRICLINIC)[None],
                    torch.zeros(len(pos), dtype=torch.int64), 1)
    np.testing.assert_allclose(float(e_prior), np.sum(k * (1 + np.cos(phi - phase))), rtol=1e-6)  # phase in float32
    system = openmm.System()
    system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in TRICLINIC])
    for _ in pos:
        system.addParticle(1.0)
    force = openmm.PeriodicTorsionForce()
    force.setUsesPeriodicBoundaryConditions(True)
    for q in quads:
        force.addTorsion(*map(int, q), 1, phase, k)
    system.addForce(force)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(wrapped)
    e_omm = ctx.getState(getEnergy=True).getPotentialEnergy()._value
    np.testing.assert_allclose(e_omm, float(e_prior), rtol=1e-6)
    # a mirrored dihedral would not match: the check can fail
    assert abs(np.sum(k * (1 + np.cos(-phi - phase))) - e_omm) > 1e-3


def test_distances_and_angles_agree_with_torch():
    pos, wrapped, quads = _chains(4)
    pairs, trip = quads[:, :2], quads[:, :3]
    np.testing.assert_allclose(geometry.distances(wrapped, pairs, TRICLINIC), 0.3, atol=1e-12)
    ang = geometry.angles(wrapped, trip, TRICLINIC)
    np.testing.assert_allclose(ang, geometry.angles(pos, trip), atol=1e-10)
    t = tgeometry.angles(torch.tensor(wrapped), torch.tensor(trip), torch.tensor(TRICLINIC))
    np.testing.assert_allclose(t.numpy(), ang, atol=1e-7)
    with pytest.raises(ValueError, match="must index particles"):
        geometry.distances(pos, [[0, 99]])
