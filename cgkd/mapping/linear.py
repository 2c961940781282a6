"""Applying a linear map: one (n_out, n_in) sparse matrix to per-frame vectors, shared by position and force maps."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def apply_matrix(matrix: sp.spmatrix, x: np.ndarray) -> np.ndarray:
    """Apply a (B, A) matrix to every frame of (F, A, 3) vectors.

    Parameters
    ----------
    matrix : scipy.sparse matrix, shape=(B, A), float64
    x : np.ndarray, shape=(F, A, 3)

    Returns
    -------
    np.ndarray, shape=(F, B, 3), float64
    """
    f, a, _ = x.shape
    if a != matrix.shape[1]:
        raise ValueError(f"the map acts on {matrix.shape[1]} atoms but the array has {a}")
    flat = np.ascontiguousarray(np.transpose(np.asarray(x, dtype=np.float64), (1, 0, 2))).reshape(a, f * 3)
    out = matrix @ flat
    return np.ascontiguousarray(np.transpose(np.asarray(out).reshape(-1, f, 3), (1, 0, 2)))


__all__ = ["apply_matrix"]
