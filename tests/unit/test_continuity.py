"""Old files keep loading: every stored file of tests/data/v1 (written by cgkd 0.1) is read by today's readers."""

from pathlib import Path

import numpy as np
import pytest
import torch

from cgkd import keys
from cgkd.data.mapped import resolve_mapping
from cgkd.data.cg_h5 import read_cg, read_labels, read_topology, write_cg
from cgkd.export import load_potential_artefact
from cgkd.io.aa_h5 import n_frames, read_aa, read_header
from cgkd.mapping import Mapping
from cgkd.nn.potential import load_potential
from cgkd.topology import Topology
from cgkd.train.checkpoint import load_checkpoint

V1 = Path(__file__).resolve().parents[1] / "data" / "v1"


def test_aa_file_v1():
    aa = read_aa(V1 / "aa.h5")
    assert aa.n_frames == 2 == n_frames(V1 / "aa.h5") and aa.positions.shape == aa.forces.shape
    assert aa.spec is not None and aa.spec.name == "water" and aa.box.shape == (2, 3, 3)
    assert read_header(V1 / "aa.h5")["spec_yaml"]


def test_cg_file_v1_with_labels_reads_and_upgrades(tmp_path):
    cg = read_cg(V1 / "cg.h5")
    top = cg.topology
    assert cg.n_frames == 3 and top.n_particles == cg.n_beads == 60 and top.type_names == ("W",)
    assert top.molecules.tolist() == list(range(60)) and top.molecule_names == ("HOH",) * 60
    np.testing.assert_allclose(top.masses, 18.015, atol=0.01)
    assert read_topology(V1 / "cg.h5").same_as(top)
    lab = read_labels(V1 / "cg.h5", [keys.MEAN_FORCES, keys.MEMBER_FORCES])
    assert lab[keys.MEAN_FORCES].shape == cg.forces.shape and lab[keys.MEMBER_FORCES].shape[1:] == cg.forces.shape
    assert "teacher_dir" in lab["attrs"]
    # written again it becomes the current version and reads back the same
    write_cg(tmp_path / "cg.h5", cg)
    back = read_cg(tmp_path / "cg.h5")
    assert back.topology.same_as(top)
    np.testing.assert_array_equal(back.positions, cg.positions)


def test_bonded_cg_file_v1_keeps_its_topology():
    """reline two_bead_choline mapped by cgkd 0.1: 30 choline molecules of two bonded beads, 120 molecules."""
    cg = read_cg(V1 / "cg_bonded.h5")
    top = cg.topology
    assert cg.n_beads == 150 and top.n_molecules == 120 and list(top.type_names) == ["NC3", "COH", "CL", "URE"]
    assert len(top.bonds) == 30 and top.bonds[:3].tolist() == [[0, 1], [2, 3], [4, 5]]
    assert top.molecules[:6].tolist() == [0, 0, 1, 1, 2, 2] and len(top.angles) == 0
    np.testing.assert_allclose(top.masses[:2], [59.112, 45.0614], atol=1e-3)
    # the bonds are real: each NC3-COH pair sits at a chemical distance (nm)
    from cgkd import geometry

    r = geometry.distances(cg.positions[0], top.bonds, cg.box[0])
    assert 0.2 < r.min() and r.max() < 0.5


def test_mapping_v1_matches_a_fresh_mapping_of_the_same_aa_file():
    old = Mapping.load(V1 / "mapping.json")
    aa = read_aa(V1 / "aa.h5")
    assert old.n_atoms == aa.n_atoms and old.molecule_names and len(old.bead_molecule) == old.n_beads
    fresh = resolve_mapping(aa)  # the spec's default mapping, as the file was made
    assert old.topology().same_as(fresh.topology())
    np.testing.assert_allclose(old.map_positions(aa.positions, aa.box), fresh.map_positions(aa.positions, aa.box))


def test_mapping_v2_loads_and_maps_like_a_fresh_mapping():
    old = Mapping.load(V1.parent / "v2" / "mapping.json")
    aa = read_aa(V1 / "aa.h5")
    fresh = resolve_mapping(aa)
    assert old.is_partition and all(w is None for w in old.bead_weights) and old.named_dihedrals == {}
    assert old.topology().same_as(fresh.topology())
    np.testing.assert_allclose(old.map_positions(aa.positions, aa.box), fresh.map_positions(aa.positions, aa.box))


def test_cg_v2_with_a_version_1_topology_loads_without_impropers():
    old = read_cg(V1.parent / "v2" / "cg_bonded.h5")
    first = read_cg(V1 / "cg_bonded.h5")
    assert old.topology.impropers.shape == (0, 4) and old.topology.same_as(first.topology)
    np.testing.assert_array_equal(old.positions, first.positions)


def test_model_artefact_and_checkpoint_v1():
    model = load_potential(V1 / "model.pt")
    module, meta = load_potential_artefact(V1 / "artefact.pt")
    cg = read_cg(V1 / "cg.h5")
    types = torch.as_tensor(cg.topology.type_indices(meta["type_names"]))
    x = torch.tensor(cg.positions[0], dtype=torch.float64 if meta["dtype"] == "float64" else torch.float32)
    box = torch.tensor(cg.box[0], dtype=x.dtype)
    e_model = model.to(x.dtype)(x, types, box)
    np.testing.assert_allclose(float(module(x, types, box)), float(e_model.detach()), rtol=1e-5)
    state = load_checkpoint(V1 / "checkpoint.pt")
    assert state["epoch"] >= 1 and "model" in state


def test_system_json_v0_1():
    import json

    top = Topology.from_dict(json.loads((V1 / "system.json").read_text()))
    assert top.n_particles == read_cg(V1 / "cg.h5").n_beads


@pytest.mark.parametrize("reader, name", [(read_cg, "x.h5"), (read_aa, "x.h5"), (load_potential, "x.pt"),
                                          (load_checkpoint, "x.pt"), (load_potential_artefact, "x.pt")])
def test_garbage_files_give_one_clear_error(tmp_path, reader, name):
    path = tmp_path / name
    path.write_bytes(b"not a cgkd file at all" * 10)
    with pytest.raises(ValueError, match=r"x\.(h5|pt)"):
        reader(path)
    with h5_or_torch(path, name):
        with pytest.raises(ValueError, match="is not a"):
            reader(path)


class h5_or_torch:
    """Rewrite ``path`` as a valid container (HDF5 or torch zip) of the wrong cgkd format."""

    def __init__(self, path, name):
        self.path, self.name = path, name

    def __enter__(self):
        if self.name.endswith(".h5"):
            import h5py

            with h5py.File(self.path, "w") as h5:
                h5.attrs["format"] = "cgkd-other"
                h5.attrs["format_version"] = 1
        else:
            torch.save({"format": "cgkd-other", "format_version": 1, "metadata": '{"format": "cgkd-other"}'},
                       self.path)

    def __exit__(self, *exc):
        return False
