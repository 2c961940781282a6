"""`cgkd map` on a real tiny reline AA file written by cgkd.aa.simulate (size "test", 8 frames)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

if importlib.util.find_spec("cgkd.aa.simulate") is None:
    pytest.skip("cgkd.aa.simulate (engineer A's AA simulation) is not available", allow_module_level=True)

from cgkd.aa.simulate import simulate  # noqa: E402
from cgkd.cli.main import main  # noqa: E402
from cgkd.data import read_cg  # noqa: E402
from cgkd.io.aa_h5 import read_aa  # noqa: E402
from cgkd.mapping import Mapping  # noqa: E402

pytestmark = pytest.mark.slow  # ~15-20 s: builds and simulates a small reline box


@pytest.fixture(scope="module")
def reline_aa(tmp_path_factory):
    """A reline 'test'-size box (build, minimise, short NPT/NVT), 8 production frames 5 steps apart."""
    path = tmp_path_factory.mktemp("aa") / "reline.h5"
    simulate("reline", "test", path, platform="CPU", production_steps=40, report_interval=5, seed=7, progress=False)
    return path


def test_cgkd_map_cli_on_reline(reline_aa, tmp_path, capsys):
    out = tmp_path / "cg.h5"
    assert main(["map", str(reline_aa), "--out", str(out), "--mapping", "two_bead_choline", "--force-map", "optimal"]) == 0
    printed = capsys.readouterr().out
    assert str(out) in printed and "(basic)" in printed and "(optimal)" in printed
    cg = read_cg(out)
    aa = read_aa(reline_aa)
    n_units = aa.spec.size("test").units
    assert cg.n_beads == 5 * n_units and cg.n_frames == 8
    assert cg.type_names == ["NC3", "COH", "CL", "URE"]
    assert cg.attrs["mapping"] == "two_bead_choline" and cg.attrs["force_map"] == "optimal"
    assert cg.attrs["source"] == str(reline_aa.resolve())
    msf = cg.attrs["mean_squared_force"]
    assert msf["optimal"] <= msf["basic"] * (1 + 1e-6)
    np.testing.assert_allclose(cg.masses.sum(), aa.masses.sum(), rtol=1e-6)
    # CG bonds: one NC3-COH bond per choline
    assert len(cg.bonds) == n_units
    # mapped bead positions against a direct per-molecule computation on unwrapped coordinates
    m = Mapping.from_spec(aa.topology, aa.spec.mapping("two_bead_choline"), masses=aa.masses)
    whole = m.make_whole(aa.positions, aa.box)
    mol0 = m.molecule_atoms[0]
    assert np.linalg.norm(whole[:, mol0] - whole[:, mol0[:1]], axis=-1).max() < 0.5  # choline is whole
    np.testing.assert_allclose(cg.positions, m.map_positions(aa.positions, aa.box), atol=1e-5)


def test_cgkd_map_basic_one_bead_and_bad_mapping(reline_aa, tmp_path, capsys):
    out = tmp_path / "cg1.h5"
    assert main(["map", str(reline_aa), "--out", str(out), "--force-map", "basic"]) == 0  # spec default one_bead
    cg = read_cg(out)
    aa = read_aa(reline_aa)
    # one bead per molecule, no constraint crosses a molecule: summed forces conserve the total force
    np.testing.assert_allclose(cg.forces.sum(1), aa.forces.astype(np.float64).sum(1), atol=1e-2 * np.abs(aa.forces).max())
    assert main(["map", str(reline_aa), "--out", str(out), "--mapping", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


def test_one_bead_map_matches_plain_numpy(reline_aa, tmp_path):
    """Centre of mass and summed force of every molecule, computed with nothing but numpy."""
    out = tmp_path / "cg_np.h5"
    assert main(["map", str(reline_aa), "--out", str(out), "--force-map", "basic"]) == 0
    cg = read_cg(out)
    aa = read_aa(reline_aa)
    residues = list(aa.topology.residues())
    assert cg.n_beads == len(residues)
    for k, res in enumerate(residues):
        idx = np.array([a.index for a in res.atoms()])
        m = aa.masses[idx]
        x = aa.positions[:, idx].astype(np.float64)
        for f in range(aa.n_frames):
            box = aa.box[f].astype(np.float64)
            d = x[f] - x[f, :1]
            frac = d @ np.linalg.inv(box)
            d = d - np.round(frac) @ box  # minimum image (cubic/triclinic with small molecules)
            com = x[f, 0] + (m[:, None] * d).sum(0) / m.sum()
            delta = cg.positions[f, k] - com  # the bead may sit in another periodic image
            delta -= np.round(delta @ np.linalg.inv(box)) @ box
            np.testing.assert_allclose(delta, 0.0, atol=2e-5)
        np.testing.assert_allclose(cg.forces[:, k], aa.forces[:, idx].astype(np.float64).sum(1),
                                   rtol=1e-5, atol=1e-3)
    assert cg.masses == pytest.approx([aa.masses[[a.index for a in r.atoms()]].sum() for r in residues])


def test_streamed_mapping_equals_the_in_memory_one(reline_aa, tmp_path, capsys):
    from cgkd.data.cg_h5 import content_digest, data_digest, write_cg
    from cgkd.data.mapped import map_aa, map_aa_file

    ref, rep = map_aa(read_aa(reline_aa), mapping="two_bead_choline", force_map="optimal")
    write_cg(tmp_path / "ref.h5", ref)
    # 3 frames a chunk over 8 frames: chunks 3, 3, 2; the optimal map fitted on all 8 frames, as in memory
    got = map_aa_file(reline_aa, tmp_path / "stream.h5", mapping="two_bead_choline", force_map="optimal",
                      chunk_frames=3, fit_frames=None)
    cg = read_cg(tmp_path / "stream.h5")
    np.testing.assert_array_equal(cg.positions, ref.positions)
    np.testing.assert_array_equal(cg.forces, ref.forces)
    np.testing.assert_array_equal(cg.box, ref.box)
    np.testing.assert_array_equal(cg.time, ref.time)
    assert content_digest(tmp_path / "stream.h5") == data_digest(ref) == content_digest(tmp_path / "ref.h5")
    assert got["msf"]["optimal"] == pytest.approx(rep["msf"]["optimal"], rel=1e-9)
    assert cg.attrs["mapping"] == "two_bead_choline" and cg.topology.to_json() == ref.topology.to_json()
    # fitted on fewer frames: the same positions, forces from another (still consistent) force map
    few = map_aa_file(reline_aa, tmp_path / "few.h5", mapping="two_bead_choline", chunk_frames=4, fit_frames=3)
    assert few["fit_frames"] == 3
    np.testing.assert_array_equal(read_cg(tmp_path / "few.h5").positions, ref.positions)
    # the CLI streams with --chunk-frames
    assert main(["map", str(reline_aa), "--out", str(tmp_path / "cli.h5"), "--mapping", "two_bead_choline",
                 "--chunk-frames", "3", "--fit-frames", "8"]) == 0
    assert content_digest(tmp_path / "cli.h5") == data_digest(ref)
    with pytest.raises(ValueError, match="chunk_frames must be a positive integer, got 0"):
        map_aa_file(reline_aa, tmp_path / "x.h5", chunk_frames=0)


def test_aa_replicas_in_a_pool_map_and_concatenate(tmp_path):
    """Two AA replicas as parallel tasks (a local pool of 2), each mapped streaming, joined into one CG dataset."""
    from cgkd.aa.simulate import simulate_replicas
    from cgkd.data.cg_h5 import concatenate_cg
    from cgkd.data.mapped import map_aa_file

    paths = simulate_replicas("water", "test", tmp_path / "aa", 2, seed=11, platform="CPU", production_steps=20,
                              report_interval=5, executor=2, progress=False)
    assert [p.name for p in paths] == ["replica_0.h5", "replica_1.h5"]
    a, b = read_aa(paths[0]), read_aa(paths[1])
    assert a.n_frames == b.n_frames == 4 and not np.allclose(a.positions, b.positions)  # seeds 11 and 12 differ
    assert [read_aa(p).attrs["seed"] for p in paths] == [11, 12]
    cgs = [map_aa_file(p, tmp_path / f"cg_{k}.h5", chunk_frames=3) and tmp_path / f"cg_{k}.h5"
           for k, p in enumerate(paths)]
    joined = read_cg(concatenate_cg(cgs, tmp_path / "cg.h5", chunk=3))
    assert joined.n_frames == 8 and [s["frames"] for s in joined.attrs["sources"]] == [4, 4]
    np.testing.assert_array_equal(joined.positions[4:], read_cg(cgs[1]).positions)
    with pytest.raises(ValueError, match="n_replicas must be a positive integer"):
        simulate_replicas("water", "test", tmp_path / "x", 0)
