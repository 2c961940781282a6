"""Stability that discriminates (issue 11, deliver 3): survival curves and times to failure of CG models.

Each model runs ``replicas`` CG MD replicas (``cgkd.run_cg_md``, with its collapse, runaway and NaN checks)
under one or more protocols:

- ``nominal``: the data's temperature and the model kind's default time step;
- ``hot``: ``hot_factor`` x the temperature;
- ``big_step``: ``step_factor`` x the time step;
- ``perturbed``: starts displaced by Gaussian noise of ``perturb_nm`` per coordinate (configurations the
  training data never held).

A replica that fails is censored at its time to failure, one that survives at the run length; the survival
curve is the fraction of replicas still running at each time (no other censoring, so Kaplan-Meier reduces to
the empirical fraction). The result holds, per model and protocol, the survivors, the times to failure, the
failure reasons, and the curve; a PNG shows the curves. Every run folder is resumable (``cgkd simulate``'s
checkpoints), so a killed benchmark continues where it stopped.

Usage::

    python -m benchmarks.stability --cg runs/reline-quick/map/cg.h5 \\
        --model student=runs/reline-quick/export/student.pt --model native=runs/reline-quick/native/native/native.json \\
        --ps 100 --replicas 8 --out runs/stability
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from benchmarks.common import save_result

PROTOCOLS = ("nominal", "hot", "big_step", "perturbed")


def survival_curve(times_to_failure: Sequence[Optional[float]], length_ps: float, n_points: int = 50) -> dict:
    """Fraction of replicas still running at ``n_points`` times in [0, length]; None in the input = survived."""
    t = np.linspace(0.0, length_ps, n_points)
    fails = np.array([np.inf if x is None else float(x) for x in times_to_failure])
    alive = np.array([(fails > ti).mean() for ti in t]) if len(fails) else np.ones_like(t)
    return {"t_ps": t.tolist(), "surviving": alive.tolist()}


def perturbed(data, sigma_nm: float, seed: int):
    """A copy of ``data`` with every position displaced by N(0, sigma^2) per coordinate."""
    rng = np.random.default_rng(seed)
    return replace(data, positions=data.positions + rng.normal(scale=sigma_nm, size=data.positions.shape).astype(np.float32))


def run(cg_path: Path, models: Dict[str, str], out: Path, *, length_ps: float = 100.0, replicas: int = 8,
        protocols: Sequence[str] = PROTOCOLS, hot_factor: float = 1.2, step_factor: float = 1.5,
        perturb_nm: float = 0.02, report_ps: float = 1.0, seed: int = 0, platform: Optional[str] = None,
        name: Optional[str] = None, plot_path: Optional[Path] = None,
        timesteps: Optional[Dict[str, float]] = None, executor=None) -> dict:
    """Run every model under every protocol; ``timesteps`` ({"neural": ps, "native": ps}) overrides the
    model kinds' default time steps (``cgkd.openmm.md.DEFAULT_TIMESTEP``). ``executor`` (:mod:`cgkd.parallel`)
    runs the replicas of each (model, protocol) as parallel tasks (a local pool, a Dask cluster)."""
    from cgkd.parallel import as_executor

    ex = as_executor(executor)
    from cgkd.data.cg_h5 import read_cg
    from cgkd.nn.native import is_native_file
    from cgkd.openmm.md import DEFAULT_TIMESTEP, run_cg_md

    bad = [p for p in protocols if p not in PROTOCOLS]
    if bad:
        raise ValueError(f"protocols must be among {PROTOCOLS}, got {bad}")
    data = read_cg(cg_path)
    steps_by_kind = dict(DEFAULT_TIMESTEP)
    for kind, dt in (timesteps or {}).items():
        if kind not in steps_by_kind or not float(dt) > 0:
            raise ValueError(f"timesteps must map {sorted(steps_by_kind)} to positive ps, got {kind!r}: {dt!r}")
        steps_by_kind[kind] = float(dt)
    results: Dict[str, Dict[str, dict]] = {}
    for label, model in models.items():
        kind = "native" if is_native_file(model) else "neural"
        for proto in protocols:
            dt = steps_by_kind[kind] * (step_factor if proto == "big_step" else 1.0)
            temp = data.temperature * (hot_factor if proto == "hot" else 1.0)
            start = perturbed(data, perturb_nm, seed) if proto == "perturbed" else data
            if not ex.in_process:  # tasks rebuild the system from files
                from cgkd.data.cg_h5 import write_cg

                if proto == "perturbed":
                    path = out / label / "perturbed_start.h5"
                    path.parent.mkdir(parents=True, exist_ok=True)
                    write_cg(path, start)
                    start = path
                else:
                    start = cg_path
            every = max(1, int(round(report_ps / dt)))
            steps = every * max(1, int(round(length_ps / (every * dt))))
            s = run_cg_md(model, start, out / label / proto, n_replicas=replicas, steps=steps, timestep=dt,
                          temperature=temp, report_interval=every, seed=seed, platform=platform, progress=True,
                          executor=ex)
            ttf = [r["time_to_failure_ps"] if not r["survived"] else None for r in s["replicas"]]
            failed = [x for x in ttf if x is not None]
            results.setdefault(label, {})[proto] = {
                "timestep_ps": dt, "temperature_K": temp, "length_ps": steps * dt, "replicas": replicas,
                "survived": s["survived"], "times_to_failure_ps": ttf,
                "median_time_to_failure_ps": float(np.median(failed)) if failed else None,
                "failures": [r["failure"] for r in s["replicas"] if not r["survived"]],
                "ns_per_day": s["ns_per_day"], "curve": survival_curve(ttf, steps * dt),
                "mean_temperature_K": _mean_temperature(out / label / proto, s["replicas"]),
            }
    result = {"cg": str(cg_path), "models": models, "settings": {
        "length_ps": length_ps, "replicas": replicas, "protocols": list(protocols), "hot_factor": hot_factor,
        "step_factor": step_factor, "perturb_nm": perturb_nm, "report_ps": report_ps, "seed": seed},
        "results": results}
    if name:
        save_result(name, result)
    if plot_path is not None:
        plot(results, plot_path)
    return result


def _mean_temperature(folder: Path, replicas: List[dict]) -> Optional[float]:
    """Mean kinetic temperature (K) over the second half of every surviving replica's energy log."""
    import csv

    values = []
    for r in replicas:
        if not r["survived"] or not r.get("energies"):
            continue
        with open(folder / r["energies"], newline="") as fh:
            rows = [float(row["temperature_K"]) for row in csv.DictReader(fh)]
        values.extend(rows[len(rows) // 2:])
    return float(np.mean(values)) if values else None


def markdown(results: Dict[str, Dict[str, dict]]) -> str:
    """Survivors and times to failure per model and protocol, as a markdown table."""
    lines = ["| model | protocol | time step (fs) | T (K) | mean T, second half (K) | length (ps) | survived | "
             "median time to failure (ps) | ns/day |", "|---|---|---|---|---|---|---|---|---|"]
    for label, by in results.items():
        for proto, r in by.items():
            mttf = "-" if r["median_time_to_failure_ps"] is None else f"{r['median_time_to_failure_ps']:.1f}"
            speed = "-" if r["ns_per_day"] is None else f"{r['ns_per_day']:.0f}"
            mean_t = r.get("mean_temperature_K")
            mean_t = "-" if mean_t is None else f"{mean_t:.1f}"
            lines.append(f"| {label} | {proto} | {r['timestep_ps'] * 1000:.0f} | {r['temperature_K']:.0f} | {mean_t} | "
                         f"{r['length_ps']:.0f} | {r['survived']}/{r['replicas']} | {mttf} | {speed} |")
    return "\n".join(lines)


def plot(results: Dict[str, Dict[str, dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protos = sorted({p for r in results.values() for p in r}, key=PROTOCOLS.index)
    fig, axes = plt.subplots(1, len(protos), figsize=(3.6 * len(protos), 3.2), squeeze=False)
    for ax, proto in zip(axes[0], protos):
        for label, by in results.items():
            if proto in by:
                c = by[proto]["curve"]
                ax.step(c["t_ps"], c["surviving"], where="post", label=label)
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(proto)
        ax.set_xlabel("time (ps)")
    axes[0][0].set_ylabel("replicas surviving")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cg", required=True, type=Path, help="CG dataset whose frames start the replicas")
    p.add_argument("--model", action="append", required=True, metavar="LABEL=PATH",
                   help="exported artefact (.pt) or native student (.json); repeat for several")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--ps", type=float, default=100.0, help="simulated time per replica (ps)")
    p.add_argument("--replicas", type=int, default=8)
    p.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=PROTOCOLS)
    p.add_argument("--hot-factor", type=float, default=1.2)
    p.add_argument("--step-factor", type=float, default=1.5)
    p.add_argument("--perturb", type=float, default=0.02, help="nm per coordinate")
    p.add_argument("--timestep", action="append", default=[], metavar="KIND=PS",
                   help="time step of a model kind (neural or native), ps; default cgkd's DEFAULT_TIMESTEP")
    p.add_argument("--platform", default=None)
    p.add_argument("--name", default="stability")
    p.add_argument("--plot", type=Path, default=None)
    from cgkd.cli.executor import add_executor_args, executor_from_args

    add_executor_args(p, workers_help="replicas run")
    args = p.parse_args(argv)
    models = {}
    for item in args.model:
        if "=" not in item:
            raise SystemExit(f"--model must be LABEL=PATH, got {item!r}")
        label, path = item.split("=", 1)
        models[label] = path
    timesteps = {}
    for item in args.timestep:
        kind, _, value = item.partition("=")
        try:
            timesteps[kind] = float(value)
        except ValueError:
            raise SystemExit(f"--timestep must be KIND=PS (e.g. neural=0.016), got {item!r}") from None
    res = run(args.cg, models, args.out, timesteps=timesteps, length_ps=args.ps, replicas=args.replicas, protocols=args.protocols,
              hot_factor=args.hot_factor, step_factor=args.step_factor, perturb_nm=args.perturb,
              platform=args.platform, name=args.name, plot_path=args.plot, executor=executor_from_args(args))
    for label, by in res["results"].items():
        for proto, r in by.items():
            print(json.dumps({"model": label, "protocol": proto, "survived": f"{r['survived']}/{r['replicas']}",
                              "median_ttf_ps": r["median_time_to_failure_ps"], "dt_ps": r["timestep_ps"],
                              "T_K": r["temperature_K"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
