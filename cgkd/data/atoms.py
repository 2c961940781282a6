"""Per-element reference energies of atomistic data, fitted by linear regression on composition.

``E_s ~ sum_e n_se * eps_e``: the least-squares ``eps`` (kJ/mol per atom of element e) from the energies of
structures of varied composition. Subtracting ``sum_e n_se eps_e`` leaves the interaction energy a model
learns; a model can also start from them (``cgkd.nn.base.TypeScaleShift`` shifts per type).
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np

from cgkd.io.atoms import AtomsData


def fit_reference_energies(data: AtomsData, elements: Optional[Sequence[str]] = None,
                           ridge: float = 0.0) -> Dict[str, float]:
    """Per-element reference energies (kJ/mol per atom) by least squares on composition.

    Parameters
    ----------
    data : AtomsData
        Labelled structures (``energy`` set).
    elements : sequence of str, optional
        Elements to fit, default those present.
    ridge : float
        Tikhonov weight (kJ/mol per atom)^-2 scale-free: ``ridge * ||eps||^2`` added, relative to the number of
        structures. 0 (default) is ordinary least squares; with a single composition the system is
        underdetermined and the minimum-norm solution is returned.

    Returns
    -------
    dict element -> kJ/mol
    """
    if not isinstance(data, AtomsData):
        raise ValueError(f"data must be an AtomsData, got {type(data).__name__}")
    if data.energy is None:
        raise ValueError("data has no energies; label it first (cgkd.aa.labelers)")
    if not ridge >= 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    elements = list(data.elements if elements is None else elements)
    x = data.composition(elements)
    missing = [e for e, n in zip(elements, x.sum(0)) if n == 0]
    if missing:
        raise ValueError(f"elements {missing} occur in no structure of data; present are {data.elements}")
    y = data.energy
    if ridge > 0:
        a = x.T @ x + ridge * len(y) * np.eye(len(elements))
        eps = np.linalg.solve(a, x.T @ y)
    else:
        eps = np.linalg.lstsq(x, y, rcond=None)[0]
    return {e: float(v) for e, v in zip(elements, eps)}


def reference_energy(data: AtomsData, references: Dict[str, float]) -> np.ndarray:
    """``sum_e n_se eps_e`` per structure, shape (n_structures,), kJ/mol."""
    missing = [e for e in data.elements if e not in references]
    if missing:
        raise ValueError(f"references lack elements {missing}; they have {sorted(references)}")
    names = list(references)
    return data.composition(names) @ np.array([references[e] for e in names])


__all__ = ["fit_reference_energies", "reference_energy"]
