"""AA MD end to end on the tiny 'test' reline box: build, equilibrate, interrupt, resume, check the physics."""

import dataclasses
import shutil

import numpy as np
import openmm
import pytest

from cgkd import units
from cgkd.aa import build, simulate
from cgkd.aa.build import (
    choose_platform,
    effective_cutoff,
    fold_lj_table,
    forcefield,
    make_context,
    make_integrator,
)
from cgkd.aa.simulate import checkpoint_path
from cgkd.cli.main import main
from cgkd.io.aa_h5 import read_aa, read_blob
from cgkd.io.spec import load_spec

SPEC = load_spec("reline")
STEPS, INTERVAL = 300, 10  # 30 frames; the 'test' size checkpoints every 100 steps = 10 frames


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """Run production, crash after frame 15 (checkpoint at frame 10), then resume."""
    out = tmp_path_factory.mktemp("aa") / "reline.h5"

    def crash(n_frames):
        if n_frames == 15:
            raise Interrupt

    with pytest.raises(Interrupt):
        simulate(SPEC, "test", out, platform="CPU", production_steps=STEPS, report_interval=INTERVAL,
                 progress=False, resume=False, callback=crash)
    partial = read_aa(out)
    assert partial.n_frames == 15 and checkpoint_path(out).is_file()
    seen = []
    simulate(SPEC, "test", out, platform="CPU", production_steps=STEPS, report_interval=INTERVAL, progress=False,
             callback=seen.append)
    return out, partial, seen


def test_resume_loses_and_duplicates_nothing(resumed):
    out, partial, seen = resumed
    data = read_aa(out)
    assert data.n_frames == STEPS // INTERVAL
    assert seen[0] == 11 and seen[-1] == 30  # frames 11..15 were truncated and redone, equilibration was not
    dt = INTERVAL * SPEC.timestep
    np.testing.assert_allclose(np.diff(data.time), dt, rtol=1e-9)
    np.testing.assert_allclose(data.time[0], dt)
    np.testing.assert_array_equal(data.positions[:10], partial.positions[:10])  # before the checkpoint: kept
    assert not checkpoint_path(out).exists()


def test_forces_match_a_fresh_context(resumed):
    out, _, _ = resumed
    data = read_aa(out, frames=[0, 12, 29])
    system = openmm.XmlSerializer.deserialize(read_blob(out, "system").decode())
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), choose_platform("CPU"))
    for k in range(data.n_frames):
        ctx.setPeriodicBoxVectors(*data.box[k].astype(float))
        ctx.setPositions(data.positions[k].astype(float))
        st = ctx.getState(getForces=True, getEnergy=True)
        f = st.getForces(asNumpy=True).value_in_unit(units.FORCE)
        scale = np.abs(f).max()
        assert np.abs(data.forces[k] - f).max() < 1e-3 * scale  # float32 positions and forces
        assert st.getPotentialEnergy().value_in_unit(units.ENERGY) == pytest.approx(data.potential_energy[k], rel=1e-4)


def test_units_and_contents_are_sane(resumed):
    out, _, _ = resumed
    data = read_aa(out)
    n_atoms = 12 * (21 + 1 + 2 * 8)
    assert data.n_atoms == n_atoms and data.masses.sum() == pytest.approx(12 * 259.7, rel=2e-3)
    edge = data.box[:, 0, 0]
    density = data.masses.sum() / edge**3 * units.AMU_PER_NM3_TO_G_PER_CM3
    assert np.all((density > 0.95) & (density < 1.35)), density  # g/cm^3; experiment ~1.2
    assert np.all(data.box[:, 0, 0] == data.box[0, 0, 0])  # NVT production
    # molecules are whole and wrapped into the box (no atom far outside)
    assert data.positions.min() > -0.5 and data.positions.max() < edge[0] + 0.5
    assert np.all(np.isfinite(data.forces)) and 10 < np.sqrt((data.forces**2).mean()) < 5000  # kJ/mol/nm
    assert np.all(data.potential_energy < 0)
    # constraints: HBonds only, never across residues
    res = np.array([a.residue.index for a in data.topology.atoms()])
    assert len(data.constraints) > 0 and np.all(res[data.constraints[:, 0]] == res[data.constraints[:, 1]])
    assert data.spec == SPEC or data.spec.to_yaml() == SPEC.to_yaml()
    assert data.temperature == SPEC.temperature
    assert [r.name for r in data.topology.residues()][:1] == ["CHOL"]


def test_resume_of_a_finished_file_extends_it(resumed, tmp_path):
    out, _, _ = resumed
    copy = tmp_path / "copy.h5"
    shutil.copy(out, copy)
    simulate(SPEC, "test", copy, platform="CPU", production_steps=STEPS, report_interval=INTERVAL, progress=False)
    assert read_aa(copy).n_frames == 30  # nothing to do
    simulate(SPEC, "test", copy, platform="CPU", production_steps=STEPS + 5 * INTERVAL, report_interval=INTERVAL,
             progress=False)
    data = read_aa(copy)
    assert data.n_frames == 35
    np.testing.assert_allclose(np.diff(data.time), INTERVAL * SPEC.timestep, rtol=1e-9)
    with pytest.raises(ValueError, match="cannot resume.*report_interval"):
        simulate(SPEC, "test", copy, platform="CPU", production_steps=STEPS, report_interval=20, progress=False)


def test_lj_folding_is_exact():
    aa = build(SPEC, "test", platform="CPU", minimize=False)
    assert not any(isinstance(f, openmm.CustomNonbondedForce) for f in aa.system.getForces())
    ff = forcefield(SPEC)
    cutoff, switch = effective_cutoff(SPEC, SPEC.size("test"))
    table = ff.createSystem(aa.topology, nonbondedMethod=openmm.app.PME, nonbondedCutoff=cutoff,
                            constraints=openmm.app.HBonds, switchDistance=switch)
    custom = [f for f in table.getForces() if isinstance(f, openmm.CustomNonbondedForce)]
    assert len(custom) == 1
    custom[0].setUseLongRangeCorrection(SPEC.nonbonded.dispersion_correction)  # as create_system does
    energies = []
    for system in (table, aa.system):
        ctx = make_context(system, make_integrator(SPEC, 1), choose_platform("Reference"))
        ctx.setPeriodicBoxVectors(*aa.box)
        ctx.setPositions(aa.positions)
        energies.append(ctx.getState(getEnergy=True).getPotentialEnergy().value_in_unit(units.ENERGY))
    assert energies[1] == pytest.approx(energies[0], rel=1e-9, abs=1e-6)
    assert fold_lj_table(aa.system) is False  # already folded


def test_build_errors():
    with pytest.raises(ValueError, match="not larger than twice the cutoff"):
        build(dataclasses.replace(SPEC, sizes={**SPEC.sizes, "tiny": dataclasses.replace(SPEC.size("test"), units=2)}),
              "tiny", minimize=False)
    with pytest.raises(ValueError, match="platform 'Nope' is not available"):
        choose_platform("Nope")
    with pytest.raises(ValueError, match="production_steps must be a positive multiple"):
        simulate(SPEC, "test", "unused.h5", production_steps=15, report_interval=10)


def test_cli_runs_water(tmp_path, capsys):
    out = tmp_path / "w.h5"
    rc = main(["aa", "water", "--size", "test", "--out", str(out), "--steps", "40", "--report-interval", "10",
               "--platform", "CPU", "--quiet", "--no-resume"])
    assert rc == 0 and str(out) in capsys.readouterr().out
    data = read_aa(out)
    assert data.n_frames == 4 and data.n_atoms == 180 and data.constraints.shape == (180, 2)  # rigid water: 3 each
    assert main(["aa", "water", "--size", "nope", "--out", str(out)]) == 2
    assert (tmp_path / "w.h5.sampling.json").is_file()  # the sampling report (4 frames: too few, and it says so)
    # another temperature than the spec's, recorded in the file and its embedded spec
    hot = tmp_path / "hot.h5"
    assert main(["aa", "water", "--size", "test", "--out", str(hot), "--steps", "20", "--report-interval", "10",
                 "--platform", "CPU", "--quiet", "--temperature", "350", "--no-sampling"]) == 0
    data = read_aa(hot)
    assert data.temperature == 350.0 and data.spec.temperature == 350.0
    assert not (tmp_path / "hot.h5.sampling.json").exists()


def test_a_size_may_set_its_own_temperature(tmp_path):
    """A size's ``temperature`` (reline ``evidence``: 450 K) replaces the spec's; an explicit one wins over both."""
    water = load_spec("water")
    hot = dataclasses.replace(water, sizes={**water.sizes, "hot": dataclasses.replace(water.size("test"),
                                                                                       temperature=340.0)})
    out = simulate(hot, "hot", tmp_path / "hot.h5", platform="CPU", production_steps=20, report_interval=10,
                   progress=False)
    data = read_aa(out)
    assert data.temperature == 340.0 and data.spec.temperature == 340.0
    # resumed (extended) with the same spec: the embedded spec, written at 340 K, matches the resolved one
    simulate(hot, "hot", out, platform="CPU", production_steps=30, report_interval=10, progress=False)
    assert read_aa(out).n_frames == 3
    # a size added to the spec later does not block resuming: only the file's own size is compared
    more = dataclasses.replace(hot, sizes={**hot.sizes, "extra": water.size("quick")})
    simulate(more, "hot", out, platform="CPU", production_steps=40, report_interval=10, progress=False)
    assert read_aa(out).n_frames == 4
    # ... but a change of that size does
    with pytest.raises(ValueError, match="embedded spec differs"):
        simulate(dataclasses.replace(hot, sizes={**hot.sizes, "hot": dataclasses.replace(hot.size("hot"),
                                                                                          units=61)}),
                 "hot", out, platform="CPU", production_steps=50, report_interval=10, progress=False)
    explicit = simulate(hot, "hot", tmp_path / "x.h5", platform="CPU", production_steps=10, report_interval=10,
                        progress=False, temperature=310.0)
    assert read_aa(explicit).temperature == 310.0
    assert load_spec("reline").size("evidence").temperature == 450.0
    with pytest.raises(ValueError, match="temperature must be > 0 K or null, got -5"):
        dataclasses.replace(water.size("test"), temperature=-5.0)


def test_no_resume_keeps_the_old_file_until_the_new_run_is_done(tmp_path):
    """``--no-resume`` whose build fails, or that is interrupted, leaves the finished file as it was."""
    out = tmp_path / "w.h5"
    simulate("water", "test", out, platform="CPU", production_steps=20, report_interval=10, progress=False)
    before = read_aa(out)

    def crash(n_frames):
        raise Interrupt

    with pytest.raises(Interrupt):
        simulate("water", "test", out, platform="CPU", production_steps=30, report_interval=10, progress=False,
                 resume=False, seed=7, callback=crash)
    np.testing.assert_array_equal(read_aa(out).positions, before.positions)  # untouched
    # a resume continues the interrupted start-over and swaps it in when finished
    simulate("water", "test", out, platform="CPU", production_steps=30, report_interval=10, progress=False, seed=7)
    after = read_aa(out)
    assert after.n_frames == 3 and not np.array_equal(after.positions[:2], before.positions)
    assert not (tmp_path / ".w.h5.new").exists()
