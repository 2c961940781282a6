"""Parallel stages on Dask (issue 16): a LocalCluster of 2 one-threaded worker processes trains a teacher ensemble,
survives a worker killed mid-training, and gives the weights of an uninterrupted run; errors name the failed task."""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time

import pytest
import torch

from cgkd.data.cg_h5 import write_cg
from cgkd.parallel import ExecutorConfig, TaskError, as_executor, job_script, run_tasks

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "unit"))
from test_kd import TINY, lj_fluid  # noqa: E402

distributed = pytest.importorskip("distributed", reason="the Dask executor needs cgkd[dask]")


def _fails_on_odd(x: int) -> int:
    if x % 2:
        raise ValueError(f"odd input {x}")
    return x * 10


def _weights(path):
    ck = torch.load(path, map_location="cpu", weights_only=False)
    state = ck["state_dict"] if isinstance(ck, dict) and "state_dict" in ck else ck
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.ERROR) as c:
        yield c


def test_results_come_back_in_order_and_failures_are_named(cluster):
    ex = ExecutorConfig(backend="dask", scheduler=cluster.scheduler_address, retries=0)
    assert run_tasks(_fails_on_odd, [(0,), (2,), (4,)], ex) == [0, 20, 40]
    with pytest.raises(TaskError, match=r"2 of 4 .*item 1: ValueError: odd input 1; item 3: ValueError: odd input 3"):
        run_tasks(_fails_on_odd, [(0,), (1,), (2,), (3,)], ex, labels=[f"item {i}" for i in range(4)], desc="items")
    # the local pool reports the same way
    with pytest.raises(TaskError, match="item 1: ValueError: odd input 1"):
        run_tasks(_fails_on_odd, [(0,), (1,)], 2, labels=["item 0", "item 1"])


@pytest.mark.slow
def test_teachers_on_dask_survive_a_killed_worker_and_match_an_uninterrupted_run(cluster, tmp_path):
    from cgkd.io.config import to_dict
    from cgkd.kd.teachers import member_dir, member_task, train_teachers
    from cgkd.train.trainer import TrainConfig

    write_cg(tmp_path / "cg.h5", lj_fluid(n_frames=24))
    cfg = TrainConfig(max_epochs=30, batch_size=4, lr=0.005, early_stopping=0)
    run = tmp_path / "run"
    ex = ExecutorConfig(backend="dask", scheduler=cluster.scheduler_address)
    out: dict = {}

    def train():
        try:
            out["info"] = train_teachers(tmp_path / "cg.h5", run, n_members=2, preset=TINY, config=cfg, executor=ex)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            out["error"] = exc

    worker = threading.Thread(target=train)
    worker.start()
    m0 = member_dir(run, 0)
    deadline = time.time() + 300
    while time.time() < deadline and not (m0 / "checkpoint.pt").is_file():
        time.sleep(0.05)
    assert (m0 / "checkpoint.pt").is_file(), "member 0 never wrote a checkpoint"
    assert not (m0 / "done.json").exists()
    pid = int((m0 / ".lock").read_text())
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)  # the Dask worker process training member 0
    worker.join(timeout=600)
    assert not worker.is_alive()
    if "error" in out:
        raise out["error"]
    assert [m["member"] for m in out["info"]] == [0, 1]
    log = [line for line in (m0 / "log.jsonl").read_text().splitlines() if line.strip()]
    assert len(log) == cfg.max_epochs  # resumed: every epoch once, none repeated in the log
    # the same members trained without interruption, in this process with one thread, are identical
    ref = tmp_path / "ref"
    train_teachers(tmp_path / "cg.h5", ref, n_members=2, preset=TINY, config=cfg, members=[])
    for k in range(2):
        member_task(str(tmp_path / "cg.h5"), str(ref), k, "hipnn", TINY, to_dict(cfg), True, 1)
        a, b = _weights(member_dir(ref, k) / "model.pt"), _weights(member_dir(run, k) / "model.pt")
        for name in a:
            torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=f"member {k} {name}")


def test_executor_config_errors_and_the_job_script(tmp_path):
    with pytest.raises(ValueError, match="backend must be one of"):
        ExecutorConfig(backend="mpi")
    with pytest.raises(ValueError, match="needs scheduler"):
        ExecutorConfig(backend="dask")
    with pytest.raises(ValueError, match="workers must be an integer >= 1, got 0"):
        as_executor(0)
    with pytest.raises(ValueError, match="scheduler must be an address"):
        ExecutorConfig(backend="dask", scheduler="localhost")
    assert as_executor({"workers": 3}).workers == 3
    with pytest.raises(ValueError, match="unknown key"):
        as_executor({"wrokers": 3})
    pytest.importorskip("dask_jobqueue", reason="the jobqueue executor needs cgkd[dask]")
    script = job_script(ExecutorConfig(backend="jobqueue", cores=4, memory="8GB", walltime="02:00:00", queue="cpu",
                                       account="proj", prologue=("source .venv/bin/activate",)),
                        scheduler="tcp://login1:8786")
    for text in ("#SBATCH -p cpu", "#SBATCH -A proj", "#SBATCH --cpus-per-task=4", "#SBATCH -t 02:00:00",
                 "source .venv/bin/activate", "tcp://login1:8786", "--nworkers 4", "--nthreads 1"):
        assert text in script, text
    pbs = job_script({"backend": "jobqueue", "system": "pbs", "cores": 2})
    assert "#PBS" in pbs and "#SBATCH" not in pbs
    from cgkd.cli.main import main

    assert main(["jobscript", "--system", "slurm", "--cores", "2", "--walltime", "00:30:00"]) == 0


def test_cg_md_replicas_on_dask_equal_those_run_in_process(cluster, tmp_path):
    import mdtraj
    import numpy as np

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "unit"))
    from test_openmm_md import TYPES, _data

    from cgkd.export import LennardJonesPair, export_potential
    from cgkd.openmm.md import run_cg_md

    pot = LennardJonesPair(TYPES, [[0.40, 0.45], [0.45, 0.50]], [[1.0, 1.5], [1.5, 2.0]], cutoff=0.9)
    export_potential(pot, tmp_path / "m.pt", type_names=TYPES, type_masses=[40.0, 60.0], cutoff=0.9, periodic=True)
    write_cg(tmp_path / "cg.h5", _data())
    kw = dict(n_replicas=3, steps=200, report_interval=50, timestep=0.004, friction=5.0, backend="torch",
              platform="CPU", seed=3, min_distance=0.25, progress=False)
    ref = run_cg_md(tmp_path / "m.pt", tmp_path / "cg.h5", tmp_path / "ref", **kw)
    ex = ExecutorConfig(backend="dask", scheduler=cluster.scheduler_address)
    got = run_cg_md(str(tmp_path / "m.pt"), str(tmp_path / "cg.h5"), tmp_path / "dask", executor=ex, **kw)
    assert got["survived"] == ref["survived"] == 3
    assert [r["start_frame"] for r in got["replicas"]] == [r["start_frame"] for r in ref["replicas"]]
    for k in range(3):
        a = mdtraj.load(tmp_path / "ref" / f"replica_{k}.dcd", top=tmp_path / "ref" / "topology.pdb").xyz
        b = mdtraj.load(tmp_path / "dask" / f"replica_{k}.dcd", top=tmp_path / "dask" / "topology.pdb").xyz
        np.testing.assert_array_equal(a, b)  # the same seeds give the same trajectories wherever they run
    with pytest.raises(ValueError, match="must be file paths"):
        from cgkd.data.cg_h5 import read_cg

        run_cg_md(str(tmp_path / "m.pt"), read_cg(tmp_path / "cg.h5"), tmp_path / "x", executor=ex, **kw)


def test_atomistic_labels_in_chunks_on_dask_equal_serial_ones_and_fill_the_cache(cluster, tmp_path):
    import numpy as np

    from cgkd.aa.labelers import fcc_cells, get_labeler
    from cgkd.io.atoms import from_ase

    cells = fcc_cells("Al", [(1, 1, 1), (2, 1, 1)])
    rng = np.random.default_rng(0)
    structures = []
    for i in range(7):
        a = cells[i % 2].copy()
        a.positions += rng.normal(scale=0.05, size=a.positions.shape)
        structures.append(a)
    data = from_ase(structures, labels=False)
    emt = get_labeler("emt")
    ref = emt.label(data, show_progress=False)
    ex = ExecutorConfig(backend="dask", scheduler=cluster.scheduler_address)
    got = emt.label(data, cache=tmp_path / "cache", executor=ex, chunk=3, show_progress=False)
    np.testing.assert_array_equal(got.numbers, ref.numbers)
    np.testing.assert_allclose(got.energy, ref.energy, rtol=1e-12)
    np.testing.assert_allclose(got.forces, ref.forces, rtol=1e-12, atol=1e-12)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 7
    with pytest.raises(ValueError, match="chunk must be a positive integer"):
        emt.label(data, executor=ex, chunk=0)


def test_ensemble_labels_in_chunks_on_dask_equal_the_serial_ones(cluster, tmp_path):
    import numpy as np

    from cgkd import keys
    from cgkd.kd import train_teachers
    from cgkd.kd.labels import ensemble_predictions
    from cgkd.train import TrainConfig

    write_cg(tmp_path / "cg.h5", lj_fluid(n_frames=14))
    train_teachers(tmp_path / "cg.h5", tmp_path / "t", n_members=2, preset=TINY,
                   config=TrainConfig(max_epochs=1, batch_size=4))
    ref = ensemble_predictions(tmp_path / "cg.h5", tmp_path / "t")
    ex = ExecutorConfig(backend="dask", scheduler=cluster.scheduler_address)
    got = ensemble_predictions(str(tmp_path / "cg.h5"), tmp_path / "t", executor=ex, chunk_frames=5)
    assert got.keys() == ref.keys()
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-4, err_msg=k)
    assert got[keys.MEMBER_FORCES].shape[:2] == (2, 14)


@pytest.mark.slow
def test_cg_md_replicas_survive_a_killed_dask_worker_frame_for_frame(cluster, tmp_path):
    import mdtraj
    import numpy as np

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "unit"))
    from test_openmm_md import TYPES, _data

    from cgkd.export import LennardJonesPair, export_potential
    from cgkd.openmm.md import run_cg_md

    pot = LennardJonesPair(TYPES, [[0.40, 0.45], [0.45, 0.50]], [[1.0, 1.5], [1.5, 2.0]], cutoff=0.9)
    export_potential(pot, tmp_path / "m.pt", type_names=TYPES, type_masses=[40.0, 60.0], cutoff=0.9, periodic=True)
    write_cg(tmp_path / "cg.h5", _data())
    kw = dict(n_replicas=2, steps=2500, report_interval=50, checkpoint_interval=100, timestep=0.004, friction=5.0,
              backend="torch", platform="CPU", seed=3, min_distance=0.25, progress=False)
    ref = run_cg_md(tmp_path / "m.pt", tmp_path / "cg.h5", tmp_path / "ref", **kw)
    client = distributed.Client(cluster.scheduler_address, set_as_default=False)
    pids = list(client.run(os.getpid).values())
    client.close()
    ex = ExecutorConfig(backend="dask", scheduler=cluster.scheduler_address)
    out: dict = {}

    def simulate():
        try:
            out["summary"] = run_cg_md(str(tmp_path / "m.pt"), str(tmp_path / "cg.h5"), tmp_path / "dask", executor=ex, **kw)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            out["error"] = exc

    worker = threading.Thread(target=simulate)
    worker.start()
    deadline = time.time() + 300
    state = tmp_path / "dask" / "replica_0_state.json"
    while time.time() < deadline and not state.is_file():
        time.sleep(0.02)
    assert state.is_file() and "summary" not in out
    os.kill(pids[0], signal.SIGKILL)  # one of the two workers, each running a replica
    worker.join(timeout=600)
    if "error" in out:
        raise out["error"]
    got = out["summary"]
    assert got["survived"] == ref["survived"] == 2
    assert got["resumed_replicas"] >= 1  # the killed worker's replica was continued from its checkpoint
    for k in range(2):
        a = mdtraj.load(tmp_path / "ref" / f"replica_{k}.dcd", top=tmp_path / "ref" / "topology.pdb").xyz
        b = mdtraj.load(tmp_path / "dask" / f"replica_{k}.dcd", top=tmp_path / "dask" / "topology.pdb").xyz
        np.testing.assert_array_equal(a, b)  # the resumed replica continues the uninterrupted trajectory exactly
