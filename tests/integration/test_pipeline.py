"""The main job at test size: every stage runs, writes its outputs, and is cached on rerun."""

from dataclasses import replace

import json

import pytest

from cgkd.pipeline import PRESETS, STAGES, run_pipeline


@pytest.mark.slow
def test_pipeline_runs_caches_and_reruns_downstream(tmp_path):
    lines = []
    preset = PRESETS["test"]
    report = run_pipeline("reline", preset, tmp_path / "run", log=lines.append)
    text = report.read_text()
    assert "| property | member_00 | student |" in text
    for png in ("rdf.png", "adf.png", "cdf.png"):
        assert (report.parent / png).stat().st_size > 1000
    ran = [line.split("]")[0].strip("[ ") for line in lines if line.startswith("[")]
    assert ran == [s for s in STAGES if s != "control"]
    summary = json.loads((tmp_path / "run" / "cgmd" / "stage.json").read_text())["summary"]
    assert set(summary["runs"]) == {"member_00", "student", "native", "native_mscg"}
    native = json.loads((tmp_path / "run" / "native" / "stage.json").read_text())["summary"]["info"]
    assert native["native"]["force_target"] == "mean" and native["native_mscg"]["force_target"] == "mapped"

    # Same settings: every stage is taken from its cache.
    lines.clear()
    run_pipeline("reline", preset, tmp_path / "run", log=lines.append)
    assert all("cached" in line for line in lines if line.startswith("["))

    # A student setting changed: upstream stages stay cached, the student and everything after re-run.
    lines.clear()
    run_pipeline("reline", replace(preset, student_epochs=3), tmp_path / "run", log=lines.append)
    cached = {line.split("]")[0].strip("[ ") for line in lines if "cached" in line}
    assert cached == {"aa", "map", "teachers", "labels", "native"}


def test_unknown_preset_is_refused(tmp_path):
    with pytest.raises(ValueError, match="preset must be one of"):
        run_pipeline("reline", "huge", tmp_path)


def test_preset_file_is_checked_before_any_stage(tmp_path):
    (tmp_path / "p.yaml").write_text("size: test\nn_member: 2\n")
    with pytest.raises(ValueError, match=r"p\.yaml: unknown key\(s\) \['n_member'\]"):
        run_pipeline("reline", tmp_path / "p.yaml", tmp_path / "run")
    assert not (tmp_path / "run").exists()
