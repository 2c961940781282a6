"""PFD: a pretrained universal model, fitted to a small accurate set, distilled to a fast local model.

Wang et al.'s kit has three steps: start from a pre-trained universal model, fine-tune it on a few first-principles
labels, and distil it into a small model on synthetic MD data labelled by the fine-tuned model, sampling and
checking convergence on a held-out set in rounds. Fine-tuning a universal model's own weights is out of reach on
two CPU cores, so the fitted teacher here is the documented alternative: the universal model plus a small learned
correction (a cgkd model trained on the residual ``accurate - universal`` of the few accurate frames, delta
learning). Everything else follows the paper:

1. :func:`fit_correction`: label the accurate frames with the universal model, train the correction on the residual;
2. ``teacher = universal + correction`` (:class:`TeacherLabeler`, an ASE ``SumCalculator``);
3. :func:`run_pfd`: rounds of synthetic MD with the teacher (``cgkd.aa.labelers.sample_md``, labelled by it), a
   student trained on all synthetic frames so far, and its error on the held-out accurate frames; it stops when
   a round improves the held-out force error by less than ``tol`` (relative) or after ``max_rounds``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from cgkd.aa.labelers import Labeler, get_labeler, sample_md
from cgkd.io.atomic import write_text
from cgkd.io.atoms import AtomsData, concatenate, read_atoms, write_atoms
from cgkd.kd.atomistic import evaluate_atomistic, train_atomistic
from cgkd.train.trainer import TrainConfig


def fit_correction(universal: Labeler, accurate_path, out_dir, *, preset: Union[str, dict] = "small",
                   cutoff: float = 0.5, config: Optional[TrainConfig] = None) -> dict:
    """Train a correction model on ``accurate - universal`` energies and forces of the accurate frames.

    Returns the correction run's summary (``cgkd.kd.atomistic.train_atomistic``); the residual set is
    ``out_dir/residual.xyz`` and the universal labels are cached per configuration in ``out_dir/cache``.
    """
    out = Path(out_dir)
    residual_path = out / "residual.xyz"
    if not residual_path.exists():
        acc = read_atoms(accurate_path)
        uni = universal.label(acc, cache=out / "cache", show_progress=True)
        residual = AtomsData(numbers=acc.numbers, positions=acc.positions, offsets=acc.offsets, cells=acc.cells,
                             energy=acc.energy - uni.energy, forces=acc.forces - uni.forces,
                             info=[dict(i, residual_of=universal.name) for i in acc.info])
        write_atoms(residual_path, residual)
    return train_atomistic(residual_path, out / "correction", preset=preset, cutoff=cutoff,
                           config=config or TrainConfig(max_epochs=200, batch_size=4), val_fraction=0.2,
                           test_fraction=0.1)


class ModelLabeler(Labeler):
    """A trained cgkd model file (``model.pt``) as a labeler: the base of a correction (Delta-learning) model."""

    def __init__(self, model: str | Path):
        self.model = str(model)
        self.name = f"model:{Path(self.model).parent.name}"

    def calculator(self):
        from cgkd.nn.calculator import CgkdCalculator

        return CgkdCalculator(self.model)

    def provenance(self) -> dict:
        from cgkd.io.provenance import file_digest

        return {"labeler": self.name, "model": self.model, "digest": file_digest(self.model)}


class TeacherLabeler(Labeler):
    """A universal model plus an optional cgkd correction model, as one labeler (an ASE ``SumCalculator``)."""

    def __init__(self, universal: Labeler, correction: Optional[str | Path] = None):
        self.universal = universal
        self.correction = None if correction is None else str(correction)
        self.name = f"{universal.name}+correction" if correction else universal.name

    def calculator(self):
        if self.correction is None:
            return self.universal.calculator()
        from ase.calculators.mixing import SumCalculator

        from cgkd.nn.calculator import CgkdCalculator

        return SumCalculator([self.universal.calculator(), CgkdCalculator(self.correction)])

    def provenance(self) -> dict:
        return {"labeler": self.name, "universal": self.universal.provenance(), "correction": self.correction}


def teacher_errors(teacher: Labeler, data: AtomsData, cache=None) -> dict:
    """Force RMSE (kJ/mol/nm and eV/A) and energy-per-atom RMSE after removing the mean offset, of a labeler."""
    from cgkd import units
    from cgkd.io.atoms import EV_PER_A_TO_KJ_PER_MOL_NM

    lab = teacher.label(data, cache=cache, show_progress=False)
    df = lab.forces - data.forces
    de = (lab.energy - data.energy) / data.n_atoms
    de_centred = de - de.mean()
    f = float(np.sqrt(np.mean(df**2)))
    return {"force_rmse": f, "force_rmse_eV_per_A": f / EV_PER_A_TO_KJ_PER_MOL_NM,
            "energy_offset_per_atom": float(de.mean()),
            "energy_rmse_meV_per_atom_after_offset": 1e3 * float(np.sqrt(np.mean(de_centred**2))) / units.EV_TO_KJ_PER_MOL}


def run_pfd(teacher: Labeler, starts: Sequence, heldout_path, out_dir, *, temperatures: Sequence[float],
            strains: Sequence[float] = (1.0,), frames_per_round: int = 10, interval: int = 10, max_rounds: int = 3,
            tol: float = 0.02, preset: Union[str, dict] = "small", cutoff: float = 0.5,
            config: Optional[TrainConfig] = None, seed: int = 0) -> dict:
    """Rounds of synthetic MD with ``teacher`` and distillation, checked on the held-out accurate frames.

    Parameters
    ----------
    teacher : Labeler
        The fitted teacher (:class:`TeacherLabeler`).
    starts : sequence of ase.Atoms
        Start structures of the synthetic MD (each round continues with a new seed).
    heldout_path : path
        Accurately labelled frames the student is scored on (never trained on).
    frames_per_round : int
        Frames kept per MD run (one run per start, temperature and strain) in each round.
    max_rounds, tol : stop after ``max_rounds`` or when the held-out force RMSE improves by less than ``tol``.

    Returns
    -------
    dict
        Per round: synthetic frames so far, the student's held-out errors; and the final student model file.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    heldout = read_atoms(heldout_path)
    rounds, best = [], None
    sets = []
    for k in range(max_rounds):
        part = out / f"synthetic_round{k}.xyz"
        if not part.exists():
            data = concatenate([sample_md(teacher, s, temperatures=temperatures, strains=strains,
                                          frames_per_run=frames_per_round, interval=interval,
                                          seed=seed + 1000 * k + 100 * j, equilibration=interval)
                                for j, s in enumerate(starts)])
            write_atoms(part, data)
        sets.append(read_atoms(part))
        pool = out / f"synthetic_upto{k}.xyz"
        if not pool.exists():
            write_atoms(pool, concatenate(sets))
        student = train_atomistic(pool, out / f"student_round{k}", preset=preset, cutoff=cutoff,
                                  config=config or TrainConfig(max_epochs=100), split_seed=seed)
        import cgkd.nn.priors  # noqa: F401
        from cgkd.nn.potential import load_potential

        err = evaluate_atomistic(load_potential(student["model"]), heldout)
        rounds.append({"round": k, "synthetic_frames": int(sum(s.n_structures for s in sets)),
                       "student": student["model"], "heldout": err})
        if best is not None and err["force_rmse"] > (1.0 - tol) * best:
            break
        best = err["force_rmse"] if best is None else min(best, err["force_rmse"])
    summary = {"teacher": teacher.provenance(), "rounds": rounds, "model": rounds[-1]["student"]}
    write_text(out / "pfd.json", json.dumps(summary, indent=1))
    return summary


def universal_labeler(name: str, **kwargs) -> Labeler:
    """A universal-model labeler by name (``chgnet``, ``sevennet``) with its keyword arguments."""
    if name not in ("chgnet", "sevennet"):
        raise ValueError(f"universal model must be chgnet or sevennet, got {name!r}")
    from cgkd.aa.labelers import LABELERS

    return LABELERS.get(name)(**kwargs) if kwargs else get_labeler(name)


__all__ = ["ModelLabeler", "TeacherLabeler", "fit_correction", "run_pfd", "teacher_errors", "universal_labeler"]
