"""System specs: shipped specs load, match their force fields, and bad input is rejected with clear errors."""

import dataclasses
import os
import tomllib
from pathlib import Path

import numpy as np
import openmm.app as app
import pytest
import yaml

from cgkd.io.config import from_dict, to_dict
from cgkd.io.spec import SYSTEMS_DIR, ProtocolSpec, SystemSpec, load_spec, shipped_systems, spec_from_yaml_text

ROOT = Path(__file__).resolve().parents[2]


def _reline_dict():
    with open(SYSTEMS_DIR / "reline.yaml") as fh:
        return yaml.safe_load(fh)


def test_shipped_specs_load_with_expected_content():
    reline = load_spec("reline")
    assert [(m.residue, m.per_unit) for m in reline.molecules] == [("CHOL", 1), ("CLA", 1), ("UREA", 2)]
    assert reline.forcefield == ["charmm36.xml", "charmm36/water.xml"]
    assert reline.default_mapping == "one_bead"
    assert {"test", "quick", "default", "paper"} <= set(reline.sizes)
    types = {b.type for beads in reline.mapping().residues.values() for b in beads}
    assert types == {"CHO", "CL", "URE"}
    water = load_spec(SYSTEMS_DIR / "water.yaml")
    assert water.molecules[0].residue == "HOH" and water.rigid_water
    assert 200 <= water.size("quick").units <= 300


def test_shipped_specs_are_package_data_found_from_anywhere(tmp_path, monkeypatch):
    import cgkd

    assert SYSTEMS_DIR == Path(cgkd.__file__).parent / "systems"
    assert shipped_systems() == ["alanine-dipeptide", "chignolin", "reline", "water"]
    monkeypatch.chdir(tmp_path)  # by name, from a folder that is not the checkout
    for name in shipped_systems():
        spec = load_spec(name)
        assert spec.name == name and Path(spec.source) == SYSTEMS_DIR / f"{name}.yaml"
        assert all(spec.template_path(m).is_file() for m in spec.molecules)
    monkeypatch.chdir(ROOT)  # through the repository's systems/ link, as `make demo` does
    spec = load_spec("systems/reline.yaml")
    assert spec == load_spec("reline") and all(spec.template_path(m).is_file() for m in spec.molecules)
    assert load_spec(Path("systems") / "water.yaml") == load_spec("water")


def test_a_path_wins_over_a_shipped_name(tmp_path, monkeypatch):
    d = _reline_dict()
    d["name"] = "my_reline"
    for mol in d["molecules"]:
        mol["template"] = str(SYSTEMS_DIR / mol["template"])  # absolute template paths work too
    (tmp_path / "reline").write_text(yaml.safe_dump(d))
    monkeypatch.chdir(tmp_path)
    spec = load_spec("reline")
    assert spec.name == "my_reline" and all(spec.template_path(m).is_file() for m in spec.molecules)


def test_systems_link_and_package_data():
    link = ROOT / "systems"
    assert link.is_symlink() and os.readlink(link) == os.path.join("cgkd", "systems")  # relative: survives a move
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["cgkd.systems"]
    declared = {p.relative_to(SYSTEMS_DIR) for pattern in patterns for p in SYSTEMS_DIR.glob(pattern)}
    present = {p.relative_to(SYSTEMS_DIR) for p in SYSTEMS_DIR.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.name != "__init__.py"}
    assert present == declared, "every file in cgkd/systems must be declared as package data in pyproject.toml"
    for spec in map(load_spec, shipped_systems()):
        assert {Path(m.template) for m in spec.molecules} <= declared


@pytest.mark.parametrize("name", ["reline", "water"])
def test_templates_match_the_force_field(name):
    spec = load_spec(name)
    ff = app.ForceField(*spec.forcefield)
    for mol in spec.molecules:
        pdb = app.PDBFile(str(spec.template_path(mol)))
        system = ff.createSystem(app.Modeller(pdb.topology, pdb.positions).topology, nonbondedMethod=app.NoCutoff)
        assert system.getNumParticles() == pdb.topology.getNumAtoms()
        tmpl = ff._templates[mol.residue]
        assert sorted(a.name for a in pdb.topology.atoms()) == sorted(a.name for a in tmpl.atoms)
        # geometry is physical: every bond between 0.09 and 0.2 nm
        x = pdb.getPositions(asNumpy=True)._value
        for b in pdb.topology.bonds():
            assert 0.09 < np.linalg.norm(x[b[0].index] - x[b[1].index]) < 0.2


def test_mappings_partition_each_residue():
    spec = load_spec("reline")
    ff = app.ForceField(*spec.forcefield)
    for mname, mapping in spec.mappings.items():
        for res, beads in mapping.residues.items():
            names = [a.name for a in ff._templates[res].atoms]
            listed = [a for b in beads for a in (names if b.atoms == ["*"] else b.atoms)]
            assert sorted(listed) == sorted(names), (mname, res)
    head, tail = spec.mapping("two_bead_choline").residues["CHOL"]
    assert "N" in head.atoms and {"C2", "C3", "C4"} <= set(head.atoms)
    assert {"C1", "C5", "OH1", "HO1"} <= set(tail.atoms)


def test_spec_yaml_round_trip():
    spec = load_spec("reline")
    again = spec_from_yaml_text(spec.to_yaml())
    assert dataclasses.replace(again, source=spec.source) == spec


def test_unknown_key_is_rejected_with_its_path():
    d = _reline_dict()
    d["temprature"] = 300
    with pytest.raises(ValueError, match="temprature"):
        from_dict(SystemSpec, d)
    d = _reline_dict()
    d["sizes"]["quick"]["stepz"] = 1
    with pytest.raises(ValueError, match=r"sizes\.quick.*stepz"):
        from_dict(SystemSpec, d)


@pytest.mark.parametrize(
    "path, value, match",
    [
        (("temperature",), -5.0, "temperature"),
        (("pressure",), 0.0, "pressure"),
        (("density",), 0.0, "density"),
        (("constraints",), "Hbonds", "constraints"),
        (("nonbonded", "method"), "Ewald2", "nonbonded.method"),
        (("default_mapping",), "three_bead", "default_mapping"),
        (("sizes", "test", "units"), 0, "units"),
        (("sizes", "test", "report_interval"), 0, "report_interval"),
        (("sizes", "test", "npt_steps"), -1, "npt_steps"),
        (("sizes", "test", "cutoff"), -0.5, "cutoff"),
        (("sizes", "test", "units"), "many", "expected int"),
        (("molecules",), [], "molecules"),
    ],
)
def test_bad_values_are_rejected(path, value, match):
    d = _reline_dict()
    target = d
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValueError, match=match):
        from_dict(SystemSpec, d)


def test_unknown_size_mapping_and_spec_name():
    spec = load_spec("reline")
    with pytest.raises(ValueError, match="size 'huge'.*available"):
        spec.size("huge")
    with pytest.raises(ValueError, match="mapping 'nope'"):
        spec.mapping("nope")
    with pytest.raises(FileNotFoundError, match="neither a file nor a shipped system"):
        load_spec("no_such_system")


def test_protocol_defaults_round_trip():
    p = ProtocolSpec(units=3)
    assert from_dict(ProtocolSpec, to_dict(p)) == p


def test_an_embedded_spec_without_newer_default_fields_still_matches():
    import yaml as _yaml
    from dataclasses import replace

    from cgkd.aa.simulate import _same_spec

    spec = load_spec("water")
    d = _yaml.safe_load(spec.to_yaml())
    for m in d["mappings"].values():  # as written before mappings had these fields
        for key in ("unmapped", "dihedrals", "impropers"):
            m.pop(key)
    for key in ("solvent", "presets"):
        d.pop(key)
    old_text = _yaml.safe_dump(d, sort_keys=False)
    assert old_text != spec.to_yaml() and _same_spec(old_text, spec)
    assert not _same_spec(old_text, replace(spec, temperature=310.0))
