"""Representation models and CGPotential: forces, invariances, TorchScript and save/load round trips."""

import math

import numpy as np
import pytest
import torch

from cgkd import keys
from cgkd.nn import ARCHITECTURES, build_model
from cgkd.nn.potential import CGPotential, load_potential, save_potential
from cgkd.nn.priors import PairRepulsion
from cgkd.registry import UnknownNameError

TYPES = ["A", "B", "C"]
BOX = np.array([[1.2, 0.0, 0.0], [0.3, 1.1, 0.0], [-0.2, 0.25, 1.0]])  # triclinic, rows
CUTOFF = 0.45


def _f(t):
    """A 0-d tensor as a float (detached)."""
    return float(t.detach())


def _system(n=14, seed=0):
    rng = np.random.default_rng(seed)
    frac = rng.random((n, 3))
    pos = torch.tensor(frac @ BOX, dtype=torch.float64)
    types = torch.tensor(rng.integers(0, 3, n), dtype=torch.int64)
    return pos, types, torch.tensor(BOX, dtype=torch.float64)


def _potential(arch, seed=0, tensor_order=None):
    cfg = {"cutoff": CUTOFF, "n_features": 8, "n_interactions": 2, "n_radial": 6, "r_min": 0.05}
    if tensor_order is not None:
        cfg["tensor_order"] = tensor_order
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(arch, cfg, len(TYPES))
        # give the per-type scale/shift non-trivial values so they are exercised
        torch.nn.init.normal_(model.scale_shift.scale, 1.0, 0.3)
        torch.nn.init.normal_(model.scale_shift.shift, 0.0, 0.3)
    model.set_energy_scale(3.0)
    prior = PairRepulsion(TYPES, [{"types": ["A", "B"], "sigma": 0.2}, {"types": ["C", "C"], "sigma": 0.25}], 2.5)
    return CGPotential(model, [prior], TYPES, CUTOFF).double()


ARCHS = [("hipnn", 0), ("hipnn", 2), ("painn", None)]


@pytest.mark.parametrize("arch,order", ARCHS)
def test_forces_match_finite_differences(arch, order):
    pot = _potential(arch, tensor_order=order)
    pos, types, box = _system()
    pos.requires_grad_(True)
    (grad,) = torch.autograd.grad(pot(pos, types, box), pos)
    h = 1e-5
    num = torch.zeros_like(pos)
    with torch.no_grad():
        for a in range(pos.shape[0]):
            for d in range(3):
                p = pos.detach().clone()
                p[a, d] += h
                ep = pot(p, types, box)
                p[a, d] -= 2 * h
                em = pot(p, types, box)
                num[a, d] = (ep - em) / (2 * h)
    assert float(grad.abs().max()) > 1e-3  # the test is not vacuous
    np.testing.assert_allclose(grad.numpy(), num.numpy(), rtol=1e-5, atol=1e-6)


def _rotation(seed=3):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(3, 3)))
    return torch.tensor(q * np.sign(np.linalg.det(q)), dtype=torch.float64)


@pytest.mark.parametrize("arch,order", ARCHS)
def test_energy_invariances(arch, order):
    pot = _potential(arch, tensor_order=order)
    pos, types, box = _system()
    e0 = _f(pot(pos, types, box))
    rot = _rotation()
    assert _f(pot(pos @ rot.T, types, box @ rot.T)) == pytest.approx(e0, rel=1e-10, abs=1e-10)
    assert _f(pot(pos + torch.tensor([0.37, -1.2, 4.0], dtype=pos.dtype), types, box)) == pytest.approx(e0, rel=1e-10)
    moved = pos.clone()
    moved[3] += box[1] - 2 * box[2]
    assert _f(pot(moved, types, box)) == pytest.approx(e0, rel=1e-10)
    same = torch.nonzero(types == types[0]).flatten()
    assert len(same) >= 2
    perm = torch.arange(len(types))
    perm[same[0]], perm[same[1]] = int(same[1]), int(same[0])
    assert _f(pot(pos[perm], types[perm], box)) == pytest.approx(e0, rel=1e-10)
    # and the energy really depends on the geometry
    assert abs(_f(pot(pos * 0.97, types, box * 0.97)) - e0) > 1e-6


@pytest.mark.parametrize("arch,order", ARCHS)
def test_eager_scripted_and_saved_agree(arch, order, tmp_path):
    pot = _potential(arch, tensor_order=order)
    pos, types, box = _system()
    scripted = torch.jit.script(pot)
    torch.jit.save(scripted, str(tmp_path / "m.pt"))
    loaded = torch.jit.load(str(tmp_path / "m.pt"))
    save_potential(tmp_path / "p.pt", pot, extra={"note": "test"})
    rebuilt = load_potential(tmp_path / "p.pt")
    assert rebuilt.metadata["extra"] == {"note": "test"}
    e = _f(pot(pos, types, box))
    for other in (scripted, loaded, rebuilt):
        assert _f(other(pos, types, box)) == pytest.approx(e, rel=1e-12)
    # non-periodic: all-zero box
    zero = torch.zeros(3, 3, dtype=torch.float64)
    assert _f(scripted(pos, types, zero)) == pytest.approx(_f(pot(pos, types, zero)), rel=1e-12)


@pytest.mark.parametrize("arch", ["hipnn", "painn"])
def test_float32_follows_positions_and_outputs(arch):
    model = build_model(arch, "small", 3)
    pos, types, box = _system()
    from cgkd.nn.neighbors import neighbor_list

    ei, sh = neighbor_list(pos.float(), box.float(), model.cutoff)
    out = model(pos.float(), types, ei, sh, torch.zeros(len(types), dtype=torch.int64), 1)
    assert out[keys.NODE_ENERGY].dtype == torch.float32 and out[keys.NODE_ENERGY].shape == (len(types),)
    assert out[keys.NODE_FEATURES].shape == (len(types), model.config.n_features)
    assert out[keys.EDGE_FEATURES].shape == (ei.shape[1], model.config.n_features)
    if arch == "painn":
        assert out[keys.VECTOR_FEATURES].shape == (len(types), 3, model.config.n_features)


@pytest.mark.parametrize("arch,order", ARCHS)
def test_forward_batch_matches_single_frames(arch, order):
    pot = _potential(arch, tensor_order=order)
    frames = [_system(seed=s) for s in (0, 1)]
    types0 = frames[0][1]
    pos = torch.cat([frames[0][0], frames[1][0]])
    types = torch.cat([types0, types0])
    box = torch.stack([frames[0][2], torch.zeros(3, 3, dtype=torch.float64)])
    batch = torch.repeat_interleave(torch.arange(2), len(types0))
    pot.train()
    out = pot.forward_batch(pos, types, box, batch, 2, compute_forces=True)
    assert out[keys.FORCE].requires_grad  # create_graph in training mode
    e0 = _f(pot(frames[0][0], types0, frames[0][2]))
    e1 = _f(pot(frames[1][0], types0, box[1]))
    np.testing.assert_allclose(out[keys.ENERGY].detach().numpy(), [e0, e1], rtol=1e-12)
    # a parameter backward through the forces works (training step)
    (out[keys.FORCE] ** 2).sum().backward()
    grads = [p.grad for p in pot.parameters() if p.grad is not None]
    assert grads and any(float(g.abs().sum()) > 0 for g in grads)


def test_presets_students_smaller_than_teachers():
    for arch in ("hipnn", "painn"):
        small = sum(p.numel() for p in build_model(arch, "small", 4).parameters())
        large = sum(p.numel() for p in build_model(arch, "large", 4).parameters())
        assert large > 10 * small


def test_build_model_errors():
    with pytest.raises(UnknownNameError, match="hipnn"):
        build_model("schnet", "small", 3)
    with pytest.raises(ValueError, match="preset"):
        build_model("hipnn", "huge", 3)
    with pytest.raises(ValueError, match="unknown key"):
        build_model("painn", {"cutof": 0.5}, 3)
    with pytest.raises(ValueError, match="tensor_order"):
        build_model("hipnn", {"tensor_order": 3}, 3)
    with pytest.raises(ValueError, match="n_types"):
        build_model("hipnn", "small", 0)
    with pytest.raises(ValueError, match="preset_or_config"):
        build_model("hipnn", 3.0, 3)
    assert set(ARCHITECTURES.names()) >= {"hipnn", "painn"}


def test_potential_errors(tmp_path):
    model = build_model("hipnn", "small", 3)
    with pytest.raises(ValueError, match="type_names"):
        CGPotential(model, [], ["A", "B"], 0.8)
    with pytest.raises(ValueError, match="cutoff"):
        CGPotential(model, [], TYPES, 0.5)
    with pytest.raises(ValueError, match="beyond the cutoff"):
        CGPotential(model, [PairRepulsion(TYPES, [{"types": ["A", "A"], "sigma": 0.9}], 1.0)], TYPES, 0.8)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_potential(tmp_path / "missing.pt")
    torch.save({"metadata": '{"format": "other"}', "state_dict": {}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="format"):
        load_potential(tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="energy scale"):
        model.set_energy_scale(-1.0)
    assert math.isfinite(float(model.scale_shift.energy_scale))
