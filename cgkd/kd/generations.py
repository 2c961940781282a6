"""Born-Again generations: the student of generation g is the teacher of generation g + 1.

Each generation is one :func:`cgkd.train.fit` run of a fresh model (``make_student(g)``) with the loss
terms and schedule of a KD strategy (:mod:`cgkd.kd.strategies`) and the previous generation as the
frozen teacher; generation 0 learns from ``first_teacher``. Generation g lives in
``out_dir/gen_{g:02d}`` (checkpoint, log, ``model.pt`` in :func:`cgkd.nn.save_potential` format when
the model is a :class:`cgkd.nn.CGPotential`) and ``generations.json`` is rewritten after every
finished generation, so an interrupted run resumes inside the generation it stopped in and never
retrains a finished one.
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from torch import nn

from cgkd.io.atomic import write_text
from cgkd.kd.strategies import plan
from cgkd.train.frames import FrameSet
from cgkd.train.trainer import TrainConfig, TrainResult, fit

GENERATIONS_FILE = "generations.json"


def generation_dir(out_dir: str | Path, g: int) -> Path:
    """Folder of generation ``g`` (0-based)."""
    return Path(out_dir) / f"gen_{g:02d}"


def born_again_generations(
    first_teacher: nn.Module,
    make_student: Callable[[int], nn.Module],
    train_set: FrameSet,
    val_set: FrameSet,
    config: TrainConfig,
    out_dir: str | Path,
    n_generations: int = 3,
    strategy: str = "born_again_node_energy",
    teacher_weight: float = 1.0,
    switch_epoch: int = 10,
    train_indices: Optional[Sequence[int]] = None,
    val_indices: Optional[Sequence[int]] = None,
) -> List[TrainResult]:
    """Train ``n_generations`` students in sequence, each taught by the one before; resumable.

    Parameters
    ----------
    first_teacher : torch.nn.Module
        Teacher of generation 0 (a trained model, or an ensemble with the same outputs); not modified.
    make_student : callable ``g -> nn.Module``
        A fresh, untrained model for generation ``g`` (seed it inside for reproducible runs).
    train_set, val_set : FrameSet
        Frames with the strategy's batch targets (``force_label`` for the built-in strategies).
    config : TrainConfig
        Training settings; ``losses`` and ``schedule`` are replaced by the strategy's and ``seed``
        becomes ``config.seed + g``.
    out_dir : path
    n_generations : int
        >= 1.
    strategy, teacher_weight, switch_epoch
        Passed to :func:`cgkd.kd.strategies.plan`; the strategy must take a teacher.
    train_indices, val_indices : sequence of int, optional

    Returns
    -------
    list of TrainResult
        One per generation, in order; ``results[-1].model`` is the last student.
    """
    if n_generations < 1:
        raise ValueError(f"n_generations must be >= 1, got {n_generations}")
    p = plan(strategy, teacher_weight=teacher_weight, switch_epoch=switch_epoch)
    if not p.needs_teacher:
        raise ValueError(f"strategy {strategy!r} does not use a teacher; Born-Again generations need one "
                         "(e.g. 'born_again_node_energy', 'node_features', 'edge_to_node')")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results: List[TrainResult] = []
    teacher = first_teacher
    summary = []
    for g in range(n_generations):
        student = make_student(g)
        if student is teacher or student is first_teacher:
            raise ValueError("make_student must return a new model for every generation, not the teacher")
        cfg = replace(config, losses=list(p.losses), schedule=list(p.schedule), seed=config.seed + g)
        folder = generation_dir(out_dir, g)
        res = fit(student, train_set, val_set, cfg, folder, train_indices, val_indices,
                  teacher=copy.deepcopy(teacher), extra={"role": "born_again", "generation": g, "strategy": strategy})
        _save_model(folder, res.model, g, strategy)
        results.append(res)
        val = res.history[res.best_epoch]["val"] if 0 <= res.best_epoch < len(res.history) else {}
        summary.append({"generation": g, "best_epoch": res.best_epoch, "epochs_run": res.epochs_run,
                        "best_val": res.best_val, "val": val})
        write_text(out_dir / GENERATIONS_FILE, json.dumps({"strategy": strategy, "generations": summary}, indent=1))
        teacher = res.model
    return results


def _save_model(folder: Path, model: nn.Module, g: int, strategy: str) -> None:
    from cgkd.nn.potential import CGPotential, save_potential

    if isinstance(model, CGPotential):
        save_potential(folder / "model.pt", model, extra={"role": "born_again", "generation": g, "strategy": strategy})


__all__ = ["born_again_generations", "generation_dir", "GENERATIONS_FILE"]
