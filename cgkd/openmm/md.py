"""CG molecular dynamics with an exported potential: replicas, stability checks, trajectories, summary.

Defaults suit one-bead-per-molecule (or few-bead) CG liquids with heavy beads (40-150 amu):
Langevin middle integrator, timestep 0.004 ps (2-5 fs is safe; smooth CG potentials often allow
more), friction 1/ps (1-10/ps: lower keeps dynamics closer to the CG Langevin limit, higher is
more robust). Output of one run (``out_dir``):

- ``topology.pdb``: the CG topology with the first start frame;
- ``system.json``: the CG topology (``cgkd.topology.Topology.to_json``: types, names, masses,
  molecules, bonds), what analysis needs;
- ``replica_<k>.dcd``: positions (not wrapped) every ``report_interval`` steps;
- ``replica_<k>_energy.csv``: step, time (ps), potential and kinetic energy (kJ/mol), temperature (K);
- ``replica_<k>_last_good.pdb``: the last frame that passed all checks;
- ``replica_<k>_state.json``: the replica's checkpoint (an OpenMM checkpoint with the integrator's random
  state, the byte lengths of its DCD and CSV at that step, its record); a rerun truncates both files to those
  lengths and continues, so the resumed trajectory is the uninterrupted one, frame for frame;
- ``provenance.json``: digests of the model and the CG data, and the settings: a rerun with other ones is
  refused;
- ``summary.json``: written last; per replica survived / failure reason / time to failure, steps/s and ns/day.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import json
import shutil
import struct
import time
from pathlib import Path
from typing import Optional

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u
import torch

from cgkd import geometry, seeds, units
from cgkd.data.cg_h5 import CGData, data_digest, read_cg
from cgkd.io import provenance
from cgkd.io.atomic import atomic_path, swap_in_folder, write_text
from cgkd.io.provenance import file_digest, settings_digest
from cgkd.progress import note, progress as progress_bar
from cgkd.nn.native import NativeModel, is_native_file, load_native
from cgkd.openmm.native import native_system
from cgkd.openmm.system import as_artefact, create_system

#: Fraction of the smallest AA (mapped) distance per type pair below which a CG pair counts as collapsed.
#: The smallest distance is taken over up to ``COLLAPSE_FRAMES`` frames of the AA data, and a pair must stay
#: below it for ``COLLAPSE_CHECKS`` consecutive checks: with 0.8 x the minimum of 20 frames, two reline
#: replicas were stopped at real, transient Cl-Cl contacts of 0.353-0.358 nm (threshold 0.359 nm).
MIN_DISTANCE_FACTOR = 0.75
COLLAPSE_FRAMES = 200
COLLAPSE_CHECKS = 2
#: Default time step (ps) per model kind for models without bonded priors (docs/benchmarks.md, section 4 and
#: 5c): the native time-step probe kept temperature and structure up to 48 fs (2 x 500 ps); two neural students of
#: the reline box kept them at 16 fs over 8 replicas x 1 ns each (RDF TAE as at 4 fs).
DEFAULT_TIMESTEP = {"neural": 0.016, "native": 0.016}
#: Default time step (ps) of a model with bonded priors (molecules: bond vibrations), the step the peptide runs
#: used; larger steps were not probed.
BONDED_TIMESTEP = 0.002


def default_timestep(kind: str, bonded_priors: Optional[dict] = None) -> float:
    """The default MD time step (ps) of a model kind (``neural`` or ``native``) given its bonded priors."""
    if kind not in DEFAULT_TIMESTEP:
        raise ValueError(f"kind must be one of {sorted(DEFAULT_TIMESTEP)}, got {kind!r}")
    if any(bonded_priors.get(k) for k in ("bonds", "angles", "dihedrals", "impropers")) if bonded_priors else False:
        return BONDED_TIMESTEP
    return DEFAULT_TIMESTEP[kind]
def model_timestep(artefact) -> float:
    """The default time step (ps) of a model file: :func:`default_timestep` of its kind and bonded priors.

    ``artefact`` is an exported neural artefact (path or loaded) or a native student (``native.json`` or a
    ``NativeModel``), as :func:`run_cg_md` takes it.
    """
    kind, bonded = _kind_and_priors(artefact)[1:]
    return default_timestep(kind, bonded)


def _kind_and_priors(artefact):
    """``(loaded model, kind, bonded priors)`` of what :func:`run_cg_md` accepts as its model."""
    native = load_native(artefact) if isinstance(artefact, (str, Path)) and is_native_file(artefact) else artefact
    if isinstance(native, NativeModel):
        return native, "native", native.bonded_priors
    loaded = as_artefact(artefact)
    return loaded, "neural", loaded[1].get("bonded_priors")


#: Runaway: potential energy per bead rising more than this many kT above its initial value.
RUNAWAY_KT_PER_BEAD = 20.0
#: Runaway: instantaneous kinetic temperature above this multiple of the thermostat's (a bead shot off at
#: huge speed: its potential energy may look harmless in a periodic box). For 100 degrees of freedom the chance
#: of 2x by fluctuation alone is below 1e-12. Small systems fluctuate more: see :func:`runaway_temperature_factor`.
RUNAWAY_TEMPERATURE_FACTOR = 3.0
#: Chance per check that a thermalised system crosses the runaway temperature by fluctuation alone.
RUNAWAY_FALSE_ALARM = 1e-9


def runaway_temperature_factor(dof: int) -> float:
    """The runaway threshold over the thermostat temperature for ``dof`` degrees of freedom.

    At equilibrium ``dof * T_inst / T`` is chi-square distributed with ``dof`` degrees of freedom, so for a
    small molecule (5 beads: 12 degrees of freedom) 3x happens by chance once in about 3,000 checks. The
    factor is the larger of :data:`RUNAWAY_TEMPERATURE_FACTOR` and the chi-square quantile with tail
    probability :data:`RUNAWAY_FALSE_ALARM` (5.6x for 12 degrees of freedom, 3.4x for 30, 3.0x from about 40).
    """
    from scipy.stats import chi2

    return max(RUNAWAY_TEMPERATURE_FACTOR, float(chi2.isf(RUNAWAY_FALSE_ALARM, max(int(dof), 1))) / max(int(dof), 1))


def min_pair_distances(positions: np.ndarray, box: Optional[np.ndarray], types: np.ndarray, n_types: int,
                       max_frames: int = COLLAPSE_FRAMES) -> np.ndarray:
    """Smallest distance per bead-type pair over (up to ``max_frames`` evenly spaced) frames.

    Parameters
    ----------
    positions : np.ndarray, shape=(F, N, 3), nm
    box : np.ndarray or None, shape=(F, 3, 3), nm
    types : np.ndarray, shape=(N,), int
    n_types : int

    Returns
    -------
    np.ndarray, shape=(n_types, n_types), float64, nm; ``inf`` for pairs that never occur.
    """
    out = np.full((n_types, n_types), np.inf)
    i, j = np.triu_indices(positions.shape[1], k=1)
    ti, tj = types[i], types[j]
    frames = np.unique(np.linspace(0, len(positions) - 1, min(max_frames, len(positions))).astype(int))
    for f in frames:
        d = geometry.pair_distances(positions[f], None if box is None else box[f])
        np.minimum.at(out, (ti, tj), d)
        np.minimum.at(out, (tj, ti), d)
    return out


def degrees_of_freedom(system: openmm.System) -> int:
    """3 per particle of nonzero mass, less one per constraint, less 3 when a ``CMMotionRemover`` fixes the
    centre of mass (a Langevin thermostat without one lets the total momentum fluctuate: 3N)."""
    n = sum(1 for k in range(system.getNumParticles()) if system.getParticleMass(k)._value > 0)
    removes_cm = any(isinstance(system.getForce(k), openmm.CMMotionRemover) for k in range(system.getNumForces()))
    return 3 * n - system.getNumConstraints() - (3 if removes_cm else 0)


def _check(energy: float, forces: np.ndarray, pos: np.ndarray, box, types, threshold, e0: float, n: int, kt: float,
           close_before: Optional[dict] = None):
    """None if the frame is fine, else the reason it is not.

    ``close_before`` (updated in place) maps each bead pair found below the collapse threshold to the number of
    consecutive checks it has been there; a pair collapses once that reaches ``COLLAPSE_CHECKS``.
    """
    if not np.isfinite(energy):
        return "non-finite potential energy"
    if not np.all(np.isfinite(forces)) or not np.all(np.isfinite(pos)):
        return "non-finite forces or positions"
    if (energy - e0) / n > RUNAWAY_KT_PER_BEAD * kt:
        return f"runaway energy ({(energy - e0) / n / kt:.1f} kT per bead above the start)"
    if threshold is not None:
        i, j = np.triu_indices(n, k=1)
        d = geometry.pair_distances(pos, box)
        bad = np.nonzero(d < threshold[types[i], types[j]])[0]
        counts = {} if close_before is None else close_before
        now = {(int(i[k]), int(j[k])): counts.get((int(i[k]), int(j[k])), 0) + 1 for k in bad}
        counts.clear()
        counts.update(now)
        for k in bad:
            if now[(int(i[k]), int(j[k]))] >= (COLLAPSE_CHECKS if close_before is not None else 1):
                return (f"beads {i[k]} and {j[k]} at {d[k]:.3f} nm, closer than "
                        f"{threshold[types[i[k]], types[j[k]]]:.3f} nm for {now[(int(i[k]), int(j[k]))]} checks in a row")
    return None


def _model_digest(artefact, native) -> str:
    if isinstance(artefact, (str, Path)):
        return file_digest(artefact)
    if isinstance(native, NativeModel):
        return settings_digest(native.to_dict())
    module, metadata = artefact
    h = hashlib.sha256(json.dumps(metadata, sort_keys=True, default=str).encode())
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return "sha256:" + h.hexdigest()


def run_cg_md(
    artefact,
    cg_data_or_start_frames,
    out_dir,
    *,
    n_replicas: int = 4,
    steps: int = 10000,
    timestep: Optional[float] = None,
    friction: float = 1.0,
    temperature: Optional[float] = None,
    report_interval: int = 100,
    checkpoint_interval: Optional[int] = None,
    backend: Optional[str] = None,
    platform: Optional[str] = None,
    seed: int = 0,
    min_distance=None,
    progress: bool = True,
    torch_threads: Optional[int] = 1,
    resume: bool = True,
    executor=None,
    only_replica: Optional[int] = None,
) -> dict:
    """Run ``n_replicas`` independent CG Langevin trajectories from mapped AA frames; resumable.

    Parameters
    ----------
    artefact : str, Path, (module, metadata) or NativeModel
        Exported potential (``cgkd export``), or a native student (``cgkd.nn.native.NativeModel`` or
        its ``cgkd-native`` JSON file), which runs as a plain OpenMM System (``backend`` is ignored).
    cg_data_or_start_frames : CGData or str or Path
        Mapped AA data (a ``cgkd-cg`` file or object); replica k starts from frame
        ``round(k * (F - 1) / max(n_replicas - 1, 1))`` with that frame's box, masses and types.
    out_dir : str or Path
    n_replicas : int
    steps : int
        MD steps per replica.
    timestep : float, ps, optional
        Default :func:`default_timestep`: 16 fs for neural and native models without bonded priors (their probes
        kept temperature and structure: docs/benchmarks.md, sections 4 and 5c), 2 fs for models with bonded
        priors (molecules).
    friction : float, 1/ps
    temperature : float, K, optional
        Default: the CG data's temperature.
    report_interval : int
        Steps between saved frames and stability checks.
    checkpoint_interval : int, optional
        Steps between checkpoints of each replica (rounded up to a multiple of ``report_interval``);
        default 10 report intervals. A killed run loses at most this much per replica.
    backend : {"torch", "python", None}
    platform : str, optional
        OpenMM platform name (default: OpenMM's fastest). A resumed replica must use the platform it
        started on (OpenMM checkpoints are platform-specific).
    seed : int
        Replica k uses ``cgkd.seeds.openmm_seed(seed, k)`` for velocities and the integrator: the same
        seed gives the same trajectories on every run (0 included, which OpenMM would read as "random").
    min_distance : float or np.ndarray (n_types, n_types), nm, optional
        Collapse threshold; default ``MIN_DISTANCE_FACTOR`` (0.75) x the smallest mapped-AA distance per
        type pair over up to ``COLLAPSE_FRAMES`` frames. A pair collapses when it stays below the threshold for
        ``COLLAPSE_CHECKS`` consecutive checks (transient close contacts pass). ``0`` switches the check off.
    progress : bool
        Report progress per replica (a bar in a terminal, periodic lines otherwise).
    torch_threads : int or None
        torch intra-op threads while the replicas run (restored afterwards). The default 1 is fastest for CG
        models of a few hundred beads and avoids the large slow-down of several threads spinning on a loaded
        machine (measured: 6 ms per force call with 1 thread, 128 ms with 2 while another process held a core);
        None leaves torch's setting.
    resume : bool
        True (default): continue the unfinished replicas of an earlier run with the same model, data and
        settings into ``out_dir`` from their checkpoints, without duplicating frames, and skip finished ones;
        a folder made from other inputs or settings is refused (:class:`cgkd.io.provenance.ProvenanceError`).
        False: start over in a staging folder next to ``out_dir`` that replaces it only once the new run
        has finished (the old result stays intact until then).
    executor : cgkd.parallel.ExecutorConfig, dict or int, optional
        Run the replicas as parallel tasks (a local process pool, a Dask cluster); each task rebuilds the
        system from ``artefact`` and the CG file, which must then be paths, and uses ``executor.threads``
        torch threads. A lost worker costs its replica's steps since the last checkpoint. Default: one after
        another in this process.
    only_replica : int, optional
        Run only this replica into an existing run folder and return its record (no summary): one task of a
        parallel run.

    Returns
    -------
    dict
        The summary also written to ``out_dir/summary.json``.
    """
    data = read_cg(cg_data_or_start_frames) if isinstance(cg_data_or_start_frames, (str, Path)) else cg_data_or_start_frames
    if not isinstance(data, CGData):
        raise ValueError(f"cg_data_or_start_frames must be a CGData or a CG dataset path, got {type(data).__name__}")
    for name, value in (("n_replicas", n_replicas), ("steps", steps), ("report_interval", report_interval)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if checkpoint_interval is None:
        checkpoint_interval = 10 * report_interval
    if isinstance(checkpoint_interval, bool) or not isinstance(checkpoint_interval, (int, np.integer)) or checkpoint_interval < 1:
        raise ValueError(f"checkpoint_interval must be a positive integer (steps), got {checkpoint_interval!r}")
    ckpt_reports = max(1, -(-int(checkpoint_interval) // int(report_interval)))
    seeds.openmm_seed(seed)  # type check
    friction = float(units.strip(friction, 1 / units.TIME, "friction"))
    if not np.isfinite(friction) or friction < 0:
        raise ValueError(f"friction must be >= 0 (1/ps), got {friction}")
    temperature = float(units.strip(temperature if temperature is not None else data.temperature, units.TEMPERATURE, "temperature"))
    if not (np.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be positive (K), got {temperature}")
    loaded, model_kind, bonded = _kind_and_priors(artefact)
    if model_kind == "native":
        native = loaded
        names, dtype = list(native.type_names), "float64"
    else:
        native = artefact
        module, metadata = loaded
        names, dtype = list(metadata["type_names"]), metadata["dtype"]
    timestep = default_timestep(model_kind, bonded) if timestep is None else float(
        units.strip(timestep, units.TIME, "timestep"))
    if not (np.isfinite(timestep) and timestep > 0):
        raise ValueError(f"timestep must be positive (ps), got {timestep}")
    types = data.topology.type_indices(names, "the potential")
    n = data.n_beads
    n_types = len(names)
    if min_distance is None:
        aa_min = min_pair_distances(data.positions, data.box, types, n_types)
        threshold = MIN_DISTANCE_FACTOR * np.where(np.isfinite(aa_min), aa_min, 0.0)
    else:
        threshold = np.broadcast_to(np.asarray(min_distance, dtype=np.float64), (n_types, n_types)).copy()
        if not np.all(np.isfinite(threshold)) or np.any(threshold < 0):
            raise ValueError(f"min_distance must be >= 0 nm (0: no collapse check), got {min_distance!r}")
    if not np.any(threshold > 0):
        threshold = None

    final = Path(out_dir).resolve()
    if final.exists() and not final.is_dir():
        raise ValueError(f"out_dir {str(final)!r} exists and is not a folder")
    settings = {"n_replicas": int(n_replicas), "steps": int(steps), "timestep_ps": timestep, "friction_per_ps": friction,
                "temperature_K": temperature, "report_interval": int(report_interval),
                "checkpoint_reports": ckpt_reports, "seed": int(seed), "backend": backend, "platform": platform,
                "min_distance_nm": None if threshold is None else np.round(threshold, 9).tolist()}
    rec = provenance.record("cgmd", {"model": _model_digest(artefact, native), "cg": data_digest(data)}, settings)
    # everything that can still fail on the arguments fails before anything is written
    topology = data.openmm_topology()
    kt = units.kbt(temperature)
    box0 = None if data.box is None else data.box[0]
    if model_kind == "native":
        system = native_system(native, data.topology, box=box0)
    else:
        system = create_system((module, metadata), topology, types=types, masses=data.masses, backend=backend, box=box0)
    plat = None if platform is None else openmm.Platform.getPlatformByName(platform)
    # resume=False runs in a staging folder that replaces ``final`` when finished; a later resume continues an
    # interrupted start-over there (when it was made from the same inputs and settings)
    staging = final.parent / f".{final.name}.new"
    if not resume:
        if staging.exists():
            shutil.rmtree(staging)
        out = staging
    elif _same_provenance(staging, rec):
        out = staging
        if progress:
            note(f"cgkd simulate: continuing the interrupted start-over in {staging}")
    else:
        out = final
    previous = provenance.check_or_stamp(out, rec, how_to_redo="pass resume=False (cgkd simulate --no-resume) to redo it")
    if previous is not None and (out / "summary.json").is_file():
        if out != final:
            swap_in_folder(out, final)
        if progress:
            note(f"cgkd simulate: {final} is finished (same model, data and settings); returning its summary")
        return json.loads((final / "summary.json").read_text())
    write_text(out / "system.json", data.topology.to_json())
    with atomic_path(out / "topology.pdb", suffix=".pdb") as tmp, open(tmp, "w") as fh:
        app.PDBFile.writeFile(topology, data.positions[0].astype(float) * u.nanometer, fh)
    starts = np.round(np.linspace(0, data.n_frames - 1, n_replicas)).astype(int) if n_replicas > 1 else np.array([0])
    from cgkd.parallel import as_executor, run_tasks

    ex = as_executor(executor)
    todo = range(n_replicas) if only_replica is None else [int(only_replica)]
    if only_replica is not None and not 0 <= int(only_replica) < n_replicas:
        raise ValueError(f"only_replica must lie in 0..{n_replicas - 1}, got {only_replica}")
    if not ex.in_process and only_replica is None:
        if not isinstance(artefact, (str, Path)) or not isinstance(cg_data_or_start_frames, (str, Path)):
            raise ValueError("with a parallel executor, artefact and cg_data_or_start_frames must be file paths (each "
                             f"task rebuilds the system from them), got {type(artefact).__name__} and "
                             f"{type(cg_data_or_start_frames).__name__}")
        task = dict(n_replicas=int(n_replicas), steps=int(steps), timestep=timestep, friction=friction,
                    temperature=temperature, report_interval=int(report_interval), checkpoint_interval=int(checkpoint_interval),
                    backend=backend, platform=platform, seed=int(seed),
                    min_distance=0.0 if threshold is None else threshold.tolist(), progress=False,
                    torch_threads=ex.threads)
        jobs = [(str(artefact), str(cg_data_or_start_frames), str(out), k, task) for k in todo]
        replicas = run_tasks(replica_task, jobs, ex, labels=[f"replica {k}" for k in todo], desc="CG MD replicas",
                             show_progress=progress)
    else:
        replicas = []
        old_threads = torch.get_num_threads()
        try:
            if torch_threads is not None:
                torch.set_num_threads(int(torch_threads))
            for k in todo:
                replicas.append(_run_replica(k, system, topology, data, int(starts[k]), types, threshold, out, steps=steps,
                                             timestep=timestep, friction=friction, temperature=temperature, kt=kt,
                                             report_interval=report_interval, ckpt_reports=ckpt_reports, platform=plat,
                                             seed=int(seed), progress=progress))
        finally:
            torch.set_num_threads(old_threads)
    if only_replica is not None:
        return replicas[0]
    total_steps = sum(r["steps_done"] for r in replicas)
    total_wall = sum(r["wall_s"] for r in replicas)
    summary = {
        "n_replicas": n_replicas,
        "survived": sum(r["survived"] for r in replicas),
        "steps": steps,
        "timestep_ps": timestep,
        "friction_per_ps": friction,
        "temperature_K": temperature,
        "report_interval": report_interval,
        "seed": int(seed),
        "n_beads": n,
        "model": model_kind,
        "backend": "native" if model_kind == "native" else (
            backend or ("torch" if "torch" in system.getForce(0).getName() else "python")),
        "platform": replicas[0]["platform"],
        "dtype": dtype,
        "min_distance_nm": None if threshold is None else threshold.tolist(),
        "steps_per_s": total_steps / total_wall if total_wall > 0 else None,
        "ns_per_day": total_steps * timestep * 1e-3 / total_wall * 86400.0 if total_wall > 0 else None,
        "resumed_replicas": sum(1 for r in replicas if r.get("resumed")),
        "replicas": replicas,
    }
    write_text(out / "summary.json", json.dumps(summary, indent=1))
    if out != final:
        swap_in_folder(out, final)
    return summary


def replica_task(artefact: str, cg_path: str, out_dir: str, k: int, settings: dict) -> dict:
    """Run (or resume, or return the finished) replica ``k`` of a parallel :func:`run_cg_md` into ``out_dir``."""
    return run_cg_md(artefact, cg_path, out_dir, resume=True, only_replica=k, **settings)


def _same_provenance(folder: Path, rec: dict) -> bool:
    old = provenance.read_provenance(folder) if folder.is_dir() else None
    return old is not None and old.get("inputs") == rec["inputs"] and old.get("settings") == rec["settings"]


def _state_path(out: Path, k: int) -> Path:
    return out / f"replica_{k}_state.json"


def _truncate(path: Path, size: int) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(size)


def _set_dcd_frames(path: Path, n_frames: int, first_step: int, interval: int) -> None:
    """Rewrite the frame count (and last step) in a DCD header after truncating it to ``n_frames``."""
    with open(path, "r+b") as fh:
        fh.seek(8)
        fh.write(struct.pack("<i", int(n_frames)))
        fh.seek(20)
        fh.write(struct.pack("<i", int(first_step + max(n_frames - 1, 0) * interval)))


#: Force evaluations before the first step of a context. TorchScript optimises a module after its first calls,
#: and the optimised graph rounds differently in the last bits (measured: 2e-6 kJ/mol/nm on the first call, then
#: identical); warming every context up the same way makes a resumed replica continue bit for bit.
WARM_UP_CALLS = 3


def _warm_up(ctx) -> None:
    for _ in range(WARM_UP_CALLS):
        ctx.getState(getForces=True)


def _run_replica(k, system, topology, data, start, types, threshold, out, *, steps, timestep, friction, temperature,
                 kt, report_interval, ckpt_reports, platform, seed, progress) -> dict:
    state_path = _state_path(out, k)
    saved = json.loads(state_path.read_text()) if state_path.is_file() else None
    dcd_path, csv_path = out / f"replica_{k}.dcd", out / f"replica_{k}_energy.csv"
    if saved is not None and saved.get("finished"):
        if dcd_path.is_file() and csv_path.is_file():
            return saved["record"]
        if progress:
            note(f"replica {k}: finished before, but its trajectory or energies are gone; running it again")
        saved = None
    rseed = seeds.openmm_seed(seed, k)
    integrator = openmm.LangevinMiddleIntegrator(temperature * u.kelvin, friction / u.picosecond, timestep * u.picosecond)
    integrator.setRandomNumberSeed(rseed)
    ctx = openmm.Context(system, integrator) if platform is None else openmm.Context(system, integrator, platform)
    box = None if data.box is None else np.asarray(data.box[start], dtype=np.float64)
    n = data.n_beads
    dof = degrees_of_freedom(system)
    t_factor = runaway_temperature_factor(dof)
    if saved is not None and dcd_path.is_file() and csv_path.is_file():
        if saved["record"]["platform"] != ctx.getPlatform().getName():
            raise ValueError(
                f"replica {k} in {out} started on the {saved['record']['platform']} platform and cannot resume on "
                f"{ctx.getPlatform().getName()} (OpenMM checkpoints are platform-specific); pass that platform, "
                "or start over with resume=False (cgkd simulate --no-resume)")
        ctx.loadCheckpoint(base64.b64decode(saved["checkpoint"]))
        _warm_up(ctx)
        record, done, wall0 = saved["record"], int(saved["steps_done"]), float(saved["wall_s"])
        _truncate(dcd_path, int(saved["dcd_bytes"]))
        _truncate(csv_path, int(saved["csv_bytes"]))
        _set_dcd_frames(dcd_path, done // report_interval, 0, report_interval)
        e0 = record["initial_energy_kJ_mol"]
        state = ctx.getState(getPositions=True)
        record["resumed"] = True
        if progress:
            note(f"replica {k}: resuming from {state_path.name} at step {done} of {steps}")
        append = True
    else:
        if box is not None:
            ctx.setPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
        ctx.setPositions(data.positions[start].astype(np.float64) * u.nanometer)
        ctx.setVelocitiesToTemperature(temperature * u.kelvin, rseed)
        _warm_up(ctx)
        state = ctx.getState(getEnergy=True, getPositions=True)
        e0 = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
        record = {"replica": k, "start_frame": start, "seed": seed, "openmm_seed": rseed,
                  "platform": ctx.getPlatform().getName(), "initial_energy_kJ_mol": e0, "survived": True,
                  "failure": None, "time_to_failure_ps": None}
        done, wall0, append = 0, 0.0, False
    last_good = state.getPositions(asNumpy=True).value_in_unit(u.nanometer)
    # bead pairs below the collapse threshold and for how many checks in a row (kept across a resume)
    close: dict = {(int(a), int(b)): int(c) for a, b, c in saved.get("close", [])} if append else {}
    t0 = time.perf_counter()
    with open(dcd_path, "r+b" if append else "wb") as dcd_fh, open(csv_path, "a" if append else "w", newline="") as csv_fh:
        dcd = app.DCDFile(dcd_fh, topology, timestep * u.picosecond, 0, report_interval, append=append)
        writer = csv.writer(csv_fh)
        if not append:
            writer.writerow(["step", "time_ps", "potential_kJ_mol", "kinetic_kJ_mol", "temperature_K"])

        def checkpoint(finished: bool) -> None:
            dcd_fh.flush()
            csv_fh.flush()
            rec = dict(record, steps_done=done, wall_s=wall0 + time.perf_counter() - t0)
            payload = {"steps_done": done, "wall_s": rec["wall_s"], "dcd_bytes": dcd_fh.tell(),
                       "csv_bytes": csv_fh.tell(), "record": rec, "finished": finished,
                       "close": [[a, b, c] for (a, b), c in close.items()],
                       "checkpoint": None if finished else base64.b64encode(ctx.createCheckpoint()).decode()}
            write_text(state_path, json.dumps(payload))

        bar = progress_bar(steps, f"replica {k}", unit="step", initial=done, enabled=progress, leave=False)
        if not np.isfinite(e0):
            record.update(survived=False, failure="non-finite potential energy at the start frame", time_to_failure_ps=0.0)
        elif not append:
            checkpoint(False)
        reports = 0
        while record["survived"] and done < steps:
            chunk = min(report_interval, steps - done)
            try:
                integrator.step(chunk)
            except openmm.OpenMMException as exc:  # e.g. "Particle coordinate is NaN"
                record.update(survived=False, failure=f"OpenMM error: {exc}", time_to_failure_ps=(done + chunk) * timestep)
                break
            state = ctx.getState(getEnergy=True, getPositions=True, getForces=True)
            pos = state.getPositions(asNumpy=True).value_in_unit(u.nanometer)
            epot = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
            ekin = state.getKineticEnergy().value_in_unit(u.kilojoule_per_mole)
            forces = state.getForces(asNumpy=True).value_in_unit(units.FORCE)
            cur_box = None if box is None else state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer)
            reason = _check(epot, forces, pos, cur_box, types, threshold, e0, n, kt, close)
            t_inst = 2 * ekin / (dof * units.KB)
            if reason is None and t_inst > t_factor * temperature:
                reason = f"runaway temperature ({t_inst:.0f} K, {t_inst / temperature:.1f} x the thermostat's)"
            if reason is not None:
                record.update(survived=False, failure=reason, time_to_failure_ps=(done + chunk) * timestep)
                break
            done += chunk
            bar.update(chunk)
            last_good = pos
            dcd.writeModel(pos * u.nanometer, periodicBoxVectors=None if cur_box is None else cur_box * u.nanometer)
            writer.writerow([done, done * timestep, epot, ekin, t_inst])
            reports += 1
            if reports % ckpt_reports == 0 and done < steps:
                checkpoint(False)
        bar.close()
        wall = wall0 + time.perf_counter() - t0
        with atomic_path(out / f"replica_{k}_last_good.pdb", suffix=".pdb") as tmp, open(tmp, "w") as fh:
            good = np.asarray(last_good, dtype=np.float64)
            if box is not None and np.abs(good).max() > 999.0:  # beyond PDB's field width: wrap into the box
                frac = good @ np.linalg.inv(np.asarray(box, dtype=np.float64))
                good = (frac - np.floor(frac)) @ np.asarray(box, dtype=np.float64)
            app.PDBFile.writeFile(topology, good * u.nanometer, fh)
        record.update(
            steps_done=done,
            simulated_ps=done * timestep,
            wall_s=wall,
            steps_per_s=done / wall if wall > 0 else None,
            ns_per_day=done * timestep * 1e-3 / wall * 86400.0 if wall > 0 else None,
            trajectory=dcd_path.name,
            energies=csv_path.name,
        )
        checkpoint(True)
    del ctx, integrator
    return record
