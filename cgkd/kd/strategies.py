"""Named knowledge-distillation strategies: recipes of loss terms and weight schedules.

A strategy is a function ``(teacher_terms_weight: float, switch_epoch: int) -> StrategyPlan`` registered
in :data:`KD_STRATEGIES`. It only decides *which* loss terms, *from where* (batch labels or a
teacher evaluated on the fly) and *when* (schedule); the trainer (:func:`cgkd.train.fit`) does the rest.
Label names refer to the student's batch keys of :mod:`cgkd.kd.students` (``force_label``, ...)
and to the teacher's outputs (``node_energy``, ``node_features``, ``vector_features``,
``edge_features`` with ``edge_index``).
See docs/training.md for how each published KD variant maps onto these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List

from cgkd import keys
from cgkd.registry import Registry
from cgkd.train.losses import LossSpec
from cgkd.train.schedule import ScheduleRow, born_again

#: Strategies by name.
KD_STRATEGIES: Registry = Registry("kd_strategies")

FORCE_LABEL = "force_label"


@dataclass(frozen=True)
class StrategyPlan:
    """Loss terms and schedule of one strategy; ``needs_teacher``: a teacher model must be passed to ``fit``."""

    losses: List[LossSpec]
    schedule: List[ScheduleRow] = field(default_factory=list)
    needs_teacher: bool = False


@KD_STRATEGIES.register("labels")
def labels_only(teacher_weight: float = 1.0, switch_epoch: int = 10) -> StrategyPlan:
    """Force matching on the chosen force label only (mapped, one teacher or ensemble mean)."""
    return StrategyPlan([LossSpec("forces", target=FORCE_LABEL)])


@KD_STRATEGIES.register("born_again_node_energy")
def born_again_node_energy(teacher_weight: float = 1.0, switch_epoch: int = 10) -> StrategyPlan:
    """Per-bead energy distillation from a teacher model, weight shifted to the force labels at
    ``switch_epoch`` (Born-Again schedule)."""
    losses = [
        LossSpec("forces", target=FORCE_LABEL),
        LossSpec("node_energy", source="teacher", target=keys.NODE_ENERGY, weight=teacher_weight),
    ]
    return StrategyPlan(losses, born_again(["node_energy"], ["forces"], switch_epoch), needs_teacher=True)


@KD_STRATEGIES.register("node_features")
def node_features(teacher_weight: float = 1.0, switch_epoch: int = 10) -> StrategyPlan:
    """Node-to-node feature distillation (learned projection when widths differ) plus force labels."""
    losses = [LossSpec("forces", target=FORCE_LABEL), LossSpec("node_features", source="teacher", weight=teacher_weight)]
    return StrategyPlan(losses, needs_teacher=True)


@KD_STRATEGIES.register("edge_to_node")
def edge_to_node(teacher_weight: float = 1.0, switch_epoch: int = 10) -> StrategyPlan:
    """Edge-to-node feature distillation (the teacher's edge features averaged onto their receiving bead,
    matched by a projection of the student's node features) plus force labels."""
    losses = [LossSpec("forces", target=FORCE_LABEL), LossSpec("edge_to_node", source="teacher", weight=teacher_weight)]
    return StrategyPlan(losses, needs_teacher=True)


@KD_STRATEGIES.register("vector_features")
def vector_features(teacher_weight: float = 1.0, switch_epoch: int = 10) -> StrategyPlan:
    """Vector-to-vector distillation between equivariant models (PaiNN) plus force labels."""
    losses = [LossSpec("forces", target=FORCE_LABEL), LossSpec("vector_features", source="teacher", weight=teacher_weight)]
    return StrategyPlan(losses, needs_teacher=True)


def plan(name: str, teacher_weight: float = 1.0, switch_epoch: int = 10) -> StrategyPlan:
    """The plan of strategy ``name`` (unknown names list the available ones)."""
    if teacher_weight < 0:
        raise ValueError(f"teacher_weight must be >= 0, got {teacher_weight}")
    if switch_epoch < 1:
        raise ValueError(f"switch_epoch must be >= 1, got {switch_epoch}")
    return KD_STRATEGIES.get(name)(teacher_weight, switch_epoch)


__all__ = ["KD_STRATEGIES", "StrategyPlan", "plan"]
