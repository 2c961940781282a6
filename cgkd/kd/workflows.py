"""Multi-step training workflows built from :func:`cgkd.train.fit`: fine-tuning and bias-aware
multi-fidelity training.

Both are resumable like ``fit`` itself: every step has its own folder under ``out_dir`` and a second call
with the same arguments resumes the unfinished step and skips the finished ones (their checkpoints hold the
best weights).

Pre-train -> fine-tune -> distill (e.g. from a universal model) is ``fit`` on the cheap labels,
:func:`fine_tune` on the better ones, then a student (:func:`cgkd.kd.train_student` or a strategy plan
with the fine-tuned model as ``teacher``); see docs/training.md.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn

from cgkd.nn.fidelity import FIDELITY, MultiFidelityPotential
from cgkd.train.frames import FrameSet
from cgkd.train.trainer import TrainConfig, TrainResult, fit


def fine_tune(
    model: nn.Module,
    train_set: FrameSet,
    val_set: FrameSet,
    config: TrainConfig,
    out_dir: str | Path,
    lr_factor: float = 0.1,
    max_epochs: Optional[int] = None,
    train_indices: Optional[Sequence[int]] = None,
    val_indices: Optional[Sequence[int]] = None,
    teacher: Optional[nn.Module] = None,
) -> TrainResult:
    """Continue training a (pre-trained) ``model`` in place with the learning rate ``config.lr * lr_factor``.

    Parameters
    ----------
    model : torch.nn.Module
        Pre-trained weights; they are the starting point (a fresh optimiser state).
    lr_factor : float
        In (0, 1]; fine-tuning usually starts 10x lower than training from scratch.
    max_epochs : int, optional
        Default ``config.max_epochs``.
    Other parameters as :func:`cgkd.train.fit`.
    """
    if not 0 < lr_factor <= 1:
        raise ValueError(f"lr_factor must lie in (0, 1], got {lr_factor}")
    cfg = replace(config, lr=config.lr * lr_factor, min_lr=min(config.min_lr, config.lr * lr_factor),
                  max_epochs=config.max_epochs if max_epochs is None else max_epochs)
    return fit(model, train_set, val_set, cfg, out_dir, train_indices, val_indices, teacher=teacher,
               extra={"role": "fine_tune", "lr_factor": lr_factor})


def with_fidelity(frames: FrameSet, fidelity, weights: Optional[Union[Sequence[float], Dict[int, float]]] = None) -> FrameSet:
    """A copy of ``frames`` with the per-frame target ``fidelity`` (F,) int64 and, when ``weights`` (one per
    fidelity) are given, sample weights multiplied by the weight of each frame's fidelity."""
    fid = torch.as_tensor(np.asarray(fidelity), dtype=torch.int64)
    if fid.shape != (frames.n_frames,):
        raise ValueError(f"fidelity must have one index per frame, shape ({frames.n_frames},), got {tuple(fid.shape)}")
    if fid.numel() and int(fid.min()) < 0:
        raise ValueError(f"fidelity indices must be >= 0, got {int(fid.min())}")
    sw = frames.sample_weight
    if weights is not None:
        n = int(fid.max()) + 1 if fid.numel() else 0
        table = [float(weights[k]) for k in range(n)] if isinstance(weights, dict) else [float(w) for w in weights]
        if len(table) < n:
            raise ValueError(f"weights must give a weight for each of the {n} fidelities, got {len(table)}")
        if any(w < 0 for w in table):
            raise ValueError(f"weights must be >= 0, got {table}")
        per_frame = torch.tensor(table, dtype=frames.positions.dtype)[fid]
        sw = per_frame if sw is None else sw * per_frame
    return FrameSet(frames.positions, frames.types, frames.box, {**frames.targets, FIDELITY: fid},
                    sample_weight=sw, bead_weight=frames.bead_weight)


def multi_fidelity(
    base: nn.Module,
    frames: FrameSet,
    fidelity,
    config: TrainConfig,
    out_dir: str | Path,
    reference: int = 0,
    train_indices: Optional[Sequence[int]] = None,
    val_indices: Optional[Sequence[int]] = None,
    weights: Optional[Union[Sequence[float], Dict[int, float]]] = None,
    bias_cutoff: float = 0.8,
    n_radial: int = 8,
    n_types: Optional[int] = None,
    fine_tune_epochs: int = 0,
    fine_tune_lr_factor: float = 0.1,
) -> Dict[str, object]:
    """Bias-aware multi-fidelity training, then optional fine-tuning on the reference fidelity.

    Step 1 (``out_dir/multi_fidelity``): ``base`` inside a :class:`cgkd.nn.fidelity.MultiFidelityPotential`
    trained on the frames of every fidelity, each frame's labels explained by ``base`` plus its fidelity's
    learned pairwise bias. Step 2 (``out_dir/fine_tune``, when ``fine_tune_epochs`` > 0): ``base`` alone on
    the reference-fidelity frames with the learning rate lowered by ``fine_tune_lr_factor``.

    Parameters
    ----------
    base : torch.nn.Module
        Shared potential (a :class:`cgkd.nn.CGPotential`), trained in place.
    frames : FrameSet
        All frames with the targets of ``config.losses`` (e.g. ``forces``: each frame's label at its fidelity).
    fidelity : array of int, shape=(F,)
        Fidelity index of every frame.
    config : TrainConfig
    out_dir : path
    reference : int
        The fidelity ``base`` must reproduce (usually the most accurate one).
    train_indices, val_indices : sequence of int, optional
        Frames for step 1 (default all / all); step 2 uses the reference-fidelity frames among them.
    weights : sequence or dict of float, optional
        Sample weight per fidelity (e.g. ``[1.0, 0.3]``).
    bias_cutoff : float, nm
    n_radial : int
    n_types : int, optional
        Bead types; default ``len(base.type_names)``.
    fine_tune_epochs : int
    fine_tune_lr_factor : float

    Returns
    -------
    dict with ``"model"`` (``base``, trained), ``"wrapper"`` (the MultiFidelityPotential with the learned
    biases), ``"multi_fidelity"`` and ``"fine_tune"`` (TrainResult or None).
    """
    if fine_tune_epochs < 0:
        raise ValueError(f"fine_tune_epochs must be >= 0, got {fine_tune_epochs}")
    fid = np.asarray(fidelity, dtype=np.int64)
    marked = with_fidelity(frames, fid, weights)
    n_fid = max(int(fid.max()) + 1, reference + 1, 2)
    if n_types is None:
        if not hasattr(base, "type_names"):
            raise ValueError("n_types is needed when base has no type_names")
        n_types = len(base.type_names)
    out_dir = Path(out_dir)
    wrapper = MultiFidelityPotential(base, n_types, n_fid, reference=reference, cutoff=bias_cutoff, n_radial=n_radial)
    res1 = fit(wrapper, marked, marked, config, out_dir / "multi_fidelity", train_indices, val_indices,
               extra={"role": "multi_fidelity", "reference": reference, "n_fidelities": n_fid})
    res2 = None
    if fine_tune_epochs:
        tr = np.arange(frames.n_frames) if train_indices is None else np.asarray(train_indices, np.int64)
        va = np.arange(frames.n_frames) if val_indices is None else np.asarray(val_indices, np.int64)
        tr, va = tr[fid[tr] == reference], va[fid[va] == reference]
        if len(tr) == 0 or len(va) == 0:
            raise ValueError(f"fine-tuning needs reference-fidelity ({reference}) frames among the training and "
                             f"validation frames, got {len(tr)} and {len(va)}")
        res2 = fine_tune(base, frames, frames, config, out_dir / "fine_tune", lr_factor=fine_tune_lr_factor,
                         max_epochs=fine_tune_epochs, train_indices=tr, val_indices=va)
    return {"model": base, "wrapper": wrapper, "multi_fidelity": res1, "fine_tune": res2}


__all__ = ["fine_tune", "multi_fidelity", "with_fidelity"]
