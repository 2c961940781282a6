"""One model on two processes (issue 16): ``torchrun --nproc-per-node 2`` with gloo on CPU trains the same model as one
process at the same global batch, also when the run is resumed, and only rank 0 writes; the ``cgkd`` command runs
under torchrun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cgkd.data.cg_h5 import write_cg

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "unit"))
from test_kd import TINY, lj_fluid  # noqa: E402

DRIVER = Path(__file__).with_name("ddp_train.py")
TORCHRUN = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(TORCHRUN is None or not torch.distributed.is_available(),
                                 reason="needs torchrun and torch.distributed")]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(sys.path))
    env.pop("WORLD_SIZE", None)
    return env


def _torchrun(*args, timeout=300):
    cmd = [TORCHRUN, "--standalone", "--nproc-per-node", "2", *map(str, args)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def test_two_ranks_train_the_single_process_model_and_resume(tmp_path):
    write_cg(tmp_path / "cg.h5", lj_fluid(n_frames=24))
    single = subprocess.run([sys.executable, str(DRIVER), str(tmp_path / "cg.h5"), str(tmp_path / "one"), "4"],
                            capture_output=True, text=True, env=_env(), timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    _torchrun(DRIVER, tmp_path / "cg.h5", tmp_path / "two", 2)  # stopped after 2 epochs ...
    log = (tmp_path / "two" / "log.jsonl").read_text().splitlines()
    assert len(log) == 2  # rank 0 alone wrote the log: one line per epoch
    _torchrun(DRIVER, tmp_path / "cg.h5", tmp_path / "two", 4)  # ... and resumed to 4
    a = torch.load(tmp_path / "one" / "final.pt", weights_only=False)
    b = torch.load(tmp_path / "two" / "final.pt", weights_only=False)
    assert b["world_size"] == 2 and a["world_size"] == 1
    for name, value in a["state"].items():
        torch.testing.assert_close(b["state"][name], value, rtol=1e-9, atol=1e-11, msg=name)
    assert b["best_val"] == pytest.approx(a["best_val"], rel=1e-9)
    hist_a = [json.loads(x)["train"]["loss"] for x in (tmp_path / "one" / "log.jsonl").read_text().splitlines()]
    hist_b = [json.loads(x)["train"]["loss"] for x in (tmp_path / "two" / "log.jsonl").read_text().splitlines()]
    assert hist_b == pytest.approx(hist_a, rel=1e-9)
    # the losses are of the global batch: without the global sums two ranks would train another model
    assert len(hist_b) == 4


def test_cgkd_distill_under_torchrun_matches_one_process(tmp_path):
    import yaml

    from cgkd.kd import make_labels, train_teachers
    from cgkd.train import TrainConfig

    write_cg(tmp_path / "cg.h5", lj_fluid(n_frames=24))
    train_teachers(tmp_path / "cg.h5", tmp_path / "t", n_members=1, preset=TINY,
                   config=TrainConfig(max_epochs=1, batch_size=8))
    make_labels(tmp_path / "cg.h5", tmp_path / "t")
    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(TINY))
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({"batch_size": 6, "dtype": "float64", "early_stopping": 0,
                                                         "threads": 1}))
    args = [tmp_path / "cg.h5", "--teachers", tmp_path / "t", "--arch-preset", tmp_path / "arch.yaml",
            "--config", tmp_path / "train.yaml", "--epochs", "2", "--quiet"]
    one = subprocess.run([sys.executable, "-m", "cgkd", "distill", *map(str, args), "--out", str(tmp_path / "s1")],
                         capture_output=True, text=True, env=_env(), timeout=300)
    assert one.returncode == 0, one.stderr[-3000:]
    _torchrun("-m", "cgkd", "distill", *args, "--out", tmp_path / "s2")
    a = json.loads((tmp_path / "s1" / "student.json").read_text())
    b = json.loads((tmp_path / "s2" / "student.json").read_text())
    assert b["force_rmse_vs_mapped"] == pytest.approx(a["force_rmse_vs_mapped"], rel=1e-8)
    assert b["best_epoch"] == a["best_epoch"]
