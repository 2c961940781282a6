"""Training: one trainer (``trainer.fit``), composable loss terms (``losses``), weight schedules
(``schedule``), resumable checkpoints (``checkpoint``) and frame batching (``frames``).

Layer rule: ``cgkd.train`` imports from ``cgkd.units``, ``cgkd.io``, ``cgkd.data`` and ``cgkd.nn`` only,
never from ``cgkd.kd`` or higher layers.
"""

from cgkd.train.checkpoint import seeded
from cgkd.train.frames import FrameSet, frameset_from_cg
from cgkd.train.losses import LOSS_TERMS, Loss, LossSpec, LossTerm
from cgkd.train.schedule import ScheduleRow, WeightSchedule, born_again
from cgkd.train.trainer import TrainConfig, TrainResult, evaluate, fit, model_outputs

__all__ = [
    "LOSS_TERMS",
    "FrameSet",
    "Loss",
    "LossSpec",
    "LossTerm",
    "ScheduleRow",
    "TrainConfig",
    "TrainResult",
    "WeightSchedule",
    "born_again",
    "evaluate",
    "fit",
    "frameset_from_cg",
    "model_outputs",
    "seeded",
]
