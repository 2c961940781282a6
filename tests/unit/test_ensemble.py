"""EnsemblePotential: mean of the members' energies and forces, TorchScript, export, bad members."""

import numpy as np
import pytest
import torch

from cgkd.nn import CGPotential, build_model
from cgkd.nn.ensemble import EnsemblePotential


def _member(seed: int, names=("A", "B"), cutoff=None):
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model("hipnn", "small", len(names))
    pot = CGPotential(model, [], list(names), float(cutoff or model.cutoff))
    pot.set_energy_scale(10.0)
    return pot.double().eval()


def _frame(n=24, length=1.6, seed=0):
    rng = np.random.default_rng(seed)
    pos = torch.tensor(rng.random((n, 3)) * length, dtype=torch.float64, requires_grad=True)
    types = torch.tensor(rng.integers(0, 2, n))
    box = torch.eye(3, dtype=torch.float64) * length
    return pos, types, box


def _energy_forces(pot, pos, types, box):
    e = pot(pos, types, box)
    (g,) = torch.autograd.grad(e, pos)
    return float(e.detach()), -g.numpy()


def test_energy_and_forces_are_the_members_mean():
    members = [_member(s) for s in range(3)]
    ens = EnsemblePotential(members)
    pos, types, box = _frame()
    e_m, f_m = zip(*[_energy_forces(m, pos, types, box) for m in members])
    assert np.std(e_m) > 1e-6  # the members differ, so the test can fail
    e, f = _energy_forces(ens, pos, types, box)
    assert e == pytest.approx(np.mean(e_m), rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(f, np.mean(f_m, axis=0), rtol=1e-10, atol=1e-10)


def test_scripted_matches_eager_and_exports(tmp_path):
    from cgkd.export import export_cg_potential, load_potential_artefact

    ens = EnsemblePotential([_member(s) for s in range(2)])
    pos, types, box = _frame(seed=1)
    e_eager = float(ens(pos, types, box))
    scripted = torch.jit.script(ens)
    assert float(scripted(pos, types, box)) == pytest.approx(e_eager, rel=1e-12)
    export_cg_potential(ens, tmp_path / "ens.pt", type_masses=[10.0, 20.0], periodic=True, dtype="float64")
    module, meta = load_potential_artefact(tmp_path / "ens.pt")
    assert meta["type_names"] == ["A", "B"]
    assert float(module(pos.detach(), types, box)) == pytest.approx(e_eager, rel=1e-10)


def test_bad_members():
    with pytest.raises(ValueError, match="at least one"):
        EnsemblePotential([])
    with pytest.raises(ValueError, match="type_names"):
        EnsemblePotential([_member(0), _member(1, names=("A", "C"))])
    m = _member(0)
    with pytest.raises(ValueError, match="cutoff"):
        EnsemblePotential([m, _member(1, cutoff=m.cutoff + 0.1)])
    with pytest.raises(ValueError, match="CGPotential"):
        EnsemblePotential([m, torch.nn.Linear(2, 2)])
