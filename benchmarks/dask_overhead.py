"""The cost of the Dask path against the local process pool (issue 16): start-up, per-task latency, and a real stage.

Three backends of :mod:`cgkd.parallel`, 2 workers each, on this machine:

- ``local``: the local process pool (``ExecutorConfig(workers=2)``, processes started with "spawn");
- ``dask``: a ``distributed.LocalCluster`` of 2 one-threaded worker processes, already running (as a scheduler on a
  cluster would be), reached by address;
- ``serial``: in this process, for reference.

Measured: the wall time of ``run_tasks`` for ``--tasks`` empty tasks (start-up plus dispatch), and for a real stage,
``train_teachers`` of ``--members`` small members on the LJ test fluid (the stage's own work plus the overhead).

    python -m benchmarks.dask_overhead
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import save_result


def _nothing(i: int) -> int:
    return i


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", type=int, default=64)
    p.add_argument("--members", type=int, default=4)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--name", default="dask_overhead")
    args = p.parse_args(argv)

    import distributed

    from cgkd.data.cg_h5 import write_cg
    from cgkd.kd.teachers import train_teachers
    from cgkd.parallel import ExecutorConfig, run_tasks
    from cgkd.train import TrainConfig

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from lj_fluid import lj_cg_data, simulate_lj

    rows = []
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.ERROR) as cluster, tempfile.TemporaryDirectory() as tmp:
        backends = {"serial": ExecutorConfig(), "local": ExecutorConfig(workers=2),
                    "dask": ExecutorConfig(backend="dask", scheduler=cluster.scheduler_address)}
        jobs = [(i,) for i in range(args.tasks)]
        for name, ex in backends.items():
            t0 = time.perf_counter()
            run_tasks(_nothing, jobs, ex)
            rows.append({"backend": name, "stage": f"{args.tasks} empty tasks", "seconds": time.perf_counter() - t0})
            print(rows[-1], flush=True)
        cg = Path(tmp) / "cg.h5"
        pos, frc, box = simulate_lj(3, 60, 20, 120.0, 1)
        write_cg(cg, lj_cg_data(pos, frc, box, 120.0))
        cfg = TrainConfig(max_epochs=args.epochs, batch_size=8, lr=5e-3, early_stopping=0)
        preset = dict(n_features=16, n_interactions=2, n_atom_layers=2, n_radial=8, cutoff=0.45)
        for name, ex in backends.items():
            t0 = time.perf_counter()
            train_teachers(cg, Path(tmp) / name, n_members=args.members, preset=preset, config=cfg, executor=ex)
            rows.append({"backend": name, "stage": f"{args.members} teacher members x {args.epochs} epochs",
                         "seconds": time.perf_counter() - t0})
            print(rows[-1], flush=True)
    path = save_result(args.name, {"rows": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
