"""Teacher ensembles, labels and students on a tiny Lennard-Jones fluid simulated here with OpenMM."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
import torch

from cgkd import keys
from cgkd.data.cg_h5 import CGData, read_cg, write_cg
from cgkd.kd import ensemble_errors, load_teachers, make_labels, read_labels, train_student, train_teachers
from cgkd.kd.labels import predict
from cgkd.kd.students import uncertainty_weights
from cgkd.kd.teachers import bootstrap_indices, build_potential, make_split, member_dir, read_split
from cgkd.registry import UnknownNameError
from cgkd.train import TrainConfig
from cgkd.train.checkpoint import load_checkpoint
from lj_fluid import lj_cg_data, simulate_lj

TINY = dict(n_features=8, n_interactions=1, n_atom_layers=1, n_radial=6, cutoff=0.45)


def lj_fluid(n_side: int = 3, n_frames: int = 30, stride: int = 20, temperature: float = 120.0, seed: int = 1) -> CGData:
    """Lennard-Jones argon (sigma 0.34 nm, eps 0.996 kJ/mol) at reduced density 0.8, exact forces."""
    pos, frc, box = simulate_lj(n_side, n_frames, stride, temperature, seed)
    return lj_cg_data(pos, frc, box, temperature)


CFG = TrainConfig(max_epochs=2, batch_size=8, lr=5e-3)


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
    root = tmp_path_factory.mktemp("kd")
    write_cg(root / "cg.h5", lj_fluid())
    info = train_teachers(root / "cg.h5", root / "teachers", n_members=3, preset=TINY, config=CFG)
    make_labels(root / "cg.h5", root / "teachers")
    return root, info


def test_split_is_contiguous_and_checked():
    s = make_split(20, 0.1, 0.2)
    assert s["train"] == list(range(14)) and s["val"] == [14, 15] and s["test"] == [16, 17, 18, 19]
    with pytest.raises(ValueError, match="val_fraction"):
        make_split(20, 0.0, 0.1)
    with pytest.raises(ValueError, match="too few"):
        make_split(2, 0.5, 0.4)


def test_bootstrap_differs_per_member_and_is_reproducible():
    train = np.arange(10, 50)
    a, b = bootstrap_indices(train, 0, 0), bootstrap_indices(train, 0, 1)
    assert np.array_equal(a, bootstrap_indices(train, 0, 0)) and not np.array_equal(a, b)
    assert len(a) == 40 and set(a) <= set(train) and len(set(a)) < 40


def test_teachers_layout_members_differ_and_rerun_skips(ensemble):
    root, info = ensemble
    tdir = root / "teachers"
    assert [i["member"] for i in info] == [0, 1, 2] and [i["seed"] for i in info] == [0, 1, 2]
    split = read_split(tdir)
    assert len(split["train"]) == 24 and split["val"] == [24, 25, 26] and split["test"] == [27, 28, 29]
    models = load_teachers(tdir)
    p0, p1 = (torch.cat([p.reshape(-1) for p in m.parameters()]) for m in models[:2])
    assert not torch.equal(p0, p1)
    mtime = os.path.getmtime(member_dir(tdir, 1) / "model.pt")
    again = train_teachers(root / "cg.h5", tdir, n_members=3, preset=TINY, config=CFG)
    assert again == info and os.path.getmtime(member_dir(tdir, 1) / "model.pt") == mtime


def test_interrupted_member_resumes_from_its_checkpoint(ensemble, tmp_path):
    root, _ = ensemble
    tdir = tmp_path / "t"
    train_teachers(root / "cg.h5", tdir, n_members=2, members=[1], preset=TINY, config=CFG)
    assert not member_dir(tdir, 0).exists()
    (member_dir(tdir, 1) / "done.json").unlink()  # as if killed after its last checkpoint
    (member_dir(tdir, 1) / "model.pt").unlink()
    longer = TrainConfig(max_epochs=3, batch_size=8, lr=5e-3)
    info = train_teachers(root / "cg.h5", tdir, n_members=2, members=[1], preset=TINY, config=longer)
    assert info[0]["epochs_run"] == 3
    rows = (member_dir(tdir, 1) / "log.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [0, 1, 2]


def test_teacher_errors(ensemble, tmp_path):
    root, _ = ensemble
    with pytest.raises(FileNotFoundError, match="cg_path"):
        train_teachers(tmp_path / "none.h5", tmp_path / "t")
    with pytest.raises(ValueError, match="n_members"):
        train_teachers(root / "cg.h5", tmp_path / "t", n_members=0)
    with pytest.raises(ValueError, match="members must lie"):
        train_teachers(root / "cg.h5", tmp_path / "t", n_members=2, members=[2])
    with pytest.raises(UnknownNameError, match="hipnn"):
        train_teachers(root / "cg.h5", tmp_path / "t", arch="schnet")
    with pytest.raises(ValueError, match="n_members=3"):
        train_teachers(root / "cg.h5", root / "teachers", n_members=4, preset=TINY, config=CFG)
    with pytest.raises(FileNotFoundError, match="teacher folder"):
        read_split(tmp_path)


def test_labels_are_the_members_statistics(ensemble):
    root, _ = ensemble
    lab = read_labels(root / "cg.h5")
    data = read_cg(root / "cg.h5")
    f, b = data.n_frames, data.n_beads
    assert lab[keys.MEMBER_FORCES].shape == (3, f, b, 3) and lab[keys.MEMBER_ENERGY].shape == (3, f)
    assert lab[keys.MEMBER_NODE_ENERGY].shape == (3, f, b)
    np.testing.assert_allclose(lab[keys.MEAN_FORCES], lab[keys.MEMBER_FORCES].mean(0), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(lab[keys.MEAN_ENERGY], lab[keys.MEMBER_ENERGY].mean(0), rtol=1e-10)
    spread = lab[keys.MEMBER_FORCES] - lab[keys.MEAN_FORCES]
    np.testing.assert_allclose(lab[keys.FORCE_STD], np.sqrt((spread**2).sum(-1).sum(0) / 2), rtol=1e-4, atol=1e-4)
    direct = predict(load_teachers(root / "teachers", [2])[0], data)
    np.testing.assert_allclose(lab[keys.MEMBER_FORCES][2], direct[keys.FORCE], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(lab[keys.MEMBER_NODE_ENERGY][2], direct[keys.NODE_ENERGY], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(data.forces, lj_fluid().forces, rtol=1e-6)  # mapped forces untouched
    err = ensemble_errors(root / "cg.h5", root / "teachers")
    assert len(err["member_rmse"]) == 3 and err["n_frames"] == 3
    # the mean's squared error never exceeds the members' average squared error (Jensen)
    assert err["mean_rmse"] ** 2 <= np.mean(np.square(err["member_rmse"])) + 1e-6
    # labels of configurations held in memory (e.g. sampled by CG MD) come out as from the file
    from cgkd.kd.labels import ensemble_predictions

    moved = data.subset(slice(0, 2))
    moved.positions = moved.positions + np.float32(0.01)
    mem = ensemble_predictions(moved, root / "teachers")
    assert mem[keys.MEAN_FORCES].shape == (2, b, 3)
    direct = [predict(t, moved)[keys.FORCE] for t in load_teachers(root / "teachers")]
    np.testing.assert_allclose(mem[keys.MEAN_FORCES], np.mean(direct, axis=0), rtol=1e-5, atol=1e-4)


def test_make_labels_replaces_the_group_atomically(ensemble, tmp_path):
    root, _ = ensemble
    cg = tmp_path / "cg.h5"
    write_cg(cg, read_cg(root / "cg.h5"))
    make_labels(cg, root / "teachers")
    first = read_labels(cg, [keys.MEAN_FORCES])[keys.MEAN_FORCES]
    make_labels(cg, root / "teachers")
    with h5py.File(cg) as h5:
        assert sorted(h5[keys.LABELS].keys()) == sorted(
            [keys.MEMBER_FORCES, keys.MEAN_FORCES, keys.FORCE_STD, keys.MEMBER_NODE_ENERGY, keys.MEAN_NODE_ENERGY, keys.MEMBER_ENERGY, keys.MEAN_ENERGY]
        )
        np.testing.assert_array_equal(h5[keys.LABELS][keys.MEAN_FORCES][()], first)
    assert [p.name for p in tmp_path.iterdir()] == ["cg.h5"]  # no temporary file left behind
    write_cg(tmp_path / "bare.h5", read_cg(cg))
    with pytest.raises(ValueError, match="no group 'labels'"):
        read_labels(tmp_path / "bare.h5")


def test_uncertainty_weights_formula():
    sigma = np.array([[0.0, 1.0], [2.0, 3.0]])
    w = uncertainty_weights(sigma, np.array([0, 1]))
    s2 = np.mean(sigma**2)
    raw = 1 / (sigma**2 + s2)
    np.testing.assert_allclose(w, raw / raw.mean())
    assert w[0, 0] > w[1, 1]
    with pytest.raises(ValueError, match="force_std is zero"):
        uncertainty_weights(np.zeros((2, 2)), np.array([0]))


@pytest.mark.parametrize(
    "force_target,energy_target,uw",
    [("mean", "node", True), ("teacher", "total", False), ("mapped", "none", False)],
)
def test_student_targets(ensemble, tmp_path, force_target, energy_target, uw):
    root, _ = ensemble
    info = train_student(
        root / "cg.h5", root / "teachers", tmp_path / "s", force_target=force_target, energy_target=energy_target,
        teacher_index=1, preset=TINY, uncertainty_weighting=uw, config=CFG,
    )
    assert info["epochs_run"] == 2 and np.isfinite(info["force_rmse_vs_label"])
    ck = load_checkpoint(tmp_path / "s/checkpoint.pt")
    terms = [s["term"] for s in json.loads(ck["config"])["losses"]]
    assert terms == {"none": ["forces"], "node": ["forces", "node_energy_gauge"], "total": ["forces", "energy_gauge"]}[energy_target]
    if force_target == "mapped":
        assert info["force_rmse_vs_label"] == info["force_rmse_vs_mapped"]
    else:
        assert info["force_rmse_vs_label"] != info["force_rmse_vs_mapped"]
    same = dict(force_target=force_target, energy_target=energy_target, teacher_index=1, preset=TINY,
                uncertainty_weighting=uw, config=CFG)
    again = train_student(root / "cg.h5", root / "teachers", tmp_path / "s", **same)
    assert again == info  # finished: skipped
    from cgkd.io.provenance import ProvenanceError

    with pytest.raises(ProvenanceError, match="setting energy_weight: 1.0 -> 2.0"):  # other settings: refused
        train_student(root / "cg.h5", root / "teachers", tmp_path / "s", **same, energy_weight=2.0)


def test_student_errors(ensemble, tmp_path):
    root, _ = ensemble
    args = (root / "cg.h5", root / "teachers", tmp_path / "s")
    with pytest.raises(ValueError, match="force_target"):
        train_student(*args, force_target="ensemble")
    with pytest.raises(ValueError, match="energy_target"):
        train_student(*args, energy_target="atom")
    with pytest.raises(ValueError, match="teacher_index"):
        train_student(*args, force_target="teacher", teacher_index=3)
    with pytest.raises(ValueError, match="energy_weight"):
        train_student(*args, energy_weight=-1.0)
    write_cg(tmp_path / "bare.h5", read_cg(root / "cg.h5"))
    with pytest.raises(ValueError, match="make_labels"):
        train_student(tmp_path / "bare.h5", root / "teachers", tmp_path / "s2")


@pytest.mark.slow
def test_teachers_in_a_process_pool(ensemble, tmp_path):
    root, info = ensemble
    pooled = train_teachers(root / "cg.h5", tmp_path / "t", n_members=3, members=[0, 2], preset=TINY, config=CFG, n_workers=2)
    assert [p["member"] for p in pooled] == [0, 2]
    # same seed, same bootstrap, same data: the pooled member 2 equals the serial one
    a = load_teachers(root / "teachers", [2])[0].state_dict()
    b = load_teachers(tmp_path / "t", [2])[0].state_dict()
    assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)


def test_predict_matches_bead_types_by_name():
    from dataclasses import replace as dc_replace

    from cgkd.kd.labels import predict
    from cgkd.topology import Topology

    data = lj_fluid(n_frames=3)
    pot = build_potential(data, "hipnn", TINY)
    ref = predict(pot, data)[keys.FORCE]
    t = data.topology
    # the same beads with a type list in another order (and an unused extra type): the same forces
    shuffled = Topology(["Z"] + list(t.type_names), t.types + 1, t.masses, t.names, t.molecules, t.molecule_names,
                        t.bonds)
    np.testing.assert_array_equal(predict(pot, dc_replace(data, topology=shuffled))[keys.FORCE], ref)
    other = Topology(["Q"], np.zeros_like(t.types), t.masses, t.names, t.molecules, t.molecule_names, t.bonds)
    with pytest.raises(ValueError, match=r"particle types \['Q'\] that the model does not know"):
        predict(pot, dc_replace(data, topology=other))


def test_content_digest_is_stored_and_ignores_labels(tmp_path):
    import h5py

    from cgkd.data.cg_h5 import content_digest, data_digest, write_labels

    data = lj_fluid(n_frames=3)
    write_cg(tmp_path / "cg.h5", data)
    d = content_digest(tmp_path / "cg.h5")
    assert d == data_digest(read_cg(tmp_path / "cg.h5")) == data_digest(data)
    write_labels(tmp_path / "cg.h5", {"x": np.zeros(3)}, {"note": "labels do not change the digest"})
    assert content_digest(tmp_path / "cg.h5") == d
    with h5py.File(tmp_path / "cg.h5", "r+") as h5:  # a file written before the attribute existed
        del h5.attrs["content_digest"]
    assert content_digest(tmp_path / "cg.h5") == d
    other = data.subset(slice(0, 2))
    assert data_digest(other) != d


def test_select_frames_takes_the_most_disputed_and_spreads_the_rest():
    from cgkd.synthetic import select_frames

    std = np.zeros((10, 4))
    std[[2, 7], :] = [[5.0] * 4, [9.0] * 4]  # the two most disputed frames
    assert select_frames(std, 2, coverage=0.0).tolist() == [2, 7]
    picked = select_frames(std, 4, coverage=0.5)
    assert {2, 7} <= set(picked.tolist()) and len(picked) == 4
    assert select_frames(std, 3, coverage=1.0).tolist() == [0, 4, 9]  # coverage only: evenly in time
    with pytest.raises(ValueError, match="k must be an integer in 1..10"):
        select_frames(std, 11)
    with pytest.raises(ValueError, match="coverage must lie in"):
        select_frames(std, 2, coverage=1.5)


def test_synthetic_rounds_add_ensemble_labelled_frames_from_the_students_md(ensemble, tmp_path):
    from cgkd.kd.labels import ensemble_predictions
    from cgkd.synthetic import synthetic_rounds

    root, _ = ensemble
    tdir = root / "teachers"
    cfg = TrainConfig(max_epochs=2, batch_size=8, lr=5e-3)
    recs = synthetic_rounds(root / "cg.h5", tdir, tmp_path / "syn", rounds=1, per_round=4, md_ps=1.6, replicas=1,
                            skip_ps=0.0, preset=TINY, config=cfg)
    assert [r["round"] for r in recs] == [0, 1] and [r["n_synthetic"] for r in recs] == [0, 4]
    assert all(np.isfinite(r["force_rmse_vs_mapped"]) and r["own_md_mean_force_std"] >= 0 for r in recs)
    with np.load(tmp_path / "syn" / "round_01" / "synthetic.npz") as z:
        pos, lab, box = z["positions"], z["labels"], z["box"]
    data = read_cg(root / "cg.h5")
    frames = CGData(positions=pos, forces=np.zeros_like(pos), box=box, topology=data.topology,
                    temperature=data.temperature)
    np.testing.assert_allclose(lab, ensemble_predictions(frames, tdir)[keys.MEAN_FORCES], rtol=1e-5, atol=1e-4)
    # every round's priors come from the AA training frames, not from the student's own MD
    from cgkd.nn.potential import load_potential

    priors = [[p.config() for p in load_potential(tmp_path / "syn" / f"round_{r:02d}" / "model.pt").nonbonded_priors]
              for r in (0, 1)]
    assert priors[0] and priors[1] == priors[0]
    again = synthetic_rounds(root / "cg.h5", tdir, tmp_path / "syn", rounds=1, per_round=4, md_ps=1.6, replicas=1,
                             skip_ps=0.0, preset=TINY, config=cfg)
    assert again == recs  # resumed: every round read back


def test_the_stopping_rule_needs_survival_and_agreement():
    from cgkd.synthetic import converged

    rec = {"own_md_survived": "2/2", "own_md_mean_force_std": 44.0, "aa_mean_force_std": 40.0}
    assert converged(rec, 1.1) and not converged(rec, 1.05) and not converged(rec, None)
    assert not converged(dict(rec, own_md_survived="1/2"), 10.0)  # a failed replica never counts as converged


def test_cgkd_synthetic_stops_when_converged_and_resumes_past_it(ensemble, tmp_path, capsys):
    import yaml

    from cgkd.cli.main import main
    from cgkd.synthetic import converged, synthetic_rounds

    root, _ = ensemble
    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(TINY))
    out = tmp_path / "syn"
    argv = ["synthetic", str(root / "cg.h5"), "--teachers", str(root / "teachers"), "--out", str(out),
            "--rounds", "1", "--per-round", "4", "--md-ps", "1.6", "--replicas", "1", "--skip-ps", "0",
            "--arch-preset", str(tmp_path / "arch.yaml"), "--epochs", "2", "--quiet"]
    assert main(argv + ["--stop-ratio", "1e6"]) == 0
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    rec0 = json.loads((out / "round_00" / "round.json").read_text())
    if not converged(rec0, 1e6):
        pytest.skip(f"round 0's own MD failed ({rec0['own_md_survived']}): the stop cannot be tested")
    assert summary["final_round"] == 0 and summary["converged"] and not (out / "round_01").exists()
    assert (out / "student.pt").read_bytes() == (out / "round_00" / "student.pt").read_bytes()
    # the same folder without the rule: round 0 is read back, round 1 is added from round 0's MD
    recs = synthetic_rounds(root / "cg.h5", root / "teachers", out, rounds=1, per_round=4, md_ps=1.6, replicas=1,
                            skip_ps=0.0, preset=TINY, config=TrainConfig(max_epochs=2, seed=0, progress=False))
    assert recs[0] == rec0 and recs[1]["n_synthetic"] == 4
    assert json.loads((out / "rounds.json").read_text())["final_round"] == 1
    assert (out / "student.pt").read_bytes() == (out / "round_01" / "student.pt").read_bytes()


@pytest.mark.parametrize("kwargs, match", [({"stop_ratio": 0.5}, "stop_ratio must be None or a number >= 1"),
                                           ({"per_round": 0}, "per_round must be an integer >= 1"),
                                           ({"rounds": -1}, "rounds must be an integer >= 0")])
def test_synthetic_rounds_reject_bad_settings(ensemble, tmp_path, kwargs, match):
    from cgkd.synthetic import synthetic_rounds

    root, _ = ensemble
    with pytest.raises(ValueError, match=match):
        synthetic_rounds(root / "cg.h5", root / "teachers", tmp_path / "syn", **kwargs)


def test_synthetic_rounds_from_given_frames_take_new_configurations_each_round(ensemble, tmp_path):
    from cgkd.synthetic import synthetic_rounds

    root, _ = ensemble
    more = lj_fluid(n_frames=10, seed=7)  # configurations the teachers never saw; their forces are not used
    recs = synthetic_rounds(root / "cg.h5", root / "teachers", tmp_path / "syn", rounds=2, per_round=4, md_ps=0.8,
                            replicas=1, skip_ps=0.0, sampler="frames", frames=more, coverage=1.0, preset=TINY,
                            config=TrainConfig(max_epochs=1, batch_size=8, seed=0, progress=False))
    assert [r["n_synthetic"] for r in recs] == [0, 4, 8]
    with np.load(tmp_path / "syn" / "round_02" / "synthetic.npz") as z:
        idx, pos = z["source_index"], z["positions"]
    assert len(set(idx.tolist())) == 8  # no configuration chosen twice
    np.testing.assert_array_equal(pos, more.positions[idx])
    with pytest.raises(ValueError, match="round 4: every one of the 10 configurations of frames was chosen"):
        # resumed: round 3 takes the last 2 configurations, round 4 has none left
        synthetic_rounds(root / "cg.h5", root / "teachers", tmp_path / "syn", rounds=4, per_round=4, md_ps=0.8,
                         replicas=1, skip_ps=0.0, sampler="frames", frames=more, coverage=1.0, preset=TINY,
                         config=TrainConfig(max_epochs=1, batch_size=8, seed=0, progress=False))
    assert json.loads((tmp_path / "syn" / "round_03" / "round.json").read_text())["n_synthetic"] == 10
    with pytest.raises(ValueError, match="frames must be given exactly when sampler='frames'"):
        synthetic_rounds(root / "cg.h5", root / "teachers", tmp_path / "x", sampler="frames")


def test_cgkd_synthetic_frames_sampler_needs_frames(ensemble, tmp_path, capsys):
    from cgkd.cli.main import main

    root, _ = ensemble
    assert main(["synthetic", str(root / "cg.h5"), "--teachers", str(root / "teachers"), "--out", str(tmp_path / "s"),
                 "--sampler", "frames"]) == 2
    assert "frames must be given exactly when sampler='frames'" in capsys.readouterr().err
