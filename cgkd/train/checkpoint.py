"""Training checkpoints (format ``cgkd-checkpoint``), written atomically, and RNG-state helpers.

A checkpoint is a ``torch.save`` file with plain tensors and Python numbers only (loaded with
``weights_only=True``)::

    format, format_version, epoch (next epoch to run), model (state dict), loss (state dict of the
    loss module: learned projections), optimizer, scheduler, best_model (state dict), best_val,
    best_epoch, bad_epochs, log_offset (bytes of log.jsonl to keep), rng (torch CPU / CUDA states and
    the shuffling generator), config (TrainConfig as a dict), extra (caller metadata)

The model's own save format (``cgkd.nn``) is used for the final model file; inside a checkpoint
the model is a state dict, because it is restored into a model built from the same recipe.
"""

from __future__ import annotations

import contextlib
import random
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import numpy as np
import torch

from cgkd.io.atomic import atomic_path
from cgkd.io.formats import FormatError, check_format

FORMAT = "cgkd-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | Path, state: Dict[str, Any]) -> None:
    """Write ``state`` (plus format and version) to ``path`` atomically."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def load_checkpoint(path: str | Path) -> Dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; checks format and version."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle/zip errors of many types for a damaged file
        raise FormatError(f"{path} is not a readable {FORMAT} file ({type(exc).__name__})") from None
    if not isinstance(state, dict):
        raise FormatError(f"{path} is not a {FORMAT} file (it holds a {type(state).__name__})")
    check_format(state.get("format"), state.get("format_version"), FORMAT, FORMAT_VERSION, str(path))
    return state


def rng_state(generator: Optional[torch.Generator] = None) -> Dict[str, Any]:
    """Global torch RNG states (CPU and CUDA) and, if given, ``generator``'s state."""
    state: Dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if generator is not None:
        state["generator"] = generator.get_state()
    return state


def set_rng_state(state: Dict[str, Any], generator: Optional[torch.Generator] = None) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if generator is not None and "generator" in state:
        generator.set_state(state["generator"])


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch, numpy and random inside the block; the previous global RNG states are restored after."""
    saved_torch = torch.get_rng_state()
    saved_cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    saved_np = np.random.get_state()
    saved_py = random.getstate()
    try:
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        yield
    finally:
        torch.set_rng_state(saved_torch)
        if saved_cuda is not None:
            torch.cuda.set_rng_state_all(saved_cuda)
        np.random.set_state(saved_np)
        random.setstate(saved_py)


@contextlib.contextmanager
def num_threads(n: Optional[int]) -> Iterator[None]:
    """Set torch's intra-op thread count inside the block (None: leave it); restored after."""
    old = torch.get_num_threads()
    try:
        if n is not None:
            torch.set_num_threads(int(n))
        yield
    finally:
        torch.set_num_threads(old)


__all__ = ["save_checkpoint", "load_checkpoint", "rng_state", "set_rng_state", "seeded", "num_threads", "FORMAT", "FORMAT_VERSION"]
