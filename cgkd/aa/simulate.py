"""All-atom MD with forces: build, equilibrate (NPT then NVT), resumable NVT production to a ``cgkd-aa`` file.

Resumption: the equilibrated state and the serialised System are stored in the output file when it
is created, so a resume never rebuilds or re-equilibrates. Every ``checkpoint_interval`` production
steps the file is flushed and an OpenMM checkpoint (plus a platform-independent State XML) is
written atomically to the side file ``<out>.chk``, recording how many frames it covers. A resumed
run truncates frames written after that checkpoint and continues from it, so no frame is lost or
duplicated. At the end the last checkpoint is moved into the file and the side file removed.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import yaml
import openmm
import openmm.unit as u

from cgkd import units
from cgkd.progress import note, progress as progress_bar
from cgkd.aa.build import AASystem, build, choose_platform, make_context, make_integrator
from cgkd.io.aa_h5 import AAWriter, create_aa, read_blob, read_header
from cgkd.io.atomic import atomic_path
from cgkd.io.spec import SystemSpec, load_spec, spec_from_yaml_text

#: Steps per barostat attempt.
BAROSTAT_FREQUENCY = 25


def checkpoint_path(out: str | Path) -> Path:
    """The side file holding the latest production checkpoint of ``out``."""
    out = Path(out)
    return out.with_name(out.name + ".chk")


def _residue_groups(topology) -> list:
    return [np.array([a.index for a in r.atoms()]) for r in topology.residues()]


def _scale_to_box(positions: np.ndarray, groups: list, old: np.ndarray, new: np.ndarray) -> np.ndarray:
    """Move each molecule's centre affinely from box ``old`` to box ``new`` (molecules stay rigid)."""
    m = np.linalg.solve(old, new)  # rows are box vectors: x_new = x_old @ old^-1 @ new
    out = positions.copy()
    for g in groups:
        c = positions[g].mean(axis=0)
        out[g] += c @ m - c
    return out


def equilibrate(aa: AASystem, *, platform: Optional[str] = None, seed: Optional[int] = None,
                progress: bool = True) -> openmm.State:
    """NPT (MonteCarloBarostat, if the spec has a pressure) then NVT at the NPT-average box.

    Returns the final State (positions, velocities, box) of the NVT run. The NPT-average box is the
    cube (or affinely scaled box) with the mean volume of the second half of the NPT run.
    """
    spec, protocol = aa.spec, aa.spec.size(aa.size)
    seed = spec.seed if seed is None else int(seed)
    plat = choose_platform(platform)
    positions, box = aa.positions, aa.box
    velocities = None
    npt_steps = protocol.npt_steps if (spec.pressure is not None and box is not None) else 0
    bar = progress_bar(npt_steps + protocol.nvt_steps, f"{spec.name} equilibrate", unit="step", enabled=progress)
    if npt_steps > 0:
        system = openmm.XmlSerializer.clone(aa.system)
        baro = openmm.MonteCarloBarostat(spec.pressure * u.bar, spec.temperature * u.kelvin, BAROSTAT_FREQUENCY)
        baro.setRandomNumberSeed(seed % (2**31 - 1) or 1)
        system.addForce(baro)
        ctx = make_context(system, make_integrator(spec, seed), plat)
        ctx.setPeriodicBoxVectors(*box)
        ctx.setPositions(positions)
        ctx.setVelocitiesToTemperature(spec.temperature * u.kelvin, seed)
        volumes, block = [], max(BAROSTAT_FREQUENCY, min(500, npt_steps // 20 or 1))
        done = 0
        while done < npt_steps:
            n = min(block, npt_steps - done)
            ctx.getIntegrator().step(n)
            done += n
            bar.update(n)
            if done > npt_steps // 2:
                b = ctx.getState().getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer)
                volumes.append(abs(np.linalg.det(b)))
        state = ctx.getState(getPositions=True, getVelocities=True)
        last = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer)
        target = last * (np.mean(volumes) / abs(np.linalg.det(last))) ** (1.0 / 3.0)
        positions = _scale_to_box(state.getPositions(asNumpy=True).value_in_unit(u.nanometer),
                                  _residue_groups(aa.topology), last, target)
        velocities = state.getVelocities(asNumpy=True).value_in_unit(u.nanometer / u.picosecond)
        box = target
        del ctx
    ctx = make_context(aa.system, make_integrator(spec, seed + 1), plat)
    if box is not None:
        ctx.setPeriodicBoxVectors(*box)
    ctx.setPositions(positions)
    if velocities is None:
        ctx.setVelocitiesToTemperature(spec.temperature * u.kelvin, seed)
    else:
        ctx.setVelocities(velocities)
    ctx.applyConstraints(1e-6)
    ctx.applyVelocityConstraints(1e-6)
    done = 0
    while done < protocol.nvt_steps:
        n = min(1000, protocol.nvt_steps - done)
        ctx.getIntegrator().step(n)
        done += n
        bar.update(n)
    bar.close()
    return ctx.getState(getPositions=True, getVelocities=True)


def _save_checkpoint(path: Path, n_frames: int, ctx: openmm.Context) -> None:
    state_xml = openmm.XmlSerializer.serialize(ctx.getState(getPositions=True, getVelocities=True))
    buf = io.BytesIO()
    np.savez(buf, frames=np.int64(n_frames), checkpoint=np.frombuffer(ctx.createCheckpoint(), dtype=np.uint8),
             state=np.frombuffer(state_xml.encode(), dtype=np.uint8))
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def _restore(ctx: openmm.Context, checkpoint: bytes, state_xml: bytes) -> None:
    """Load an OpenMM checkpoint; fall back to the State XML if it came from another platform."""
    try:
        ctx.loadCheckpoint(checkpoint)
    except Exception:  # openmm raises a bare OpenMMException for platform mismatches
        ctx.setState(openmm.XmlSerializer.deserialize(state_xml.decode()))


def _same_spec(stored_yaml: str, spec: SystemSpec, size: Optional[str] = None) -> bool:
    """Whether the spec embedded in a file describes ``spec``: compared as parsed values, so that a file written
    before a spec field with a default was added still resumes. With ``size``, only that size of the two specs'
    sizes is compared (a size added to or changed in the spec later does not block resuming another one)."""
    try:
        old = spec_from_yaml_text(stored_yaml)
    except ValueError:
        return False
    a, b = yaml.safe_load(old.to_yaml()), yaml.safe_load(spec.to_yaml())
    if size is not None:
        a["sizes"] = {size: (a.get("sizes") or {}).get(size)}
        b["sizes"] = {size: (b.get("sizes") or {}).get(size)}
    return a == b


def _check_existing(out: Path, spec: SystemSpec, size: str, interval: int) -> None:
    header = read_header(out)
    attrs, stored = header["attrs"], header["spec_yaml"] or ""
    problems = []
    if stored != spec.to_yaml() and not _same_spec(stored, spec, size):
        problems.append("its embedded spec differs from the requested one")
    if attrs.get("size") != size:
        problems.append(f"it was made for size {attrs.get('size')!r}, not {size!r}")
    if attrs.get("report_interval") != interval:
        problems.append(f"its report_interval is {attrs.get('report_interval')}, not {interval}")
    if problems:
        raise ValueError(f"cannot resume {out}: " + "; ".join(problems) + " (use resume=False / --no-resume to start over)")


def simulate(
    spec: SystemSpec | str | Path,
    size: str = "quick",
    out: str | Path = "aa.h5",
    *,
    platform: Optional[str] = None,
    production_steps: Optional[int] = None,
    report_interval: Optional[int] = None,
    seed: Optional[int] = None,
    temperature: Optional[float] = None,
    progress: bool = True,
    resume: bool = True,
    callback: Optional[Callable[[int], None]] = None,
) -> Path:
    """Build, equilibrate and run NVT production, writing a ``cgkd-aa`` file with total per-atom forces.

    Parameters
    ----------
    spec : SystemSpec, or path / shipped name of a spec
    size : str
        A size of the spec.
    out : str or Path
        Output HDF5 file; its checkpoint side file is ``<out>.chk``.
    platform : str, optional
        OpenMM platform name (default: fastest available, CUDA > OpenCL > CPU > Reference).
    production_steps : int, optional
        Production length in MD steps (default: the size's); a multiple of ``report_interval``.
        Resuming a finished file with a larger value extends it.
    report_interval : int, optional
        Steps between saved frames (default: the size's).
    seed : int, optional
        Seed for insertion, velocities, thermostat and barostat (default: ``spec.seed``).
    temperature : float, K, optional
        Run at this temperature instead of the size's or the spec's (the file's embedded spec records it),
        e.g. to reach a state where a viscous liquid relaxes within the run. Default: the size's
        ``temperature`` if it sets one (reline ``evidence``: 450 K), else the spec's.
    progress : bool
        Report progress (a bar in a terminal, periodic lines in logs).
    resume : bool
        Continue an existing ``out`` from its last checkpoint; False starts over in a staging file next to
        ``out`` (``.<name>.new``) that replaces it only when the new run has finished (a failed build leaves
        ``out`` as it was). A resume after an interrupted start-over continues the staging file.
    callback : callable(int), optional
        Called with the number of frames in the file after each frame is written (raising from it
        interrupts the run like a crash after that frame).

    Returns
    -------
    Path
        ``out``.
    """
    if not isinstance(spec, SystemSpec):
        spec = load_spec(spec)
    protocol = spec.size(size)
    if temperature is None:
        temperature = protocol.temperature
    if temperature is not None:
        from dataclasses import replace

        spec = replace(spec, temperature=float(units.strip(temperature, units.TEMPERATURE, "temperature")))
    steps = protocol.production_steps if production_steps is None else int(production_steps)
    interval = protocol.report_interval if report_interval is None else int(report_interval)
    if interval < 1:
        raise ValueError(f"report_interval must be >= 1 step, got {interval}")
    if steps < interval or steps % interval:
        raise ValueError(f"production_steps must be a positive multiple of report_interval ({interval}), got {steps}")
    n_target = steps // interval
    ckpt_frames = max(1, protocol.checkpoint_interval // interval)
    final = Path(out)
    check_output_file(final, "out")
    spec.check_templates()
    seed = spec.seed if seed is None else int(seed)
    plat = choose_platform(platform)
    # resume=False builds into a staging file that replaces ``final`` only when the new run has finished; an
    # interrupted start-over is what a later resume continues
    staging = final.with_name(f".{final.name}.new")
    if not resume:
        for p in (staging, checkpoint_path(staging)):
            if p.exists():
                p.unlink()
        out = staging if final.exists() else final
    else:
        out = staging if staging.is_file() else final
    chk = checkpoint_path(out)

    if resume and out.is_file():
        _check_existing(out, spec, size, interval)
        if progress:
            note(f"{spec.name}: resuming {out}")
    else:
        for p in (out, chk):
            if p.exists():
                p.unlink()
        aa = build(spec, size, seed=seed, platform=platform, progress=progress)
        state = equilibrate(aa, platform=platform, seed=seed, progress=progress)
        attrs = {"system": spec.name, "size": size, "report_interval": interval, "timestep": spec.timestep,
                 "seed": seed, "platform": plat.getName(), "positions": "wrapped per molecule (enforcePeriodicBox)"}
        create_aa(out, topology=aa.topology, masses=aa.masses, constraints=aa.constraints,
                  temperature=spec.temperature, periodic=aa.box is not None, spec=spec, attrs=attrs,
                  blobs={"system": openmm.XmlSerializer.serialize(aa.system).encode(),
                         "equilibrated": openmm.XmlSerializer.serialize(state).encode()})

    system = openmm.XmlSerializer.deserialize(read_blob(out, "system").decode())
    ctx = make_context(system, make_integrator(spec, seed + 2), plat)
    with AAWriter(out) as writer:
        if chk.is_file():
            with np.load(chk) as z:
                n0 = int(z["frames"])
                _restore(ctx, z["checkpoint"].tobytes(), z["state"].tobytes())
        elif writer.get_blob("checkpoint") is not None:
            n0 = int(writer.attrs["checkpoint_frames"])
            _restore(ctx, writer.get_blob("checkpoint"), writer.get_blob("checkpoint_state"))
        else:
            n0 = 0
            ctx.setState(openmm.XmlSerializer.deserialize(writer.get_blob("equilibrated").decode()))
            ctx.setTime(0.0)
            ctx.setStepCount(0)
        if writer.n_frames < n0:
            raise ValueError(f"{out} holds {writer.n_frames} frames but its checkpoint covers {n0}; the file is damaged")
        writer.truncate(n0)
        bar = progress_bar(n_target, f"{spec.name} production", initial=min(n0, n_target), enabled=progress, unit="frame")
        periodic = system.usesPeriodicBoundaryConditions()
        for k in range(n0, n_target):
            ctx.getIntegrator().step(interval)
            st = ctx.getState(getPositions=True, getForces=True, getEnergy=True, enforcePeriodicBox=periodic)
            box = st.getPeriodicBoxVectors(asNumpy=True).value_in_unit(units.DISTANCE) if periodic else None
            writer.append(
                st.getPositions(asNumpy=True).value_in_unit(units.DISTANCE),
                st.getForces(asNumpy=True).value_in_unit(units.FORCE),
                box,
                st.getPotentialEnergy().value_in_unit(units.ENERGY),
                st.getTime().value_in_unit(units.TIME),
            )
            bar.update(1)
            if (k + 1) % ckpt_frames == 0 and k + 1 < n_target:
                writer.flush()
                _save_checkpoint(chk, k + 1, ctx)
            if callback is not None:
                callback(k + 1)
        bar.close()
        if n0 < n_target or writer.get_blob("checkpoint") is None:
            writer.set_blob("checkpoint", ctx.createCheckpoint())
            writer.set_blob("checkpoint_state", openmm.XmlSerializer.serialize(
                ctx.getState(getPositions=True, getVelocities=True)).encode())
            writer.attrs["checkpoint_frames"] = max(n_target, writer.n_frames)
            writer.attrs["production_steps"] = writer.n_frames * interval
        writer.flush()
    if chk.exists():
        chk.unlink()
    if out != final:
        os.replace(out, final)
        if checkpoint_path(final).exists():
            checkpoint_path(final).unlink()
    return final


def check_output_file(path: Path, name: str) -> None:
    """Refuse, before any work, an output file path that cannot be written."""
    if path.is_dir():
        raise ValueError(f"{name} {str(path)!r} is a folder; give a file path such as {str(path / 'aa.h5')!r}")
    parent = path.parent
    for p in [parent, *parent.parents]:
        if p.exists():
            if not p.is_dir():
                raise ValueError(f"{name} {str(path)!r}: {str(p)!r} is a file, not a folder")
            if not os.access(p, os.W_OK | os.X_OK):
                raise ValueError(f"{name} {str(path)!r}: folder {str(p)!r} is not writable")
            break


def replica_task(spec, size: str, out: str, seed: int, platform, production_steps, report_interval,
                 temperature) -> str:
    """One AA replica of :func:`simulate_replicas` (resumable, as :func:`simulate`)."""
    return str(simulate(spec, size, out, platform=platform, production_steps=production_steps,
                        report_interval=report_interval, seed=seed, temperature=temperature, progress=False))


def simulate_replicas(spec, size: str = "quick", out_dir="aa", n_replicas: int = 2, *, seed: Optional[int] = None,
                      platform: Optional[str] = None, production_steps: Optional[int] = None,
                      report_interval: Optional[int] = None, temperature: Optional[float] = None,
                      executor=None, progress: bool = True) -> list:
    """Independent AA runs ``out_dir/replica_<k>.h5`` (seed ``seed + k``, default seed the spec's) as parallel tasks.

    More independent configurations than one long run gives in the same wall time when the liquid relaxes slowly.
    Each replica is a :func:`simulate` run (resumable: a rerun continues the unfinished ones); ``executor``
    (:mod:`cgkd.parallel`: a local pool, a Dask cluster) says where they run. Map each file, or all of them into one
    CG dataset with ``cgkd.data.mapped.map_aa_file`` and ``cgkd.data.cg_h5.concatenate_cg``.

    Returns
    -------
    list of Path
    """
    from cgkd.parallel import run_tasks

    if isinstance(n_replicas, bool) or not isinstance(n_replicas, int) or n_replicas < 1:
        raise ValueError(f"n_replicas must be a positive integer, got {n_replicas!r}")
    spec_obj = load_spec(spec) if isinstance(spec, (str, Path)) else spec
    base = int(spec_obj.seed if seed is None else seed)
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(spec_obj, size, str(folder / f"replica_{k}.h5"), base + k, platform, production_steps, report_interval,
             temperature) for k in range(n_replicas)]
    done = run_tasks(replica_task, jobs, executor, labels=[f"replica {k}" for k in range(n_replicas)],
                     desc="AA replicas", show_progress=progress)
    return [Path(p) for p in done]
