"""Speed benchmarks (issue 5, part 2), each ratio measured within one run of this script.

1. force evaluation throughput (energy + forces by autograd, frames/s) of the exported student vs the
   8-teacher ensemble (``cgkd.nn.ensemble.EnsemblePotential``), both TorchScript, on the reline CG box;
2. CG MD ns/day with the exported student (``TorchForce`` and ``PythonForce``) vs AA MD ns/day of the same
   reline box (``cgkd.aa.build`` + an OpenMM ``Context``);
3. cost per bead-step from ~1k to ~100k beads: the reline CG box replicated periodically, force evaluation
   time and peak-RSS increase per bead;
4. training throughput (frames/s of a training step) per architecture and preset (``cgkd.nn.benchmark``).

Usage::

    python -m benchmarks.speed --run-dir runs/reline-quick --preset cpu --device cpu
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch

from benchmarks.common import ROOT, check_device, peak_rss_bytes, reset_peak_rss, rss_bytes, save_result


@dataclass(frozen=True)
class SpeedPreset:
    force_repeats: int = 20
    cg_steps: int = 500
    aa_steps: int = 200
    scaling_reps: Tuple[int, ...] = (2, 3, 5, 7, 10)  # replicas per box edge: 120 * k^3 beads for reline quick
    scaling_repeats: int = 3
    train_presets: Tuple[str, ...] = ("small", "medium", "large")
    train_repeats: int = 3


PRESETS: Dict[str, SpeedPreset] = {
    "tiny": SpeedPreset(force_repeats=3, cg_steps=20, aa_steps=20, scaling_reps=(1, 2), scaling_repeats=1,
                        train_presets=("small",), train_repeats=1),
    "cpu": SpeedPreset(),
    "gpu": SpeedPreset(force_repeats=100, cg_steps=5000, aa_steps=5000, scaling_reps=(2, 3, 5, 7, 10, 14),
                       scaling_repeats=10, train_repeats=10),
}


def replicate_box(positions: np.ndarray, types: np.ndarray, box: np.ndarray, reps: int):
    """The periodic box repeated ``reps`` times along each box vector.

    Parameters
    ----------
    positions : np.ndarray, shape=(N, 3), nm
    types : np.ndarray, shape=(N,), int
    box : np.ndarray, shape=(3, 3), nm, box vectors as rows
    reps : int, >= 1

    Returns
    -------
    (positions (N * reps^3, 3) nm, types (N * reps^3,), box (3, 3) nm)
    """
    positions = np.asarray(positions, dtype=np.float64)
    box = np.asarray(box, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape (N, 3), got {positions.shape}")
    if box.shape != (3, 3):
        raise ValueError(f"box must have shape (3, 3), got {box.shape}")
    if len(types) != len(positions):
        raise ValueError(f"types has {len(types)} entries but positions has {len(positions)} beads")
    if not isinstance(reps, (int, np.integer)) or reps < 1:
        raise ValueError(f"reps must be a positive integer, got {reps!r}")
    shifts = np.array([[a, b, c] for a in range(reps) for b in range(reps) for c in range(reps)], dtype=np.float64) @ box
    pos = (positions[None, :, :] + shifts[:, None, :]).reshape(-1, 3)
    return pos, np.tile(np.asarray(types), len(shifts)), box * reps


def time_force_evaluation(module, positions, types, box, repeats: int = 10, device: str = "cpu", warmup: int = 3) -> Dict[str, float]:
    """Median seconds of one energy + forces (autograd) evaluation of a scripted potential, after ``warmup``
    calls (TorchScript's profiling executor specialises and optimises during the first calls).

    Parameters
    ----------
    module : potential with ``forward(positions (N, 3) nm, types (N,), box (3, 3) nm) -> energy ()``
    positions : np.ndarray, shape=(N, 3), nm
    types : np.ndarray, shape=(N,), int
    box : np.ndarray, shape=(3, 3), nm
    repeats : int

    Returns
    -------
    dict with ``median_s``, ``min_s``, ``energy`` (kJ/mol, of the last call)
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup}")
    dtype = next(iter(module.parameters())).dtype
    pos = torch.tensor(positions, dtype=dtype, device=device)
    typ = torch.as_tensor(np.asarray(types), dtype=torch.int64, device=device)
    bx = torch.tensor(box, dtype=dtype, device=device)
    times: List[float] = []
    energy = 0.0
    for _ in range(repeats + warmup):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        p = pos.clone().requires_grad_(True)
        e = module(p, typ, bx)
        (g,) = torch.autograd.grad(e, p)
        energy = float(e.detach())
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        del g
    return {"median_s": float(np.median(times[warmup:])), "min_s": float(min(times[warmup:])), "energy": energy}


def _scaling_point(args) -> dict:
    """One box size in a fresh process (so that the peak-RSS increase is not hidden by freed memory that
    an earlier, larger evaluation left to the allocator)."""
    artefact, cg_path, k, repeats, device = args
    from cgkd.data.cg_h5 import read_cg
    from cgkd.export import load_potential_artefact

    module, meta = load_potential_artefact(artefact, device=device)
    data = read_cg(cg_path, frames=slice(0, 1))
    types = data.topology.type_indices(meta["type_names"], "the artefact")
    pos, typ, bx = replicate_box(data.positions[0], types, data.box[0], k)
    gc.collect()
    base = rss_bytes()
    reset_peak_rss()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t = time_force_evaluation(module, pos, typ, bx, repeats=repeats, device=device)
    peak = peak_rss_bytes() - base
    n = len(pos)
    row = {"reps": int(k), "n_beads": n, "seconds": t["median_s"], "us_per_bead_step": 1e6 * t["median_s"] / n,
           "peak_rss_increase_bytes_per_bead": peak / n, "energy_per_bead": t["energy"] / n,
           "torch_threads": torch.get_num_threads()}
    if device == "cuda":
        row["cuda_peak_bytes_per_bead"] = torch.cuda.max_memory_allocated() / n
    return row


def scaling(artefact, cg_path, reps_list: Sequence[int], repeats: int, device: str) -> List[dict]:
    """Cost per bead-step and peak-RSS increase per bead of energy + forces for the CG box of ``cg_path``
    replicated ``k^3`` times, each size measured in its own (spawned) process."""
    import multiprocessing

    rows = []
    ctx = multiprocessing.get_context("spawn")
    for k in reps_list:
        with ctx.Pool(1) as pool:
            row = pool.map(_scaling_point, [(str(artefact), str(cg_path), int(k), repeats, device)])[0]
        rows.append(row)
        print(f"  {row['n_beads']:7d} beads: {row['us_per_bead_step']:.2f} us/bead-step, "
              f"{row['peak_rss_increase_bytes_per_bead'] / 1024:.2f} KiB/bead peak RSS increase", flush=True)
    return rows


def aa_ns_per_day(spec: str, size: str, steps: int, seed: int = 0) -> dict:
    """ns/day of the AA box of ``spec``/``size`` (``cgkd.aa.build``, the spec's integrator, fastest platform)."""
    import openmm

    from cgkd.aa.build import build, choose_platform, make_context, make_integrator

    aa = build(spec, size, seed=seed)
    integ = make_integrator(aa.spec, seed)
    ctx = make_context(aa.system, integ, choose_platform(None))
    if aa.box is not None:
        ctx.setPeriodicBoxVectors(*aa.box)
    ctx.setPositions(aa.positions)
    ctx.setVelocitiesToTemperature(aa.spec.temperature, seed)
    integ.step(10)
    ctx.getState(getEnergy=True)
    t0 = time.perf_counter()
    integ.step(steps)
    ctx.getState(getEnergy=True)
    wall = time.perf_counter() - t0
    dt = integ.getStepSize().value_in_unit(openmm.unit.picosecond)
    return {"n_atoms": aa.system.getNumParticles(), "timestep_ps": dt, "steps": steps, "wall_s": wall,
            "ns_per_day": steps * dt * 1e-3 / wall * 86400.0, "platform": ctx.getPlatform().getName()}


def cg_ns_per_day(artefact, cg_path, backend: str, steps: int, timestep: float = 0.004) -> dict:
    """ns/day of one CG Langevin replica (``cgkd.openmm.run_cg_md``, checks only at the end)."""
    from cgkd.openmm.md import run_cg_md

    with tempfile.TemporaryDirectory() as tmp:
        s = run_cg_md(artefact, cg_path, tmp, n_replicas=1, steps=steps, timestep=timestep, report_interval=steps,
                      backend=backend, progress=False)
    return {"backend": s["backend"], "n_beads": s["n_beads"], "steps": steps, "timestep_ps": timestep,
            "survived": s["survived"], "ns_per_day": s["ns_per_day"], "platform": s["platform"]}


def training_throughput(n_beads: int, presets: Sequence[str], repeats: int) -> List[dict]:
    """Frames/s of a training step (forward, forces, backward) per architecture and preset, ``n_beads`` per frame."""
    from cgkd.nn.base import ARCHITECTURES
    from cgkd.nn.benchmark import time_training_step

    rows = []
    for arch in ARCHITECTURES.names():
        for preset in presets:
            r = time_training_step(arch, preset, n_beads=n_beads, repeats=repeats)
            rows.append({"arch": arch, "preset": preset, "n_parameters": int(r["n_parameters"]), "n_beads": n_beads,
                         "step_s": r["median_s"], "frames_per_s": 1.0 / r["median_s"]})
            print(f"  train {arch}/{preset}: {rows[-1]['frames_per_s']:.1f} frames/s", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", default="runs/reline-quick", help="finished `cgkd run` directory (reline)")
    parser.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--spec", default="reline")
    parser.add_argument("--size", default="quick", help="AA size of the run directory (for the AA ns/day)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "md", "scaling", "training"])
    parser.add_argument("--out", default=None, help="result folder (default benchmarks/results)")
    args = parser.parse_args(argv)
    device = check_device(args.device)
    p = PRESETS[args.preset]
    run = Path(args.run_dir)
    cg_path = run / "map" / "cg.h5"
    student_pt = run / "export" / "student.pt"
    for f in (cg_path, run / "student" / "model.pt", run / "teachers" / "ensemble.json"):
        if not f.exists():
            raise FileNotFoundError(f"{f} does not exist; finish `cgkd run` in {run} first")

    from cgkd.data.cg_h5 import read_cg
    from cgkd.export import export_cg_potential, export_model, load_potential_artefact
    from cgkd.kd.teachers import load_teachers
    from cgkd.nn.ensemble import EnsemblePotential

    if not student_pt.is_file():  # the run has not reached its export stage: export the student here
        student_pt = ROOT / "benchmarks" / "runs" / "speed_student.pt"
        student_pt.parent.mkdir(parents=True, exist_ok=True)
        export_model(run / "student" / "model.pt", cg_path, student_pt)
    data = read_cg(cg_path, frames=slice(0, 1))
    student, meta = load_potential_artefact(student_pt, device=device)
    types = data.topology.type_indices(meta["type_names"], "the artefact")
    pos, box = data.positions[0], data.box[0]
    result: dict = {"preset": args.preset, "device": device, "run_dir": str(run), "n_beads": int(data.n_beads)}
    with tempfile.TemporaryDirectory() as tmp:
        ens_pt = Path(tmp) / "ensemble.pt"
        teachers = load_teachers(run / "teachers")
        export_cg_potential(EnsemblePotential(teachers), ens_pt, type_masses=meta["type_masses"],
                            periodic=bool(meta["periodic"]), dtype=meta["dtype"])
        ensemble, _ = load_potential_artefact(ens_pt, device=device)
        if "throughput" not in args.skip:
            ts = time_force_evaluation(student, pos, types, box, p.force_repeats, device)
            te = time_force_evaluation(ensemble, pos, types, box, p.force_repeats, device)
            result["throughput"] = {"student_frames_per_s": 1 / ts["median_s"], "ensemble_frames_per_s": 1 / te["median_s"],
                                    "n_members": len(teachers), "ratio_student_over_ensemble": te["median_s"] / ts["median_s"],
                                    "student_parameters": sum(q.numel() for q in student.parameters()),
                                    "ensemble_parameters": sum(q.numel() for q in ensemble.parameters())}
            print(f"throughput: {result['throughput']}", flush=True)
        if "md" not in args.skip:
            md = {"aa": aa_ns_per_day(args.spec, args.size, p.aa_steps)}
            print(f"  AA: {md['aa']['ns_per_day']:.2f} ns/day", flush=True)
            for backend in ("torch", "python"):
                md[backend] = cg_ns_per_day(student_pt, cg_path, backend, p.cg_steps)
                md[f"ratio_{backend}_over_aa"] = md[backend]["ns_per_day"] / md["aa"]["ns_per_day"]
                print(f"  CG {backend}: {md[backend]['ns_per_day']:.2f} ns/day", flush=True)
            result["md"] = md
        if "scaling" not in args.skip:
            result["scaling"] = {"student": scaling(student_pt, cg_path, p.scaling_reps, p.scaling_repeats, device)}
    if "training" not in args.skip:
        result["training"] = training_throughput(int(data.n_beads), p.train_presets, p.train_repeats)
    out = save_result(f"speed_{args.preset}_{device}", result, args.out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
