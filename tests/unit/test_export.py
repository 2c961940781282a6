"""Export artefacts: eager vs scripted vs saved-and-loaded, finite-difference forces, metadata checks."""

import json
import re
import zipfile

import numpy as np
import pytest
import torch

from cgkd.export import LennardJonesPair, export_potential, load_potential_artefact
from cgkd.export.artefact import normalize_bonded_priors
from cgkd.export.artefact import FORMAT_VERSION, METADATA_FILE
from cgkd.io.formats import FormatError

TYPES = ["A", "B"]


def _potential():
    return LennardJonesPair(TYPES, [[0.40, 0.45], [0.45, 0.50]], [[1.0, 1.5], [1.5, 2.0]], cutoff=0.9)


def _config(n=30, box=2.2, seed=0):
    rng = np.random.default_rng(seed)
    # a jittered lattice keeps pairs apart so the LJ energy is moderate
    g = np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n]
    pos = (g + 0.5) * box / 4 + rng.normal(scale=0.03, size=(n, 3))
    types = np.arange(n) % 2
    return torch.tensor(pos), torch.tensor(types), torch.eye(3, dtype=torch.float64) * box


def _export(path, dtype="float64", **kw):
    args = dict(type_names=TYPES, type_masses=[40.0, 60.0], cutoff=0.9, periodic=True, dtype=dtype)
    args.update(kw)
    return export_potential(_potential(), path, **args)


def _energy_forces(model, pos, types, box):
    x = pos.clone().requires_grad_(True)
    e = model(x, types, box)
    (g,) = torch.autograd.grad(e, x)
    return float(e.detach()), -g.numpy()


def test_eager_scripted_saved_agree(tmp_path):
    pos, types, box = _config()
    eager = _potential().double()
    e0, f0 = _energy_forces(eager, pos, types, box)
    e1, f1 = _energy_forces(torch.jit.script(eager), pos, types, box)
    meta = _export(tmp_path / "m.pt")
    loaded, meta2 = load_potential_artefact(tmp_path / "m.pt")
    e2, f2 = _energy_forces(loaded, pos, types, box)
    assert meta2 == meta
    assert e0 != 0.0 and np.abs(f0).max() > 1.0
    np.testing.assert_allclose([e1, e2], e0, rtol=1e-12)
    np.testing.assert_allclose(f1, f0, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(f2, f0, rtol=1e-10, atol=1e-10)


def test_forces_are_minus_energy_gradient_and_images_invariant(tmp_path):
    _export(tmp_path / "m.pt")
    model, _ = load_potential_artefact(tmp_path / "m.pt")
    pos, types, box = _config()
    e, f = _energy_forces(model, pos, types, box)
    h = 1e-6
    for i, k in [(0, 0), (5, 1), (17, 2)]:
        dp = pos.clone()
        dp[i, k] += h
        dm = pos.clone()
        dm[i, k] -= h
        fd = -(float(model(dp, types, box)) - float(model(dm, types, box))) / (2 * h)
        assert fd == pytest.approx(f[i, k], rel=1e-6, abs=1e-6)
    # unwrapped positions (whole-box shifts of some beads) give the same energy and forces
    shifted = pos + torch.tensor([2.2, -4.4, 6.6], dtype=torch.float64) * (torch.arange(30) % 3 == 0)[:, None]
    e2, f2 = _energy_forces(model, shifted, types, box)
    assert e2 == pytest.approx(e, rel=1e-10)
    np.testing.assert_allclose(f2, f, atol=1e-8)


def test_float32_artefact_close_to_float64(tmp_path):
    _export(tmp_path / "m64.pt")
    _export(tmp_path / "m32.pt", dtype="float32")
    m64, _ = load_potential_artefact(tmp_path / "m64.pt")
    m32, meta = load_potential_artefact(tmp_path / "m32.pt")
    assert meta["dtype"] == "float32"
    pos, types, box = _config()
    e64, f64 = _energy_forces(m64, pos, types, box)
    e32, f32 = _energy_forces(m32, pos.float(), types, box.float())
    assert e32 == pytest.approx(e64, rel=1e-4)
    np.testing.assert_allclose(f32, f64, rtol=1e-3, atol=1e-3 * np.abs(f64).max())


def test_export_does_not_touch_the_callers_module(tmp_path):
    pot = _potential()
    export_potential(pot, tmp_path / "m.pt", type_names=TYPES, type_masses=[1, 1], cutoff=0.9, periodic=True)
    assert pot.sigma.dtype == torch.float64


def test_metadata_is_embedded_and_self_describing(tmp_path):
    _export(tmp_path / "m.pt", bonded_priors={"bonds": {("A", "B"): {"r0": 0.3, "k": 500.0}}}, provenance={"run": 7})
    with zipfile.ZipFile(tmp_path / "m.pt") as z:
        name = [n for n in z.namelist() if n.endswith("extra/" + METADATA_FILE)][0]
        meta = json.loads(z.read(name))
    assert meta["format"] == "cgkd-potential" and meta["format_version"] == FORMAT_VERSION
    assert meta["units"]["length"] == "nm" and meta["units"]["energy"] == "kJ/mol"
    assert meta["type_names"] == TYPES and meta["type_masses"] == [40.0, 60.0]
    assert meta["bonded_priors"]["bonds"] == [{"types": ["A", "B"], "r0": 0.3, "k": 500.0}]
    assert meta["provenance"] == {"run": 7}


def _rewrite_metadata(src, dst, change):
    model = torch.jit.load(str(src), _extra_files={METADATA_FILE: ""})
    extra = {METADATA_FILE: ""}
    torch.jit.load(str(src), _extra_files=extra)
    meta = json.loads(extra[METADATA_FILE])
    change(meta)
    torch.jit.save(model, str(dst), _extra_files={METADATA_FILE: json.dumps(meta)})


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m.update(format="something-else"), r"is not a cgkd-potential file \(its format is 'something-else'"),
        (lambda m: m.pop("format"), "its format is None"),
        (lambda m: m.update(format_version=FORMAT_VERSION + 1),
         rf"format_version {FORMAT_VERSION + 1} is not readable.*1\.\.{FORMAT_VERSION}.*upgrade cgkd"),
        (lambda m: m.update(format_version="one"), "format_version must be an integer, got 'one'"),
        (lambda m: m.update(format_version=0), "format_version 0 is not readable"),
        (lambda m: m["units"].update(length="angstrom"), "units"),
        (lambda m: m.update(type_masses=[1.0, 0.0]), "type_masses"),
        (lambda m: m.pop("cutoff"), "cutoff"),
        (lambda m: m.update(dtype="float16"), "dtype"),
    ],
)
def test_bad_metadata_is_refused(tmp_path, change, message):
    _export(tmp_path / "m.pt")
    _rewrite_metadata(tmp_path / "m.pt", tmp_path / "bad.pt", change)
    with pytest.raises(ValueError, match=message):
        load_potential_artefact(tmp_path / "bad.pt")


def test_format_errors_are_the_shared_ones(tmp_path):
    _export(tmp_path / "m.pt")
    _rewrite_metadata(tmp_path / "m.pt", tmp_path / "bad.pt", lambda m: m.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(FormatError, match=rf"^{re.escape(str(tmp_path / 'bad.pt'))}: cgkd-potential format_version"):
        load_potential_artefact(tmp_path / "bad.pt")


def test_files_that_are_not_artefacts_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_potential_artefact(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a TorchScript archive"):
        load_potential_artefact(tmp_path / "junk.pt")
    torch.jit.script(_potential()).save(str(tmp_path / "plain.pt"))
    with pytest.raises(ValueError, match="no cgkd_metadata.json"):
        load_potential_artefact(tmp_path / "plain.pt")


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(type_names=[]), "type_names"),
        (dict(type_names=["A", "A"]), "unique"),
        (dict(type_masses=[1.0]), "type_masses has 1"),
        (dict(type_masses=[1.0, -2.0]), "positive"),
        (dict(cutoff=0.0), "cutoff"),
        (dict(dtype="half"), "dtype"),
        (dict(provenance={"x": object()}), "JSON"),
        (dict(bonded_priors={"bonds": [{"types": ["A", "C"], "r0": 0.3, "k": 1.0}]}), "not bead types"),
        (dict(bonded_priors={"urey_bradley": []}), "unknown kind"),
        (dict(bonded_priors={"angles": [{"types": ["A", "B", "A"], "k": 1.0}]}), "missing parameter"),
    ],
)
def test_bad_export_arguments(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        _export(tmp_path / "m.pt", **kw)
    assert not (tmp_path / "m.pt").exists()


def test_bonded_prior_forms_normalise_to_one():
    a = normalize_bonded_priors({"angles": {"A-B-A": {"theta0": 2.0, "k": 30.0}}}, TYPES)
    b = normalize_bonded_priors({"angles": [{"types": ("A", "B", "A"), "theta0": 2, "k": 30}]}, TYPES)
    assert a == b and a["angles"][0] == {"types": ["A", "B", "A"], "theta0": 2.0, "k": 30.0}
    d = normalize_bonded_priors({"dihedrals": {("A", "B", "B", "A"): {"terms": [{"n": 3, "k": 2.0}]}}}, TYPES)
    assert d["dihedrals"][0]["terms"] == [{"n": 3, "k": 2.0, "phase": 0.0}]


def test_reference_potential_rejects_bad_parameters():
    with pytest.raises(ValueError, match="sigma must have shape"):
        LennardJonesPair(TYPES, [[0.4]], [[1, 1], [1, 1]], 0.9)
    with pytest.raises(ValueError, match="epsilon must be symmetric"):
        LennardJonesPair(TYPES, [[0.4, 0.4], [0.4, 0.4]], [[1, 2], [1, 1]], 0.9)
    with pytest.raises(ValueError, match="cutoff"):
        LennardJonesPair(TYPES, [[0.4, 0.4], [0.4, 0.4]], [[1, 1], [1, 1]], -1.0)


def test_export_model_writes_an_artefact_of_a_model_file(tmp_path):
    from cgkd.data.cg_h5 import write_cg
    from cgkd.export import export_model
    from cgkd.nn.potential import save_potential

    from test_export_cgpotential import _data, _potential

    save_potential(tmp_path / "model.pt", _potential())
    write_cg(tmp_path / "cg.h5", _data())
    meta = export_model(tmp_path / "model.pt", tmp_path / "cg.h5", tmp_path / "student.pt", dtype="float32",
                        provenance={"run": "x"})
    assert load_potential_artefact(tmp_path / "student.pt")[1] == meta
    assert meta["dtype"] == "float32" and meta["type_masses"] == [76.0, 60.0]
    assert meta["provenance"]["model_file"] == str(tmp_path / "model.pt") and meta["provenance"]["run"] == "x"
    with pytest.raises(FileNotFoundError):
        export_model(tmp_path / "none.pt", tmp_path / "cg.h5", tmp_path / "x.pt")


def test_model_timestep_reads_the_artefacts_bonded_priors(tmp_path):
    from cgkd.openmm.md import BONDED_TIMESTEP, DEFAULT_TIMESTEP, model_timestep

    _export(tmp_path / "liquid.pt")
    _export(tmp_path / "bonded.pt", bonded_priors={"bonds": {("A", "B"): {"r0": 0.3, "k": 500.0}}})
    assert model_timestep(tmp_path / "liquid.pt") == DEFAULT_TIMESTEP["neural"]
    assert model_timestep(tmp_path / "bonded.pt") == BONDED_TIMESTEP < DEFAULT_TIMESTEP["neural"]
