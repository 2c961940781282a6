"""Ensemble labels: every teacher member evaluated on every frame, written into the CG dataset.

Written into the group ``labels`` of the CG file (names in :mod:`cgkd.keys`):

=====================  ==============  =========  ===========================================
name                   shape           dtype      meaning
=====================  ==============  =========  ===========================================
member_forces          (M, F, B, 3)    float32    kJ/mol/nm, forces of each member
mean_forces            (F, B, 3)       float32    kJ/mol/nm, ensemble mean
force_std              (F, B)          float32    kJ/mol/nm, sqrt(sum_m |F_m - F_mean|^2 / (M - 1))
                                                  (the norm over xyz of the per-component spread;
                                                  0 for M = 1)
member_node_energy     (M, F, B)       float32    kJ/mol, per-bead (network) energy per member
mean_node_energy       (F, B)          float32    kJ/mol, ensemble mean of the above
member_energy          (M, F)          float64    kJ/mol, total energy (network + priors)
mean_energy            (F,)            float64    kJ/mol
=====================  ==============  =========  ===========================================

The group's attributes record the teacher folder, its split and the member count.

The group is written and read by the CG file's format module (:func:`cgkd.data.cg_h5.write_labels`,
:func:`cgkd.data.cg_h5.read_labels`), atomically: a crash leaves the original file untouched.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Dict

import numpy as np
import torch

from cgkd import keys
from cgkd.data.cg_h5 import labels_attrs, read_cg, read_labels, write_labels
from cgkd.kd.teachers import load_teachers, read_ensemble, read_split, teachers_digest
from cgkd.train.frames import frameset_from_cg
from cgkd.train.trainer import model_outputs

MEMBER_NODE_ENERGY = keys.MEMBER_NODE_ENERGY


def predict(model, data, batch_size: int = 16, device: str = "cpu") -> Dict[str, np.ndarray]:
    """Forces, per-bead energies and energies of ``model`` on every frame of ``data`` (CGData).

    Returns
    -------
    dict with ``keys.FORCE`` (F, B, 3) float32 kJ/mol/nm, ``keys.NODE_ENERGY`` (F, B) float32 kJ/mol,
    ``keys.ENERGY`` (F,) float64 kJ/mol
    """
    dtype = next(model.parameters()).dtype
    model.to(device).eval()
    names = list(getattr(model, "type_names", []) or [])
    if names and names != list(data.type_names):  # bead types by name, in the model's numbering
        data = replace(data, topology=data.topology.with_type_names(names, "the model"))
    elif not names and hasattr(model, "n_types") and len(data.type_names) > int(model.n_types):
        raise ValueError(f"the data have {len(data.type_names)} bead types but the model knows {int(model.n_types)}")
    frames = frameset_from_cg(data, dtype=dtype)
    f, b = data.n_frames, data.n_beads
    forces = np.zeros((f, b, 3), np.float32)
    node = np.zeros((f, b), np.float32)
    energy = np.zeros(f, np.float64)
    for batch in frames.batches(np.arange(f), batch_size, device=device):
        idx = batch["frame"].cpu().numpy()
        with torch.enable_grad():
            out = model_outputs(model, batch, need_forces=True, create_graph=False)
        forces[idx] = out[keys.FORCE].detach().cpu().numpy().reshape(len(idx), b, 3)
        node[idx] = out[keys.NODE_ENERGY].detach().cpu().numpy().reshape(len(idx), b)
        energy[idx] = out[keys.ENERGY].detach().cpu().numpy()
    return {keys.FORCE: forces, keys.NODE_ENERGY: node, keys.ENERGY: energy}


def label_chunk_task(teacher_dir: str, member: int, cg_path: str, start: int, stop: int, batch_size: int = 16,
                     threads: int = 1) -> Dict[str, np.ndarray]:
    """:func:`predict` of one teacher member on frames ``start:stop`` of ``cg_path``: one task of a parallel labelling."""
    from cgkd.train.checkpoint import num_threads

    with num_threads(threads):
        (model,) = load_teachers(teacher_dir, members=[member])
        return predict(model, read_cg(cg_path, frames=slice(start, stop)), batch_size)


def ensemble_predictions(cg_path, teacher_dir: str | Path, batch_size: int = 16, device: str = "cpu",
                         executor=None, chunk_frames: int = 1024) -> Dict[str, np.ndarray]:
    """All label arrays (see the module docstring) computed from the finished teachers on every frame of
    ``cg_path`` (a CG dataset path, or a :class:`cgkd.data.cg_h5.CGData`, e.g. configurations sampled
    elsewhere).

    With a parallel ``executor`` (:mod:`cgkd.parallel`; ``cg_path`` must be a path) each member's predictions on each
    chunk of ``chunk_frames`` frames are one task, on the CPU.
    """
    from cgkd.parallel import as_executor, run_tasks

    ex = as_executor(executor)
    if not ex.in_process:
        if not isinstance(cg_path, (str, Path)):
            raise ValueError(f"with a parallel executor, cg_path must be a CG dataset path, got {type(cg_path).__name__}")
        from cgkd.data.cg_h5 import n_frames as cg_n_frames

        n, members = cg_n_frames(cg_path), range(read_ensemble(teacher_dir)["n_members"])
        if n == 0:
            raise ValueError(f"{cg_path} has no frames to label")
        load_teachers(teacher_dir)  # unfinished members fail here, before any task starts
        bounds = [(a, min(a + int(chunk_frames), n)) for a in range(0, n, int(chunk_frames))]
        jobs = [(str(teacher_dir), m, str(cg_path), a, b, batch_size, ex.threads) for m in members for a, b in bounds]
        parts = run_tasks(label_chunk_task, jobs, ex, labels=[f"member {j[1]} frames {j[3]}-{j[4]}" for j in jobs],
                          desc="label chunks")
        k = len(bounds)
        preds = [{key: np.concatenate([p[key] for p in parts[i * k:(i + 1) * k]]) for key in parts[0]}
                 for i in range(len(members))]
    else:
        data = read_cg(cg_path) if isinstance(cg_path, (str, Path)) else cg_path
        preds = [predict(t, data, batch_size, device) for t in load_teachers(teacher_dir)]
    mf = np.stack([p[keys.FORCE] for p in preds])
    mn = np.stack([p[keys.NODE_ENERGY] for p in preds])
    me = np.stack([p[keys.ENERGY] for p in preds])
    mean_f = mf.mean(0)
    m = mf.shape[0]
    std = np.sqrt(((mf - mean_f) ** 2).sum(-1).sum(0) / max(m - 1, 1)) if m > 1 else np.zeros(mean_f.shape[:2])
    return {
        keys.MEMBER_FORCES: mf.astype(np.float32),
        keys.MEAN_FORCES: mean_f.astype(np.float32),
        keys.FORCE_STD: std.astype(np.float32),
        MEMBER_NODE_ENERGY: mn.astype(np.float32),
        keys.MEAN_NODE_ENERGY: mn.mean(0).astype(np.float32),
        keys.MEMBER_ENERGY: me.astype(np.float64),
        keys.MEAN_ENERGY: me.mean(0).astype(np.float64),
    }


def make_labels(cg_path: str | Path, teacher_dir: str | Path, batch_size: int = 16, device: str = "cpu",
                executor=None) -> Path:
    """Evaluate every teacher member on every frame and write the group ``labels`` into ``cg_path``
    atomically (see the module docstring). An existing group is replaced. Returns ``cg_path``.
    ``executor``: label chunks as parallel tasks (:func:`ensemble_predictions`)."""
    cg_path = Path(cg_path)
    if not cg_path.is_file():
        raise FileNotFoundError(f"cg_path {str(cg_path)!r} does not exist")
    labels = ensemble_predictions(cg_path, teacher_dir, batch_size, device, executor=executor)
    ens = read_ensemble(teacher_dir)
    split = read_split(teacher_dir)
    write_labels(cg_path, labels, {
        "teacher_dir": str(Path(teacher_dir).resolve()),
        "teachers_digest": teachers_digest(teacher_dir),
        "n_members": int(ens["n_members"]),
        "arch": ens["arch"],
        "preset": json.dumps(ens["preset"]),
        "split": json.dumps(split),
    })
    return cg_path


def labels_are_current(cg_path: str | Path, teacher_dir: str | Path) -> bool:
    """True when ``cg_path`` holds labels made from the teachers in ``teacher_dir`` as they are now (same folder
    and the same member model files: retrained teachers make the labels stale)."""
    attrs = labels_attrs(cg_path)
    if attrs.get("teacher_dir") != str(Path(teacher_dir).resolve()):
        return False
    try:
        return attrs.get("teachers_digest") == teachers_digest(teacher_dir)
    except (ValueError, FileNotFoundError):
        return False


def force_rmse(pred: np.ndarray, ref: np.ndarray) -> float:
    """RMS of the force component differences, kJ/mol/nm (arrays of shape (..., 3))."""
    d = np.asarray(pred, np.float64) - np.asarray(ref, np.float64)
    return float(np.sqrt(np.mean(d * d)))


def ensemble_errors(cg_path: str | Path, teacher_dir: str | Path, frames: str = "test") -> dict:
    """Force RMSE (kJ/mol/nm) of each member and of the ensemble mean against the mapped forces on
    the split's ``frames`` ("train", "val" or "test"); needs the labels (:func:`make_labels`)."""
    split = read_split(teacher_dir)
    if frames not in split:
        raise ValueError(f"frames must be one of {sorted(split)}, got {frames!r}")
    idx = np.asarray(split[frames], dtype=np.int64)
    if len(idx) == 0:
        raise ValueError(f"the {frames!r} split of {teacher_dir} is empty")
    data = read_cg(cg_path)
    lab = read_labels(cg_path, [keys.MEMBER_FORCES, keys.MEAN_FORCES, keys.FORCE_STD])
    ref = data.forces[idx]
    return {
        "frames": frames,
        "n_frames": int(len(idx)),
        "member_rmse": [force_rmse(mf[idx], ref) for mf in lab[keys.MEMBER_FORCES]],
        "mean_rmse": force_rmse(lab[keys.MEAN_FORCES][idx], ref),
        "mean_force_std": float(np.mean(lab[keys.FORCE_STD][idx])),
        "mapped_force_rms": float(np.sqrt(np.mean(ref.astype(np.float64) ** 2))),
    }


__all__ = ["make_labels", "labels_are_current", "read_labels", "predict", "ensemble_predictions", "ensemble_errors", "force_rmse", "MEMBER_NODE_ENERGY"]
