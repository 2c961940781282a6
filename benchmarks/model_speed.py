"""CG MD speed of several exported models on the same frame, measured in one process, interleaved.

Each model becomes an OpenMM ``System`` (``cgkd.openmm.create_system``, TorchForce) on the first frame of ``--cg``;
the repeats go round the models in turn, so that a change of machine load hits every model alike, and the report
gives the median ms per step and each model's speed relative to the first. Usage::

    python -m benchmarks.model_speed --cg runs/lc-reline-strong/n0032/seed0/cg.h5 \\
        --model small=runs/lc-reline-strong/n0032/seed0/md/student.pt \\
        --model medium=runs/lc-reline-strong-med/n0032/seed0/md/control.pt --name model_speed_reline
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from benchmarks.common import save_result


def measure(models: Dict[str, Path], cg_path: Path, steps: int = 200, repeats: int = 3, platform: str = "CPU",
            timestep: float = 0.004) -> dict:
    """Median ms per step of each model (``repeats`` rounds of ``steps`` steps, interleaved) and the ratio of the
    first model's time to each one's (> 1: faster than the first)."""
    from benchmarks.native_speed import ms_per_step
    from cgkd.data.cg_h5 import read_cg
    from cgkd.openmm import create_system
    from cgkd.train.checkpoint import num_threads

    if not models:
        raise ValueError("models must name at least one LABEL=PATH artefact, got none")
    if steps < 1 or repeats < 1:
        raise ValueError(f"steps and repeats must be >= 1, got {steps} and {repeats}")
    data = read_cg(cg_path, frames=slice(0, 1))
    box = None if data.box is None else data.box[0]
    pos = data.positions[0]
    systems = {label: create_system(str(path), data.topology, box=box, backend="torch")
               for label, path in models.items()}
    times: Dict[str, List[float]] = {label: [] for label in models}
    with num_threads(1):
        for _ in range(repeats):
            for label, system in systems.items():
                times[label].append(ms_per_step(system, pos, box, steps, platform=platform, dt=timestep,
                                                temperature=float(data.temperature)))
    first = next(iter(models))
    med = {label: float(np.median(t)) for label, t in times.items()}
    return {"cg": str(cg_path), "n_beads": int(data.n_beads), "steps": steps, "repeats": repeats,
            "platform": platform, "timestep_ps": timestep, "models": {k: str(v) for k, v in models.items()},
            "ms_per_step": times, "median_ms_per_step": med,
            "speed_vs_first": {label: med[first] / m for label, m in med.items()}}


def main(argv: Optional[list] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cg", required=True, type=Path, help="CG dataset whose first frame is simulated")
    p.add_argument("--model", action="append", required=True, metavar="LABEL=PATH", help="an exported artefact")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--platform", default="CPU")
    p.add_argument("--name", default="model_speed")
    args = p.parse_args(argv)
    models = {}
    for item in args.model:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            p.error(f"--model must be LABEL=PATH, got {item!r}")
        models[label] = Path(path)
    try:
        res = measure(models, args.cg, args.steps, args.repeats, args.platform)
    except ValueError as err:
        p.error(str(err))
    for label, m in res["median_ms_per_step"].items():
        print(f"{label}: {m:.2f} ms/step ({res['speed_vs_first'][label]:.2f}x the first)")
    save_result(args.name, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
