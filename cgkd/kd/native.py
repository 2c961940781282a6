"""Native students: pair tables fitted by linear force matching (MS-CG) to any set of labelled frames.

The model (:class:`cgkd.nn.native.NativeModel`) is, per bead-type pair, ``U_ab(r) = W_ab(r) + S_ab(r)``:

- ``W_ab``: the pair-repulsion prior (``cgkd.nn.prior_fit.fit_pair_repulsion``: the shifted-force
  r^-12 wall that acts only below the distances the data reach), capped below 0.6 sigma by its tangent
  line so the table stays finite;
- ``S_ab``: a natural cubic spline through node values on a grid of spacing ``spacing`` from 0 to
  the cutoff, with ``S(cutoff) = 0`` and ``S'(cutoff) = 0`` (energy and force continuous there).

plus the bonded priors of the data (bonds, angles, dihedrals by Boltzmann inversion, on the
topology's terms). The spline's node values are the unknowns of a linear least-squares problem:
the model forces are linear in them, so minimising the squared difference between model and target
forces over all frames (force matching, Izvekov & Voth, J. Chem. Phys. 2005; "MS-CG") is one normal-
equation solve, regularised by a second-difference smoothness penalty and a small ridge, both
relative to the mean diagonal of the normal matrix. The targets may be:

(a) the mapped forces (``data.forces``): classical MS-CG;
(b) the ensemble-mean labels on the AA frames (``keys.MEAN_FORCES`` of the labels group);
(c) ensemble labels on configurations sampled elsewhere (any ``CGData`` with matching forces).

Nodes of distances that the data never reach are set by the smoothness penalty; the wall governs there.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import torch
from scipy.interpolate import CubicSpline

from cgkd import geometry, keys
from cgkd.data.cg_h5 import CGData, read_cg, read_labels
from cgkd.nn.native import NativeModel
from cgkd.nn.neighbors import neighbor_list
from cgkd.nn.prior_fit import fit_priors
from cgkd.nn.priors import PairRepulsion

#: Below this fraction of sigma the wall continues along its tangent (finite table values).
WALL_CAP = 0.6
BASES = ("spline", "powers")
#: Share of the normal matrix's trace given to the wall pseudo-observations of the ``powers`` basis.
PSEUDO_WALL_WEIGHT = 0.2
#: The powers basis must stay this many k_B T above U(sigma) everywhere inside 0.7 sigma, for every pair.
MIN_BARRIER_KT = 50.0
#: Default exponents of the ``powers`` basis: the Lennard-Jones form (with r^-12 fixed by the wall, one coefficient
#: per pair is fitted). Richer expansions (12, 8, 6), (12, 6, 4), (12, ..., 2) were refused or collapsed on reline
#: (docs/native.md).
POWERS = (12, 6)


def shifted_powers(r, cutoff: float, powers: Sequence[int]):
    """Shifted-force inverse powers ``phi_n(r) = r^-n - rc^-n + n rc^-(n+1) (r - rc)`` and their r-derivatives.

    Returns
    -------
    (np.ndarray, np.ndarray), each shape=(len(r), len(powers)); 0 beyond the cutoff
    """
    r = np.asarray(r, dtype=np.float64)[:, None]
    n = np.asarray(powers, dtype=np.float64)[None, :]
    inside = r < cutoff
    rs = np.where(inside, r, cutoff)
    phi = rs**-n - cutoff**-n + n * cutoff ** (-n - 1) * (rs - cutoff)
    dphi = -n * rs ** (-n - 1) + n * cutoff ** (-n - 1)
    return np.where(inside, phi, 0.0), np.where(inside, dphi, 0.0)


def default_cutoff(data: CGData, cutoff: float = 1.0) -> float:
    """``cutoff`` (nm), or less where the box is small: at most 0.49 of the smallest box height."""
    if data.box is None:
        return float(cutoff)
    return float(min(cutoff, 0.49 * geometry.box_heights(data.box).min()))


def _wall(r: np.ndarray, sigma: float, eps: float):
    """Capped wall energy and force (-dW/dr) on distances ``r``."""
    if not sigma > 0:
        return np.zeros_like(r), np.zeros_like(r)
    rc = WALL_CAP * sigma

    def e(x):
        return eps * ((sigma / x) ** 12 - 1.0 + 12.0 * (x - sigma) / sigma)

    def f(x):
        return eps * 12.0 * (sigma**12 / x**13 - 1.0 / sigma)

    rr = np.maximum(r, rc)
    energy = np.where(r < sigma, e(rr), 0.0) + np.where(r < rc, f(rc) * (rc - r), 0.0)
    force = np.where(r < sigma, f(rr), 0.0)
    return energy, force


def _bonded_forces(priors: list, data: CGData, frames: np.ndarray) -> np.ndarray:
    """Forces (F, N, 3) of the bonded prior modules on the selected frames (autograd, float64)."""
    out = np.zeros((len(frames), data.n_beads, 3))
    bonded = [p.double() for p in priors if getattr(p, "is_bonded", False)]
    if not bonded:
        return out
    types = torch.as_tensor(np.array(data.types))
    batch = torch.zeros(data.n_beads, dtype=torch.int64)
    for k, f in enumerate(frames):
        x = torch.tensor(data.positions[f], dtype=torch.float64, requires_grad=True)
        box = torch.zeros(1, 3, 3, dtype=torch.float64) if data.box is None else torch.tensor(data.box[f:f + 1], dtype=torch.float64)
        e = sum(p(x, types, box, batch, 1).sum() for p in bonded)
        (g,) = torch.autograd.grad(e, x)
        out[k] = -g.numpy()
    return out


def fit_native(
    data: CGData,
    forces: Optional[np.ndarray] = None,
    *,
    cutoff: Optional[float] = None,
    spacing: float = 0.02,
    table_spacing: float = 0.001,
    smoothness: float = 1e-3,
    ridge: float = 1e-8,
    priors: bool = True,
    frames: Optional[Sequence[int]] = None,
    target: str = "",
    basis: str = "spline",
    powers: Sequence[int] = POWERS,
) -> NativeModel:
    """Fit a native student to labelled frames.

    Parameters
    ----------
    data : CGData
        Positions, box and topology of the frames.
    forces : np.ndarray, shape=(n_frames, n_beads, 3), kJ/mol/nm, optional
        Target forces; default ``data.forces`` (the mapped forces: MS-CG).
    cutoff : float, nm, optional
        Pair cutoff; default :func:`default_cutoff` (1 nm, less in a small box).
    spacing : float, nm
        Node spacing of the fitted spline.
    table_spacing : float, nm
        Spacing of the exported table (OpenMM interpolates it with the same natural spline).
    smoothness, ridge : float
        Second-difference and ridge penalties, relative to the mean diagonal of the normal matrix.
    priors : bool
        Fit and include the pair wall and the bonded priors (default); False fits pure tables.
    frames : sequence of int, optional
        Frames to fit on (default all).
    target : str
        Recorded in the provenance (``mapped``, ``mean``, ...).
    basis : {"spline", "powers"}
        ``spline`` (default): the pair wall plus a natural spline (accurate; a tabulated OpenMM force).
        ``powers``: ``U_ab(r) = sum_n c_n(ab) phi_n(r)`` with the shifted-force inverse powers
        ``phi_n(r) = r^-n - rc^-n + n rc^-(n+1) (r - rc)`` for n in ``powers`` and no wall (the r^-12 term
        repels); an analytic OpenMM expression, about 3x cheaper per pair than the table
        (docs/benchmarks.md), at the cost of less structure in the pair potential.
    powers : sequence of int
        The exponents of the ``powers`` basis.

    Returns
    -------
    NativeModel
        ``provenance["fit"]`` holds the fit's force RMSE on its frames and the target's RMS.
    """
    forces = data.forces if forces is None else np.asarray(forces)
    if forces.shape != data.positions.shape:
        raise ValueError(f"forces must have shape {data.positions.shape} (the data's), got {forces.shape}")
    if not np.all(np.isfinite(forces)):
        raise ValueError("forces must be finite")
    idx = np.arange(data.n_frames) if frames is None else np.asarray(frames, dtype=np.int64)
    if len(idx) == 0:
        raise ValueError("frames is empty; the fit needs at least one frame")
    cut = default_cutoff(data) if cutoff is None else float(cutoff)
    if not cut > 0:
        raise ValueError(f"cutoff must be positive (nm), got {cutoff}")
    if data.box is not None and cut >= 0.5 * geometry.box_heights(data.box[idx]).min():
        raise ValueError(f"cutoff {cut} nm must be below half the smallest box height of the frames "
                         f"({0.5 * geometry.box_heights(data.box[idx]).min():.3f} nm)")
    if not 0 < spacing < cut / 3:
        raise ValueError(f"spacing must lie in (0, cutoff/3 = {cut / 3:.3g}) nm, got {spacing}")
    if not 0 < table_spacing <= spacing:
        raise ValueError(f"table_spacing must lie in (0, spacing={spacing}] nm, got {table_spacing}")
    if smoothness < 0 or ridge < 0:
        raise ValueError(f"smoothness and ridge must be >= 0, got {smoothness} and {ridge}")
    if basis not in BASES:
        raise ValueError(f"basis must be one of {BASES}, got {basis!r}")
    powers = [int(n) for n in powers]
    if basis == "powers" and (not powers or any(n < 1 for n in powers) or len(set(powers)) != len(powers)):
        raise ValueError(f"powers must be distinct positive integers, got {powers}")
    top = data.topology
    nt = top.n_types
    absent = [t for k, t in enumerate(top.type_names) if not np.any(top.types == k)]
    if absent:
        raise ValueError(f"data.topology lists types {absent} that no bead has; a native model is fitted per type "
                         "pair of the beads present (drop them with Topology.with_type_names)")
    sub = data.subset(idx)

    # native pair tables act on every pair (bonded ones too), so their wall must see every pair as well
    fitted = fit_priors(sub, r_max=cut, exclude_bonded=False) if priors else []
    wall = next((p for p in fitted if isinstance(p, PairRepulsion)), None)
    pseudo_wall = None
    if basis == "powers" and wall is not None:
        # no wall term in the expression (its per-pair step would cost more than the basis): the wall enters as
        # pseudo-observations of its force between 0.5 and 1 sigma, and the r^-12 coefficient is the wall's
        # (eps sigma^12), so the expansion repels where data never go
        pseudo_wall = (wall.sigma.double().numpy(), float(wall.epsilon))
        fitted = [p for p in fitted if p is not wall]
        wall = None
    sigma = np.zeros((nt, nt)) if wall is None else wall.sigma.double().numpy()
    eps = 0.0 if wall is None else float(wall.epsilon)
    bonded_spec: Dict[str, list] = {}
    for p in fitted:
        if getattr(p, "is_bonded", False):
            bonded_spec.update(p.bonded_prior_spec())
    residual = forces[idx].astype(np.float64) - _bonded_forces(fitted, data, idx)

    if basis == "spline":  # K nodes on [0, cut]; the last node is fixed at 0 (free columns 0..K-2)
        k_nodes = int(round(cut / spacing)) + 1
        nodes = np.linspace(0.0, cut, k_nodes)
        spline = CubicSpline(nodes, np.eye(k_nodes), bc_type="natural")
        n_free = k_nodes - 1

        def value(r):
            return spline(r)[:, :n_free]

        def slope(r):
            return spline(r, 1)[:, :n_free]
    else:
        n_free = len(powers)

        def value(r):
            return shifted_powers(r, cut, powers)[0]

        def slope(r):
            return shifted_powers(r, cut, powers)[1]
    pair_id = np.full((nt, nt), -1, dtype=np.int64)
    n_pairs = 0
    for a in range(nt):
        for b in range(a, nt):
            pair_id[a, b] = pair_id[b, a] = n_pairs
            n_pairs += 1
    n_col = n_pairs * n_free
    normal = np.zeros((n_col, n_col))
    rhs = np.zeros(n_col)
    target_sq = resid_sq = 0.0
    r_min_seen = cut
    types = top.types
    n = data.n_beads
    for k, f in enumerate(idx):
        x = torch.as_tensor(data.positions[f], dtype=torch.float64)
        box = torch.zeros(3, 3, dtype=torch.float64) if data.box is None else torch.as_tensor(data.box[f], dtype=torch.float64)
        ei, sh = neighbor_list(x, box, cut)
        keep = ei[0] < ei[1]
        i, j = ei[0][keep].numpy(), ei[1][keep].numpy()
        d = (x[ei[1][keep]] - x[ei[0][keep]] + sh[keep]).numpy()
        r = np.linalg.norm(d, axis=1)
        if len(r):
            r_min_seen = min(r_min_seen, float(r.min()))
        u = d / r[:, None]  # unit vector i -> j
        p = pair_id[types[i], types[j]]
        # wall forces come off the target
        fw = np.zeros_like(r)
        if wall is not None:
            for a in range(nt):
                for b in range(a, nt):
                    sel = p == pair_id[a, b]
                    if np.any(sel):
                        fw[sel] = _wall(r[sel], sigma[a, b], eps)[1]
        tgt = residual[k].copy()
        fvec = fw[:, None] * u  # force on j (along +u), -that on i
        np.add.at(tgt, j, -fvec)
        np.add.at(tgt, i, fvec)
        target_sq += float((forces[f].astype(np.float64) ** 2).sum())
        resid_sq += float((tgt ** 2).sum())
        # design matrix G (3N, n_col): the force on j from S_p is -S_p'(r) u
        dphi = slope(r)  # (P, n_free)
        g = np.zeros((n, 3, n_col))
        cols = p[:, None] * n_free + np.arange(n_free)[None, :]
        contrib = -dphi[:, None, :] * u[:, :, None]  # (P, 3, n_free): force on j
        for c in range(3):
            np.add.at(g[:, c, :], (np.repeat(j, n_free), cols.ravel()), contrib[:, c, :].ravel())
            np.add.at(g[:, c, :], (np.repeat(i, n_free), cols.ravel()), -contrib[:, c, :].ravel())
        g = g.reshape(3 * n, n_col)
        normal += g.T @ g
        rhs += g.T @ tgt.reshape(-1)
    scale = float(np.mean(np.diag(normal))) or 1.0
    normal_data, rhs_data = normal.copy(), rhs.copy()  # the fit's error is measured on the data rows only
    if pseudo_wall is not None:
        sig, eps_w = pseudo_wall
        trace = float(np.trace(normal))
        for a in range(nt):
            for b in range(a, nt):
                if not sig[a, b] > 0:
                    continue
                rw = np.linspace(0.5 * sig[a, b], sig[a, b], 11)
                fw = _wall(rw, sig[a, b], eps_w)[1] + 0.0
                dphi = slope(rw)
                sl = slice(pair_id[a, b] * n_free, (pair_id[a, b] + 1) * n_free)
                block = dphi.T @ dphi
                w = PSEUDO_WALL_WEIGHT * trace / max(float(np.trace(block)) * n_pairs, 1e-300)
                normal[sl, sl] += w * block
                rhs[sl] += w * (-dphi.T @ fw)
                # the top power's coefficient is the wall's own r^-12 amplitude, eps sigma^12 (> 0), so the expansion
                # goes to +inf at short range whatever the lower powers do
                if 12 in powers:
                    j = pair_id[a, b] * n_free + powers.index(12)
                    lock = 1e6 * max(normal[j, j], 1e-300)
                    normal[j, j] += lock
                    rhs[j] += lock * eps_w * sig[a, b] ** 12
    if basis == "spline":
        second = np.diff(np.eye(n_free), 2, axis=0)  # (n_free - 2, n_free)
        penalty = np.kron(np.eye(n_pairs), second.T @ second)
        # S'(cut) = 0: the derivative of the spline at the cutoff, per pair, strongly penalised
        end = slope(np.array([cut]))[0]
        end_pen = np.kron(np.eye(n_pairs), np.outer(end, end)) / max(end @ end, 1e-12)
        system = normal + scale * (smoothness * penalty + ridge * np.eye(n_col) + 1e3 * end_pen)
    else:  # the shifted-force basis is already 0, with 0 force, at the cutoff; the ridge is per column, since
        # the columns of r^-12 ... r^-2 differ by orders of magnitude
        system = normal + ridge * np.diag(np.diag(normal) + 1e-12 * scale)
    coef = np.linalg.solve(system, rhs)
    rss = resid_sq - 2.0 * float(coef @ rhs_data) + float(coef @ normal_data @ coef)  # squared force residuals

    grid = np.linspace(0.0, cut, int(round(cut / table_spacing)) + 1)
    coefficients = np.zeros((nt, nt, n_free))
    for a in range(nt):
        for b in range(a, nt):
            coefficients[a, b] = coefficients[b, a] = coef[pair_id[a, b] * n_free:(pair_id[a, b] + 1) * n_free]
    tables = np.zeros((nt, nt, len(grid)))
    if basis == "spline":
        phi = value(grid)
        for a in range(nt):
            for b in range(a, nt):
                w = _wall(grid, sigma[a, b], eps)[0] if wall is not None else 0.0
                tables[a, b] = tables[b, a] = phi @ coefficients[a, b] + w
        analytic = None
    else:  # the table follows the expression down to 0.5 x the smallest fitted distance, then its tangent
        r_cap = 0.5 * r_min_seen
        rr = np.maximum(grid, r_cap)
        phi, dphi_grid = shifted_powers(rr, cut, powers)
        for a in range(nt):
            for b in range(a, nt):
                e = phi @ coefficients[a, b]
                de = dphi_grid @ coefficients[a, b]
                tables[a, b] = tables[b, a] = e + np.where(grid < r_cap, de * (grid - r_cap), 0.0)
        top_power = int(np.argmax(powers))
        for a in range(nt):
            for b in range(a, nt):
                name = f"{top.type_names[a]}-{top.type_names[b]}"
                if not coefficients[a, b, top_power] > 0:  # else U -> -inf as r -> 0 in the analytic expression
                    raise ValueError(f"the powers fit of pair {name} has a non-positive r^-{powers[top_power]} "
                                     "coefficient, so it is unbounded below at short range; use basis='spline'")
                if pseudo_wall is not None and pseudo_wall[0][a, b] > 0:
                    # no dip below sigma: the expansion stays MIN_BARRIER_KT above U(sigma) all the way in
                    sg, kt = pseudo_wall[0][a, b], pseudo_wall[1]
                    inner = np.linspace(0.02 * sg, 0.7 * sg, 200)
                    u_in = shifted_powers(inner, cut, powers)[0] @ coefficients[a, b]
                    u_sigma = float((shifted_powers(np.array([sg]), cut, powers)[0] @ coefficients[a, b])[0])
                    rise = (u_in.min() - u_sigma) / kt
                    if rise < MIN_BARRIER_KT:
                        raise ValueError(
                            f"the powers fit of pair {name} rises only {rise:.1f} kT inside 0.7 sigma "
                            f"(sigma = {sg:.3f} nm; need {MIN_BARRIER_KT:g}): beads could overlap; use basis='spline'"
                        )
        analytic = {"form": "shifted-force inverse powers", "powers": powers,
                    "coefficients": coefficients.tolist(), "table_below_nm": r_cap}
    tables[..., -1] = 0.0
    n_comp = 3 * n * len(idx)
    provenance = {"fit": {"method": f"force matching (MS-CG), {basis} basis", "target": target, "basis": basis,
                          "n_frames": int(len(idx)), "cutoff_nm": cut, "spacing_nm": spacing,
                          "smoothness": smoothness, "ridge": ridge, "priors": bool(priors),
                          "target_rms": math.sqrt(target_sq / n_comp),
                          "train_rmse": math.sqrt(max(rss, 0.0) / n_comp)}}
    model = NativeModel(list(top.type_names), cut, tables, top.masses_by_type().tolist(), data.periodic,
                        bonded_spec, provenance, analytic)
    return model


def force_rmse_native(model: NativeModel, data: CGData, forces: Optional[np.ndarray] = None,
                      frames: Optional[Sequence[int]] = None) -> float:
    """RMS force error (kJ/mol/nm) of a native model against ``forces`` (default the mapped) on ``frames``."""
    forces = data.forces if forces is None else np.asarray(forces)
    idx = np.arange(data.n_frames) if frames is None else np.asarray(frames, dtype=np.int64)
    sq, count = 0.0, 0
    for f in idx:
        _, pred = model.energy_forces(data.positions[f], data.topology, None if data.box is None else data.box[f])
        sq += float(((pred - forces[f]) ** 2).sum())
        count += pred.size
    return math.sqrt(sq / max(count, 1))


def native_targets(cg_path, force_target: str = "mean", teacher_index: int = 0) -> np.ndarray:
    """Target forces (F, B, 3) of a CG dataset: ``mapped`` (MS-CG), ``mean`` (ensemble mean labels) or
    ``teacher`` (member ``teacher_index`` of the labels)."""
    if force_target not in keys.FORCE_TARGETS:
        raise ValueError(f"force_target must be one of {keys.FORCE_TARGETS}, got {force_target!r}")
    if force_target == "mapped":
        return read_cg(cg_path).forces
    lab = read_labels(cg_path, [keys.MEAN_FORCES if force_target == "mean" else keys.MEMBER_FORCES])
    if force_target == "mean":
        return lab[keys.MEAN_FORCES]
    m = lab[keys.MEMBER_FORCES].shape[0]
    if not 0 <= teacher_index < m:
        raise ValueError(f"teacher_index must lie in 0..{m - 1}, got {teacher_index}")
    return lab[keys.MEMBER_FORCES][teacher_index]


def train_native_student(cg_path, out_dir, *, teacher_dir=None, force_target: str = "mean", teacher_index: int = 0,
                         cutoff: Optional[float] = None, spacing: float = 0.02, smoothness: float = 1e-3,
                         basis: str = "spline") -> dict:
    """Fit a native student and write ``out_dir/native.json`` and ``out_dir/student.json``.

    Frames: the teachers' train (+ val) split when ``teacher_dir`` is given, else all but the last
    10 %; the report gives the force RMSE against the mapped forces on the held-out frames (the
    teachers' test split, else the last 10 %) from :meth:`NativeModel.energy_forces` (the same function as
    the OpenMM System, tests/unit/test_native.py).

    Parameters
    ----------
    cg_path : str or Path
        CG dataset; for ``force_target`` other than ``mapped`` it must hold labels (``cgkd distill``).
    out_dir : str or Path
    teacher_dir : str or Path, optional
        Teacher folder (its split is reused so the held-out frames are the teachers').
    force_target : {"mapped", "mean", "teacher"}
    teacher_index, cutoff, spacing, smoothness, basis : see :func:`native_targets`, :func:`fit_native`
    """
    from cgkd.io.atomic import write_text
    from cgkd.kd.teachers import read_split
    from cgkd.nn.native import save_native

    data = read_cg(cg_path)
    forces = native_targets(cg_path, force_target, teacher_index)
    if teacher_dir is not None:
        split = read_split(teacher_dir)
        if split.get("test"):
            train, held = sorted(split["train"] + split.get("val", [])), list(split["test"])
        else:  # no test frames: hold the validation frames out
            train, held = sorted(split["train"]), list(split.get("val", []))
    else:
        cut_at = max(1, int(round(0.9 * data.n_frames)))
        train, held = list(range(cut_at)), list(range(cut_at, data.n_frames))
    model = fit_native(data, forces, cutoff=cutoff, spacing=spacing, smoothness=smoothness, frames=train,
                       target=force_target, basis=basis)
    model.provenance.update({"cg_data": str(cg_path), "teacher_dir": None if teacher_dir is None else str(teacher_dir)})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_native(out / "native.json", model)
    info = {"student": "native", "basis": basis, "force_target": force_target, "n_train_frames": len(train),
            "n_held_out_frames": len(held), "train_rmse": model.provenance["fit"]["train_rmse"],
            "held_out_rmse_vs_mapped": force_rmse_native(model, data, frames=held) if held else None,
            "model": str(out / "native.json")}
    write_text(out / "student.json", json.dumps(info, indent=1))
    return info


__all__ = ["default_cutoff", "fit_native", "force_rmse_native", "native_targets", "train_native_student"]
