"""Analysis: RDF against mdtraj, analytic angles/dihedrals, density, MSD/diffusion, metrics, compare report."""

import json

import mdtraj
import numpy as np
import pytest

from cgkd import units
from cgkd.analysis import (
    CompareSettings,
    Frames,
    adf,
    bonded_values,
    cdf,
    compare,
    density,
    diffusion_coefficient,
    jensen_shannon,
    load_frames,
    msd,
    rdf,
    total_absolute_error,
    unwrap,
)
from cgkd.analysis.rdf import first_minimum
from cgkd.data.cg_h5 import CGData
from cgkd.topology import Topology

L = 2.0


def _top(types, names, masses, bonds=()):
    """A topology with one molecule holding every bead when there are bonds, else one molecule per bead."""
    n = len(types)
    return Topology(names, np.asarray(types), masses, molecules=np.zeros(n, int) if len(bonds) else None, bonds=bonds)


def _random_frames(n=60, f=5, seed=0, box=L):
    rng = np.random.default_rng(seed)
    return Frames(rng.random((f, n, 3)) * box, np.tile(np.eye(3) * box, (f, 1, 1)),
                  _top(np.arange(n) % 2, ["A", "B"], np.full(n, 50.0)), dt=1.0)


def _md_topology(n):
    top = mdtraj.Topology()
    res = top.add_residue("X", top.add_chain())
    for _ in range(n):
        top.add_atom("C", mdtraj.element.carbon, res)
    return top


def test_rdf_matches_mdtraj():
    fr = _random_frames()
    traj = mdtraj.Trajectory(fr.positions, _md_topology(60), unitcell_lengths=np.full((5, 3), L),
                             unitcell_angles=np.full((5, 3), 90.0))
    for a, b in [(0, 1), (0, 0)]:
        r, g = rdf(fr, a, b, r_max=0.9, n_bins=30)
        ia, ib = np.flatnonzero(fr.types == a), np.flatnonzero(fr.types == b)
        pairs = traj.topology.select_pairs(ia, ib)
        r_md, g_md = mdtraj.compute_rdf(traj, pairs, r_range=(0.0, 0.9), n_bins=30)
        np.testing.assert_allclose(r, r_md, rtol=1e-6)
        np.testing.assert_allclose(g, g_md, rtol=1e-5, atol=1e-8)
    # an ideal gas has g = 1 on average
    assert np.mean(g[10:]) == pytest.approx(1.0, abs=0.15)


def test_first_minimum_of_a_shell():
    r = np.linspace(0.01, 1.0, 100)
    g = 1 + 1.5 * np.exp(-((r - 0.3) / 0.05) ** 2) - 0.6 * np.exp(-((r - 0.5) / 0.05) ** 2)
    assert first_minimum(r, g) == pytest.approx(0.5, abs=0.02)


def test_adf_and_cdf_of_known_geometry():
    # an L-shaped triplet (90 deg) and a straight one (180 deg) far apart in a big box
    pos = np.array([[0.3, 0, 0], [0, 0, 0], [0, 0.3, 0], [5, 5, 5], [5.3, 5, 5], [5.6, 5, 5]]) + 1.0
    fr = Frames(pos[None], np.eye(3)[None] * 20.0, _top([0, 1, 0, 0, 1, 0], ["A", "B"], np.ones(6)))
    theta, p = adf(fr, cutoff=0.35, n_bins=18)
    assert set(p) == {(0, 1, 0)}
    dens = p[(0, 1, 0)]
    assert dens.sum() * 10.0 == pytest.approx(1.0)
    assert dens[np.argmin(abs(theta - 95))] == pytest.approx(0.05) and dens[-1] == pytest.approx(0.05)
    r, th, c = cdf(fr, cutoff=0.35, n_r=5, n_theta=18)  # r bins 0.07 nm wide: 0.3 falls in the last
    m = c[(0, 1, 0)]
    assert m.sum() * (r[1] - r[0]) * (th[1] - th[0]) == pytest.approx(1.0)
    assert np.flatnonzero(m.sum(axis=1)).tolist() == [4]


def test_bonded_values_analytic():
    # a chain bent at 90 degrees with an IUPAC dihedral of -90 degrees, wrapped across the box boundary
    pos = np.array([[1.0, 0, 0], [0, 0, 0], [0, 1.0, 0], [0, 1.0, 1.0]]) * 0.2 + np.array([0.05, 0.9, 0.9])
    pos[0, 0] -= 0  # bead 0 stays, bead 1 is shifted by a box vector: minimum image must undo that
    pos[1, 0] += 2.0
    fr = Frames(pos[None], np.eye(3)[None] * 2.0, _top([0, 1, 1, 0], ["A", "B"], np.ones(4), [[0, 1], [1, 2], [2, 3]]))
    v = bonded_values(fr)
    np.testing.assert_allclose(v["bonds"][(0, 1)], 0.2, atol=1e-9)
    np.testing.assert_allclose(v["bonds"][(1, 1)], 0.2, atol=1e-9)
    np.testing.assert_allclose(v["angles"][(0, 1, 1)], 90.0, atol=1e-7)
    assert v["dihedrals"][(0, 1, 1, 0)][0] == pytest.approx(-90.0)  # the sign OpenMM uses (test_geometry)


def test_density_from_units():
    fr = _random_frames(n=10, f=2)
    expected = 500.0 / 8.0 * units.AMU_PER_NM3_TO_G_PER_CM3  # 500 amu in 8 nm^3
    np.testing.assert_allclose(density(fr), expected)
    assert expected == pytest.approx(0.1038, rel=1e-3)


def test_unwrap_follows_box_jumps_and_msd_is_ballistic():
    f, v = 20, 0.3  # nm per frame along x, crossing a 2 nm box several times
    x = (np.arange(f) * v)[:, None, None] * np.array([1.0, 0, 0]) + 0.1
    wrapped = np.mod(x, L)
    fr = Frames(wrapped, np.tile(np.eye(3) * L, (f, 1, 1)), _top([0], ["A"], [1.0]), dt=0.5)
    np.testing.assert_allclose(unwrap(fr), x, atol=1e-12)
    t, m = msd(fr)
    np.testing.assert_allclose(m[0], (t / 0.5 * v) ** 2, atol=1e-10)


def test_diffusion_of_a_random_walk():
    rng = np.random.default_rng(1)
    f, n, sigma, dt = 400, 200, 0.05, 2.0
    x = np.cumsum(rng.normal(scale=sigma, size=(f, n, 3)), axis=0)
    fr = Frames(np.mod(x, 5.0), np.tile(np.eye(3) * 5.0, (f, 1, 1)), _top(np.zeros(n, int), ["A"], np.ones(n)), dt=dt)
    t, m = msd(fr, max_lag=100)
    d = diffusion_coefficient(t, m[0])
    assert d == pytest.approx(sigma**2 / (2 * dt), rel=0.08)  # per-dimension variance sigma^2 per frame


def test_metrics():
    p = np.array([0.0, 1.0, 3.0, 0.0])
    assert total_absolute_error(p, 2 * p, dx=0.5) == pytest.approx(0.0)
    assert total_absolute_error([1, 0], [0, 1], dx=0.1) == pytest.approx(2.0)
    assert total_absolute_error([1, 0], [0, 1], dx=0.1, normalize=False) == pytest.approx(0.2)
    assert jensen_shannon(p, p) == pytest.approx(0.0)
    assert jensen_shannon([1, 0], [0, 1]) == pytest.approx(1.0)
    assert 0 < jensen_shannon([1, 1], [1, 2]) < 0.1


def _cg(positions, dt=0.5):
    f, n, _ = positions.shape
    return CGData(positions=positions, forces=np.zeros_like(positions), box=np.tile(np.eye(3) * L, (f, 1, 1)),
                  topology=Topology(["A", "B"], np.arange(n) % 2, np.full(n, 50.0), molecule_names=["M"] * n),
                  temperature=300.0, time=np.arange(f) * dt)


def test_compare_writes_report_and_ranks_candidates(tmp_path):
    rng = np.random.default_rng(2)
    g = np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3) * L / 4
    lattice = g[None] + rng.normal(scale=0.03, size=(12, 64, 3))
    ref = _cg(lattice)
    same = _cg(g[None] + rng.normal(scale=0.03, size=(12, 64, 3)))
    gas = _cg(rng.random((12, 64, 3)) * L)
    settings = CompareSettings(n_bins=40, adf_cutoff=0.55, max_frames=12)
    result = compare(ref, {"close": same, "gas": gas}, tmp_path / "cmp", settings=settings)
    err = result["errors"]
    assert err["close"]["RDF A-B"]["tae"] < 0.3 * err["gas"]["RDF A-B"]["tae"]
    assert err["close"]["ADF A-B-A"]["jsd"] < err["gas"]["ADF A-B-A"]["jsd"]
    assert result["density"]["close"] == pytest.approx(result["density"]["AA (mapped)"])
    assert result["diffusion"]["close"]["A"] is not None
    for name in ("rdf.png", "adf.png", "cdf.png", "density.png", "report.md", "metrics.json"):
        assert (tmp_path / "cmp" / name).stat().st_size > 0
    text = (tmp_path / "cmp" / "report.md").read_text()
    assert "| RDF A-B |" in text and "gas" in text
    assert json.loads((tmp_path / "cmp" / "metrics.json").read_text())["settings"]["adf_cutoff_nm"] == 0.55


def test_bad_inputs(tmp_path):
    fr = _random_frames()
    nobox = Frames(fr.positions, None, fr.topology)
    with pytest.raises(ValueError, match="rdf needs a periodic"):
        rdf(nobox, 0, 1)
    with pytest.raises(ValueError, match="r_max must exceed"):
        rdf(fr, 0, 1, r_max=0.0)
    with pytest.raises(ValueError, match="no bead pairs"):
        rdf(fr, 0, 5)
    with pytest.raises(ValueError, match="density needs"):
        density(nobox)
    with pytest.raises(ValueError, match="msd needs the time"):
        msd(nobox)
    with pytest.raises(ValueError, match="window"):
        diffusion_coefficient(np.arange(5.0), np.arange(5.0), window=(0.5, 0.2))
    with pytest.raises(ValueError, match="cutoff must be positive"):
        adf(fr, cutoff=0.0)
    with pytest.raises(ValueError, match="share their bins"):
        jensen_shannon([1, 2], [1, 2, 3])
    with pytest.raises(ValueError, match="positions must have shape"):
        Frames(np.zeros((3, 3)), None, _top([0], ["A"], [1.0]))
    with pytest.raises(ValueError, match="cannot read frames"):
        load_frames(42)
    with pytest.raises(ValueError, match="not a cgkd simulate output"):
        load_frames(tmp_path)
    with pytest.raises(ValueError, match="at least one"):
        compare(_cg(fr.positions[:, :60]), {}, tmp_path / "x")


def test_first_minimum_ignores_noise_dips_on_a_shoulder():
    # a peak at 0.43 nm, a shoulder at 0.52 nm and the shell minimum at 0.72 nm, with bin-to-bin noise
    r = np.linspace(0.005, 1.105, 100)
    g = 1 + 0.8 * np.exp(-((r - 0.43) / 0.06) ** 2) + 0.3 * np.exp(-((r - 0.52) / 0.08) ** 2)
    g -= 0.2 * np.exp(-((r - 0.72) / 0.08) ** 2)
    g *= r > 0.33
    g += 0.04 * np.where(np.arange(100) % 2 == 0, 1.0, -1.0) * (r > 0.45)
    assert first_minimum(r, g) == pytest.approx(0.72, abs=0.04)


def test_bad_frames_and_rdf_range_are_refused():
    fr = _random_frames(n=10, f=2)
    with pytest.raises(ValueError, match=r"r_max must be at most half the smallest box height \(1.0000 nm\)"):
        rdf(fr, 0, 1, r_max=1.2)
    pos = fr.positions.copy()
    pos[1, 3, 2] = np.nan
    with pytest.raises(ValueError, match=r"positions must be finite; positions\[1, 3, 2\] is nan"):
        Frames(pos, fr.box, fr.topology)
    with pytest.raises(ValueError, match="temperature must be > 0.0 K"):
        CGData(fr.positions, np.zeros_like(fr.positions), fr.box, fr.topology, temperature=-5.0)
    with pytest.raises(ValueError, match="forces must be finite"):
        CGData(fr.positions, np.full_like(fr.positions, np.inf), fr.box, fr.topology, temperature=300.0)
