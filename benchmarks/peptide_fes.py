"""Alanine dipeptide (issue 13): phi/psi free-energy divergences of teacher ensemble, student and control, over seeds.

One AA run (made once, e.g. ``cgkd aa alanine-dipeptide --size evidence``; its embedded spec is the system) feeds
``cgkd run`` once per seed:
the seed changes the teachers, the students and the CG MD; the AA and map stages are shared (their
``stage.json`` is copied into each seed's run folder, so they are taken from the cache). Every seed's run
is resumable like any ``cgkd run``. The report pairs the models by seed: for each of TAE, JSD and KL of the
Ramachandran surface against the held-out AA frames, the mean over seeds with a 95 % confidence interval,
and the paired differences student - control and ensemble - control. Usage::

    python -m benchmarks.peptide_fes --aa runs/ala/aa/aa.h5 --out runs/ala-fes --seeds 1 2 3
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional

from benchmarks.common import RESULTS as RESULTS_DIR, save_result
from benchmarks.common import mean_ci
from cgkd.io.atomic import write_text
from cgkd.io.config import to_dict
from cgkd.io.aa_h5 import read_header
from cgkd.io.spec import spec_from_yaml_text
from cgkd.pipeline import Preset, Run, run_pipeline

#: About 15 minutes a seed on 2 CPU cores (5 beads). Most of it is CG MD: 2 x 50 ps per model; the ensemble
#: (4 medium teachers, one TorchForce call each per step) runs at about 20 ns/day, the students at about 100.
PRESET = Preset(size="evidence", n_members=4, teacher_preset="medium", teacher_epochs=15, student_epochs=30,
                cg_replicas=2, cg_steps=25_000, cg_timestep=0.002, native_timestep=0.002, cg_report_interval=100,
                ensemble_md=True, workers=2)
METRICS = ("tae", "jsd", "kl")


def adopt_aa(run_dir: Path, aa_file: Path, spec, preset: Preset) -> None:
    """Let ``run_dir``'s aa stage resume the finished AA file ``aa_file`` instead of running MD again."""
    folder = run_dir / "aa"
    key = Run(spec, preset, run_dir, log=lambda line: None).key(
        "aa", [], {"spec": to_dict(spec) | {"source": ""}, "size": preset.size, "steps": preset.aa_production_steps})
    marker = folder / "stage.json"
    if marker.is_file():
        if json.loads(marker.read_text()).get("key") == key:
            return
        marker.unlink()  # made by an older cgkd whose spec had fewer fields: resume the same file again
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "aa.h5"
    if not target.exists():
        target.symlink_to(aa_file.resolve())
    write_text(folder / "stage.key", key)


def share_stages(src: Path, dst: Path, stages=("aa", "map")) -> None:
    """Copy finished stages' markers from ``src`` to ``dst`` (their files stay in ``src``)."""
    for stage in stages:
        (dst / stage).mkdir(parents=True, exist_ok=True)
        if not (dst / stage / "stage.json").is_file():
            shutil.copyfile(src / stage / "stage.json", dst / stage / "stage.json")


def run(aa_file: Path, out: Path, seeds: List[int], preset: Preset = PRESET) -> dict:
    """Run the pipeline once per seed on ``aa_file`` (its embedded spec is the system) and pair the results."""
    text = read_header(aa_file)["spec_yaml"]
    if not text:
        raise ValueError(f"aa_file {str(aa_file)!r} has no embedded system spec; make it with cgkd aa")
    spec = spec_from_yaml_text(text)
    spec.size(preset.size)
    out.mkdir(parents=True, exist_ok=True)
    per_seed: Dict[int, dict] = {}
    first = None
    for seed in seeds:
        run_dir = out / f"seed_{seed}"
        p = replace(preset, seed=seed)
        if first is None:
            adopt_aa(run_dir, aa_file, spec, p)
            first = run_dir
        else:
            share_stages(first, run_dir)
        report = run_pipeline(spec, p, run_dir, log=lambda line: print(line, flush=True))
        metrics = json.loads((report.parent / "metrics.json").read_text())
        per_seed[seed] = {label: errs.get("FES phi-psi") for label, errs in metrics["errors"].items()}
        per_seed[seed]["basins"] = metrics.get("basins", {})
    res = {"seeds": seeds, "preset": to_dict(preset), "aa": str(aa_file), "per_seed": per_seed,
           **summarize(per_seed, seeds)}
    res["all_frames"] = rescore(out, seeds)
    return res


def summarize(per_seed: Dict[int, dict], seeds: List[int]) -> dict:
    """Mean and 95 % CI over seeds per model and metric, and paired differences against the control."""
    labels = [k for k in per_seed[seeds[0]] if k != "basins"]
    summary: Dict[str, dict] = {}
    for label in labels:
        summary[label] = {m: mean_ci([per_seed[s][label][m] for s in seeds if per_seed[s].get(label)]) for m in METRICS}
    paired: Dict[str, dict] = {}
    for label in ("student", "ensemble", "member_00", "native", "native_mscg"):
        if label in labels and "control" in labels:
            paired[f"{label} - control"] = {
                m: mean_ci([per_seed[s][label][m] - per_seed[s]["control"][m] for s in seeds]) for m in METRICS}
    return {"summary": summary, "paired": paired}


def rescore(out: Path, seeds: List[int], reference: Optional[Path] = None, name: str = "compare_all_frames") -> dict:
    """The same CG runs against every frame of the AA run (a reference with more basin visits than the held-out
    blocks; the models trained on part of it), or against ``reference``: a mapped CG dataset of an independent AA
    run (same map)."""
    from cgkd.analysis import CompareSettings, compare
    from cgkd.data.cg_h5 import read_cg

    per_seed: Dict[int, dict] = {}
    for seed in seeds:
        run_dir = out / f"seed_{seed}"
        cg_path = reference or json.loads((run_dir / "map" / "stage.json").read_text())["summary"]["path"]
        runs = json.loads((run_dir / "cgmd" / "stage.json").read_text())["summary"]["runs"]
        runs = {label: r for label, r in runs.items()
                if any(rep.get("steps_done", 0) >= r["summary"]["report_interval"] for rep in r["summary"]["replicas"])}
        res = compare(read_cg(cg_path), {label: r["dir"] for label, r in runs.items()}, run_dir / name,
                      settings=CompareSettings(progress=False),
                      reference_label="AA (independent run)" if reference else "AA (all frames)")
        per_seed[seed] = {label: errs.get("FES phi-psi") for label, errs in res["errors"].items()}
        per_seed[seed]["basins"] = res.get("basins", {})
    return {"per_seed": per_seed, **summarize(per_seed, seeds)}


def markdown(res: dict) -> str:
    lines = []
    for title, part in (("the held-out AA frames", res), ("all AA frames", res.get("all_frames")),
                        ("an independent AA run", res.get("independent"))):
        if not part or "summary" not in part:
            continue
        lines += [f"Alanine dipeptide, phi/psi free-energy surface against {title}; seeds {res['seeds']}.", "",
                  "| model | TAE | JSD | KL (nats) |", "|---|---|---|---|"]
        for label, m in part["summary"].items():
            lines.append(f"| {label} | " + " | ".join(f"{m[k][0]:.3f} ± {m[k][1]:.3f}" for k in METRICS) + " |")
        lines += ["", "| paired difference | TAE | JSD | KL |", "|---|---|---|---|"]
        for label, m in part["paired"].items():
            lines.append(f"| {label} | " + " | ".join(f"{m[k][0]:+.3f} ± {m[k][1]:.3f}" for k in METRICS) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--aa", required=True, type=Path, help="finished AA file (cgkd aa alanine-dipeptide ...)")
    ap.add_argument("--out", required=True, type=Path, help="folder of the per-seed runs")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--size", default=PRESET.size, help="the AA file's size in the spec (default evidence)")
    ap.add_argument("--rescore-only", action="store_true",
                    help="only score finished runs against all AA frames (adds to the saved result)")
    ap.add_argument("--reference", type=Path, default=None,
                    help="also score finished runs against this mapped CG dataset of an independent AA run")
    args = ap.parse_args(argv)
    if args.reference is not None:
        prev = RESULTS_DIR / f"peptide_fes_{args.size}.json"
        res = json.loads(prev.read_text()) if prev.is_file() else {"seeds": args.seeds, "aa": str(args.aa)}
        res.pop("machine", None)
        res["independent"] = rescore(args.out, args.seeds, reference=args.reference, name="compare_independent")
        res["independent"]["reference"] = str(args.reference)
    elif args.rescore_only:
        res = {"seeds": args.seeds, "aa": str(args.aa), "all_frames": rescore(args.out, args.seeds)}
        prev = RESULTS_DIR / f"peptide_fes_{args.size}.json"
        if prev.is_file():
            res = {**json.loads(prev.read_text()), **res}
            res.pop("machine", None)
    else:
        res = run(args.aa, args.out, args.seeds, replace(PRESET, size=args.size))
    path = save_result(f"peptide_fes_{args.size}", res)
    write_text(path.with_suffix(".md"), markdown(res))
    print(markdown(res))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
