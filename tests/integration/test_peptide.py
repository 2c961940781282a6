"""Alanine dipeptide end to end at test size: solvated AA MD, a backbone slice map without the water, the KD
pipeline with the teacher ensemble's own CG MD, and a report with phi/psi free-energy surfaces."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cgkd.data.cg_h5 import read_cg
from cgkd.io.aa_h5 import read_aa
from cgkd.io.spec import load_spec
from cgkd.pipeline import load_preset, run_pipeline


@pytest.mark.slow
def test_alanine_dipeptide_pipeline_reports_free_energy_surfaces(tmp_path):
    spec = load_spec("alanine-dipeptide")
    preset = load_preset("test", spec)
    assert preset.ensemble_md and preset.cg_timestep == pytest.approx(0.002)  # the spec's own preset settings
    report = run_pipeline(spec, preset, tmp_path / "run", log=lambda line: None)
    aa = read_aa(tmp_path / "run" / "aa" / "aa.h5")
    residues = [r.name for r in aa.topology.residues()]
    assert residues[:3] == ["ACE", "ALA", "NME"] and set(residues[3:]) == {"HOH"}
    assert aa.box is not None and len(aa.constraints) > 0
    cg = read_cg(tmp_path / "run" / "map" / "cg.h5")
    assert cg.box is None and cg.n_beads == 5  # water left out: one peptide, no box
    assert cg.attrs["named_dihedrals"] == {"phi": [[0, 1, 2, 3]], "psi": [[1, 2, 3, 4]]}
    # the mapped phi equals the AA backbone phi (C-N-CA-C atoms of the peptide), computed independently
    import mdtraj as md

    traj = md.Trajectory(aa.positions, md.Topology.from_openmm(aa.topology))
    _, phi = md.compute_phi(traj)
    from cgkd.geometry import dihedrals

    np.testing.assert_allclose(dihedrals(cg.positions, [[0, 1, 2, 3]])[:, 0], phi[:, 0], atol=1e-4)
    text = report.read_text()
    assert "FES phi-psi" in text and "## Backbone basins" in text and "| RDF" not in text
    assert "| property | member_00 | student | ensemble |" in text
    assert (report.parent / "fes.png").stat().st_size > 1000
    metrics = json.loads((report.parent / "metrics.json").read_text())
    assert set(metrics["basins"]) >= {"member_00", "student", "ensemble"}
    fes = metrics["errors"]["ensemble"]["FES phi-psi"]
    assert 0.0 <= fes["jsd"] <= 1.0 and fes["kl"] >= 0.0


@pytest.mark.slow
def test_peptide_fes_benchmark_shares_the_aa_run_across_seeds(tmp_path):
    from benchmarks.peptide_fes import markdown, run
    from cgkd.aa import simulate

    spec = load_spec("alanine-dipeptide")
    aa_file = simulate(spec, size="test", out=tmp_path / "aa.h5", progress=False)
    before = read_aa(aa_file)
    res = run(aa_file, tmp_path / "fes", [1, 2], preset=load_preset("test", spec))
    after = read_aa(aa_file)  # the AA run was adopted, not redone
    np.testing.assert_array_equal(after.positions, before.positions)
    np.testing.assert_array_equal(after.time, before.time)
    assert (tmp_path / "fes" / "seed_1" / "aa" / "aa.h5").is_symlink()
    assert not (tmp_path / "fes" / "seed_2" / "aa" / "aa.h5").exists()  # seed 2 reads seed 1's stages
    s1, s2 = (res["per_seed"][s]["student"]["kl"] for s in (1, 2))
    assert s1 != s2  # the seed reaches training and CG MD
    assert set(res["summary"]) >= {"student", "ensemble", "member_00"}
    assert "| student |" in markdown(res) and "against all AA frames" in markdown(res)
    assert set(res["all_frames"]["per_seed"][1]) >= {"student", "ensemble", "basins"}
