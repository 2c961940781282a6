"""Geometry of particles in a (possibly periodic) box: the one numpy home for minimum images and internal coordinates.

Every layer that measures a distance, an angle or a dihedral uses these functions (the torch twins
used inside models are in :mod:`cgkd.nn.geometry`, tested to agree):

- :func:`minimum_image` for orthorhombic and triclinic boxes. A box is a (3, 3) array whose rows are
  the box vectors a, b, c (nm). A box in OpenMM's reduced form (``a = (ax, 0, 0)``,
  ``b = (bx, by, 0)``, ``c = (cx, cy, cz)``, the form OpenMM, mdtraj and DCD files use) is reduced the
  way OpenMM does: subtract c, then b, then a, each rounded along its own axis. That is the true
  minimum image for vectors shorter than half the smallest box height. Any other box is reduced
  by rounding fractional coordinates.
- :func:`distances`, :func:`angles` and :func:`dihedrals` of index tuples. Dihedrals follow the
  IUPAC/IUB convention that OpenMM's ``PeriodicTorsionForce`` uses: looking along j -> k, the angle
  from the i-j bond to the k-l bond, positive clockwise, in (-pi, pi].

No torch here (layer ``units``/``geometry``: numpy only).
"""

from __future__ import annotations

from typing import Optional

import numpy as np


def _broadcast_box(box: np.ndarray, lead: tuple) -> np.ndarray:
    """Box (3, 3) or (F, 3, 3) with leading dims matching ``lead[:1]``, reshaped to broadcast over ``lead + (3,)``."""
    if box.shape[-2:] != (3, 3):
        raise ValueError(f"box must have shape (3, 3) or (n_frames, 3, 3) (rows are box vectors, nm), got {box.shape}")
    extra = box.ndim - 2
    if extra > len(lead) or box.shape[:-2] != tuple(lead[:extra]):
        raise ValueError(f"box with shape {box.shape} does not match vectors with leading shape {tuple(lead)}")
    return box.reshape(box.shape[:-2] + (1,) * (len(lead) - extra) + (3, 3))


def is_reduced(box: np.ndarray) -> np.ndarray:
    """True where ``box`` (..., 3, 3) is in OpenMM's reduced (lower-triangular) form."""
    box = np.asarray(box)
    return (box[..., 0, 1] == 0) & (box[..., 0, 2] == 0) & (box[..., 1, 2] == 0)


def minimum_image(d, box: Optional[np.ndarray]) -> np.ndarray:
    """Difference vectors shifted by lattice vectors to their minimum image.

    Parameters
    ----------
    d : np.ndarray, shape=(..., 3), float, nm
        Difference vectors.
    box : np.ndarray or None, shape=(3, 3) or (n_frames, 3, 3), float, nm
        Box vectors as rows; one box for all vectors, or one per frame when ``d`` has shape
        (n_frames, ..., 3). None: no periodicity, ``d`` is returned as float64.

    Returns
    -------
    np.ndarray, shape like ``d``, float64, nm
    """
    d = np.asarray(d, dtype=np.float64)
    if box is None:
        return d.copy()
    box = _broadcast_box(np.asarray(box, dtype=np.float64), d.shape[:-1])
    reduced = is_reduced(box)
    out = d.copy()
    if np.any(reduced):
        seq = d.copy()
        for k in (2, 1, 0):
            n = np.round(seq[..., k] / box[..., k, k])
            seq = seq - n[..., None] * box[..., k, :]
        out = np.where(reduced[..., None], seq, out)
    if not np.all(reduced):
        frac = np.einsum("...i,...ij->...j", d, np.linalg.inv(np.where(reduced[..., None, None], np.eye(3), box)))
        shifted = d - np.einsum("...i,...ij->...j", np.round(frac), box)
        out = np.where(reduced[..., None], out, shifted)
    return out


def _frames(positions) -> np.ndarray:
    x = np.asarray(positions, dtype=np.float64)
    if x.ndim not in (2, 3) or x.shape[-1] != 3:
        raise ValueError(f"positions must have shape (n, 3) or (n_frames, n, 3) nm, got {x.shape}")
    return x


def _tuples(idx, arity: int, n: int, name: str) -> np.ndarray:
    t = np.asarray(idx, dtype=np.int64).reshape(-1, arity)
    if t.size and (t.min() < 0 or t.max() >= n):
        raise ValueError(f"{name} must index particles 0..{n - 1}, got values {t.min()}..{t.max()}")
    return t


def vectors(positions, i, j, box: Optional[np.ndarray] = None) -> np.ndarray:
    """Minimum-image vectors ``x_j - x_i`` (..., T, 3) nm for index arrays ``i``, ``j`` of length T."""
    x = _frames(positions)
    return minimum_image(x[..., np.asarray(j), :] - x[..., np.asarray(i), :], box)


def distances(positions, pairs, box: Optional[np.ndarray] = None) -> np.ndarray:
    """Minimum-image distances of particle pairs.

    Parameters
    ----------
    positions : np.ndarray, shape=(n, 3) or (n_frames, n, 3), nm
    pairs : np.ndarray, shape=(T, 2), int
    box : np.ndarray or None, shape=(3, 3) or (n_frames, 3, 3), nm

    Returns
    -------
    np.ndarray, shape=(T,) or (n_frames, T), float64, nm
    """
    x = _frames(positions)
    p = _tuples(pairs, 2, x.shape[-2], "pairs")
    return np.linalg.norm(vectors(x, p[:, 0], p[:, 1], box), axis=-1)


def angles(positions, triplets, box: Optional[np.ndarray] = None) -> np.ndarray:
    """Angles i-j-k (vertex j) in radians, [0, pi]; shape (T,) or (n_frames, T)."""
    x = _frames(positions)
    t = _tuples(triplets, 3, x.shape[-2], "triplets")
    a = vectors(x, t[:, 1], t[:, 0], box)
    b = vectors(x, t[:, 1], t[:, 2], box)
    cos = (a * b).sum(-1) / np.sqrt((a * a).sum(-1) * (b * b).sum(-1))
    return np.arccos(np.clip(cos, -1.0, 1.0))


def dihedrals(positions, quadruples, box: Optional[np.ndarray] = None) -> np.ndarray:
    """IUPAC dihedrals i-j-k-l (the sign OpenMM uses) in radians, (-pi, pi]; shape (T,) or (n_frames, T).

    ``phi = atan2(|b2| b1 . (b2 x b3), (b1 x b2) . (b2 x b3))`` with ``b1 = x_j - x_i``,
    ``b2 = x_k - x_j``, ``b3 = x_l - x_k`` (minimum images). A cis arrangement gives 0, trans pi.
    """
    x = _frames(positions)
    q = _tuples(quadruples, 4, x.shape[-2], "quadruples")
    b1 = vectors(x, q[:, 0], q[:, 1], box)
    b2 = vectors(x, q[:, 1], q[:, 2], box)
    b3 = vectors(x, q[:, 2], q[:, 3], box)
    n1 = np.cross(b1, b2)
    n2 = np.cross(b2, b3)
    y = np.linalg.norm(b2, axis=-1) * (b1 * n2).sum(-1)
    return np.arctan2(y, (n1 * n2).sum(-1))


def pair_distances(positions, box: Optional[np.ndarray] = None) -> np.ndarray:
    """All i < j minimum-image distances of one frame (n, 3) nm, in ``np.triu_indices(n, 1)`` order; (n(n-1)/2,)."""
    x = _frames(positions)
    if x.ndim != 2:
        raise ValueError(f"positions must be one frame of shape (n, 3), got {x.shape}")
    i, j = np.triu_indices(len(x), k=1)
    return np.linalg.norm(minimum_image(x[j] - x[i], box), axis=-1)


def box_heights(box) -> np.ndarray:
    """Distances between opposite faces of box (3, 3) or boxes (F, 3, 3), nm; shape (3,) or (F, 3).

    A minimum image is unique for vectors shorter than half the smallest height, and a pair cutoff must stay
    below it.
    """
    box = np.asarray(box, dtype=np.float64)
    vol = np.abs(np.linalg.det(box))
    return np.stack([vol / np.linalg.norm(np.cross(box[..., (k + 1) % 3, :], box[..., (k + 2) % 3, :]), axis=-1)
                     for k in range(3)], axis=-1)


def box_volume(box) -> np.ndarray:
    """|det(box)| in nm^3 for box (3, 3) or (F, 3, 3)."""
    return np.abs(np.linalg.det(np.asarray(box, dtype=np.float64)))


__all__ = ["angles", "box_heights", "box_volume", "dihedrals", "distances", "is_reduced", "minimum_image", "pair_distances", "vectors"]
