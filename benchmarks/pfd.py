"""PFD on aluminium with EMT as the stand-in first-principles method (issue 15, deliver 5).

1. **Accurate data**: EMT-labelled MD frames of fcc Al cells (the "first-principles" set): ``n_fit`` frames to fit
   the teacher, ``n_scratch_large`` frames for the larger scratch model, and ``n_test`` held-out frames.
2. **Teacher**: a universal model (CHGNet 0.3.0 by default), zero-shot and with a learned correction fitted on the
   ``n_fit`` frames (``cgkd.kd.pfd.fit_correction``).
3. **Distillation**: rounds of synthetic MD labelled by the fitted teacher, a small HIP-NN student per round,
   scored on the held-out EMT frames (``cgkd.kd.pfd.run_pfd``); one per seed.
4. **Controls**: the same student architecture trained from scratch on N = ``n_fit`` and on 10N EMT frames.
5. **Speed**: ASE MD wall time per atom-step of the teacher (universal + correction) and of the student.

Usage::

    OMP_NUM_THREADS=1 python -m benchmarks.pfd --preset cpu --out runs/pfd
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

import numpy as np

from benchmarks.common import machine_info, mean_ci, save_result


@dataclass(frozen=True)
class PFDPreset:
    universal: str = "chgnet"
    repeats: Tuple[Tuple[int, int, int], ...] = ((2, 2, 2), (2, 2, 3))
    temperatures: Tuple[float, ...] = (400.0, 900.0)
    n_fit: int = 16
    n_test: int = 40
    frames_per_round: int = 15
    interval: int = 5
    max_rounds: int = 3
    student: Tuple[int, int] = (16, 1)  # features, interactions
    seeds: Tuple[int, ...] = (0, 1, 2)
    epochs: int = 80
    md_steps: int = 20


PRESETS: Dict[str, PFDPreset] = {
    "tiny": PFDPreset(repeats=((2, 2, 2),), temperatures=(600.0,), n_fit=4, n_test=3, frames_per_round=3, interval=2,
                      max_rounds=1, student=(4, 1), seeds=(0,), epochs=2, md_steps=2),
    "cpu": PFDPreset(),
    "gpu": PFDPreset(universal="sevennet", repeats=((2, 2, 2), (3, 3, 3), (4, 4, 4)), n_fit=20, n_test=100,
                     frames_per_round=100, max_rounds=5, student=(32, 2), seeds=(0, 1, 2, 3, 4), epochs=200),
}


def _md_us_per_atom_step(calc, atoms, steps: int) -> float:
    import ase.units
    from ase.md.verlet import VelocityVerlet

    a = atoms.copy()
    a.calc = calc
    dyn = VelocityVerlet(a, timestep=2.0 * ase.units.fs)
    dyn.run(1)
    t0 = time.perf_counter()
    dyn.run(steps)
    return 1e6 * (time.perf_counter() - t0) / (steps * len(a))


def run(preset: PFDPreset, out: Path, name: str) -> dict:
    from cgkd.aa.labelers import fcc_cells, get_labeler, sample_md
    from cgkd.io.atoms import concatenate, read_atoms, write_atoms
    from cgkd.kd.atomistic import evaluate_atomistic, train_atomistic
    from cgkd.kd.pfd import TeacherLabeler, fit_correction, run_pfd, teacher_errors, universal_labeler
    from cgkd.nn.calculator import CgkdCalculator
    from cgkd.nn.potential import load_potential
    from cgkd.train.trainer import TrainConfig

    out.mkdir(parents=True, exist_ok=True)
    cells = fcc_cells("Al", preset.repeats)
    n_large = 10 * preset.n_fit
    pool_path = out / "emt_pool.xyz"
    if not pool_path.exists():
        per_run = int(np.ceil((n_large + preset.n_test) / (len(cells) * len(preset.temperatures))))
        write_atoms(pool_path, concatenate([sample_md(get_labeler("emt"), c, temperatures=preset.temperatures,
                                                      frames_per_run=per_run, interval=10, equilibration=20,
                                                      seed=500 + k) for k, c in enumerate(cells)]))
    pool = read_atoms(pool_path)
    order = np.random.default_rng(0).permutation(pool.n_structures)
    test = pool.select(order[:preset.n_test])
    write_atoms(out / "heldout.xyz", test) if not (out / "heldout.xyz").exists() else None
    uni = universal_labeler(preset.universal)
    zero_shot = teacher_errors(uni, test, cache=out / "universal_cache")
    rows, teacher_rows = [], {"zero_shot": zero_shot}
    for seed in preset.seeds:
        fit_ids = order[preset.n_test:][np.random.default_rng(seed).permutation(pool.n_structures - preset.n_test)]
        fit_path, large_path = out / f"fit_s{seed}.xyz", out / f"large_s{seed}.xyz"
        if not fit_path.exists():
            write_atoms(fit_path, pool.select(fit_ids[:preset.n_fit]))
            write_atoms(large_path, pool.select(fit_ids[:n_large]))
        model = {"n_features": preset.student[0], "n_interactions": preset.student[1]}
        cfg = TrainConfig(max_epochs=preset.epochs, batch_size=4, seed=seed, progress=True)
        corr = fit_correction(uni, fit_path, out / f"correction_s{seed}", config=cfg,
                              preset={"n_features": 8, "n_interactions": 1, "n_radial": 6})
        teacher = TeacherLabeler(uni, corr["model"])
        teacher_rows[f"fitted_s{seed}"] = teacher_errors(teacher, test, cache=out / f"teacher_cache_s{seed}")
        pfd = run_pfd(teacher, cells, out / "heldout.xyz", out / f"pfd_s{seed}", temperatures=preset.temperatures,
                      frames_per_round=preset.frames_per_round, interval=preset.interval,
                      max_rounds=preset.max_rounds, preset=model, config=cfg, seed=seed)
        rows.append(dict(arm="pfd_student", seed=seed, frames=pfd["rounds"][-1]["synthetic_frames"],
                         rounds=len(pfd["rounds"]), **_err(pfd["rounds"][-1]["heldout"])))
        for arm, path in (("scratch_N", fit_path), ("scratch_10N", large_path)):
            s = train_atomistic(path, out / f"{arm}_s{seed}", preset=model, config=cfg, val_fraction=0.15,
                                test_fraction=0.05)
            rows.append(dict(arm=arm, seed=seed, frames=read_atoms(path).n_structures,
                             **_err(evaluate_atomistic(load_potential(s["model"]), test))))
        if seed == preset.seeds[0]:
            probe = cells[-1]
            speed = {"teacher_us_per_atom_step": _md_us_per_atom_step(teacher.calculator(), probe, preset.md_steps),
                     "student_us_per_atom_step": _md_us_per_atom_step(CgkdCalculator(pfd["model"]), probe,
                                                                      10 * preset.md_steps),
                     "n_atoms": len(probe)}
    result = {"machine": machine_info(), "preset": name, "settings": preset.__dict__, "teacher": teacher_rows,
              "rows": rows, "speed": speed, "summary": summarise(rows)}
    save_result(f"pfd_{name}", result)
    return result


def _err(e: dict) -> dict:
    return {"force_rmse_eV_per_A": e["force_rmse_eV_per_A"], "energy_rmse_meV_per_atom": e["energy_rmse_meV_per_atom"]}


def summarise(rows) -> dict:
    out = {}
    for arm in ("pfd_student", "scratch_N", "scratch_10N"):
        v = [1e3 * r["force_rmse_eV_per_A"] for r in rows if r["arm"] == arm]
        if v:
            mean, half, n = mean_ci(v)
            out[arm] = {"force_rmse_meV_per_A": mean, "ci95": half, "n": n}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--out", type=Path, default=Path("runs/pfd"))
    args = p.parse_args(argv)
    res = run(PRESETS[args.preset], args.out, args.preset)
    print(json.dumps({"teacher": res["teacher"], "summary": res["summary"], "speed": res["speed"]}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
