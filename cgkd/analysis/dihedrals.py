"""Backbone dihedrals of molecules: Ramachandran free-energy surfaces, their divergence, and basin dynamics.

Named dihedrals (``phi``, ``psi``) are bead quadruples declared by a mapping (``MappingSpec.dihedrals``) and
stored in the CG dataset's ``attrs["named_dihedrals"]``. Angles are in degrees on [-180, 180), with the
IUPAC sign (``cgkd.geometry.dihedrals``, the one OpenMM uses).

Basins (for the time-lagged check) are the usual coarse Ramachandran regions of alanine dipeptide:

- ``alpha_R``: phi < 0 and -120 <= psi < 50 (right-handed helix region);
- ``beta``: phi < 0 and the other psi (extended, polyproline II and C7eq);
- ``alpha_L``: phi >= 0 (left-handed region and C7ax).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from cgkd import geometry
from cgkd.analysis.metrics import jensen_shannon
from cgkd.units import kbt

BASINS = ("alpha_R", "beta", "alpha_L")


def dihedral_series(frames, quadruples) -> np.ndarray:
    """Dihedrals of every frame, shape=(n_frames, n_quadruples), float64, degrees in [-180, 180).

    Parameters
    ----------
    frames : cgkd.analysis.frames.Frames
    quadruples : array-like, shape=(n, 4), int
    """
    q = np.asarray(quadruples, dtype=np.int64).reshape(-1, 4)
    phi = np.degrees(geometry.dihedrals(frames.positions, q, frames.box))
    return (phi + 180.0) % 360.0 - 180.0


def ramachandran(phi: np.ndarray, psi: np.ndarray, n_bins: int = 36) -> np.ndarray:
    """Joint probability of (phi, psi) on an ``n_bins`` x ``n_bins`` grid over [-180, 180)^2, summing to 1.

    Parameters
    ----------
    phi, psi : np.ndarray, degrees, same shape (pooled over frames and molecules)

    Returns
    -------
    np.ndarray, shape=(n_bins, n_bins), float64; rows are phi bins, columns psi bins
    """
    edges = np.linspace(-180.0, 180.0, n_bins + 1)
    h, _, _ = np.histogram2d(np.ravel(phi), np.ravel(psi), bins=[edges, edges])
    total = h.sum()
    return h / total if total > 0 else h


def free_energy(p: np.ndarray, temperature: float) -> np.ndarray:
    """``-k_B T ln p`` in kJ/mol with its minimum at 0; NaN where ``p`` is 0."""
    with np.errstate(divide="ignore"):
        f = -kbt(temperature) * np.log(p)
    f[~np.isfinite(f)] = np.nan
    return f - np.nanmin(f) if np.isfinite(f).any() else f


def kl_divergence(p: np.ndarray, q: np.ndarray, pseudo: float = 1e-6) -> float:
    """KL(p || q) in nats, with ``pseudo`` added to every bin of both (so empty CG bins give a finite value)."""
    p = np.ravel(p).astype(np.float64) + pseudo
    q = np.ravel(q).astype(np.float64) + pseudo
    p, q = p / p.sum(), q / q.sum()
    return float(np.sum(p * np.log(p / q)))


def basin_of(phi: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """Basin index (into :data:`BASINS`) of each (phi, psi) pair, degrees; same shape, int64."""
    phi, psi = np.asarray(phi), np.asarray(psi)
    out = np.where((psi >= -120.0) & (psi < 50.0), 0, 1)
    return np.where(phi >= 0.0, 2, out).astype(np.int64)


def basin_dynamics(segments: Sequence, phi_q, psi_q) -> dict:
    """Basin populations and how fast they exchange, from continuous trajectories.

    Parameters
    ----------
    segments : sequence of Frames
        Continuous trajectories (CG MD replicas, or the AA run); each needs ``dt`` for rates.
    phi_q, psi_q : array-like, shape=(n, 4), int
        Quadruples of the two dihedrals (one per molecule).

    Returns
    -------
    dict
        ``populations`` (basin -> fraction), ``transitions_per_ns`` (changes of basin per molecule and ns,
        None without ``dt``), ``dwell_ps`` (basin -> mean residence time, ps, None without visits or ``dt``),
        ``time_ns`` (simulated time analysed, per molecule).
    """
    counts = np.zeros(len(BASINS))
    changes, time_ps = 0, 0.0
    dwell: Dict[int, List[float]] = {k: [] for k in range(len(BASINS))}
    timed = True
    for seg in segments:
        b = basin_of(dihedral_series(seg, phi_q), dihedral_series(seg, psi_q))  # (F, n_mol)
        counts += np.bincount(b.ravel(), minlength=len(BASINS))
        if seg.dt is None or seg.n_frames < 2:
            timed = False
            continue
        time_ps += (seg.n_frames - 1) * seg.dt * b.shape[1]
        for col in b.T:
            cut = np.flatnonzero(np.diff(col)) + 1
            changes += cut.size
            starts = np.concatenate([[0], cut])
            ends = np.concatenate([cut, [col.size]])
            for s, e in zip(starts[1:-1], ends[1:-1]):  # complete visits only (both ends observed)
                dwell[int(col[s])].append((e - s) * seg.dt)
    total = counts.sum()
    pops = {name: (float(counts[k] / total) if total else None) for k, name in enumerate(BASINS)}
    rate = changes / (time_ps / 1000.0) if timed and time_ps > 0 else None
    return {"populations": pops, "transitions_per_ns": rate,
            "dwell_ps": {name: (float(np.mean(dwell[k])) if timed and dwell[k] else None)
                         for k, name in enumerate(BASINS)},
            "time_ns": time_ps / 1000.0 if timed else None}


def phi_psi_names(named: Dict[str, object]) -> Optional[tuple]:
    """The two dihedral names that make the Ramachandran plane: ``phi``/``psi`` if present, else the first two."""
    if not named or len(named) < 2:
        return None
    if "phi" in named and "psi" in named:
        return "phi", "psi"
    keys = list(named)
    return keys[0], keys[1]


__all__ = ["BASINS", "basin_dynamics", "basin_of", "dihedral_series", "free_energy", "kl_divergence",
           "phi_psi_names", "ramachandran"]
