"""SIGKILL, then rerun: ``cgkd teachers --workers 2`` leaves no orphan worker, never races one, and resumes to the
result of a run that was never killed; a rerun on other data is refused."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
import torch
import yaml

from cgkd.data.cg_h5 import write_cg

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "unit"))
from test_kd import TINY, lj_fluid  # noqa: E402

CMD = [sys.executable, "-m", "cgkd.cli.main", "teachers"]


def _args(tmp_path, out):
    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(TINY))
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({"batch_size": 4, "lr": 0.005, "max_epochs": 40,
                                                         "early_stopping": 0}))
    return [str(tmp_path / "cg.h5"), "--out", str(out), "--members", "2", "--workers", "2",
            "--arch-preset", str(tmp_path / "arch.yaml"), "--config", str(tmp_path / "train.yaml")]


def _weights(folder):
    ck = torch.load(folder / "model.pt", map_location="cpu", weights_only=False)
    state = ck["state_dict"] if isinstance(ck, dict) and "state_dict" in ck else ck
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


@pytest.mark.slow
def test_teachers_killed_with_two_workers_leave_no_orphan_and_resume_identically(tmp_path):
    write_cg(tmp_path / "cg.h5", lj_fluid(n_frames=24))
    ref = tmp_path / "ref"
    subprocess.run(CMD + _args(tmp_path, ref), check=True, capture_output=True)
    run = tmp_path / "run"
    proc = subprocess.Popen(CMD + _args(tmp_path, run), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parent = psutil.Process(proc.pid)
    deadline = time.time() + 180
    while time.time() < deadline:  # kill once both members have saved a checkpoint and neither is finished
        if all((run / f"member_0{k}" / "checkpoint.pt").is_file() for k in range(2)):
            break
        time.sleep(0.05)
    workers = [c for c in parent.children(recursive=True)]
    assert workers, "the pool had no worker processes"
    assert not (run / "member_00" / "done.json").exists()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    gone, alive = psutil.wait_procs(workers, timeout=15)
    assert not alive, f"orphaned workers still running: {[p.pid for p in alive]}"
    done = subprocess.run(CMD + _args(tmp_path, run), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    for k in range(2):
        a, b = _weights(ref / f"member_0{k}"), _weights(run / f"member_0{k}")
        assert a.keys() == b.keys()
        for name in a:
            torch.testing.assert_close(b[name], a[name], rtol=0, atol=0, msg=f"member {k} {name}")
    # other data into the same folder: refused, also though every member is finished
    write_cg(tmp_path / "cg.h5", lj_fluid(n_frames=24, seed=2))
    again = subprocess.run(CMD + _args(tmp_path, run), capture_output=True, text=True)
    assert again.returncode == 2 and "trained on other CG data" in again.stderr and "Traceback" not in again.stderr


def test_a_member_locked_by_a_live_process_is_not_trained_twice(tmp_path):
    from cgkd.kd.teachers import MemberBusyError, member_dir, member_lock, train_teachers
    from cgkd.train.trainer import TrainConfig

    write_cg(tmp_path / "cg.h5", lj_fluid(n_frames=12))
    cfg = TrainConfig(max_epochs=1, batch_size=4, progress=False)
    # a live process (here a child holding the lock) is training member 0
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; os.makedirs(sys.argv[1], exist_ok=True); "
        "fh = open(os.path.join(sys.argv[1], '.lock'), 'a+'); fcntl.flock(fh, fcntl.LOCK_EX); "
        "fh.write(str(os.getpid())); fh.flush(); print('locked', flush=True); time.sleep(60)"),
        str(member_dir(tmp_path / "t", 0))], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(MemberBusyError, match=f"pid {holder.pid}"):
            train_teachers(tmp_path / "cg.h5", tmp_path / "t", n_members=1, preset=TINY, config=cfg)
    finally:
        holder.kill()
        holder.wait()
    # the holder died: its lock went with it, and the member trains
    info = train_teachers(tmp_path / "cg.h5", tmp_path / "t", n_members=1, preset=TINY, config=cfg)
    assert info[0]["member"] == 0
    with member_lock(member_dir(tmp_path / "t", 0)):
        pass
