"""KD comparison table (issue 5, part 1).

Rows: ``control`` (the student architecture trained on mapped forces only, i.e. force target ``mapped``,
energy target ``none``), ``teacher`` (one ensemble member, member ``seed % M``), ``ensemble`` (all M teachers
averaged as one potential, :class:`cgkd.nn.ensemble.EnsemblePotential`) and students
``student:<force target>/<energy target>`` for the chosen combinations of force target (mapped / teacher /
mean) x energy target (none / node / total). Each row is repeated for several seeds (student training seed
and CG MD seed; the teacher row also changes member).

Columns: RDF / ADF / CDF total absolute error against the mapped AA data (``cgkd.analysis.compare``, mean over
type pairs / triplets), stability (fraction of CG MD replicas that survive ``cg_steps``; mean time to failure
of the replicas that failed), force RMSE against the held-out (test split) mapped forces.

Teachers and labels come from a finished ``cgkd run`` directory (made with the preset's pipeline preset when
missing). Usage::

    python -m benchmarks.kd_table --preset reduced --run-dir runs/reline-quick --device cpu
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from itertools import product
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from benchmarks.common import ROOT, check_device, save_result
from cgkd.io.atomic import write_text

ALL_COMBOS: Tuple[Tuple[str, str], ...] = tuple(product(("mapped", "teacher", "mean"), ("none", "node", "total")))
CONTROL = ("mapped", "none")


@dataclass(frozen=True)
class KDPreset:
    """Settings of one KD-table preset."""

    pipeline: str  # cgkd.pipeline preset that makes the teachers and labels ("quick", "paper")
    seeds: Tuple[int, ...]
    combos: Tuple[Tuple[str, str], ...]  # student (force target, energy target); CONTROL is the control row
    student_epochs: int
    cg_replicas: int
    cg_steps: int
    cg_timestep: float = 0.004  # ps
    report_interval: int = 50
    max_compare_frames: int = 200
    teacher: bool = True
    ensemble: bool = True


PRESETS: Dict[str, KDPreset] = {
    # what fits a few minutes (the unit test runs a smaller one on its own data)
    "reduced": KDPreset(pipeline="quick", seeds=(0, 1), combos=ALL_COMBOS, student_epochs=10, cg_replicas=2, cg_steps=1000),
    # about two hours on 2 CPU cores (estimate from the reduced run, see docs/benchmarks.md)
    "cpu": KDPreset(pipeline="quick", seeds=(0, 1, 2), combos=ALL_COMBOS, student_epochs=30, cg_replicas=4, cg_steps=2500),
    # the cpu preset's best student against the control, trained 100 epochs instead of 30 (is the gap training?)
    "cpu-long": KDPreset(pipeline="quick", seeds=(0, 1, 2), combos=(CONTROL, ("mean", "none")), student_epochs=100,
                         cg_replicas=4, cg_steps=2500, teacher=False, ensemble=False),
    # a GPU: paper-size teachers and students, long CG MD
    "gpu": KDPreset(pipeline="paper", seeds=(0, 1, 2, 3, 4), combos=ALL_COMBOS, student_epochs=200, cg_replicas=8,
                    cg_steps=250_000, report_interval=250, max_compare_frames=1000),
}


def row_label(force_target: str, energy_target: str) -> str:
    """Row name of a student: ``control`` for (mapped, none), else ``student:<force>/<energy>``."""
    return "control" if (force_target, energy_target) == CONTROL else f"student:{force_target}/{energy_target}"


def stability(summary: dict) -> dict:
    """Survival fraction and mean time to failure (ps, over failed replicas; None if none failed) of a
    ``run_cg_md`` summary."""
    reps = summary.get("replicas")
    if not reps:
        raise ValueError("summary must hold a non-empty 'replicas' list (a cgkd.openmm.run_cg_md summary)")
    failed = [r["time_to_failure_ps"] for r in reps if not r["survived"]]
    return {"survival": sum(bool(r["survived"]) for r in reps) / len(reps),
            "mttf_ps": float(np.mean(failed)) if failed else None,
            "simulated_ps": float(summary["steps"] * summary["timestep_ps"])}


def kind_errors(errors: Dict[str, dict]) -> Dict[str, float]:
    """Mean total absolute error per property kind (``rdf``, ``adf``, ``cdf``, ...) of one candidate's
    ``compare`` errors (keys like ``"RDF CHO-CL"``), lower-cased."""
    by: Dict[str, list] = {}
    for prop, v in errors.items():
        by.setdefault(prop.split()[0].lower(), []).append(float(v["tae"]))
    return {k: float(np.mean(v)) for k, v in sorted(by.items())}


def aggregate(rows: Sequence[dict], metrics: Sequence[str]) -> Dict[str, dict]:
    """Mean, standard deviation and count over seeds of each metric, per row label.

    ``rows`` are dicts with ``label`` and the metrics (None values are left out of that metric's mean).
    """
    out: Dict[str, dict] = {}
    for label in dict.fromkeys(r["label"] for r in rows):
        mine = [r for r in rows if r["label"] == label]
        out[label] = {}
        for m in metrics:
            vals = [float(r[m]) for r in mine if r.get(m) is not None]
            out[label][m] = {"mean": float(np.mean(vals)) if vals else None,
                             "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else None, "n": len(vals)}
    return out


def markdown_table(table: Dict[str, dict], metrics: Sequence[str]) -> str:
    """A markdown table ``label | metric (mean ± std, n) ...``."""
    head = "| model | " + " | ".join(metrics) + " |\n|---|" + "---|" * len(metrics) + "\n"
    lines = []
    for label, row in table.items():
        cells = []
        for m in metrics:
            v = row[m]
            if v["mean"] is None:
                cells.append("-")
            else:
                cells.append(f"{v['mean']:.3g}" + (f" ± {v['std']:.2g}" if v["std"] is not None else "") + f" (n={v['n']})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return head + "\n".join(lines) + "\n"


METRICS = ("force_rmse", "rdf", "adf", "cdf", "survival", "mttf_ps")


def ensure_run(spec: str, pipeline: str, run_dir: Path, device: str) -> None:
    """Run ``cgkd run`` (cached stages) unless ``run_dir`` already has teachers and labels."""
    if (run_dir / "labels" / "cg_labelled.h5").is_file() and (run_dir / "teachers" / "ensemble.json").is_file():
        return
    from cgkd.pipeline import run_pipeline

    run_pipeline(spec, pipeline, run_dir, device=device)


def run_table(p: KDPreset, run_dir: Path, out_dir: Path, device: str = "cpu", student_arch: str = "hipnn",
              student_preset: str = "small", log=print, shard: Optional[Tuple[int, int]] = None) -> dict:
    """Train, export, simulate and compare every row of ``p`` for every seed; returns the result dict.

    ``shard=(k, n)`` does only every n-th student training and CG MD job starting at job k, and skips the
    comparison (returns ``{"shard": ..., "done": [...]}``): n processes with k = 0..n-1 share the work on n
    cores, then one call without ``shard`` reuses everything they made and builds the table.
    """
    if shard is not None and not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise ValueError(f"shard must be (k, n) with n >= 1 and 0 <= k < n, got {shard!r}")
    job_index = iter(range(10**9))
    owned: Dict[str, bool] = {}  # key "label@seed" -> this process trains (students) and simulates it

    def mine(key: str) -> bool:
        j = next(job_index)
        owned[key] = shard is None or j % shard[1] == shard[0]
        return owned[key]

    from cgkd.analysis import compare
    from cgkd.analysis.report import CompareSettings
    from cgkd.export import export_cg_potential, export_model, read_metadata
    from cgkd.kd import ensemble_errors, train_student
    from cgkd.kd.teachers import load_teachers, member_dir, read_ensemble
    from cgkd.nn.ensemble import EnsemblePotential
    from cgkd.openmm.md import run_cg_md
    from cgkd.train.trainer import TrainConfig

    cg_path = run_dir / "labels" / "cg_labelled.h5"
    teacher_dir = run_dir / "teachers"
    n_members = int(read_ensemble(teacher_dir)["n_members"])
    terr = ensemble_errors(cg_path, teacher_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    models: Dict[str, Path] = {}  # artefacts, key "label@seed"
    force_rmse: Dict[str, float] = {}
    wall: Dict[str, float] = {}
    if p.ensemble:
        path = out_dir / "ensemble.pt"
        if not path.is_file():
            meta = read_metadata(run_dir / "export" / "student.pt") if (run_dir / "export" / "student.pt").is_file() else None
            from cgkd.data.cg_h5 import read_cg

            ens = EnsemblePotential(load_teachers(teacher_dir))
            data = read_cg(cg_path, frames=slice(0, 1))
            masses = meta["type_masses"] if meta else data.topology.masses_by_type(ens.type_names).tolist()
            export_cg_potential(ens, path, type_masses=masses, periodic=data.periodic)
    for seed in p.seeds:
        for ft, et in p.combos:
            label = row_label(ft, et)
            if not mine(f"{label}@{seed}"):
                continue
            folder = out_dir / f"seed{seed}" / label.replace(":", "_").replace("/", "_")
            cfg = TrainConfig(max_epochs=p.student_epochs, seed=1000 + seed, device=device, progress=False)
            t0 = time.perf_counter()
            info = train_student(cg_path, teacher_dir, folder, force_target=ft, energy_target=et,
                                 teacher_index=seed % n_members, arch=student_arch, preset=student_preset, config=cfg)
            wall[f"{label}@{seed}"] = time.perf_counter() - t0
            force_rmse[f"{label}@{seed}"] = info["force_rmse_vs_mapped"]
            art = folder / "export.pt"
            if not art.is_file():
                export_model(folder / "model.pt", cg_path, art)
            models[f"{label}@{seed}"] = art
            log(f"seed {seed} {label}: held-out force RMSE vs mapped {info['force_rmse_vs_mapped']:.1f} kJ/mol/nm "
                f"({wall[f'{label}@{seed}']:.0f} s)")
        if p.teacher:
            k = seed % n_members
            art = out_dir / f"seed{seed}" / "teacher.pt"
            if not art.is_file():
                art.parent.mkdir(parents=True, exist_ok=True)
                export_model(member_dir(teacher_dir, k) / "model.pt", cg_path, art)
            models[f"teacher@{seed}"] = art
            mine(f"teacher@{seed}")
            force_rmse[f"teacher@{seed}"] = terr["member_rmse"][k]
        if p.ensemble:
            models[f"ensemble@{seed}"] = out_dir / "ensemble.pt"
            force_rmse[f"ensemble@{seed}"] = terr["mean_rmse"]
            mine(f"ensemble@{seed}")
    md_dirs: Dict[str, Path] = {}
    rows: List[dict] = []
    for key, art in models.items():
        label, seed = key.rsplit("@", 1)
        if not owned[key]:
            continue
        md_dir = out_dir / f"seed{seed}" / "md" / label.replace(":", "_").replace("/", "_")
        summary_file = md_dir / "summary.json"
        t0 = time.perf_counter()
        if summary_file.is_file():
            summary = json.loads(summary_file.read_text())
        else:
            summary = run_cg_md(art, cg_path, md_dir, n_replicas=p.cg_replicas, steps=p.cg_steps, timestep=p.cg_timestep,
                                report_interval=p.report_interval, seed=100 * int(seed), progress=False)
        wall[f"md {key}"] = time.perf_counter() - t0
        st = stability(summary)
        log(f"CG MD {key}: {summary['survived']}/{summary['n_replicas']} survived {st['simulated_ps']:.0f} ps, "
            f"{summary['ns_per_day'] or float('nan'):.1f} ns/day")
        md_dirs[key] = md_dir
        rows.append({"label": label, "seed": int(seed), "force_rmse": force_rmse[key], **st,
                     "ns_per_day": summary["ns_per_day"]})
    if shard is not None:
        return {"shard": list(shard), "done": sorted(md_dirs), "wall_s": wall}
    # structure only from replicas that produced frames; compare reads every replica of the folder
    cmp = compare(cg_path, {k: str(v) for k, v in md_dirs.items()}, out_dir / "compare",
                  settings=CompareSettings(max_frames=p.max_compare_frames))
    for r in rows:
        r.update(kind_errors(cmp["errors"][f"{r['label']}@{r['seed']}"]))
    table = aggregate(rows, METRICS)
    result = {"preset": asdict(p), "run_dir": str(run_dir), "teacher_errors": terr, "rows": rows, "table": table,
              "markdown": markdown_table(table, METRICS), "wall_s": wall}
    write_text(out_dir / "table.md", result["markdown"])
    _plot(out_dir / "kd_table.png", table)
    return result


def _plot(path: Path, table: Dict[str, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(table)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4))
    for ax, m in zip(axes, ("force_rmse", "rdf", "adf", "survival")):
        mean = [table[k][m]["mean"] or 0.0 for k in labels]
        std = [table[k][m]["std"] or 0.0 for k in labels]
        ax.bar(range(len(labels)), mean, yerr=std, capsize=3)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
        ax.set_title(m)
        if m == "force_rmse" and any(mean):
            lo = min(v for v in mean if v) - max(std) - 1.0
            ax.set_ylim(bottom=max(0.0, lo))  # the differences are a few kJ/mol/nm on top of ~260
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_shard(text: str) -> Tuple[int, int]:
    """``"K/N"`` -> ``(K, N)``, checked."""
    try:
        k, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like K/N (e.g. 0/2), got {text!r}") from None
    if not (n >= 1 and 0 <= k < n):
        raise ValueError(f"--shard K/N needs N >= 1 and 0 <= K < N, got {text!r}")
    return k, n


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="reduced", choices=sorted(PRESETS))
    parser.add_argument("--spec", default="reline")
    parser.add_argument("--run-dir", default=None, help="cgkd run directory with teachers and labels "
                                                        "(default runs/<spec>-<pipeline preset>)")
    parser.add_argument("--out", default=None, help="work folder (default benchmarks/runs/kd-<preset>)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--shard", default=None, metavar="K/N",
                        help="do only job K of every N (one process per core), skip the table; finish with a "
                             "call without --shard, which reuses every finished job")
    args = parser.parse_args(argv)
    shard = parse_shard(args.shard) if args.shard else None
    device = check_device(args.device)
    p = PRESETS[args.preset]
    run_dir = Path(args.run_dir or f"runs/{args.spec}-{p.pipeline}")
    ensure_run(args.spec, p.pipeline, run_dir, device)
    from cgkd.pipeline import PRESETS as PIPELINE

    pp = PIPELINE[p.pipeline]
    out_dir = Path(args.out or ROOT / "benchmarks" / "runs" / f"kd-{args.preset}")
    t0 = time.perf_counter()
    result = run_table(p, run_dir, out_dir, device, pp.student_arch, pp.student_preset, shard=shard)
    if shard is not None:
        print(f"shard {args.shard}: {len(result['done'])} CG MD jobs done in {time.perf_counter() - t0:.0f} s; "
              "run again without --shard for the table")
        return 0
    result["total_wall_s"] = time.perf_counter() - t0
    print(result["markdown"])
    print(f"wrote {save_result(f'kd_table_{args.preset}_{device}', result)} ({result['total_wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
