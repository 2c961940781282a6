"""Fitting priors from CG data (numpy in, prior modules out), by Boltzmann inversion.

- bonds: ``U(r) = -k_B T ln(p(r) / r^2)`` fitted by a count-weighted parabola -> k, r0;
- angles: ``U(theta) = -k_B T ln(p(theta) / sin theta)`` likewise -> k, theta0;
- dihedrals: ``U(phi) = -k_B T ln p(phi)`` fitted by a count-weighted Fourier series
  ``c + sum_n a_n cos(n phi) + b_n sin(n phi)``, rewritten as ``k_n (1 + cos(n phi - phase_n))`` with
  ``k_n = hypot(a_n, b_n) >= 0``, ``phase_n = atan2(b_n, a_n)``;
- pair repulsion: ``sigma_ab`` = left edge of the first histogram bin where ``g_ab(r)`` exceeds
  ``threshold`` times its plateau (mean over the outer 20 % of [0, r_max]); eps = k_B T.

Terms are grouped by bead-type tuple (a tuple and its reverse together). A fit that cannot be made
raises :class:`PriorFitError` naming the term, the bead types and why. This module computes its own
histograms (it does not import ``cgkd.analysis``, a higher layer).
"""

from __future__ import annotations

import math
import warnings
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from cgkd import geometry
from cgkd.data.cg_h5 import CGData
from cgkd.nn.neighbors import neighbor_list
from cgkd.nn.priors import FourierDihedrals, FourierImpropers, HarmonicAngles, HarmonicBonds, PairRepulsion
from cgkd.topology import canonical
from cgkd.units import kbt

#: Bins of the bonded histograms with fewer counts are ignored in the fits.
MIN_BIN_COUNT = 5
#: Default number of harmonics of the dihedral Fourier series.
N_DIHEDRAL_TERMS = 3


class PriorFitError(ValueError):
    """A prior could not be fitted; the message names the term, the bead types and the reason."""


def _check_inputs(positions, box, types) -> Tuple[np.ndarray, Optional[np.ndarray], np.ndarray]:
    pos = np.asarray(positions, dtype=np.float64)
    if pos.ndim != 3 or pos.shape[2] != 3 or pos.shape[0] < 1:
        raise ValueError(f"positions must have shape (n_frames, n_beads, 3), got {pos.shape}")
    if box is not None:
        box = np.asarray(box, dtype=np.float64)
        if box.shape != (pos.shape[0], 3, 3):
            raise ValueError(f"box must have shape ({pos.shape[0]}, 3, 3) or be None, got {box.shape}")
    types = np.asarray(types, dtype=np.int64)
    if types.shape != (pos.shape[1],):
        raise ValueError(f"types must have shape ({pos.shape[1]},), got {types.shape}")
    return pos, box, types


def _group(terms: np.ndarray, types: np.ndarray) -> Dict[Tuple[int, ...], np.ndarray]:
    """Term indices grouped by canonical type tuple (a tuple and its reverse together)."""
    groups: Dict[Tuple[int, ...], List[int]] = {}
    for n, term in enumerate(terms):
        groups.setdefault(canonical(int(x) for x in types[term]), []).append(n)
    return {k: np.array(v) for k, v in groups.items()}


def _weighted_polyfit(x, y, w, deg):
    a = np.vander(x, deg + 1)
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(a * sw[:, None], y * sw, rcond=None)
    return coef


def _harmonic_fit(values: np.ndarray, jacobian, kt: float, term: str, names: List[str], n_bins: int):
    """Boltzmann-inverted parabola fit of ``values`` -> (k, x0)."""
    values = values[np.isfinite(values)]
    if values.size < 10 * MIN_BIN_COUNT:
        raise PriorFitError(f"{term} prior {names}: only {values.size} samples, need at least {10 * MIN_BIN_COUNT}")
    lo, hi = np.percentile(values, [0.5, 99.5])
    if not hi > lo:
        raise PriorFitError(f"{term} prior {names}: the distribution has zero width (all values {lo:.6g})")
    # small samples (one molecule, few frames): fewer, fuller bins (about 20 samples each, at least 8 bins)
    n_bins = int(min(n_bins, max(8, values.size // 20)))
    counts, edges = np.histogram(values, bins=n_bins, range=(lo, hi))
    centres = 0.5 * (edges[1:] + edges[:-1])
    ok = (counts >= MIN_BIN_COUNT) & (jacobian(centres) > 0)
    if ok.sum() < 3:
        raise PriorFitError(f"{term} prior {names}: fewer than 3 histogram bins with >= {MIN_BIN_COUNT} samples")
    u = -kt * np.log(counts[ok] / jacobian(centres[ok]))
    a, b, _ = _weighted_polyfit(centres[ok], u, counts[ok].astype(float), 2)
    if a > 0:
        return float(2 * a), float(-b / (2 * a))
    # A few hundred samples of a narrow peak can give a non-convex parabola by noise alone. If the sample does not
    # look bimodal (Sarle's bimodality coefficient below the uniform distribution's 5/9), take the moments of the
    # Boltzmann factor instead (samples weighted by 1/jacobian): k = kT / variance at the mean.
    bc = bimodality_coefficient(values)
    if bc < 5.0 / 9.0:
        w = 1.0 / np.clip(jacobian(values), 1e-12, None)
        mean = float(np.average(values, weights=w))
        var = float(np.average((values - mean) ** 2, weights=w))  # > 0: the sample has width (checked above)
        warnings.warn(f"{term} prior {names}: the Boltzmann-inverted histogram of {values.size} samples is not "
                      f"convex (fitted force constant {2 * a:.4g}); the sample looks unimodal (bimodality "
                      f"coefficient {bc:.2f} < 5/9), so the moment estimate k = kT/variance is used", stacklevel=3)
        return kt / var, mean
    raise PriorFitError(
        f"{term} prior {names}: Boltzmann-inverted distribution is not convex "
        f"(fitted force constant {2 * a:.4g} <= 0, bimodality coefficient {bc:.2f}); the distribution is not unimodal"
    )


def bimodality_coefficient(values: np.ndarray) -> float:
    """Sarle's bimodality coefficient (g^2 + 1) / (k + 3 (n-1)^2 / ((n-2)(n-3))), g the sample skewness and k the
    sample excess kurtosis (both with the usual small-sample corrections): 1/3 for a normal sample, 5/9 for a
    uniform one, towards 1 for two separated peaks (SAS/STAT user's guide, PROC CLUSTER; Pfister et al., Front.
    Psychol. 4, 700, 2013)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    n = x.size
    if n < 4:
        raise ValueError(f"values must hold at least 4 samples, got {n}")
    d = x - x.mean()
    m2, m3, m4 = (np.mean(d ** p) for p in (2, 3, 4))
    if not m2 > 0:
        return 0.0
    g1 = m3 / m2 ** 1.5 * math.sqrt(n * (n - 1)) / (n - 2)
    g2 = ((n + 1) * (m4 / m2 ** 2 - 3) + 6) * (n - 1) / ((n - 2) * (n - 3))
    return float((g1 ** 2 + 1) / (g2 + 3 * (n - 1) ** 2 / ((n - 2) * (n - 3))))


def fit_bonds(positions, box, types, type_names: Sequence[str], bonds, temperature: float, n_bins: int = 60) -> HarmonicBonds:
    """Harmonic bond prior per bead-type pair by Boltzmann inversion.

    Parameters
    ----------
    positions : np.ndarray, shape=(F, B, 3), nm
    box : np.ndarray or None, shape=(F, 3, 3), nm
    types : np.ndarray, shape=(B,), int
    type_names : list of str
    bonds : np.ndarray, shape=(n_bonds, 2), int
    temperature : float, K
    n_bins : int
    """
    pos, box, types = _check_inputs(positions, box, types)
    bonds = np.asarray(bonds, dtype=np.int64).reshape(-1, 2)
    kt = kbt(temperature)
    entries = []
    for key, idx in sorted(_group(bonds, types).items()):
        names = [type_names[t] for t in key]
        r = geometry.distances(pos, bonds[idx], box).ravel()
        k, r0 = _harmonic_fit(r, lambda x: x * x, kt, "bond", names, n_bins)
        if not r0 > 0:
            raise PriorFitError(f"bond prior {names}: fitted r0 = {r0:.4g} nm is not positive")
        entries.append({"types": names, "r0": r0, "k": k})
    return HarmonicBonds(type_names, entries, bonds, pos.shape[1])


def fit_angles(positions, box, types, type_names: Sequence[str], angles, temperature: float, n_bins: int = 60) -> HarmonicAngles:
    """Harmonic angle prior per bead-type triplet by Boltzmann inversion (radians).

    ``angles`` : np.ndarray, shape=(n_angles, 3), int (e.g. ``Topology.angles``); other
    arguments as :func:`fit_bonds`.
    """
    pos, box, types = _check_inputs(positions, box, types)
    angles = np.asarray(angles, dtype=np.int64).reshape(-1, 3)
    kt = kbt(temperature)
    entries = []
    for key, idx in sorted(_group(angles, types).items()):
        names = [type_names[t] for t in key]
        theta = geometry.angles(pos, angles[idx], box).ravel()
        k, theta0 = _harmonic_fit(theta, np.sin, kt, "angle", names, n_bins)
        theta0 = min(theta0, math.pi)
        if not theta0 > 0:
            raise PriorFitError(f"angle prior {names}: fitted theta0 = {theta0:.4g} rad is not in (0, pi]")
        entries.append({"types": names, "theta0": theta0, "k": k})
    return HarmonicAngles(type_names, entries, angles, pos.shape[1])


def _narrow_dihedral(phi: np.ndarray, kt: float, names) -> dict:
    """One cosine matching the circular mean and variance of a narrow distribution.

    ``k (1 + cos(phi - phase))`` has its minimum at ``phase - pi`` and curvature ``k`` there, so
    ``phase = mean + pi`` and ``k = k_B T / var`` (the harmonic Boltzmann-inversion estimate).
    """
    c, s = np.cos(phi).mean(), np.sin(phi).mean()
    resultant = min(math.hypot(c, s), 1.0)
    var = -2.0 * math.log(resultant) if resultant > 0 else math.inf
    if not 1e-8 < var < math.inf:
        raise PriorFitError(f"dihedral prior {names}: all samples at one angle (circular variance {var:.3g} rad^2)")
    phase = math.remainder(math.atan2(s, c) + math.pi, 2 * math.pi)
    return {"n": 1, "k": float(kt / var), "phase": float(phase)}


def _fourier_dihedral(x: np.ndarray, counts: np.ndarray, kt: float, n_terms: int) -> List[dict]:
    """Count-weighted least squares of -kT ln(counts) on 1, cos(n x), sin(n x), n = 1..n_terms.

    Bins with fewer than ``MIN_BIN_COUNT`` samples (the angles the data never or hardly reach) enter with the
    free energy of half a count, above every observed bin, and the weight of ``MIN_BIN_COUNT`` samples: the
    series then rises where there are no data instead of extrapolating into wells that the data never
    saw (a three-term fit on the phi range of alanine dipeptide alone put a well 150 kJ/mol deep at phi > 0,
    and CG MD fell into it and heated up).
    """
    counts = np.asarray(counts, dtype=np.float64)
    sparse = counts < MIN_BIN_COUNT
    u = -kt * np.log(np.where(sparse, 0.5, counts))
    counts = np.where(sparse, float(MIN_BIN_COUNT), counts)
    cols = [np.ones_like(x)]
    for n in range(1, n_terms + 1):
        cols += [np.cos(n * x), np.sin(n * x)]
    a = np.stack(cols, axis=1)
    sw = np.sqrt(counts)
    coef, *_ = np.linalg.lstsq(a * sw[:, None], u * sw, rcond=None)
    terms = []
    for n in range(1, n_terms + 1):
        an, bn = coef[2 * n - 1], coef[2 * n]
        terms.append({"n": n, "k": float(math.hypot(an, bn)), "phase": float(math.atan2(bn, an))})
    return terms


def _torsion_samples(pos, box, types, type_names, quads: np.ndarray, term: str):
    """(type names, finite torsion angles in rad) per bead-type quadruple; too few samples raise PriorFitError."""
    for key, idx in sorted(_group(quads, types).items()):
        names = [type_names[t] for t in key]
        phi = geometry.dihedrals(pos, quads[idx], box).ravel()
        phi = phi[np.isfinite(phi)]
        if phi.size < 10 * MIN_BIN_COUNT:
            raise PriorFitError(f"{term} prior {names}: only {phi.size} samples, need at least {10 * MIN_BIN_COUNT}")
        yield names, phi


def fit_dihedrals(
    positions,
    box,
    types,
    type_names: Sequence[str],
    dihedrals,
    temperature: float,
    n_terms: int = N_DIHEDRAL_TERMS,
    n_bins: int = 36,
) -> FourierDihedrals:
    """Fourier dihedral prior per bead-type quadruple by Boltzmann inversion.

    ``dihedrals`` : np.ndarray, shape=(n_dihedrals, 4), int (e.g. ``Topology.dihedrals``);
    ``n_terms`` : harmonics n = 1..n_terms. A narrow distribution (fewer than 2 n_terms + 1 bins
    with samples) gets one cosine from its circular mean and variance instead (see
    :func:`_narrow_dihedral`). Other arguments as :func:`fit_bonds`.
    """
    pos, box, types = _check_inputs(positions, box, types)
    if n_terms < 1:
        raise ValueError(f"n_terms must be >= 1, got {n_terms}")
    dihedrals = np.asarray(dihedrals, dtype=np.int64).reshape(-1, 4)
    kt = kbt(temperature)
    entries = []
    for names, phi in _torsion_samples(pos, box, types, type_names, dihedrals, "dihedral"):
        counts, edges = np.histogram(phi, bins=n_bins, range=(-math.pi, math.pi))
        centres = 0.5 * (edges[1:] + edges[:-1])
        ok = counts >= MIN_BIN_COUNT
        if ok.sum() < 2 * n_terms + 1:
            terms = [_narrow_dihedral(phi, kt, names)]
        else:
            terms = _fourier_dihedral(centres, counts.astype(float), kt, n_terms)
        entries.append({"types": names, "terms": terms})
    return FourierDihedrals(type_names, entries, dihedrals, pos.shape[1])


def fit_impropers(positions, box, types, type_names: Sequence[str], impropers, temperature: float
                  ) -> FourierImpropers:
    """Improper prior per bead-type quadruple: one cosine with its minimum at the circular mean of the data and
    curvature ``k_B T / variance`` (:func:`_narrow_dihedral`).

    An improper such as ``N, C, CA, CB`` samples one sign only (L or D); the single cosine puts its maximum
    near the mirror image, so the prior holds the handedness the data show.
    """
    pos, box, types = _check_inputs(positions, box, types)
    impropers = np.asarray(impropers, dtype=np.int64).reshape(-1, 4)
    kt = kbt(temperature)
    entries = []
    for names, phi in _torsion_samples(pos, box, types, type_names, impropers, "improper"):
        entries.append({"types": names, "terms": [_narrow_dihedral(phi, kt, names)]})
    return FourierImpropers(type_names, entries, impropers, pos.shape[1])


def fit_pair_repulsion(
    positions,
    box,
    types,
    type_names: Sequence[str],
    temperature: float,
    r_max: float = 1.0,
    bin_width: float = 0.005,
    threshold: float = 1e-3,
    max_frames: int = 200,
    exclusions=None,
) -> PairRepulsion:
    """Pair repulsion prior: sigma per type pair from the onset of g(r); eps = k_B T.

    Periodic data (a liquid): sigma is where g(r) first exceeds ``threshold`` of its plateau.
    Non-periodic data (molecules in implicit solvent, where g(r) has no plateau): sigma is the
    smallest distance observed for the type pair, and type pairs never seen within ``r_max`` get no
    wall. Pairs in ``exclusions`` (bonded neighbours) are left out of the fit and feel no wall.

    Parameters
    ----------
    positions, box, types, type_names, temperature : as :func:`fit_bonds`
    r_max : float, nm
        Histogram range; the plateau is the mean of r^-2-normalised counts over [0.8 r_max, r_max].
    bin_width : float, nm
    threshold : float
        Fraction of the plateau that g(r) must exceed.
    max_frames : int
        At most this many frames (evenly strided) are used.
    exclusions : array-like, shape=(n, 2), int, optional
        Bead pairs without a wall (see :class:`cgkd.nn.priors.PairRepulsion`).
    """
    pos, box, types = _check_inputs(positions, box, types)
    excl = np.asarray([] if exclusions is None else exclusions, dtype=np.int64).reshape(-1, 2)
    n_beads = pos.shape[1]
    excluded = set((excl[:, 0] * n_beads + excl[:, 1]).tolist()) | set((excl[:, 1] * n_beads + excl[:, 0]).tolist())
    closest = np.full((len(type_names), len(type_names)), np.inf)
    if not 0 < bin_width < r_max:
        raise ValueError(f"bin_width must lie in (0, r_max={r_max}), got {bin_width}")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    n_types = len(type_names)
    n_bins = int(round(r_max / bin_width))
    edges = np.linspace(0.0, n_bins * bin_width, n_bins + 1)
    hist = np.zeros((n_types, n_types, n_bins))
    stride = max(1, pos.shape[0] // max_frames)
    for f in range(0, pos.shape[0], stride):
        b = torch.zeros(3, 3, dtype=torch.float64) if box is None else torch.as_tensor(box[f])
        p = torch.as_tensor(pos[f])
        ei, sh = neighbor_list(p, b, float(edges[-1]))
        i, j = ei[0].numpy(), ei[1].numpy()
        r = np.linalg.norm((p[ei[1]] - p[ei[0]] + sh).numpy(), axis=-1)
        half = i < j
        if excluded:
            half &= ~np.isin(i * n_beads + j, list(excluded))
        ti, tj = types[i[half]], types[j[half]]
        lo, hi = np.minimum(ti, tj), np.maximum(ti, tj)
        bins = np.minimum((r[half] / bin_width).astype(np.int64), n_bins - 1)
        np.add.at(hist, (lo, hi, bins), 1.0)
        np.minimum.at(closest, (lo, hi), r[half])
    centres = 0.5 * (edges[1:] + edges[:-1])
    shell = centres**2
    outer = centres >= 0.8 * edges[-1]
    entries = []
    for a in range(n_types):
        for b in range(a, n_types):
            names = [type_names[a], type_names[b]]
            if box is None:  # molecules: the closest approach seen (no wall where a pair never comes near)
                if np.isfinite(closest[a, b]):
                    entries.append({"types": names, "sigma": float(np.floor(closest[a, b] / bin_width) * bin_width)})
                continue
            g = hist[a, b] / shell
            plateau = g[outer].mean()
            if not plateau > 0:
                raise PriorFitError(
                    f"pair_repulsion prior {names}: no pairs of these types between {0.8 * edges[-1]:.3g} and "
                    f"{edges[-1]:.3g} nm (plateau of g(r) is 0); increase r_max or check the types"
                )
            above = np.nonzero(g > threshold * plateau)[0]
            sigma = float(edges[above[0]])
            if not sigma > 0:
                raise PriorFitError(
                    f"pair_repulsion prior {names}: g(r) is non-zero already in the first bin "
                    f"(r < {bin_width} nm); beads overlap"
                )
            entries.append({"types": names, "sigma": sigma})
    return PairRepulsion(type_names, entries, kbt(temperature), exclusions=excl, n_beads=n_beads)


def bonded_exclusions(topology) -> np.ndarray:
    """1-2 and 1-3 bead pairs of a topology (bonds and the end beads of angles), shape=(n, 2), int64, i < j."""
    pairs = [tuple(b) for b in np.asarray(topology.bonds).reshape(-1, 2)]
    pairs += [(a[0], a[2]) for a in np.asarray(topology.angles).reshape(-1, 3)]
    return np.asarray(sorted({(int(min(p)), int(max(p))) for p in pairs}), dtype=np.int64).reshape(-1, 2)


def fit_priors(
    data: CGData,
    kinds: Sequence[str] = ("pair_repulsion", "bonds", "angles", "dihedrals", "impropers"),
    r_max: float = 1.0,
    n_dihedral_terms: int = N_DIHEDRAL_TERMS,
    exclude_bonded: bool = True,
) -> list:
    """All requested priors of a CG dataset; bonded kinds without terms are skipped.

    Bonds, angles and dihedrals are the topology's (``data.topology``), the same lists that the
    model's bonded priors, the exported OpenMM forces and the analysis use. With ``exclude_bonded``
    the pair-repulsion wall leaves out 1-2 and 1-3 neighbours (bonds and the ends of angles), as
    molecular force fields do; their distances are the bonded priors' business.
    """
    allowed = ("pair_repulsion", "bonds", "angles", "dihedrals", "impropers")
    bad = [k for k in kinds if k not in allowed]
    if bad:
        raise ValueError(f"kinds: unknown prior kind(s) {bad}; allowed are {list(allowed)}")
    args = (data.positions, data.box, data.types, list(data.type_names))
    out = []
    top = data.topology
    if "pair_repulsion" in kinds:
        excl = bonded_exclusions(top) if exclude_bonded else None
        out.append(fit_pair_repulsion(*args, data.temperature, r_max=r_max, exclusions=excl))
    if "bonds" in kinds and len(top.bonds):
        out.append(fit_bonds(*args, top.bonds, data.temperature))
    if "angles" in kinds and len(top.angles):
        out.append(fit_angles(*args, top.angles, data.temperature))
    if "dihedrals" in kinds and len(top.dihedrals):
        out.append(fit_dihedrals(*args, top.dihedrals, data.temperature, n_terms=n_dihedral_terms))
    if "impropers" in kinds and len(top.impropers):
        out.append(fit_impropers(*args, top.impropers, data.temperature))
    return out
