"""Bond, angle and dihedral distributions of multi-bead molecules, per bead-type tuple.

The terms are the topology's (``Frames.topology.bonds``, ``.angles``, ``.dihedrals``: the lists the
priors and the exported OpenMM forces use) and the values come from :mod:`cgkd.geometry`, so the
dihedrals have the IUPAC sign of OpenMM's ``PeriodicTorsionForce``.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from cgkd import geometry
from cgkd.analysis.frames import Frames
from cgkd.topology import canonical

_VALUES = {
    "bonds": lambda x, t, box: geometry.distances(x, t, box),
    "angles": lambda x, t, box: np.degrees(geometry.angles(x, t, box)),
    "dihedrals": lambda x, t, box: np.degrees(geometry.dihedrals(x, t, box)),
    "impropers": lambda x, t, box: np.degrees(geometry.dihedrals(x, t, box)),
}


def bonded_values(frames: Frames) -> Dict[str, Dict[tuple, np.ndarray]]:
    """All bond lengths (nm), angles (degrees) and dihedrals (degrees, -180..180) grouped by type tuple.

    Returns
    -------
    dict kind -> {canonical type-index tuple: np.ndarray of values over frames and terms}
    """
    top = frames.topology
    out: Dict[str, Dict[tuple, np.ndarray]] = {}
    for kind, value in _VALUES.items():
        terms = top.terms(kind)
        groups: Dict[tuple, list] = {}
        for n, term in enumerate(terms):
            groups.setdefault(canonical(int(t) for t in top.types[term]), []).append(n)
        out[kind] = {}
        if not len(terms):
            continue
        v = value(frames.positions, terms, frames.box)  # (F, T)
        for key in sorted(groups):
            out[kind][key] = v[:, groups[key]].ravel()
    return out


#: Histogram ranges per kind; bonds up to ``bond_max`` nm.
RANGES = {"angles": (0.0, 180.0), "dihedrals": (-180.0, 180.0), "impropers": (-180.0, 180.0)}


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
