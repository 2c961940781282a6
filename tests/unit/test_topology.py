"""The frozen CG topology: bonded terms derived once, validation, conversions and type remapping."""

import dataclasses
import json

import numpy as np
import openmm.app as app
import pytest

from cgkd.topology import Topology, angles_from_bonds, dihedrals_from_bonds


def test_angles_and_dihedrals_from_a_branched_graph():
    # 0-1-2-3 chain with a branch 1-4, plus a separate 3-ring 5-6-7
    bonds = [[0, 1], [1, 2], [2, 3], [1, 4], [5, 6], [6, 7], [7, 5]]
    angles = angles_from_bonds(bonds)
    assert {tuple(a) for a in angles} == {(0, 1, 2), (0, 1, 4), (2, 1, 4), (1, 2, 3), (5, 6, 7), (6, 5, 7), (5, 7, 6)}
    dih = dihedrals_from_bonds(bonds)
    assert {tuple(d) for d in dih} == {(0, 1, 2, 3), (3, 2, 1, 4)}
    assert angles.dtype == np.int64 and angles_from_bonds(np.zeros((0, 2))).shape == (0, 3)
    with pytest.raises(ValueError, match="self bond"):
        angles_from_bonds([[2, 2]])


def _chain_top():
    # two molecules: a 4-bead chain A-B-B-A and a 2-bead molecule C-C
    return Topology(["A", "B", "C"], [0, 1, 1, 0, 2, 2], [10.0, 20.0, 20.0, 10.0, 5.0, 5.0],
                    ["A0", "B1", "B2", "A3", "C0", "C1"], [0, 0, 0, 0, 1, 1], ["CHN", "DI"],
                    [[1, 0], [2, 1], [2, 3], [4, 5], [0, 1]])


def test_topology_derives_terms_once_and_is_frozen():
    top = _chain_top()
    assert top.bonds.tolist() == [[0, 1], [1, 2], [2, 3], [4, 5]]  # sorted, duplicates dropped
    assert top.angles.tolist() == [[0, 1, 2], [1, 2, 3]]
    assert top.dihedrals.tolist() == [[0, 1, 2, 3]]
    assert top.terms("angles") is top.angles
    assert top.type_tuple([3, 2, 1]) == top.type_tuple([1, 2, 3]) == ("A", "B", "B")
    with pytest.raises(ValueError, match="read-only"):
        top.types[0] = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
        top.bonds = np.zeros((0, 2))
    np.testing.assert_allclose(top.masses_by_type(), [10.0, 20.0, 5.0])
    np.testing.assert_allclose(top.masses_by_type(["C", "A"]), [5.0, 10.0])
    with pytest.raises(ValueError, match="'D' has no particles"):
        top.masses_by_type(["D"])


@pytest.mark.parametrize("kwargs, match", [
    (dict(types=[0, 3]), "types must index"),
    (dict(masses=[1.0, 0.0]), "positive, finite mass"),
    (dict(masses=[1.0]), "masses must have shape"),
    (dict(bonds=[[0, 2]]), "bonds must index"),
    (dict(bonds=[[0, 1]], molecules=[0, 1]), "joins two molecules"),
    (dict(molecules=[0, 2]), "without gaps"),
    (dict(names=["x"]), "names has 1 entries"),
    (dict(type_names=["A", "A"]), "distinct"),
])
def test_topology_rejects_bad_input(kwargs, match):
    args = dict(type_names=["A", "B"], types=[0, 1], masses=[1.0, 2.0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        Topology(**args)


def test_json_and_openmm_round_trips():
    top = _chain_top()
    back = Topology.from_json(top.to_json())
    assert back.same_as(top) and back.dihedrals.tolist() == top.dihedrals.tolist()
    omm = top.to_openmm(box=np.eye(3) * 3.0)
    assert [r.name for r in omm.residues()] == ["CHN", "DI"] and omm.getNumBonds() == 4
    again = Topology.from_openmm(omm, top.type_names, type_map={"A0": "A", "B1": "B", "B2": "B", "A3": "A",
                                                                "C0": "C", "C1": "C"}, masses=top.masses)
    assert again.same_as(top)
    with pytest.raises(ValueError, match="no element"):
        Topology.from_openmm(omm, top.type_names, types=top.types)
    d = top.to_dict()
    d["format_version"] = 99
    with pytest.raises(ValueError, match="upgrade cgkd"):
        Topology.from_dict(d)


def test_molecules_from_openmm_follow_bonds_across_residues():
    omm = app.Topology()
    chain = omm.addChain()
    r1, r2, r3 = omm.addResidue("ALA", chain), omm.addResidue("GLY", chain), omm.addResidue("HOH", chain)
    a = [omm.addAtom("X", app.element.carbon, r) for r in (r1, r1, r2, r3)]
    omm.addBond(a[1], a[2])  # a bond between residues: one molecule
    top = Topology.from_openmm(omm, ["X"])
    assert top.molecules.tolist() == [0, 0, 0, 1] and top.molecule_names == ("ALA", "HOH")
    np.testing.assert_allclose(top.masses, 12.011, atol=1e-3)


def test_type_indices_into_another_name_list():
    top = _chain_top()
    assert top.type_indices(["C", "B", "A", "D"]).tolist() == [2, 1, 1, 2, 0, 0]
    assert top.with_type_names(["C", "B", "A"]).type_names == ("C", "B", "A")
    with pytest.raises(ValueError, match=r"types \['C'\] that the potential does not know"):
        top.type_indices(["A", "B"], "the potential")


def test_reads_the_system_json_of_cgkd_0_1(tmp_path):
    from pathlib import Path

    old = json.loads((Path(__file__).parents[1] / "data" / "v1" / "system.json").read_text())
    top = Topology.from_dict(old)
    assert top.n_particles == len(old["types"]) and list(top.type_names) == old["type_names"]
    assert top.molecules.tolist() == old["bead_residue"]


def test_impropers_round_trip_and_version_1_files_load():
    from cgkd.topology import Topology

    top = Topology(["A", "B"], [0, 1, 0, 1], [12.0, 14.0, 12.0, 12.0], molecules=[0, 0, 0, 0],
                   bonds=[(0, 1), (1, 2), (1, 3)], impropers=[(0, 2, 1, 3)])
    back = Topology.from_json(top.to_json())
    assert back.same_as(top) and back.impropers.tolist() == [[0, 2, 1, 3]] and back.terms("impropers").shape == (1, 4)
    v1 = top.to_dict() | {"format_version": 1}
    v1.pop("impropers")
    old = Topology.from_dict(v1)
    assert old.impropers.shape == (0, 4) and not old.same_as(top)
    import pytest

    with pytest.raises(ValueError, match="spans molecules"):
        Topology(["A"], [0, 0, 0, 0], [1.0] * 4, molecules=[0, 0, 1, 1], impropers=[(0, 1, 2, 3)])
    with pytest.raises(ValueError, match="four different"):
        Topology(["A"], [0, 0, 0, 0], [1.0] * 4, molecules=[0, 0, 0, 0], impropers=[(0, 1, 1, 3)])
