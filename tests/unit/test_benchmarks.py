"""Pure functions of the benchmark scripts (benchmarks/): box replication, timing, stability, tables."""

import numpy as np
import pytest
import torch

from benchmarks.common import check_device, peak_rss_bytes, reset_peak_rss, rss_bytes
from benchmarks.force_maps import variance_ratio
from benchmarks.kd_augmented import extra_configurations
from benchmarks.kd_table import PRESETS, aggregate, kind_errors, markdown_table, parse_shard, row_label, run_table, stability
from benchmarks.speed import replicate_box, time_force_evaluation
from cgkd.nn import CGPotential, build_model


def _potential():
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = build_model("hipnn", "small", 2)
    pot = CGPotential(model, [], ["A", "B"], float(model.cutoff))
    pot.set_energy_scale(10.0)
    return torch.jit.script(pot.double().eval())


def _box(pot, n=30, seed=0):
    rng = np.random.default_rng(seed)
    length = 2.2 * pot.cutoff
    return rng.random((n, 3)) * length, rng.integers(0, 2, n), np.eye(3) * length


def test_replicated_box_energy_is_extensive():
    pot = _potential()
    pos, types, box = _box(pot)
    e1 = time_force_evaluation(pot, pos, types, box, repeats=1)["energy"]
    pos2, types2, box2 = replicate_box(pos, types, box, 2)
    assert pos2.shape == (8 * len(pos), 3) and len(types2) == 8 * len(pos)
    np.testing.assert_allclose(box2, 2 * box)
    e2 = time_force_evaluation(pot, pos2, types2, box2, repeats=1)["energy"]
    assert abs(e1) > 1e-6
    assert e2 == pytest.approx(8 * e1, rel=1e-9)


def test_time_force_evaluation_energy_matches_module():
    pot = _potential()
    pos, types, box = _box(pot, seed=1)
    t = time_force_evaluation(pot, pos, types, box, repeats=2)
    ref = float(pot(torch.tensor(pos), torch.tensor(types), torch.tensor(box)))
    assert t["energy"] == pytest.approx(ref, rel=1e-12)
    assert 0 < t["min_s"] <= t["median_s"]
    with pytest.raises(ValueError, match="repeats"):
        time_force_evaluation(pot, pos, types, box, repeats=0)
    with pytest.raises(ValueError, match="warmup"):
        time_force_evaluation(pot, pos, types, box, repeats=1, warmup=-1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(positions=np.zeros((4, 2))), "positions"),
    (dict(box=np.eye(2)), "box"),
    (dict(types=np.zeros(3, int)), "types"),
    (dict(reps=0), "reps"),
])
def test_replicate_box_errors(kwargs, match):
    args = dict(positions=np.zeros((4, 3)), types=np.zeros(4, int), box=np.eye(3), reps=2) | kwargs
    with pytest.raises(ValueError, match=match):
        replicate_box(**args)


def test_stability():
    summary = {"steps": 1000, "timestep_ps": 0.004, "replicas": [
        {"survived": True, "time_to_failure_ps": None},
        {"survived": False, "time_to_failure_ps": 1.0},
        {"survived": False, "time_to_failure_ps": 3.0},
        {"survived": True, "time_to_failure_ps": None}]}
    s = stability(summary)
    assert s == {"survival": 0.5, "mttf_ps": 2.0, "simulated_ps": pytest.approx(4.0)}
    summary["replicas"] = summary["replicas"][:1]
    assert stability(summary)["mttf_ps"] is None
    with pytest.raises(ValueError, match="replicas"):
        stability({"steps": 1, "timestep_ps": 1.0, "replicas": []})


def test_kind_errors_aggregate_and_table():
    errs = {"RDF A-A": {"tae": 0.1}, "RDF A-B": {"tae": 0.3}, "ADF A-A-A": {"tae": 0.5}}
    assert kind_errors(errs) == {"adf": 0.5, "rdf": pytest.approx(0.2)}
    rows = [{"label": "control", "x": 1.0}, {"label": "control", "x": 3.0}, {"label": "teacher", "x": None},
            {"label": "teacher", "x": 5.0}]
    t = aggregate(rows, ["x"])
    assert t["control"]["x"] == {"mean": 2.0, "std": pytest.approx(np.sqrt(2.0)), "n": 2}
    assert t["teacher"]["x"] == {"mean": 5.0, "std": None, "n": 1}
    md = markdown_table(t, ["x"])
    assert "| control | 2 ± 1.4 (n=2) |" in md and "| teacher | 5 (n=1) |" in md
    assert row_label("mapped", "none") == "control" and row_label("mean", "node") == "student:mean/node"


def test_variance_ratio():
    assert variance_ratio({"basic": 4.0, "optimal": 3.0}) == 0.75
    assert variance_ratio({"basic": 4.0, "optimal": "not available: constraints"}) is None
    with pytest.raises(ValueError, match="basic"):
        variance_ratio({"basic": 0.0, "optimal": 1.0})


def test_check_device_and_rss():
    assert check_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="device must be one of"):
        check_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA"):
            check_device("cuda")
    import mmap

    reset_peak_rss()
    base = rss_bytes()
    # 50 MB of fresh pages, touched: an anonymous map (a numpy array may reuse heap pages earlier tests freed)
    block = mmap.mmap(-1, 50_000_000)
    for offset in range(0, 50_000_000, 4096):
        block[offset] = 1
    assert peak_rss_bytes() - base > 40_000_000
    block.close()


def test_shards_and_their_errors(tmp_path):
    assert parse_shard("1/3") == (1, 3)
    for bad in ("3/3", "1", "a/b", "-1/2"):
        with pytest.raises(ValueError, match="K/N"):
            parse_shard(bad)
    with pytest.raises(ValueError, match="shard must be"):
        run_table(PRESETS["reduced"], tmp_path, tmp_path / "out", shard=(2, 2))


def test_extra_configurations_need_a_finished_kd_table(tmp_path):
    with pytest.raises(ValueError, match="no finished teacher CG MD; run benchmarks.kd_table first"):
        extra_configurations(tmp_path, (0,), skip=10)


def test_native_speed_lj_reference_and_plot(tmp_path):
    import openmm

    from benchmarks.native_speed import lj_reference, ms_per_step, plot

    rng = np.random.default_rng(0)
    box = np.eye(3) * 2.5
    pos = rng.random((50, 3)) * 2.5
    system = lj_reference(50, np.full(50, 40.0), box, 1.0)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(pos)
    # the reference is Lennard-Jones with sigma 0.4 nm, eps 1 kJ/mol, plain cutoff
    i, j = np.triu_indices(50, 1)
    d = pos[j] - pos[i]
    d -= np.round(d / 2.5) * 2.5
    r = np.linalg.norm(d, axis=1)
    r = r[r < 1.0]
    expect = np.sum(4 * ((0.4 / r) ** 12 - (0.4 / r) ** 6))
    assert ctx.getState(getEnergy=True).getPotentialEnergy()._value == pytest.approx(expect, rel=1e-6)
    lattice = (np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3)[:50] + 0.5) * 2.5 / 4
    assert ms_per_step(system, lattice, box, 5, "Reference") > 0
    result = {"table": {"aa": {"ns_per_day": 30.0}, "m": {"ns_per_day": 300.0}},
              "timestep": [{"model": "m", "timestep_ps": dt, "survived": 2, "replicas": 2, "rdf_tae": 0.1}
                           for dt in (0.004, 0.016)]}
    plot(result, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_learning_curve_cells_and_paired_summary(tmp_path):
    from benchmarks.learning_curve import cell_frames, mean_ci, run, summarise
    from cgkd.data.cg_h5 import write_cg
    from test_kd import lj_fluid

    sel = cell_frames(100, 10, 5, 20)
    assert sel["train"][0] == 0 and sel["train"][-1] == 74 and len(sel["train"]) == 10
    assert sel["val"] == list(range(75, 80)) and sel["test"] == list(range(80, 100))
    with pytest.raises(ValueError, match="cannot hold"):
        cell_frames(30, 10, 5, 20)
    m, h, n = mean_ci([1.0, 2.0, 3.0])
    assert (m, n) == (2.0, 3) and h == pytest.approx(4.303 * 1.0 / np.sqrt(3))
    write_cg(tmp_path / "cg.h5", lj_fluid(n_frames=20))
    with pytest.raises(ValueError, match=r"seeds must be some of preset 'tiny'.*\[0, 1\], got \[7\]"):
        run(tmp_path / "cg.h5", "tiny", tmp_path / "lc", seeds=(7,))
    part = run(tmp_path / "cg.h5", "tiny", tmp_path / "lc", seeds=(1,))  # one process's share of the seeds
    assert part["seeds"] == [1] and {c["seed"] for c in part["cells"]} == {1}
    res = run(tmp_path / "cg.h5", "tiny", tmp_path / "lc")  # gathers seed 1's cells, runs seed 0's
    assert [c for c in res["cells"] if c["seed"] == 1] == part["cells"]
    assert [r["n_train"] for r in res["rows"]] == [4, 8] and all(r["seeds"] == 2 for r in res["rows"])
    cell = res["cells"][0]
    assert set(cell["rmse"]) == {"control", "student", "ensemble", "member_mean"}
    assert all(np.isfinite(v) and v > 0 for v in cell["rmse"].values())
    # the paired difference is the mean of the per-seed differences
    n4 = [c for c in res["cells"] if c["n_train"] == 4]
    diff = np.mean([c["rmse"]["student"] - c["rmse"]["control"] for c in n4])
    assert res["rows"][0]["student_minus_control"]["mean"] == pytest.approx(diff)
    again = run(tmp_path / "cg.h5", "tiny", tmp_path / "lc")  # resumed: every cell is read back
    assert summarise(again["cells"]) == res["rows"]
    # structure: CG MD of the three models per cell, TAE against the cell's held-out frames, paired by seed
    md = {"replicas": 1, "ps": 0.64, "report_ps": 0.032}
    st = run(tmp_path / "cg.h5", "tiny", tmp_path / "lc", structure=True, structure_md=md)
    rows = st["structure_rows"]
    assert [(r["n_train"], r["kind"]) for r in rows] == [(n, k) for n in (4, 8) for k in ("rdf", "adf", "cdf")]
    c4 = [c for c in st["cells"] if c["n_train"] == 4]
    assert all(c["structure"]["tae"][m]["rdf"] >= 0 for c in c4 for m in ("control", "student", "ensemble"))
    d = np.mean([c["structure"]["tae"]["student"]["rdf"] - c["structure"]["tae"]["control"]["rdf"] for c in c4])
    assert rows[0]["student_minus_control"]["mean"] == pytest.approx(d)


def test_survival_curve_and_stability_run(tmp_path):
    from benchmarks.stability import run as run_stability, survival_curve
    from cgkd.export import LennardJonesPair, export_potential
    from test_openmm_md import TYPES, _data

    c = survival_curve([None, 2.0, 5.0, None], 10.0, n_points=11)
    assert c["surviving"][0] == 1.0 and c["surviving"][2] == 0.75 and c["surviving"][5] == 0.5 and c["surviving"][-1] == 0.5
    pot = LennardJonesPair(TYPES, [[0.40, 0.45], [0.45, 0.50]], [[1.0, 1.5], [1.5, 2.0]], cutoff=0.9)
    export_potential(pot, tmp_path / "m.pt", type_names=TYPES, type_masses=[40.0, 60.0], cutoff=0.9, periodic=True)
    from cgkd.data.cg_h5 import write_cg

    write_cg(tmp_path / "cg.h5", _data())
    res = run_stability(tmp_path / "cg.h5", {"lj": str(tmp_path / "m.pt")}, tmp_path / "st", length_ps=0.4,
                        replicas=2, protocols=("nominal", "perturbed"), report_ps=0.2, platform="Reference",
                        perturb_nm=0.3, timesteps={"neural": 0.002})
    nominal, pert = res["results"]["lj"]["nominal"], res["results"]["lj"]["perturbed"]
    assert nominal["survived"] == 2 and nominal["length_ps"] == pytest.approx(0.4)
    assert nominal["timestep_ps"] == 0.002  # the override, not the neural default (4 fs)
    assert 0.0 < nominal["mean_temperature_K"] < 10 * nominal["temperature_K"]
    with pytest.raises(ValueError, match="timesteps must map"):
        run_stability(tmp_path / "cg.h5", {"lj": str(tmp_path / "m.pt")}, tmp_path / "st2", timesteps={"gpu": 0.01})
    # 0.3 nm noise puts beads on top of each other: those replicas fail at the start or soon after
    assert pert["survived"] < 2 and pert["failures"]


def test_model_speed_measures_every_model_in_turn(tmp_path):
    from benchmarks.model_speed import main as speed_main, measure
    from cgkd.data.cg_h5 import write_cg
    from cgkd.export import LennardJonesPair, export_potential
    from test_openmm_md import TYPES, _data

    for name, cut in (("short", 0.6), ("long", 0.9)):
        pot = LennardJonesPair(TYPES, [[0.40, 0.45], [0.45, 0.50]], [[1.0, 1.5], [1.5, 2.0]], cutoff=cut)
        export_potential(pot, tmp_path / f"{name}.pt", type_names=TYPES, type_masses=[40.0, 60.0], cutoff=cut,
                         periodic=True)
    write_cg(tmp_path / "cg.h5", _data())
    res = measure({"short": tmp_path / "short.pt", "long": tmp_path / "long.pt"}, tmp_path / "cg.h5", steps=5,
                  repeats=2)
    assert [len(v) for v in res["ms_per_step"].values()] == [2, 2]
    assert res["speed_vs_first"]["short"] == 1.0
    m = res["median_ms_per_step"]
    assert all(v > 0 for v in m.values()) and res["speed_vs_first"]["long"] == pytest.approx(m["short"] / m["long"])
    with pytest.raises(ValueError, match="at least one LABEL=PATH"):
        measure({}, tmp_path / "cg.h5")
    with pytest.raises(SystemExit):
        speed_main(["--cg", str(tmp_path / "cg.h5"), "--model", "nolabel"])


def test_energy_target_sweep_and_gauge_statistics(tmp_path):
    from benchmarks.energy_targets import run as run_energy
    from cgkd.data.cg_h5 import write_cg
    from cgkd.kd import train_teachers
    from cgkd.train import TrainConfig
    from test_kd import TINY, lj_fluid

    write_cg(tmp_path / "cg.h5", lj_fluid(n_frames=12))
    train_teachers(tmp_path / "cg.h5", tmp_path / "t", n_members=2, preset=TINY,
                   config=TrainConfig(max_epochs=1, batch_size=4))
    arms = (("none", "none", "free", 0.0), ("node/free/1", "node", "free", 1.0), ("node/fixed/1", "node", "fixed", 1.0))
    res = run_energy(tmp_path / "cg.h5", tmp_path / "t", tmp_path / "e", seeds=[0], arms=arms, epochs=1, preset=TINY)
    g = res["gauge"]
    assert set(g["per_type"]) == {"AR"} and len(g["per_type"]["AR"]["member_means"]) == 2
    # removing each member's constant can only lower the members' disagreement
    assert g["member_disagreement_gauge_removed"] <= g["member_disagreement_raw"] + 1e-9
    assert [r["arm"] for r in res["rows"]] == ["none", "node/free/1", "node/fixed/1"]
    assert res["rows"][0]["vs_mapped"]["minus_none"] == 0.0
    assert res["runs"]["node/free/1"]["0"]["vs_mapped"] != res["runs"]["node/fixed/1"]["0"]["vs_mapped"]


def test_atomistic_kd_pairing_and_feature_gap_closed():
    from benchmarks.atomistic_kd import paired
    from benchmarks.feature_kd import gap_closed

    rows = [dict(arm="teacher", width=32, seed=0, force_rmse_eV_per_A=0.02)]
    for seed, (c, s) in enumerate([(0.05, 0.04), (0.06, 0.055), (0.05, 0.052)]):
        rows += [dict(arm="control", width=4, seed=seed, force_rmse_eV_per_A=c),
                 dict(arm="student", width=4, seed=seed, force_rmse_eV_per_A=s)]
    p = paired(rows)["student-control w4"]
    assert p["mean"] == pytest.approx((-0.01 - 0.005 + 0.002) / 3) and p["better"] == 2 and p["n"] == 3
    assert p["ci95"] > 0
    rows = [dict(arm="teacher", seed=0, force_rmse_eV_per_A=0.1, energy_rmse_meV_per_atom=1.0),
            dict(arm="baseline", seed=0, force_rmse_eV_per_A=0.3, energy_rmse_meV_per_atom=3.0),
            dict(arm="n2n", seed=0, force_rmse_eV_per_A=0.2, energy_rmse_meV_per_atom=3.5)]
    g = gap_closed(rows)
    assert g["n2n force_rmse_eV_per_A"]["mean"] == pytest.approx(0.5)  # half the gap closed
    assert g["n2n energy_rmse_meV_per_atom"]["mean"] == pytest.approx(-0.25)  # worse than the baseline
