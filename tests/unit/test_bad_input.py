"""Bad input through the command line: every case exits 2 with one line that names the problem, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from cgkd.io.spec import SYSTEMS_DIR

WATER = yaml.safe_load((SYSTEMS_DIR / "water.yaml").read_text())
RELINE = yaml.safe_load((SYSTEMS_DIR / "reline.yaml").read_text())


def _spec(tmp_path, base, **changes):
    import copy

    d = copy.deepcopy(base)
    for dotted, value in changes.items():
        node = d
        *path, last = dotted.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    for m in d["molecules"]:
        m["template"] = str(SYSTEMS_DIR / m["template"])
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def _cgkd(*args):
    return subprocess.run([sys.executable, "-m", "cgkd.cli.main", *map(str, args)], capture_output=True, text=True)


def _one_line_error(res, *needles):
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    err = [line for line in res.stderr.splitlines() if "error" in line]
    assert len(err) == 1, res.stderr
    for n in needles:
        assert n in err[0], err[0]


SPEC_CASES = [
    ("water", {"nonbonded.cutoff": -0.9}, ["nonbonded.cutoff must be > 0 nm"]),
    ("reline", {"nonbonded.switch_distance": 1.2}, ["switch_distance must lie between 0 and the cutoff"]),
    ("reline", {"nonbonded.switch_distance": 0.2}, ["sizes.test: cutoff 0.7 nm shifts nonbonded.switch_distance"]),
    ("water", {"temperature": "hot"}, ["temperature: expected a number", "'hot'"]),
    ("water", {"mappings.one_bead.residues": {"HOHX": [{"name": "W", "type": "W", "atoms": ["*"]}]}},
     ["maps residue(s) ['HOHX']"]),
    ("reline", {"mappings.two_bead_choline.residues.CHOL": [{"name": "A", "type": "A", "atoms": ["N", "CX"]},
                                                           {"name": "B", "type": "B", "atoms": ["*"]}]},
     ["atom(s) ['CX'] are not in the template"]),
    ("water", {"friction": -1.0}, ["friction must be >= 0"]),
    ("water", {"sizes.test.report_interval": 0}, ["report_interval must be >= 1"]),
]


@pytest.mark.parametrize("base,changes,needles", SPEC_CASES, ids=[f"spec{i}" for i in range(len(SPEC_CASES))])
def test_bad_specs_fail_before_any_md(tmp_path, base, changes, needles):
    spec = _spec(tmp_path, WATER if base == "water" else RELINE, **changes)
    res = _cgkd("aa", spec, "--size", "test", "--out", tmp_path / "aa.h5", "--quiet")
    _one_line_error(res, *needles)
    assert not (tmp_path / "aa.h5").exists()


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: water\nforcefield: [amber14/tip3pfb.xml\nmolecules: []\n")
    _one_line_error(_cgkd("aa", bad, "--out", tmp_path / "aa.h5"), "bad.yaml is not valid YAML at line")


def test_bad_paths_and_files(tmp_path):
    (tmp_path / "afile").write_text("x")
    _one_line_error(_cgkd("aa", "water", "--size", "test", "--out", tmp_path / "afile" / "aa.h5"), "is a file, not a folder")
    (tmp_path / "dir.h5").mkdir()
    _one_line_error(_cgkd("aa", "water", "--size", "test", "--out", tmp_path / "dir.h5"), "is a folder")
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"\x00not hdf5" * 100)
    _one_line_error(_cgkd("map", garbage, "--out", tmp_path / "cg.h5"), "garbage.h5")
    _one_line_error(_cgkd("teachers", garbage, "--out", tmp_path / "t"), "garbage.h5")
    from cgkd.data.cg_h5 import write_cg
    from test_kd import lj_fluid

    write_cg(tmp_path / "cg.h5", lj_fluid(n_frames=4))
    model = tmp_path / "model.pt"
    model.write_bytes(b"PK\x03\x04 not a torch file")
    _one_line_error(_cgkd("simulate", model, tmp_path / "cg.h5", "--out", tmp_path / "md"), "model.pt")
    _one_line_error(_cgkd("export", model, "--cg", tmp_path / "cg.h5", "--out", tmp_path / "x.pt"), "model.pt")
    _one_line_error(_cgkd("compare", tmp_path / "cg.h5", tmp_path / "afile", "--out", tmp_path / "r"))


def _readers():
    from cgkd.data.cg_h5 import read_cg
    from cgkd.export import load_potential_artefact
    from cgkd.io.aa_h5 import read_aa
    from cgkd.io.config import load_yaml
    from cgkd.mapping import Mapping
    from cgkd.nn.native import load_native
    from cgkd.nn.potential import load_potential
    from cgkd.train import TrainConfig

    return {"mapping": Mapping.load, "native": load_native, "aa": read_aa, "cg": read_cg, "model": load_potential,
            "artefact": load_potential_artefact, "yaml": lambda p: load_yaml(TrainConfig, p)}


@pytest.mark.parametrize("content", [b"\x00\x01garbage", b'{"format": "cgkd-mapping"', b"[1, 2, 3]"],
                         ids=["garbage", "truncated", "foreign"])
@pytest.mark.parametrize("reader", sorted(_readers()))
def test_every_reader_names_a_bad_file(tmp_path, reader, content):
    path = tmp_path / "input.file"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="input.file"):  # FormatError is a ValueError
        _readers()[reader](path)
