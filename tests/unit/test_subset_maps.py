"""General linear maps: slices and left-out solvent, constraint-aware basic and optimal force maps, consistency.

Real OpenMM data built here: a capped alanine in a small TIP3P box (HBonds constraints) and small water
boxes, rigid and flexible. Checked against independent numpy computations and known results.
"""

from __future__ import annotations

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import pytest

from cgkd.aa.peptide import backbone_positions, build_peptide, chirality, nerf
from cgkd.geometry import angles, dihedrals, distances
from cgkd.io.spec import BeadSpec, MappingSpec, load_spec
from cgkd.mapping import Mapping, fit_force_map
from cgkd.mapping.forcemap import check_force_map, crossing_constraints

FF = ("amber14-all.xml", "amber14/tip3p.xml")


def run_md(topology, positions, system, n_frames, every, dt=0.001, seed=1, groups=None):
    """Positions and forces (F, A, 3) nm, kJ/mol/nm, unwrapped, from Langevin MD on the Reference platform."""
    integ = openmm.LangevinMiddleIntegrator(300 * u.kelvin, 5 / u.picosecond, dt * u.picosecond)
    integ.setRandomNumberSeed(seed)
    ctx = openmm.Context(system, integ, openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(positions)
    if topology.getPeriodicBoxVectors() is not None:
        ctx.setPeriodicBoxVectors(*topology.getPeriodicBoxVectors())
    openmm.LocalEnergyMinimizer.minimize(ctx, 10.0, 200)
    ctx.setVelocitiesToTemperature(300 * u.kelvin, seed)
    xyz, frc, extra = [], [], []
    for _ in range(n_frames):
        integ.step(every)
        st = ctx.getState(getPositions=True, getForces=True)
        xyz.append(st.getPositions(asNumpy=True).value_in_unit(u.nanometer))
        frc.append(st.getForces(asNumpy=True).value_in_unit(u.kilojoule_per_mole / u.nanometer))
        if groups is not None:
            extra.append(ctx.getState(getForces=True, groups=groups).getForces(asNumpy=True)
                         .value_in_unit(u.kilojoule_per_mole / u.nanometer))
    out = [np.asarray(xyz), np.asarray(frc)]
    return out + [np.asarray(extra)] if groups is not None else out


@pytest.fixture(scope="module")
def solvated_alanine():
    """ACE-ALA-NME in ~100 TIP3P waters, HBonds + rigid water, 12 frames."""
    top, xyz = build_peptide(["ALA"])
    ff = app.ForceField(*FF)
    mod = app.Modeller(top, xyz * u.nanometer)
    mod.addSolvent(ff, model="tip3p", padding=0.6 * u.nanometer)
    system = ff.createSystem(mod.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.6 * u.nanometer,
                             constraints=app.HBonds)
    # a term that depends only on two mapped atoms (ALA N and ALA C): its mapped force is known exactly
    atoms = {(a.residue.name, a.name): a.index for a in mod.topology.atoms() if a.residue.name != "HOH"}
    probe = openmm.CustomBondForce("0.5 * 300 * (r - 0.3)^2")
    probe.addBond(atoms["ALA", "N"], atoms["ALA", "C"])
    probe.setForceGroup(5)
    system.addForce(probe)
    pos, frc, probe_f = run_md(mod.topology, mod.positions, system, 12, 20, groups={5})
    cons = np.asarray([system.getConstraintParameters(i)[:2] for i in range(system.getNumConstraints())])
    masses = np.asarray([system.getParticleMass(i).value_in_unit(u.dalton) for i in range(system.getNumParticles())])
    box = np.asarray(mod.topology.getPeriodicBoxVectors().value_in_unit(u.nanometer))
    return dict(top=mod.topology, pos=pos, forces=frc, probe=probe_f, constraints=cons, masses=masses, atoms=atoms,
                box=np.repeat(box[None], len(pos), axis=0))


def backbone_mapping(data, name="backbone"):
    spec = load_spec("alanine-dipeptide")
    return Mapping.from_spec(data["top"], spec.mapping(name), masses=data["masses"], name=name)


# ------------------------------------------------------------------------------------------ peptide builder
def test_nerf_places_the_requested_bond_angle_and_dihedral():
    rng = np.random.default_rng(3)
    a, b, c = rng.normal(size=(3, 3))
    d = nerf(a, b, c, 0.15, 110.0, -65.0)
    xyz = np.stack([a, b, c, d])[None]
    assert distances(xyz, [[2, 3]])[0, 0] == pytest.approx(0.15)
    assert np.degrees(angles(xyz, [[1, 2, 3]])[0, 0]) == pytest.approx(110.0)
    assert np.degrees(dihedrals(xyz, [[0, 1, 2, 3]])[0, 0]) == pytest.approx(-65.0)


def test_built_alanine_is_l_and_has_the_requested_backbone():
    bb = backbone_positions(["ALA"], phi=-70.0, psi=140.0)
    r = bb[1]
    xyz = np.stack([bb[0]["C"], r["N"], r["CA"], r["C"], bb[2]["N"]])[None]
    assert np.degrees(dihedrals(xyz, [[0, 1, 2, 3]])[0, 0]) == pytest.approx(-70.0)
    assert np.degrees(dihedrals(xyz, [[1, 2, 3, 4]])[0, 0]) == pytest.approx(140.0)
    top, pos = build_peptide(["ALA"])
    a = {at.name: at.index for at in list(top.residues())[1].atoms()}
    # CORN rule: seen from H-alpha, CO -> R -> N runs clockwise for an L amino acid
    ca, view = pos[a["CA"]], pos[a["CA"]] - pos[a["HA"]]
    assert np.dot(np.cross(pos[a["C"]] - ca, pos[a["CB"]] - ca), view) > 0
    assert np.dot(np.cross(pos[a["CB"]] - ca, pos[a["N"]] - ca), view) > 0
    assert chirality(pos[a["N"]], ca, pos[a["C"]], pos[a["CB"]]) * chirality(r["N"], r["CA"], r["C"], r["CB"]) > 0
    system = app.ForceField("amber14-all.xml").createSystem(top, nonbondedMethod=app.NoCutoff)
    assert system.getNumParticles() == 22


# ------------------------------------------------------------------------------------------ slice maps
def test_backbone_slice_of_a_solvated_peptide_matches_numpy(solvated_alanine):
    d = solvated_alanine
    m = backbone_mapping(d)
    at = d["atoms"]
    picked = [at["ACE", "C"], at["ALA", "N"], at["ALA", "CA"], at["ALA", "C"], at["NME", "N"]]
    assert m.n_beads == 5 and not m.is_partition and m.mapped_atoms.tolist() == sorted(picked)
    assert m.dropped_molecules.size == m.n_molecules - 1 and not m.cg_periodic
    np.testing.assert_allclose(m.map_positions(d["pos"], d["box"]), d["pos"][:, picked], atol=1e-12)
    # basic: each selected atom plus the hydrogens tied to it by a constraint (independent loop)
    fmap = fit_force_map("basic", m, constraints=d["constraints"])
    ref = np.zeros((len(d["pos"]), 5, 3))
    for b, atom in enumerate(picked):
        group = {atom} | {int(j) for i, j in d["constraints"] if i == atom} | {int(i) for i, j in d["constraints"]
                                                                              if j == atom}
        ref[:, b] = d["forces"][:, sorted(group)].sum(axis=1)
    np.testing.assert_allclose(m.map_forces(d["forces"], fmap), ref, rtol=1e-10, atol=1e-8)
    assert fmap.matrix[1, at["ALA", "H"]] == 1.0 and fmap.matrix[2, at["ALA", "HA"]] == 1.0
    assert fmap.matrix[0].nnz == 1  # ACE C has no hydrogen
    # the CG topology: one molecule, a chain of 4 bonds
    top = m.topology()
    assert top.n_molecules == 1 and top.bonds.tolist() == [[0, 1], [1, 2], [2, 3], [3, 4]]


def test_consistent_maps_reproduce_the_force_of_a_cg_coordinate_exactly(solvated_alanine):
    """A potential of bead positions alone maps to its own -dU/dR under any consistent force map."""
    d = solvated_alanine
    m = backbone_mapping(d)
    r = m.map_positions(d["pos"], d["box"])
    vec = r[:, 3] - r[:, 1]  # ALA C - ALA N
    dist = np.linalg.norm(vec, axis=-1, keepdims=True)
    f_c = -300 * (dist - 0.3) * vec / dist
    expected = np.zeros_like(r)
    expected[:, 3], expected[:, 1] = f_c, -f_c
    for name in ("basic", "optimal"):
        fmap = fit_force_map(name, m, forces=d["forces"], constraints=d["constraints"])
        np.testing.assert_allclose(fmap.apply(d["probe"]), expected, atol=1e-6 * np.abs(expected).max())


def test_optimal_slice_map_uses_unmapped_atoms_and_lowers_the_noise(solvated_alanine):
    d = solvated_alanine
    m = backbone_mapping(d)
    basic = fit_force_map("basic", m, constraints=d["constraints"])
    opt = fit_force_map("optimal", m, forces=d["forces"], constraints=d["constraints"])
    peptide = set(np.flatnonzero(np.asarray([a.residue.name != "HOH" for a in d["top"].atoms()])).tolist())
    used = set(opt.matrix.tocoo().col.tolist())
    assert used <= peptide  # own molecule only: no water
    assert len(used - set(basic.matrix.tocoo().col.tolist())) > 0  # draws on unmapped peptide atoms
    assert np.mean(opt.apply(d["forces"]) ** 2) < np.mean(basic.apply(d["forces"]) ** 2)
    check_force_map(m, opt.matrix, d["constraints"])


def water_box(rigid: bool, edge=1.4, frames=40, every=10, dt=0.0005):
    ff = app.ForceField("amber14/tip3p.xml")
    mod = app.Modeller(app.Topology(), [])
    mod.addSolvent(ff, model="tip3p", boxSize=openmm.Vec3(edge, edge, edge) * u.nanometer)
    system = ff.createSystem(mod.topology, nonbondedMethod=app.PME, nonbondedCutoff=0.6 * u.nanometer,
                             constraints=None, rigidWater=rigid)
    pos, frc = run_md(mod.topology, mod.positions, system, frames, every, dt=dt)
    cons = np.asarray([system.getConstraintParameters(i)[:2] for i in range(system.getNumConstraints())],
                      dtype=np.int64).reshape(-1, 2)
    return mod.topology, pos, frc, cons


def oxygen_slice(top):
    oxygens = [a.index for a in top.atoms() if a.element.symbol == "O"]
    return Mapping.from_groups(top, [[o] for o in oxygens], types=["OW"] * len(oxygens), name="oxygens")


def test_oxygen_slice_of_rigid_water_takes_the_whole_molecule():
    """Rigid water: the O-H, O-H and H-H constraints force equal weights, so both maps give the molecule's total."""
    top, pos, frc, cons = water_box(rigid=True, frames=6, every=20, dt=0.002)
    m = oxygen_slice(top)
    assert m.cg_periodic and m.dropped_molecules.size == 0
    total = frc.reshape(len(frc), -1, 3, 3).sum(axis=2)
    basic = fit_force_map("basic", m, constraints=cons)
    np.testing.assert_allclose(basic.apply(frc), total, rtol=1e-10, atol=1e-8)
    opt = fit_force_map("optimal", m, forces=frc, constraints=cons)
    np.testing.assert_allclose(opt.matrix.toarray()[0, :3], [1.0, 1.0, 1.0], atol=1e-9)
    assert len(crossing_constraints(m, cons)) == 0


def test_optimal_slice_of_flexible_water_spreads_weight_onto_the_hydrogens():
    """Known result: for a slice of a stiff group the optimal map moves weight onto the group's other atoms,
    because the large internal (bond) forces cancel in the sum."""
    top, pos, frc, _ = water_box(rigid=False)
    m = oxygen_slice(top)
    basic = fit_force_map("basic", m)
    np.testing.assert_allclose(basic.apply(frc), frc[:, 0::3], atol=0)
    opt = fit_force_map("optimal", m, forces=frc)
    w = opt.matrix.toarray()[0, :3]
    assert w[0] == pytest.approx(1.0, abs=1e-9)  # consistency: the only atom with position weight
    assert w[1] > 0.5 and w[2] > 0.5
    msf_basic, msf_opt = np.mean(basic.apply(frc) ** 2), np.mean(opt.apply(frc) ** 2)
    assert msf_opt < 0.5 * msf_basic


# ------------------------------------------------------------------------------------------ consistency checks
def test_check_force_map_refuses_inconsistent_and_constraint_breaking_maps(solvated_alanine):
    d = solvated_alanine
    m = backbone_mapping(d)
    good = fit_force_map("basic", m, constraints=d["constraints"]).matrix.toarray()
    check_force_map(m, good, d["constraints"])
    twice = good.copy()
    twice[2, d["atoms"]["ALA", "CA"]] = 2.0
    with pytest.raises(ValueError, match="not consistent with the position map"):
        check_force_map(m, twice, d["constraints"])
    no_h = good.copy()
    no_h[1, d["atoms"]["ALA", "H"]] = 0.0
    with pytest.raises(ValueError, match="joined by a constraint"):
        check_force_map(m, no_h, d["constraints"])
    with pytest.raises(ValueError, match="expected shape"):
        check_force_map(m, good[:, :10], d["constraints"])
    # the same map is fine when nothing is constrained
    check_force_map(m, no_h, None)


def test_constraint_chain_through_an_unmapped_atom_to_two_beads_is_crossing():
    top = app.Topology()
    res = top.addResidue("TRI", top.addChain())
    atoms = [top.addAtom(f"C{k}", app.Element.getBySymbol("C"), res) for k in range(3)]
    top.addBond(atoms[0], atoms[1])
    top.addBond(atoms[1], atoms[2])
    m = Mapping.from_groups(top, [[0], [2]])
    cons = np.asarray([[0, 1], [1, 2]])
    assert len(crossing_constraints(m, cons)) == 2
    with pytest.raises(ValueError, match="constraint"):
        fit_force_map("basic", m, constraints=cons)
    assert len(crossing_constraints(m, cons[:1])) == 0
    assert m.bonds.tolist() == [[0, 1]]  # bonded through the unmapped middle atom


def test_calpha_trace_is_bonded_through_unmapped_backbone_atoms():
    top, _ = build_peptide(["ALA", "ALA", "ALA"], minimize=False)
    cas = [a.index for a in top.atoms() if a.name == "CA"]
    m = Mapping.from_groups(top, [[c] for c in cas], types=["CA"] * 3)
    assert m.bonds.tolist() == [[0, 1], [1, 2]]
    assert m.topology().angles.tolist() == [[0, 1, 2]]


# ------------------------------------------------------------------------------------------ weights and specs
def test_explicit_position_weights_round_trip(tmp_path):
    top, pos = build_peptide(["ALA"], minimize=False)
    heavy = [a.index for a in top.atoms() if a.element.symbol != "H"]
    m = Mapping.from_groups(top, [heavy[:4], heavy[4:]], weights=[[1, 2, 3, 4], None], center="geometry")
    got = m.map_positions(pos[None])
    np.testing.assert_allclose(got[0, 0], (np.asarray([1, 2, 3, 4])[:, None] * pos[heavy[:4]]).sum(0) / 10)
    np.testing.assert_allclose(got[0, 1], pos[heavy[4:]].mean(0))
    m.save(tmp_path / "m.json")
    back = Mapping.load(tmp_path / "m.json")
    np.testing.assert_allclose(back.map_positions(pos[None]), got)
    with pytest.raises(ValueError, match=r"bead_weights\[0\] must sum to a positive"):
        Mapping.from_groups(top, [heavy[:2]], weights=[[1, -1]])
    with pytest.raises(ValueError, match=r"bead_weights\[0\]"):
        Mapping.from_groups(top, [heavy[:2]], weights=[[1, 2, 3]])


def test_spec_residue_neither_mapped_nor_left_out_is_refused(solvated_alanine):
    d = solvated_alanine
    spec = MappingSpec(residues={"ALA": [BeadSpec("CA", "CA", ["CA"])]}, unmapped=["HOH"])
    with pytest.raises(ValueError, match="'unmapped'"):
        Mapping.from_spec(d["top"], spec)
    ok = MappingSpec(residues={"ALA": [BeadSpec("CA", "CA", ["CA"])]}, unmapped=["HOH", "ACE", "NME"])
    assert Mapping.from_spec(d["top"], ok).n_beads == 1
    with pytest.raises(ValueError, match="weights need the atoms listed"):
        BeadSpec("X", "X", ["*"], weights=[1.0])


def test_threonine_and_isoleucine_get_their_natural_beta_configuration():
    from cgkd.aa.peptide import beta_configuration

    top, pos = build_peptide(["THR", "ILE"])
    got = {r.name: beta_configuration(r.name, pos, {a.name: a.index for a in r.atoms()})
           for r in top.residues() if r.name in ("THR", "ILE")}
    assert got == {"THR": "R", "ILE": "S"}  # L-threonine is (2S,3R), L-isoleucine (2S,3S)


def test_chignolin_calpha_map_is_a_chain_of_ten_beads():
    spec = load_spec("chignolin")
    spec.check_templates()
    pdb = app.PDBFile(str(spec.template_path(spec.molecules[0])))
    m = Mapping.from_spec(pdb.topology, spec.mapping())
    top = m.topology()
    assert m.n_beads == 10 and [len(x) for x in (top.bonds, top.angles, top.dihedrals)] == [9, 8, 7]
    assert m.type_names == ["TYR", "ASP", "PRO", "GLU", "THR", "GLY", "TRP"]
    ca = [a.index for a in pdb.topology.atoms() if a.name == "CA"]
    xyz = pdb.getPositions(asNumpy=True).value_in_unit(u.nanometer)[None]
    np.testing.assert_allclose(m.map_positions(xyz), xyz[:, ca])
    r = distances(m.map_positions(xyz), top.bonds)
    assert np.all((r > 0.36) & (r < 0.40))  # consecutive C-alpha atoms of trans peptides: 3.8 A


def test_optimal_map_warns_when_it_has_fewer_samples_than_weights(solvated_alanine):
    d = solvated_alanine
    m = backbone_mapping(d)
    with pytest.warns(UserWarning, match="fewer than 10 per atom"):
        fit_force_map("optimal", m, forces=d["forces"][:2], constraints=d["constraints"])


def test_chiral_map_gets_an_improper_prior_that_holds_the_handedness(solvated_alanine):
    from cgkd.data.cg_h5 import CGData
    from cgkd.nn.prior_fit import fit_priors
    from cgkd.nn.priors import FourierImpropers
    import torch

    d = solvated_alanine
    m = backbone_mapping(d, "backbone_cb")
    top = m.topology()
    names = list(top.names)
    assert top.impropers.tolist() == [[names.index(b) for b in ("N1", "C1", "CA", "CB")]]
    pos = m.map_positions(d["pos"], d["box"])
    # more frames for the fit: the 12 MD frames with small random displacements
    rng = np.random.default_rng(0)
    many = np.concatenate([pos + rng.normal(0, 0.003, pos.shape) for _ in range(10)])
    data = CGData(positions=many.astype(np.float32), forces=np.zeros_like(many, dtype=np.float32), box=None,
                  topology=top, temperature=300.0)
    imp = next(p for p in fit_priors(data, kinds=("impropers",)) if isinstance(p, FourierImpropers))
    x = torch.tensor(many[0], dtype=torch.float64)
    mirrored = x * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)  # the D form
    batch = torch.zeros(len(x), dtype=torch.int64)
    imp = imp.double()
    e_l = float(imp(x, torch.tensor(top.types), torch.zeros(1, 3, 3, dtype=torch.float64), batch, 1))
    e_d = float(imp(mirrored, torch.tensor(top.types), torch.zeros(1, 3, 3, dtype=torch.float64), batch, 1))
    kt = 2.494  # kJ/mol at 300 K
    assert e_l < 2 * kt and e_d > 20 * kt
