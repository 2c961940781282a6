"""Feature KD on xTB molecules (issue 14, "reproduce 003" at CPU scale): n2n, e2n, v2v and output KD.

The claim tested (Ekstroem Kelvinius et al., NeurIPS 2023): distilling a large GNN's hidden features into a small
one closes part of the teacher-student gap (up to 59 % in energy in the paper).

1. **Data**: ethanol and acetaldehyde, Langevin MD on GFN2-xTB (``tblite``) at several temperatures, a labelled
   frame every ``interval`` steps; one extended XYZ file with both molecules (7 and 9 atoms), split once.
2. **Teacher**: PaiNN (``teacher`` width, ``teacher_layers`` interactions). **Student**: a small PaiNN.
3. **Arms**, per seed: ``baseline`` (labels only), ``n2n`` (node features), ``e2n`` (the teacher's edge features
   averaged onto atoms), ``v2v`` (vector features), ``output`` (the teacher's per-atom energies); a learned linear
   projection maps the student's width to the teacher's.
4. **Output**: test force and energy errors, and the fraction of the teacher-student gap each arm closes,
   ``(baseline - arm) / (baseline - teacher)``, mean and 95 % interval over seeds (paired by seed).

Usage::

    OMP_NUM_THREADS=1 python -m benchmarks.feature_kd --preset cpu --out runs/feature-kd
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

ARMS = ("baseline", "n2n", "e2n", "v2v", "output")


@dataclass(frozen=True)
class FeaturePreset:
    molecules: Tuple[str, ...] = ("CH3CH2OH", "CH3CHO")
    temperatures: Tuple[float, ...] = (300.0, 600.0, 1000.0)
    frames_per_run: int = 150
    interval: int = 10
    timestep_fs: float = 0.5
    equilibration: int = 100
    teacher: Tuple[int, int] = (48, 3)  # features, interactions
    student: Tuple[int, int] = (12, 2)
    seeds: Tuple[int, ...] = (0, 1, 2)
    epochs: int = 40
    teacher_epochs: int = 80
    batch_size: int = 16
    lr: float = 2e-3
    energy_weight: float = 1.0
    kd_weight: float = 1.0


PRESETS: Dict[str, FeaturePreset] = {
    "tiny": FeaturePreset(molecules=("CH3CH2OH", "H2O"), temperatures=(500.0,), frames_per_run=8, interval=2,
                          equilibration=2, teacher=(12, 2), student=(6, 1), seeds=(0,), epochs=2, teacher_epochs=2,
                          batch_size=4),
    "cpu": FeaturePreset(),
    "gpu": FeaturePreset(molecules=("CH3CH2OH", "CH3CHO", "C6H6", "CH3COOH"), frames_per_run=2500,
                         teacher=(128, 4), student=(32, 2), seeds=(0, 1, 2, 3, 4), epochs=300, teacher_epochs=500,
                         batch_size=64),
}


def run(preset: FeaturePreset, out: Path, name: str) -> dict:
    from ase.build import molecule

    from cgkd.aa.labelers import get_labeler, sample_md
    from cgkd.io.atoms import concatenate, write_atoms
    from cgkd.kd.atomistic import train_atomistic
    from cgkd.train.trainer import TrainConfig

    out.mkdir(parents=True, exist_ok=True)
    data_path = out / "molecules.xyz"
    t0 = time.perf_counter()
    if not data_path.exists():
        labeler = get_labeler("xtb")
        sets = [sample_md(labeler, molecule(m), temperatures=preset.temperatures, frames_per_run=preset.frames_per_run,
                          interval=preset.interval, timestep_fs=preset.timestep_fs,
                          equilibration=preset.equilibration, seed=1000 * k)
                for k, m in enumerate(preset.molecules)]
        write_atoms(data_path, concatenate(sets))
    label_s = time.perf_counter() - t0

    def cfg(epochs, seed):
        return TrainConfig(max_epochs=epochs, batch_size=preset.batch_size, lr=preset.lr, seed=seed,
                           early_stopping=max(10, epochs // 3), progress=True)

    common = dict(arch="painn", energy_weight=preset.energy_weight, split_seed=0)
    tf, tl = preset.teacher
    teacher = train_atomistic(data_path, out / "teacher", preset={"n_features": tf, "n_interactions": tl},
                              config=cfg(preset.teacher_epochs, 0), **common)
    rows = [dict(arm="teacher", seed=0, **_row(teacher))]
    sf, sl = preset.student
    for seed in preset.seeds:
        for arm in ARMS:
            kw = {} if arm == "baseline" else dict(
                teacher=teacher["model"], kd=["atom_energy" if arm == "output" else arm],
                atom_energy_weight=preset.kd_weight, feature_weight=preset.kd_weight)
            s = train_atomistic(data_path, out / f"{arm}_s{seed}", preset={"n_features": sf, "n_interactions": sl},
                                config=cfg(preset.epochs, seed), **common, **kw)
            rows.append(dict(arm=arm, seed=seed, **_row(s)))
    result = {"machine": machine_info(), "preset": name, "settings": preset.__dict__, "data": str(data_path),
              "label_seconds": label_s, "rows": rows, "gap_closed": gap_closed(rows)}
    save_result(f"feature_kd_{name}", result)
    return result


def _row(summary: dict) -> dict:
    t = summary["test"]
    return {"model": summary["model"], "n_parameters": summary["n_parameters"],
            "force_rmse_eV_per_A": t["force_rmse_eV_per_A"], "energy_rmse_meV_per_atom": t["energy_rmse_meV_per_atom"],
            "best_epoch": summary["best_epoch"], "seconds_per_epoch": summary["seconds_per_epoch"]}


def gap_closed(rows) -> dict:
    """Per arm and quantity: (baseline - arm) / (baseline - teacher), paired by seed; mean, 95 % t half-width."""
    teacher = next(r for r in rows if r["arm"] == "teacher")
    by = {(r["arm"], r["seed"]): r for r in rows}
    out = {}
    for arm in ARMS[1:]:
        for q in ("force_rmse_eV_per_A", "energy_rmse_meV_per_atom"):
            vals = []
            for (a, s), r in by.items():
                if a == arm and ("baseline", s) in by:
                    base = by[("baseline", s)][q]
                    gap = base - teacher[q]
                    vals.append((base - r[q]) / gap if gap != 0 else float("nan"))
            mean, half, n = mean_ci(vals)
            out[f"{arm} {q}"] = {"mean": mean, "ci95": half, "n": n, "values": [float(v) for v in vals]}
    return out


def markdown(result: dict) -> str:
    lines = ["| arm | seeds | parameters | force RMSE (meV/A), mean +- sd | energy RMSE (meV/atom), mean +- sd |",
             "|---|---|---|---|---|"]
    for arm in ("teacher",) + ARMS:
        rs = [r for r in result["rows"] if r["arm"] == arm]
        if not rs:
            continue
        f = np.array([r["force_rmse_eV_per_A"] for r in rs]) * 1e3
        e = np.array([r["energy_rmse_meV_per_atom"] for r in rs])
        sd = (lambda x: x.std(ddof=1) if len(x) > 1 else 0.0)
        lines.append(f"| {arm} | {len(rs)} | {rs[0]['n_parameters']} | {f.mean():.1f} +- {sd(f):.1f} | "
                     f"{e.mean():.2f} +- {sd(e):.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--out", type=Path, default=Path("runs/feature-kd"))
    args = p.parse_args(argv)
    result = run(PRESETS[args.preset], args.out, args.preset)
    print(markdown(result))
    print(json.dumps({k: {kk: v[kk] for kk in ("mean", "ci95", "n")} for k, v in result["gap_closed"].items()},
                     indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
