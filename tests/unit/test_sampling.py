"""Sampling clocks against processes with known answers: an AR(1) series and Brownian particles in a box."""

import numpy as np
import pytest

from cgkd.analysis.frames import Frames
from cgkd.analysis.sampling import (integrated_autocorrelation_time, sampling_report,
                                    self_intermediate_scattering)
from cgkd.topology import Topology


def _ar1(phi, n, seed=0):
    rng = np.random.default_rng(seed)
    eps = rng.normal(size=n)
    x = np.empty(n)
    x[0] = eps[0] / np.sqrt(1 - phi**2)
    for t in range(1, n):
        x[t] = phi * x[t - 1] + eps[t]
    return x


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.9])
def test_autocorrelation_time_of_ar1(phi):
    """rho(t) = phi^t, so tau = sum_{t>=1} phi^t = phi / (1 - phi)."""
    tau = integrated_autocorrelation_time(_ar1(phi, 100_000))
    assert tau == pytest.approx(phi / (1 - phi), abs=0.05 + 0.05 * phi / (1 - phi))


def test_autocorrelation_time_of_too_short_a_series_is_infinite():
    assert integrated_autocorrelation_time(_ar1(0.999, 500)) == float("inf")
    assert integrated_autocorrelation_time(np.ones(10)) == 0.0
    with pytest.raises(ValueError, match="at least 4"):
        integrated_autocorrelation_time([1.0, 2.0])


def _brownian(n_frames=400, n=400, dt=0.1, d=0.05, box=3.0, seed=1):
    rng = np.random.default_rng(seed)
    steps = rng.normal(scale=np.sqrt(2 * d * dt), size=(n_frames, n, 3))
    steps[0] = rng.uniform(0, box, size=(n, 3))
    x = np.cumsum(steps, axis=0) % box  # wrapped into the box, as an MD file stores them
    top = Topology(["P"], np.zeros(n, dtype=int), np.ones(n), molecule_names=["P"] * n)
    return Frames(x, np.tile(np.eye(3) * box, (n_frames, 1, 1)), top, dt)


def test_fs_and_tau_alpha_of_brownian_particles():
    """Gaussian displacements with variance 6 D t: F_s(k, t) = exp(-k^2 D t), tau_alpha = 1 / (k^2 D)."""
    d = 0.05
    fr = _brownian(d=d)
    rep = sampling_report(fr)
    k = rep["k_per_nm"]
    assert rep["spacing_nm"] == pytest.approx(3.0 / 400 ** (1 / 3))
    t = np.array(rep["fs_t_ps"])
    np.testing.assert_allclose(rep["fs"], np.exp(-k**2 * d * t), atol=0.02)
    assert rep["tau_alpha_ps"] == pytest.approx(1 / (k**2 * d), rel=0.06)
    assert rep["n_eff_structure"] == pytest.approx(rep["length_ps"] * k**2 * d / 2, rel=0.06)
    assert self_intermediate_scattering(fr, k, [0])[0] == pytest.approx(1.0)


def test_slow_structure_warns_with_a_bound():
    fr = _brownian(d=0.0005, n_frames=100)
    rep = sampling_report(fr, potential_energy=_ar1(0.5, 100))
    assert rep["tau_alpha_ps"] is None and rep["tau_alpha_lower_bound_ps"] == pytest.approx(49 * 0.1)
    assert rep["n_eff_structure"] == pytest.approx(99 / 98)  # T / (2 x the bound)
    text = " ".join(rep["warnings"])
    assert "stays above 1/e" in text and "neighbour cages" in text
    assert rep["tau_energy_ps"] is not None and rep["n_eff_energy"] > 20


def test_too_few_frames_are_reported_not_refused():
    rep = sampling_report(_brownian(n_frames=5))
    assert rep["n_eff_structure"] is None and "too few" in rep["warnings"][0]


def test_dihedral_sampling_counts_independent_backbone_samples():
    from cgkd.analysis.sampling import dihedral_sampling

    rng = np.random.default_rng(4)
    iid = {"phi": rng.uniform(-180, 180, (4000, 1)), "psi": rng.uniform(-180, 180, (4000, 1))}
    rep = dihedral_sampling(iid, dt=1.0)
    assert rep["n_eff_dihedrals"] > 0.8 * 4000 and not rep["warnings"]
    # a two-basin switch with a residence time of about 50 frames (psi) next to an uncorrelated phi
    state = np.cumsum(rng.random(4000) < 1 / 50) % 2
    slow = {"phi": rng.uniform(-180, 180, (4000, 1)), "psi": np.where(state, 150.0, -45.0)[:, None]
            + rng.normal(0, 10, (4000, 1))}
    rep = dihedral_sampling(slow, dt=0.5, min_effective=500)
    assert rep["slowest_dihedral"] == "psi"
    assert 10 < rep["tau_dihedrals_ps"] < 60 and rep["n_eff_dihedrals"] < 400 and rep["warnings"]


def test_basin_visits_count_changes_of_basin():
    from cgkd.analysis.sampling import basin_visits

    phi = np.full(10, -60.0)
    psi = np.array([-45.0] * 3 + [140.0] * 5 + [-45.0] * 2)
    rep = basin_visits(phi, psi, dt=1.0)
    assert rep["basin_changes"] == 2 and rep["basin_visits"] == 3
    assert rep["visits_per_ns"] == 3 / (9 / 1000)
