"""Angular (ADF) and combined distance-angle (CDF) distributions of neighbour triplets.

For every central bead j and every pair of its neighbours i, k (minimum-image distance to j below
``cutoff``), the angle i-j-k is collected per type triplet ``(t_i, t_j, t_k)`` with ``t_i <= t_k``.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from cgkd import geometry
from cgkd.analysis.frames import Frames


def triplet_name(type_names, key: Tuple[int, int, int]) -> str:
    return "-".join(type_names[t] for t in key)


def _triplets(frames: Frames, cutoff: float):
    """Yield (key, r_ij (nm), angle (deg)) arrays per frame and type triplet."""
    if not cutoff > 0:
        raise ValueError(f"cutoff must be positive (nm), got {cutoff}")
    types = frames.types
    n = len(types)
    for f in range(frames.n_frames):
        box = None if frames.box is None else frames.box[f]
        pos = frames.positions[f]
        out: Dict[tuple, list] = {}
        for j in range(n):
            d = geometry.minimum_image(pos - pos[j], box)
            r = np.linalg.norm(d, axis=1)
            nb = np.flatnonzero((r < cutoff) & (np.arange(n) != j))
            if len(nb) < 2:
                continue
            a, b = np.triu_indices(len(nb), k=1)
            v = d[nb]
            cos = np.einsum("ij,ij->i", v[a], v[b]) / (r[nb][a] * r[nb][b])
            ang = np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
            ti, tk = types[nb][a], types[nb][b]
            lo, hi = np.minimum(ti, tk), np.maximum(ti, tk)
            # r_ij: distance from the centre to the neighbour of the lower type (either one for equal types)
            r_low = np.where(ti <= tk, r[nb][a], r[nb][b])
            for key in set(zip(lo.tolist(), hi.tolist())):
                m = (lo == key[0]) & (hi == key[1])
                out.setdefault((key[0], int(types[j]), key[1]), []).append((r_low[m], ang[m]))
        yield out


def adf(frames: Frames, cutoff: float, n_bins: int = 90) -> Tuple[np.ndarray, Dict[tuple, np.ndarray]]:
    """Angle distributions per type triplet.

    Returns
    -------
    theta : np.ndarray, shape=(n_bins,), degrees
        Bin centres on [0, 180].
    p : dict (t_i, t_j, t_k) -> np.ndarray, shape=(n_bins,)
        Probability density in 1/degree (integrates to 1).
    """
    edges = np.linspace(0.0, 180.0, n_bins + 1)
    hist: Dict[tuple, np.ndarray] = {}
    for per_frame in _triplets(frames, cutoff):
        for key, chunks in per_frame.items():
            h = hist.setdefault(key, np.zeros(n_bins))
            for _, ang in chunks:
                h += np.histogram(ang, bins=edges)[0]
    width = edges[1] - edges[0]
    return 0.5 * (edges[1:] + edges[:-1]), {k: h / (h.sum() * width) for k, h in sorted(hist.items()) if h.sum() > 0}


def cdf(frames: Frames, cutoff: float, n_r: int = 30, n_theta: int = 36):
    """Combined distribution: joint histogram of r_ij (centre to first neighbour) and angle i-j-k.

    Returns
    -------
    r : np.ndarray, shape=(n_r,), nm
    theta : np.ndarray, shape=(n_theta,), degrees
    p : dict (t_i, t_j, t_k) -> np.ndarray, shape=(n_r, n_theta)
        Joint probability density in 1/(nm degree) (integrates to 1).
    """
    r_edges = np.linspace(0.0, cutoff, n_r + 1)
    t_edges = np.linspace(0.0, 180.0, n_theta + 1)
    hist: Dict[tuple, np.ndarray] = {}
    for per_frame in _triplets(frames, cutoff):
        for key, chunks in per_frame.items():
            h = hist.setdefault(key, np.zeros((n_r, n_theta)))
            for r, ang in chunks:
                h += np.histogram2d(r, ang, bins=(r_edges, t_edges))[0]
    area = (r_edges[1] - r_edges[0]) * (t_edges[1] - t_edges[0])
    return (0.5 * (r_edges[1:] + r_edges[:-1]), 0.5 * (t_edges[1:] + t_edges[:-1]),
            {k: h / (h.sum() * area) for k, h in sorted(hist.items()) if h.sum() > 0})
