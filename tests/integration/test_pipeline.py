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
    assert ran == [s for s in STAGES if s not in ("control", "synthetic")]
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

    # Synthetic rounds switched on: a sixth model, "synthetic", trained on the AA frames and on configurations of
    # its own CG MD labelled by the ensemble, exported, simulated and compared beside the others.
    lines.clear()
    syn = replace(preset, student_epochs=3, synthetic_rounds=1, synthetic_per_round=4, synthetic_md_ps=2.0)
    report = run_pipeline("reline", syn, tmp_path / "run", log=lines.append)
    cached = {line.split("]")[0].strip("[ ") for line in lines if "cached" in line}
    assert cached == {"aa", "map", "teachers", "labels", "student", "native"}
    rounds = json.loads((tmp_path / "run" / "synthetic" / "stage.json").read_text())["summary"]["rounds"]
    assert [r["n_synthetic"] for r in rounds] == [0, 4]
    summary = json.loads((tmp_path / "run" / "cgmd" / "stage.json").read_text())["summary"]
    assert "synthetic" in summary["runs"] and "synthetic" in report.read_text()


def test_unknown_preset_is_refused(tmp_path):
    with pytest.raises(ValueError, match="preset must be one of"):
        run_pipeline("reline", "huge", tmp_path)


def test_preset_file_is_checked_before_any_stage(tmp_path):
    (tmp_path / "p.yaml").write_text("size: test\nn_member: 2\n")
    with pytest.raises(ValueError, match=r"p\.yaml: unknown key\(s\) \['n_member'\]"):
        run_pipeline("reline", tmp_path / "p.yaml", tmp_path / "run")
    assert not (tmp_path / "run").exists()
