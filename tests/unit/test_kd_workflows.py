"""Bias-aware multi-fidelity training and fine-tuning on a Lennard-Jones fluid simulated here with OpenMM.

The two fidelities are the exact LJ forces (reference) and the same forces plus those of a known Gaussian
pair repulsion (a systematic bias of the cheap labels).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cgkd import keys
from cgkd.kd.teachers import build_potential
from cgkd.kd.workflows import fine_tune, multi_fidelity, with_fidelity
from cgkd.nn.fidelity import MultiFidelityPotential
from cgkd.nn.neighbors import batch_neighbor_list, edge_vectors
from cgkd.nn.radial import CosineCutoff, GaussianBasis
from cgkd.train import LossSpec, TrainConfig, fit, frameset_from_cg, model_outputs, seeded

from test_kd import lj_fluid

BASE = dict(n_features=8, n_interactions=1, n_atom_layers=1, n_radial=8, cutoff=0.5)


def gaussian_pair_forces(pos: np.ndarray, box: float, height: float, width: float = 0.15) -> np.ndarray:
    """Forces (F, N, 3) of E = sum_{i<j} height exp(-r^2 / (2 width^2)) with the minimum image."""
    d = pos[:, None, :, :] - pos[:, :, None, :]  # d[f, i, j] = x_j - x_i
    d -= box * np.round(d / box)
    r2 = (d**2).sum(-1)
    g = height * np.exp(-r2 / (2 * width**2)) / width**2
    n = pos.shape[1]
    g[:, np.arange(n), np.arange(n)] = 0.0
    return -(g[..., None] * d).sum(2)  # dU_ij/dx_i = U_ij / width^2 (x_j - x_i)


class RadialPair(nn.Module):
    """E = 1/2 sum_{i != j} sum_k w_k g_k(r_ij) fcut(r_ij): a learnable pair potential (linear in w)."""

    def __init__(self, cutoff: float = 0.5, n_radial: int = 24):
        super().__init__()
        self.rbf = GaussianBasis(n_radial, cutoff, r_min=0.2)
        self.fcut = CosineCutoff(cutoff)
        self.cutoff = cutoff
        self.w = nn.Parameter(torch.zeros(n_radial))
        self.type_names = ["AR"]

    def forward_batch(self, positions, types, box, batch, n_graphs: int, include_bonded: bool = True):
        ei, sh = batch_neighbor_list(positions, box.to(positions.dtype), batch, n_graphs, self.cutoff)
        r = torch.linalg.norm(edge_vectors(positions, ei, sh), dim=-1)
        pair = 0.5 * (self.rbf(r).to(positions.dtype) * self.w.to(positions.dtype)).sum(-1) * self.fcut(r)
        node = torch.zeros(positions.shape[0], dtype=positions.dtype).index_add(0, ei[0], pair)
        energy = torch.zeros(n_graphs, dtype=positions.dtype).index_add(0, batch, node)
        return {keys.ENERGY: energy, keys.NODE_ENERGY: node}


def rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def test_gaussian_pair_forces_are_minus_the_gradient():
    rng = np.random.default_rng(0)
    pos, box = rng.uniform(0, 1.1, size=(1, 5, 3)), 1.1

    def energy(p):
        d = p[None, :, :] - p[:, None, :]
        d -= box * np.round(d / box)
        r2 = (d**2).sum(-1)[np.triu_indices(5, 1)]
        return float((7.0 * np.exp(-r2 / (2 * 0.15**2))).sum())

    f = gaussian_pair_forces(pos, box, 7.0)[0]
    h = 1e-6
    for i, k in ((0, 0), (3, 2)):
        p1, p2 = pos[0].copy(), pos[0].copy()
        p1[i, k] += h
        p2[i, k] -= h
        assert f[i, k] == pytest.approx(-(energy(p1) - energy(p2)) / (2 * h), rel=1e-6, abs=1e-8)


def test_multi_fidelity_forces_are_minus_the_energy_gradient_and_reference_is_the_base():
    data = lj_fluid(n_frames=2)
    with seeded(0):
        base = build_potential(data, "hipnn", BASE).double()
        wrapper = MultiFidelityPotential(base, n_types=1, n_fidelities=2, cutoff=0.5).double()
        with torch.no_grad():
            wrapper.pair_weights.normal_(0.0, 5.0)
            wrapper.shifts.normal_(0.0, 5.0)
    fs = with_fidelity(frameset_from_cg(data, dtype=torch.float64), [1, 0])
    batch = fs.batch([0, 1])
    out = model_outputs(wrapper, batch, need_forces=True, create_graph=False)
    ref = model_outputs(base, batch, need_forces=True, create_graph=False)
    # frame 1 has the reference fidelity: no bias, whatever the bias parameters
    assert float(out["fidelity_bias"][1]) == 0.0 and abs(float(out["fidelity_bias"][0])) > 1e-3
    n = data.n_beads
    torch.testing.assert_close(out[keys.FORCE][n:], ref[keys.FORCE][n:], rtol=0, atol=0)
    # forces of the biased frame = -dE/dx by central differences
    pos = batch[keys.POSITIONS].clone()
    h = 1e-5
    for bead, k in ((0, 0), (5, 2), (n - 1, 1)):
        e = []
        for sign in (1, -1):
            p = pos.clone()
            p[bead, k] += sign * h
            b2 = dict(batch, **{keys.POSITIONS: p})
            e.append(float(model_outputs(wrapper, b2, need_forces=False, create_graph=False)[keys.ENERGY][0]))
        assert float(out[keys.FORCE][bead, k]) == pytest.approx(-(e[0] - e[1]) / (2 * h), rel=1e-5, abs=1e-6)


def test_bias_aware_training_recovers_the_reference_fidelity(tmp_path):
    """8 exact-label frames and 22 biased ones: pooling them learns the bias into the model; the bias-aware
    model's base predicts the exact forces of held-out frames much better. The base is a learnable pair
    potential (LJ is pairwise, so it can be learned exactly enough for the comparison to mean something)."""
    data = lj_fluid(n_frames=40)
    box = float(data.box[0, 0, 0])
    bias = gaussian_pair_forces(data.positions.astype(np.float64), box, 1.0)
    scale = 0.6 * rmse(data.forces, 0) / rmse(bias, 0)
    fidelity = np.ones(40, np.int64)
    fidelity[0:30:4] = 0  # 8 reference frames among the 30 training frames
    fidelity[30:] = 0
    labels = data.forces + (fidelity[:, None, None] == 1) * scale * bias
    frames = frameset_from_cg(data, {"force_label": labels.astype(np.float32)})
    cfg = TrainConfig(max_epochs=40, batch_size=5, lr=0.05, early_stopping=0, seed=0, dtype="float64",
                      losses=[LossSpec("forces", target="force_label")])
    train, val, test = np.arange(30), np.arange(30, 34), np.arange(34, 40)

    def fresh():
        return RadialPair()

    pooled = fit(fresh(), frames, frames, cfg, tmp_path / "pooled", train, val).model
    out = multi_fidelity(fresh(), frames, fidelity, cfg, tmp_path / "aware", train_indices=train, val_indices=val,
                         bias_cutoff=0.5, fine_tune_epochs=5)
    aware = out["model"]

    def test_rmse(model):
        batch = frames.batch(test)
        f = model_outputs(model, batch, need_forces=True, create_graph=False)[keys.FORCE].detach().numpy()
        return rmse(f, data.forces[test].reshape(-1, 3))

    e_pooled, e_aware = test_rmse(pooled), test_rmse(aware)
    print(f"held-out force RMSE vs exact: pooled {e_pooled:.2f}, bias-aware {e_aware:.2f}, bias RMS {rmse(scale * bias[test], 0):.2f}")
    assert e_aware < 0.5 * e_pooled, (e_aware, e_pooled)
    assert out["fine_tune"] is not None and out["fine_tune"].epochs_run == 5
    assert (tmp_path / "aware" / "multi_fidelity" / "checkpoint.pt").is_file()


def test_fine_tune_lowers_the_learning_rate_and_resumes(tmp_path):
    data = lj_fluid(n_frames=8)
    frames = frameset_from_cg(data)
    with seeded(0):
        model = build_potential(data, "hipnn", BASE)
    cfg = TrainConfig(max_epochs=2, batch_size=4, lr=1e-2)
    res = fine_tune(model, frames, frames, cfg, tmp_path, lr_factor=0.1, train_indices=np.arange(6), val_indices=[6, 7])
    assert res.history[0]["lr"] == pytest.approx(1e-3)
    again = fine_tune(model, frames, frames, cfg, tmp_path, lr_factor=0.1, train_indices=np.arange(6), val_indices=[6, 7])
    assert again.epochs_run == 2 and len(again.history) == 2


def test_workflow_errors(tmp_path):
    data = lj_fluid(n_frames=4)
    frames = frameset_from_cg(data)
    with seeded(0):
        base = build_potential(data, "hipnn", BASE)
    cfg = TrainConfig(max_epochs=1)
    with pytest.raises(ValueError, match=r"fidelity must have one index per frame, shape \(4,\)"):
        with_fidelity(frames, [0, 1])
    with pytest.raises(ValueError, match="weights must give a weight for each of the 2 fidelities"):
        with_fidelity(frames, [0, 1, 1, 0], weights=[1.0])
    with pytest.raises(ValueError, match="lr_factor must lie in"):
        fine_tune(base, frames, frames, cfg, tmp_path, lr_factor=2.0)
    with pytest.raises(ValueError, match="n_fidelities must be >= 2"):
        MultiFidelityPotential(base, 1, 1)
    with pytest.raises(ValueError, match="reference must lie in 0..1"):
        MultiFidelityPotential(base, 1, 2, reference=2)
    with pytest.raises(ValueError, match="MultiFidelityPotential needs the batch entry 'fidelity'"):
        model_outputs(MultiFidelityPotential(base, 1, 2), frames.batch([0, 1]), False, False)
    with pytest.raises(ValueError, match=r"fidelity indices must lie in 0..1, got 0..3"):
        model_outputs(MultiFidelityPotential(base, 1, 2), with_fidelity(frames, [0, 3, 0, 0]).batch([0, 1]), False, False)
    with pytest.raises(ValueError, match="fine-tuning needs reference-fidelity"):
        multi_fidelity(base, frames, [1, 1, 1, 1], cfg, tmp_path / "mf", reference=0, fine_tune_epochs=1)
