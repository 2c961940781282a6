"""KD strategies: plans are valid loss/schedule recipes and run with real cgkd.nn models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cgkd import keys
from cgkd.kd import born_again_generations
from cgkd.kd.generations import GENERATIONS_FILE, generation_dir
from cgkd.kd.strategies import KD_STRATEGIES, plan
from cgkd.nn import load_potential
from cgkd.train import Loss, LossSpec, model_outputs
from cgkd.kd.teachers import build_potential
from cgkd.registry import UnknownNameError
from cgkd.train import TrainConfig, WeightSchedule, fit, frameset_from_cg, seeded

from test_kd import lj_fluid


def test_every_plan_builds_a_loss_and_schedule():
    for name in KD_STRATEGIES.names():
        p = plan(name, teacher_weight=0.5, switch_epoch=3)
        loss = Loss(p.losses)
        s = WeightSchedule(loss.base_weights, p.schedule)
        assert s.weights(0) and p.needs_teacher == loss.needs_teacher
    ba = plan("born_again_node_energy", switch_epoch=3)
    s = WeightSchedule(Loss(ba.losses).base_weights, ba.schedule)
    assert s.weights(0)["node_energy"] > s.weights(0)["forces"] and s.weights(3)["forces"] > s.weights(3)["node_energy"]


def test_plan_errors():
    with pytest.raises(UnknownNameError, match="born_again_node_energy"):
        plan("dark_knowledge")
    with pytest.raises(ValueError, match="teacher_weight"):
        plan("labels", teacher_weight=-1.0)
    with pytest.raises(ValueError, match="switch_epoch"):
        plan("labels", switch_epoch=0)


@pytest.mark.parametrize("strategy,arch", [("vector_features", "painn"), ("born_again_node_energy", "hipnn"),
                                           ("edge_to_node", "hipnn"), ("edge_to_node", "painn")])
def test_strategies_train_real_students(tmp_path, strategy, arch):
    data = lj_fluid(n_frames=12)
    teacher_cfg = dict(n_features=8, n_interactions=1, n_radial=6, cutoff=0.45)
    student_cfg = dict(n_features=4, n_interactions=1, n_radial=6, cutoff=0.45)
    if arch == "hipnn":
        teacher_cfg["n_atom_layers"] = student_cfg["n_atom_layers"] = 1
    with seeded(0):
        teacher = build_potential(data, arch, teacher_cfg)
        student = build_potential(data, arch, student_cfg)
    frames = frameset_from_cg(data, {"force_label": data.forces})
    p = plan(strategy, switch_epoch=2)
    cfg = TrainConfig(max_epochs=3, batch_size=4, lr=5e-3, losses=p.losses, schedule=p.schedule)
    res = fit(student, frames, frames, cfg, tmp_path, np.arange(8), np.arange(8, 12), teacher=teacher)
    terms = [k for k in res.history[0]["train"] if k.startswith("loss/")]
    assert len(terms) == 2 and all(np.isfinite(h["val"]["loss"]) for h in res.history)
    if strategy == "born_again_node_energy":
        assert res.history[0]["weights"]["node_energy"] == 1.0 and res.history[2]["weights"]["forces"] == 1.0


TINY_HIPNN = dict(n_features=4, n_interactions=1, n_radial=6, cutoff=0.45, n_atom_layers=1)


def test_edge_to_node_target_is_the_mean_edge_feature_of_each_receiving_bead():
    data = lj_fluid(n_frames=4)
    with seeded(0):
        teacher = build_potential(data, "hipnn", dict(TINY_HIPNN, n_features=6)).double()
        student = build_potential(data, "hipnn", TINY_HIPNN).double()
    batch = frameset_from_cg(data, dtype=torch.float64).batch([0, 1])
    t_out = model_outputs(teacher, batch, need_forces=False, create_graph=False)
    loss = Loss([LossSpec("edge_to_node", source="teacher")])
    s_out = model_outputs(student, batch, need_forces=False, create_graph=False)
    loss.setup(s_out, batch, t_out)
    term = loss.terms["edge_to_node"]
    target = term._feature_target(batch, t_out)
    edges, centre = t_out[keys.EDGE_FEATURES], t_out[keys.EDGE_INDEX][0]
    n = batch[keys.POSITIONS].shape[0]
    assert target.shape == (n, 6) and edges.shape[0] > n
    for i in range(n):  # an independent per-bead loop
        mine = edges[centre == i]
        expected = mine.mean(0) if len(mine) else torch.zeros(6, dtype=edges.dtype)
        torch.testing.assert_close(target[i], expected, rtol=1e-12, atol=1e-12)
    value, metrics = loss(s_out, batch, {"edge_to_node": 1.0}, t_out)
    projected = term.projection(s_out[keys.NODE_FEATURES])
    assert float(value.detach()) == pytest.approx(float(((projected - target) ** 2).mean()), rel=1e-10)
    assert "edge_to_node_rmse" in metrics
    with pytest.raises(ValueError, match="edge_to_node needs 'edge_index'"):
        loss(s_out, batch, {"edge_to_node": 1.0}, {k: v for k, v in t_out.items() if k != keys.EDGE_INDEX})


def test_edge_to_node_distillation_learns_the_teacher_features(tmp_path):
    data = lj_fluid(n_frames=12)
    with seeded(0):
        teacher = build_potential(data, "hipnn", dict(TINY_HIPNN, n_features=8))
        student = build_potential(data, "hipnn", TINY_HIPNN)
    frames = frameset_from_cg(data)
    cfg = TrainConfig(max_epochs=15, batch_size=4, lr=1e-2, early_stopping=0, losses=[LossSpec("edge_to_node", source="teacher")])
    res = fit(student, frames, frames, cfg, tmp_path, np.arange(8), np.arange(8, 12), teacher=teacher)
    first, best = res.history[0]["val"]["loss/edge_to_node"], res.best_val
    assert best < 0.5 * first, (first, best)


def test_born_again_generations_chain_teachers_and_resume(tmp_path):
    data = lj_fluid(n_frames=12)
    frames = frameset_from_cg(data, {"force_label": data.forces})
    with seeded(0):
        first = build_potential(data, "hipnn", dict(TINY_HIPNN, n_features=8))

    def make_student(g):
        with seeded(100 + g):
            return build_potential(data, "hipnn", TINY_HIPNN)

    cfg = TrainConfig(max_epochs=3, batch_size=4, lr=5e-3)
    kw = dict(n_generations=2, switch_epoch=2, train_indices=np.arange(8), val_indices=np.arange(8, 12))
    res = born_again_generations(first, make_student, frames, frames, cfg, tmp_path, **kw)
    assert len(res) == 2
    summary = json.loads((tmp_path / GENERATIONS_FILE).read_text())
    assert [g["generation"] for g in summary["generations"]] == [0, 1]
    # generation 1 was taught by generation 0: its logged validation node-energy loss at the best epoch
    # is the bead-energy MSE between the two saved models on the validation frames (one batch)
    gen0 = load_potential(generation_dir(tmp_path, 0) / "model.pt")
    gen1 = load_potential(generation_dir(tmp_path, 1) / "model.pt")
    batch = frames.batch(np.arange(8, 12))
    e0 = model_outputs(gen0, batch, False, False)[keys.NODE_ENERGY]
    e1 = model_outputs(gen1, batch, False, False)[keys.NODE_ENERGY]
    logged = res[1].history[res[1].best_epoch]["val"]["loss/node_energy"]
    assert logged == pytest.approx(float(((e1 - e0) ** 2).mean()), rel=1e-4)
    e_first = model_outputs(first, batch, False, False)[keys.NODE_ENERGY]
    assert float(((e1 - e_first) ** 2).mean()) != pytest.approx(logged, rel=1e-2)
    # a second call retrains nothing and returns the same models
    before = [(generation_dir(tmp_path, g) / "log.jsonl").read_text() for g in range(2)]
    again = born_again_generations(first, make_student, frames, frames, cfg, tmp_path, **kw)
    assert [(generation_dir(tmp_path, g) / "log.jsonl").read_text() for g in range(2)] == before
    for a, b in zip(res, again):
        for (k, v), w in zip(a.model.state_dict().items(), b.model.state_dict().values()):
            torch.testing.assert_close(v, w, rtol=0, atol=0, msg=k)


def test_born_again_generations_errors(tmp_path):
    data = lj_fluid(n_frames=4)
    frames = frameset_from_cg(data, {"force_label": data.forces})
    with seeded(0):
        first = build_potential(data, "hipnn", TINY_HIPNN)
    cfg = TrainConfig(max_epochs=1)
    with pytest.raises(ValueError, match="n_generations must be >= 1, got 0"):
        born_again_generations(first, lambda g: first, frames, frames, cfg, tmp_path, n_generations=0)
    with pytest.raises(ValueError, match="strategy 'labels' does not use a teacher"):
        born_again_generations(first, lambda g: first, frames, frames, cfg, tmp_path, strategy="labels")
    with pytest.raises(ValueError, match="make_student must return a new model"):
        born_again_generations(first, lambda g: first, frames, frames, cfg, tmp_path)
