"""Synthetic configurations for the student (issue 11, deliver 5): sample with CG MD, select where the teachers
disagree, label with the ensemble, retrain, repeat.

The teacher ensemble is cheap next to AA MD, so it can label as many configurations as the student needs. One
round of :func:`synthetic_rounds`:

1. **sample**: CG MD from the training frames of the previous round's student (so that the new frames are where
   *it* goes; ``sampler="student"``, the default) or of the ensemble itself (``sampler="ensemble"``,
   ``cgkd.export.export_ensemble``); or, with ``sampler="frames"``, the not yet chosen configurations of a given
   set (e.g. AA frames with positions but no forces, or the control arm: more configurations of the AA run);
2. **select** ``per_round`` of the sampled frames (:func:`select_frames`): a share ``1 - coverage`` by the
   ensemble's disagreement (largest mean ``force_std`` per bead) and the rest evenly spaced in time over the
   remaining frames (coverage);
3. **label** them with the ensemble mean forces;
4. **retrain** the student from scratch on the AA training frames plus every frame selected so far (all labelled by
   the ensemble mean), validated on the AA validation frames.

Each round records the force RMSE against the held-out mapped forces, and the ensemble's mean disagreement on the
configurations the round's *sampling* model visited (the quantity the loop should drive down: the student's own MD
staying where the teachers agree). Round 0 is the student trained on the AA frames alone, the reference. Every
round is resumable (``round_XX/round.json`` is written last).

With ``stop_ratio`` the loop ends at the first round whose student's own MD survives every replica and on which
the ensemble disagrees no more than ``stop_ratio`` times as much as on the held-out AA frames (the "iterate until
its own MD stays where the teachers agree" of the issue); otherwise it runs every round. ``OUT/rounds.json`` lists
the rounds, and ``OUT/student.pt`` is the last round's exported student, ready for ``cgkd simulate``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import numpy as np

from cgkd import keys
from cgkd.data.cg_h5 import CGData, read_cg
from cgkd.io.atomic import atomic_path, write_text
from cgkd.kd.labels import ensemble_predictions, force_rmse, predict
from cgkd.kd.teachers import build_potential, read_split
from cgkd.train.checkpoint import seeded
from cgkd.train.frames import FrameSet
from cgkd.train.trainer import TrainConfig, fit

ROUND_FILE = "round.json"
SUMMARY_FILE = "rounds.json"


def converged(record: dict, stop_ratio: Optional[float]) -> bool:
    """Whether a round's record meets the stopping rule: every replica of its own MD survived, and the ensemble's
    mean disagreement on that MD is at most ``stop_ratio`` times its disagreement on the held-out AA frames."""
    if stop_ratio is None:
        return False
    done, total = (int(x) for x in str(record["own_md_survived"]).split("/"))
    return done == total and record["own_md_mean_force_std"] <= stop_ratio * record["aa_mean_force_std"]


def select_frames(force_std: np.ndarray, k: int, coverage: float = 0.5) -> np.ndarray:
    """Indices of ``k`` frames: ``round(k * (1 - coverage))`` with the largest mean disagreement, the rest spread
    evenly in time over the frames not yet chosen.

    Parameters
    ----------
    force_std : np.ndarray, shape=(n_frames, n_beads), kJ/mol/nm
        The ensemble's spread per bead (``labels/force_std``).
    k : int
    coverage : float in [0, 1]
    """
    std = np.asarray(force_std, dtype=np.float64)
    if std.ndim != 2:
        raise ValueError(f"force_std must have shape (n_frames, n_beads), got {std.shape}")
    n = std.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in 1..{n} (the sampled frames), got {k!r}")
    if not 0.0 <= coverage <= 1.0:
        raise ValueError(f"coverage must lie in [0, 1], got {coverage}")
    n_top = int(round(k * (1.0 - coverage)))
    top = np.argsort(-std.mean(axis=1), kind="stable")[:n_top]
    rest = np.setdiff1d(np.arange(n), top)
    spread = rest[np.unique(np.round(np.linspace(0, len(rest) - 1, k - n_top)).astype(np.int64))] if k > n_top else []
    return np.sort(np.concatenate([top, np.asarray(spread, dtype=np.int64)]))


def _md_frames(run_dir: Path, data: CGData, skip_ps: float) -> CGData:
    """The frames of a finished CG MD folder (every replica, after ``skip_ps``) as CGData with zero forces."""
    from cgkd.analysis import load_frames

    pos, box = [], []
    for seg in load_frames(run_dir, type_names=data.type_names):
        keep = np.arange(seg.n_frames)[np.arange(seg.n_frames) * seg.dt >= skip_ps]
        pos.append(seg.positions[keep])
        box.append(seg.box[keep] if seg.box is not None else None)
    p = np.concatenate(pos).astype(np.float32)
    b = None if box[0] is None else np.concatenate(box).astype(np.float32)
    return CGData(positions=p, forces=np.zeros_like(p), box=b, topology=data.topology, temperature=data.temperature)


def _train(data: CGData, labels: np.ndarray, train, val, arch, preset, config: TrainConfig, out: Path, prior_frames):
    """A fresh student on ``train`` of ``data``; its priors and energy scale come from ``prior_frames`` only (the AA
    training frames: the student's own MD may visit contacts the AA liquid never makes, and a repulsion prior fitted
    on them would let them in)."""
    frames = FrameSet(positions=data.positions, types=np.array(data.types), box=data.box,
                      targets={keys.FORCES: labels}).to(config.torch_dtype)
    with seeded(config.seed):
        pot = build_potential(data, arch, preset, prior_frames)
    return fit(pot, frames, frames, config, out, train_indices=train, val_indices=val, extra={"role": "student"}).model


def _combined(data: CGData, keep: np.ndarray, aa_labels: np.ndarray, extra: dict):
    """The AA frames ``keep`` followed by the synthetic frames, and their ensemble-mean labels."""
    aa = data.subset(keep)
    pos = np.concatenate([aa.positions, extra["positions"]])
    lab = np.concatenate([aa_labels[keep], extra["labels"]])
    box = None if aa.box is None else np.concatenate([aa.box, extra["box"]])
    return CGData(positions=pos, forces=lab, box=box, topology=data.topology, temperature=data.temperature), lab


def synthetic_rounds(cg_path, teacher_dir, out_dir, *, rounds: int = 4, per_round: int = 32, coverage: float = 0.5,
                     md_ps: float = 20.0, replicas: int = 2, skip_ps: float = 2.0, sampler: str = "student",
                     frames: Union[None, str, Path, CGData] = None,
                     arch: str = "hipnn", preset: Union[str, dict] = "small", config: Optional[TrainConfig] = None,
                     seed: int = 0, stop_ratio: Optional[float] = None, timestep: Optional[float] = None,
                     progress: bool = False) -> list:
    """Rounds of sampling, selection by disagreement, ensemble labelling and retraining (module docstring).

    Parameters
    ----------
    cg_path : path
        The CG dataset the teachers were trained on (its split is the teacher folder's).
    teacher_dir : path
        A finished teacher ensemble (``cgkd teachers``).
    out_dir : path
        ``round_00`` (the AA-only student), ``round_01``, ...: each with ``model.pt``, ``student.pt`` (exported),
        the sampling MD, ``synthetic.npz`` (every synthetic frame so far with its labels) and ``round.json``.
    rounds : int
        Rounds after round 0 (default 4: on water, docs/benchmarks.md 5f, the force error converged in 3-4).
    per_round : int
        Synthetic frames added per round.
    coverage : float
        Share of them chosen for coverage rather than disagreement (:func:`select_frames`).
    md_ps, replicas, skip_ps : float, int, float
        MD per round: replicas x ps at the default time step from the training frames; the first ``skip_ps`` of each
        replica dropped.
    sampler : {"student", "ensemble", "frames"}
        Which model's MD supplies the candidates of the next round: the round's own student (the default: the loop
        then tests whether the student's MD stays where the teachers agree) or the teacher ensemble. ``"frames"``: the
        configurations of ``frames`` not chosen in an earlier round (their forces are not used).
    frames : path or CGData, optional
        The candidate configurations of ``sampler="frames"`` (same beads as ``cg_path``).
    config : TrainConfig, optional
        The student's training (the same every round; a fresh model each round).
    seed : int
        Seed of the sampling MD (round ``r`` uses ``seed + r``).
    stop_ratio : float, optional
        Stop after the first round that meets :func:`converged` (at least 1; e.g. 1.1). None (default): run every
        round.
    timestep : float, optional
        Time step (ps) of the sampling MD; default the student's (:func:`cgkd.openmm.md.default_timestep`).
    progress : bool
        Progress of each round's MD and one status line per round on stderr.

    Returns
    -------
    list of dict
        One record per round (also ``round_XX/round.json``): the number of synthetic frames, the force RMSE of
        the student against the held-out mapped forces and ensemble labels, and the ensemble's mean disagreement
        (``force_std``) and the survival of the round's student's own MD.
    """
    from cgkd.export.artefact import export_ensemble, export_model
    from cgkd.nn.potential import save_potential
    from cgkd.openmm.md import model_timestep, run_cg_md

    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ValueError(f"rounds must be an integer >= 0, got {rounds!r}")
    if not 0 <= skip_ps < md_ps:
        raise ValueError(f"skip_ps must lie in [0, md_ps) = [0, {md_ps}) ps, got {skip_ps}")
    if sampler not in ("student", "ensemble", "frames"):
        raise ValueError(f"sampler must be 'student', 'ensemble' or 'frames', got {sampler!r}")
    if (frames is None) != (sampler != "frames"):
        raise ValueError(f"frames must be given exactly when sampler='frames' (sampler={sampler!r}, frames "
                         f"{'given' if frames is not None else 'not given'})")
    if isinstance(per_round, bool) or not isinstance(per_round, int) or per_round < 1:
        raise ValueError(f"per_round must be an integer >= 1, got {per_round!r}")
    if stop_ratio is not None and (isinstance(stop_ratio, bool) or not isinstance(stop_ratio, (int, float))
                                   or not stop_ratio >= 1.0):
        raise ValueError(f"stop_ratio must be None or a number >= 1 (own-MD disagreement over AA disagreement), "
                         f"got {stop_ratio!r}")
    if timestep is not None and (isinstance(timestep, bool) or not isinstance(timestep, (int, float))
                                 or not timestep > 0):
        raise ValueError(f"timestep must be None or a positive number (ps), got {timestep!r}")
    from cgkd.progress import note

    out = Path(out_dir)
    cfg = config or TrainConfig(max_epochs=30)
    data = read_cg(cg_path)
    split = read_split(teacher_dir)
    train, val, test = (np.asarray(split[k], dtype=np.int64) for k in ("train", "val", "test"))
    if len(test) == 0:
        raise ValueError(f"the split of {teacher_dir} has no test frames to score against")
    if frames is not None:
        frames = read_cg(frames) if not isinstance(frames, CGData) else frames
        if frames.type_names != data.type_names or frames.n_beads != data.n_beads:
            raise ValueError(f"frames has {frames.n_beads} beads of types {frames.type_names}, but {cg_path} has "
                             f"{data.n_beads} of types {data.type_names}")
    aa_pred = ensemble_predictions(data, teacher_dir)  # once: labels of the AA frames, disagreement on the test ones
    aa_labels = aa_pred[keys.MEAN_FORCES]
    aa_std = float(np.mean(aa_pred[keys.FORCE_STD][test]))
    keep = np.concatenate([train, val])
    empty = {"positions": np.zeros((0,) + data.positions.shape[1:], np.float32),
             "labels": np.zeros((0,) + data.positions.shape[1:], np.float32), "box": np.zeros((0, 3, 3), np.float32),
             "source_index": np.zeros(0, np.int64)}  # sampler "frames": the chosen indices of ``frames``
    extra = empty
    candidates = None  # CGData of the previous round's sampling MD (or of the unchosen ``frames``)
    candidate_index = np.zeros(0, np.int64)
    frames_pred = None
    records = []
    for r in range(rounds + 1):
        folder = out / f"round_{r:02d}"
        done = folder / ROUND_FILE
        if r > 0 and not done.is_file():  # select from the previous round's MD, label with the ensemble
            if candidates.n_frames == 0:
                raise ValueError(f"round {r}: the sampling MD of round {r - 1} left no frames after skip_ps={skip_ps} "
                                 "(its replicas failed early?); see its md folder")
            if sampler == "frames":  # the ensemble's predictions on the whole set, once, indexed per round
                if frames_pred is None:
                    frames_pred = ensemble_predictions(frames, teacher_dir)
                pred = {k: v[candidate_index] for k, v in frames_pred.items() if k in (keys.FORCE_STD, keys.MEAN_FORCES)}
            else:
                pred = ensemble_predictions(candidates, teacher_dir)
            pick = select_frames(pred[keys.FORCE_STD], min(per_round, candidates.n_frames), coverage)
            new = candidates.subset(pick)
            taken = candidate_index[pick] if sampler == "frames" else np.zeros(0, np.int64)
            extra = {"source_index": np.concatenate([extra["source_index"], taken]),
                     "positions": np.concatenate([extra["positions"], new.positions]),
                     "labels": np.concatenate([extra["labels"], pred[keys.MEAN_FORCES][pick].astype(np.float32)]),
                     "box": np.concatenate([extra["box"], new.box if new.box is not None else
                                            np.zeros((len(pick), 3, 3), np.float32)])}
        if done.is_file():
            rec = json.loads(done.read_text())
            with np.load(folder / "synthetic.npz") as z:
                extra = {k: z[k] for k in ("positions", "labels", "box")}
                extra["source_index"] = z["source_index"] if "source_index" in z else np.zeros(0, np.int64)
        else:
            folder.mkdir(parents=True, exist_ok=True)
            pool, labels = _combined(data, keep, aa_labels, extra)
            tr = np.concatenate([np.arange(len(train)), np.arange(len(keep), pool.n_frames)])
            va = np.arange(len(train), len(keep))
            model = _train(pool, labels, tr, va, arch, preset, cfg, folder / "train", np.arange(len(train)))
            save_potential(folder / "model.pt", model.cpu(), extra={"role": "student", "round": r})
            f = predict(model, data.subset(test))[keys.FORCE]
            export_model(folder / "model.pt", cg_path, folder / "student.pt")
            dt = timestep or model_timestep(folder / "student.pt")
            own = run_cg_md(folder / "student.pt", data.subset(train), folder / "md", n_replicas=replicas,
                            steps=_steps(md_ps, dt), report_interval=_steps(0.25, dt), timestep=dt,
                            progress=progress, seed=seed + r)
            own_frames = _md_frames(folder / "md", data, skip_ps)
            rec = {"round": r, "n_synthetic": int(len(extra["positions"])),
                   "force_rmse_vs_mapped": force_rmse(f, data.forces[test]),
                   "force_rmse_vs_ensemble": force_rmse(f, aa_labels[test]),
                   "own_md_survived": f"{own['survived']}/{own['n_replicas']}",
                   "own_md_mean_force_std": float(ensemble_predictions(own_frames, teacher_dir)[keys.FORCE_STD].mean()),
                   "aa_mean_force_std": aa_std}
            with atomic_path(folder / "synthetic.npz", suffix=".npz") as tmp:
                np.savez(tmp, **extra)
            write_text(done, json.dumps(rec, indent=1))
        records.append(rec)
        stop = converged(rec, stop_ratio)
        if progress:
            note(f"synthetic round {r}: {rec['n_synthetic']} synthetic frames, force RMSE vs mapped "
                 f"{rec['force_rmse_vs_mapped']:.1f} kJ/mol/nm, ensemble disagreement on its own MD "
                 f"{rec['own_md_mean_force_std']:.1f} (held-out AA {rec['aa_mean_force_std']:.1f}), own MD survived "
                 f"{rec['own_md_survived']}" + ("; converged" if stop else ""))
        if stop:
            break
        if r < rounds:  # candidates of the next round
            if sampler == "student":
                candidates = _md_frames(folder / "md", data, skip_ps)
            elif sampler == "frames":
                candidate_index = np.setdiff1d(np.arange(frames.n_frames), extra["source_index"])
                if len(candidate_index) == 0:
                    raise ValueError(f"round {r + 1}: every one of the {frames.n_frames} configurations of frames was "
                                     "chosen in an earlier round; give more frames or fewer rounds")
                candidates = frames.subset(candidate_index)
            else:
                art = out / "ensemble.pt"
                if not art.is_file():
                    export_ensemble(teacher_dir, cg_path, art)
                dt = timestep or model_timestep(art)
                run_cg_md(art, data.subset(train), out / f"ensemble_md_{r:02d}", n_replicas=replicas,
                          steps=_steps(md_ps, dt), report_interval=_steps(0.25, dt), timestep=dt, progress=progress,
                          seed=seed + 100 + r)
                candidates = _md_frames(out / f"ensemble_md_{r:02d}", data, skip_ps)
    _summarise(out, records, stop_ratio)
    return records


def _steps(ps: float, dt: float) -> int:
    """MD steps of ``dt`` ps covering ``ps`` ps (at least 1)."""
    return max(1, int(round(ps / dt)))


def _summarise(out: Path, records: list, stop_ratio: Optional[float]) -> None:
    """``OUT/rounds.json`` and ``OUT/student.pt`` (a copy of the last round's exported student)."""
    import shutil

    last = records[-1]["round"]
    with atomic_path(out / "student.pt", suffix=".pt") as tmp:
        shutil.copyfile(out / f"round_{last:02d}" / "student.pt", tmp)
    write_text(out / SUMMARY_FILE, json.dumps({
        "rounds": records, "final_round": last, "stop_ratio": stop_ratio,
        "converged": converged(records[-1], stop_ratio), "student": "student.pt"}, indent=1))


__all__ = ["ROUND_FILE", "SUMMARY_FILE", "converged", "select_frames", "synthetic_rounds"]
