"""Pipeline presets and comparison settings load from YAML like every other config (unknown keys rejected)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from cgkd.analysis.report import CompareSettings
from cgkd.cli.main import main
from cgkd.io.config import load_yaml, to_dict
from cgkd.pipeline import PRESETS, Preset, load_preset, run_pipeline

from lj_fluid import lj_cg_data, simulate_lj


def _yaml(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def test_preset_from_yaml(tmp_path):
    f = _yaml(tmp_path / "mine.yaml", {"size": "test", "n_members": 3, "teacher_epochs": 1, "control": False,
                                       "cg_timestep": 0.002, "backend": "python"})
    p = load_preset(f)
    assert p == Preset(size="test", n_members=3, teacher_epochs=1, control=False, cg_timestep=0.002, backend="python")
    assert load_preset(str(f)) == p and load_preset(p) is p
    assert load_preset("quick") is PRESETS["quick"]
    for name, shipped in PRESETS.items():  # every shipped preset round-trips through YAML
        assert load_preset(_yaml(tmp_path / f"{name}.yaml", to_dict(shipped))) == shipped


@pytest.mark.parametrize(
    "data, match",
    [
        ({"size": "test", "teacher_epoch": 1}, r"unknown key\(s\) \['teacher_epoch'\]"),
        ({"n_members": 2}, r"missing required key\(s\) \['size'\]"),
        ({"size": "test", "n_members": "two"}, "n_members: expected int"),
        ({"size": "test", "control": "yes"}, "control: expected bool"),
        ({"size": "test", "cg_steps": 0}, "cg_steps must be >= 1"),
        ({"size": "test", "cg_timestep": -0.004}, "cg_timestep must be > 0"),
        ({"size": "test", "synthetic_rounds": -1}, "synthetic_rounds must be >= 0"),
        ({"size": "test", "synthetic_md_ps": 0}, "synthetic_md_ps must be > 0"),
    ],
)
def test_bad_preset_yaml_is_refused(tmp_path, data, match):
    with pytest.raises(ValueError, match=match):
        load_preset(_yaml(tmp_path / "bad.yaml", data))


def test_unknown_preset_name_and_missing_file(tmp_path):
    with pytest.raises(ValueError, match=r"preset must be one of \['paper', 'quick', 'test'\], a YAML file"):
        load_preset("huge")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_preset(tmp_path / "none.yaml")


def test_run_pipeline_and_cgkd_run_take_a_preset_file_and_check_it_first(tmp_path, capsys):
    bad = _yaml(tmp_path / "bad.yaml", {"size": "test", "studnet_epochs": 1})
    with pytest.raises(ValueError, match="studnet_epochs"):
        run_pipeline("water", bad, tmp_path / "run")
    assert main(["run", "water", "--preset", str(bad), "--dir", str(tmp_path / "run")]) == 2
    assert "studnet_epochs" in capsys.readouterr().err
    huge = _yaml(tmp_path / "huge.yaml", {"size": "huge"})  # read, then refused by the spec before any stage runs
    assert main(["run", "water", "--preset", str(huge), "--dir", str(tmp_path / "run")]) == 2
    assert "size 'huge' is not defined for system 'water'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_compare_settings_from_yaml(tmp_path):
    f = _yaml(tmp_path / "cmp.yaml", {"r_max": 1, "n_bins": 50, "max_frames": 10, "fit_window": [0.1, 0.9]})
    s = load_yaml(CompareSettings, f)
    assert s == CompareSettings(r_max=1.0, n_bins=50, max_frames=10, fit_window=(0.1, 0.9))
    assert isinstance(s.r_max, float) and s.fit_window == (0.1, 0.9)
    assert load_yaml(CompareSettings, _yaml(tmp_path / "all.yaml", to_dict(CompareSettings()))) == CompareSettings()


@pytest.mark.parametrize(
    "data, match",
    [
        ({"n_bin": 50}, r"unknown key\(s\) \['n_bin'\]"),
        ({"fit_window": [0.9, 0.1]}, "fit_window must be two fractions"),
        ({"fit_window": 0.5}, "fit_window: expected a list"),
        ({"max_frames": 0}, "max_frames must be >= 1"),
        ({"adf_cutoff": -0.5}, "adf_cutoff must be > 0"),
    ],
)
def test_bad_compare_settings_yaml_is_refused(tmp_path, data, match):
    with pytest.raises(ValueError, match=match):
        load_yaml(CompareSettings, _yaml(tmp_path / "bad.yaml", data))


def test_cgkd_compare_settings_file_and_overrides(tmp_path, capsys):
    from cgkd.data.cg_h5 import write_cg

    pos, frc, box = simulate_lj(3, 8, 20)
    write_cg(tmp_path / "ref.h5", lj_cg_data(pos, frc, box))
    write_cg(tmp_path / "cand.h5", lj_cg_data(pos.copy(), frc, box))  # the same frames: zero error
    bad = _yaml(tmp_path / "bad.yaml", {"nbins": 30})
    assert main(["compare", str(tmp_path / "ref.h5"), str(tmp_path / "cand.h5"), "--out", str(tmp_path / "x"),
                 "--settings", str(bad)]) == 2
    assert "nbins" in capsys.readouterr().err and not (tmp_path / "x").exists()
    good = _yaml(tmp_path / "cmp.yaml", {"n_bins": 30, "max_frames": 4, "adf_cutoff": 0.5})
    rc = main(["compare", str(tmp_path / "ref.h5"), str(tmp_path / "cand.h5"), "--labels", "same", "--out",
               str(tmp_path / "cmp"), "--settings", str(good), "--max-frames", "6"])
    assert rc == 0, capsys.readouterr().err
    settings = json.loads((tmp_path / "cmp" / "metrics.json").read_text())["settings"]
    assert settings["n_bins"] == 30 and settings["max_frames"] == 6 and settings["adf_cutoff_nm"] == 0.5
    metrics = json.loads((tmp_path / "cmp" / "metrics.json").read_text())
    assert np.isclose(metrics["errors"]["same"]["RDF AR-AR"]["tae"], 0.0, atol=1e-9)
