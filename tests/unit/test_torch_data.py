"""Batches of CG frames and the bonded topology derived from bonds."""

import numpy as np
import pytest
import torch

from cgkd import keys
from cgkd.data.cg_h5 import CGData
from cgkd.data.torch_data import Batch, FrameLoader, angles_from_bonds, dihedrals_from_bonds
from cgkd.nn import build_model
from cgkd.nn.potential import CGPotential
from cgkd.nn.priors import HarmonicBonds


def test_angles_and_dihedrals_from_a_branched_graph():
    # 0-1-2-3 chain with a branch 1-4, plus a separate 3-ring 5-6-7
    bonds = [[0, 1], [1, 2], [2, 3], [1, 4], [5, 6], [6, 7], [7, 5]]
    angles = angles_from_bonds(bonds)
    assert {tuple(a) for a in angles} == {(0, 1, 2), (0, 1, 4), (2, 1, 4), (1, 2, 3), (5, 6, 7), (6, 5, 7), (5, 7, 6)}
    dih = dihedrals_from_bonds(bonds)
    assert {tuple(d) for d in dih} == {(0, 1, 2, 3), (3, 2, 1, 4)}
    assert angles.dtype == np.int64 and angles_from_bonds(np.zeros((0, 2))).shape == (0, 3)
    with pytest.raises(ValueError, match="self bond"):
        angles_from_bonds([[2, 2]])


def _data(n_frames=7, n_beads=5, periodic=True):
    rng = np.random.default_rng(0)
    pos = rng.random((n_frames, n_beads, 3))
    return CGData(
        positions=pos,
        forces=rng.normal(size=pos.shape),
        box=np.tile(np.eye(3) * 1.3, (n_frames, 1, 1)) if periodic else None,
        types=np.array([0, 1, 0, 1, 1])[:n_beads],
        type_names=["A", "B"],
        bead_names=[f"X{i}" for i in range(n_beads)],
        masses=np.ones(n_beads),
        bead_residue=np.zeros(n_beads, dtype=np.int64),
        residue_names=["M"],
        bonds=np.array([[0, 1], [1, 2]]),
        temperature=300.0,
    )


def test_loader_covers_frames_and_keeps_targets():
    data = _data()
    node_e = np.arange(7 * 5, dtype=float).reshape(7, 5)
    loader = FrameLoader(data, batch_size=3, node_energies=node_e, energies=np.arange(7.0), bead_weights=np.arange(5.0))
    batches = list(loader)
    assert len(batches) == len(loader) == 3
    assert [b.n_graphs for b in batches] == [3, 3, 1]
    b = batches[1]
    assert b.positions.shape == (15, 3) and b.positions.dtype == torch.float32
    assert b.batch.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert b.frame.tolist() == [3, 4, 5]
    np.testing.assert_allclose(b.positions[5:10].numpy(), data.positions[4], rtol=1e-6)
    np.testing.assert_allclose(b.forces[10:].numpy(), data.forces[5], rtol=1e-6)
    np.testing.assert_allclose(b.node_energy.numpy(), node_e[3:6].ravel())
    np.testing.assert_allclose(b.energy.numpy(), [3, 4, 5])
    np.testing.assert_allclose(b.bead_weight.numpy(), np.tile(np.arange(5.0), 3))
    assert b.box.shape == (3, 3, 3) and b.types.tolist() == [0, 1, 0, 1, 1] * 3
    d = b.as_dict()
    assert d[keys.POSITIONS] is b.positions and d["n_graphs"] == 3
    assert isinstance(b.to("cpu"), Batch)
    # non-periodic data give all-zero boxes
    assert float(next(iter(FrameLoader(_data(periodic=False), 2))).box.abs().sum()) == 0


def test_shuffle_is_reproducible_and_leaves_global_rng_alone():
    data = _data(n_frames=20)
    state = torch.get_rng_state()
    orders = []
    for _ in range(2):
        gen = torch.Generator().manual_seed(7)
        loader = FrameLoader(data, 4, shuffle=True, generator=gen, frames=np.arange(2, 20))
        orders.append(np.concatenate([b.frame.numpy() for b in loader]))
    assert torch.equal(state, torch.get_rng_state())
    np.testing.assert_array_equal(orders[0], orders[1])
    assert sorted(orders[0].tolist()) == list(range(2, 20))
    assert orders[0].tolist() != sorted(orders[0].tolist())
    assert len(list(FrameLoader(data, 6, drop_last=True))) == 3


def test_batch_feeds_the_potential_with_bonded_priors():
    data = _data()
    types = ["A", "B"]
    prior = HarmonicBonds(types, [{"types": ["A", "B"], "k": 500.0, "r0": 0.3}], data.bonds, data.n_beads)
    pot = CGPotential(build_model("hipnn", {"cutoff": 0.5, "n_features": 8, "n_interactions": 1}, 2), [prior], types, 0.5)
    pot.check_types(torch.as_tensor(data.types))
    b = next(iter(FrameLoader(data, 4)))
    out = pot.forward_batch(b.positions, b.types, b.box, b.batch, b.n_graphs, compute_forces=True)
    assert out[keys.ENERGY].shape == (4,) and out[keys.FORCE].shape == (20, 3)
    single = [float(pot(b.positions[5 * g : 5 * g + 5], b.types[:5], b.box[g]).detach()) for g in range(4)]
    np.testing.assert_allclose(out[keys.ENERGY].detach().numpy() - out["prior_energy"].detach().numpy(), single, rtol=1e-5)
    assert float(out["prior_energy"].detach().abs().sum()) > 0


def test_loader_errors():
    data = _data()
    with pytest.raises(ValueError, match="batch_size"):
        FrameLoader(data, 0)
    with pytest.raises(ValueError, match="forces must have shape"):
        FrameLoader(data, 2, forces=np.zeros((7, 4, 3)))
    with pytest.raises(ValueError, match="energies must have shape"):
        FrameLoader(data, 2, energies=np.zeros(3))
    with pytest.raises(ValueError, match="non-finite"):
        FrameLoader(data, 2, node_energies=np.full((7, 5), np.nan))
    with pytest.raises(ValueError, match="frames must index"):
        FrameLoader(data, 2, frames=[0, 9])
    with pytest.raises(ValueError, match="generator"):
        FrameLoader(data, 2, shuffle=True)
    with pytest.raises(ValueError, match="frame_weights must be >= 0"):
        FrameLoader(data, 2, frame_weights=-np.ones(7))
    with pytest.raises(ValueError, match="data must be a CGData"):
        FrameLoader({"positions": 1}, 2)
