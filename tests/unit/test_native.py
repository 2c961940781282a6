"""Native students: force matching recovers a known pair potential, OpenMM equals an independent numpy
evaluation, forces are -dE/dx, the System survives an XML round trip, and bad input is refused."""

import numpy as np
import openmm
import pytest

from lj_fluid import EPSILON, SIGMA, lj_cg_data, simulate_lj

from cgkd.data.cg_h5 import CGData
from cgkd.kd.native import fit_native, force_rmse_native
from cgkd.nn.native import NativeModel, is_native_file, load_native, save_native
from cgkd.openmm.native import native_system
from cgkd.topology import Topology


@pytest.fixture(scope="module")
def lj():
    pos, frc, box = simulate_lj(4, 60, 20)
    return lj_cg_data(pos, frc, box), box


def test_force_matching_recovers_the_lj_pair_force(lj):
    data, box = lj
    model = fit_native(data, priors=False, cutoff=0.49 * box, smoothness=1e-4, target="exact")
    r = np.linspace(0.33, 0.6, 10)  # the sampled range (LJ argon at 120 K: g(r) > 0 from about 0.31 nm)
    exact = 4 * EPSILON * (12 * SIGMA**12 / r**13 - 6 * SIGMA**6 / r**7)
    np.testing.assert_allclose(model.pair_force(0, 0, r), exact, atol=0.03 * np.abs(exact).max())
    fit = model.provenance["fit"]
    assert fit["target"] == "exact" and fit["train_rmse"] < 0.1 * fit["target_rms"]
    # the fit's reported RMSE is the model's force error on those frames
    assert force_rmse_native(model, data) == pytest.approx(fit["train_rmse"], rel=1e-3)
    # noisy targets: the fit averages the noise out
    rng = np.random.default_rng(0)
    noisy = data.forces + rng.normal(0, 3 * fit["target_rms"], data.forces.shape)
    denoised = fit_native(data, noisy, priors=False, cutoff=0.49 * box, smoothness=1e-3)
    np.testing.assert_allclose(denoised.pair_force(0, 0, r[2:]), exact[2:], atol=0.15 * np.abs(exact).max())


def _two_type_system(seed=0):
    """Two types, 3-bead chains A-B-A (bonded priors) in a periodic box; positions of 2 frames."""
    rng = np.random.default_rng(seed)
    n_mol, L = 20, 2.6
    pos = []
    for _ in range(n_mol):
        x0 = rng.uniform(0, L, 3)
        pos += [x0, x0 + [0.3, 0, 0], x0 + [0.3, 0.3, 0.05]]
    pos = np.array(pos)[None] + rng.normal(0, 0.02, (2, 3 * n_mol, 3))
    top = Topology(["A", "B"], np.tile([0, 1, 0], n_mol), np.tile([40.0, 60.0, 40.0], n_mol),
                   molecules=np.repeat(np.arange(n_mol), 3),
                   bonds=[[3 * m + k, 3 * m + k + 1] for m in range(n_mol) for k in range(2)])
    return pos, top, np.eye(3) * L


def _model(periodic=True):
    grid = np.linspace(0, 1.0, 201)
    tables = np.zeros((2, 2, 201))
    for a in range(2):
        for b in range(2):
            s = 0.3 + 0.05 * (a + b)
            tables[a, b] = 5.0 * np.exp(-((grid / s) ** 2)) * (1 + 0.3 * a * b) - 0.5 * np.exp(-((grid - 0.5) / 0.1) ** 2)
    tables -= tables[..., -1:]
    priors = {"bonds": [{"types": ["A", "B"], "r0": 0.3, "k": 2000.0}],
              "angles": [{"types": ["A", "B", "A"], "theta0": 1.6, "k": 50.0}]}
    return NativeModel(["A", "B"], 1.0, tables, [40.0, 60.0], periodic, priors)


@pytest.mark.parametrize("encoding", ["table", "groups"])
def test_openmm_equals_numpy_and_forces_are_minus_gradient(encoding):
    pos, top, box = _two_type_system()
    model = _model()
    system = native_system(model, top, box=box, encoding=encoding)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    for x in pos:
        ctx.setPositions(x)
        st = ctx.getState(getEnergy=True, getForces=True)
        e_omm = st.getPotentialEnergy()._value
        f_omm = st.getForces(asNumpy=True)._value
        e_np, f_np = model.energy_forces(x, top, box)
        assert e_omm == pytest.approx(e_np, rel=1e-6, abs=1e-6)
        np.testing.assert_allclose(f_omm, f_np, atol=1e-4 * np.abs(f_np).max())
    # forces = -dE/dx (central differences of the numpy energy)
    x = pos[0]
    h = 1e-5
    for atom, c in [(0, 0), (4, 1), (11, 2)]:
        xp, xm = x.copy(), x.copy()
        xp[atom, c] += h
        xm[atom, c] -= h
        fd = -(model.energy_forces(xp, top, box)[0] - model.energy_forces(xm, top, box)[0]) / (2 * h)
        assert model.energy_forces(x, top, box)[1][atom, c] == pytest.approx(fd, rel=1e-4, abs=1e-3)
    assert {system.getForce(k).getName() for k in range(system.getNumForces())} >= {"cgkd bond prior", "cgkd angle prior"}


def test_xml_round_trip_and_file_round_trip(tmp_path):
    pos, top, box = _two_type_system(1)
    model = _model()
    system = native_system(model, top, box=box)
    again = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    energies = []
    for s in (system, again):
        ctx = openmm.Context(s, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        ctx.setPositions(pos[0])
        energies.append(ctx.getState(getEnergy=True).getPotentialEnergy()._value)
    assert energies[0] == pytest.approx(energies[1], rel=1e-12)
    save_native(tmp_path / "native.json", model)
    assert is_native_file(tmp_path / "native.json") and not is_native_file(tmp_path / "missing.json")
    back = load_native(tmp_path / "native.json")
    np.testing.assert_array_equal(back.tables, model.tables)
    assert back.bonded_priors == model.bonded_priors and back.type_names == model.type_names


def test_fit_with_priors_on_a_bonded_system_runs_md():
    pos, top, box = _two_type_system(2)
    rng = np.random.default_rng(3)
    frames = pos[[0]] + rng.normal(0, 0.015, (200,) + pos.shape[1:])
    model = _model()
    forces = np.stack([model.energy_forces(x, top, box)[1] for x in frames[:40]])
    data = CGData(frames[:40], forces, np.tile(box, (40, 1, 1)), top, temperature=300.0)
    fitted = fit_native(data, cutoff=1.0, target="model")
    assert set(fitted.bonded_priors) == {"bonds", "angles"}
    # the frames scatter around A-B bonds of 0.30 and 0.304 nm at a right angle: the Boltzmann-inverted priors
    # sit there, and the pair tables then reproduce the model's forces (they are in the model's function space)
    (bond,), (angle,) = fitted.bonded_priors["bonds"], fitted.bonded_priors["angles"]
    assert bond["r0"] == pytest.approx(0.3, abs=0.02) and angle["theta0"] == pytest.approx(np.pi / 2, abs=0.1)
    fit = fitted.provenance["fit"]
    assert fit["train_rmse"] < 0.2 * fit["target_rms"]
    system = native_system(fitted, top, box=box)
    integ = openmm.LangevinMiddleIntegrator(300, 5.0, 0.004)
    ctx = openmm.Context(system, integ, openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(frames[0])
    integ.step(200)
    assert np.isfinite(ctx.getState(getEnergy=True).getPotentialEnergy()._value)


def test_bad_input_is_refused(lj, tmp_path):
    data, box = lj
    with pytest.raises(ValueError, match="forces must have shape"):
        fit_native(data, np.zeros((2, 3, 3)))
    with pytest.raises(ValueError, match="spacing must lie"):
        fit_native(data, spacing=0.5)
    with pytest.raises(ValueError, match="frames is empty"):
        fit_native(data, frames=[])
    with pytest.raises(ValueError, match="symmetric"):
        NativeModel(["A", "B"], 1.0, np.arange(16.0).reshape(2, 2, 4), [1.0, 1.0], False)
    pos, top, box3 = _two_type_system()
    with pytest.raises(ValueError, match="encoding must be one of"):
        native_system(_model(), top, box=box3, encoding="magic")
    with pytest.raises(ValueError, match="periodic but neither"):
        native_system(_model(), top)
    with pytest.raises(ValueError, match="exceeds half the smallest box height"):
        native_system(_model(), top, box=np.eye(3) * 1.5)
    (tmp_path / "x.json").write_text('{"format": "cgkd-mapping", "format_version": 1}')
    with pytest.raises(ValueError, match="is not a cgkd-native file"):
        load_native(tmp_path / "x.json")


def test_cli_fits_mscg_without_teachers_and_simulates_it(lj, tmp_path, capsys):
    import json

    from cgkd.cli.main import main
    from cgkd.data.cg_h5 import write_cg

    data, box = lj
    write_cg(tmp_path / "cg.h5", data)
    assert main(["distill", str(tmp_path / "cg.h5"), "--student", "native", "--force-target", "mapped",
                 "--out", str(tmp_path / "mscg")]) == 0
    info = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert info["force_target"] == "mapped" and info["n_held_out_frames"] == 6
    assert info["held_out_rmse_vs_mapped"] < 0.2 * info_rms(data)
    model = load_native(tmp_path / "mscg" / "native.json")
    assert model.provenance["fit"]["target"] == "mapped" and model.cutoff == pytest.approx(0.49 * box)
    assert main(["simulate", str(tmp_path / "mscg" / "native.json"), str(tmp_path / "cg.h5"), "--out",
                 str(tmp_path / "md"), "--replicas", "1", "--steps", "200", "--timestep", "0.005",
                 "--report-interval", "50", "--no-progress"]) == 0
    summary = json.loads((tmp_path / "md" / "summary.json").read_text())
    assert summary["model"] == "native" and summary["backend"] == "native" and summary["survived"] == 1
    # the labelled route needs teachers
    assert main(["distill", str(tmp_path / "cg.h5"), "--student", "native", "--out", str(tmp_path / "x")]) == 2
    assert "--teachers is required" in capsys.readouterr().err


def info_rms(data) -> float:
    return float(np.sqrt(np.mean(data.forces.astype(np.float64) ** 2)))


def test_powers_basis_analytic_encoding_equals_its_table_and_recovers_lj(lj, tmp_path):
    data, box = lj
    model = fit_native(data, priors=False, cutoff=0.49 * box, basis="powers", powers=(12, 6))
    # the data's LJ is cut, not shifted, so the shifted-force (12, 6) pair is close to it, not equal
    c = np.asarray(model.analytic["coefficients"])[0, 0]
    np.testing.assert_allclose(c, [4 * EPSILON * SIGMA**12, -4 * EPSILON * SIGMA**6], rtol=0.15)
    r = np.linspace(0.33, 0.6, 10)
    exact = 4 * EPSILON * (12 * SIGMA**12 / r**13 - 6 * SIGMA**6 / r**7)
    np.testing.assert_allclose(model.pair_force(0, 0, r), exact, atol=0.03 * np.abs(exact).max())
    save_native(tmp_path / "p.json", model)
    assert load_native(tmp_path / "p.json").analytic == model.analytic
    # OpenMM's analytic expression, its table and the numpy evaluation agree on the data's frames
    top = data.topology
    energies = {}
    for enc in ("analytic", "table"):
        system = native_system(model, top, box=np.eye(3) * box, encoding=enc)
        ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        ctx.setPositions(data.positions[5].astype(np.float64))
        st = ctx.getState(getEnergy=True, getForces=True)
        energies[enc] = (st.getPotentialEnergy()._value, st.getForces(asNumpy=True)._value)
    e_np, f_np = model.energy_forces(data.positions[5], top, np.eye(3) * box)
    for enc, (e, f) in energies.items():
        assert e == pytest.approx(e_np, rel=1e-5), enc
        np.testing.assert_allclose(f, f_np, atol=1e-3 * np.abs(f_np).max())


def test_analytic_encoding_with_several_types_uses_exact_coefficients():
    pos, top, box = _two_type_system(4)
    rng = np.random.default_rng(1)
    coef = rng.normal(size=(2, 2, 3)) * np.array([1e-7, 1e-4, 1e-2])
    coef = coef + np.swapaxes(coef, 0, 1)
    from cgkd.kd.native import shifted_powers

    grid = np.linspace(0, 1.0, 2001)
    phi, _ = shifted_powers(np.maximum(grid, 0.2), 1.0, (12, 6, 2))
    tables = np.einsum("gk,abk->abg", phi, coef)
    tables[..., -1] = 0.0
    model = NativeModel(["A", "B"], 1.0, tables, [40.0, 60.0], True,
                        analytic={"form": "shifted-force inverse powers", "powers": [12, 6, 2],
                                  "coefficients": coef.tolist(), "table_below_nm": 0.2})
    x = pos[0]
    ctx = openmm.Context(native_system(model, top, box=box), openmm.VerletIntegrator(0.001),
                         openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(x)
    e = ctx.getState(getEnergy=True).getPotentialEnergy()._value
    i, j = np.triu_indices(len(x), 1)
    d = x[j] - x[i]
    d -= np.round(d / box[0, 0]) * box[0, 0]
    r = np.linalg.norm(d, axis=1)
    near = (r < 1.0)
    ph, _ = shifted_powers(r[near], 1.0, (12, 6, 2))
    expect = np.einsum("pk,pk->", ph, coef[top.types[i[near]], top.types[j[near]]])
    assert e == pytest.approx(expect, rel=1e-9)
    with pytest.raises(ValueError, match="needs a model fitted on the powers basis"):
        native_system(_model(), top, box=box, encoding="analytic")


def test_powers_fit_refuses_an_expansion_that_does_not_repel(lj):
    data, box = lj
    # inverted LJ forces give a negative r^-12 coefficient: an expansion unbounded below, refused
    with pytest.raises(ValueError, match="non-positive r\\^-12 coefficient, so it is unbounded below"):
        fit_native(data, -data.forces, cutoff=0.49 * box, basis="powers", powers=(12, 6), priors=False)
    ok = fit_native(data, cutoff=0.49 * box, basis="powers", powers=(12, 6))
    assert np.asarray(ok.analytic["coefficients"])[0, 0, 0] > 0
    with pytest.raises(ValueError, match="basis must be one of"):
        fit_native(data, basis="bsplines")
    with pytest.raises(ValueError, match="powers must be distinct positive integers"):
        fit_native(data, basis="powers", powers=(6, 6))


def test_fit_refuses_absent_types_and_a_cutoff_beyond_half_the_box(lj):
    data, box = lj
    wide = CGData(data.positions, data.forces, data.box, Topology(["AR", "XX"], data.types, data.masses),
                  temperature=data.temperature)
    with pytest.raises(ValueError, match=r"types \['XX'\] that no bead has"):
        fit_native(wide)
    with pytest.raises(ValueError, match="below half the smallest box height"):
        fit_native(data, cutoff=0.6 * box)


def test_default_time_step_follows_the_model_kind(lj, tmp_path):
    from cgkd.openmm.md import DEFAULT_TIMESTEP, run_cg_md

    data, box = lj
    model = fit_native(data, priors=False, cutoff=0.45 * box)
    s = run_cg_md(model, data, tmp_path / "md", n_replicas=1, steps=20, report_interval=10, progress=False)
    assert s["timestep_ps"] == DEFAULT_TIMESTEP["native"] == 0.016 and s["model"] == "native"


@pytest.mark.parametrize("platform", ["Reference", "CPU"])
def test_triclinic_box_on_every_cpu_platform(platform):
    """A reduced triclinic box: OpenMM's pair forces equal the evaluation without OpenMM (minimum image of
    cgkd.geometry via vesin). The Reference platform's neighbour search can miss a pair right at the cutoff in a
    triclinic box, so a small energy tolerance is allowed there."""
    pos, top, _ = _two_type_system(5)
    box = np.array([[2.6, 0.0, 0.0], [0.8, 2.5, 0.0], [-0.6, 0.7, 2.4]])
    frac = pos[0] @ np.linalg.inv(box)
    x = (frac - np.floor(frac)) @ box  # wrapped into the triclinic cell: every molecule split somewhere
    model = _model()
    props = {"Threads": "1"} if platform == "CPU" else {}
    ctx = openmm.Context(native_system(model, top, box=box), openmm.VerletIntegrator(0.001),
                         openmm.Platform.getPlatformByName(platform), props)
    ctx.setPositions(x)
    st = ctx.getState(getEnergy=True, getForces=True)
    e_np, f_np = model.energy_forces(x, top, box)
    assert st.getPotentialEnergy()._value == pytest.approx(e_np, rel=1e-4, abs=1e-3)
    np.testing.assert_allclose(st.getForces(asNumpy=True)._value, f_np, atol=1e-2 * np.abs(f_np).max())
