"""Learning curves (issue 11, deliver 2): force error against the number of independent training configurations.

For each N on a grid and each seed, three models are trained on the same N frames (spread evenly over the
first part of the trajectory, so that their spacing is as large as the data allow):

- ``control``: the student architecture on the mapped forces (direct force matching);
- ``student``: the same architecture on the ensemble-mean forces of the teachers;
- ``ensemble``: the M teachers themselves (bootstrap members on the N frames), evaluated as their mean.

All are scored against the mapped forces of a held-out block of frames at the end of the trajectory
(``test_frames``; never used for training or validation), as RMSE per component in kJ/mol/nm. Paired by
seed, the report gives the mean difference student - control (and ensemble - control) per N with a 95 %
confidence interval (Student t over the seeds) and the ratio of the mean errors. The hypothesis tested:
distillation helps most where data is scarce.

Every cell (N, seed) lives in its own folder (a CG file of its frames, a teacher folder, two student
folders) and is resumable: a rerun skips what is finished. Usage::

    python -m benchmarks.learning_curve --cg runs/water-evidence/cg.h5 --preset reduced --out runs/lc-water
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from benchmarks.common import mean_ci, save_result, t95  # noqa: F401  (mean_ci, t95 re-exported)
from cgkd.io.atomic import write_text


@dataclass(frozen=True)
class LCPreset:
    n_grid: Tuple[int, ...]
    seeds: Tuple[int, ...]
    members: int
    teacher_preset: str
    student_preset: str
    teacher_epochs: int
    student_epochs: int
    val_frames: int = 16
    test_frames: int = 64
    batch_size: int = 8
    arch: str = "hipnn"


PRESETS: Dict[str, LCPreset] = {
    # a few minutes: for the test and for trying the script
    "tiny": LCPreset(n_grid=(4, 8), seeds=(0, 1), members=2, teacher_preset="small", student_preset="small",
                     teacher_epochs=2, student_epochs=2, val_frames=4, test_frames=4, batch_size=4),
    # what fits about an hour of one CPU core on the 300-molecule water box
    "reduced": LCPreset(n_grid=(8, 32, 128), seeds=(0, 1, 2, 3, 4), members=4, teacher_preset="small",
                        student_preset="small", teacher_epochs=15, student_epochs=15),
    # one point of the curve with stronger teachers and twice the training: is the "reduced" result a matter of
    # under-trained, too-small teachers?
    "strong32": LCPreset(n_grid=(32,), seeds=(0, 1, 2, 3, 4), members=4, teacher_preset="medium",
                         student_preset="small", teacher_epochs=30, student_epochs=30),
    # the same cell with students of the teachers' size: is the small student's capacity the limit?
    "strong32-medium": LCPreset(n_grid=(32,), seeds=(0, 1, 2, 3, 4), members=4, teacher_preset="medium",
                                student_preset="medium", teacher_epochs=30, student_epochs=30),
    # the curve with teachers worth distilling, for a GPU (--device cuda) and the data of reline's evidence-gpu size
    # or water's default size (thousands of frames); prepared, not run here (no GPU was lent)
    "gpu": LCPreset(n_grid=(8, 32, 128, 512), seeds=(0, 1, 2, 3, 4), members=8, teacher_preset="medium",
                    student_preset="small", teacher_epochs=50, student_epochs=50, val_frames=32, test_frames=256),
    # the full curve (hours on 2 cores)
    "cpu": LCPreset(n_grid=(8, 16, 32, 64, 128, 256, 512), seeds=(0, 1, 2, 3, 4), members=8, teacher_preset="small",
                    student_preset="small", teacher_epochs=30, student_epochs=30, test_frames=128),
}

def cell_frames(n_total: int, n_train: int, val_frames: int, test_frames: int) -> Dict[str, List[int]]:
    """Train frames evenly spread over the frames before the validation and test blocks; test last."""
    n_pool = n_total - test_frames - val_frames
    if n_pool < n_train:
        raise ValueError(f"{n_total} frames cannot hold {n_train} training, {val_frames} validation and "
                         f"{test_frames} test frames")
    train = np.unique(np.linspace(0, n_pool - 1, n_train).round().astype(int))
    return {"train": train.tolist(), "val": list(range(n_pool, n_pool + val_frames)),
            "test": list(range(n_total - test_frames, n_total))}


def run_cell(data, n_train: int, seed: int, preset: LCPreset, folder: Path, device: str = "cpu") -> dict:
    """Train and score the three models of one (N, seed) cell; resumable (``folder/result.json`` last)."""
    from cgkd.data.cg_h5 import write_cg
    from cgkd.kd import ensemble_errors, make_labels, train_student, train_teachers
    from cgkd.kd.labels import labels_are_current
    from cgkd.train import TrainConfig

    done = folder / "result.json"
    if done.is_file():
        return json.loads(done.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    sel = cell_frames(data.n_frames, n_train, preset.val_frames, preset.test_frames)
    frames = sel["train"] + sel["val"] + sel["test"]
    cg = folder / "cg.h5"
    if not cg.is_file():
        write_cg(cg, data.subset(np.asarray(frames)))
    n_tr, n_va = len(sel["train"]), len(sel["val"])
    split = {"train": list(range(n_tr)), "val": list(range(n_tr, n_tr + n_va)),
             "test": list(range(n_tr + n_va, len(frames)))}
    tdir = folder / "teachers"
    tdir.mkdir(exist_ok=True)
    if not (tdir / "split.json").is_file():
        write_text(tdir / "split.json", json.dumps(split))
    base = TrainConfig(batch_size=preset.batch_size, device=device, progress=False)
    t0 = time.perf_counter()
    train_teachers(cg, tdir, n_members=preset.members, arch=preset.arch, preset=preset.teacher_preset,
                   config=replace(base, max_epochs=preset.teacher_epochs, seed=1000 * seed))
    t_teach = time.perf_counter() - t0
    if not labels_are_current(cg, tdir):
        make_labels(cg, tdir, device=device)
    ens = ensemble_errors(cg, tdir, "test")
    scfg = replace(base, max_epochs=preset.student_epochs, seed=1000 * seed + 500)
    t0 = time.perf_counter()
    student = train_student(cg, tdir, folder / "student", force_target="mean", energy_target="none",
                            arch=preset.arch, preset=preset.student_preset, config=scfg)
    control = train_student(cg, tdir, folder / "control", force_target="mapped", energy_target="none",
                            arch=preset.arch, preset=preset.student_preset, config=scfg)
    t_students = time.perf_counter() - t0
    result = {
        "n_train": n_tr, "seed": seed, "frames": sel,
        "rmse": {"control": control["force_rmse_vs_mapped"], "student": student["force_rmse_vs_mapped"],
                 "ensemble": ens["mean_rmse"], "member_mean": float(np.mean(ens["member_rmse"]))},
        "mapped_force_rms": ens["mapped_force_rms"], "mean_force_std": ens["mean_force_std"],
        "wall_s": {"teachers": t_teach, "students": t_students},
    }
    write_text(done, json.dumps(result, indent=1))
    return result


#: CG MD of the structure stage: replicas, picoseconds per replica (the ensemble gets half, it is M times slower).
STRUCTURE_MD = {"replicas": 2, "ps": 100.0, "report_ps": 0.5}
STRUCTURE_MODELS = ("control", "student", "ensemble")


def structure_cell(folder: Path, reference, md: dict = STRUCTURE_MD, models=STRUCTURE_MODELS) -> dict:
    """RDF/ADF/CDF total absolute errors of the cell's models in CG MD against ``reference``; resumable.

    Each model is exported, run for ``md["replicas"]`` x ``md["ps"]`` ps at cgkd's default time step from the
    cell's training frames, and compared with ``cgkd.analysis.compare``. Returns mean TAE per kind per model
    (over type pairs/triplets), also written to ``folder/structure.json``.
    """
    from cgkd.analysis import CompareSettings, compare
    from cgkd.export.artefact import export_ensemble, export_model
    from cgkd.openmm.md import default_timestep, run_cg_md

    done = folder / "structure.json"
    if done.is_file():
        return json.loads(done.read_text())
    cg = folder / "cg.h5"
    runs, survived = {}, {}
    for model in models:
        art = folder / "md" / f"{model}.pt"
        art.parent.mkdir(parents=True, exist_ok=True)
        if not art.is_file():
            if model == "ensemble":
                export_ensemble(folder / "teachers", cg, art)
            else:
                export_model(folder / model / "model.pt", cg, art)
        dt = default_timestep("neural")
        ps = md["ps"] / 2 if model == "ensemble" else md["ps"]
        summary = run_cg_md(art, cg, folder / "md" / model, n_replicas=md["replicas"], steps=int(round(ps / dt)),
                            report_interval=max(1, int(round(md["report_ps"] / dt))), progress=False, seed=7)
        survived[model] = summary["survived"]
        runs[model] = folder / "md" / model
    res = compare(reference, {m: runs[m] for m in models}, folder / "md" / "compare",
                  settings=CompareSettings(max_frames=200, progress=False))
    out = {"survived": survived, "tae": {}}
    for model in models:
        rows = res["errors"][model]
        out["tae"][model] = {kind: float(np.mean([v["tae"] for k, v in rows.items() if k.startswith(kind.upper())]))
                             for kind in ("rdf", "adf", "cdf")}
    write_text(done, json.dumps(out, indent=1))
    return out


def summarise_structure(cells: List[dict]) -> List[dict]:
    """Per N and kind: mean TAE with 95 % CI per model, and paired differences student - control."""
    rows = []
    for n in sorted({c["n_train"] for c in cells}):
        group = [c for c in cells if c["n_train"] == n and "structure" in c]
        for kind in ("rdf", "adf", "cdf"):
            row = {"n_train": n, "kind": kind, "n_seeds": len(group)}
            for model in STRUCTURE_MODELS:
                m, h, _ = mean_ci([c["structure"]["tae"][model][kind] for c in group])
                row[model] = {"mean": m, "ci95": h}
            for model in ("student", "ensemble"):
                d = [c["structure"]["tae"][model][kind] - c["structure"]["tae"]["control"][kind] for c in group]
                m, h, _ = mean_ci(d)
                row[f"{model}_minus_control"] = {"mean": m, "ci95": h, "wins": int(sum(x < 0 for x in d))}
            rows.append(row)
    return rows


def summarise(cells: List[dict]) -> List[dict]:
    """Per N: mean RMSE with 95 % CI per model, and paired differences to the control."""
    rows = []
    for n in sorted({c["n_train"] for c in cells}):
        cs = [c for c in cells if c["n_train"] == n]
        row = {"n_train": n, "seeds": len(cs)}
        for model in ("control", "student", "ensemble", "member_mean"):
            m, h, k = mean_ci([c["rmse"][model] for c in cs])
            row[model] = {"mean": m, "ci95": h}
        for model in ("student", "ensemble"):
            d = [c["rmse"][model] - c["rmse"]["control"] for c in cs]
            m, h, k = mean_ci(d)
            row[f"{model}_minus_control"] = {"mean": m, "ci95": h, "wins": int(sum(v < 0 for v in d)), "n": k}
        rms = float(np.mean([c["mapped_force_rms"] for c in cs]))
        row["mapped_force_rms"] = rms
        for model in ("control", "student", "ensemble"):
            row[f"{model}_explained"] = 1.0 - (row[model]["mean"] / rms) ** 2
        rows.append(row)
    return rows


def markdown(rows: List[dict]) -> str:
    """The summary as a markdown table (means with 95 % CIs, paired differences to the control)."""
    def mc(d):
        return f"{d['mean']:.2f} ± {d['ci95']:.2f}"

    lines = ["| N | control | student (ensemble mean) | ensemble | student - control | wins | ensemble - control | wins |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        sd, ed = r["student_minus_control"], r["ensemble_minus_control"]
        lines.append(f"| {r['n_train']} | {mc(r['control'])} | {mc(r['student'])} | {mc(r['ensemble'])} | "
                     f"{sd['mean']:+.2f} ± {sd['ci95']:.2f} | {sd['wins']}/{sd['n']} | {ed['mean']:+.2f} ± "
                     f"{ed['ci95']:.2f} | {ed['wins']}/{ed['n']} |")
    return "\n".join(lines)


def plot(rows: List[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    n = np.array([r["n_train"] for r in rows])
    colour = {"control": "C0", "student": "C1", "ensemble": "C2"}
    for model, style in (("control", "o-"), ("student", "s-"), ("ensemble", "^-")):
        m = np.array([r[model]["mean"] for r in rows])
        h = np.nan_to_num(np.array([r[model]["ci95"] for r in rows]))
        ax[0].errorbar(n, m, yerr=h, fmt=style, capsize=3, label=model, color=colour[model])
    ax[0].set_xscale("log")
    ax[0].set_xlabel("training configurations N")
    ax[0].set_ylabel("held-out force RMSE vs mapped (kJ/mol/nm)")
    ax[0].legend()
    for model, style in (("student", "s-"), ("ensemble", "^-")):
        m = np.array([r[f"{model}_minus_control"]["mean"] for r in rows])
        h = np.nan_to_num(np.array([r[f"{model}_minus_control"]["ci95"] for r in rows]))
        ax[1].errorbar(n, m, yerr=h, fmt=style, capsize=3, label=f"{model} - control", color=colour[model])
    ax[1].axhline(0.0, color="k", lw=0.8)
    ax[1].set_xscale("log")
    ax[1].set_xlabel("training configurations N")
    ax[1].set_ylabel("paired difference (kJ/mol/nm), 95 % CI")
    ax[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_structure(rows: List[dict], path: Path, title: str) -> None:
    """RDF, ADF and CDF total absolute error against N per model (mean, 95 % CI): the structure stage's rows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(13, 4))
    for i, kind in enumerate(("rdf", "adf", "cdf")):
        sel = [r for r in rows if r["kind"] == kind]
        n = np.array([r["n_train"] for r in sel])
        for j, (model, style) in enumerate((("control", "o-"), ("student", "s-"), ("ensemble", "^-"))):
            m = np.array([r[model]["mean"] for r in sel])
            h = np.nan_to_num(np.array([r[model]["ci95"] for r in sel]))
            ax[i].errorbar(n * (1 + 0.04 * (j - 1)), m, yerr=h, fmt=style, capsize=3, label=model, color=f"C{j}")
        ax[i].set_xscale("log")
        ax[i].set_xlabel("training configurations N")
        ax[i].set_ylabel(f"{kind.upper()} total absolute error vs held-out AA")
    ax[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run(cg_path: Path, preset_name: str, out: Path, device: str = "cpu", name: Optional[str] = None,
        plot_path: Optional[Path] = None, structure: bool = False, structure_md: Optional[dict] = None,
        seeds: Optional[Tuple[int, ...]] = None) -> dict:
    """Run (or resume) every cell of the preset; ``seeds`` limits it to some of the preset's seeds.

    Several processes with disjoint ``seeds`` on the same ``out`` share the work (each runs on one thread); a
    last run without ``seeds`` then gathers every finished cell into the result.
    """
    from cgkd.data.cg_h5 import read_cg
    from cgkd.progress import note
    from cgkd.train.checkpoint import num_threads

    preset = PRESETS[preset_name]
    if seeds is not None:
        unknown = sorted(set(seeds) - set(preset.seeds))
        if unknown or not seeds:
            raise ValueError(f"seeds must be some of preset {preset_name!r}'s seeds {list(preset.seeds)}, "
                             f"got {list(seeds)}")
        preset = replace(preset, seeds=tuple(s for s in preset.seeds if s in set(seeds)))
    data = read_cg(cg_path)
    cells = []
    total = len(preset.n_grid) * len(preset.seeds)
    with num_threads(1):
        for i, (n, seed) in enumerate((n, s) for n in preset.n_grid for s in preset.seeds):
            t0 = time.perf_counter()
            cells.append(run_cell(data, n, seed, preset, out / f"n{n:04d}" / f"seed{seed}", device))
            r = cells[-1]["rmse"]
            note(f"learning curve {i + 1}/{total}: N={n} seed={seed} control {r['control']:.1f}, student "
                 f"{r['student']:.1f}, ensemble {r['ensemble']:.1f} kJ/mol/nm ({time.perf_counter() - t0:.0f} s)")
            if structure:  # the held-out test frames of the cell (never trained on) are the AA reference
                t0 = time.perf_counter()
                ref = data.subset(np.asarray(cells[-1]["frames"]["test"]))
                cells[-1]["structure"] = structure_cell(out / f"n{n:04d}" / f"seed{seed}", ref,
                                                        md=structure_md or STRUCTURE_MD)
                t = cells[-1]["structure"]["tae"]
                note(f"  structure N={n} seed={seed}: RDF TAE control {t['control']['rdf']:.3f}, student "
                     f"{t['student']['rdf']:.3f}, ensemble {t['ensemble']['rdf']:.3f} ({time.perf_counter() - t0:.0f} s)")
    rows = summarise(cells)
    result = {"cg": str(cg_path), "n_frames": data.n_frames, "n_beads": data.n_beads, "preset": preset_name,
              "seeds": list(preset.seeds),
              "settings": asdict(preset), "rows": rows, "cells": cells}
    if structure:
        result["structure_md"] = structure_md or STRUCTURE_MD
        result["structure_rows"] = summarise_structure(cells)
    if name:
        save_result(name, result)
    if plot_path is not None:
        plot(rows, plot_path, f"{Path(cg_path).parent.name}: {data.n_beads} beads, preset {preset_name}")
    return result


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cg", required=True, type=Path, help="CG dataset (cgkd map) with well-spaced frames")
    p.add_argument("--preset", default="reduced", choices=sorted(PRESETS))
    p.add_argument("--out", required=True, type=Path, help="work folder (resumable)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--name", default=None, help="result name in benchmarks/results (default learning_curve_<preset>)")
    p.add_argument("--plot", type=Path, default=None, help="PNG of the curves")
    p.add_argument("--markdown", action="store_true", help="also print the summary as a markdown table")
    p.add_argument("--structure", action="store_true",
                   help="also run CG MD of control, student and ensemble per cell and report RDF/ADF/CDF TAE against "
                        "the cell's held-out test frames")
    p.add_argument("--structure-ps", type=float, default=STRUCTURE_MD["ps"],
                   help="ps per replica of the structure runs (the ensemble runs half)")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="run only these of the preset's seeds (one process per core; rerun without to gather)")
    args = p.parse_args(argv)
    try:
        res = run(args.cg, args.preset, args.out, args.device, args.name or f"learning_curve_{args.preset}",
                  args.plot, structure=args.structure, structure_md=dict(STRUCTURE_MD, ps=args.structure_ps),
                  seeds=None if args.seeds is None else tuple(args.seeds))
    except ValueError as err:
        p.error(str(err))
    for r in res["rows"]:
        d = r["student_minus_control"]
        e = r["ensemble_minus_control"]
        print(f"N={r['n_train']:4d}  control {r['control']['mean']:.2f}  student {r['student']['mean']:.2f}  "
              f"ensemble {r['ensemble']['mean']:.2f}  student-control {d['mean']:+.2f} +- {d['ci95']:.2f} "
              f"({d['wins']}/{d['n']} wins)  ensemble-control {e['mean']:+.2f} +- {e['ci95']:.2f}")
    for r in res.get("structure_rows", []):
        d = r["student_minus_control"]
        print(f"N={r['n_train']:4d} {r['kind'].upper()} TAE control {r['control']['mean']:.3f}  student "
              f"{r['student']['mean']:.3f}  ensemble {r['ensemble']['mean']:.3f}  student-control {d['mean']:+.3f} +- "
              f"{d['ci95']:.3f} ({d['wins']}/{r['n_seeds']} wins)")
    if args.markdown:
        print(markdown(res["rows"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
