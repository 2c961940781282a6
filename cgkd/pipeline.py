"""The main job: AA MD -> map -> teachers -> labels -> students (neural and native) -> export -> CG MD -> compare.

Each stage writes into its own folder of the run directory and finishes by writing ``stage.json`` (atomically)
with a hash of everything it depends on; a stage whose ``stage.json`` matches is skipped, so an interrupted run
continues where it stopped and a changed setting re-runs only the stages downstream of it. Stages that are long
(AA MD, training, CG MD) are themselves resumable.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

from cgkd.io.atomic import swap_in_folder, write_text
from cgkd.io.config import from_dict, load_yaml, to_dict
from cgkd.io.spec import SystemSpec, load_spec


@dataclass(frozen=True)
class Preset:
    """Settings of one pipeline preset (sizes, epochs, steps).

    YAML-loadable (unknown keys rejected): ``load_preset("my.yaml")`` or ``cgkd run SPEC --preset my.yaml``
    with a mapping of these fields; only ``size`` is required.
    """

    size: str  # AA system size from the spec (quick, default, paper, test)
    force_map: str = "optimal"
    mapping: Optional[str] = None  # None: the spec's default mapping
    aa_production_steps: Optional[int] = None  # None: the spec's size protocol
    n_members: int = 8
    teacher_arch: str = "hipnn"
    teacher_preset: str = "large"
    teacher_epochs: int = 30
    student_arch: str = "hipnn"
    student_preset: str = "small"
    student_epochs: int = 30
    force_target: str = "mean"
    # "none": on the reline quick data every energy target (per-bead or total, raw ensemble means) made the
    # student worse (docs/benchmarks.md, the KD table): mean/node RDF TAE 0.087 vs 0.077 for mean/none over 3 seeds
    energy_target: str = "none"
    energy_gauge: str = "free"  # used when energy_target is not "none" (cgkd.kd.train_student)
    control: bool = True  # also train the student architecture on mapped forces only
    native: bool = True  # also fit native students: on force_target labels ("native") and mapped forces (MS-CG)
    cg_replicas: int = 2
    cg_steps: int = 5000
    # ps, neural models; None: the model's default (cgkd.openmm.md.default_timestep: 16 fs, which kept temperature
    # and structure of the reline students over 8 x 1 ns, docs/benchmarks.md 5c; 2 fs with bonded priors)
    cg_timestep: Optional[float] = None
    # ps, native students, None: their default as above. They run the student's simulated time, cg_steps steps of it.
    native_timestep: Optional[float] = None
    cg_friction: float = 1.0  # 1/ps
    cg_report_interval: int = 50
    backend: Optional[str] = None  # None: TorchForce where it loads, else PythonForce
    workers: int = 1
    ensemble_md: bool = False  # also run CG MD with the teacher ensemble's mean (n_members force calls per step)
    seed: Optional[int] = None  # seed of training and CG MD (None: the spec's seed); the AA stage keeps the spec's
    # > 0: also the student on synthetic configurations (cgkd.synthetic: its own CG MD, ensemble labels), this many
    # rounds, as the model "synthetic"; 0: not made. 4 by default: on water and on reline (docs/benchmarks.md 5f)
    # four rounds cut the small student's force error by 51 and 18 kJ/mol/nm and its RDF error, in every seed
    synthetic_rounds: int = 4
    synthetic_per_round: int = 32  # configurations added per round
    synthetic_md_ps: float = 20.0  # CG MD per replica and round (cg_replicas replicas; a tenth, at most 2 ps, dropped)

    def __post_init__(self):
        for name in ("n_members", "teacher_epochs", "student_epochs", "cg_replicas", "cg_steps", "cg_report_interval",
                     "workers", "synthetic_per_round"):
            if getattr(self, name) < 1:
                raise ValueError(f"Preset.{name} must be >= 1, got {getattr(self, name)}")
        if self.synthetic_rounds < 0:
            raise ValueError(f"Preset.synthetic_rounds must be >= 0 (0: no synthetic student), got {self.synthetic_rounds}")
        if not self.synthetic_md_ps > 0:
            raise ValueError(f"Preset.synthetic_md_ps must be > 0, got {self.synthetic_md_ps}")
        if self.energy_gauge not in ("free", "fixed"):
            raise ValueError(f"Preset.energy_gauge must be 'free' or 'fixed', got {self.energy_gauge!r}")
        for name in ("cg_timestep", "native_timestep", "cg_friction"):
            if getattr(self, name) is None and name != "cg_friction":
                continue
            if not getattr(self, name) > 0:
                raise ValueError(f"Preset.{name} must be > 0, got {getattr(self, name)}")


PRESETS: Dict[str, Preset] = {
    "test": Preset(
        size="test", n_members=2, teacher_preset="small", teacher_epochs=2, student_epochs=2,
        cg_replicas=1, cg_steps=100, cg_report_interval=10, control=False,
        cg_timestep=0.004,  # models of 2 epochs on a few frames: a short step for the tests
        synthetic_rounds=0,  # the stage has its own test (tests/integration/test_pipeline.py)
    ),
    # ~14 minutes on 2 CPU cores (833 s of stages, 2026-12-02): teachers medium (8.5k parameters), students small
    # (1.2k parameters), 4 synthetic rounds (240 s of it).
    "quick": Preset(size="quick", teacher_preset="medium", teacher_epochs=15, student_epochs=30, workers=2),
    "paper": Preset(
        size="paper", teacher_epochs=200, student_epochs=200, cg_replicas=8, cg_steps=62_500,  # 8 x 1 ns
        cg_report_interval=250,
    ),
}


def load_preset(preset: str | Path | Preset, spec: Optional[SystemSpec] = None) -> Preset:
    """A :class:`Preset`: a shipped name (``test``, ``quick``, ``paper``), a YAML file of Preset fields, or a Preset.

    With ``spec``, a shipped name is updated by the spec's own ``presets`` entry of that name (a system
    may need longer CG runs or the ensemble's MD, as a peptide's free-energy surface does).

    Raises ``ValueError`` for an unknown name or an unknown or ill-typed key in the file, ``FileNotFoundError``
    for a missing ``.yaml``/``.yml`` file.
    """
    if isinstance(preset, Preset):
        return preset
    text = str(preset)
    if text in PRESETS:
        base = PRESETS[text]
        if spec is not None and text in spec.presets:
            return from_dict(Preset, to_dict(base) | dict(spec.presets[text]), where=f"{spec.name}.presets.{text}")
        return base
    if isinstance(preset, Path) or text.endswith((".yaml", ".yml")) or Path(text).is_file():
        return load_yaml(Preset, preset)
    raise ValueError(f"preset must be one of {sorted(PRESETS)}, a YAML file of Preset fields or a Preset, got {preset!r}")


STAGES = ["aa", "map", "teachers", "labels", "student", "control", "synthetic", "native", "export", "cgmd", "compare"]


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Run:
    """A run directory with cached, resumable stages."""

    def __init__(self, spec: SystemSpec, preset: Preset, run_dir: Path, device: str = "cpu",
                 log: Callable[[str], None] = print):
        self.spec = spec
        self.preset = preset
        self.dir = Path(run_dir)
        self.device = device
        self.log = log
        self.dir.mkdir(parents=True, exist_ok=True)
        self._keys: Dict[str, str] = {}

    def key(self, stage: str, depends: list, settings: dict) -> str:
        k = _hash({"stage": stage, "upstream": [self._keys[d] for d in depends], "settings": settings})
        self._keys[stage] = k
        return k

    def stage(self, name: str, depends: list, settings: dict, body: Callable[[Path], dict]) -> dict:
        """Run ``body(stage_dir) -> summary`` unless a finished stage with the same key exists.

        A stage whose inputs or settings changed is redone in a staging folder ``.<name>.<key>`` that replaces
        the old stage folder only when it has finished (the old result stays intact until then, and a killed
        redo resumes in its staging folder). An interrupted stage with the same key resumes in place.
        """
        key = self.key(name, depends, settings)
        folder = self.dir / name
        marker = folder / "stage.json"
        started = folder / "stage.key"
        if marker.is_file():
            done = json.loads(marker.read_text())
            if done.get("key") == key:
                self.log(f"[{name:8s}] cached  {done.get('line', '')}")
                return done["summary"]
        in_place = not folder.exists() or (not marker.is_file() and started.is_file()
                                           and started.read_text().strip() == key)
        work = folder if in_place else self.dir / f".{name}.{key}"
        if not in_place:
            self.log(f"[{name:8s}] inputs or settings changed: redoing it in {work} (the old result stays until then)")
        elif started.is_file():
            self.log(f"[{name:8s}] resuming the interrupted stage in {folder}")
        work.mkdir(parents=True, exist_ok=True)
        write_text(work / "stage.key", key)
        t0 = time.perf_counter()
        summary = body(work)
        wall = time.perf_counter() - t0
        line = summary.pop("line", "")
        if work != folder:  # paths in the summary name the final folder
            summary = json.loads(json.dumps(summary).replace(json.dumps(str(work))[1:-1], json.dumps(str(folder))[1:-1]))
            line = line.replace(str(work), str(folder))
        write_text(work / "stage.json", json.dumps({"key": key, "summary": summary, "line": line, "wall_s": wall}, indent=1))
        if work != folder:
            swap_in_folder(work, folder)
        self.log(f"[{name:8s}] {wall:7.1f} s  {line}")
        return summary


def _train_config(epochs: int, seed: int, device: str, threads: int | None):
    from cgkd.train.trainer import TrainConfig

    return TrainConfig(max_epochs=epochs, seed=seed, device=device, threads=threads, progress=False)


def run_pipeline(spec: SystemSpec | str | Path, preset: str | Path | Preset = "quick", run_dir: str | Path = "runs/run",
                 *, device: str = "cpu", log: Callable[[str], None] = print) -> Path:
    """Run every stage of the pipeline in ``run_dir``; returns the path of the report (``report.md``).

    Parameters
    ----------
    spec : SystemSpec, path or shipped name ("reline", "water")
    preset : "test", "quick", "paper", a YAML file of :class:`Preset` fields, or a Preset (see :func:`load_preset`)
    run_dir : folder of the run; rerunning the same command resumes and skips finished stages
    device : torch device for training ("cpu" or "cuda")
    """
    if not isinstance(spec, SystemSpec):
        spec = load_spec(spec)
    p = load_preset(preset, spec)
    spec.size(p.size)  # fails early for an unknown size
    run = Run(spec, p, Path(run_dir), device=device, log=log)
    seed = spec.seed if p.seed is None else int(p.seed)
    threads = 1 if p.workers > 1 else None
    log(f"cgkd run: system {spec.name}, size {p.size}, run directory {run.dir}")

    def aa(folder: Path) -> dict:
        from cgkd.aa import simulate
        from cgkd.io.aa_h5 import n_frames as aa_n_frames, read_aa

        from cgkd.analysis.sampling import aa_sampling_report, format_report

        out = simulate(spec, size=p.size, out=folder / "aa.h5", production_steps=p.aa_production_steps, progress=True)
        aa_data = read_aa(out)
        n = aa_n_frames(out)
        sampling = aa_sampling_report(aa_data)
        write_text(folder / "sampling.json", json.dumps(sampling, indent=1))
        for line in format_report(sampling).splitlines():
            log(f"  AA sampling: {line}")
        # a solute's clock first (its dihedrals, else its basin visits), then the liquid's structure
        eff = sampling.get("n_eff_dihedrals") or sampling.get("basin_visits") or sampling.get("n_eff_structure")
        return {"path": str(out), "atoms": aa_data.n_atoms, "frames": n, "sampling": sampling,
                "line": f"AA MD: {aa_data.n_atoms} atoms, {n} frames -> {out}; about "
                        f"{'n/a' if eff is None else f'{eff:.0f}'} independent configurations"}

    s_aa = run.stage("aa", [], {"spec": to_dict(spec) | {"source": ""}, "size": p.size,
                                 "steps": p.aa_production_steps}, aa)

    def mapping(folder: Path) -> dict:
        from cgkd.data.mapped import map_aa
        from cgkd.data.cg_h5 import write_cg
        from cgkd.io.aa_h5 import read_aa

        data, report = map_aa(read_aa(s_aa["path"]), mapping=p.mapping, force_map=p.force_map, source=s_aa["path"])
        out = folder / "cg.h5"
        write_cg(out, data)
        msf = data.attrs.get("mean_squared_force", {})
        ratio = ""
        if isinstance(msf, dict) and msf.get("basic") and msf.get("optimal"):
            ratio = f", mapped-force variance optimal/basic {msf['optimal'] / msf['basic']:.3f}"
        return {"path": str(out), "beads": data.n_beads, "frames": data.n_frames,
                "line": f"mapped to {data.n_beads} beads ({', '.join(data.type_names)}), force map {p.force_map}{ratio}"}

    s_map = run.stage("map", ["aa"], {"mapping": p.mapping, "force_map": p.force_map}, mapping)
    cg_path = s_map["path"]

    def teachers(folder: Path) -> dict:
        from cgkd.kd import train_teachers

        res = train_teachers(cg_path, folder, n_members=p.n_members, arch=p.teacher_arch, preset=p.teacher_preset,
                             config=_train_config(p.teacher_epochs, seed, device, threads), n_workers=p.workers)
        spe = sum(float(r.get("seconds_per_epoch", 0.0)) for r in res) / max(len(res), 1)
        return {"dir": str(folder), "members": len(res),
                "line": f"{len(res)} teachers ({p.teacher_arch}/{p.teacher_preset}), {spe:.1f} s/epoch per member"}

    s_t = run.stage("teachers", ["map"], {"n": p.n_members, "arch": p.teacher_arch, "preset": p.teacher_preset,
                                          "epochs": p.teacher_epochs, **({} if p.seed is None else {"seed": seed})},
                    teachers)

    def labels(folder: Path) -> dict:
        from cgkd.kd import ensemble_errors, make_labels

        out = folder / "cg_labelled.h5"
        shutil.copyfile(cg_path, out)
        make_labels(out, s_t["dir"], device=device)
        err = ensemble_errors(out, s_t["dir"])
        return {"path": str(out), "errors": err,
                "line": "held-out force RMSE vs mapped: members "
                        + ", ".join(f"{x:.1f}" for x in err.get("member_rmse", [])) + f"; ensemble mean {err['mean_rmse']:.1f} kJ/mol/nm"}

    s_l = run.stage("labels", ["teachers"], {}, labels)

    def student_body(force_target: str, energy_target: str):
        def body(folder: Path) -> dict:
            from cgkd.kd import train_student

            info = train_student(s_l["path"], s_t["dir"], folder, force_target=force_target,
                                 energy_target=energy_target, energy_gauge=p.energy_gauge,
                                 arch=p.student_arch, preset=p.student_preset,
                                 config=_train_config(p.student_epochs, seed + 1000, device, 1))
            return {"model": str(folder / "model.pt"), "info": info,
                    "line": f"{p.student_arch}/{p.student_preset} on {force_target} forces + {energy_target} energies: "
                            f"held-out force RMSE {info['force_rmse_vs_label']:.1f} vs label, "
                            f"{info['force_rmse_vs_mapped']:.1f} vs mapped kJ/mol/nm"}
        return body

    student_settings = {"arch": p.student_arch, "preset": p.student_preset, "epochs": p.student_epochs}
    s_s = run.stage("student", ["labels"], student_settings | {"f": p.force_target, "e": p.energy_target,
                                                               "gauge": p.energy_gauge},
                    student_body(p.force_target, p.energy_target))
    # one member of the ensemble, labelled as such (its CG MD stands for "a single teacher")
    models = {"member_00": str(Path(s_t["dir"]) / "member_00" / "model.pt"), "student": s_s["model"]}
    if p.control:
        s_c = run.stage("control", ["labels"], student_settings, student_body("mapped", "none"))
        models["control"] = s_c["model"]

    if p.synthetic_rounds:
        def synthetic_body(folder: Path) -> dict:
            from cgkd.synthetic import synthetic_rounds

            recs = synthetic_rounds(cg_path, s_t["dir"], folder, rounds=p.synthetic_rounds,
                                    per_round=p.synthetic_per_round, md_ps=p.synthetic_md_ps,
                                    replicas=p.cg_replicas, skip_ps=min(2.0, 0.1 * p.synthetic_md_ps),
                                    arch=p.student_arch, preset=p.student_preset, timestep=p.cg_timestep,
                                    config=_train_config(p.student_epochs, seed + 1000, device, 1), seed=seed)
            first, last = recs[0], recs[-1]
            return {"model": str(folder / f"round_{last['round']:02d}" / "model.pt"), "rounds": recs,
                    "line": f"{last['round']} rounds, {last['n_synthetic']} synthetic configurations: held-out force "
                            f"RMSE vs mapped {first['force_rmse_vs_mapped']:.1f} (round 0) -> "
                            f"{last['force_rmse_vs_mapped']:.1f} kJ/mol/nm; ensemble disagreement on its own MD "
                            f"{last['own_md_mean_force_std']:.1f} (held-out AA {last['aa_mean_force_std']:.1f})"}

        s_syn = run.stage("synthetic", ["teachers"], student_settings | {
            "rounds": p.synthetic_rounds, "per_round": p.synthetic_per_round, "md_ps": p.synthetic_md_ps,
            "replicas": p.cg_replicas, "dt": p.cg_timestep}, synthetic_body)
        models["synthetic"] = s_syn["model"]

    native_models: Dict[str, str] = {}
    if p.native:
        def native_body(folder: Path) -> dict:
            from cgkd.kd.native import train_native_student

            targets = {"native": p.force_target}
            if p.force_target != "mapped":
                targets["native_mscg"] = "mapped"
            info = {label: train_native_student(s_l["path"], folder / label, teacher_dir=s_t["dir"], force_target=t)
                    for label, t in targets.items()}
            return {"models": {label: i["model"] for label, i in info.items()}, "info": info,
                    "line": "native students: " + "; ".join(
                        f"{label} on {targets[label]} forces, held-out force RMSE {i['held_out_rmse_vs_mapped']:.1f} "
                        "vs mapped kJ/mol/nm" for label, i in info.items() if i["held_out_rmse_vs_mapped"] is not None)}

        s_n = run.stage("native", ["labels"], {"f": p.force_target}, native_body)
        native_models = s_n["models"]

    def export(folder: Path) -> dict:
        from cgkd.export import export_model

        out = {}
        for label, model in models.items():
            path = folder / f"{label}.pt"
            export_model(model, cg_path, path)
            out[label] = str(path)
        if p.ensemble_md:
            from cgkd.export import export_ensemble

            export_ensemble(s_t["dir"], cg_path, folder / "ensemble.pt")
            out["ensemble"] = str(folder / "ensemble.pt")
        return {"artefacts": out, "line": "exported " + ", ".join(f"{k} -> {v}" for k, v in out.items())}

    s_e = run.stage("export", ["student"] + (["control"] if p.control else []) + (["synthetic"] if p.synthetic_rounds else []),
                    {"models": sorted(models), "ensemble": p.ensemble_md}, export)

    def cgmd(folder: Path) -> dict:
        from cgkd.openmm.md import model_timestep, run_cg_md

        out, parts = {}, []
        student_dt = p.cg_timestep or model_timestep(s_e["artefacts"]["student"])
        for label, artefact in {**s_e["artefacts"], **native_models}.items():
            dt, steps, every = p.cg_timestep or model_timestep(artefact), p.cg_steps, p.cg_report_interval
            if label in native_models:  # the student's simulated time and frame spacing, at the native step
                dt = p.native_timestep or model_timestep(artefact)
            ratio = student_dt / dt
            steps, every = max(1, round(steps * ratio)), max(1, round(every * ratio))
            summary = run_cg_md(artefact, cg_path, folder / label, n_replicas=p.cg_replicas, steps=steps,
                                timestep=dt, friction=p.cg_friction, report_interval=every,
                                backend=p.backend, seed=seed, progress=True)
            out[label] = {"dir": str(folder / label), "summary": summary}
            parts.append(f"{label} {summary['survived']}/{summary['n_replicas']} stable, "
                         f"{summary['ns_per_day'] or float('nan'):.1f} ns/day")
        return {"runs": out, "line": "; ".join(parts)}

    s_md = run.stage("cgmd", ["export"] + (["native"] if p.native else []), {"replicas": p.cg_replicas, "steps": p.cg_steps, "dt": p.cg_timestep,
                                          "native_dt": p.native_timestep,
                                          "friction": p.cg_friction, "every": p.cg_report_interval,
                                          "backend": p.backend}, cgmd)

    def compare_body(folder: Path) -> dict:
        from cgkd.analysis import compare

        import numpy as np

        from cgkd.data.cg_h5 import read_cg
        from cgkd.kd.teachers import read_split

        # the AA reference is the frames no model trained on (the teachers' validation and test blocks)
        split = read_split(s_t["dir"])
        held_out = np.asarray(split["val"] + split["test"], dtype=np.int64)
        reference = read_cg(cg_path).subset(held_out)
        runs = {label: r["dir"] for label, r in s_md["runs"].items()
                if any(rep.get("steps_done", 0) >= r["summary"]["report_interval"] for rep in r["summary"]["replicas"])}
        for label in sorted(set(s_md["runs"]) - set(runs)):
            log(f"  compare: {label} left out (every replica failed before its first frame)")
        res = compare(reference, runs, folder,
                      reference_label=f"AA (mapped, {len(held_out)} held-out frames)",
                      dynamics_reference=read_cg(cg_path))
        rows = []
        for label, errs in res["errors"].items():
            by_kind: Dict[str, list] = {}
            for prop, v in errs.items():
                by_kind.setdefault(prop.split()[0], []).append(v["tae"])
            rows.append(label + " " + " ".join(f"{k} {sum(v) / len(v):.3f}" for k, v in sorted(by_kind.items())))
        return {"report": str(folder / "report.md"), "errors": res["errors"],
                "line": "mean total absolute error vs AA: " + "; ".join(rows)}

    s_cmp = run.stage("compare", ["cgmd"], {}, compare_body)
    log(f"report: {s_cmp['report']}")
    return Path(s_cmp["report"])
