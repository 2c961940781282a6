"""Radial distribution functions per bead-type pair (normalised as mdtraj.compute_rdf)."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from cgkd import geometry
from cgkd.analysis.frames import Frames


def default_r_max(frames: Frames, limit: float = 1.5) -> float:
    """Half the smallest box height over the frames (nm; the edge length for an orthorhombic box), at most ``limit``."""
    if frames.box is None:
        return limit
    return float(min(limit, 0.5 * geometry.box_heights(frames.box).min()))


def pair_indices(types: np.ndarray, a: int, b: int) -> Tuple[np.ndarray, np.ndarray]:
    """Index pairs (i of type a, j of type b), each unordered pair once, i != j."""
    ia, ib = np.flatnonzero(types == a), np.flatnonzero(types == b)
    if a == b:
        i, j = np.triu_indices(len(ia), k=1)
        return ia[i], ia[j]
    i, j = np.meshgrid(ia, ib, indexing="ij")
    return i.ravel(), j.ravel()


def rdf(frames: Frames, a: int, b: int, r_max: Optional[float] = None, n_bins: int = 100,
        r_min: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
    """g(r) between bead types ``a`` and ``b`` (periodic, minimum image).

    ``g = sum_f hist_f / (n_pairs * V_shell * sum_f 1/V_f)``, the normalisation of
    ``mdtraj.compute_rdf``: g -> 1 at large r in an ideal gas.

    Returns
    -------
    r : np.ndarray, shape=(n_bins,), nm
        Bin centres.
    g : np.ndarray, shape=(n_bins,), float64
    """
    if frames.box is None:
        raise ValueError("rdf needs a periodic trajectory (frames.box is None)")
    r_max = default_r_max(frames) if r_max is None else float(r_max)
    if not r_max > r_min:
        raise ValueError(f"r_max must exceed r_min ({r_min} nm), got {r_max}")
    half = 0.5 * geometry.box_heights(frames.box).min()
    if r_max > half + 1e-9:
        raise ValueError(f"r_max must be at most half the smallest box height ({half:.4f} nm), where the minimum "
                         f"image is unique; got {r_max}")
    i, j = pair_indices(frames.types, a, b)
    if len(i) == 0:
        raise ValueError(f"no bead pairs of types {a} and {b}")
    edges = np.linspace(r_min, r_max, n_bins + 1)
    hist = np.zeros(n_bins)
    inv_vol = 0.0
    for f in range(frames.n_frames):
        box = frames.box[f]
        d = geometry.minimum_image(frames.positions[f, j] - frames.positions[f, i], box)
        hist += np.histogram(np.linalg.norm(d, axis=1), bins=edges)[0]
        inv_vol += 1.0 / geometry.box_volume(box)
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    return 0.5 * (edges[1:] + edges[:-1]), hist / (len(i) * shell * inv_vol)


def first_minimum(r: np.ndarray, g: np.ndarray, smooth: float = 0.075) -> float:
    """Position (nm) of the first minimum of g after its highest peak (the first coordination shell).

    ``g`` is first smoothed by a running mean over ``smooth`` nm (at least 3 bins): with a few hundred beads
    and 100 frames, a 3-bin mean still left noise dips right after the peak, so the ADF cutoff taken from
    the reline quick data jumped between 0.49 and 0.67 nm from one AA run to the next (0.73-0.74 nm with
    this window).
    """
    dr = float(r[1] - r[0]) if len(r) > 1 else smooth
    width = max(3, int(round(smooth / dr)) | 1)
    g = np.convolve(g, np.ones(width) / width, mode="same")
    peak = int(np.argmax(g))
    after = g[peak:]
    # first local minimum after the peak; fall back to the global minimum after it
    for k in range(1, len(after) - 1):
        if after[k] <= after[k - 1] and after[k] < after[k + 1]:
            return float(r[peak + k])
    return float(r[peak + int(np.argmin(after))])
