"""KD with extra configurations (issue 5, a follow-up test of the KD table's reading).

The KD table's students see exactly the AA frames the teachers were trained on, so distillation can only
denoise labels there. This benchmark gives the ensemble-mean student (force target ``mean``, no energy term)
*extra configurations*: frames of the single-teacher CG MD runs of a finished ``kd_table`` work folder
(first ``--skip`` frames of every replica dropped), labelled with the 8-teacher ensemble mean forces, added to
the AA training frames. Two rows, each for the KD table's seeds:

* ``aug:same-epochs`` -- as many epochs as the KD table's students (more gradient steps);
* ``aug:same-steps`` -- epochs scaled by ``n_train / (n_train + n_extra)`` (the same number of gradient
  steps, i.e. the same training compute, as the KD table's students).

Everything else is the KD table's: architecture, seeds, validation frames, CG MD settings, comparison settings;
the ``control`` and ``student:mean/none`` rows of the KD folder are compared again in the same call as
references. Usage (after ``benchmarks.kd_table --preset cpu``)::

    python -m benchmarks.kd_augmented --preset cpu --run-dir runs/reline-quick --device cpu
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from benchmarks.common import ROOT, check_device, save_result
from benchmarks.kd_table import METRICS, PRESETS, _plot, aggregate, kind_errors, markdown_table, parse_shard, stability
from cgkd.io.atomic import write_text

VARIANTS = ("aug:same-epochs", "aug:same-steps")
REFERENCES = ("control", "student:mean/none")


def _folder(label: str) -> str:
    return label.replace(":", "_").replace("/", "_")


def extra_configurations(kd_dir: Path, seeds: Sequence[int], skip: int):
    """Positions (X, B, 3) and boxes (X, 3, 3) in nm of the teacher CG MD frames of ``kd_dir`` (every replica of
    every seed, first ``skip`` frames of each replica dropped)."""
    from cgkd.analysis.frames import load_frames

    pos, box = [], []
    for seed in seeds:
        md = kd_dir / f"seed{seed}" / "md" / "teacher"
        if not (md / "summary.json").is_file():
            raise ValueError(f"{md} has no finished teacher CG MD; run benchmarks.kd_table first")
        for seg in load_frames(md):
            if seg.n_frames <= skip:
                continue
            pos.append(np.asarray(seg.positions[skip:], np.float32))
            if seg.box is None:
                raise ValueError(f"{md}: the teacher CG MD frames carry no box; a periodic system is expected")
            box.append(np.asarray(seg.box[skip:], np.float32))
    if not pos:
        raise ValueError(f"no teacher CG MD frames left in {kd_dir} after skipping {skip} per replica")
    return np.concatenate(pos), np.concatenate(box)


def run(preset: str, run_dir: Path, kd_dir: Path, out_dir: Path, device: str, skip: int,
        shard: Optional[Tuple[int, int]] = None, log=print) -> dict:
    import torch

    from cgkd import keys
    from cgkd.analysis import compare
    from cgkd.analysis.report import CompareSettings
    from cgkd.data.cg_h5 import read_cg
    from cgkd.export import export_model
    from cgkd.kd.labels import ensemble_predictions, force_rmse, predict, read_labels
    from cgkd.kd.students import FORCE_LABEL
    from cgkd.kd.teachers import build_potential, read_split
    from cgkd.nn.potential import save_potential
    from cgkd.openmm.md import run_cg_md
    from cgkd.pipeline import PRESETS as PIPELINE
    from cgkd.train.checkpoint import seeded
    from cgkd.train.frames import FrameSet
    from cgkd.train.losses import LossSpec
    from cgkd.train.trainer import TrainConfig, fit

    p = PRESETS[preset]
    pp = PIPELINE[p.pipeline]
    cg_path = run_dir / "labels" / "cg_labelled.h5"
    teacher_dir = run_dir / "teachers"
    out_dir.mkdir(parents=True, exist_ok=True)
    data = read_cg(cg_path)
    split = read_split(teacher_dir)
    train = np.asarray(split["train"], np.int64)
    test = np.asarray(split["test"] or split["val"], np.int64)

    extra_file = out_dir / "extra_frames.npz"
    if not extra_file.is_file():
        pos, box = extra_configurations(kd_dir, p.seeds, skip)
        extra = replace(data.subset(np.zeros(len(pos), np.int64)), positions=pos, box=box,
                        forces=np.zeros_like(pos), time=None)
        t0 = time.perf_counter()
        mean = ensemble_predictions(extra, teacher_dir)[keys.MEAN_FORCES]
        log(f"labelled {len(pos)} extra configurations with the ensemble in {time.perf_counter() - t0:.0f} s")
        tmp = out_dir / "extra_frames.tmp.npz"
        np.savez(tmp, positions=pos, box=box, mean_forces=mean)
        tmp.replace(extra_file)
    ex = np.load(extra_file)
    n_extra = len(ex["positions"])
    labels = read_labels(cg_path, [keys.MEAN_FORCES])[keys.MEAN_FORCES]
    frames = FrameSet(
        positions=torch.from_numpy(np.concatenate([data.positions, ex["positions"]])).float(),
        types=torch.from_numpy(np.asarray(data.types)),
        box=torch.from_numpy(np.concatenate([data.box, ex["box"]])).float(),
        targets={FORCE_LABEL: torch.from_numpy(np.concatenate([labels, ex["mean_forces"]])).float()},
    )
    train_all = np.concatenate([train, data.n_frames + np.arange(n_extra)])
    epochs = {"aug:same-epochs": p.student_epochs,
              "aug:same-steps": max(1, int(round(p.student_epochs * len(train) / len(train_all))))}

    jobs = [(label, seed) for seed in p.seeds for label in VARIANTS]
    mine = [j for i, j in enumerate(jobs) if shard is None or i % shard[1] == shard[0]]
    rows: List[dict] = []
    md_dirs: Dict[str, Path] = {}
    wall: Dict[str, float] = {}
    for label, seed in jobs:
        folder = out_dir / f"seed{seed}" / _folder(label)
        md_dir = folder / "md"
        if (label, seed) in mine:
            t0 = time.perf_counter()
            if not (folder / "model.pt").is_file():
                cfg = TrainConfig(max_epochs=epochs[label], seed=1000 + seed, device=device, progress=False,
                                  losses=[LossSpec("forces", target=FORCE_LABEL)], monitor="forces")
                with seeded(cfg.seed):
                    pot = build_potential(data, pp.student_arch, pp.student_preset, train)
                res = fit(pot, frames, frames, cfg, folder, train_indices=train_all, val_indices=split["val"],
                          extra={"role": "student", "variant": label})
                save_potential(folder / "model.pt", res.model.cpu(), extra={"variant": label, "n_extra": n_extra})
            if not (folder / "export.pt").is_file():
                export_model(folder / "model.pt", cg_path, folder / "export.pt")
            wall[f"{label}@{seed}"] = time.perf_counter() - t0
            if not (md_dir / "summary.json").is_file():
                t0 = time.perf_counter()
                run_cg_md(folder / "export.pt", cg_path, md_dir, n_replicas=p.cg_replicas, steps=p.cg_steps,
                          timestep=p.cg_timestep, report_interval=p.report_interval, seed=100 * int(seed), progress=False)
                wall[f"md {label}@{seed}"] = time.perf_counter() - t0
            log(f"{label} seed {seed} done")
    if shard is not None:
        return {"shard": list(shard), "done": [f"{label}@{seed}" for label, seed in mine], "wall_s": wall}

    from cgkd.nn.potential import load_potential

    for label, seed in jobs:
        folder = out_dir / f"seed{seed}" / _folder(label)
        summary = json.loads((folder / "md" / "summary.json").read_text())
        model = load_potential(folder / "model.pt")
        rmse = force_rmse(predict(model, data.subset(test))[keys.FORCE], data.forces[test])
        md_dirs[f"{label}@{seed}"] = folder / "md"
        rows.append({"label": label, "seed": int(seed), "force_rmse": rmse, **stability(summary),
                     "ns_per_day": summary["ns_per_day"]})
    for label in REFERENCES:
        for seed in p.seeds:
            md = kd_dir / f"seed{seed}" / "md" / _folder(label)
            summary = json.loads((md / "summary.json").read_text())
            info = json.loads((kd_dir / f"seed{seed}" / _folder(label) / "student.json").read_text())
            md_dirs[f"{label}@{seed}"] = md
            rows.append({"label": label, "seed": int(seed), "force_rmse": info["force_rmse_vs_mapped"],
                         **stability(summary), "ns_per_day": summary["ns_per_day"]})
    cmp = compare(cg_path, {k: str(v) for k, v in md_dirs.items()}, out_dir / "compare",
                  settings=CompareSettings(max_frames=p.max_compare_frames))
    for r in rows:
        r.update(kind_errors(cmp["errors"][f"{r['label']}@{r['seed']}"]))
    table = aggregate(rows, METRICS)
    result = {"preset": preset, "kd_dir": str(kd_dir), "skip": skip, "n_extra": int(n_extra),
              "n_train_aa": int(len(train)), "epochs": epochs, "rows": rows, "table": table,
              "markdown": markdown_table(table, METRICS), "wall_s": wall}
    write_text(out_dir / "table.md", result["markdown"])
    _plot(out_dir / "kd_augmented.png", table)
    return result


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    parser.add_argument("--run-dir", default="runs/reline-quick")
    parser.add_argument("--kd-dir", default=None, help="finished kd_table work folder (default benchmarks/runs/kd-<preset>)")
    parser.add_argument("--out", default=None, help="work folder (default benchmarks/runs/kd-aug-<preset>)")
    parser.add_argument("--skip", type=int, default=10, help="frames dropped at the start of every teacher replica")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shard", default=None, metavar="K/N", help="as in benchmarks.kd_table")
    args = parser.parse_args(argv)
    if args.skip < 0:
        raise ValueError(f"--skip must be >= 0, got {args.skip}")
    device = check_device(args.device)
    shard = parse_shard(args.shard) if args.shard else None
    kd_dir = Path(args.kd_dir or ROOT / "benchmarks" / "runs" / f"kd-{args.preset}")
    out_dir = Path(args.out or ROOT / "benchmarks" / "runs" / f"kd-aug-{args.preset}")
    t0 = time.perf_counter()
    result = run(args.preset, Path(args.run_dir), kd_dir, out_dir, device, args.skip, shard)
    if shard is not None:
        print(f"shard {args.shard}: {result['done']} in {time.perf_counter() - t0:.0f} s")
        return 0
    result["total_wall_s"] = time.perf_counter() - t0
    print(result["markdown"])
    print(f"wrote {save_result(f'kd_augmented_{args.preset}_{device}', result)} ({result['total_wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
