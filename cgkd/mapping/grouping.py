"""Automatic bead grouping: split each molecule's bond graph into connected beads of ~n heavy atoms.

Algorithm (deterministic; described in docs/mapping.md):

1. Per molecule, take the graph of its heavy atoms (element not hydrogen; atoms without element count
   as heavy). A molecule with no more than ``1.5 * n`` heavy atoms is one bead.
2. Otherwise grow beads one by one from a most peripheral atom (largest eccentricity): add the
   frontier atom with the fewest unassigned neighbours outside the bead (so atoms that would be
   stranded are taken first), then the closest to the start, until the bead has ``n`` atoms; the
   next bead starts from the most peripheral unassigned atom of the lowest-index remaining piece.
3. A bead with fewer than ``n / 2`` heavy atoms is merged into its smallest bonded neighbour bead.
   Steps 2-3 are run from every most-peripheral start atom; the partition with group sizes closest
   to ``n`` (sum of squared deviations, then fewer beads) is kept.
4. Every hydrogen joins the bead of the heavy atom it is bonded to; hydrogens without a heavy
   neighbour (H2) form beads of their own connected piece.
"""

from __future__ import annotations

from typing import List

import networkx as nx


def _is_heavy(atom) -> bool:
    return atom.element is None or atom.element.symbol != "H"


def _grow(graph: nx.Graph, unassigned: set, start: int, n: int) -> List[int]:
    """Grow one bead from ``start``: repeatedly add the frontier atom with the fewest unassigned
    neighbours outside the bead (atoms that would otherwise be stranded go first), then the one
    closest to ``start``, then the lowest index."""
    dist = nx.single_source_shortest_path_length(graph.subgraph(unassigned), start)
    group = {start}
    while len(group) < n:
        frontier = {nb for a in group for nb in graph.neighbors(a) if nb in unassigned and nb not in group}
        if not frontier:
            break
        free = lambda v: sum(1 for nb in graph.neighbors(v) if nb in unassigned and nb not in group and nb != v)
        group.add(min(frontier, key=lambda v: (free(v), dist[v], v)))
    return sorted(group)


def _greedy(graph: nx.Graph, n: int, first: int) -> List[List[int]]:
    unassigned = set(graph.nodes)
    groups: List[List[int]] = []
    start = first
    while unassigned:
        group = _grow(graph, unassigned, start, n)
        groups.append(group)
        unassigned -= set(group)
        if unassigned:
            sub = graph.subgraph(unassigned)
            comp = min(nx.connected_components(sub), key=min)
            csub = sub.subgraph(comp)
            ecc = nx.eccentricity(csub)
            start = min(comp, key=lambda v: (-ecc[v], csub.degree[v], v))
    # merge groups smaller than n / 2 into their smallest bonded neighbour group
    changed = True
    while changed and len(groups) > 1:
        changed = False
        for g in sorted(range(len(groups)), key=lambda k: (len(groups[k]), k)):
            if len(groups[g]) >= n / 2:
                break
            neigh = [
                h for h in range(len(groups))
                if h != g and any(graph.has_edge(a, b) for a in groups[g] for b in groups[h])
            ]
            if not neigh:
                continue
            h = min(neigh, key=lambda k: (len(groups[k]), k))
            groups[h] = sorted(groups[h] + groups[g])
            del groups[g]
            changed = True
            break
    return sorted(groups, key=min)


def split_heavy_graph(graph: nx.Graph, n: int) -> List[List[int]]:
    """Partition a connected graph into connected groups of about ``n`` nodes (steps 1-3 above).

    The greedy growth is run from every most-peripheral atom; the partition whose group sizes are
    closest to ``n`` (smallest sum of squared deviations, then fewest groups, then first start) wins.
    """
    nodes = sorted(graph.nodes)
    if len(nodes) <= 1.5 * n:
        return [nodes]
    ecc = nx.eccentricity(graph)
    top = max(ecc.values())
    best = None
    for start in sorted(v for v in nodes if ecc[v] == top):
        groups = _greedy(graph, n, start)
        score = (sum((len(g) - n) ** 2 for g in groups), len(groups))
        if best is None or score < best[0]:
            best = (score, groups)
    return best[1]


def auto_groups(topology, heavy_atoms_per_bead: int) -> List[List[int]]:
    """Atom index groups for ``Mapping.auto`` (one list per bead, molecules in atom order).

    Parameters
    ----------
    topology : openmm.app.Topology
    heavy_atoms_per_bead : int
        Target number of heavy atoms per bead (>= 1).
    """
    if not isinstance(heavy_atoms_per_bead, int) or isinstance(heavy_atoms_per_bead, bool) or heavy_atoms_per_bead < 1:
        raise ValueError(f"heavy_atoms_per_bead must be an integer >= 1, got {heavy_atoms_per_bead!r}")
    atoms = list(topology.atoms())
    graph = nx.Graph()
    graph.add_nodes_from(range(len(atoms)))
    graph.add_edges_from((b[0].index, b[1].index) for b in topology.bonds())
    for res in topology.residues():
        idx = [a.index for a in res.atoms()]
        if len(idx) > 1 and not nx.is_connected(graph.subgraph(idx)):
            # keep a residue together even without bond records
            graph.add_edges_from(zip(idx[:-1], idx[1:]))
    heavy = {a.index for a in atoms if _is_heavy(a)}
    groups: List[List[int]] = []
    for mol in sorted((sorted(c) for c in nx.connected_components(graph)), key=lambda c: c[0]):
        hmol = [a for a in mol if a in heavy]
        hgraph = graph.subgraph(hmol)
        mol_groups: List[List[int]] = []
        for comp in sorted((sorted(c) for c in nx.connected_components(hgraph)), key=lambda c: c[0]):
            mol_groups.extend(split_heavy_graph(hgraph.subgraph(comp), heavy_atoms_per_bead))
        bead_of = {a: g for g, grp in enumerate(mol_groups) for a in grp}
        orphans = []
        for a in mol:
            if a in bead_of:
                continue
            heavy_nb = sorted(nb for nb in graph.neighbors(a) if nb in bead_of)
            if heavy_nb:
                mol_groups[bead_of[heavy_nb[0]]].append(a)
            else:
                orphans.append(a)
        if orphans:
            for comp in nx.connected_components(graph.subgraph(orphans)):
                mol_groups.append(sorted(comp))
        groups.extend(sorted(sorted(g) for g in mol_groups))
    return groups
