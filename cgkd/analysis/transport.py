"""Density, mean-squared displacement and Einstein diffusion coefficients."""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from cgkd import geometry, units
from cgkd.analysis.frames import Frames


def density(frames: Frames) -> np.ndarray:
    """Mass density per frame, g/cm^3; shape (F,)."""
    if frames.box is None:
        raise ValueError("density needs a periodic trajectory (frames.box is None)")
    vol = geometry.box_volume(frames.box)
    return frames.masses.sum() / vol * units.AMU_PER_NM3_TO_G_PER_CM3


def unwrap(frames: Frames) -> np.ndarray:
    """Positions (F, N, 3) nm made continuous by removing box jumps between consecutive frames.

    A bead that moves more than half a box vector between two frames is taken to have crossed
    the boundary (frames must be close enough in time for that to be true).
    """
    pos = frames.positions
    if frames.box is None or frames.n_frames < 2:
        return pos.copy()
    d = geometry.minimum_image(np.diff(pos, axis=0), frames.box[1:])
    return np.concatenate([pos[:1], pos[:1] + np.cumsum(d, axis=0)])


def msd(frames: Frames, max_lag: Optional[int] = None) -> Tuple[np.ndarray, Dict[int, np.ndarray]]:
    """MSD per bead type, averaged over all time origins.

    Returns
    -------
    t : np.ndarray, shape=(L,), ps
        Lag times 0, dt, ..., (L-1) dt.
    msd : dict type index -> np.ndarray, shape=(L,), nm^2
    """
    if frames.dt is None:
        raise ValueError("msd needs the time between frames (frames.dt is None)")
    x = unwrap(frames)
    n_lags = frames.n_frames if max_lag is None else min(frames.n_frames, int(max_lag) + 1)
    out = {}
    for t in np.unique(frames.types):
        xt = x[:, frames.types == t]
        m = np.zeros(n_lags)
        for lag in range(1, n_lags):
            m[lag] = np.mean(np.sum((xt[lag:] - xt[:-lag]) ** 2, axis=-1))
        out[int(t)] = m
    return np.arange(n_lags) * frames.dt, out


def diffusion_coefficient(t: np.ndarray, msd_values: np.ndarray, window: Sequence[float] = (0.2, 0.8)) -> float:
    """Einstein D = slope / 6 (nm^2/ps) of a straight-line fit of MSD(t) over a window of lag times.

    ``window`` gives the fit's start and end as fractions of the longest lag (default 20-80 %: the
    short-time ballistic part and the poorly averaged long lags are left out).
    """
    lo, hi = window
    if not 0 <= lo < hi <= 1:
        raise ValueError(f"window must be two fractions 0 <= start < end <= 1, got {window}")
    sel = (t >= lo * t[-1]) & (t <= hi * t[-1])
    if sel.sum() < 2:
        raise ValueError(f"the fit window {window} holds {sel.sum()} lag times; need at least 2 (longer trajectory)")
    slope = np.polyfit(t[sel], msd_values[sel], 1)[0]
    return float(slope / 6.0)
