"""KD strategies: plans are valid loss/schedule recipes and run with real cgkd.nn models."""

from __future__ import annotations

import numpy as np
import pytest

from cgkd.kd.strategies import KD_STRATEGIES, plan
from cgkd.kd.teachers import build_potential
from cgkd.registry import UnknownNameError
from cgkd.train import Loss, TrainConfig, WeightSchedule, fit, frameset_from_cg, seeded

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


@pytest.mark.parametrize("strategy,arch", [("vector_features", "painn"), ("born_again_node_energy", "hipnn")])
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
