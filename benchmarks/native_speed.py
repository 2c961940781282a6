"""Native student speed (issue 10), every ratio measured within one run of this script, one thread each.

1. ``encodings``: ms per MD step of the native student's pair forces in each OpenMM encoding
   (``cgkd.openmm.native.ENCODINGS``) against a ``NonbondedForce`` Lennard-Jones of the same beads and cutoff
   (the speed of light for a pair force in OpenMM), on the CG box and on the box replicated to >= 10k beads;
2. ``table``: ns/day of AA MD of the same system (its own 2 fs step), the neural student and the 8-teacher
   ensemble (TorchForce, 4 fs) and the native students (4 fs and larger steps), with the ratio to AA;
3. ``timestep``: for each CG model, replicas at increasing time steps: survival, mean temperature, and the
   RDF total absolute error against the AA (mapped) reference;
4. ``scaling``: native cost per bead-step from ~1k to ~100k beads (the box replicated).

Usage (after ``make demo``, which writes runs/reline-quick)::

    python -m benchmarks.native_speed --run-dir runs/reline-quick --preset cpu
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Sequence, Tuple

import numpy as np

from benchmarks.common import save_result
from benchmarks.speed import replicate_box


@dataclass(frozen=True)
class NativePreset:
    steps_small: int = 2000  # MD steps timed at the CG box size
    steps_large: int = 50  # at >= 10k beads
    large_reps: int = 5  # 120 * 5^3 = 15,000 beads for the reline quick box
    aa_steps: int = 500
    neural_steps: int = 1000
    timesteps: Tuple[float, ...] = (0.004, 0.008, 0.016, 0.024, 0.032)  # ps
    ts_replicas: int = 2
    ts_ps: float = 500.0  # simulated ps per native replica in the time-step probe
    ts_neural_ps: float = 20.0
    scaling_reps: Tuple[int, ...] = (2, 3, 5, 7, 10)


PRESETS: Dict[str, NativePreset] = {
    "tiny": NativePreset(steps_small=50, steps_large=5, large_reps=2, aa_steps=20, neural_steps=20,
                         timesteps=(0.004, 0.016), ts_replicas=1, ts_ps=1.0, ts_neural_ps=0.4, scaling_reps=(1, 2)),
    "cpu": NativePreset(),
    "gpu": NativePreset(steps_small=20000, steps_large=2000, large_reps=7, aa_steps=20000, neural_steps=20000,
                        ts_ps=400.0, ts_neural_ps=100.0, scaling_reps=(2, 3, 5, 7, 10, 14)),
}


def _context(system, platform: str = "CPU", dt: float = 0.004, temperature: float = 300.0, friction: float = 1.0):
    import openmm

    integ = openmm.LangevinMiddleIntegrator(temperature, friction, dt)
    props = {"Threads": "1"} if platform == "CPU" else {}
    return openmm.Context(system, integ, openmm.Platform.getPlatformByName(platform), props), integ


def ms_per_step(system, positions, box, steps: int, platform: str = "CPU", dt: float = 0.004,
                temperature: float = 300.0) -> float:
    """Milliseconds per MD step (after 10 warm-up steps) of ``system`` from ``positions``."""
    import openmm

    ctx, integ = _context(system, platform, dt, temperature)
    if box is not None:
        ctx.setPeriodicBoxVectors(*[openmm.Vec3(*map(float, row)) for row in box])
    ctx.setPositions(np.asarray(positions, dtype=np.float64))
    ctx.setVelocitiesToTemperature(temperature, 1)
    integ.step(10)
    ctx.getState(getEnergy=True)
    t0 = time.perf_counter()
    integ.step(steps)
    ctx.getState(getEnergy=True)
    return 1e3 * (time.perf_counter() - t0) / steps


def lj_reference(n: int, masses: np.ndarray, box: np.ndarray, cutoff: float):
    """A NonbondedForce LJ System on the same particles and cutoff (sigma 0.4 nm, eps 1 kJ/mol)."""
    import openmm

    s = openmm.System()
    for m in masses:
        s.addParticle(float(m))
    s.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*map(float, row)) for row in box])
    f = openmm.NonbondedForce()
    f.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    f.setCutoffDistance(cutoff)
    f.setUseDispersionCorrection(False)
    for _ in range(n):
        f.addParticle(0.0, 0.4, 1.0)
    s.addForce(f)
    return s


PLATFORM = "CPU"  # set by --platform; CPU runs use one thread


def encodings(model, data, p: NativePreset) -> list:
    """ms/step per encoding and of the LJ reference, at the CG box size and replicated to >= 10k beads."""
    from cgkd.openmm.native import ENCODINGS, native_system
    from cgkd.topology import Topology

    rows = []
    for reps, steps in ((1, p.steps_small), (p.large_reps, p.steps_large)):
        pos, types, box = replicate_box(data.positions[0], data.types, data.box[0], reps)
        top = Topology(data.type_names, types, np.tile(data.masses, reps**3))
        row = {"n_beads": len(pos), "steps": steps}
        for enc in ENCODINGS:
            if enc == "analytic" and model.analytic is None:
                continue
            if enc == "groups" and len(pos) > 5000:
                row[enc] = None  # interaction groups on the CPU platform loop over all group pairs: seconds per step
                continue
            row[enc] = ms_per_step(native_system(model, top, box=box, encoding=enc), pos, box, steps, PLATFORM)
        row["nonbonded_lj"] = ms_per_step(lj_reference(len(pos), top.masses, box, model.cutoff), pos, box, steps,
                                          PLATFORM)
        rows.append(row)
        print(f"  encodings at {len(pos)} beads (ms/step): " + ", ".join(
            f"{k} {v:.3f}" for k, v in row.items() if k not in ("n_beads", "steps") and v is not None), flush=True)
    return rows


def aa_rate(spec: str, size: str, steps: int) -> dict:
    """AA ns/day with one CPU thread and the spec's integrator."""
    from cgkd.aa.build import build
    from cgkd.io.spec import load_spec

    return _time_aa(build(load_spec(spec), size, seed=0), steps, warmup=20)


def _time_aa(aa, steps: int, warmup: int) -> dict:
    """ms/step and ns/day of a built AA system (``cgkd.aa.build``) with the spec's integrator on ``PLATFORM``."""
    import openmm

    from cgkd.aa.build import make_integrator

    integ = make_integrator(aa.spec, 0)
    props = {"Threads": "1"} if PLATFORM == "CPU" else {}
    ctx = openmm.Context(aa.system, integ, openmm.Platform.getPlatformByName(PLATFORM), props)
    if aa.box is not None:
        ctx.setPeriodicBoxVectors(*aa.box)
    ctx.setPositions(aa.positions)
    ctx.setVelocitiesToTemperature(aa.spec.temperature, 0)
    integ.step(warmup)
    t0 = time.perf_counter()
    integ.step(steps)
    ctx.getState(getEnergy=True)
    wall = time.perf_counter() - t0
    dt = integ.getStepSize().value_in_unit(openmm.unit.picosecond)
    return {"n_atoms": aa.system.getNumParticles(), "timestep_ps": dt, "ms_per_step": 1e3 * wall / steps,
            "ns_per_day": steps * dt * 1e-3 / wall * 86400.0}


def model_rate(artefact, data, steps: int, dt: float) -> dict:
    """ms/step and ns/day of a CG model (exported artefact via TorchForce, or a native model) at ``dt``."""
    import torch

    from cgkd.nn.native import NativeModel
    from cgkd.openmm.native import native_system
    from cgkd.openmm.system import create_system

    box = data.box[0]
    if isinstance(artefact, NativeModel):
        system = native_system(artefact, data.topology, box=box)
    else:
        system = create_system(artefact, data.topology, box=box, backend="torch")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ms = ms_per_step(system, data.positions[0], box, steps, PLATFORM, dt=dt, temperature=data.temperature)
    finally:
        torch.set_num_threads(old)
    return {"timestep_ps": dt, "ms_per_step": ms, "ns_per_day": dt * 1e-3 / (ms * 1e-3) * 86400.0}


def timestep_probe(models: Dict[str, object], cg_path, timesteps: Sequence[float], replicas: int, ps: Dict[str, float],
                   out_dir: Path) -> list:
    """Replicas per model and time step: survival, mean temperature and RDF TAE against the mapped AA data."""
    from cgkd.analysis.frames import concat, load_frames
    from cgkd.analysis.metrics import total_absolute_error
    from cgkd.analysis.rdf import default_r_max, rdf
    from cgkd.data.cg_h5 import read_cg
    from cgkd.openmm.md import run_cg_md

    ref_data = read_cg(cg_path)
    ref = load_frames(ref_data)[0]
    r_max = default_r_max(ref)
    nt = len(ref_data.type_names)
    pairs = [(a, b) for a in range(nt) for b in range(a, nt)]
    ref_g = {pr: rdf(ref, pr[0], pr[1], r_max, 100) for pr in pairs}
    rows = []
    for label, model in models.items():
        for dt in timesteps:
            steps = int(round(ps[label] / dt))
            interval = max(1, int(round(0.5 / dt)))  # a frame every 0.5 ps
            folder = out_dir / f"{label}_{dt * 1000:.0f}fs"
            t0 = time.perf_counter()
            s = run_cg_md(model, cg_path, folder, n_replicas=replicas, steps=steps, timestep=dt,
                          report_interval=interval, platform=PLATFORM, progress=False)
            wall = time.perf_counter() - t0
            temps = []
            for rep in s["replicas"]:
                csv = folder / rep["energies"]
                vals = np.loadtxt(csv, delimiter=",", skiprows=1, ndmin=2)
                if len(vals):
                    temps.append(vals[len(vals) // 5:, 4].mean() if len(vals) > 5 else vals[:, 4].mean())
            tae = None
            if s["survived"]:
                try:
                    segs = [f for f in load_frames(folder)]
                    frames = concat([f for f in segs if f.n_frames > 2]) if len(segs) > 1 else segs[0]
                    taes = [total_absolute_error(ref_g[pr][1], rdf(frames, pr[0], pr[1], r_max, 100)[1],
                                                 float(ref_g[pr][0][1] - ref_g[pr][0][0]), normalize=False)
                            for pr in pairs]  # as cgkd.analysis.compare: sum |g - g_ref| dr
                    tae = float(np.mean(taes))
                except ValueError:
                    tae = None
            row = {"model": label, "timestep_ps": dt, "replicas": replicas, "simulated_ps": ps[label],
                   "survived": s["survived"], "failures": [r["failure"] for r in s["replicas"] if r["failure"]],
                   "mean_temperature_K": float(np.mean(temps)) if temps else None, "rdf_tae": tae, "wall_s": wall}
            rows.append(row)
            print(f"  {label} {dt * 1000:.0f} fs: {row['survived']}/{replicas} survived {ps[label]:.0f} ps, "
                  f"T {row['mean_temperature_K'] or float('nan'):.1f} K, RDF TAE {tae if tae is None else round(tae, 3)}",
                  flush=True)
    return rows


def large_box(spec_name: str, units_count: int, models: Dict[str, object], steps: int = 10) -> dict:
    """AA and CG MD on one large box: the spec's quick protocol with ``units_count`` formula units, minimised
    briefly, its CG positions from the spec's default mapping; ms/step and ns/day of AA and of each CG model."""
    import dataclasses


    from cgkd.aa.build import build
    from cgkd.io.spec import load_spec
    from cgkd.mapping import Mapping
    from cgkd.nn.native import NativeModel
    from cgkd.openmm.native import native_system
    from cgkd.openmm.system import create_system

    spec = load_spec(spec_name)
    quick = spec.size("quick")
    spec = dataclasses.replace(spec, sizes={**spec.sizes, "large": dataclasses.replace(
        quick, units=int(units_count), minimize_iterations=100)})
    t0 = time.perf_counter()
    aa = build(spec, "large", seed=0, platform=PLATFORM)
    build_s = time.perf_counter() - t0
    aa_rate_row = _time_aa(aa, steps, warmup=2)
    aa_ms, dt_aa = aa_rate_row["ms_per_step"], aa_rate_row["timestep_ps"]
    masses = np.array([aa.system.getParticleMass(k)._value for k in range(aa.system.getNumParticles())])
    mapping = Mapping.from_spec(aa.topology, spec.mapping(), masses=masses)
    cg_pos = mapping.map_positions(aa.positions[None], aa.box[None])[0]
    top = mapping.topology()
    out = {"n_atoms": aa.system.getNumParticles(), "n_beads": top.n_particles, "build_s": build_s,
           "aa": aa_rate_row}
    print(f"  large box: {out['n_atoms']} atoms, {out['n_beads']} beads; AA {aa_ms:.1f} ms/step", flush=True)
    for label, model in models.items():
        if isinstance(model, NativeModel):
            system = native_system(model, top, box=aa.box)
        else:
            system = create_system(model, top, box=aa.box, backend="torch")
        ms = ms_per_step(system, cg_pos, aa.box, steps, PLATFORM, dt=0.004, temperature=aa.spec.temperature)
        out[label] = {"ms_per_step": ms, "ns_per_day_at_4fs": 0.004e-3 / (ms * 1e-3) * 86400.0,
                      "x_aa_per_step_at_4fs": (0.004 / ms) / (dt_aa / aa_ms)}
        print(f"  large box {label}: {ms:.1f} ms/step, {out[label]['x_aa_per_step_at_4fs']:.1f}x AA at 4 fs",
              flush=True)
    return out


def scaling(model, data, reps_list: Sequence[int]) -> list:
    from cgkd.openmm.native import native_system
    from cgkd.topology import Topology

    rows = []
    for k in reps_list:
        pos, types, box = replicate_box(data.positions[0], data.types, data.box[0], k)
        top = Topology(data.type_names, types, np.tile(data.masses, k**3))
        steps = max(5, int(200000 / len(pos)))
        ms = ms_per_step(native_system(model, top, box=box), pos, box, steps, PLATFORM, temperature=data.temperature)
        rows.append({"n_beads": len(pos), "ms_per_step": ms, "us_per_bead_step": 1e3 * ms / len(pos)})
        print(f"  native {len(pos)} beads: {rows[-1]['us_per_bead_step']:.3f} us/bead-step", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/reline-quick", help="finished `cgkd run` directory")
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    parser.add_argument("--spec", default="reline")
    parser.add_argument("--size", default="quick")
    parser.add_argument("--skip", nargs="*", default=[], choices=["encodings", "table", "timestep", "scaling"])
    parser.add_argument("--timesteps", type=float, nargs="+", default=None, metavar="PS",
                        help="time steps (ps) of the probe instead of the preset's")
    parser.add_argument("--models", nargs="+", default=None, choices=["native", "native_mscg", "native_powers", "student"],
                        help="models of the time-step probe (default all)")
    parser.add_argument("--large-units", type=int, default=0, metavar="N",
                        help="also build an AA box of N formula units (2500 for >= 10k reline beads) and time AA and "
                             "the CG models on it (a few minutes of building; default off)")
    parser.add_argument("--ps", type=float, default=None,
                        help="simulated ps per replica in the time-step probe, for every model (default: the preset's)")
    parser.add_argument("--platform", default="CPU", choices=["CPU", "CUDA", "OpenCL", "Reference"],
                        help="OpenMM platform (CPU: one thread); the gpu preset with CUDA is the GPU table")
    parser.add_argument("--out", default=None, help="result folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    global PLATFORM
    PLATFORM = args.platform
    p = PRESETS[args.preset]
    run = Path(args.run_dir)
    cg_path = run / "map" / "cg.h5"
    native_path = run / "native" / "native" / "native.json"
    mscg_path = run / "native" / "native_mscg" / "native.json"
    student_model = run / "student" / "model.pt"
    for f in (cg_path, native_path, mscg_path, student_model, run / "teachers" / "ensemble.json"):
        if not f.exists():
            raise FileNotFoundError(f"{f} does not exist; finish `cgkd run` in {run} first")

    from cgkd.data.cg_h5 import read_cg
    from cgkd.export import export_cg_potential, export_model, load_potential_artefact
    from cgkd.kd.teachers import load_teachers
    from cgkd.nn.ensemble import EnsemblePotential
    from cgkd.nn.native import load_native

    from cgkd.kd.native import train_native_student

    data = read_cg(cg_path, frames=slice(0, 1))
    native, mscg = load_native(native_path), load_native(mscg_path)
    tmp_root = Path(tempfile.mkdtemp(prefix="cgkd_native_speed_"))
    # the analytic (powers) native student on the same labels and split as the run's native student
    labelled = run / "labels" / "cg_labelled.h5"
    try:
        fast_info = train_native_student(labelled, tmp_root / "powers", teacher_dir=run / "teachers",
                                         force_target="mean", basis="powers")
        fast = load_native(fast_info["model"])
        print(f"  native_powers fitted: held-out force RMSE {fast_info['held_out_rmse_vs_mapped']:.1f} vs mapped",
              flush=True)
    except ValueError as exc:  # the fit refuses an expansion that does not repel at short range
        fast_info, fast = {"refused": str(exc)}, None
        print(f"  native_powers refused: {exc}", flush=True)
    result: dict = {"preset": args.preset, "platform": PLATFORM, "run_dir": str(run), "n_beads": int(data.n_beads),
                    "threads": 1 if PLATFORM == "CPU" else None}
    result["native_powers_fit"] = fast_info
    if "encodings" not in args.skip:
        result["encodings"] = encodings(native, data, p)
        if fast is not None:
            result["encodings_powers_model"] = encodings(fast, data, p)
    with tempfile.TemporaryDirectory() as tmp:
        # exported here, so the student runs with this cgkd's export (not the run's older artefact)
        student_pt = Path(tmp) / "student.pt"
        export_model(student_model, cg_path, student_pt)
        student = load_potential_artefact(student_pt)
        _, meta = student
        ens_pt = Path(tmp) / "ensemble.pt"
        export_cg_potential(EnsemblePotential(load_teachers(run / "teachers")), ens_pt,
                            type_masses=meta["type_masses"], periodic=bool(meta["periodic"]), dtype=meta["dtype"])
        ensemble = load_potential_artefact(ens_pt)
        if "table" not in args.skip:
            table = {"aa": aa_rate(args.spec, args.size, p.aa_steps)}
            print(f"  AA: {table['aa']['ns_per_day']:.1f} ns/day", flush=True)
            table["student"] = model_rate(student, data, p.neural_steps, 0.004)
            table["ensemble"] = model_rate(ensemble, data, max(10, p.neural_steps // 8), 0.004)
            for label, m in (("native", native), ("native_mscg", mscg), ("native_powers", fast)):
                if m is None:
                    continue
                table[label] = model_rate(m, data, p.steps_small, 0.004)
            for label, row in table.items():
                if label != "aa":
                    row["x_aa"] = row["ns_per_day"] / table["aa"]["ns_per_day"]
                    print(f"  {label}: {row['ns_per_day']:.1f} ns/day at 4 fs, {row['x_aa']:.1f}x AA", flush=True)
            result["table"] = table
        if "timestep" not in args.skip:
            models = {"native": native, "native_mscg": mscg, "native_powers": fast, "student": student_pt}
            if args.models:
                models = {k: v for k, v in models.items() if k in args.models}
            models = {k: v for k, v in models.items() if v is not None}
            ps = {"native": p.ts_ps, "native_mscg": p.ts_ps, "native_powers": p.ts_ps, "student": p.ts_neural_ps}
            if args.ps is not None:
                ps = {k: float(args.ps) for k in ps}
            result["timestep"] = timestep_probe(models, cg_path, args.timesteps or p.timesteps, p.ts_replicas, ps,
                                                Path(tmp))
        if args.large_units:
            big = {"native": native}
            if fast is not None:
                big["native_powers"] = fast
            big["student"] = student
            result["large_box"] = large_box(args.spec, args.large_units, big)
    if "scaling" not in args.skip:
        result["scaling"] = {"native": scaling(native, data, p.scaling_reps)}
        if fast is not None:
            result["scaling"]["native_powers"] = scaling(fast, data, p.scaling_reps)
    name = f"native_speed_{args.preset}_{PLATFORM.lower()}" + ("_" + "_".join(args.skip) if args.skip else "") + (
        "_" + "_".join(args.models) if args.models else "") + (f"_large{args.large_units}" if args.large_units else "")
    out = save_result(name.replace("-", "_"), result, args.out)
    if "table" in result and "timestep" in result:
        png = Path(args.out or "docs/benchmarks") / f"{name}.png"
        plot(result, png)
        print(f"wrote {png}")
    print(f"wrote {out}")
    return 0




def plot(result: dict, out_png) -> None:
    """Accuracy against speed: RDF TAE vs ns/day, one point per model and time step of the probe
    (ns/day = the table's 4 fs rate scaled by dt / 4 fs: a step's cost does not depend on dt); AA at TAE 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table, probe = result["table"], result["timestep"]
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.scatter([table["aa"]["ns_per_day"]], [0.0], marker="*", s=120, color="k", label="AA (the reference: 0 by definition)")
    for label in dict.fromkeys(r["model"] for r in probe):
        rows = [r for r in probe if r["model"] == label and r["survived"] == r["replicas"] and r["rdf_tae"] is not None]
        if not rows:
            continue
        speed = [table[label]["ns_per_day"] * r["timestep_ps"] / 0.004 for r in rows]
        ax.plot(speed, [r["rdf_tae"] for r in rows], "o-", label=label)
        for x, r in zip(speed, rows):
            ax.annotate(f"{r['timestep_ps'] * 1000:.0f} fs", (x, r["rdf_tae"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("ns/day (one CPU thread; reline quick box, 120 beads)")
    ax.set_ylabel("RDF total absolute error vs AA (mean over type pairs)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
