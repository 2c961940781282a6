"""Teacher ensembles: M independently trained CG potentials on the noisy mapped forces.

Layout of a teacher folder::

    teacher_dir/
      ensemble.json          architecture, preset, config, CG file, number of members
      split.json             frame indices: train / val / test (the same for every member)
      member_00/             one independent, resumable training run per member
        checkpoint.pt, log.jsonl   (cgkd.train)
        model.pt                   best weights, cgkd.nn.save_potential format
        done.json                  written last: the member is finished and is skipped on rerun
      member_01/ ...

Members differ in two ways:

- **seed**: member k initialises its network and shuffles its batches with seed ``config.seed + k``;
- **bootstrap**: member k trains on a resample with replacement of the training frames, drawn
  with ``numpy.random.default_rng([config.seed, k])`` (``len(train)`` draws; on average 63% of
  the distinct frames, some several times). Validation and test frames are never resampled.

The split holds out the last ``test_fraction`` of the trajectory as test frames and the
``val_fraction`` before it as validation frames (contiguous blocks, so that time-correlated
neighbours of a held-out frame are not in the training set, except at one boundary).

Members run as independent tasks of :func:`cgkd.parallel.run_tasks`: in this process, a local process
pool (``n_workers``) or a Dask cluster (``executor``). A crash or a lost worker loses at most the
unfinished epoch of the members that were running, and a rerun (or Dask's rerun of the task on another
worker) resumes them. Pool workers watch their parent and exit when it dies (no orphan keeps training),
and each member holds a lock on ``member_XX/.lock`` while it trains, so no two live processes train the
same member.

``ensemble.json`` records the digest of the CG data (``cgkd.data.cg_h5.content_digest``: positions,
forces, box, topology; not the labels): a rerun on other data is refused, also for finished members.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from cgkd.data.cg_h5 import CGData, content_digest, n_frames as cg_n_frames, read_cg
from cgkd.io.atomic import write_text
from cgkd.errors import CgkdError
from cgkd.io.config import from_dict, to_dict
from cgkd.io.formats import read_json
from cgkd.io.provenance import ProvenanceError
from cgkd.train.checkpoint import num_threads, seeded
from cgkd.train.frames import frameset_from_cg
from cgkd.train.trainer import TrainConfig, fit

ENSEMBLE_FILE = "ensemble.json"
SPLIT_FILE = "split.json"
MODEL_FILE = "model.pt"
DONE_FILE = "done.json"


def member_dir(teacher_dir: str | Path, index: int) -> Path:
    """``teacher_dir/member_XX``."""
    return Path(teacher_dir) / f"member_{int(index):02d}"


def make_split(n_frames: int, val_fraction: float = 0.1, test_fraction: float = 0.1) -> Dict[str, List[int]]:
    """Contiguous train / val / test blocks of frame indices (test last, val before it).

    Returns
    -------
    dict with ``train``, ``val``, ``test``: lists of int
    """
    if not (0 < val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction and test_fraction must be in (0, 1) and [0, 1) with sum < 1, got {val_fraction}, {test_fraction}"
        )
    n_test = int(round(n_frames * test_fraction))
    n_val = max(1, int(round(n_frames * val_fraction)))
    n_train = n_frames - n_val - n_test
    if n_train < 1:
        raise ValueError(f"n_frames={n_frames} is too few for a split with {n_val} validation and {n_test} test frames")
    idx = list(range(n_frames))
    return {"train": idx[:n_train], "val": idx[n_train : n_train + n_val], "test": idx[n_train + n_val :]}


def read_split(teacher_dir: str | Path) -> Dict[str, List[int]]:
    path = Path(teacher_dir) / SPLIT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist; is {str(teacher_dir)!r} a teacher folder (cgkd teachers)?")
    return read_json(path, "teacher-folder file")


def read_ensemble(teacher_dir: str | Path) -> dict:
    path = Path(teacher_dir) / ENSEMBLE_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist; is {str(teacher_dir)!r} a teacher folder (cgkd teachers)?")
    return read_json(path, "teacher-folder file")


def build_potential(data: CGData, arch: str, preset: Union[str, dict], frames: Optional[Sequence[int]] = None):
    """An untrained ``CGPotential`` for ``data``: architecture ``arch``/``preset``, priors fitted to
    ``frames`` (when ``cgkd.nn`` offers a prior fit) and the energy scale set from their forces.

    Parameters
    ----------
    data : CGData
    arch : str
        Name in ``cgkd.nn.ARCHITECTURES``.
    preset : str or dict
        Preset of that architecture ("small", "large") or a dict of its config fields.
    frames : sequence of int, optional
        Frames the priors and the energy scale are fitted on (default: all).
    """
    from cgkd.nn.base import build_model, energy_scale_from_forces
    from cgkd.nn.potential import CGPotential

    frames = np.arange(data.n_frames) if frames is None else np.unique(np.asarray(frames, dtype=np.int64))
    model = build_model(arch, preset, len(data.type_names))
    priors = _fit_priors(data.subset(frames), model.cutoff)
    pot = CGPotential(model, priors, data.type_names, float(model.cutoff))
    pot.set_energy_scale(energy_scale_from_forces(data.forces[frames]))
    return pot


def _fit_priors(data: CGData, cutoff: float) -> list:
    try:
        from cgkd.nn import prior_fit
    except ImportError:  # priors are optional; without a fit the potential is the network alone
        return []
    return list(prior_fit.fit_priors(data, r_max=cutoff))


def _member_config(config: TrainConfig, index: int) -> TrainConfig:
    return replace(config, seed=int(config.seed) + int(index))


def bootstrap_indices(train: Sequence[int], seed: int, index: int) -> np.ndarray:
    """The bootstrap resample of member ``index``: ``len(train)`` frames drawn with replacement."""
    train = np.asarray(train, dtype=np.int64)
    rng = np.random.default_rng([int(seed), int(index)])
    return train[rng.integers(0, len(train), size=len(train))]


LOCK_FILE = ".lock"
#: Training frames the priors and the energy scale are fitted on when frames are streamed (``stream_chunk``).
PRIOR_FRAMES = 256


class MemberBusyError(CgkdError, RuntimeError):
    """Another live process holds the lock of a member folder."""


class EnsembleError(CgkdError, RuntimeError):
    """One or more teacher members failed as parallel tasks (each one's error is in the message)."""


@contextlib.contextmanager
def member_lock(folder: Path):
    """Hold an exclusive lock on ``folder/.lock`` (released when the block ends or the process dies)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock, as before
        yield
        return
    fh = open(folder / LOCK_FILE, "a+")
    try:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # held by another process; other errors (no flock on this file system) pass on
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            raise MemberBusyError(
                f"{folder} is being trained by another live process (pid {holder}); wait for it or stop it, then rerun"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        yield
    finally:
        fh.close()


def train_member(cg_path: str, teacher_dir: str, index: int, arch: str, preset: Union[str, dict], config: dict,
                 bootstrap: bool = True, stream_chunk: int = 0) -> dict:
    """Train (or resume, or skip if finished) member ``index``; returns its ``done.json`` content.

    A top-level function so that a process pool can run it.
    """
    out = member_dir(teacher_dir, index)
    done = out / DONE_FILE
    if done.is_file():
        return json.loads(done.read_text())
    from cgkd.train import distributed

    # under torchrun every rank trains the same member (one model, DDP): rank 0 holds the lock and writes, and every
    # rank learns whether it got it (a rank left waiting at a barrier would hang until the group's timeout)
    with contextlib.ExitStack() as held:
        busy = None
        if distributed.is_main():
            try:
                held.enter_context(member_lock(out))
            except MemberBusyError as exc:
                busy = str(exc)
        busy = distributed.broadcast_object(busy)
        if busy:
            raise MemberBusyError(busy)
        if done.is_file():  # finished by another process while this one waited
            return json.loads(done.read_text())
        return _train_member(cg_path, teacher_dir, index, arch, preset, config, bootstrap, out, done, stream_chunk)


def _train_member(cg_path, teacher_dir, index, arch, preset, config, bootstrap, out: Path, done: Path,
                  stream_chunk: int = 0) -> dict:
    cfg = _member_config(from_dict(TrainConfig, config), index)
    split = read_split(teacher_dir)
    train = bootstrap_indices(split["train"], int(from_dict(TrainConfig, config).seed), index) if bootstrap else np.asarray(split["train"])
    if stream_chunk:  # frames read from the file batch by batch; priors fitted on PRIOR_FRAMES of the training frames
        from cgkd.train.frames import StreamingFrameSet

        pick = np.unique(np.asarray(split["train"], dtype=np.int64))
        pick = pick[np.unique(np.round(np.linspace(0, len(pick) - 1, min(len(pick), PRIOR_FRAMES))).astype(np.int64))]
        with seeded(cfg.seed):
            pot = build_potential(read_cg(cg_path, frames=pick), arch, preset)
        frames = StreamingFrameSet(cg_path, chunk_frames=int(stream_chunk), dtype=cfg.torch_dtype)
    else:
        data = read_cg(cg_path)
        with seeded(cfg.seed):
            pot = build_potential(data, arch, preset, split["train"])
        frames = frameset_from_cg(data, dtype=cfg.torch_dtype)
    res = fit(pot, frames, frames, cfg, out, train_indices=train, val_indices=split["val"], extra={"member": index})
    from cgkd.nn.potential import save_potential

    provenance = {
        "role": "teacher",
        "member": index,
        "seed": cfg.seed,
        "bootstrap": bool(bootstrap),
        "cg_path": str(cg_path),
        "best_epoch": res.best_epoch,
        "best_val": res.best_val,
    }
    from cgkd.train import distributed

    info = {**provenance, "epochs_run": res.epochs_run, "stopped_early": res.stopped_early, "seconds_per_epoch": res.seconds_per_epoch}
    if distributed.is_main():
        save_potential(out / MODEL_FILE, res.model.cpu(), extra=provenance)
        write_text(done, json.dumps(info, indent=1))
    distributed.barrier()
    return info


def member_task(cg_path, teacher_dir, index, arch, preset, config, bootstrap, threads: int = 1,
                stream_chunk: int = 0) -> dict:
    """:func:`train_member` with ``threads`` torch threads: one task of a process pool or a Dask cluster."""
    with num_threads(threads):
        return train_member(cg_path, teacher_dir, index, arch, preset, config, bootstrap, stream_chunk)


def train_teachers(
    cg_path: str | Path,
    out_dir: str | Path,
    n_members: int = 8,
    arch: str = "hipnn",
    preset: Union[str, dict] = "small",
    config: Optional[TrainConfig] = None,
    members: Optional[Sequence[int]] = None,
    n_workers: int = 1,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    bootstrap: bool = True,
    executor=None,
    stream_chunk: int = 0,
) -> List[dict]:
    """Train an ensemble of ``n_members`` teachers on the mapped forces of ``cg_path``.

    Parameters
    ----------
    cg_path : path
        CG dataset (``cgkd.data.cg_h5``).
    out_dir : path
        Teacher folder (layout in the module docstring); rerunning resumes unfinished members
        and skips finished ones.
    n_members : int
    arch, preset : str
        Architecture name in ``cgkd.nn.ARCHITECTURES`` and its preset.
    config : TrainConfig, optional
        Training settings; member k uses seed ``config.seed + k``. Default ``TrainConfig()``.
    members : sequence of int, optional
        Only these member indices (e.g. one per cluster job); default all.
    n_workers : int
        Members trained at the same time in a local process pool (each with 1 torch thread).
        The pool starts processes with "spawn": a script calling this with ``n_workers > 1``
        needs the ``if __name__ == "__main__":`` guard (the ``cgkd`` command has it).
    val_fraction, test_fraction : float
        Held-out blocks of frames (see :func:`make_split`), fixed at the first call.
    bootstrap : bool
        Train each member on a bootstrap resample of the training frames.
    executor : cgkd.parallel.ExecutorConfig or dict, optional
        Where the members run (a Dask scheduler, a SLURM/PBS cluster); overrides ``n_workers``. Each member
        is one task; a worker lost mid-training costs only its member's unfinished epoch.
    stream_chunk : int
        0 (default): hold the CG frames in memory. K > 0: read them from ``cg_path`` batch by batch, shuffled by
        chunks of K frames (:class:`cgkd.train.frames.StreamingFrameSet`), with the priors and the energy scale
        fitted on up to ``PRIOR_FRAMES`` training frames: for datasets larger than memory.

    Returns
    -------
    list of dict
        The ``done.json`` content of each requested member.
    """
    cg_path, out_dir = Path(cg_path), Path(out_dir)
    if not cg_path.is_file():
        raise FileNotFoundError(f"cg_path {str(cg_path)!r} does not exist")
    if n_members < 1:
        raise ValueError(f"n_members must be >= 1, got {n_members}")
    if n_workers < 1:
        raise ValueError(f"n_workers must be >= 1, got {n_workers}")
    from cgkd.nn import ARCHITECTURES

    ARCHITECTURES.get(arch)  # unknown names fail here with the list of available ones
    config = config or TrainConfig()
    members = list(range(n_members)) if members is None else [int(m) for m in members]
    bad = [m for m in members if not 0 <= m < n_members]
    if bad:
        raise ValueError(f"members must lie in 0..{n_members - 1}, got {bad}")
    out_dir.mkdir(parents=True, exist_ok=True)
    digest = content_digest(cg_path)
    meta = {
        "cg_path": str(cg_path.resolve()),
        "cg_digest": digest,
        "n_members": int(n_members),
        "arch": arch,
        "preset": preset,
        "bootstrap": bool(bootstrap),
        "config": to_dict(config),
    }
    if isinstance(stream_chunk, bool) or not isinstance(stream_chunk, (int, np.integer)) or stream_chunk < 0:
        raise ValueError(f"stream_chunk must be an integer >= 0 (0: frames in memory), got {stream_chunk!r}")
    if stream_chunk:
        meta["stream_chunk"] = int(stream_chunk)
    ens_path = out_dir / ENSEMBLE_FILE
    if ens_path.is_file():
        old = json.loads(ens_path.read_text())
        if old.get("cg_digest", digest) != digest:
            raise ProvenanceError(
                f"{out_dir} holds teachers trained on other CG data ({old['cg_path']}, {old['cg_digest'][:19]}...) "
                f"than {cg_path} ({digest[:19]}...); use another output folder for these data")
        for key in ("n_members", "arch", "preset", "bootstrap"):
            if old[key] != meta[key]:
                raise ValueError(f"{out_dir} holds an ensemble with {key}={old[key]!r}, but {key}={meta[key]!r} was asked for")
        meta = {**old, "config": meta["config"], "cg_digest": digest}
    write_text(ens_path, json.dumps(meta, indent=1))
    if not (out_dir / SPLIT_FILE).is_file():
        split = make_split(cg_n_frames(cg_path), val_fraction, test_fraction)
        write_text(out_dir / SPLIT_FILE, json.dumps(split))
    cfg = to_dict(config)
    from cgkd.parallel import ExecutorConfig, TaskError, as_executor, run_tasks

    ex = as_executor(executor) if executor is not None else ExecutorConfig(workers=n_workers)
    from cgkd.train import distributed

    if distributed.active() and not ex.in_process:
        raise ValueError("under torchrun each member is one model trained on all ranks: use one worker and the local "
                         f"executor (got backend={ex.backend!r}, workers={ex.workers})")
    if ex.in_process:
        return [train_member(str(cg_path), str(out_dir), m, arch, preset, cfg, bootstrap, int(stream_chunk))
                for m in members]
    jobs = [(str(cg_path), str(out_dir), m, arch, preset, cfg, bootstrap, ex.threads, int(stream_chunk))
            for m in members]
    try:
        return run_tasks(member_task, jobs, ex, labels=[f"member {m}" for m in members], desc="teacher members",
                         show_progress=bool(config.progress))
    except TaskError as exc:
        raise EnsembleError(str(exc)) from None


def teachers_digest(teacher_dir: str | Path) -> str:
    """``"sha256:<hex>"`` over the model files of every member (all must be finished)."""
    import hashlib

    from cgkd.io.provenance import file_digest

    meta = read_ensemble(teacher_dir)
    h = hashlib.sha256()
    for m in range(meta["n_members"]):
        path = member_dir(teacher_dir, m) / MODEL_FILE
        if not path.is_file():
            raise ValueError(f"teacher member {m} in {teacher_dir} is not finished; rerun cgkd teachers")
        h.update(file_digest(path).encode())
    return "sha256:" + h.hexdigest()


def load_teachers(teacher_dir: str | Path, members: Optional[Sequence[int]] = None) -> list:
    """The finished members' potentials (eval mode), in member order."""
    import cgkd.nn.priors  # noqa: F401  (registers the prior kinds that load_potential looks up)
    from cgkd.nn.potential import load_potential

    meta = read_ensemble(teacher_dir)
    members = range(meta["n_members"]) if members is None else members
    out = []
    missing = [m for m in members if not (member_dir(teacher_dir, m) / DONE_FILE).is_file()]
    if missing:
        raise ValueError(f"teacher member(s) {missing} in {teacher_dir} are not finished; rerun cgkd teachers")
    for m in members:
        out.append(load_potential(member_dir(teacher_dir, m) / MODEL_FILE))
    return out


__all__ = [
    "train_teachers",
    "train_member",
    "build_potential",
    "bootstrap_indices",
    "make_split",
    "read_split",
    "read_ensemble",
    "load_teachers",
    "teachers_digest",
    "member_lock",
    "MemberBusyError",
    "member_dir",
]
