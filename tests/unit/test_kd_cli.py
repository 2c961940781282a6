"""``cgkd teachers`` and ``cgkd distill`` end to end on a tiny Lennard-Jones fluid."""

from __future__ import annotations

import json

import pytest
import yaml

from cgkd.cli.main import main
from cgkd.data.cg_h5 import write_cg
from cgkd.kd import read_labels
from cgkd import keys

from test_kd import TINY, lj_fluid


def test_teachers_then_distill(tmp_path, capsys):
    write_cg(tmp_path / "cg.h5", lj_fluid(n_frames=20))
    (tmp_path / "arch.yaml").write_text(yaml.safe_dump(TINY))
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({"batch_size": 8, "lr": 0.005, "max_epochs": 5}))
    common = ["--arch-preset", str(tmp_path / "arch.yaml"), "--config", str(tmp_path / "train.yaml"), "--epochs", "1"]
    rc = main(["teachers", str(tmp_path / "cg.h5"), "--out", str(tmp_path / "t"), "--members", "2", *common])
    assert rc == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["member"] for r in rows] == [0, 1] and all(r["epochs_run"] == 1 for r in rows)
    rc = main(["distill", str(tmp_path / "cg.h5"), "--teachers", str(tmp_path / "t"), "--out", str(tmp_path / "s"),
               "--energy-target", "node", *common])
    assert rc == 0
    info = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert info["force_target"] == "mean" and info["energy_target"] == "node" and info["epochs_run"] == 1
    assert read_labels(tmp_path / "cg.h5", [keys.MEAN_FORCES])[keys.MEAN_FORCES].shape == (20, 27, 3)
    assert (tmp_path / "s/model.pt").is_file()


def test_cli_errors(tmp_path, capsys):
    assert main(["teachers", str(tmp_path / "none.h5"), "--out", str(tmp_path / "t")]) == 2
    assert "cg_path" in capsys.readouterr().err
    assert main(["distill", str(tmp_path / "none.h5"), "--teachers", "x", "--out", "y"]) == 2
    assert main(["teachers", str(tmp_path / "none.h5"), "--out", "t", "--arch-preset", str(tmp_path / "p.yaml")]) == 2
    assert "--arch-preset file" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --preset is the pipeline preset of cgkd run only
        main(["teachers", "cg.h5", "--out", "t", "--preset", "small"])
    assert "unrecognized arguments: --preset" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["distill", "cg.h5", "--teachers", "x", "--out", "y", "--force-target", "median"])
