"""Mapping: position map (numpy reference, periodic centres), constructors, bad input, save/load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openmm.app as app
import openmm.unit as u
import pytest

from cgkd.data import CGData
from cgkd.io.spec import BeadSpec, MappingSpec, load_spec
from cgkd.mapping import Mapping
from cgkd.units import ANGSTROM_TO_NM

SYSTEMS = Path(__file__).resolve().parents[2] / "systems"


def chain_topology(n_mol=2, elements=("C", "C", "O", "H"), resname="TRI", box=None):
    """Molecules of len(elements) atoms bonded as a chain (last atom H bonded to the first)."""
    top = app.Topology()
    chain = top.addChain()
    for _ in range(n_mol):
        res = top.addResidue(resname, chain)
        atoms = [top.addAtom(f"{e}{k}", app.Element.getBySymbol(e), res) for k, e in enumerate(elements)]
        for k in range(len(atoms) - 2):
            top.addBond(atoms[k], atoms[k + 1])
        top.addBond(atoms[0], atoms[-1])
    if box is not None:
        top.setPeriodicBoxVectors(np.asarray(box).tolist())
    return top


def chain_positions(n_frames, n_mol, n_atoms_per_mol, rng, spread=2.0):
    """Molecules with ~0.13 nm bonds around random centres, shape (F, n_mol*n, 3) nm."""
    base = np.zeros((n_atoms_per_mol, 3))
    base[:, 0] = 0.13 * np.arange(n_atoms_per_mol)
    base[-1] = [0.0, 0.1, 0.0]  # the H on atom 0
    out = []
    for _ in range(n_frames):
        mols = [base + rng.uniform(0, spread, 3) + 0.01 * rng.standard_normal(base.shape) for _ in range(n_mol)]
        out.append(np.concatenate(mols))
    return np.asarray(out)


def masses_of(top):
    return np.asarray([a.element.mass.value_in_unit(u.dalton) for a in top.atoms()])


def test_map_positions_matches_numpy_reference_loop():
    rng = np.random.default_rng(0)
    top = chain_topology(n_mol=3)
    m = Mapping.from_groups(top, [[0, 1, 3], [2], [4, 5, 6, 7], [8, 11], [9, 10]])
    xyz = chain_positions(5, 3, 4, rng)
    got = m.map_positions(xyz)
    mass = masses_of(top)
    ref = np.zeros((5, 5, 3))
    for f in range(5):
        for b, atoms in enumerate(m.bead_atoms):
            ref[f, b] = sum(mass[a] * xyz[f, a] for a in atoms) / sum(mass[a] for a in atoms)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)
    np.testing.assert_allclose(m.bead_masses, [mass[[0, 1, 3]].sum(), mass[2], mass[4:8].sum(), mass[[8, 11]].sum(), mass[[9, 10]].sum()])
    geo = Mapping.from_groups(top, [[0, 1, 3], [2], [4, 5, 6, 7], [8, 11], [9, 10]], center="geometry")
    np.testing.assert_allclose(geo.map_positions(xyz)[:, 0], xyz[:, [0, 1, 3]].mean(axis=1), atol=1e-12)


def test_center_of_mass_across_periodic_boundary_cubic():
    box = np.diag([2.0, 2.0, 2.0])
    top = chain_topology(n_mol=1, box=box)
    m = Mapping.one_bead_per_residue(top)
    whole = np.array([[1.90, 1.0, 1.0], [2.03, 1.0, 1.0], [2.16, 1.0, 1.0], [1.90, 1.1, 1.0]])
    wrapped = whole.copy()
    wrapped[:, 0] = np.mod(wrapped[:, 0], 2.0)  # atoms 1 and 2 cross to x ~ 0.03, 0.16
    mass = masses_of(top)
    expected = (mass[:, None] * whole).sum(0) / mass.sum()
    got = m.map_positions(wrapped[None], np.broadcast_to(box, (1, 3, 3)))[0, 0]
    np.testing.assert_allclose(got, expected, atol=1e-12)
    # the naive centre of the wrapped atoms is ~1 nm away: the test can fail
    assert np.linalg.norm((mass[:, None] * wrapped).sum(0) / mass.sum() - expected) > 0.5


def test_center_across_triclinic_boundary_is_right_up_to_a_lattice_vector():
    rng = np.random.default_rng(1)
    box = np.array([[2.0, 0.0, 0.0], [0.6, 2.1, 0.0], [-0.4, 0.5, 1.9]])
    top = chain_topology(n_mol=4, box=box)
    m = Mapping.from_groups(top, [[k * 4, k * 4 + 1, k * 4 + 3] for k in range(4)] + [[k * 4 + 2] for k in range(4)])
    xyz = chain_positions(3, 4, 4, rng)
    shifts = rng.integers(-2, 3, size=(3, 16, 3)) @ box  # each atom moved by its own lattice vector
    boxes = np.broadcast_to(box, (3, 3, 3))
    got = m.map_positions(xyz + shifts, boxes)
    ref = m.map_positions(xyz, boxes)
    frac = np.einsum("fbi,ij->fbj", got - ref, np.linalg.inv(box))
    np.testing.assert_allclose(frac, np.round(frac), atol=1e-9)
    # and beads of one molecule stay together (same lattice image as each other)
    d = got[:, 0] - got[:, 4]
    np.testing.assert_allclose(d, ref[:, 0] - ref[:, 4], atol=1e-9)


def test_bonds_between_beads_and_cg_topology():
    top = chain_topology(n_mol=2)
    m = Mapping.from_groups(top, [[0, 3], [1], [2], [4, 5, 6, 7]])
    np.testing.assert_array_equal(m.bonds, [[0, 1], [1, 2]])
    assert m.bead_molecule.tolist() == [0, 0, 0, 1]
    assert m.bead_names == ["TRI0", "TRI1", "TRI2", "TRI"]
    top_cg = m.topology()
    assert top_cg.angles.tolist() == [[0, 1, 2]] and top_cg.molecule_names == ("TRI", "TRI")
    np.testing.assert_allclose(top_cg.masses, m.bead_masses)
    cg = top_cg.to_openmm(box=np.eye(3) * 3.0)
    assert cg.getNumAtoms() == 4 and cg.getNumResidues() == 2 and cg.getNumBonds() == 2
    assert cg.getPeriodicBoxVectors() is not None


def test_from_spec_on_reline_templates_and_save_load(tmp_path):
    spec = load_spec(SYSTEMS / "reline.yaml")
    top = app.Topology()
    chain = top.addChain()
    for resname, tmpl in (("CHOL", "chol.pdb"), ("CLA", "cla.pdb"), ("UREA", "urea.pdb"), ("UREA", "urea.pdb")):
        pdb = app.PDBFile(str(SYSTEMS / "templates" / tmpl))
        res = top.addResidue(resname, chain)
        new = {a: top.addAtom(a.name, a.element, res) for a in pdb.topology.atoms()}
        for b in pdb.topology.bonds():
            top.addBond(new[b[0]], new[b[1]])
    two = Mapping.from_spec(top, spec.mapping("two_bead_choline"), name="two_bead_choline")
    assert two.n_atoms == 21 + 1 + 8 + 8
    assert two.bead_names == ["NC3", "COH", "CL", "URE", "URE"]
    assert two.type_names == ["NC3", "COH", "CL", "URE"]
    np.testing.assert_array_equal(two.bonds, [[0, 1]])
    one = Mapping.from_spec(top, spec.mapping("one_bead"))
    assert one.n_beads == 4 and one.type_names == ["CHO", "CL", "URE"]
    np.testing.assert_allclose(one.bead_masses.sum(), two.bead_masses.sum())
    path = tmp_path / "map.json"
    two.save(path)
    back = Mapping.load(path)
    assert back.bead_names == two.bead_names and back.type_names == two.type_names
    np.testing.assert_array_equal(back.bead_types, two.bead_types)
    assert (back.position_matrix != two.position_matrix).nnz == 0
    xyz = np.random.default_rng(2).normal(0, 0.05, (2, two.n_atoms, 3))
    np.testing.assert_allclose(back.map_positions(xyz), two.map_positions(xyz))


def test_auto_grouping_makes_connected_beads_with_hydrogens_on_their_heavy_atom():
    import networkx as nx

    pdb = app.PDBFile(str(SYSTEMS / "templates" / "chol.pdb"))
    top = pdb.topology
    m = Mapping.auto(top, heavy_atoms_per_bead=3)
    atoms = list(top.atoms())
    graph = nx.Graph([(b[0].index, b[1].index) for b in top.bonds()])
    assert sorted(np.concatenate(m.bead_atoms).tolist()) == list(range(21))
    heavy_counts = []
    for beads in m.bead_atoms:
        assert nx.is_connected(graph.subgraph(beads.tolist()))
        heavy_counts.append(sum(atoms[a].element.symbol != "H" for a in beads))
    assert sum(heavy_counts) == 7 and m.n_beads >= 2 and max(heavy_counts) <= 4 and min(heavy_counts) >= 2
    one = Mapping.auto(top, heavy_atoms_per_bead=7)
    assert one.n_beads == 1
    with pytest.raises(ValueError, match="heavy_atoms_per_bead"):
        Mapping.auto(top, heavy_atoms_per_bead=0)


# ---------------------------------------------------------------------------------- bad input
def test_atom_not_in_any_bead_is_left_out():
    m = Mapping.from_groups(chain_topology(1), [[0, 1, 2]])
    assert not m.is_partition and m.mapped_atoms.tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="at least one bead"):
        Mapping.from_groups(chain_topology(1), [])


def test_atom_in_two_beads_is_refused_unless_allowed():
    top = chain_topology(1)
    with pytest.raises(ValueError, match="more than one bead"):
        Mapping.from_groups(top, [[0, 1, 3], [1, 2]])
    m = Mapping.from_groups(top, [[0, 1, 3], [1, 2]], allow_overlap=True)
    assert m.n_beads == 2


def test_bead_spanning_two_molecules_is_refused():
    with pytest.raises(ValueError, match="inside one molecule"):
        Mapping.from_groups(chain_topology(2), [[0, 1, 2, 3, 4], [5, 6, 7]])


def test_group_with_bad_index_and_wrong_types_length():
    top = chain_topology(1)
    with pytest.raises(ValueError, match=r"groups\[0\]"):
        Mapping.from_groups(top, [[0, 1, 2, 3, 99]])
    with pytest.raises(ValueError, match="types has 2 entries"):
        Mapping.from_groups(top, [[0, 1, 2, 3]], types=["A", "B"])
    with pytest.raises(ValueError, match="center"):
        Mapping.from_groups(top, [[0, 1, 2, 3]], center="charge")


def test_zero_mass_bead_is_refused():
    top = chain_topology(1)
    with pytest.raises(ValueError, match="mass 0"):
        Mapping.from_groups(top, [[0, 1, 3], [2]], masses=np.array([12.0, 12.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="masses must have shape"):
        Mapping.from_groups(top, [[0, 1, 2, 3]], masses=np.ones(3))


def test_spec_errors_name_the_residue_and_atoms():
    top = chain_topology(1)
    spec = MappingSpec(residues={"XYZ": [BeadSpec("A", "A")]})
    with pytest.raises(ValueError, match="residue 'TRI'"):
        Mapping.from_spec(top, spec)
    spec = MappingSpec(residues={"TRI": [BeadSpec("A", "A", ["C0", "NOPE"])]})
    with pytest.raises(ValueError, match="NOPE"):
        Mapping.from_spec(top, spec)


def test_position_shape_and_count_mismatches():
    m = Mapping.from_groups(chain_topology(1), [[0, 1, 2, 3]])
    with pytest.raises(ValueError, match="has 5 atoms but the mapping"):
        m.map_positions(np.zeros((2, 5, 3)))
    with pytest.raises(ValueError, match="shape"):
        m.map_positions(np.zeros((4, 3)))
    bad = chain_positions(2, 1, 4, np.random.default_rng(0))
    bad[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        m.map_positions(bad)
    with pytest.raises(ValueError, match="forces has 3 frames but positions has 2"):
        m.map(np.nan_to_num(bad), np.zeros((3, 4, 3)), None, m.fit_force_map("basic"))


def test_forces_mismatch_and_nonfinite_forces():
    m = Mapping.from_groups(chain_topology(1), [[0, 1, 2, 3]])
    basic = m.fit_force_map("basic")
    with pytest.raises(ValueError, match="forces has 3 atoms"):
        m.map_forces(np.zeros((2, 3, 3)), basic)
    f = np.zeros((2, 4, 3))
    f[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="forces must be finite"):
        m.map_forces(f, basic)
    with pytest.raises(ValueError, match="force_map must be a ForceMap.*fit_force_map"):
        m.map_forces(np.zeros((2, 4, 3)), "optimal")  # fitting is never hidden in applying
    other = Mapping.from_groups(chain_topology(1), [[0, 1], [2, 3]]).fit_force_map("basic")
    with pytest.raises(ValueError, match="maps 4 atoms to 2 beads"):
        m.map_forces(np.zeros((2, 4, 3)), other)


def test_missing_or_bad_box_for_periodic_mapping():
    top = chain_topology(1, box=np.eye(3) * 2)
    m = Mapping.one_bead_per_residue(top)
    xyz = chain_positions(2, 1, 4, np.random.default_rng(0))
    with pytest.raises(ValueError, match="box is None but the mapping is periodic"):
        m.map_positions(xyz)
    with pytest.raises(ValueError, match=r"box must have shape \(2, 3, 3\)"):
        m.map_positions(xyz, np.eye(3))
    with pytest.raises(ValueError, match="positive volume"):
        m.map_positions(xyz, np.zeros((2, 3, 3)))


def test_angstrom_coordinates_are_refused():
    m = Mapping.from_groups(chain_topology(1), [[0, 1, 2, 3]])
    xyz = chain_positions(2, 1, 4, np.random.default_rng(0))
    m.map_positions(xyz)  # nm: fine
    with pytest.raises(ValueError, match="Angstrom"):
        m.map_positions(xyz / ANGSTROM_TO_NM)


def test_quantity_input_is_converted():
    m = Mapping.from_groups(chain_topology(1), [[0, 1, 2, 3]])
    xyz = chain_positions(1, 1, 4, np.random.default_rng(0))
    np.testing.assert_allclose(m.map_positions(u.Quantity(xyz * 10, u.angstrom)), m.map_positions(xyz), atol=1e-12)


def test_load_rejects_foreign_json(tmp_path):
    p = tmp_path / "x.json"
    p.write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="cgkd-mapping"):
        Mapping.load(p)
    with pytest.raises(FileNotFoundError):
        Mapping.load(tmp_path / "missing.json")


def test_map_and_topology_build_a_cgdata():
    rng = np.random.default_rng(3)
    box = np.eye(3) * 3.0
    top = chain_topology(2, box=box)
    m = Mapping.from_groups(top, [[0, 1, 3], [2], [4, 5, 7], [6]], types=["A", "B", "A", "B"])
    xyz = chain_positions(4, 2, 4, rng)
    forces = rng.normal(0, 100, (4, 8, 3))
    pos, frc = m.map(xyz, forces, np.broadcast_to(box, (4, 3, 3)), m.fit_force_map("basic"))
    data = CGData(pos, frc, np.broadcast_to(box, (4, 3, 3)), m.topology(), temperature=300.0)
    assert data.n_beads == 4 and data.type_names == ["A", "B"]
    np.testing.assert_array_equal(data.types, [0, 1, 0, 1])
    np.testing.assert_allclose(data.forces[:, 0], forces[:, [0, 1, 3]].sum(1), rtol=1e-5)
    np.testing.assert_array_equal(data.bonds, [[0, 1], [2, 3]])
