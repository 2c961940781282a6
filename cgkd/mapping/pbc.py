"""Making molecules whole along their bond graph (minimum-image steps from :mod:`cgkd.geometry`).

No torch here. Boxes are (F, 3, 3) arrays whose rows are the box vectors a, b, c in nm.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import networkx as nx
import numpy as np

from cgkd import geometry


def bfs_levels(n_atoms: int, bonds: np.ndarray, molecules: Sequence[np.ndarray]) -> List[Tuple[np.ndarray, np.ndarray]]:
    """Parent -> child atom pairs, grouped by depth, that reach every atom of every molecule.

    Each molecule is walked breadth-first from its lowest atom index. Pieces of a molecule that the
    bonds do not connect (say, a residue without bond records) hang off that root atom, so they are
    placed at the minimum image of the root.

    Parameters
    ----------
    n_atoms : int
    bonds : np.ndarray, shape=(n_bonds, 2), int64
        Atom index pairs.
    molecules : sequence of np.ndarray of int
        Atom indices of each molecule (a partition of the atoms).

    Returns
    -------
    list of (parents, children), each np.ndarray of int64
        Entry ``k`` holds the edges whose child is at depth ``k + 1``; children of one level depend
        only on parents placed by earlier levels.
    """
    graph = nx.Graph()
    graph.add_nodes_from(range(n_atoms))
    graph.add_edges_from(np.asarray(bonds, dtype=np.int64).reshape(-1, 2).tolist())
    levels: dict = {}
    for atoms in molecules:
        atoms = sorted(int(a) for a in atoms)
        if len(atoms) < 2:
            continue
        sub = graph.subgraph(atoms).copy()
        root = atoms[0]
        for comp in nx.connected_components(sub):
            first = min(comp)
            if first != root:
                sub.add_edge(root, first)
        depth = {root: 0}
        for parent, child in nx.bfs_edges(sub, root):
            depth[child] = depth[parent] + 1
            levels.setdefault(depth[child], []).append((parent, child))
    out = []
    for k in sorted(levels):
        pairs = np.asarray(levels[k], dtype=np.int64)
        out.append((pairs[:, 0], pairs[:, 1]))
    return out


def make_whole(xyz: np.ndarray, box: np.ndarray, levels: List[Tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Unwrap molecules: each child atom is put at the minimum image of its parent along the BFS tree.

    Parameters
    ----------
    xyz : np.ndarray, shape=(n_frames, n_atoms, 3), float, nm
    box : np.ndarray, shape=(n_frames, 3, 3), float, nm
    levels : output of :func:`bfs_levels`

    Returns
    -------
    np.ndarray, shape=(n_frames, n_atoms, 3), float64, nm
        The root atom of each molecule keeps its position.
    """
    out = np.array(xyz, dtype=np.float64, copy=True)
    for parents, children in levels:
        d = out[:, children, :] - out[:, parents, :]
        out[:, children, :] = out[:, parents, :] + geometry.minimum_image(d, box)
    return out
