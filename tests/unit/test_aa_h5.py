"""AA HDF5 file: round trip, chunked appending, truncation, frame selection and error paths."""

import h5py
import numpy as np
import openmm.app as app
import pytest

from cgkd import keys
from cgkd.io.aa_h5 import (
    AAData,
    AAWriter,
    create_aa,
    read_aa,
    read_blob,
    topology_from_json,
    topology_to_json,
    write_aa,
)
from cgkd.io.spec import SYSTEMS_DIR, load_spec


def _topology(n_waters=3):
    pdb = app.PDBFile(str(SYSTEMS_DIR / "templates" / "hoh.pdb"))
    mod = app.Modeller(pdb.topology, pdb.positions)
    for _ in range(n_waters - 1):
        mod.add(pdb.topology, pdb.positions)
    return mod.topology


def _data(n_frames=5, n_waters=3, seed=0):
    rng = np.random.default_rng(seed)
    top = _topology(n_waters)
    a = top.getNumAtoms()
    return AAData(
        positions=rng.normal(size=(n_frames, a, 3)),
        forces=rng.normal(size=(n_frames, a, 3)) * 100,
        box=np.tile(np.eye(3) * 2.0, (n_frames, 1, 1)),
        potential_energy=rng.normal(size=n_frames),
        time=np.arange(n_frames) * 0.1,
        masses=np.tile([15.999, 1.008, 1.008], n_waters),
        constraints=np.array([[0, 1], [0, 2], [1, 2]]),
        topology=top,
        spec=load_spec("water"),
        temperature=300.0,
        attrs={"note": "test"},
    )


def test_round_trip_keeps_every_field(tmp_path):
    d = _data()
    write_aa(tmp_path / "aa.h5", d)
    r = read_aa(tmp_path / "aa.h5")
    for name in ("positions", "forces", "box", "potential_energy", "time", "masses", "constraints"):
        np.testing.assert_allclose(getattr(r, name), np.asarray(getattr(d, name)).astype(getattr(r, name).dtype))
    assert r.positions.dtype == np.float32 and r.forces.dtype == np.float32 and r.constraints.dtype == np.int64
    assert r.temperature == 300.0 and r.attrs == {"note": "test"}
    assert r.spec.name == "water" and r.spec.to_yaml() == d.spec.to_yaml()
    atoms = list(r.topology.atoms())
    assert [a.element.symbol for a in atoms] == ["O", "H", "H"] * 3
    assert [(b[0].index, b[1].index) for b in r.topology.bonds()] == [(b[0].index, b[1].index) for b in d.topology.bonds()]
    assert [res.name for res in r.topology.residues()] == ["HOH"] * 3
    assert r.topology.getPeriodicBoxVectors() is not None


def test_topology_json_round_trip_without_box():
    top = _topology(2)
    again = topology_from_json(topology_to_json(top))
    assert topology_to_json(again) == topology_to_json(top)
    assert again.getPeriodicBoxVectors() is None


def test_append_in_chunks_truncate_and_blobs(tmp_path):
    d = _data(n_frames=7)
    path = tmp_path / "aa.h5"
    create_aa(path, topology=d.topology, masses=d.masses, constraints=d.constraints, temperature=300.0,
              periodic=True, chunk_frames=2, blobs={"state": b"abc"})
    with AAWriter(path) as w:
        w.append(d.positions[0], d.forces[0], d.box[0], d.potential_energy[0], d.time[0])  # one frame
        w.append(d.positions[1:5], d.forces[1:5], d.box[1:5], d.potential_energy[1:5], d.time[1:5])  # a block
        assert w.n_frames == 5
        w.truncate(3)
        w.append(d.positions[3:7], d.forces[3:7], d.box[3:7], d.potential_energy[3:7], d.time[3:7])
        w.set_blob("state", b"defg")  # replaced, not duplicated
    r = read_aa(path)
    np.testing.assert_array_equal(r.time, d.time)
    np.testing.assert_allclose(r.forces, d.forces.astype(np.float32))
    assert r.spec is None
    assert read_blob(path, "state") == b"defg" and read_blob(path, "missing") is None


@pytest.mark.parametrize("frames, expect", [(slice(1, 4), [1, 2, 3]), ([0, 2, 4], [0, 2, 4]), (np.array([-1]), [4])])
def test_frame_selection(tmp_path, frames, expect):
    d = _data()
    write_aa(tmp_path / "aa.h5", d)
    r = read_aa(tmp_path / "aa.h5", frames=frames)
    np.testing.assert_allclose(r.time, d.time[expect])
    np.testing.assert_allclose(r.positions, d.positions[expect].astype(np.float32))


def test_non_periodic_file(tmp_path):
    d = _data()
    d.box = None
    write_aa(tmp_path / "aa.h5", d)
    r = read_aa(tmp_path / "aa.h5")
    assert r.box is None and not r.periodic


def test_read_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_aa(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "other.h5", "w") as h5:
        h5.attrs["format"] = "something-else"
    with pytest.raises(ValueError, match="is not a cgkd-aa file"):
        read_aa(tmp_path / "other.h5")
    write_aa(tmp_path / "aa.h5", _data())
    with pytest.raises(ValueError, match="frames must index"):
        read_aa(tmp_path / "aa.h5", frames=[0, 9])
    with pytest.raises(ValueError, match="strictly increasing"):
        read_aa(tmp_path / "aa.h5", frames=[2, 1])
    with h5py.File(tmp_path / "aa.h5", "r+") as h5:
        h5.attrs["format_version"] = 99
    with pytest.raises(ValueError, match="format_version 99 is not readable.*upgrade cgkd"):
        read_aa(tmp_path / "aa.h5")


def test_writer_errors(tmp_path):
    d = _data()
    path = tmp_path / "aa.h5"
    create_aa(path, topology=d.topology, masses=d.masses, constraints=d.constraints, temperature=300.0, periodic=True)
    with AAWriter(path) as w:
        with pytest.raises(ValueError, match="9 atoms"):
            w.append(np.zeros((1, 4, 3)), np.zeros((1, 4, 3)), d.box[0], 0.0, 0.0)
        with pytest.raises(ValueError, match="box is None"):
            w.append(d.positions[0], d.forces[0], None, 0.0, 0.0)
        with pytest.raises(ValueError, match="n_frames must be in"):
            w.truncate(5)
    with pytest.raises(FileNotFoundError):
        AAWriter(tmp_path / "nope.h5")
    with pytest.raises(ValueError, match="masses must have shape"):
        create_aa(path, topology=d.topology, masses=d.masses[:3], constraints=d.constraints, temperature=300.0,
                  periodic=True)
    with pytest.raises(ValueError, match="temperature"):
        create_aa(path, topology=d.topology, masses=d.masses, constraints=d.constraints, temperature=0.0, periodic=True)


@pytest.mark.parametrize(
    "field, value, match",
    [
        ("forces", np.zeros((5, 8, 3)), r"forces must have shape \(5, 9, 3\)"),
        ("forces", np.full((5, 9, 3), np.nan), r"forces must be finite; forces\[0, 0, 0\] is nan"),
        ("positions", np.full((5, 9, 3), np.inf), "positions must be finite"),
        ("masses", -np.ones(9), "masses must be > 0.0 amu"),
        ("temperature", "hot", "temperature must be a number"),
        ("time", np.array([0, 1, 2, np.nan, 4.0]), "time must be finite"),
        ("positions", np.zeros((5, 9)), "positions must have shape"),
        ("box", np.zeros((4, 3, 3)), "box must have shape"),
        ("time", np.zeros(4), "time must have shape"),
        ("masses", np.ones(8), "masses must have shape"),
        ("constraints", np.array([[0, 9]]), r"constraints must be <= 8; constraints\[0, 1\] is 9"),
        ("temperature", -1.0, "temperature"),
    ],
)
def test_aadata_validation(field, value, match):
    kw = {k: getattr(_data(), k) for k in AAData.__dataclass_fields__}
    kw[field] = value
    with pytest.raises(ValueError, match=match):
        AAData(**kw)


def test_aadata_topology_mismatch():
    kw = {k: getattr(_data(), k) for k in AAData.__dataclass_fields__}
    kw["topology"] = _topology(2)
    with pytest.raises(ValueError, match="topology has 6 atoms"):
        AAData(**kw)


def test_keys_used_in_file(tmp_path):
    write_aa(tmp_path / "aa.h5", _data())
    with h5py.File(tmp_path / "aa.h5", "r") as h5:
        for k in (keys.POSITIONS, keys.FORCES, keys.BOX, keys.POTENTIAL_ENERGY, keys.TIME, keys.MASSES, keys.CONSTRAINTS):
            assert k in h5
        assert h5.attrs["format"] == "cgkd-aa" and h5.attrs["format_version"] == 1


def test_periodic_topology_without_a_box_is_refused():
    import openmm.unit as u

    kw = {k: getattr(_data(), k) for k in AAData.__dataclass_fields__}
    kw["topology"].setPeriodicBoxVectors(np.eye(3) * 2.0 * u.nanometer)
    kw["box"] = None
    with pytest.raises(ValueError, match="the topology has periodic box vectors but box is None"):
        AAData(**kw)
    kw["topology"].setPeriodicBoxVectors(None)
    assert not AAData(**kw).periodic  # a non-periodic system without a box is fine
