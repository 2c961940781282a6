"""A real cgkd.nn.CGPotential through save -> `cgkd export` -> OpenMM (TorchForce and PythonForce)."""

import numpy as np
import openmm
import openmm.unit as u
import pytest
import torch

from cgkd.cli.main import main
from cgkd.data.cg_h5 import CGData, read_cg, write_cg
from cgkd.topology import Topology
from cgkd.export import load_potential_artefact
from cgkd.nn.base import build_model
from cgkd.nn.potential import CGPotential
from cgkd.nn.potential import save_potential
from cgkd.openmm import create_system

TYPES = ["A", "B"]
L = 1.6


def _potential():
    cfg = {"cutoff": 0.6, "n_features": 8, "n_interactions": 1, "n_radial": 6, "r_min": 0.05}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("hipnn", cfg, len(TYPES))
        torch.nn.init.normal_(model.scale_shift.scale, 1.0, 0.3)
    return CGPotential(model, [], TYPES, 0.6).double()


def _data():
    rng = np.random.default_rng(0)
    pos = rng.random((1, 24, 3)) * L
    return CGData(positions=pos, forces=np.zeros_like(pos), box=np.eye(3)[None] * L,
                  topology=Topology(TYPES, np.arange(24) % 2, np.where(np.arange(24) % 2, 60.0, 76.0),
                                    molecule_names=["M"] * 24), temperature=300.0)


@pytest.mark.parametrize("backend", ["torch", "python"])
def test_cgpotential_export_cli_and_openmm(tmp_path, backend):
    pot = _potential()
    save_potential(tmp_path / "model.pt", pot)
    data = _data()
    write_cg(tmp_path / "cg.h5", data)
    assert main(["export", str(tmp_path / "model.pt"), "--cg", str(tmp_path / "cg.h5"), "--out", str(tmp_path / "a.pt")]) == 0
    _, meta = load_potential_artefact(tmp_path / "a.pt")
    assert meta["type_masses"] == [76.0, 60.0] and meta["periodic"] and meta["cutoff"] == 0.6
    assert meta["dtype"] == "float64"
    x = torch.tensor(data.positions[0], dtype=torch.float64, requires_grad=True)
    e = pot(x, torch.tensor(data.types), torch.tensor(data.box[0], dtype=torch.float64))
    (g,) = torch.autograd.grad(e, x)
    system = create_system(tmp_path / "a.pt", data.openmm_topology(), types=data.types, backend=backend)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(data.positions[0].astype(float) * u.nanometer)
    st = ctx.getState(getEnergy=True, getForces=True)
    assert st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole) == pytest.approx(float(e.detach()), rel=1e-9, abs=1e-9)
    f = st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer)
    np.testing.assert_allclose(f, -g.numpy(), rtol=1e-7, atol=1e-7 * np.abs(g.numpy()).max())


def test_export_cli_refuses_unknown_types(tmp_path, capsys):
    save_potential(tmp_path / "model.pt", _potential())
    data = _data()
    data.topology = Topology(["A", "Z"], data.types % 2, data.masses)
    write_cg(tmp_path / "cg.h5", data)
    assert main(["export", str(tmp_path / "model.pt"), "--cg", str(tmp_path / "cg.h5"), "--out", str(tmp_path / "a.pt")]) == 2
    assert "does not know" in capsys.readouterr().err
