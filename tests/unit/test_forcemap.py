"""Force maps: basic sums, the optimal map's consistency, variance and constraint handling."""

from __future__ import annotations

import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as u
import pytest

from cgkd.mapping import FORCE_MAPS, ForceMap, Mapping, fit_force_map, mean_squared_force
from cgkd.mapping.forcemap import crossing_constraints
from cgkd.registry import UnknownNameError
from cgkd.units import kbt

ELEMENTS = ("C", "N", "O", "S")


def chain_topology(n_mol, n_atoms, resname="MOL", elements=ELEMENTS):
    top = app.Topology()
    chain = top.addChain()
    for _ in range(n_mol):
        res = top.addResidue(resname, chain)
        atoms = [top.addAtom(f"A{k}", app.Element.getBySymbol(elements[k % len(elements)]), res) for k in range(n_atoms)]
        for k in range(n_atoms - 1):
            top.addBond(atoms[k], atoms[k + 1])
    return top


def gaussian_chain(n_frames, rng, k_bond=2000.0, tethers=(40.0, 80.0, 20.0, 60.0), temperature=300.0):
    """Exact Boltzmann samples of a harmonic 4-atom chain tethered to the origin: (x, f, K)."""
    n = len(tethers)
    hess = np.diag(np.asarray(tethers, dtype=float))
    for i in range(n - 1):
        hess[i, i] += k_bond
        hess[i + 1, i + 1] += k_bond
        hess[i, i + 1] -= k_bond
        hess[i + 1, i] -= k_bond
    cov = kbt(temperature) * np.linalg.inv(hess)
    chol = np.linalg.cholesky(cov)
    x = np.einsum("ij,fjc->fic", chol, rng.standard_normal((n_frames, n, 3)))
    f = -np.einsum("ij,fjc->fic", hess, x)
    return x, f, hess


@pytest.mark.parametrize("groups", [[[0, 1, 2, 3]], [[0, 1], [2, 3]]])
def test_optimal_map_recovers_the_analytic_mean_force_and_basic_agrees_on_average(groups):
    # For a harmonic system the mean force on R = C x is exactly -(C K^-1 C^T)^-1 R. Every consistent map
    # gives it on average (the basic map too); the optimal map gives it frame by frame (zero noise).
    rng = np.random.default_rng(0)
    x, f, hess = gaussian_chain(4000, rng)
    m = Mapping.from_groups(chain_topology(1, 4), groups)
    c = m.position_matrix.toarray()
    r = m.map_positions(x)  # (F, B, 3)
    mean_force = -np.einsum("ij,fjc->fic", np.linalg.inv(c @ np.linalg.inv(hess) @ c.T), r)
    opt = m.map_forces(f, m.fit_force_map("optimal", f))
    basic = m.map_forces(f, m.fit_force_map("basic"))
    err = np.sqrt(np.mean((opt - mean_force) ** 2) / np.mean(mean_force**2))
    assert err < 0.02
    assert mean_squared_force(opt) < mean_squared_force(basic)
    assert np.mean((opt - mean_force) ** 2) < 0.05 * np.mean((basic - mean_force) ** 2)
    # consistency of the basic map: regress its forces on R -> the analytic linear mean force (statistically)
    gain = np.linalg.inv(c @ np.linalg.inv(hess) @ c.T)
    design = r.transpose(0, 2, 1).reshape(-1, m.n_beads)  # (F*3, B)
    for b in range(m.n_beads):
        coef, *_ = np.linalg.lstsq(design, basic[:, b, :].reshape(-1), rcond=None)
        np.testing.assert_allclose(coef, -gain[b], rtol=0, atol=0.05 * np.abs(gain).max())
    # held-out frames: the fitted optimal map still beats basic
    fm = m.fit_force_map("optimal", forces=f[:2000])
    assert mean_squared_force(fm.apply(f[2000:])) < mean_squared_force(m.fit_force_map("basic").apply(f[2000:]))


def test_optimal_satisfies_consistency_m_ct_equals_identity():
    rng = np.random.default_rng(1)
    _, f, _ = gaussian_chain(500, rng)
    m = Mapping.from_groups(chain_topology(1, 4), [[0, 1], [2, 3]], center="geometry")
    fm = m.fit_force_map("optimal", forces=f)
    np.testing.assert_allclose(fm.matrix.toarray() @ m.position_matrix.toarray().T, np.eye(2), atol=1e-10)


def test_single_atom_beads_make_optimal_equal_basic():
    rng = np.random.default_rng(2)
    _, f, _ = gaussian_chain(300, rng)
    m = Mapping.from_groups(chain_topology(1, 4), [[0], [1], [2], [3]])
    np.testing.assert_allclose(m.fit_force_map("optimal", forces=f).matrix.toarray(), np.eye(4), atol=1e-12)
    np.testing.assert_allclose(m.map_forces(f, m.fit_force_map("optimal", f)), f, atol=1e-9)
    np.testing.assert_allclose(m.map_forces(f, m.fit_force_map("basic")), f, atol=1e-9)


def test_basic_map_sums_forces_and_conserves_total_force():
    rng = np.random.default_rng(3)
    m = Mapping.from_groups(chain_topology(3, 4), [[0, 1], [2, 3], [4, 5, 6], [7], [8, 9, 10, 11]])
    f = rng.normal(0, 300, (6, 12, 3))
    got = m.map_forces(f, m.fit_force_map("basic"))
    np.testing.assert_allclose(got[:, 2], f[:, 4:7].sum(1), atol=1e-9)
    np.testing.assert_allclose(got.sum(1), f.sum(1), atol=1e-9)


def test_rigid_water_one_bead_optimal_is_basic():
    # O-H, O-H, H-H constraints (rigid water): every row must weight all three atoms equally -> basic map.
    top = chain_topology(3, 3, resname="HOH", elements=("O", "H", "H"))
    m = Mapping.one_bead_per_residue(top)
    cons = np.array([[3 * k + i, 3 * k + j] for k in range(3) for i, j in ((0, 1), (0, 2), (1, 2))])
    f = np.random.default_rng(4).normal(0, 500, (50, 9, 3))
    fm = m.fit_force_map("optimal", forces=f, constraints=cons)
    np.testing.assert_allclose(fm.matrix.toarray(), m.fit_force_map("basic", constraints=cons).matrix.toarray(), atol=1e-10)


def simulate_constrained(n_mol=3, steps=2000, every=10, seed=5):
    """Langevin MD (Reference platform, vacuum) of n_mol independent 4-atom chains A-B=C-D with a B=C
    constraint, angles and tethers. Returns (topology, forces (F, A, 3) kJ/mol/nm, constraints (C, 2))."""
    top = chain_topology(n_mol, 4)
    system = mm.System()
    bonds = mm.HarmonicBondForce()
    angles = mm.HarmonicAngleForce()
    tether = mm.CustomExternalForce("0.5*kt*(x^2+y^2+z^2)")
    tether.addPerParticleParameter("kt")
    pos = []
    cons = []
    for k in range(n_mol):
        base = 4 * k
        for i, mass in enumerate((12.0, 14.0, 16.0, 32.0)):
            system.addParticle(mass)
            tether.addParticle(base + i, [50.0 + 10 * i])
            pos.append([0.14 * i, 0.05 * (i % 2), 0.0])
        bonds.addBond(base, base + 1, 0.14, 3.0e5)
        bonds.addBond(base + 2, base + 3, 0.15, 2.5e5)
        system.addConstraint(base + 1, base + 2, 0.145)
        cons.append((base + 1, base + 2))
        angles.addAngle(base, base + 1, base + 2, 1.9, 400.0)
        angles.addAngle(base + 1, base + 2, base + 3, 2.0, 300.0)
    for force in (bonds, angles, tether):
        system.addForce(force)
    integ = mm.LangevinMiddleIntegrator(300 * u.kelvin, 5.0 / u.picosecond, 0.001 * u.picosecond)
    integ.setRandomNumberSeed(seed)
    ctx = mm.Context(system, integ, mm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(np.asarray(pos) * u.nanometer)
    ctx.applyConstraints(1e-8)
    ctx.setVelocitiesToTemperature(300 * u.kelvin, seed)
    integ.step(200)
    forces = []
    for _ in range(steps // every):
        integ.step(every)
        st = ctx.getState(getForces=True)
        forces.append(st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer))
    return top, np.asarray(forces), np.asarray(cons, dtype=np.int64)


def test_constraint_across_beads_basic_refused_optimal_cancels_constraint_forces():
    top, f, cons = simulate_constrained()
    m = Mapping.from_groups(top, [[4 * k, 4 * k + 1] for k in range(3)] + [[4 * k + 2, 4 * k + 3] for k in range(3)])
    assert len(crossing_constraints(m, cons)) == 3
    with pytest.raises(ValueError, match="constraint"):
        m.map_forces(f, m.fit_force_map("basic", constraints=cons))
    biased = m.map_forces(f, m.fit_force_map("basic", constraints=cons, allow_constraint_crossing=True))
    fm = m.fit_force_map("optimal", forces=f, constraints=cons)
    mat = fm.matrix.toarray()
    # consistency and one map per molecule type (pooled)
    np.testing.assert_allclose(mat @ m.position_matrix.toarray().T, np.eye(6), atol=1e-10)
    np.testing.assert_allclose(mat[0, 0:4], mat[1, 4:8], atol=1e-12)
    # a constraint force +g on B, -g on C (any direction) maps to zero on every bead
    g = np.random.default_rng(6).normal(0, 100, (5, 3))
    pattern = np.zeros((5, 12, 3))
    pattern[:, 1], pattern[:, 2] = g, -g
    np.testing.assert_allclose(fm.apply(pattern), 0.0, atol=1e-9)
    assert np.abs(m.fit_force_map("basic", constraints=cons, allow_constraint_crossing=True).apply(pattern)).max() > 1
    # optimal beats another consistent, constraint-safe map: all weight on the terminal atom (A for bead 1, D for bead 2)
    c = m.position_matrix.toarray()
    alt = np.zeros_like(mat)
    for k in range(3):
        alt[k, 4 * k] = 1 / c[k, 4 * k]
        alt[3 + k, 4 * k + 3] = 1 / c[3 + k, 4 * k + 3]
    np.testing.assert_allclose(alt @ c.T, np.eye(6), atol=1e-12)
    alt_f = ForceMap("alt", alt).apply(f)
    opt_f = fm.apply(f)
    assert mean_squared_force(opt_f) <= mean_squared_force(alt_f)
    assert np.all(np.isfinite(biased))


def test_infeasible_constraint_between_single_atom_beads():
    top, f, cons = simulate_constrained(n_mol=1, steps=100)
    # [A, B], [C], [D] is feasible (bead C's row may use A and B), but B and C alone are not
    Mapping.from_groups(top, [[0, 1], [2], [3]]).fit_force_map("optimal", forces=f, constraints=cons)
    m = Mapping.from_groups(top, [[0], [1], [2], [3]])
    with pytest.raises(ValueError, match="no force map satisfies"):
        m.fit_force_map("optimal", forces=f, constraints=cons)


def test_pool_false_fits_each_molecule():
    top, f, cons = simulate_constrained(n_mol=2, steps=400)
    m = Mapping.from_groups(top, [[0, 1], [2, 3], [4, 5], [6, 7]])
    pooled = m.fit_force_map("optimal", forces=f, constraints=cons).matrix.toarray()
    single = m.fit_force_map("optimal", forces=f, constraints=cons, pool=False).matrix.toarray()
    np.testing.assert_allclose(pooled[0, :4], pooled[2, 4:], atol=1e-12)
    assert np.abs(single[0, :4] - single[2, 4:]).max() > 1e-6


def test_overlapping_beads_basic_refused_optimal_consistent():
    rng = np.random.default_rng(7)
    _, f, _ = gaussian_chain(500, rng)
    m = Mapping.from_groups(chain_topology(1, 4), [[0, 1, 2], [1, 2, 3]], allow_overlap=True)
    with pytest.raises(ValueError, match="share no atoms"):
        m.fit_force_map("basic")
    fm = m.fit_force_map("optimal", forces=f)
    np.testing.assert_allclose(fm.matrix.toarray() @ m.position_matrix.toarray().T, np.eye(2), atol=1e-10)


def test_registry_errors_and_argument_checks():
    m = Mapping.from_groups(chain_topology(1, 4), [[0, 1], [2, 3]])
    assert {"basic", "optimal"} <= set(FORCE_MAPS.names())
    with pytest.raises(UnknownNameError, match="Available: basic, optimal"):
        fit_force_map("magic", m)
    with pytest.raises(ValueError, match="pass forces"):
        m.fit_force_map("optimal")
    with pytest.raises(ValueError, match="regularization"):
        m.fit_force_map("optimal", forces=np.zeros((2, 4, 3)), regularization=-1.0)
    with pytest.raises(ValueError, match=r"constraints must have shape"):
        m.fit_force_map("basic", constraints=np.array([1, 2, 3]))
    with pytest.raises(ValueError, match="constraints must index atoms"):
        m.fit_force_map("basic", constraints=np.array([[0, 9]]))
    with pytest.raises(ValueError, match="forces has 0 frames"):
        m.fit_force_map("optimal", forces=np.zeros((0, 4, 3)))


def test_force_map_dict_round_trip():
    rng = np.random.default_rng(8)
    _, f, _ = gaussian_chain(200, rng)
    m = Mapping.from_groups(chain_topology(1, 4), [[0, 1], [2, 3]])
    fm = m.fit_force_map("optimal", forces=f)
    back = ForceMap.from_dict(fm.to_dict())
    np.testing.assert_allclose(back.apply(f), fm.apply(f), atol=1e-9)


def test_massless_site_keeps_its_force_in_basic_and_optimal_is_consistent():
    # a zero-mass site (virtual-site-like) has zero position weight but its force must still be mapped
    rng = np.random.default_rng(9)
    m = Mapping.from_groups(chain_topology(1, 4), [[0, 1], [2, 3]], masses=np.array([12.0, 0.0, 16.0, 1.0]))
    assert m.position_matrix.toarray()[0, 1] == 0.0
    f = rng.normal(0, 100, (20, 4, 3))
    np.testing.assert_allclose(m.map_forces(f, m.fit_force_map("basic"))[:, 0], f[:, 0] + f[:, 1], atol=1e-9)
    _, g, _ = gaussian_chain(300, rng)
    fm = m.fit_force_map("optimal", forces=g)
    np.testing.assert_allclose(fm.matrix.toarray() @ m.position_matrix.toarray().T, np.eye(2), atol=1e-10)
