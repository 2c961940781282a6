"""Distances between AA and CG distributions.

Both metrics take two histograms on the same bins.

- Total absolute error ``TAE = sum_b |p_b - q_b| dx``. For probability densities (ADF, CDF, bonded)
  each is first normalised to integrate to 1, so TAE lies in [0, 2] (0: identical, 2: disjoint).
  For RDFs g(r) is used as it is (normalised to 1 at large r), so TAE is in nm.
- Jensen-Shannon divergence with base-2 logarithms of the two histograms normalised to sum 1;
  in [0, 1]. For RDFs the weights ``r^2 g(r)`` (pair-count distributions) are compared.
"""

from __future__ import annotations

import numpy as np


def _check(p, q):
    p, q = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"distributions must share their bins, got shapes {p.shape} and {q.shape}")
    if np.any(p < 0) or np.any(q < 0):
        raise ValueError("distributions must be non-negative")
    return p, q


def total_absolute_error(p, q, dx: float, normalize: bool = True) -> float:
    """``sum |p - q| dx``; with ``normalize`` each is scaled to integrate to 1 first."""
    p, q = _check(p, q)
    if normalize:
        if p.sum() == 0 or q.sum() == 0:
            raise ValueError("cannot normalise an all-zero distribution")
        p, q = p / (p.sum() * dx), q / (q.sum() * dx)
    return float(np.sum(np.abs(p - q)) * dx)


def jensen_shannon(p, q) -> float:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of two histograms normalised to sum 1."""
    p, q = _check(p, q)
    if p.sum() == 0 or q.sum() == 0:
        raise ValueError("cannot normalise an all-zero distribution")
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a, b):
        nz = a > 0
        return float(np.sum(a[nz] * np.log2(a[nz] / b[nz])))

    return max(0.0, 0.5 * kl(p, m) + 0.5 * kl(q, m))
