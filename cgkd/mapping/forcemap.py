"""Force maps: linear maps from atomic forces to bead forces, registered by name in ``FORCE_MAPS``.

``basic``   sums the forces of each bead's atoms and of the unmapped atoms tied to them by constraints
            (a C-alpha slice bead takes its constrained H-alpha along, so the constraint force cancels).
``optimal`` is the statistically optimal linear force map (Kraemer et al., J. Phys. Chem. Lett. 2023):
            the matrix M with the smallest mean squared mapped force among all maps that are
            consistent with the position map (M C^T = I), that only use atoms of the bead's own
            molecule (unmapped ones included), and that give equal weight to the two atoms of every
            constraint (so constraint forces, missing from recorded forces, cancel). Fitted in closed
            form per molecule type from data. The math is in docs/mapping.md.

Every fitted map is checked by :func:`check_force_map` (consistency and constraint conditions) before
:func:`fit_force_map` returns it.

A registered force map is a class with the classmethod
``fit(mapping, forces, constraints, allow_constraint_crossing, regularization, pool) -> ForceMap``,
called through :func:`fit_force_map`.
"""

from __future__ import annotations

import warnings
from typing import Dict, Optional, Tuple

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from cgkd.mapping import checks
from cgkd.mapping.linear import apply_matrix
from cgkd.registry import Registry
from cgkd.topology import connected_pieces

FORCE_MAPS: Registry = Registry("force_maps")
#: The optimal map warns when a molecule type has fewer force samples (frames x molecules x 3) than this many
#: per atom: with n free weights per row and fewer samples, the fit can cancel the sampled forces themselves.
MIN_SAMPLES_PER_WEIGHT = 10


class ForceMap:
    """A fixed (n_beads, n_atoms) linear map applied to atomic forces.

    Parameters
    ----------
    name : str
    matrix : scipy.sparse matrix or np.ndarray, shape=(n_beads, n_atoms), float64
    """

    def __init__(self, name: str, matrix):
        self.name = str(name)
        self.matrix = sp.csr_matrix(matrix, dtype=np.float64)

    @property
    def n_beads(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_atoms(self) -> int:
        return self.matrix.shape[1]

    def apply(self, forces) -> np.ndarray:
        """Mapped forces.

        Parameters
        ----------
        forces : np.ndarray, shape=(n_frames, n_atoms, 3), kJ/mol/nm

        Returns
        -------
        np.ndarray, shape=(n_frames, n_beads, 3), float64, kJ/mol/nm
        """
        forces = checks.check_forces(forces, self.n_atoms)
        return apply_matrix(self.matrix, forces)

    def to_dict(self) -> dict:
        coo = self.matrix.tocoo()
        return {
            "name": self.name,
            "shape": list(coo.shape),
            "rows": coo.row.tolist(),
            "cols": coo.col.tolist(),
            "values": coo.data.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ForceMap":
        m = sp.coo_matrix((d["values"], (d["rows"], d["cols"])), shape=tuple(d["shape"]))
        return cls(d["name"], m)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, n_beads={self.n_beads}, n_atoms={self.n_atoms})"


def _bead_signatures(mapping) -> np.ndarray:
    """Per atom an id of the set of beads it belongs to; -1 for atoms in no bead, shape=(n_atoms,), int64."""
    member = mapping.membership_matrix.tocsc()
    member.sort_indices()
    ids: Dict[Tuple[int, ...], int] = {}
    sig = np.full(mapping.n_atoms, -1, dtype=np.int64)
    for a in range(mapping.n_atoms):
        beads = tuple(member.indices[member.indptr[a]:member.indptr[a + 1]].tolist())
        if beads:
            sig[a] = ids.setdefault(beads, len(ids))
    return sig


def constraint_groups(mapping, constraints) -> Tuple[np.ndarray, np.ndarray]:
    """Connected pieces of the constraint graph and the bead set each one is tied to.

    Returns
    -------
    (piece, tied) : np.ndarray, shape=(n_atoms,), int64 each
        ``piece[a]``: index of the constraint piece of atom ``a`` (atoms without constraints are
        pieces of their own). ``tied[a]``: the bead-set id (see ``_bead_signatures``) shared by the
        mapped atoms of ``a``'s piece, -1 when the piece holds no mapped atom, -2 when it holds atoms of
        different bead sets (the piece crosses a bead boundary).
    """
    c = checks.check_constraints(constraints, mapping.n_atoms)
    piece = connected_pieces(mapping.n_atoms, c.tolist())
    sig = _bead_signatures(mapping)
    per_piece: Dict[int, set] = {}
    for a in np.flatnonzero(sig >= 0):
        per_piece.setdefault(int(piece[a]), set()).add(int(sig[a]))
    tied_of_piece = {p: (next(iter(v)) if len(v) == 1 else -2) for p, v in per_piece.items()}
    tied = np.asarray([tied_of_piece.get(int(p), -1) for p in piece], dtype=np.int64)
    return piece, tied


def crossing_constraints(mapping, constraints) -> np.ndarray:
    """Constraints of pieces that tie atoms of different bead sets together, shape=(n, 2), int64.

    A constraint between a mapped atom and an unmapped one does not cross: the unmapped atom's force
    is added to the bead (see ``basic``). A chain of constraints through unmapped atoms that reaches
    two beads does cross.
    """
    c = checks.check_constraints(constraints, mapping.n_atoms)
    _, tied = constraint_groups(mapping, c)
    return c[tied[c[:, 0]] == -2].reshape(-1, 2)


def check_force_map(mapping, matrix, constraints=None, where: str = "force map", atol: float = 1e-6) -> None:
    """Refuse a force map that breaks the conditions for unbiased mapped forces (docs/mapping.md).

    1. Consistency with the position map C: ``M C^T = I``.
    2. Equal weights in every row on the two atoms of each constraint, so the constraint forces that
       recorded forces leave out cancel.

    Parameters
    ----------
    mapping : cgkd.mapping.Mapping
    matrix : scipy.sparse matrix or np.ndarray, shape=(n_beads, n_atoms)
    constraints : np.ndarray, shape=(n_constraints, 2), int64, optional
    atol : float
        Allowed deviation, relative to the largest weight (at least 1).
    """
    m = sp.csr_matrix(matrix, dtype=np.float64)
    if m.shape != (mapping.n_beads, mapping.n_atoms):
        raise ValueError(f"{where}: expected shape ({mapping.n_beads}, {mapping.n_atoms}) (beads, atoms), got {m.shape}")
    if m.nnz and not np.all(np.isfinite(m.data)):
        raise ValueError(f"{where}: weights must be finite")
    tol = atol * max(1.0, float(np.abs(m.data).max()) if m.nnz else 1.0)
    dev = (m @ mapping.position_matrix.T - sp.identity(mapping.n_beads, format="csr")).tocoo()
    if dev.nnz and np.abs(dev.data).max() > tol:
        k = int(np.argmax(np.abs(dev.data)))
        raise ValueError(
            f"{where} is not consistent with the position map: (M C^T)[{dev.row[k]}, {dev.col[k]}] deviates from the "
            f"identity by {dev.data[k]:.3g}; bead {dev.row[k]}'s force must respond to its own position only "
            "(its weights over the bead's own atoms must sum to 1 and over other beads' atoms to 0)")
    c = checks.check_constraints(constraints, mapping.n_atoms)
    if len(c):
        mc = m.tocsc()
        diff = (mc[:, c[:, 0]] - mc[:, c[:, 1]]).tocoo()
        if diff.nnz and np.abs(diff.data).max() > tol:
            k = int(np.argmax(np.abs(diff.data)))
            i, j = c[diff.col[k]]
            raise ValueError(
                f"{where} gives atoms {i} and {j}, which are joined by a constraint, different weights in bead "
                f"{diff.row[k]}'s row (difference {diff.data[k]:.3g}); the constraint force, missing from the recorded "
                "forces, would not cancel")


@FORCE_MAPS.register("basic")
class BasicForceMap(ForceMap):
    """Sum of the atomic forces of each bead's atoms (M_Ii = 1 if atom i is in bead I), plus those of the
    unmapped atoms tied to the bead by a chain of constraints (M_Ii = 1 for them too)."""

    @classmethod
    def fit(
        cls,
        mapping,
        forces=None,
        constraints=None,
        allow_constraint_crossing: bool = False,
        regularization: float = 0.0,
        pool: bool = True,
    ) -> "BasicForceMap":
        if mapping.allow_overlap and np.any(np.asarray(mapping.membership_matrix.sum(axis=0)) > 1):
            raise ValueError(
                "the basic force map needs beads that share no atoms (summing shared atoms breaks consistency); "
                "use the 'optimal' force map for overlapping beads"
            )
        crossing = crossing_constraints(mapping, constraints)
        if len(crossing) and not allow_constraint_crossing:
            raise ValueError(
                f"{len(crossing)} constraint(s) join atoms of different beads (first: {crossing[:3].tolist()}); "
                "their constraint forces are not in the recorded forces, so the summed bead forces are biased. "
                "Use the 'optimal' force map, or pass allow_constraint_crossing=True "
                "(--allow-constraint-crossing) to accept the bias"
            )
        member = mapping.membership_matrix.tolil()
        c = checks.check_constraints(constraints, mapping.n_atoms)
        if len(c):
            piece, tied = constraint_groups(mapping, c)
            sig = _bead_signatures(mapping)
            bead_of_sig = {}
            for b, atoms in enumerate(mapping.bead_atoms):
                for a in atoms:
                    bead_of_sig.setdefault(int(sig[a]), b)
            for a in np.flatnonzero((sig < 0) & (tied >= 0)):
                member[bead_of_sig[int(tied[a])], int(a)] = 1.0
        return cls("basic", member.tocsr())


@FORCE_MAPS.register("optimal")
class OptimalForceMap(ForceMap):
    """Variance-minimising consistent linear force map, fitted per molecule type (see module docstring)."""

    @classmethod
    def fit(
        cls,
        mapping,
        forces=None,
        constraints=None,
        allow_constraint_crossing: bool = False,
        regularization: float = 1e-4,
        pool: bool = True,
    ) -> "OptimalForceMap":
        """Fit from atomic forces.

        Parameters
        ----------
        mapping : cgkd.mapping.Mapping
        forces : np.ndarray, shape=(n_frames, n_atoms, 3), kJ/mol/nm
            Recorded AA forces (without constraint forces).
        constraints : np.ndarray, shape=(n_constraints, 2), int64, optional
        allow_constraint_crossing : bool
            Ignored (the optimal map handles constraints exactly).
        regularization : float
            Ridge added to the force second-moment matrix, relative to its mean diagonal.
        pool : bool
            If True (default), molecules with the same residue name, bead layout and constraints
            share one map, fitted on all their frames together; otherwise each molecule is fitted alone.
        """
        if forces is None:
            raise ValueError("the optimal force map is fitted from data: pass forces with shape (n_frames, n_atoms, 3)")
        forces = checks.check_forces(forces, mapping.n_atoms)
        if forces.shape[0] == 0:
            raise ValueError("forces has 0 frames; the optimal force map needs at least one frame")
        if regularization < 0:
            raise ValueError(f"regularization must be >= 0, got {regularization}")
        c = checks.check_constraints(constraints, mapping.n_atoms)
        mol_of = mapping.atom_molecule
        if len(c) and np.any(mol_of[c[:, 0]] != mol_of[c[:, 1]]):
            raise ValueError("a constraint joins atoms of two different molecules; mapping molecules must hold constraints")
        cmat = mapping.position_matrix.tocsc()
        groups: Dict[Tuple, list] = {}
        local_info = []
        cons_of_mol: Dict[int, list] = {}
        for i, j in c:
            cons_of_mol.setdefault(int(mol_of[i]), []).append((int(i), int(j)))
        for m, atoms in enumerate(mapping.molecule_atoms):
            beads = np.flatnonzero(mapping.bead_molecule == m)
            if beads.size == 0:  # a molecule left out of the CG model (solvent): nothing to fit
                local_info.append(None)
                continue
            local_c = cmat[beads][:, atoms].toarray()  # (k, n)
            pos = {int(a): k for k, a in enumerate(atoms)}
            lc = tuple(sorted((min(pos[i], pos[j]), max(pos[i], pos[j])) for i, j in cons_of_mol.get(m, [])))
            key = (mapping.molecule_names[m], len(atoms), np.round(local_c, 12).tobytes(), local_c.shape, lc)
            if not pool:
                key = key + (m,)
            groups.setdefault(key, []).append(m)
            local_info.append((beads, local_c, lc))
        rows, cols, vals = [], [], []
        for key, mols in groups.items():
            beads0, local_c, lc = local_info[mols[0]]
            idx = np.stack([mapping.molecule_atoms[m] for m in mols])  # (G, n)
            f = forces[:, idx, :].astype(np.float64)  # (F, G, n, 3)
            n_samples = f.shape[0] * f.shape[1] * 3
            if n_samples < MIN_SAMPLES_PER_WEIGHT * f.shape[2]:
                warnings.warn(
                    f"the optimal force map of molecule type {key[0]!r} ({f.shape[2]} atoms, {f.shape[1]} molecule(s)) "
                    f"is fitted on {f.shape[0]} frames ({n_samples} force samples, fewer than "
                    f"{MIN_SAMPLES_PER_WEIGHT} per atom): it can cancel the forces of exactly these frames and "
                    "understate the noise; use more frames, or the basic map", stacklevel=3)
            s = np.einsum("fgia,fgja->ij", f, f) / (f.shape[0] * f.shape[1] * 3)
            w = optimal_rows(s, local_c, lc, regularization, where=f"molecule type {key[0]!r}")  # (k, n)
            for m in mols:
                beads = local_info[m][0]
                atoms = mapping.molecule_atoms[m]
                for r, b in enumerate(beads):
                    rows.extend([b] * len(atoms))
                    cols.extend(atoms.tolist())
                    vals.extend(w[r].tolist())
        mat = sp.coo_matrix((vals, (rows, cols)), shape=(mapping.n_beads, mapping.n_atoms)).tocsr()
        mat.eliminate_zeros()
        return cls("optimal", mat)


def optimal_rows(
    s: np.ndarray, local_c: np.ndarray, constraints, regularization: float, where: str = "molecule"
) -> np.ndarray:
    """Solve min_m m^T S m subject to m C^T = e_I and m_i = m_j for constrained (i, j), for every bead row I.

    Parameters
    ----------
    s : np.ndarray, shape=(n, n), float64, (kJ/mol/nm)^2
        Second moment of the molecule's atomic forces, averaged over frames, molecules and xyz.
    local_c : np.ndarray, shape=(k, n), float64
        Position-map rows of the molecule's k beads restricted to its n atoms.
    constraints : sequence of (i, j)
        Local atom index pairs that must get equal weight.
    regularization : float
        Ridge ``regularization * mean(diag(S))`` added to S.

    Returns
    -------
    np.ndarray, shape=(k, n), float64
        The force-map rows. Solved in the null space of the equality constraints, which copes
        with redundant constraints (e.g. the O-H, O-H, H-H triangle of rigid water).
    """
    k, n = local_c.shape
    d = np.zeros((len(constraints), n))
    for r, (i, j) in enumerate(constraints):
        d[r, i], d[r, j] = 1.0, -1.0
    a = np.vstack([local_c, d])  # (k + c, n)
    b = np.zeros((a.shape[0], k))
    b[:k] = np.eye(k)
    m0, *_ = np.linalg.lstsq(a, b, rcond=None)  # (n, k), minimum-norm particular solutions
    resid = np.abs(a @ m0 - b).max() if b.size else 0.0
    if resid > 1e-8:
        raise ValueError(
            f"{where}: no force map satisfies both consistency with the position map and equal weights on "
            f"constrained atoms (residual {resid:.2e}); a constraint probably joins two beads that have no other "
            "atoms to absorb it (e.g. single-atom beads) - merge those beads"
        )
    null = scipy.linalg.null_space(a)  # (n, q)
    if null.shape[1] == 0:
        return m0.T
    scale = float(np.mean(np.diag(s))) or 1.0
    sr = s + regularization * scale * np.eye(n)
    h = null.T @ sr @ null
    z = -np.linalg.solve(h, null.T @ sr @ m0)
    return (m0 + null @ z).T


def fit_force_map(
    name: str,
    mapping,
    forces=None,
    constraints=None,
    allow_constraint_crossing: bool = False,
    regularization: float = 1e-4,
    pool: bool = True,
) -> ForceMap:
    """Fit the force map registered as ``name`` for ``mapping`` (an unknown name lists the available ones).

    This is the only way a force map is made: applying one (``ForceMap.apply``,
    ``Mapping.map_forces``) never fits. ``basic`` needs no forces; ``optimal`` is fitted on ``forces``
    (n_frames, n_atoms, 3) kJ/mol/nm with the AA ``constraints`` (n, 2).
    """
    cls = FORCE_MAPS.get(name)
    fmap = cls.fit(
        mapping,
        forces=forces,
        constraints=constraints,
        allow_constraint_crossing=allow_constraint_crossing,
        regularization=regularization,
        pool=pool,
    )
    check_force_map(mapping, fmap.matrix, None if allow_constraint_crossing else constraints,
                    where=f"force map {name!r}")
    return fmap


def mean_squared_force(mapped: np.ndarray, frames: Optional[np.ndarray] = None) -> float:
    """Mean over frames, beads and xyz of the squared mapped force, (kJ/mol/nm)^2.

    For any consistent force map this equals E|mean force|^2 (the same for all maps) plus the noise
    variance, so differences and the optimal/basic ordering are differences of noise variance.
    """
    mapped = np.asarray(mapped, dtype=np.float64)
    if frames is not None:
        mapped = mapped[frames]
    return float(np.mean(mapped**2))


__all__ = [
    "FORCE_MAPS",
    "ForceMap",
    "BasicForceMap",
    "OptimalForceMap",
    "check_force_map",
    "constraint_groups",
    "crossing_constraints",
    "fit_force_map",
    "mean_squared_force",
    "optimal_rows",
]
