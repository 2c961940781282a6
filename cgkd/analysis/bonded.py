"""Bond, angle and dihedral distributions of multi-bead molecules, per bead-type tuple."""

from __future__ import annotations

from typing import Dict, Tuple

import networkx as nx
import numpy as np

from cgkd.analysis.frames import Frames, minimum_image


def bonded_tuples(n_beads: int, bonds: np.ndarray):
    """Bonds (i, j), angles (i, j, k) and proper dihedrals (i, j, k, l) from the bond graph."""
    g = nx.Graph()
    g.add_nodes_from(range(n_beads))
    g.add_edges_from(map(tuple, np.asarray(bonds).reshape(-1, 2).tolist()))
    bond_list = sorted(tuple(sorted(e)) for e in g.edges())
    angles = [(i, j, k) for j in g.nodes() for a, i in enumerate(sorted(g[j])) for k in sorted(g[j])[a + 1:]]
    dihedrals = [(i, j, k, m) for j, k in bond_list for i in g[j] if i != k for m in g[k] if m not in (i, j)]
    return np.array(bond_list, dtype=np.int64).reshape(-1, 2), np.array(angles, dtype=np.int64).reshape(-1, 3), \
        np.array(dihedrals, dtype=np.int64).reshape(-1, 4)


def _key(types, idx) -> tuple:
    t = tuple(int(types[i]) for i in idx)
    return min(t, t[::-1])


def _vec(frames: Frames, f: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    box = None if frames.box is None else frames.box[f]
    return minimum_image(frames.positions[f, j] - frames.positions[f, i], box)


def bonded_values(frames: Frames) -> Dict[str, Dict[tuple, np.ndarray]]:
    """All bond lengths (nm), angles (degrees) and dihedrals (degrees, -180..180) grouped by type tuple."""
    bonds, angles, dihedrals = bonded_tuples(len(frames.types), frames.bonds)
    out: Dict[str, Dict[tuple, list]] = {"bonds": {}, "angles": {}, "dihedrals": {}}
    for f in range(frames.n_frames):
        if len(bonds):
            r = np.linalg.norm(_vec(frames, f, bonds[:, 0], bonds[:, 1]), axis=1)
            for b, v in zip(bonds, r):
                out["bonds"].setdefault(_key(frames.types, b), []).append(v)
        if len(angles):
            u = _vec(frames, f, angles[:, 1], angles[:, 0])
            w = _vec(frames, f, angles[:, 1], angles[:, 2])
            cos = np.einsum("ij,ij->i", u, w) / (np.linalg.norm(u, axis=1) * np.linalg.norm(w, axis=1))
            for a, v in zip(angles, np.degrees(np.arccos(np.clip(cos, -1, 1)))):
                out["angles"].setdefault(_key(frames.types, a), []).append(v)
        if len(dihedrals):
            b1 = _vec(frames, f, dihedrals[:, 0], dihedrals[:, 1])
            b2 = _vec(frames, f, dihedrals[:, 1], dihedrals[:, 2])
            b3 = _vec(frames, f, dihedrals[:, 2], dihedrals[:, 3])
            n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
            m1 = np.cross(n1, b2 / np.linalg.norm(b2, axis=1)[:, None])
            phi = np.degrees(np.arctan2(np.einsum("ij,ij->i", m1, n2), np.einsum("ij,ij->i", n1, n2)))
            for d, v in zip(dihedrals, phi):
                out["dihedrals"].setdefault(_key(frames.types, d), []).append(v)
    return {kind: {k: np.asarray(v) for k, v in sorted(d.items())} for kind, d in out.items()}


#: Histogram ranges per kind; bonds up to ``bond_max`` nm.
RANGES = {"angles": (0.0, 180.0), "dihedrals": (-180.0, 180.0)}


def bonded_distributions(frames: Frames, n_bins: int = 60, bond_max: float = 1.0
                         ) -> Dict[str, Dict[tuple, Tuple[np.ndarray, np.ndarray]]]:
    """Normalised histograms (x centres, density integrating to 1) per kind and type tuple."""
    values = bonded_values(frames)
    out: Dict[str, Dict[tuple, Tuple[np.ndarray, np.ndarray]]] = {}
    for kind, groups in values.items():
        lo, hi = RANGES.get(kind, (0.0, bond_max))
        edges = np.linspace(lo, hi, n_bins + 1)
        out[kind] = {}
        for key, v in groups.items():
            h = np.histogram(v, bins=edges)[0].astype(float)
            if h.sum() > 0:
                out[kind][key] = (0.5 * (edges[1:] + edges[:-1]), h / (h.sum() * (edges[1] - edges[0])))
    return out
