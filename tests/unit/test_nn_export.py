"""Contract with the export layer: CGPotential (network + pair prior + bonded priors) run in OpenMM
through cgkd.export / cgkd.openmm gives the same energy and forces as the training entry point."""

import numpy as np
import openmm
import openmm.app as app
import pytest
import torch

from cgkd import keys
from cgkd.export.artefact import export_cg_potential
from cgkd.nn import CGPotential, build_model
from cgkd.nn.priors import PairRepulsion
from cgkd.openmm.system import create_system, torch_force_available
from test_priors import BOX, TYPES, _bonded_priors, _chain_frame


@pytest.mark.parametrize("backend", ["torch", "python"])
def test_openmm_matches_forward_batch(backend, tmp_path):
    if backend == "torch" and not torch_force_available():
        pytest.skip("openmmtorch is not available")
    pos, types, bonds = _chain_frame(seed=9)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("painn", {"cutoff": 0.45, "n_features": 8, "n_interactions": 1}, len(TYPES))
    pair = PairRepulsion(TYPES, [{"types": ["A", "A"], "sigma": 0.3}], 2.0)
    pot = CGPotential(model, [pair] + _bonded_priors(bonds, len(types)), TYPES, 0.45).double()
    path = tmp_path / "cg.pt"
    export_cg_potential(pot, path, type_masses=[10.0, 20.0, 30.0], periodic=True)
    top = app.Topology()
    chain = top.addChain()
    atoms = []
    for k in range(2):
        res = top.addResidue("M", chain)
        atoms += [top.addAtom(TYPES[t], None, res) for t in types[4 * k : 4 * k + 4]]
    for i, j in bonds:
        top.addBond(atoms[i], atoms[j])
    system = create_system(path, top, types=types, backend=backend, box=BOX)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(pos)
    state = ctx.getState(getEnergy=True, getForces=True)
    out = pot.forward_batch(torch.tensor(pos), torch.tensor(types), torch.tensor(BOX)[None],
                            torch.zeros(len(types), dtype=torch.int64), 1, compute_forces=True, create_graph=False)
    assert float(out["prior_energy"].detach()) > 1.0  # bonded priors really contribute
    assert state.getPotentialEnergy()._value == pytest.approx(float(out[keys.ENERGY].detach()), rel=1e-6)
    np.testing.assert_allclose(state.getForces(asNumpy=True)._value, out[keys.FORCE].numpy(), atol=1e-4, rtol=1e-5)


def test_export_runs_with_the_graph_optimiser_off(tmp_path):
    """openmm-torch freezes the module; freezing without the optimiser needs an inlined forward.

    Before inlining, an exported CGPotential failed in TorchForce with "Couldn't find method" when
    ``torch._C._set_graph_executor_optimize(False)`` was set.
    """
    if not torch_force_available():
        pytest.skip("openmmtorch is not available")
    pos, types, bonds = _chain_frame(seed=4)
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = build_model("hipnn", {"cutoff": 0.45, "n_features": 8, "n_interactions": 2, "n_radial": 6},
                            len(TYPES))
    pair = PairRepulsion(TYPES, [{"types": ["A", "A"], "sigma": 0.3}], 2.0)
    pot = CGPotential(model, [pair], TYPES, 0.45).double()
    expected = pot.forward_batch(torch.tensor(pos), torch.tensor(types), torch.tensor(BOX)[None],
                                 torch.zeros(len(types), dtype=torch.int64), 1, compute_forces=True,
                                 create_graph=False)
    was = torch._C._get_graph_executor_optimize()
    torch._C._set_graph_executor_optimize(False)
    try:
        path = tmp_path / "cg.pt"
        export_cg_potential(pot, path, type_masses=[10.0, 20.0, 30.0], periodic=True)
        top = app.Topology()
        res = top.addResidue("M", top.addChain())
        for t in types:
            top.addAtom(TYPES[t], None, res)
        system = create_system(path, top, types=types, backend="torch", box=BOX)
        ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        ctx.setPositions(pos)
        state = ctx.getState(getEnergy=True, getForces=True)
    finally:
        torch._C._set_graph_executor_optimize(was)
    assert state.getPotentialEnergy()._value == pytest.approx(float(expected[keys.ENERGY].detach()), rel=1e-6)
    np.testing.assert_allclose(state.getForces(asNumpy=True)._value, expected[keys.FORCE].numpy(), atol=1e-4,
                               rtol=1e-5)
