"""Energy targets, understood (issue 11, deliver 4): why per-bead and total energy labels changed students.

Two parts, both on one finished teacher folder and its labelled CG file:

1. **Gauge statistics** of the ensemble's labels (no training): per bead type, the spread between members of
   their mean per-bead energy (a constant no force feels), the per-bead energy variation within a member once
   that constant is removed, the members' disagreement with and without it, and the frame-to-frame variation
   of the total energy per bead.
2. **A sweep of students** on the ensemble-mean forces plus an energy term: per-bead or total energy, gauge
   ``fixed`` (raw labels) or ``free`` (blind to the constants), at several weights, against the force-only
   student, on the same seeds. Scores: force RMSE against the held-out mapped forces and against the labels;
   paired differences to the force-only student with 95 % confidence intervals.

Usage::

    python -m benchmarks.energy_targets --cg runs/reline-quick/labels/cg_labelled.h5 \\
        --teachers runs/reline-quick/teachers --out runs/energy-targets --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from benchmarks.common import save_result
from benchmarks.common import mean_ci

#: (label, energy_target, gauge, weight)
DEFAULT_ARMS: Tuple[Tuple[str, str, str, float], ...] = (
    ("none", "none", "free", 0.0),
    ("node/fixed/1", "node", "fixed", 1.0),
    ("node/free/1", "node", "free", 1.0),
    ("node/free/0.1", "node", "free", 0.1),
    ("node/free/10", "node", "free", 10.0),
    ("total/fixed/1", "total", "fixed", 1.0),
    ("total/free/1", "total", "free", 1.0),
)


def gauge_statistics(cg_path: Path) -> dict:
    """The label statistics of part 1 (kJ/mol)."""
    from cgkd import keys
    from cgkd.data.cg_h5 import read_cg, read_labels

    data = read_cg(cg_path)
    lab = read_labels(cg_path, [keys.MEMBER_NODE_ENERGY, keys.MEMBER_ENERGY])
    ne, me = lab[keys.MEMBER_NODE_ENERGY].astype(np.float64), lab[keys.MEMBER_ENERGY].astype(np.float64)
    types = data.types
    per_type = {}
    centred = ne.copy()
    for k, name in enumerate(data.type_names):
        sel = types == k
        if not sel.any():
            continue
        means = ne[:, :, sel].mean(axis=(1, 2))
        centred[:, :, sel] -= means[:, None, None]
        per_type[name] = {"member_means": means.tolist(), "spread_between_members": float(means.std())}
    dev = centred - centred.mean(0)
    raw = ne - ne.mean(0)
    n = data.n_beads
    return {
        "per_type": per_type,
        "per_bead_variation_within_member": float(np.sqrt(np.mean(centred ** 2))),
        "member_disagreement_raw": float(np.sqrt(np.mean(raw ** 2))),
        "member_disagreement_gauge_removed": float(np.sqrt(np.mean(dev ** 2))),
        "total_energy_per_bead_member_means": (me.mean(1) / n).tolist(),
        "total_energy_per_bead_frame_std": float(np.mean(me.std(1) / n)),
    }


#: The uncertainty-weighting ablation (issue 11, deliver 5): the force-only student with and without each bead's
#: force loss weighted by 1 / (sigma^2 + mean sigma^2) of the ensemble's spread (``--uncertainty-weighting``).
UNCERTAINTY_ARMS: Tuple[Tuple[str, str, str, float], ...] = (
    ("none", "none", "free", 0.0),
    ("uncertainty-weighted", "none", "free", 0.0),
)
ABLATIONS = {"energy": DEFAULT_ARMS, "uncertainty": UNCERTAINTY_ARMS}


def run(cg_path: Path, teacher_dir: Path, out: Path, seeds: Sequence[int], arms=DEFAULT_ARMS, epochs: int = 30,
        preset: str = "small", name: Optional[str] = None) -> dict:
    from cgkd.kd import train_student
    from cgkd.progress import note
    from cgkd.train import TrainConfig
    from cgkd.train.checkpoint import num_threads

    import shutil

    from cgkd.kd import make_labels
    from cgkd.kd.labels import labels_are_current

    out.mkdir(parents=True, exist_ok=True)
    work = out / "cg_labelled.h5"  # labels of these teachers, made here when the given file lacks current ones
    if not work.is_file():
        shutil.copyfile(cg_path, work)
    if not labels_are_current(work, teacher_dir):
        make_labels(work, teacher_dir)
    cg_path = work
    stats = gauge_statistics(cg_path)
    runs: Dict[str, Dict[int, dict]] = {}
    with num_threads(1):
        for seed in seeds:
            for label, target, gauge, weight in arms:
                t0 = time.perf_counter()
                cfg = TrainConfig(max_epochs=epochs, seed=2000 + seed, progress=False)
                info = train_student(cg_path, teacher_dir, out / f"seed{seed}" / label.replace("/", "_"),
                                     force_target="mean", energy_target=target, energy_gauge=gauge,
                                     energy_weight=weight if target != "none" else 1.0, preset=preset, config=cfg,
                                     uncertainty_weighting=label == "uncertainty-weighted")
                runs.setdefault(label, {})[seed] = {"vs_mapped": info["force_rmse_vs_mapped"],
                                                    "vs_label": info["force_rmse_vs_label"]}
                note(f"energy targets: seed {seed} {label}: force RMSE {info['force_rmse_vs_mapped']:.2f} vs mapped "
                     f"({time.perf_counter() - t0:.0f} s)")
    rows = []
    base = runs["none"]
    for label, *_ in arms:
        r = runs[label]
        row = {"arm": label}
        for metric in ("vs_mapped", "vs_label"):
            m, h, k = mean_ci([r[s][metric] for s in seeds])
            d = [r[s][metric] - base[s][metric] for s in seeds]
            dm, dh, _ = mean_ci(d)
            row[metric] = {"mean": m, "ci95": h, "minus_none": dm, "minus_none_ci95": dh,
                           "wins": int(sum(v < 0 for v in d)), "n": k}
        rows.append(row)
    result = {"cg": str(cg_path), "teachers": str(teacher_dir), "seeds": list(seeds), "epochs": epochs,
              "preset": preset, "gauge": stats, "rows": rows, "runs": {k: {str(s): v for s, v in r.items()}
                                                                       for k, r in runs.items()}}
    if name:
        save_result(name, result)
    return result


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cg", required=True, type=Path, help="labelled CG dataset (cgkd distill / make_labels)")
    p.add_argument("--teachers", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--preset", default="small")
    p.add_argument("--name", default="energy_targets")
    p.add_argument("--stats-only", action="store_true", help="only the gauge statistics (no training)")
    p.add_argument("--ablation", choices=sorted(ABLATIONS), default="energy",
                   help="energy: the energy-target sweep (default); uncertainty: force-only students with and without "
                        "uncertainty weighting")
    args = p.parse_args(argv)
    if args.stats_only:
        print(json.dumps(gauge_statistics(args.cg), indent=1))
        return 0
    res = run(args.cg, args.teachers, args.out, args.seeds, arms=ABLATIONS[args.ablation], epochs=args.epochs,
              preset=args.preset, name=args.name)
    for r in res["rows"]:
        v = r["vs_mapped"]
        print(f"{r['arm']:14s} vs mapped {v['mean']:.2f} +- {v['ci95']:.2f}   minus none {v['minus_none']:+.2f} "
              f"+- {v['minus_none_ci95']:.2f} ({v['wins']}/{v['n']} better)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
