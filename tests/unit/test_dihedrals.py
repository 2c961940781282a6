"""Named-dihedral analysis: Ramachandran histograms, divergences, basins and their dynamics on known inputs."""

from __future__ import annotations

import numpy as np
import pytest

from cgkd.analysis import compare
from cgkd.analysis.dihedrals import (basin_dynamics, basin_of, dihedral_series, free_energy, kl_divergence,
                                     ramachandran)
from cgkd.analysis.frames import Frames
from cgkd.aa.peptide import nerf
from cgkd.topology import Topology


def chain_frames(phis, dt=0.1):
    """4-bead chains whose dihedral is exactly ``phis`` (degrees), one frame each."""
    a, b, c = np.array([0.0, 0.15, 0.0]), np.zeros(3), np.array([0.15, 0.0, 0.0])
    pos = np.asarray([[a, b, c, nerf(a, b, c, 0.15, 110.0, p)] for p in phis])
    top = Topology(["A", "B"], np.array([0, 1, 1, 0]), np.full(4, 12.0), ["A", "B", "B", "A"], np.zeros(4, int), ["M"],
                   np.array([[0, 1], [1, 2], [2, 3]]))
    return Frames(pos, None, top, dt)


def test_dihedral_series_recovers_the_built_angles():
    phis = np.array([-170.0, -60.0, 0.0, 75.0, 179.0])
    got = dihedral_series(chain_frames(phis), [[0, 1, 2, 3]])[:, 0]
    np.testing.assert_allclose(got, phis, atol=1e-6)


def test_ramachandran_histogram_and_divergences():
    rng = np.random.default_rng(0)
    phi, psi = rng.uniform(-180, 180, 5000), rng.uniform(-180, 180, 5000)
    p = ramachandran(phi, psi, 12)
    assert p.shape == (12, 12) and p.sum() == pytest.approx(1.0)
    assert kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    q = ramachandran(np.clip(phi, -180, -1), psi, 12)  # everything at phi < 0
    assert kl_divergence(p, q) > 0.5
    f = free_energy(q, 300.0)
    assert np.nanmin(f) == 0.0 and np.isnan(f[6:]).all()  # empty phi >= 0 half: no free energy


def test_basins_and_their_dynamics_on_a_known_sequence():
    assert basin_of(np.array([-60, -60, 60]), np.array([-45, 140, 30])).tolist() == [0, 1, 2]
    # alpha_R for 3 frames, beta for 5, alpha_R for 2: 2 transitions; one complete visit (beta, 5 frames)
    phis = [-60.0] * 10
    psis = [-45.0] * 3 + [140.0] * 5 + [-45.0] * 2
    f_phi = chain_frames(phis, dt=0.5)
    f_psi = chain_frames(psis, dt=0.5)
    # put psi in as a second quadruple of the same 4 beads is not possible: use two trajectories' series
    both = Frames(np.concatenate([f_phi.positions, f_psi.positions], axis=1), None,
                  Topology(["A", "B"], np.array([0, 1, 1, 0] * 2), np.full(8, 12.0), ["A", "B", "B", "A"] * 2,
                           np.array([0] * 4 + [1] * 4), ["M", "M"], np.array([[0, 1], [1, 2], [2, 3], [4, 5], [5, 6],
                                                                              [6, 7]])), 0.5)
    res = basin_dynamics([both], [[0, 1, 2, 3]], [[4, 5, 6, 7]])
    assert res["populations"] == pytest.approx({"alpha_R": 0.5, "beta": 0.5, "alpha_L": 0.0})
    assert res["transitions_per_ns"] == pytest.approx(2 / (9 * 0.5 / 1000))
    assert res["dwell_ps"]["beta"] == pytest.approx(2.5) and res["dwell_ps"]["alpha_R"] is None


def test_compare_reports_a_zero_divergence_for_the_reference_itself(tmp_path):
    rng = np.random.default_rng(1)
    frames = chain_frames(rng.normal(-70, 20, 400))
    named = {"phi": [[0, 1, 2, 3]], "psi": [[3, 2, 1, 0]]}
    mirrored = Frames(frames.positions * np.array([1.0, 1.0, -1.0]), None, frames.topology, frames.dt)
    res = compare(frames, {"same": frames, "mirror": mirrored}, tmp_path, dihedrals=named)
    assert res["errors"]["same"]["FES phi-psi"]["jsd"] == pytest.approx(0.0, abs=1e-12)
    assert res["errors"]["mirror"]["FES phi-psi"]["jsd"] > 0.9  # phi -> -phi: the other half of the plane
    assert (tmp_path / "fes.png").is_file() and "## Backbone basins" in (tmp_path / "report.md").read_text()
