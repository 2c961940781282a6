"""The one trainer: Adam, composable weighted losses, weight schedules, plateau halving of the
learning rate, early stopping, gradient clipping, resumable checkpoints and a JSON-lines log.

Usage::

    with seeded(config.seed):
        model = build_model(...)                 # same recipe on every (re)start
    result = fit(model, train_set, val_set, config, out_dir)

``fit`` writes ``out_dir/checkpoint.pt`` after every epoch (atomically) and appends one JSON line
per epoch to ``out_dir/log.jsonl``. Calling ``fit`` again with the same arguments resumes after the
last finished epoch (a killed run loses at most the epoch it was in); with a larger
``max_epochs`` it continues the same run. On CPU a resumed run is bitwise identical to an
uninterrupted one (all RNG states, the optimiser and the scheduler are restored).
"""

from __future__ import annotations

import copy
import json
import warnings
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from cgkd import keys
from cgkd.io.config import to_dict
from cgkd.train import distributed as dist
from cgkd.train.checkpoint import load_checkpoint, num_threads, rng_state, save_checkpoint, seeded, set_rng_state
from cgkd.train.frames import FrameSet
from cgkd.train.losses import POSITIONS_LEAF, Loss, LossSpec
from cgkd.train.schedule import ScheduleRow, WeightSchedule

DTYPES = {"float32": torch.float32, "float64": torch.float64}
CHECKPOINT = "checkpoint.pt"
#: Fewer distinct training frames than this draw a warning (a few frames of a liquid hold little information).
FEW_FRAMES = 10
LOG = "log.jsonl"
#: Relative improvement of the monitored validation loss that counts as better (as ReduceLROnPlateau).
IMPROVEMENT = 1e-4


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (YAML-loadable with ``cgkd.io.config.load_yaml(TrainConfig, path)``).

    Attributes
    ----------
    max_epochs : int
    batch_size : int
        Frames per batch.
    lr : float
        Initial Adam learning rate.
    lr_factor, lr_patience, min_lr : float, int, float
        The learning rate is multiplied by ``lr_factor`` after ``lr_patience`` epochs without a
        better validation loss (``ReduceLROnPlateau``), never below ``min_lr``.
    early_stopping : int
        Stop after this many epochs without a better validation loss; 0 disables.
    grad_clip : float
        Maximum gradient norm; 0 disables clipping.
    weight_decay : float
    seed : int
        Seeds the shuffling generator and the global RNGs inside training (restored afterwards).
    dtype : str
        ``float32`` or ``float64``.
    device : str
        ``cpu`` or ``cuda`` (or ``cuda:N``).
    losses : list of LossSpec
        The loss terms and their base weights.
    schedule : list of ScheduleRow
        Epoch -> weights table (see :mod:`cgkd.train.schedule`).
    interpolate_schedule : bool
    monitor : str
        Validation quantity for plateau, early stopping and the best model: "" = the loss with the
        base weights; or the name of one loss term.
    progress : bool
        Report progress over epochs (a bar in a terminal, periodic lines in logs: ``cgkd.progress``).
    threads : int or None
        torch intra-op threads during training (restored afterwards); None leaves it.
    """

    max_epochs: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    lr_factor: float = 0.5
    lr_patience: int = 5
    min_lr: float = 1e-6
    early_stopping: int = 20
    grad_clip: float = 10.0
    weight_decay: float = 0.0
    seed: int = 0
    dtype: str = "float32"
    device: str = "cpu"
    losses: List[LossSpec] = field(default_factory=lambda: [LossSpec("forces")])
    schedule: List[ScheduleRow] = field(default_factory=list)
    interpolate_schedule: bool = False
    monitor: str = ""
    progress: bool = False
    threads: Optional[int] = None

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(f"TrainConfig.dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        for name in ("max_epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")
        if not 0 < self.lr_factor < 1:
            raise ValueError(f"TrainConfig.lr_factor must be in (0, 1), got {self.lr_factor}")
        if self.early_stopping < 0 or self.grad_clip < 0:
            raise ValueError("TrainConfig.early_stopping and grad_clip must be >= 0")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"TrainConfig.device must be 'cpu' or 'cuda[:N]', got {self.device!r}")
        labels = [s.label for s in self.losses]
        if self.monitor and self.monitor not in labels:
            raise ValueError(f"TrainConfig.monitor {self.monitor!r} is not a loss term; terms are {labels}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]


@dataclass
class TrainResult:
    """What :func:`fit` returns. ``model`` holds the best weights (by the monitored validation loss)."""

    model: nn.Module
    loss: Loss
    best_val: float
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    history: List[dict]
    seconds_per_epoch: float


def model_outputs(model: nn.Module, batch: Dict[str, Tensor], need_forces: bool, create_graph: bool) -> Dict[str, Tensor]:
    """Run ``model`` on a batch; add ``keys.FORCE = -dE/dx`` (N, 3) kJ/mol/nm by autograd when needed.

    The model's batched entry point is ``forward_batch(positions (N, 3), types (N,), box (G, 3, 3),
    batch (N,), n_graphs) -> dict`` with at least ``keys.ENERGY (G,)`` and ``keys.NODE_ENERGY (N,)``.
    A model with a ``batch_inputs`` tuple of names also receives those batch entries as keyword
    arguments (e.g. ``fidelity`` for :class:`cgkd.nn.fidelity.MultiFidelityPotential`).
    """
    pos = batch[keys.POSITIONS]
    if need_forces:
        pos = pos.detach().requires_grad_(True)
    inputs = {}
    for name in getattr(model, "batch_inputs", ()):
        if name not in batch:
            raise ValueError(f"{type(model).__name__} needs the batch entry {name!r} (a per-frame target of the "
                             f"FrameSet); the batch has {sorted(k for k in batch if k != 'n_graphs')}")
        inputs[name] = batch[name]
    out = dict(model.forward_batch(pos, batch[keys.TYPES], batch[keys.BOX], batch["batch"], int(batch["n_graphs"]),
                                   **inputs))
    if need_forces and keys.FORCE not in out:
        (grad,) = torch.autograd.grad(out[keys.ENERGY].sum(), pos, create_graph=create_graph)
        out[keys.FORCE] = -grad
    if need_forces:
        out[POSITIONS_LEAF] = pos  # the tensor forces were differentiated by (for second derivatives)
    return out


def _teacher_outputs(teacher: Optional[nn.Module], batch) -> Optional[Dict[str, Tensor]]:
    if teacher is None:
        return None
    with torch.no_grad():
        out = model_outputs(teacher, batch, need_forces=False, create_graph=False)
    return {k: v.detach() for k, v in out.items()}


def evaluate(
    model: nn.Module,
    loss: Loss,
    frames: FrameSet,
    indices: Sequence[int],
    weights: Dict[str, float],
    batch_size: int = 16,
    device: str = "cpu",
    teacher: Optional[nn.Module] = None,
) -> Dict[str, float]:
    """Loss terms on ``indices`` averaged over batches (weighted by the batches' total sample weight).

    Returns ``{"loss": weighted sum, "loss/<term>": value, <metric>: value, ...}``.
    """
    sums: Dict[str, float] = {}
    total_w = 0.0
    model.eval()
    sharded = dist.in_global_batches()
    for batch in frames.batches(indices, batch_size, generator=None, device=device, shard=sharded):
        with torch.enable_grad():
            out = model_outputs(model, batch, need_forces=loss.needs_forces, create_graph=loss.needs_force_graph)
            value, metrics = loss(out, batch, weights, _teacher_outputs(teacher, batch))
        w = float(dist.batch_sum(batch["sample_weight"].sum()))
        metrics = {"loss": float(value.detach()), **metrics}
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + w * v
        total_w += w
    return {k: v / max(total_w, 1e-300) for k, v in sums.items()}


def _monitor_value(metrics: Dict[str, float], monitor: str) -> float:
    return metrics["loss"] if not monitor else metrics[f"loss/{monitor}"]


def fit(
    model: nn.Module,
    train_set: FrameSet,
    val_set: FrameSet,
    config: TrainConfig,
    out_dir: str | Path,
    train_indices: Optional[Sequence[int]] = None,
    val_indices: Optional[Sequence[int]] = None,
    teacher: Optional[nn.Module] = None,
    extra: Optional[dict] = None,
) -> TrainResult:
    """Train ``model`` (in place) and return the best weights; resumes from ``out_dir/checkpoint.pt``.

    Parameters
    ----------
    model : torch.nn.Module
        With the batched entry point described in :func:`model_outputs`; moved to the config's
        dtype and device.
    train_set, val_set : FrameSet
        May be the same set with different ``train_indices`` / ``val_indices``.
    config : TrainConfig
    out_dir : path
        Checkpoint and log folder (created).
    train_indices, val_indices : sequence of int, optional
        Frames used (repeats allowed: a bootstrap resample). Default: all frames of the set.
    teacher : torch.nn.Module, optional
        Frozen model whose outputs feed loss terms with ``source="teacher"``.
    extra : dict, optional
        JSON-serialisable metadata stored in the checkpoint.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = dist.local_device(torch.device(config.device))
    parallel = dist.active()  # under torchrun: one model, DistributedDataParallel (cgkd.train.distributed)
    main = dist.is_main()
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"TrainConfig.device is {config.device!r} but CUDA is not available")
    dtype = config.torch_dtype
    train_indices = np.arange(train_set.n_frames) if train_indices is None else np.asarray(train_indices, dtype=np.int64)
    val_indices = np.arange(val_set.n_frames) if val_indices is None else np.asarray(val_indices, dtype=np.int64)
    if len(train_indices) == 0 or len(val_indices) == 0:
        raise ValueError(f"train and validation frames must be non-empty, got {len(train_indices)} and {len(val_indices)}")
    for name, idx, fs in (("train_indices", train_indices, train_set), ("val_indices", val_indices, val_set)):
        if idx.min() < 0 or idx.max() >= fs.n_frames:
            raise ValueError(f"{name} must lie in 0..{fs.n_frames - 1}, got {idx.min()}..{idx.max()}")
    n_distinct = len(np.unique(train_indices))
    if n_distinct < FEW_FRAMES:
        warnings.warn(
            f"training on only {n_distinct} distinct frames (fewer than {FEW_FRAMES}): the model will fit noise; use "
            "more frames (a longer or more frequently saved AA run)", stacklevel=2)
    train_set, val_set = train_set.to(dtype), val_set.to(dtype)
    model.to(device=device, dtype=dtype)
    if teacher is not None:
        teacher.to(device=device, dtype=dtype).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)

    loss = Loss(config.losses)
    if loss.needs_teacher and teacher is None:
        raise ValueError("a loss term takes its target from a teacher (source='teacher') but teacher is None")
    schedule = WeightSchedule(loss.base_weights, config.schedule, config.interpolate_schedule)
    gen = torch.Generator().manual_seed(int(config.seed))

    with seeded(config.seed), num_threads(config.threads):
        first = train_set.batch(train_indices[: min(len(train_indices), config.batch_size)], device=device)
        with torch.enable_grad():
            out = model_outputs(model, first, need_forces=loss.needs_forces, create_graph=False)
        loss.setup(out, first, _teacher_outputs(teacher, first))
        loss.to(device=device, dtype=dtype)
        params = list(model.parameters()) + list(loss.parameters())
        opt = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=config.lr_factor, patience=config.lr_patience, min_lr=config.min_lr
        )
        start, best_val, best_epoch, bad, stopped = 0, math.inf, -1, 0, False
        best_state = copy.deepcopy(model.state_dict())
        best_loss_state = copy.deepcopy(loss.state_dict())
        log_path = out_dir / LOG
        ckpt_path = out_dir / CHECKPOINT
        log_offset = 0
        seconds = []
        if ckpt_path.is_file():
            ck = load_checkpoint(ckpt_path)
            model.load_state_dict(ck["model"])
            loss.load_state_dict(ck["loss"])
            opt.load_state_dict(ck["optimizer"])
            plateau.load_state_dict(ck["scheduler"])
            set_rng_state(ck["rng"], gen)
            start, best_val, best_epoch = int(ck["epoch"]), float(ck["best_val"]), int(ck["best_epoch"])
            bad, stopped, log_offset = int(ck["bad_epochs"]), bool(ck["stopped"]), int(ck["log_offset"])
            best_state, best_loss_state = ck["best_model"], ck["best_loss"]
        if log_path.exists() and main:
            with open(log_path, "r+b") as fh:
                fh.truncate(log_offset)
        dist.barrier()
        history = _read_log(log_path)
        runner = dist.DataParallel(model, device) if parallel else model

        from cgkd.progress import note, progress

        what = " ".join(f"{k} {v}" for k, v in (extra or {}).items() if isinstance(v, (str, int)))
        desc = f"{what} epochs" if what else "epochs"
        if start and config.progress:
            note(f"{desc}: resuming from {ckpt_path} at epoch {start}")
        bar = progress(config.max_epochs, desc, unit="epoch", initial=start, enabled=config.progress and main,
                       leave=False)
        epoch = start
        try:
            with dist.global_batches(parallel):
                while epoch < config.max_epochs and not stopped:
                    t0 = time.perf_counter()
                    weights = schedule.weights(epoch)
                    model.train()
                    sums: Dict[str, float] = {}
                    wsum = 0.0
                    for batch in train_set.batches(train_indices, config.batch_size, generator=gen, device=device,
                                                   shard=parallel):
                        opt.zero_grad(set_to_none=True)
                        out = model_outputs(runner, batch, need_forces=loss.needs_forces, create_graph=True)
                        value, metrics = loss(out, batch, weights, _teacher_outputs(teacher, batch))
                        if not torch.isfinite(value):
                            raise FloatingPointError(f"loss became {float(value)} at epoch {epoch}")
                        if parallel:  # every parameter takes part in DDP's reduction, also those the loss does not
                            # reach (per-type energy offsets under a force-only loss): a zero-weighted sum of them
                            (value + dist.unused_parameter_guard(model)).backward()
                        else:
                            value.backward()
                        if parallel:  # DDP averaged the model's gradients; the loss's own parameters here
                            dist.average_gradients(loss.parameters())
                        if config.grad_clip > 0:
                            nn.utils.clip_grad_norm_(params, config.grad_clip)
                        opt.step()
                        w = float(dist.batch_sum(batch["sample_weight"].sum()))
                        for k, v in {"loss": float(value.detach()), **metrics}.items():
                            sums[k] = sums.get(k, 0.0) + w * v
                        wsum += w
                    train_metrics = {k: v / max(wsum, 1e-300) for k, v in sums.items()}
                    val_metrics = evaluate(
                        model, loss, val_set, val_indices, loss.base_weights, config.batch_size, device, teacher
                    )
                    monitored = _monitor_value(val_metrics, config.monitor)
                    plateau.step(monitored)
                    if monitored < best_val - IMPROVEMENT * abs(best_val) or best_epoch < 0:
                        best_val, best_epoch, bad = monitored, epoch, 0
                        best_state = copy.deepcopy(model.state_dict())
                        best_loss_state = copy.deepcopy(loss.state_dict())
                    else:
                        bad += 1
                    if config.early_stopping and bad >= config.early_stopping:
                        stopped = True
                    seconds.append(time.perf_counter() - t0)
                    row = {
                        "epoch": epoch,
                        "lr": opt.param_groups[0]["lr"],
                        "weights": weights,
                        "train": train_metrics,
                        "val": val_metrics,
                        "best_val": best_val,
                        "best_epoch": best_epoch,
                        "seconds": seconds[-1],
                    }
                    history.append(row)
                    if main:
                        with open(log_path, "a") as fh:
                            fh.write(json.dumps(row) + "\n")
                            fh.flush()
                            os.fsync(fh.fileno())
                            log_offset = fh.tell()
                    epoch += 1
                    if main:
                        save_checkpoint(
                            ckpt_path,
                            {
                                "epoch": epoch,
                                "model": model.state_dict(),
                                "loss": loss.state_dict(),
                                "optimizer": opt.state_dict(),
                                "scheduler": plateau.state_dict(),
                                "best_model": best_state,
                                "best_loss": best_loss_state,
                                "best_val": best_val,
                                "best_epoch": best_epoch,
                                "bad_epochs": bad,
                                "stopped": stopped,
                                "log_offset": log_offset,
                                "rng": rng_state(gen),
                                "config": json.dumps(to_dict(config)),
                                "extra": json.dumps(extra or {}),
                            },
                        )
                    bar.update(1)
                    bar.set_postfix_str(f"val={monitored:.4g}, lr={opt.param_groups[0]['lr']:.2g}")
        finally:
            bar.close()
    dist.barrier()  # the last checkpoint is on disk before any rank returns

    model.load_state_dict(best_state)
    loss.load_state_dict(best_loss_state)
    times = [h["seconds"] for h in history]
    return TrainResult(
        model=model,
        loss=loss,
        best_val=best_val,
        best_epoch=best_epoch,
        epochs_run=epoch,
        stopped_early=stopped,
        history=history,
        seconds_per_epoch=float(np.mean(times)) if times else float("nan"),
    )


def _read_log(path: Path) -> List[dict]:
    if not path.exists():
        return []
    with open(path) as fh:
        return [json.loads(line) for line in fh if line.strip()]


__all__ = ["TrainConfig", "TrainResult", "fit", "evaluate", "model_outputs", "DTYPES", "CHECKPOINT", "LOG"]
