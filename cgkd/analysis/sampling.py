"""How much a trajectory samples: autocorrelation times and effective numbers of independent samples.

A force-matching or distillation data set of F frames holds far fewer independent configurations when
the frames are closer in time than the liquid's relaxation. :func:`sampling_report` measures two clocks
on a trajectory with frames ``dt`` apart:

- the **potential energy**: its integrated autocorrelation time ``tau_E`` (Sokal's automatic window,
  ``M >= 5 tau``), in frames and ps; ``n_eff_energy = F / g`` with the statistical inefficiency
  ``g = 1 + 2 tau_E / dt``;
- the **structure**: the self-intermediate scattering function of the molecules' centres of mass,
  ``F_s(k, t) = < sin(k |dr|) / (k |dr|) >`` at ``k = 2 pi / a`` (``a = (V / N)^(1/3)``, the mean
  spacing of molecules), whose 1/e time ``tau_alpha`` is the structural (alpha) relaxation time;
  ``n_eff_structure = T / (2 tau_alpha)`` for a run of length T (for an exponential decay this is
  T over the statistical inefficiency), and a lower bound on ``tau_alpha`` (so an upper bound on
  ``n_eff_structure``) when ``F_s`` stays above 1/e over the longest lag measured (half the run).

It also reports the root-mean-square displacement of the molecules over half the run against ``a``:
below ``a`` molecules have not left their neighbour cages, and the structure was sampled around one
arrangement.

:func:`molecule_frames` gives the molecules' centres of mass of an AA trajectory (one molecule per
residue). The report's ``warnings`` say in words what is too short.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from cgkd.analysis.frames import Frames
from cgkd.analysis.transport import unwrap
from cgkd.topology import Topology

#: Fewer frames than this are not analysed (the report says so).
MIN_FRAMES = 8
#: Fewer effective structural samples than this draw a warning.
MIN_EFFECTIVE_SAMPLES = 50
#: Sokal's window constant: the sum of the autocorrelation function stops at the first lag M >= C * tau(M).
SOKAL_C = 5.0
#: A series shorter than this many autocorrelation times gives no trustworthy estimate (emcee's rule of thumb):
#: the mean-subtracted autocorrelation of a short, slow series decays early and underestimates tau.
RELIABLE_LENGTH = 50.0


def integrated_autocorrelation_time(x, c: float = SOKAL_C) -> float:
    """Integrated autocorrelation time of the series ``x``, in frames (0 for an uncorrelated series).

    ``tau = sum_{t=1}^{M} rho(t)`` with the normalised autocorrelation ``rho`` (FFT, all time origins) and
    Sokal's automatic window ``M``; the statistical inefficiency is ``1 + 2 tau``. Returns ``inf`` when the
    window does not close within the series, or when the series is shorter than ``RELIABLE_LENGTH`` times the
    estimate (then the estimate is biased low: the true time is longer than the series can show).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or len(x) < 4:
        raise ValueError(f"x must be a 1-D series of at least 4 values, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("x must be finite")
    x = x - x.mean()
    n = len(x)
    var = float(np.dot(x, x) / n)
    if var == 0:
        return 0.0
    f = np.fft.rfft(x, 2 * n)
    acf = np.fft.irfft(f * np.conj(f))[:n] / (n - np.arange(n)) / var
    tau = 0.0
    for m in range(1, n // 2):
        tau += acf[m]
        if m >= c * max(tau, 0.0) and m > 1:
            tau = max(tau, 0.0)
            return tau if n >= RELIABLE_LENGTH * tau else float("inf")
    return float("inf")


def molecule_frames(aa, max_frames: Optional[int] = None) -> Frames:
    """Centres of mass of the molecules (one per residue) of an AA trajectory (``cgkd.io.aa_h5.AAData``).

    Positions must have whole molecules (cgkd AA files are wrapped per molecule); the box comes with them.
    """
    residues = list(aa.topology.residues())
    index = np.zeros(aa.n_atoms, dtype=np.int64)
    names = []
    for k, res in enumerate(residues):
        for atom in res.atoms():
            index[atom.index] = k
        names.append(res.name)
    n_mol = len(residues)
    w = np.zeros((n_mol, aa.n_atoms))
    w[index, np.arange(aa.n_atoms)] = aa.masses
    mol_mass = w.sum(1)
    w /= mol_mass[:, None]
    sel = slice(None)
    if max_frames is not None and aa.n_frames > max_frames:
        sel = slice(None, None, int(np.ceil(aa.n_frames / max_frames)))
    pos = np.einsum("ma,fad->fmd", w, aa.positions[sel].astype(np.float64))
    kinds = sorted(set(names))
    top = Topology(kinds, np.array([kinds.index(n) for n in names]), mol_mass, names, np.arange(n_mol), names)
    times = aa.time[sel]
    dt = float(np.median(np.diff(times))) if len(times) > 1 else None
    return Frames(pos, None if aa.box is None else aa.box[sel], top, dt)


def self_intermediate_scattering(frames: Frames, k: float, lags, max_origins: int = 200) -> np.ndarray:
    """``F_s(k, t)`` of the beads of ``frames`` (unwrapped, all types), isotropic average, at frame lags ``lags``.

    Parameters
    ----------
    frames : Frames
    k : float, 1/nm
    lags : sequence of int
        Lags in frames (each < ``frames.n_frames``).
    max_origins : int
        Time origins per lag, evenly spread (all when fewer).

    Returns
    -------
    np.ndarray, shape=(len(lags),)
    """
    x = unwrap(frames)
    out = np.empty(len(lags))
    for i, lag in enumerate(lags):
        lag = int(lag)
        n0 = frames.n_frames - lag
        if lag < 0 or n0 < 1:
            raise ValueError(f"lag {lag} must lie in 0..{frames.n_frames - 1}")
        origins = np.unique(np.linspace(0, n0 - 1, min(max_origins, n0)).astype(int))
        r = np.linalg.norm(x[origins + lag] - x[origins], axis=-1)
        out[i] = float(np.mean(np.sinc(k * r / np.pi)))  # np.sinc(z) = sin(pi z) / (pi z)
    return out


def sampling_report(frames: Frames, potential_energy=None, min_effective: int = MIN_EFFECTIVE_SAMPLES) -> dict:
    """Autocorrelation times and effective sample sizes of a trajectory (see the module docstring).

    Parameters
    ----------
    frames : Frames
        Molecule centres (:func:`molecule_frames`) or CG beads, with ``dt``; periodic for the structural clock.
    potential_energy : np.ndarray, shape=(F,), kJ/mol, optional
        Skipped when absent or not finite.
    min_effective : int
        Fewer effective structural samples than this add a warning.

    Returns
    -------
    dict
        ``frames``, ``dt_ps``, ``length_ps``, ``tau_energy_ps``, ``n_eff_energy``, ``k_per_nm``, ``spacing_nm``,
        ``fs_t_ps`` and ``fs`` (the F_s curve), ``tau_alpha_ps`` (None when it did not decay to 1/e),
        ``tau_alpha_lower_bound_ps``, ``n_eff_structure`` (an upper bound when ``tau_alpha`` is one),
        ``rms_displacement_nm`` over half the run, ``warnings`` (list of str).
    """
    if frames.dt is None:
        raise ValueError("sampling_report needs the time between frames (frames.dt)")
    n, dt = frames.n_frames, float(frames.dt)
    length = (n - 1) * dt
    warnings: List[str] = []
    rep = {"frames": n, "dt_ps": dt, "length_ps": length}
    if n < MIN_FRAMES:
        rep.update(tau_energy_ps=None, n_eff_energy=None, k_per_nm=None, spacing_nm=None, fs_t_ps=[], fs=[],
                   tau_alpha_ps=None, tau_alpha_lower_bound_ps=None, n_eff_structure=None, rms_displacement_nm=None,
                   warnings=[f"only {n} frames: too few to measure how much the run samples (need {MIN_FRAMES})"])
        return rep
    e = None if potential_energy is None else np.asarray(potential_energy, dtype=np.float64)
    if e is not None and e.shape == (n,) and np.all(np.isfinite(e)):
        tau = integrated_autocorrelation_time(e)
        rep["tau_energy_ps"] = tau * dt if np.isfinite(tau) else None
        rep["n_eff_energy"] = n / (1.0 + 2.0 * tau) if np.isfinite(tau) else None
        if not np.isfinite(tau):
            warnings.append("the potential energy's autocorrelation does not decay within the run")
    else:
        rep["tau_energy_ps"] = rep["n_eff_energy"] = None
    if frames.box is None:
        rep.update(k_per_nm=None, spacing_nm=None, fs_t_ps=[], fs=[], tau_alpha_ps=None, tau_alpha_lower_bound_ps=None,
                   n_eff_structure=None, rms_displacement_nm=None)
        warnings.append("no box: the structural relaxation was not measured")
        rep["warnings"] = warnings
        return rep
    vol = float(np.mean(np.abs(np.linalg.det(frames.box))))
    spacing = (vol / frames.positions.shape[1]) ** (1.0 / 3.0)
    k = 2.0 * np.pi / spacing
    max_lag = max(1, (n - 1) // 2)
    lags = np.unique(np.concatenate([[0], np.geomspace(1, max_lag, 40).astype(int)]))
    fs = self_intermediate_scattering(frames, k, lags)
    below = np.nonzero(fs < np.exp(-1.0))[0]
    if below.size:
        j = int(below[0])
        # interpolate ln F_s linearly between the last lag above 1/e and the first below
        l0, l1, f0, f1 = lags[j - 1], lags[j], max(fs[j - 1], 1e-12), max(fs[j], 1e-12)
        frac = (np.log(f0) + 1.0) / (np.log(f0) - np.log(f1)) if f0 != f1 else 0.0
        tau_alpha = (l0 + frac * (l1 - l0)) * dt
        lower = None
        n_eff = length / (2.0 * tau_alpha) if tau_alpha > 0 else float(n)
        n_eff = min(n_eff, float(n))
    else:
        tau_alpha, lower = None, max_lag * dt
        n_eff = length / (2.0 * lower)
        warnings.append(
            f"F_s(k={k:.1f}/nm, t) stays above 1/e over {lower:.3g} ps (half the run): the structure relaxes more "
            f"slowly than the run samples it; at most {n_eff:.1f} independent configurations")
    x = unwrap(frames)
    rms = float(np.sqrt(np.mean(np.sum((x[max_lag:] - x[:-max_lag]) ** 2, axis=-1))))
    if rms < spacing:
        warnings.append(f"molecules moved {rms:.3f} nm (RMS over {max_lag * dt:.3g} ps), less than their spacing "
                        f"{spacing:.3f} nm: they have not left their neighbour cages")
    if n_eff < min_effective and below.size:
        warnings.append(f"only about {n_eff:.0f} independent configurations (tau_alpha {tau_alpha:.3g} ps over a "
                        f"{length:.3g} ps run); {min_effective} or more need a run of {2 * min_effective * tau_alpha:.3g} ps")
    rep.update(k_per_nm=k, spacing_nm=spacing, fs_t_ps=(lags * dt).tolist(), fs=fs.tolist(), tau_alpha_ps=tau_alpha,
               tau_alpha_lower_bound_ps=lower, n_eff_structure=n_eff, rms_displacement_nm=rms)
    rep["warnings"] = warnings
    return rep


def dihedral_sampling(series: dict, dt: float, min_effective: int = MIN_EFFECTIVE_SAMPLES) -> dict:
    """Autocorrelation of named dihedrals (degrees, each (F, n)): the slowest of cos and sin of every one.

    Returns ``tau_dihedrals_ps`` (inf when the window does not close), ``n_eff_dihedrals`` (F / (1 + 2 tau)),
    ``slowest_dihedral`` and ``warnings``.
    """
    worst, name = 0.0, None
    n = None
    for key, x in series.items():
        rad = np.radians(np.asarray(x, dtype=np.float64))
        n = rad.shape[0]
        for col in rad.T:
            for f in (np.cos, np.sin):
                tau = integrated_autocorrelation_time(f(col))
                if tau >= worst:
                    worst, name = tau, key
    out = {"tau_dihedrals_ps": None if not np.isfinite(worst) else worst * dt, "n_eff_dihedrals": None,
           "slowest_dihedral": name, "warnings": []}
    if n is None:
        return out
    if np.isfinite(worst):
        out["n_eff_dihedrals"] = n / (1.0 + 2.0 * worst)
        if out["n_eff_dihedrals"] < min_effective:
            out["warnings"].append(f"the dihedral {name} decorrelates in {worst * dt:.3g} ps: only "
                                   f"{out['n_eff_dihedrals']:.0f} independent samples of the backbone (fewer than "
                                   f"{min_effective}); run longer")
    else:
        out["warnings"].append(
            f"the autocorrelation time of the dihedral {name} cannot be resolved: the run is shorter than "
            f"{RELIABLE_LENGTH:.0f} of its autocorrelation times; the basin visits below are the better count")
    return out


def basin_visits(phi, psi, dt: float) -> dict:
    """Backbone basin changes along one molecule's (phi, psi) series (degrees): a count of independent visits.

    Returns ``basin_changes`` and ``basin_visits`` (changes + 1, a rough number of independent samples of the
    basin populations when residence times exceed the frame spacing) and ``visits_per_ns``.
    """
    from cgkd.analysis.dihedrals import basin_of

    b = basin_of(np.ravel(phi), np.ravel(psi))
    changes = int(np.count_nonzero(np.diff(b)))
    length_ns = (len(b) - 1) * dt / 1000.0
    return {"basin_changes": changes, "basin_visits": changes + 1,
            "visits_per_ns": (changes + 1) / length_ns if length_ns > 0 else None}


def aa_sampling_report(aa, max_frames: Optional[int] = 5000, min_effective: int = MIN_EFFECTIVE_SAMPLES) -> dict:
    """:func:`sampling_report` of an AA trajectory: its molecules' centres and its potential energy.

    When the embedded spec's default mapping names dihedrals (a peptide's phi and psi), their
    autocorrelation is reported too (:func:`dihedral_sampling`): for a solute in water that is the clock
    of the CG data, not the water's structure.
    """
    frames = molecule_frames(aa, max_frames=max_frames)
    stride = max(1, int(np.ceil(aa.n_frames / max_frames))) if max_frames else 1
    rep = sampling_report(frames, aa.potential_energy[::stride], min_effective=min_effective)
    spec = getattr(aa, "spec", None)
    if spec is not None and spec.mapping().dihedrals and rep.get("dt_ps") and aa.n_frames >= MIN_FRAMES:
        from cgkd.analysis.dihedrals import dihedral_series
        from cgkd.data.mapped import resolve_mapping

        m = resolve_mapping(aa)
        cg = Frames(m.map_positions(aa.positions[::stride], None if aa.box is None else aa.box[::stride]), None,
                    m.topology(), rep["dt_ps"])
        series = {k: dihedral_series(cg, q) for k, q in m.named_dihedrals.items()}
        dih = dihedral_sampling(series, rep["dt_ps"], min_effective)
        rep["warnings"] = list(rep["warnings"]) + dih.pop("warnings")
        rep.update(dih)
        if "phi" in series and "psi" in series and series["phi"].shape[1] == 1:
            rep.update(basin_visits(series["phi"][:, 0], series["psi"][:, 0], rep["dt_ps"]))
            if rep["basin_visits"] < min_effective:
                rep["warnings"].append(
                    f"the backbone changed basin {rep['basin_changes']} times: about {rep['basin_visits']} independent "
                    f"basin visits, so basin populations carry errors of order 1/sqrt({rep['basin_visits']}); "
                    "run longer for a converged free-energy surface")
    return rep


def format_report(rep: dict) -> str:
    """The report in a few lines of text."""
    def f(v, unit=""):
        return "n/a" if v is None else f"{v:.3g}{unit}"

    lines = [f"{rep['frames']} frames, {rep['dt_ps']:.3g} ps apart ({rep['length_ps']:.4g} ps)"]
    lines.append(f"potential energy: tau {f(rep.get('tau_energy_ps'), ' ps')}, effective samples "
                 f"{f(rep.get('n_eff_energy'))}")
    if rep.get("k_per_nm") is not None:
        tau = f(rep["tau_alpha_ps"], " ps") if rep["tau_alpha_ps"] is not None else f"> {rep['tau_alpha_lower_bound_ps']:.3g} ps"
        bound = "" if rep["tau_alpha_ps"] is not None else "at most "
        lines.append(f"structure (F_s at k = {rep['k_per_nm']:.1f}/nm): tau_alpha {tau}, effective samples "
                     f"{bound}{rep['n_eff_structure']:.3g}; RMS displacement over half the run "
                     f"{rep['rms_displacement_nm']:.3f} nm (spacing {rep['spacing_nm']:.3f} nm)")
    if rep.get("slowest_dihedral") is not None:
        lines.append(f"dihedrals: slowest {rep['slowest_dihedral']}, tau {f(rep.get('tau_dihedrals_ps'), ' ps')}, "
                     f"effective samples {f(rep.get('n_eff_dihedrals'))}"
                     + (f"; {rep['basin_changes']} basin changes ({rep['basin_visits']} visits)"
                        if rep.get("basin_changes") is not None else ""))
    lines += [f"warning: {w}" for w in rep["warnings"]]
    return "\n".join(lines)


__all__ = ["aa_sampling_report", "basin_visits", "dihedral_sampling", "format_report", "integrated_autocorrelation_time", "molecule_frames",
           "sampling_report", "self_intermediate_scattering", "MIN_EFFECTIVE_SAMPLES"]
