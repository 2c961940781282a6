"""Bonded topology of a CG molecule graph: angles and dihedrals from the bond list (numpy only)."""

from __future__ import annotations

from typing import Dict

import numpy as np


def angles_from_bonds(bonds) -> np.ndarray:
    """All bead triplets i-j-k with bonds i-j and j-k (each angle once, i < k).

    Parameters
    ----------
    bonds : np.ndarray, shape=(n_bonds, 2), int

    Returns
    -------
    np.ndarray, shape=(n_angles, 3), int64, sorted
    """
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    neighbours: Dict[int, set] = {}
    for a, b in bonds:
        if a == b:
            raise ValueError(f"bonds contains a self bond ({a}, {b})")
        neighbours.setdefault(int(a), set()).add(int(b))
        neighbours.setdefault(int(b), set()).add(int(a))
    out = set()
    for j, nbrs in neighbours.items():
        for i in nbrs:
            for k in nbrs:
                if i < k:
                    out.add((i, j, k))
    return np.array(sorted(out), dtype=np.int64).reshape(-1, 3)


def dihedrals_from_bonds(bonds) -> np.ndarray:
    """All bead quadruples i-j-k-l along bonded paths (each once, oriented so that (i, j) < (l, k)).

    Returns
    -------
    np.ndarray, shape=(n_dihedrals, 4), int64, sorted
    """
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    neighbours: Dict[int, set] = {}
    for a, b in bonds:
        neighbours.setdefault(int(a), set()).add(int(b))
        neighbours.setdefault(int(b), set()).add(int(a))
    out = set()
    for j, k in bonds:
        j, k = int(j), int(k)
        for i in neighbours[j] - {k}:
            for l in neighbours[k] - {j}:
                if i == l:
                    continue  # three-membered ring
                quad = (i, j, k, l)
                out.add(min(quad, quad[::-1]))
    return np.array(sorted(out), dtype=np.int64).reshape(-1, 4)
