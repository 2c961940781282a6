"""Atomistic data and models (issue 14): variable-size sets, files through ASE, reference energies, labelers,
the RMSE + MAE energy term, training with per-atom-energy KD, the ASE calculator and the OpenMM-ML route."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cgkd import keys, units
from cgkd.aa.labelers import fcc_cells, get_labeler, sample_md
from cgkd.data.atoms import fit_reference_energies, reference_energy
from cgkd.io.atoms import EV_PER_A_TO_KJ_PER_MOL_NM, AtomsData, concatenate, from_ase, read_atoms, write_atoms
from cgkd.kd.atomistic import atomistic_potential, split_structures, train_atomistic
from cgkd.train.atoms import ENERGY_LABEL, AtomsSet
from cgkd.train.trainer import TrainConfig


def _mixed_set(seed=0) -> AtomsData:
    """EMT Al cells of 32 and 48 atoms (periodic) and a Cu3 cluster (not periodic), labelled."""
    from ase import Atoms

    cells = fcc_cells("Al", [(2, 2, 2), (2, 2, 3)])
    sets = [sample_md(get_labeler("emt"), c, temperatures=[600.0], frames_per_run=2, interval=3, seed=seed + k,
                      show_progress=False) for k, c in enumerate(cells)]
    cluster = Atoms("Cu3", positions=[[0, 0, 0], [2.5, 0, 0], [1.2, 2.1, 0.3]])
    sets.append(get_labeler("emt").label(from_ase([cluster], labels=False), show_progress=False))
    return concatenate(sets)


@pytest.fixture(scope="module")
def mixed():
    return _mixed_set()


def test_files_round_trip_with_units_and_provenance(tmp_path, mixed):
    assert mixed.n_atoms.tolist() == [32, 32, 48, 48, 3] and mixed.periodic.tolist() == [True] * 4 + [False]
    for name in ("set.xyz", "set.db"):
        write_atoms(tmp_path / name, mixed)
        back = read_atoms(tmp_path / name)
        np.testing.assert_allclose(back.positions, mixed.positions, atol=1e-9)
        np.testing.assert_allclose(back.cells, mixed.cells, atol=1e-9)
        np.testing.assert_allclose(back.energy, mixed.energy, rtol=1e-9)
        np.testing.assert_allclose(back.forces, mixed.forces, rtol=1e-6, atol=1e-4)  # 8 decimals of eV/A
        assert back.info[0]["labeler"] == "emt" and back.info[0]["temperature_K"] == 600.0
    # units at the boundary: the file holds Angstrom and eV
    import ase.io

    raw = ase.io.read(str(tmp_path / "set.xyz"), index=0)
    assert raw.get_potential_energy() == pytest.approx(mixed.energy[0] / units.EV_TO_KJ_PER_MOL)
    np.testing.assert_allclose(raw.positions, mixed.positions[:32] * 10.0, atol=1e-8)
    np.testing.assert_allclose(raw.get_forces(), mixed.forces[:32] / EV_PER_A_TO_KJ_PER_MOL_NM, atol=1e-8)


def test_emt_labels_are_ase_emt_in_cgkd_units(mixed):
    from ase.calculators.emt import EMT

    atoms = mixed.to_ase(2)
    atoms.calc = EMT()
    assert mixed.energy[2] == pytest.approx(atoms.get_potential_energy() * units.EV_TO_KJ_PER_MOL, rel=1e-10)
    np.testing.assert_allclose(mixed.forces[64:112], atoms.get_forces() * EV_PER_A_TO_KJ_PER_MOL_NM, rtol=1e-8,
                               atol=1e-8)


def test_xtb_labeler_or_a_clear_missing_extra_error():
    from cgkd.errors import MissingExtraError, require

    with pytest.raises(MissingExtraError, match=r'pip install "cgkd\[qm\]"'):
        require("cgkd_no_such_package", "qm", "the test")
    pytest.importorskip("tblite.ase")
    from ase.build import molecule

    data = get_labeler("xtb").label(from_ase([molecule("H2O")], labels=False), show_progress=False)
    assert data.info[0]["method"] == "GFN2-xTB"
    # the force is -dE/dx: compare with a central difference of the xTB energy along one coordinate
    from tblite.ase import TBLite

    h2o = molecule("H2O")
    h2o.calc = TBLite(method="GFN2-xTB", verbosity=0)
    d = 1e-4
    h2o.positions[1, 0] += d
    ep = h2o.get_potential_energy()
    h2o.positions[1, 0] -= 2 * d
    em = h2o.get_potential_energy()
    fd = -(ep - em) / (2 * d) * EV_PER_A_TO_KJ_PER_MOL_NM
    assert data.forces[1, 0] == pytest.approx(fd, rel=1e-3, abs=1e-2)


def test_reference_energies_are_recovered_from_composition():
    rng = np.random.default_rng(4)
    eps = {"H": -1250.0, "C": -98000.0, "O": -197000.0}
    z = {"H": 1, "C": 6, "O": 8}
    numbers, counts = [], []
    for _ in range(40):
        n = rng.integers(1, 6, size=3)
        numbers.append(np.repeat([z["H"], z["C"], z["O"]], n))
        counts.append(int(n.sum()))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    numbers = np.concatenate(numbers)
    comp = np.array([[np.sum(numbers[a:b] == z[e]) for e in ("H", "C", "O")] for a, b in zip(offsets, offsets[1:])])
    energy = comp @ np.array([eps["H"], eps["C"], eps["O"]]) + rng.normal(scale=5.0, size=len(comp))
    data = AtomsData(numbers=numbers, positions=rng.random((len(numbers), 3)), offsets=offsets,
                     cells=np.zeros((len(comp), 3, 3)), energy=energy)
    fitted = fit_reference_energies(data)
    assert list(fitted) == ["H", "C", "O"]  # by atomic number
    for e in eps:
        assert fitted[e] == pytest.approx(eps[e], abs=5.0)
    assert np.std(energy - reference_energy(data, fitted)) < 6.0
    with pytest.raises(ValueError, match=r"elements \['N'\] occur in no structure"):
        fit_reference_energies(data, elements=["H", "C", "O", "N"])


def test_bad_atoms_data_is_refused_with_the_argument_named():
    good = dict(numbers=[13, 13], positions=np.zeros((2, 3)), offsets=[0, 2], cells=np.zeros((1, 3, 3)))
    AtomsData(**good)
    with pytest.raises(ValueError, match="offsets must start at 0"):
        AtomsData(**dict(good, offsets=[1, 2]))
    with pytest.raises(ValueError, match=r"positions must have shape \(2, 3\)"):
        AtomsData(**dict(good, positions=np.zeros((3, 3))))
    with pytest.raises(ValueError, match=r"numbers must be <= 118"):
        AtomsData(**dict(good, numbers=[13, 300]))
    with pytest.raises(ValueError, match=r"energy must have shape \(1,\)"):
        AtomsData(**dict(good, energy=[1.0, 2.0]))
    from ase import Atoms

    with pytest.raises(ValueError, match="periodic along"):
        from_ase([Atoms("Al", cell=[3, 3, 3], pbc=[True, True, False])])


def test_variable_size_batches_give_forces_minus_dE_dx(mixed):
    """A batch of a 32-atom cell, a 48-atom cell and a 3-atom molecule: forces = -dE/dx by central differences."""
    ds = AtomsSet(mixed, ["Al", "Cu"], dtype=torch.float64)
    b = ds.batch([0, 3, 4])
    assert b["n_graphs"] == 3 and b[keys.POSITIONS].shape == (83, 3) and b[keys.FORCES].shape == (83, 3)
    assert b["batch"].tolist() == [0] * 32 + [1] * 48 + [2] * 3 and b[ENERGY_LABEL].shape == (3,)
    assert torch.equal(b[keys.BOX][2], torch.zeros(3, 3, dtype=torch.float64))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        pot = atomistic_potential(["Al", "Cu"], "hipnn", {"n_features": 8, "n_interactions": 2, "n_radial": 6},
                                  cutoff=0.45, energy_scale=5.0).double()
    out = pot.forward_batch(b[keys.POSITIONS], b[keys.TYPES], b[keys.BOX], b["batch"], 3, compute_forces=True,
                            create_graph=False)
    force = out[keys.FORCE]
    pos = b[keys.POSITIONS].clone()
    h = 1e-5
    for atom in (0, 40, 81):
        for c in range(3):
            up, down = pos.clone(), pos.clone()
            up[atom, c] += h
            down[atom, c] -= h
            e = [float(pot.forward_batch(p, b[keys.TYPES], b[keys.BOX], b["batch"], 3)[keys.ENERGY].sum())
                 for p in (up, down)]
            assert float(force[atom, c]) == pytest.approx(-(e[0] - e[1]) / (2 * h), rel=1e-5, abs=1e-6)
    # energies per structure do not depend on what else is in the batch
    alone = pot.forward_batch(*[ds.batch([4])[k] for k in (keys.POSITIONS, keys.TYPES, keys.BOX, "batch")], 1)
    assert float(alone[keys.ENERGY][0]) == pytest.approx(float(out[keys.ENERGY][2]), rel=1e-12)
    with pytest.raises(ValueError, match=r"elements \['Cu'\] that are not among type_names"):
        AtomsSet(mixed, ["Al"])


def test_energy_rmse_mae_term_is_per_atom_rmse_plus_mae():
    from cgkd.train.losses import EnergyRMSEMAELoss

    batch = {"batch": torch.tensor([0, 0, 1, 1, 1, 1]), ENERGY_LABEL: torch.tensor([1.0, 2.0]),
             "sample_weight": torch.ones(2), "n_graphs": 2}
    outputs = {keys.ENERGY: torch.tensor([3.0, 10.0])}
    value, metrics = EnergyRMSEMAELoss(target=ENERGY_LABEL)(outputs, batch)
    d = np.array([(3.0 - 1.0) / 2, (10.0 - 2.0) / 4])
    assert float(value) == pytest.approx(np.sqrt(np.mean(d**2)) + np.mean(np.abs(d)), rel=1e-6)
    assert metrics["energy_mae_per_atom"] == pytest.approx(1.5)


def test_train_teacher_and_born_again_student_resume_and_refuse_other_data(tmp_path, mixed):
    path = tmp_path / "al.xyz"
    write_atoms(path, mixed.select([0, 1, 2, 3]))
    cfg = TrainConfig(max_epochs=3, batch_size=2, lr=3e-3)
    with pytest.warns(UserWarning, match="distinct frames"):
        teacher = train_atomistic(path, tmp_path / "t", preset={"n_features": 8, "n_interactions": 1, "n_radial": 6},
                                  config=cfg, val_fraction=0.25, test_fraction=0.25)
    assert teacher["elements"] == ["Al"] and len(teacher["split"]["test"]) == 1
    assert np.isfinite(teacher["test"]["force_rmse"]) and teacher["test"]["force_rmse_eV_per_A"] > 0
    # the per-type shift starts at the reference energy fitted on the training structures
    train = mixed.select([0, 1, 2, 3]).select(teacher["split"]["train"])
    assert teacher["references_kJ_mol"]["Al"] == pytest.approx(fit_reference_energies(train)["Al"])
    with pytest.warns(UserWarning, match="distinct frames"):
        student = train_atomistic(path, tmp_path / "s", preset={"n_features": 4, "n_interactions": 1, "n_radial": 4},
                                  config=cfg, teacher=tmp_path / "t" / "model.pt", born_again_epoch=1,
                                  val_fraction=0.25, test_fraction=0.25)
    assert student["split"] == teacher["split"]  # same data and split seed: same split
    log = [json.loads(line) for line in (tmp_path / "s" / "log.jsonl").read_text().splitlines()]
    assert set(log[0]["weights"]) == {"forces", "energy_rmse_mae", "teacher_atom_energy"}
    assert log[0]["weights"]["teacher_atom_energy"] == 1.0 and log[0]["weights"]["forces"] == pytest.approx(0.1)
    assert log[-1]["weights"]["teacher_atom_energy"] == pytest.approx(0.1) and log[-1]["weights"]["forces"] == 1.0
    # the best epoch is picked by the validation force loss, not the total that also rewards imitating the teacher
    # (an epoch counts as better when it improves by more than the trainer's relative IMPROVEMENT)
    from cgkd.train.trainer import IMPROVEMENT

    best, best_val = 0, log[0]["val"]["loss/forces"]
    for k in range(1, len(log)):
        if log[k]["val"]["loss/forces"] < best_val - IMPROVEMENT * abs(best_val):
            best, best_val = k, log[k]["val"]["loss/forces"]
    assert student["best_epoch"] == log[best]["epoch"]
    again = train_atomistic(path, tmp_path / "s", config=cfg)  # finished: skipped, same summary
    assert again == student
    write_atoms(tmp_path / "other.xyz", mixed.select([0, 1, 2]))
    with pytest.raises(ValueError, match="trained on other data"):
        train_atomistic(tmp_path / "other.xyz", tmp_path / "s", config=cfg)
    assert split_structures(10, 3)[2].tolist() == split_structures(10, 3)[2].tolist()
    with pytest.raises(ValueError, match=r"kd must name terms among"):
        train_atomistic(path, tmp_path / "s2", config=cfg, teacher=tmp_path / "t" / "model.pt", kd=["x2y"])


@pytest.mark.parametrize("kd", ["n2n", "e2n", "v2v"])
def test_feature_kd_from_a_painn_teacher(tmp_path, mixed, kd):
    """Feature KD terms on variable-size molecules/cells: the teacher's features reach the loss (a term the log
    records with a positive value; a missing teacher output or a shape mismatch raises)."""
    from ase import Atoms

    rng = np.random.default_rng(5)
    clusters = [Atoms("Cu3", positions=rng.normal(scale=1.5, size=(3, 3)) + [[0, 0, 0], [2.5, 0, 0], [0, 2.5, 0]])
                for _ in range(4)]
    path = tmp_path / "set.xyz"
    write_atoms(path, concatenate([mixed, get_labeler("emt").label(from_ase(clusters, labels=False),
                                                                    show_progress=False)]))
    cfg = TrainConfig(max_epochs=2, batch_size=2, lr=3e-3)
    small = {"n_features": 8, "n_interactions": 1}
    with pytest.warns(UserWarning, match="distinct frames"):
        train_atomistic(path, tmp_path / "t", arch="painn", preset={"n_features": 12, "n_interactions": 2},
                        config=cfg, val_fraction=0.2, test_fraction=0.2)
        train_atomistic(path, tmp_path / kd, arch="painn", preset=small, config=cfg, teacher=tmp_path / "t" / "model.pt",
                        kd=[kd], val_fraction=0.2, test_fraction=0.2)
    log = [json.loads(line) for line in (tmp_path / kd / "log.jsonl").read_text().splitlines()]
    assert f"loss/teacher_{kd}" in log[0]["train"] and log[-1]["train"][f"loss/teacher_{kd}"] > 0


def _float64_model(tmp_path):
    from cgkd.nn.potential import save_potential

    with torch.random.fork_rng():
        torch.manual_seed(2)
        pot = atomistic_potential(["Al", "Cu"], "hipnn", {"n_features": 8, "n_interactions": 1, "n_radial": 6},
                                  cutoff=0.45, references={"Al": -10.0, "Cu": -20.0}, energy_scale=20.0).double()
    save_potential(tmp_path / "model.pt", pot)
    return tmp_path / "model.pt"


def test_ase_calculator_forces_and_stress_are_derivatives(tmp_path, mixed):
    from cgkd.export import export_atomistic
    from cgkd.export.ase_calculator import CgkdCalculator

    model = _float64_model(tmp_path)
    export_atomistic(model, tmp_path / "art.pt", periodic=True, dtype="float64")
    atoms = mixed.to_ase(2)
    atoms.rattle(0.05, seed=3)
    atoms.calc = CgkdCalculator(model)
    forces, stress, energy = atoms.get_forces(), atoms.get_stress(), atoms.get_potential_energy()
    np.testing.assert_allclose(forces, atoms.calc.calculate_numerical_forces(atoms, d=1e-4), atol=1e-6)
    np.testing.assert_allclose(stress, atoms.calc.calculate_numerical_stress(atoms, d=1e-6), atol=1e-7)
    assert atoms.get_potential_energies().sum() == pytest.approx(energy, rel=1e-10)
    # the exported artefact gives the same numbers
    twin = atoms.copy()
    twin.calc = CgkdCalculator(tmp_path / "art.pt")
    assert twin.get_potential_energy() == pytest.approx(energy, rel=1e-10)
    np.testing.assert_allclose(twin.get_stress(), stress, atol=1e-10)
    # a molecule: no stress, same forces as differences
    mol = mixed.to_ase(4)
    mol.calc = CgkdCalculator(model)
    np.testing.assert_allclose(mol.get_forces(), mol.calc.calculate_numerical_forces(mol, d=1e-4), atol=1e-6)
    from ase import Atoms

    bad = Atoms("Na", positions=[[0, 0, 0]])
    bad.calc = CgkdCalculator(model)
    with pytest.raises(ValueError, match=r"elements \['Na'\] that the model does not know"):
        bad.get_potential_energy()


def test_openmm_ml_route_matches_the_calculator(tmp_path, mixed):
    import openmm
    import openmm.app as app
    from openmmml import MLPotential

    from cgkd.export import export_atomistic
    from cgkd.export.ase_calculator import CgkdCalculator

    model = _float64_model(tmp_path)
    export_atomistic(model, tmp_path / "art.pt", periodic=True, dtype="float64")
    atoms = mixed.to_ase(0)
    top = app.Topology()
    res = top.addResidue("AL", top.addChain())
    for k in range(len(atoms)):
        top.addAtom(f"AL{k}", app.Element.getBySymbol("Al"), res)  # names are not types: elements are
    top.setPeriodicBoxVectors(atoms.cell.array * units.ANGSTROM_TO_NM)
    system = MLPotential("cgkd", model=str(tmp_path / "art.pt")).createSystem(top)
    assert system.getParticleMass(0).value_in_unit(openmm.unit.dalton) == pytest.approx(26.98, abs=0.01)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(atoms.positions * units.ANGSTROM_TO_NM)
    state = ctx.getState(getEnergy=True, getForces=True)
    atoms.calc = CgkdCalculator(model)
    assert state.getPotentialEnergy()._value == pytest.approx(atoms.get_potential_energy() * units.EV_TO_KJ_PER_MOL,
                                                              rel=1e-9)
    np.testing.assert_allclose(state.getForces(asNumpy=True)._value,
                               atoms.get_forces() * EV_PER_A_TO_KJ_PER_MOL_NM, rtol=1e-7, atol=1e-7)


def test_cli_label_train_export_md(tmp_path):
    from cgkd.cli.main import main

    xyz = tmp_path / "al.xyz"
    assert main(["atoms", "label", "--labeler", "emt", "--fcc", "Al", "--repeats", "2x2x2", "--temperatures", "500",
                 "--frames", "6", "--interval", "2", "--out", str(xyz)]) == 0
    assert read_atoms(xyz).n_structures == 6
    with pytest.warns(UserWarning, match="distinct frames"):
        assert main(["atoms", "train", str(xyz), "--out", str(tmp_path / "m"), "--epochs", "2", "--batch-size", "2",
                     "--preset", '{"n_features": 4, "n_interactions": 1, "n_radial": 4}']) == 0
    assert main(["atoms", "export", str(tmp_path / "m" / "model.pt"), "--out", str(tmp_path / "m.pt"),
                 "--periodic"]) == 0
    assert main(["atoms", "md", str(tmp_path / "m.pt"), "--start", str(xyz), "--steps", "4", "--every", "2",
                 "--out", str(tmp_path / "md.xyz")]) == 0
    assert read_atoms(tmp_path / "md.xyz").n_structures == 2
    assert main(["atoms", "md", str(tmp_path / "m" / "model.pt"), "--engine", "openmm", "--start", str(xyz), "--steps",
                 "4", "--every", "2", "--timestep-fs", "1", "--out", str(tmp_path / "md_openmm.xyz")]) == 0
    traj = read_atoms(tmp_path / "md_openmm.xyz")
    assert traj.n_structures == 2 and traj.info[0]["engine"] == "openmm"
    # the OpenMM forces of a frame are the model's, evaluated again through the ASE calculator
    from cgkd.export.ase_calculator import CgkdCalculator

    frame = traj.to_ase(1)
    frame.calc = CgkdCalculator(tmp_path / "m" / "model.pt")
    np.testing.assert_allclose(frame.get_forces() * EV_PER_A_TO_KJ_PER_MOL_NM, traj.forces[32:], rtol=1e-3, atol=0.5)
    with pytest.raises(SystemExit):  # argparse: "expected a repeat like 2x2x3"
        main(["atoms", "label", "--fcc", "Al", "--repeats", "2x2", "--out", str(tmp_path / "x.xyz")])
    assert main(["atoms", "label", "--labeler", "nope", "--fcc", "Al", "--out", str(tmp_path / "y.xyz")]) == 2


def test_label_cache_reuses_finished_labels(tmp_path, mixed):
    from cgkd.aa.labelers import EMTLabeler

    class CountingEMT(EMTLabeler):
        calls = 0

        def calculator(self):
            from ase.calculators.emt import EMT

            owner = self

            class Counted(EMT):
                def calculate(self, *args, **kwargs):
                    owner.calls += 1
                    return super().calculate(*args, **kwargs)

            return Counted()

    lab = CountingEMT()
    part = mixed.select([0, 1])
    first = lab.label(part, cache=tmp_path / "cache", show_progress=False)
    assert lab.calls == 2 and len(list((tmp_path / "cache").glob("*.npz"))) == 2
    again = lab.label(mixed.select([1, 0, 2]), cache=tmp_path / "cache", show_progress=False)
    assert lab.calls == 3  # only structure 2 was new
    np.testing.assert_allclose(again.energy[:2], first.energy[::-1])
    np.testing.assert_allclose(again.energy, mixed.energy[[1, 0, 2]], rtol=1e-12)


def test_dft_labeler_on_h2_or_a_clear_missing_extra_error():
    from ase import Atoms

    h2 = from_ase([Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])], labels=False)
    lab = get_labeler("dft")
    try:
        import pyscf  # noqa: F401
    except ImportError:
        from cgkd.errors import MissingExtraError

        with pytest.raises(MissingExtraError, match=r'cgkd\[qm\]'):
            lab.label(h2, show_progress=False)
        pytest.skip("pyscf is not installed (pip install \"cgkd[qm]\"); checked the error instead")
    out = lab.label(h2, show_progress=False)
    assert out.forces[0, 2] == pytest.approx(-out.forces[1, 2], abs=1e-3) and out.info[0]["xc"] == "PBE"
    moved = []
    for sign in (1, -1):  # forces are -dE/dx: a central difference along the bond
        mol = Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74 + sign * 1e-3]])
        mol.calc = lab.calculator()
        moved.append(mol.get_potential_energy())
    fd = -(moved[0] - moved[1]) / 2e-3 * EV_PER_A_TO_KJ_PER_MOL_NM
    assert out.forces[1, 2] == pytest.approx(fd, rel=1e-3, abs=1.0)
    assert out.energy[0] == pytest.approx(-1.16 * 2625.5, rel=0.02)  # about -1.16 hartree


def test_asteroid_down_weights_biased_cheap_labels_and_fine_tunes(tmp_path, mixed):
    """Cheap labels = EMT with a large error on half the structures; the bias model (trained on clean labels)
    must give those structures the lower weights, and the fine-tuned model starts from the weighted one."""
    from cgkd.kd.asteroid import asteroid_weights, bias_estimates, run_asteroid

    al = concatenate([sample_md(get_labeler("emt"), c, temperatures=[400.0, 900.0], frames_per_run=6, interval=3,
                                seed=7, show_progress=False) for c in fcc_cells("Al", [(2, 2, 2)])])
    rng = np.random.default_rng(0)
    cheap = al.select(np.arange(al.n_structures))
    bad = np.arange(al.n_structures) % 2 == 1
    for s in np.flatnonzero(bad):
        a, b = cheap.offsets[s], cheap.offsets[s + 1]
        cheap.forces[a:b] += rng.normal(scale=1500.0, size=(b - a, 3))
    write_atoms(tmp_path / "cheap.xyz", cheap)
    write_atoms(tmp_path / "accurate.xyz", al.select(np.arange(0, al.n_structures, 2)))
    cfg = TrainConfig(max_epochs=4, batch_size=2, lr=3e-3)
    with pytest.warns(UserWarning, match="distinct frames"):
        run_asteroid(tmp_path / "cheap.xyz", tmp_path / "accurate.xyz", tmp_path / "ast",
                     preset={"n_features": 8, "n_interactions": 1, "n_radial": 6}, config=cfg)
    bias = bias_estimates(tmp_path / "ast" / "bias_model" / "model.pt", cheap)
    w = asteroid_weights(bias)
    assert w[bad].max() < w[~bad].min()  # every corrupted structure weighs less than every clean one
    tuned = json.loads((tmp_path / "ast" / "finetuned" / "atomistic.json").read_text())
    assert tuned["settings"]["init"] == str(tmp_path / "ast" / "cheap_weighted" / "model.pt")
    assert json.loads((tmp_path / "ast" / "cheap_weighted" / "atomistic.json").read_text())["settings"]["weighted"]
    with pytest.raises(ValueError, match="gamma must be positive"):
        asteroid_weights(bias, gamma=0.0)


@pytest.mark.parametrize("name", ["chgnet", "sevennet"])
def test_universal_model_labelers_load_shipped_weights(name):
    """The pretrained weights come from the wheel; forces are -dE/dx (central difference, float32 models)."""
    pytest.importorskip({"chgnet": "chgnet", "sevennet": "sevenn"}[name],
                        reason=f'needs pip install "cgkd[universal]" for the {name} labeler')
    cell = fcc_cells("Al", [(2, 2, 2)])[0]
    cell.rattle(0.05, seed=2)
    lab = get_labeler(name)
    out = lab.label(from_ase([cell], labels=False), show_progress=False)
    assert np.isfinite(out.energy).all() and out.info[0]["labeler"] == name
    # a cohesive metal: a few eV per atom below free atoms
    assert -6.0 < out.energy[0] / 32 / units.EV_TO_KJ_PER_MOL < -2.0
    calc = lab.calculator()
    d = 1e-3
    moved = []
    for sign in (1, -1):
        a = cell.copy()
        a.positions[5, 1] += sign * d
        a.calc = calc
        moved.append(a.get_potential_energy())
    fd = -(moved[0] - moved[1]) / (2 * d) * EV_PER_A_TO_KJ_PER_MOL_NM
    assert out.forces[5, 1] == pytest.approx(fd, abs=0.05 * EV_PER_A_TO_KJ_PER_MOL_NM)


def test_pfd_correction_teacher_and_distillation_rounds(tmp_path):
    """PFD with CHGNet as the universal model and EMT as the 'accurate' method: the corrected teacher is closer
    to EMT than CHGNet zero-shot on the frames it was fitted on, and the rounds distil a student."""
    pytest.importorskip("chgnet", reason='needs pip install "cgkd[universal]"')
    from cgkd.kd.pfd import TeacherLabeler, fit_correction, run_pfd, teacher_errors, universal_labeler

    cell = fcc_cells("Al", [(2, 2, 2)])[0]
    acc = sample_md(get_labeler("emt"), cell, temperatures=[500.0, 900.0], frames_per_run=4, interval=3, seed=1,
                    show_progress=False)
    write_atoms(tmp_path / "accurate.xyz", acc)
    write_atoms(tmp_path / "heldout.xyz", sample_md(get_labeler("emt"), cell, temperatures=[700.0], frames_per_run=2,
                                                     interval=3, seed=9, show_progress=False))
    uni = universal_labeler("chgnet")
    cfg = TrainConfig(max_epochs=20, batch_size=2, lr=3e-3)
    fit_correction(uni, tmp_path / "accurate.xyz", tmp_path / "corr",
                   preset={"n_features": 8, "n_interactions": 1, "n_radial": 6}, config=cfg)
    teacher = TeacherLabeler(uni, tmp_path / "corr" / "correction" / "model.pt")
    zero_shot = teacher_errors(uni, acc)
    fitted = teacher_errors(teacher, acc)
    assert fitted["force_rmse"] < zero_shot["force_rmse"]
    res = run_pfd(teacher, [cell], tmp_path / "heldout.xyz", tmp_path / "pfd", temperatures=[700.0],
                  frames_per_round=3, interval=2, max_rounds=2, tol=-1.0,
                  preset={"n_features": 4, "n_interactions": 1, "n_radial": 4},
                  config=TrainConfig(max_epochs=2, batch_size=2))
    assert [r["synthetic_frames"] for r in res["rounds"]] == [3, 6]
    assert all(np.isfinite(r["heldout"]["force_rmse"]) for r in res["rounds"])
    synth = read_atoms(tmp_path / "pfd" / "synthetic_round0.xyz")
    assert synth.info[0]["labeler"] == "chgnet+correction"


def test_fine_tuning_moves_the_energy_zero_to_the_new_labels(tmp_path, mixed):
    """Labels shifted by a per-element constant (another method's zero): after re-referencing, the init model's
    energy error is no worse than on its own labels, instead of the constant."""
    from cgkd.kd.atomistic import rereference
    from cgkd.nn.potential import load_potential

    al = mixed.select([0, 1, 2, 3])
    write_atoms(tmp_path / "a.xyz", al)
    cfg = TrainConfig(max_epochs=2, batch_size=2)
    with pytest.warns(UserWarning, match="distinct frames"):
        first = train_atomistic(tmp_path / "a.xyz", tmp_path / "m", config=cfg, val_fraction=0.25, test_fraction=0.25,
                                preset={"n_features": 4, "n_interactions": 1, "n_radial": 4})
    shifted = al.select(range(4))
    shifted.energy = shifted.energy - 5000.0 * shifted.n_atoms  # -5000 kJ/mol per Al atom
    pot = load_potential(first["model"])
    delta = rereference(pot, shifted)
    assert delta["Al"] == pytest.approx(-5000.0, abs=50.0)
    from cgkd.kd.atomistic import evaluate_atomistic

    # no worse than the init model on its own labels (the fit also removes the init model's own mean offset)
    assert evaluate_atomistic(pot, shifted)["energy_rmse_per_atom"] <= 1.01 * evaluate_atomistic(
        load_potential(first["model"]), al)["energy_rmse_per_atom"] + 0.1


def test_score_matching_learns_forces_from_unlabelled_md_samples(tmp_path):
    """Sliced score matching on EMT MD configurations (their labels dropped) learns forces that point along EMT's:
    the minimiser of the objective is the Boltzmann force F = kT grad log p."""
    from cgkd.kd.asteroid import train_score_matching
    from cgkd.kd.atomistic import evaluate_atomistic
    from cgkd.nn.potential import load_potential

    cell = fcc_cells("Al", [(2, 2, 2)])[0]
    md = sample_md(get_labeler("emt"), cell, temperatures=[300.0], frames_per_run=60, interval=4, seed=3)
    write_atoms(tmp_path / "md.xyz", md.select(np.arange(50)))
    cfg = TrainConfig(max_epochs=25, batch_size=5, lr=2e-3, early_stopping=0, seed=0)
    res = train_score_matching(tmp_path / "md.xyz", tmp_path / "sm", preset={"n_features": 8, "n_interactions": 1},
                               config=cfg)
    held = md.select(np.arange(50, 60))
    pot = load_potential(res["model"])
    from cgkd.nn.calculator import CgkdCalculator

    calc = CgkdCalculator(res["model"])
    pred = np.concatenate([np.asarray(calc.get_forces(held.to_ase(s))) for s in range(held.n_structures)])
    pred = pred * EV_PER_A_TO_KJ_PER_MOL_NM
    cos = float(np.sum(pred * held.forces) / np.sqrt(np.sum(pred ** 2) * np.sum(held.forces ** 2)))
    assert cos > 0.5, f"score-matched forces are not aligned with EMT's (cosine {cos:.3f})"
    assert evaluate_atomistic(pot, held)["force_rmse"] < float(np.sqrt(np.mean(held.forces ** 2)))
    # resumable and bound to its data; structures without a temperature are refused by name
    assert train_score_matching(tmp_path / "md.xyz", tmp_path / "sm", config=cfg)["best_epoch"] == res["best_epoch"]
    bare = AtomsData(numbers=md.numbers, positions=md.positions, offsets=md.offsets, cells=md.cells,
                     info=[{} for _ in range(md.n_structures)])
    write_atoms(tmp_path / "bare.xyz", bare)
    with pytest.raises(ValueError, match="have no 'temperature_K' in their info"):
        train_score_matching(tmp_path / "bare.xyz", tmp_path / "sm2", config=cfg)


def test_openmm_labeler_is_the_force_field_in_cgkd_units(tmp_path):
    """A classical force field as a labeler: energies and forces equal OpenMM's own, forces are -dE/dx, periodic
    cells set the box; bad input is refused by name."""
    import openmm
    import openmm.app as app
    import openmm.unit as u
    from ase import Atoms

    from cgkd.aa.labelers import OpenMMLabeler

    # three flexible TIP3P-FB waters in vacuum, built here with OpenMM's own force field files
    top = app.Topology()
    chain = top.addChain()
    pos = []
    rng = np.random.default_rng(0)
    for k in range(3):
        res = top.addResidue("HOH", chain)
        o = top.addAtom("O", app.element.oxygen, res)
        h1 = top.addAtom("H1", app.element.hydrogen, res)
        h2 = top.addAtom("H2", app.element.hydrogen, res)
        top.addBond(o, h1)
        top.addBond(o, h2)
        c = np.array([0.3 * k, 0.05 * k, 0.0])
        pos += [c, c + [0.0957, 0, 0], c + [-0.024, 0.0927, 0]]
    pos = np.asarray(pos) + rng.normal(scale=0.005, size=(9, 3))
    system = app.ForceField("amber14/tip3pfb.xml").createSystem(top, nonbondedMethod=app.NoCutoff, constraints=None,
                                                                 rigidWater=False)
    (tmp_path / "water.xml").write_text(openmm.XmlSerializer.serialize(system))
    lab = get_labeler("openmm", {"system": tmp_path / "water.xml"})
    atoms = Atoms("OH2OH2OH2", positions=pos * 10.0)
    got = lab.label(from_ase([atoms], labels=False), show_progress=False)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(pos * u.nanometer)
    st = ctx.getState(getEnergy=True, getForces=True)
    assert got.energy[0] == pytest.approx(st.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole), rel=1e-10)
    np.testing.assert_allclose(got.forces, st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer),
                               rtol=1e-9, atol=1e-9)
    atoms.calc = lab.calculator()
    np.testing.assert_allclose(atoms.get_forces(), atoms.calc.calculate_numerical_forces(atoms, d=1e-5), rtol=1e-5,
                               atol=1e-5)
    # periodic: an LJ box whose OpenMM box follows each structure's cell
    lj = openmm.System()
    nb = openmm.NonbondedForce()
    nb.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    nb.setCutoffDistance(0.6)
    for _ in range(8):
        lj.addParticle(39.9)
        nb.addParticle(0.0, 0.34, 0.99)
    lj.addForce(nb)
    lj.setDefaultPeriodicBoxVectors(*(np.eye(3) * 1.4))
    (tmp_path / "lj.xml").write_text(openmm.XmlSerializer.serialize(lj))
    cells = [Atoms("Ar8", positions=rng.uniform(0, 14, size=(8, 3)), cell=np.eye(3) * L, pbc=True) for L in (14.0, 13.0)]
    box = get_labeler("openmm", {"system": tmp_path / "lj.xml"}).label(from_ase(cells, labels=False),
                                                                         show_progress=False)
    for a, e in zip(cells, box.energy):
        ctx = openmm.Context(lj, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        ctx.setPeriodicBoxVectors(*(np.eye(3) * a.cell[0, 0] / 10.0))
        ctx.setPositions(a.positions / 10.0)
        assert e == pytest.approx(ctx.getState(getEnergy=True).getPotentialEnergy()._value, rel=1e-10)
    # a cell that is not lower-triangular (the cubic box rotated): the same energy, the forces rotated with it
    from scipy.spatial.transform import Rotation

    rot = Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix()
    turned = Atoms("Ar8", positions=cells[0].positions @ rot.T, cell=(np.eye(3) * 14.0) @ rot.T, pbc=True)
    both = get_labeler("openmm", {"system": tmp_path / "lj.xml"}).label(from_ase([cells[0], turned], labels=False),
                                                                          show_progress=False)
    assert both.energy[1] == pytest.approx(both.energy[0], rel=1e-9)
    np.testing.assert_allclose(both.forces[8:], both.forces[:8] @ rot.T, rtol=1e-7, atol=1e-7)
    with pytest.raises(ValueError, match="needs system"):
        get_labeler("openmm")
    with pytest.raises(ValueError, match=r"does not take option\(s\) \['sytem'\]"):
        get_labeler("openmm", {"sytem": "x.xml"})
    with pytest.raises(ValueError, match="has 9 particles but the structure has 3 atoms"):
        lab.label(from_ase([Atoms("OH2", positions=pos[:3] * 10)], labels=False), show_progress=False)
    with pytest.raises(ValueError, match="periodic but the structure is not"):
        get_labeler("openmm", {"system": tmp_path / "lj.xml"}).label(
            from_ase([Atoms("Ar8", positions=cells[0].positions)], labels=False), show_progress=False)
