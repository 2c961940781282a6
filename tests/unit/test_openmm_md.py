"""CG MD: replicas from mapped frames, outputs readable by mdtraj, stability detection, thermostat."""

import csv
import json

import mdtraj
import numpy as np
import torch
import pytest

from cgkd.data.cg_h5 import CGData, read_cg, write_cg
from cgkd.topology import Topology
from cgkd.export import LennardJonesPair, export_potential
from cgkd.openmm.md import min_pair_distances, run_cg_md

TYPES = ["A", "B"]
L = 2.4


def _data(n_frames=3, bad_frame=None):
    g = np.stack(np.meshgrid(*[np.arange(4)] * 3, indexing="ij"), -1).reshape(-1, 3)
    rng = np.random.default_rng(0)
    pos = np.stack([(g + 0.5) * L / 4 + rng.normal(scale=0.02, size=g.shape) for _ in range(n_frames)])
    if bad_frame is not None:
        pos[bad_frame, 1] = pos[bad_frame, 0]  # two beads on top of each other: infinite energy
    n = g.shape[0]
    return CGData(positions=pos, forces=np.zeros_like(pos), box=np.tile(np.eye(3) * L, (n_frames, 1, 1)),
                  topology=Topology(TYPES, np.arange(n) % 2, np.where(np.arange(n) % 2, 60.0, 40.0),
                                    molecule_names=["M"] * n), temperature=300.0)


@pytest.fixture
def artefact(tmp_path):
    pot = LennardJonesPair(TYPES, [[0.40, 0.45], [0.45, 0.50]], [[1.0, 1.5], [1.5, 2.0]], cutoff=0.9)
    path = tmp_path / "m.pt"
    export_potential(pot, path, type_names=TYPES, type_masses=[40.0, 60.0], cutoff=0.9, periodic=True)
    return path


def test_replicas_run_and_write_readable_outputs(tmp_path, artefact):
    write_cg(tmp_path / "cg.h5", _data())
    out = tmp_path / "run"
    summary = run_cg_md(artefact, tmp_path / "cg.h5", out, n_replicas=2, steps=200, report_interval=50,
                        timestep=0.004, friction=5.0, backend="torch", platform="CPU", seed=3, min_distance=0.25,
                        progress=False)
    assert summary["survived"] == 2 and summary["ns_per_day"] > 0
    assert [r["start_frame"] for r in summary["replicas"]] == [0, 2]
    assert json.loads((out / "summary.json").read_text())["survived"] == 2
    for k in range(2):
        traj = mdtraj.load(out / f"replica_{k}.dcd", top=out / "topology.pdb")
        assert traj.n_frames == 4 and traj.n_atoms == 64
        np.testing.assert_allclose(traj.unitcell_lengths, L, rtol=1e-5)
        rows = list(csv.DictReader(open(out / f"replica_{k}_energy.csv")))
        assert [int(r["step"]) for r in rows] == [50, 100, 150, 200]
        assert all(np.isfinite(float(r["potential_kJ_mol"])) for r in rows)
    # different seeds and start frames give different trajectories
    a = mdtraj.load(out / "replica_0.dcd", top=out / "topology.pdb").xyz
    b = mdtraj.load(out / "replica_1.dcd", top=out / "topology.pdb").xyz
    assert np.abs(a - b).max() > 1e-3
    info = json.loads((out / "system.json").read_text())
    assert info["types"] == [0, 1] * 32 and info["type_names"] == TYPES
    # the analysis reads the finished run, and refuses it once its summary is gone (a killed run has none)
    from cgkd.analysis import load_frames

    segments = load_frames(out)
    assert len(segments) == 2 and segments[0].dt == pytest.approx(0.2) and segments[0].n_frames == 4
    (out / "summary.json").unlink()
    with pytest.raises(ValueError, match="has no summary.json: the CG MD run did not finish"):
        load_frames(out)


def test_failing_replica_stops_and_others_go_on(tmp_path, artefact):
    out = tmp_path / "run"
    summary = run_cg_md(artefact, _data(n_frames=2, bad_frame=1), out, n_replicas=2, steps=100, report_interval=20,
                        backend="python", platform="Reference", min_distance=0.25, progress=False)
    good, bad = summary["replicas"]
    assert good["survived"] and good["steps_done"] == 100
    assert not bad["survived"] and bad["time_to_failure_ps"] is not None and bad["steps_done"] < 100
    assert bad["failure"]
    traj = mdtraj.load(out / "replica_1_last_good.pdb")
    assert np.all(np.isfinite(traj.xyz))


def test_collapse_threshold_from_aa_data(tmp_path, artefact):
    data = _data()
    dmin = min_pair_distances(data.positions, data.box, data.types, 2)
    assert dmin.shape == (2, 2) and np.allclose(dmin, dmin.T)
    # lattice spacing L/4 = 0.6 nm, 0.02 nm noise per coordinate: the closest pairs sit a little below 0.6
    assert np.all((dmin > 0.45) & (dmin < 0.6))
    # a threshold above any distance the liquid can reach makes every replica fail at the second check (a pair
    # must stay below it for two checks in a row)
    summary = run_cg_md(artefact, data, tmp_path / "run", n_replicas=1, steps=60, report_interval=20, timestep=0.004,
                        min_distance=5.0, backend="python", platform="Reference", progress=False)
    r = summary["replicas"][0]
    assert not r["survived"] and "closer than" in r["failure"] and r["time_to_failure_ps"] == pytest.approx(0.16)
    assert r["steps_done"] == 20  # the first close frame was still written


def test_langevin_temperature(tmp_path, artefact):
    summary = run_cg_md(artefact, _data(n_frames=1), tmp_path / "run", n_replicas=1, steps=3000, report_interval=10,
                        friction=10.0, temperature=250.0, backend="torch", platform="CPU", min_distance=0.25,
                        progress=False)
    rows = list(csv.DictReader(open(tmp_path / "run" / "replica_0_energy.csv")))
    temps = np.array([float(r["temperature_K"]) for r in rows[50:]])
    assert summary["survived"] == 1
    # 64 beads: instantaneous T fluctuates by ~sqrt(2/189) ~ 10 %; the mean of 250 samples is within a few %
    assert temps.mean() == pytest.approx(250.0, rel=0.06)


def test_bad_arguments(tmp_path, artefact):
    data = _data()
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        run_cg_md(artefact, data, tmp_path, steps=0, progress=False)
    with pytest.raises(ValueError, match="timestep must be positive"):
        run_cg_md(artefact, data, tmp_path, steps=10, timestep=-1.0, progress=False)
    with pytest.raises(ValueError, match="temperature must be positive"):
        run_cg_md(artefact, data, tmp_path, steps=10, temperature=0.0, progress=False)
    with pytest.raises(ValueError, match="cg_data_or_start_frames"):
        run_cg_md(artefact, np.zeros((1, 2, 3)), tmp_path, steps=10, progress=False)
    with pytest.raises(FileNotFoundError):
        run_cg_md(artefact, tmp_path / "missing.h5", tmp_path, steps=10, progress=False)
    data.topology = Topology(["A", "C"], data.types, data.masses)
    with pytest.raises(ValueError, match="does not know"):
        run_cg_md(artefact, data, tmp_path, steps=10, progress=False)


def test_torch_threads_are_set_and_restored(tmp_path, artefact):
    old = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        run_cg_md(artefact, _data(n_frames=1), tmp_path / "run", n_replicas=1, steps=20, report_interval=10,
                  min_distance=0.0, progress=False, torch_threads=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(old)


def test_degrees_of_freedom_count_the_centre_of_mass_only_when_it_is_fixed():
    import openmm

    from cgkd.openmm.md import degrees_of_freedom

    s = openmm.System()
    for m in (1.0, 2.0, 0.0, 3.0):
        s.addParticle(m)
    assert degrees_of_freedom(s) == 9  # the massless particle does not move
    s.addConstraint(0, 1, 0.1)
    assert degrees_of_freedom(s) == 8
    s.addForce(openmm.CMMotionRemover())
    assert degrees_of_freedom(s) == 5


def _xyz(out, k):
    return mdtraj.load(out / f"replica_{k}.dcd", top=out / "topology.pdb").xyz


def _energies(out, k):
    return [r for r in csv.reader(open(out / f"replica_{k}_energy.csv"))]


def test_seed_zero_is_reproducible_and_recorded(tmp_path, artefact):
    data = _data()
    kw = dict(n_replicas=1, steps=60, report_interval=20, timestep=0.004, backend="torch", platform="Reference",
              seed=0, min_distance=0.25, progress=False)
    a = run_cg_md(artefact, data, tmp_path / "a", **kw)
    b = run_cg_md(artefact, data, tmp_path / "b", **kw)
    np.testing.assert_array_equal(_xyz(tmp_path / "a", 0), _xyz(tmp_path / "b", 0))
    assert a["seed"] == 0 and a["replicas"][0]["seed"] == 0 and a["replicas"][0]["openmm_seed"] > 0


def test_rerun_returns_finished_run_and_refuses_other_settings(tmp_path, artefact):
    data = _data()
    kw = dict(n_replicas=1, steps=40, report_interval=20, timestep=0.004, backend="torch", platform="Reference",
              min_distance=0.25, progress=False)
    first = run_cg_md(artefact, data, tmp_path / "r", **kw)
    mtime = (tmp_path / "r" / "replica_0.dcd").stat().st_mtime_ns
    again = run_cg_md(artefact, data, tmp_path / "r", **kw)
    assert again == first and (tmp_path / "r" / "replica_0.dcd").stat().st_mtime_ns == mtime
    from cgkd.io.provenance import ProvenanceError

    with pytest.raises(ProvenanceError, match="setting steps: 40 -> 80"):
        run_cg_md(artefact, data, tmp_path / "r", **{**kw, "steps": 80})
    other = _data(n_frames=4)
    with pytest.raises(ProvenanceError, match="input cg"):
        run_cg_md(artefact, other, tmp_path / "r", **kw)
    # --no-resume redoes it; the old folder stays until the new run has finished
    redone = run_cg_md(artefact, data, tmp_path / "r", **{**kw, "steps": 80}, resume=False)
    assert redone["steps"] == 80 and json.loads((tmp_path / "r" / "summary.json").read_text())["steps"] == 80
    assert not (tmp_path / ".r.new").exists() and not (tmp_path / ".r.old").exists()


def test_killed_run_resumes_to_the_uninterrupted_trajectory(tmp_path, artefact):
    """SIGKILL a ``cgkd simulate`` at some moment, rerun it: the same frames and energies as a run never killed."""
    import os
    import signal
    import subprocess
    import sys
    import time

    write_cg(tmp_path / "cg.h5", _data())
    args = [str(artefact), str(tmp_path / "cg.h5"), "--replicas", "2", "--steps", "1500", "--report-interval", "10",
            "--checkpoint-interval", "30", "--timestep", "0.004", "--platform", "Reference", "--backend", "torch",
            "--min-distance", "0.25", "--no-progress"]
    cmd = [sys.executable, "-m", "cgkd.cli.main", "simulate"]
    ref = tmp_path / "ref"
    subprocess.run(cmd + args + ["--out", str(ref)], check=True, capture_output=True)
    run = tmp_path / "run"
    proc = subprocess.Popen(cmd + args + ["--out", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = run / "replica_0_state.json"
    deadline = time.time() + 120
    while time.time() < deadline:  # kill once replica 0 is past its first checkpoints, mid-run
        if state.is_file():
            try:
                if json.loads(state.read_text())["steps_done"] >= 300:
                    break
            except ValueError:
                pass
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (run / "summary.json").exists()
    # what the killed run left is readable: mdtraj reads the DCD (possibly with a torn last frame dropped by truncation)
    from cgkd.analysis import load_frames

    with pytest.raises(ValueError, match="did not finish"):
        load_frames(run)
    done = subprocess.run(cmd + args + ["--out", str(run)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["resumed_replicas"] >= 1 and summary["survived"] == 2
    for k in range(2):
        np.testing.assert_array_equal(_xyz(run, k), _xyz(ref, k))
        assert _energies(run, k) == _energies(ref, k)
    assert [r["steps_done"] for r in summary["replicas"]] == [1500, 1500]


def test_collapse_needs_two_checks_in_a_row():
    from cgkd.openmm.md import COLLAPSE_CHECKS, _check

    pos = np.array([[0.0, 0, 0], [0.1, 0, 0], [1.0, 0, 0]])
    types = np.zeros(3, dtype=int)
    thr = np.full((1, 1), 0.2)
    f = np.zeros((3, 3))
    close = {}
    assert COLLAPSE_CHECKS == 2
    assert _check(0.0, f, pos, None, types, thr, 0.0, 3, 2.5, close) is None  # first time close: a contact
    assert close == {(0, 1): 1}
    far = pos.copy()
    far[1, 0] = 0.5
    assert _check(0.0, f, far, None, types, thr, 0.0, 3, 2.5, close) is None and close == {}  # it left: reset
    assert _check(0.0, f, pos, None, types, thr, 0.0, 3, 2.5, close) is None
    reason = _check(0.0, f, pos, None, types, thr, 0.0, 3, 2.5, close)
    assert reason is not None and "beads 0 and 1 at 0.100 nm" in reason and "2 checks in a row" in reason
    # without a history (one frame judged alone) one check is enough
    assert _check(0.0, f, pos, None, types, thr, 0.0, 3, 2.5) is not None


def test_an_interrupted_start_over_is_continued_and_bad_arguments_write_nothing(tmp_path, artefact):
    data = _data()
    kw = dict(n_replicas=1, steps=40, report_interval=20, timestep=0.004, backend="torch", platform="Reference",
              min_distance=0.25, progress=False)
    run_cg_md(artefact, data, tmp_path / "r", **kw)
    # a wrong platform fails before any file is written, so the corrected call is not refused as "other settings"
    with pytest.raises(Exception, match="NoSuchPlatform|There is no registered Platform"):
        run_cg_md(artefact, data, tmp_path / "fresh", **{**kw, "platform": "NoSuchPlatform"})
    assert not (tmp_path / "fresh").exists()
    # a start-over killed before it finished (simulated: its staging folder without a summary) ...
    staged = tmp_path / ".r.new"
    run_cg_md(artefact, data, tmp_path / "elsewhere", **{**kw, "steps": 60})
    import shutil

    shutil.copytree(tmp_path / "elsewhere", staged)
    (staged / "summary.json").unlink()
    # ... is continued by the default (resuming) call with the same settings, and swapped in
    done = run_cg_md(artefact, data, tmp_path / "r", **{**kw, "steps": 60})
    assert done["steps"] == 60 and not staged.exists()
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["steps"] == 60


def test_runaway_temperature_bar_allows_the_fluctuations_of_small_systems():
    from scipy.stats import chi2

    from cgkd.openmm.md import RUNAWAY_TEMPERATURE_FACTOR, runaway_temperature_factor

    assert runaway_temperature_factor(12) == pytest.approx(5.61, abs=0.01)
    assert runaway_temperature_factor(3000) == RUNAWAY_TEMPERATURE_FACTOR
    # equilibrium kinetic temperatures of 12 degrees of freedom: the plain 3x bar is crossed by chance, the new never
    rng = np.random.default_rng(0)
    t_ratio = chi2.rvs(12, size=200_000, random_state=rng) / 12
    assert np.mean(t_ratio > RUNAWAY_TEMPERATURE_FACTOR) > 1e-4
    assert np.mean(t_ratio > runaway_temperature_factor(12)) == 0.0


def test_default_timestep_follows_the_bonded_priors():
    from cgkd.openmm.md import BONDED_TIMESTEP, DEFAULT_TIMESTEP, default_timestep

    assert default_timestep("neural") == DEFAULT_TIMESTEP["neural"] == 0.016
    assert default_timestep("native", {"bonds": [], "angles": []}) == 0.016  # empty kinds: no bonded terms
    assert default_timestep("neural", {"bonds": [{"types": ["A", "B"], "r0": 0.3, "k": 1e4}]}) == BONDED_TIMESTEP
    with pytest.raises(ValueError, match="kind must be one of"):
        default_timestep("gpu")
