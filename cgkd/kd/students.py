"""Students: a (small) CG potential trained on mapped forces or on teacher labels.

The seed study's grid is ``force_target`` x ``energy_target``:

==================  ==================================  ======================================
force_target        force label (kJ/mol/nm)              energy labels used with it
==================  ==================================  ======================================
``"mapped"``        the mapped forces ``forces``         ensemble mean (no single teacher)
``"teacher"``       ``member_forces[teacher_index]``     that member's energies
``"mean"``          ``mean_forces``                      ensemble mean energies
==================  ==================================  ======================================

``energy_target``: ``"none"`` (forces only), ``"node"`` (per-bead energy matching, the term
``node_energy`` against ``mean_node_energy`` or ``member_node_energy[k]``), ``"total"`` (the term
``energy`` against ``mean_energy`` or ``member_energy[k]``). Bead energies are the network's part
only; teachers and students built by :func:`cgkd.kd.teachers.build_potential` on the same frames
share their priors, so the network parts are comparable.

Uncertainty weighting (off by default) down-weights beads where the teachers disagree:
``w_{f,i} = 1 / (sigma_{f,i}^2 + s^2)`` with ``sigma = force_std`` (labels) and
``s^2 = mean(sigma^2)`` over the training frames, normalised to mean 1 over the training beads.
The weights lie within a factor ``(max sigma^2 + s^2) / s^2`` of each other.

The student trains on the teachers' training frames (no bootstrap) and validates on their
validation frames; its folder holds ``checkpoint.pt``, ``log.jsonl``, ``model.pt``
(``cgkd.nn.save_potential``) and ``student.json`` (written last; a finished student is skipped).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch

from cgkd import keys
from cgkd.data.cg_h5 import content_digest, labels_attrs, read_cg
from cgkd.io import provenance
from cgkd.io.atomic import write_text
from cgkd.io.config import to_dict
from cgkd.kd.labels import force_rmse, labels_are_current, predict, read_labels
from cgkd.kd.teachers import build_potential, read_ensemble, read_split
from cgkd.train.checkpoint import seeded
from cgkd.train.frames import FrameSet, frameset_from_cg
from cgkd.train.losses import LossSpec
from cgkd.train.trainer import TrainConfig, fit

FORCE_TARGETS = keys.FORCE_TARGETS
ENERGY_TARGETS = keys.ENERGY_TARGETS
STUDENT_FILE = "student.json"
#: Batch keys of the chosen labels.
FORCE_LABEL = "force_label"
NODE_ENERGY_LABEL = "node_energy_label"
ENERGY_LABEL = "energy_label"


def uncertainty_weights(force_std: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Per-bead weights ``1 / (sigma^2 + s^2)``, ``s^2 = mean(sigma[train]^2)``, mean 1 over ``train``.

    Parameters
    ----------
    force_std : np.ndarray, shape=(F, B), kJ/mol/nm
    train : np.ndarray of int, frames the normalisation uses

    Returns
    -------
    np.ndarray, shape=(F, B), float64
    """
    sigma2 = np.asarray(force_std, np.float64) ** 2
    s2 = float(np.mean(sigma2[train]))
    if not s2 > 0:
        raise ValueError("force_std is zero on every training bead; uncertainty weighting needs an ensemble of >= 2 members")
    w = 1.0 / (sigma2 + s2)
    return w / np.mean(w[train])


def student_frames(cg_path, force_target: str, energy_target: str, teacher_index: int, uncertainty_weighting: bool, train, dtype):
    """The FrameSet with the chosen labels under ``force_label`` / ``node_energy_label`` / ``energy_label``."""
    if force_target not in FORCE_TARGETS:
        raise ValueError(f"force_target must be one of {FORCE_TARGETS}, got {force_target!r}")
    if energy_target not in ENERGY_TARGETS:
        raise ValueError(f"energy_target must be one of {ENERGY_TARGETS}, got {energy_target!r}")
    data = read_cg(cg_path)
    need_labels = force_target != "mapped" or energy_target != "none" or uncertainty_weighting
    lab = read_labels(cg_path) if need_labels else {}
    if force_target == "teacher":
        m = lab[keys.MEMBER_FORCES].shape[0]
        if not 0 <= teacher_index < m:
            raise ValueError(f"teacher_index must lie in 0..{m - 1}, got {teacher_index}")
    targets = {}
    one = force_target == "teacher"
    if force_target == "mapped":
        targets[FORCE_LABEL] = data.forces
    elif one:
        targets[FORCE_LABEL] = lab[keys.MEMBER_FORCES][teacher_index]
    else:
        targets[FORCE_LABEL] = lab[keys.MEAN_FORCES]
    if energy_target == "node":
        targets[NODE_ENERGY_LABEL] = lab[keys.MEMBER_NODE_ENERGY][teacher_index] if one else lab[keys.MEAN_NODE_ENERGY]
    elif energy_target == "total":
        targets[ENERGY_LABEL] = lab[keys.MEMBER_ENERGY][teacher_index] if one else lab[keys.MEAN_ENERGY]
    fs = frameset_from_cg(data, targets, dtype=dtype)
    if uncertainty_weighting:
        fs = FrameSet(fs.positions, fs.types, fs.box, fs.targets, bead_weight=torch.from_numpy(uncertainty_weights(lab[keys.FORCE_STD], train)).to(dtype))
    return data, fs


def train_student(
    cg_path: str | Path,
    teacher_dir: str | Path,
    out_dir: str | Path,
    force_target: str = "mean",
    energy_target: str = "none",
    teacher_index: int = 0,
    arch: str = "hipnn",
    preset: Union[str, dict] = "small",
    uncertainty_weighting: bool = False,
    config: Optional[TrainConfig] = None,
    energy_weight: float = 1.0,
    energy_gauge: str = "free",
) -> dict:
    """Train a student on labels from ``teacher_dir`` (see the module docstring); resumable.

    Parameters
    ----------
    cg_path : path
        CG dataset with the group ``labels`` (``cgkd.kd.labels.make_labels``) unless
        ``force_target="mapped"`` and ``energy_target="none"``.
    teacher_dir : path
        The teacher folder (its split is used).
    out_dir : path
    force_target : {"mapped", "teacher", "mean"}
    energy_target : {"none", "node", "total"}
    teacher_index : int
        The member used by ``force_target="teacher"``.
    arch, preset : str
    uncertainty_weighting : bool
    config : TrainConfig, optional
        Training settings; its ``losses`` are replaced by the student's terms (names ``forces``,
        ``node_energy``, ``energy``, usable in ``config.schedule``).
    energy_weight : float
        Weight of the energy term.
    energy_gauge : {"free", "fixed"}
        ``"free"`` (default): the energy terms ignore the teachers' arbitrary constants (per bead type for
        per-bead energies, per frame set for total energies: loss terms ``node_energy_gauge`` and
        ``energy_gauge``); ``"fixed"``: match the raw ensemble-mean values (``node_energy``, ``energy``).

    Returns
    -------
    dict
        The ``student.json`` content: settings, epochs, seconds per epoch, force RMSE (kJ/mol/nm) on
        the test (or validation) frames against the force label and against the mapped forces.
    """
    out_dir = Path(out_dir)
    done = out_dir / STUDENT_FILE
    split = read_split(teacher_dir)
    read_ensemble(teacher_dir)
    if energy_weight < 0:
        raise ValueError(f"energy_weight must be >= 0, got {energy_weight}")
    if energy_gauge not in ENERGY_GAUGES:
        raise ValueError(f"energy_gauge must be one of {ENERGY_GAUGES}, got {energy_gauge!r}")
    config = config or TrainConfig()
    inputs = {"cg": content_digest(cg_path), "split": provenance.settings_digest(split)}
    if not (force_target == "mapped" and energy_target == "none"):
        attrs = labels_attrs(cg_path)
        if not attrs:
            raise ValueError(f"{cg_path} has no labels; make them with cgkd.kd.make_labels (cgkd distill does)")
        if not labels_are_current(cg_path, teacher_dir):
            raise provenance.ProvenanceError(
                f"the labels in {cg_path} were made from other teachers than those now in {teacher_dir}; remake "
                "them with cgkd.kd.make_labels (cgkd distill does) before training a student on them")
        inputs["teachers"] = attrs["teachers_digest"]
    settings = {"force_target": force_target, "energy_target": energy_target, "teacher_index": int(teacher_index),
                "arch": arch, "preset": preset, "uncertainty_weighting": bool(uncertainty_weighting),
                "energy_weight": float(energy_weight), "energy_gauge": energy_gauge,
                "config": to_dict(replace(config, progress=False))}
    provenance.check_or_stamp(out_dir, provenance.record("student", inputs, settings),
                              how_to_redo="remove it to train the student again")
    if done.is_file():
        return json.loads(done.read_text())
    train = np.asarray(split["train"], dtype=np.int64)
    data, frames = student_frames(cg_path, force_target, energy_target, teacher_index, uncertainty_weighting, train, config.torch_dtype)
    losses = [LossSpec("forces", target=FORCE_LABEL)]
    free = energy_gauge == "free"
    if energy_target == "node":
        losses.append(LossSpec("node_energy_gauge" if free else "node_energy", target=NODE_ENERGY_LABEL,
                               weight=energy_weight, name="node_energy"))
    elif energy_target == "total":
        losses.append(LossSpec("energy_gauge" if free else "energy", target=ENERGY_LABEL, weight=energy_weight,
                               name="energy"))
    config = replace(config, losses=losses, monitor="forces")
    with seeded(config.seed):
        pot = build_potential(data, arch, preset, train)
    res = fit(pot, frames, frames, config, out_dir, train_indices=train, val_indices=split["val"], extra={"role": "student"})
    eval_idx = np.asarray(split["test"] or split["val"], dtype=np.int64)
    pred = predict(res.model, data.subset(eval_idx))[keys.FORCE]
    label = frames.targets[FORCE_LABEL][eval_idx].double().numpy()
    info = {
        "role": "student",
        "force_target": force_target,
        "energy_target": energy_target,
        "teacher_index": int(teacher_index),
        "arch": arch,
        "preset": preset,
        "uncertainty_weighting": bool(uncertainty_weighting),
        "energy_weight": float(energy_weight),
        "energy_gauge": energy_gauge,
        "teacher_dir": str(Path(teacher_dir).resolve()),
        "config": to_dict(config),
        "best_epoch": res.best_epoch,
        "epochs_run": res.epochs_run,
        "seconds_per_epoch": res.seconds_per_epoch,
        "eval_frames": "test" if split["test"] else "val",
        "force_rmse_vs_label": force_rmse(pred, label),
        "force_rmse_vs_mapped": force_rmse(pred, data.forces[eval_idx]),
    }
    from cgkd.nn.potential import save_potential
    from cgkd.train import distributed

    if distributed.is_main():  # under torchrun the ranks hold the same model; rank 0 writes it
        save_potential(out_dir / "model.pt", res.model.cpu(), extra={k: info[k] for k in info if k != "config"})
        write_text(done, json.dumps(info, indent=1))
    distributed.barrier()
    return info


#: How energy targets treat the teachers' arbitrary energy constants (see train_student).
ENERGY_GAUGES = ("free", "fixed")

__all__ = ["ENERGY_GAUGES", "train_student", "uncertainty_weights", "student_frames", "FORCE_TARGETS", "ENERGY_TARGETS"]
