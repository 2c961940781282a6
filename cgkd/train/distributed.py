"""One model on several processes: ``torch.distributed`` data parallelism for :func:`cgkd.train.fit`.

Start any training command under ``torchrun`` (``torchrun --nproc-per-node 2 -m cgkd distill ...``): the
``cgkd`` command joins the process group from torchrun's environment (``gloo`` for CPU training,
``nccl`` for CUDA, one GPU per local rank), and :func:`cgkd.train.fit` then trains one model with
``DistributedDataParallel``.

What makes a run on R processes the same run as on one process at the same global batch:

- every rank draws the same shuffled order (the trainer's seeded generator) and takes its contiguous
  part of each global batch of ``TrainConfig.batch_size`` frames (a rank left without frames in a short
  last batch runs one frame of weight zero);
- loss terms reduce over the *global* batch: their sums of weights and weighted residuals (and the
  batch means that gauge-free energy terms remove) are summed over the ranks by a differentiable
  all-reduce (:func:`batch_sum`), so the loss (an RMSE is not a mean of per-rank RMSEs) and, after DDP
  averages the gradients, its gradient equal the single-process ones up to summation order;
- validation is sharded the same way and reduced globally, so plateau, early stopping and the best
  epoch agree on every rank;
- only rank 0 writes the checkpoint, the log and the model; a resumed run reads the same checkpoint on
  every rank.

Terms whose value depends on per-rank statistics other than those sums are not covered; nor is ``sliced_score``,
whose random projections come from the global RNG, seeded alike on every rank (its estimate stays unbiased, but the
run is not the single-process one).
"""

from __future__ import annotations

import contextlib
import os
from typing import Iterator, Optional

import numpy as np
import torch
from torch import Tensor, nn

_GLOBAL = False


def active() -> bool:
    """True when a process group of more than one rank is initialised."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1


def rank() -> int:
    return torch.distributed.get_rank() if active() else 0


def world_size() -> int:
    return torch.distributed.get_world_size() if active() else 1


def is_main() -> bool:
    """True on rank 0 (and without a process group): the process that writes files."""
    return rank() == 0


def barrier() -> None:
    if active():
        torch.distributed.barrier()


def init_from_env(device: Optional[str] = None) -> bool:
    """Join the process group described by torchrun's environment (``WORLD_SIZE`` > 1); returns whether it did.

    ``device`` picks the backend: ``nccl`` for ``cuda``, ``gloo`` otherwise (default: ``CGKD_DDP_BACKEND``,
    else ``nccl`` when CUDA is available and ``gloo`` when not).
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not torch.distributed.is_available():
        return False
    if torch.distributed.is_initialized():
        return True
    import datetime

    backend = os.environ.get("CGKD_DDP_BACKEND")
    if backend is None:
        if (device or "").startswith("cuda"):
            backend = "nccl"
        elif device is None and torch.cuda.is_available():
            backend = "cpu:gloo,cuda:nccl"  # the device is the training config's: either works
        else:
            backend = "gloo"
    if "nccl" in backend:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    # long enough for rank 0 to label a large dataset while the others wait at a barrier
    timeout = datetime.timedelta(seconds=float(os.environ.get("CGKD_DDP_TIMEOUT_S", 6 * 3600)))
    torch.distributed.init_process_group(backend=backend, timeout=timeout)
    return True


def local_device(device: torch.device) -> torch.device:
    """This rank's GPU for a CUDA device under torchrun (``LOCAL_RANK``; a given index is replaced: one GPU per
    rank); other devices unchanged."""
    if device.type == "cuda" and active():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


@contextlib.contextmanager
def global_batches(on: bool = True) -> Iterator[None]:
    """Inside the block, :func:`batch_sum` sums over the ranks (a no-op without a process group)."""
    global _GLOBAL
    old = _GLOBAL
    _GLOBAL = bool(on) and active()
    try:
        yield
    finally:
        _GLOBAL = old


def in_global_batches() -> bool:
    """True inside :func:`global_batches` with a process group: batches are sharded and sums global."""
    return _GLOBAL


def batch_sum(t: Tensor) -> Tensor:
    """``t`` summed over the ranks inside :func:`global_batches` (differentiable), else ``t`` itself."""
    if not _GLOBAL:
        return t
    from torch.distributed.nn.functional import all_reduce

    return all_reduce(t)


def batch_max(n: int, device=None) -> int:
    """The largest ``n`` over the ranks inside :func:`global_batches`, else ``n`` (``device``: where the
    process group's backend reduces, the device of the batch)."""
    if not _GLOBAL:
        return n
    t = torch.tensor([n], dtype=torch.int64, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return int(t.item())


def shard(frames: np.ndarray) -> tuple[np.ndarray, bool]:
    """This rank's contiguous part of one global batch, and whether it is a stand-in of weight zero."""
    if not active():
        return frames, False
    part = np.array_split(frames, world_size())[rank()]
    if len(part) == 0:
        return frames[:1], True
    return part, False


class BatchEntry(nn.Module):
    """``forward`` = the wrapped model's ``forward_batch``, so that ``DistributedDataParallel`` can wrap it."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, positions, types, box, batch, n_graphs: int, inputs: dict):
        return self.model.forward_batch(positions, types, box, batch, n_graphs, **inputs)


class DataParallel:
    """What the trainer calls instead of the model: ``forward_batch`` through ``DistributedDataParallel``."""

    def __init__(self, model: nn.Module, device: torch.device):
        from torch.nn.parallel import DistributedDataParallel

        self.model = model
        self.batch_inputs = getattr(model, "batch_inputs", ())
        ids = [device.index] if device.type == "cuda" else None
        self.ddp = DistributedDataParallel(BatchEntry(model), device_ids=ids)

    def forward_batch(self, positions, types, box, batch, n_graphs, **inputs):
        return self.ddp(positions, types, box, batch, n_graphs, inputs)


def unused_parameter_guard(model: nn.Module) -> Tensor:
    """``0 * sum(p)`` over the trainable parameters: added to the loss it gives each one a (zero) gradient, so that
    DDP's reduction finishes in every step (a parameter the loss does not reach would otherwise stall it)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return sum((p.sum() * 0.0 for p in params), torch.zeros(()))


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (itself without a process group)."""
    if not active():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def average_gradients(params) -> None:
    """Average the gradients of parameters outside DDP (learned loss projections) over the ranks."""
    if not active():
        return
    r = world_size()
    for p in params:
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad /= r


__all__ = ["active", "barrier", "batch_max", "batch_sum", "global_batches", "init_from_env", "is_main", "local_device",
           "rank", "shard", "world_size"]
