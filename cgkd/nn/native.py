"""The native CG model: tabulated pair potentials per bead-type pair plus bonded priors, all OpenMM-native.

A :class:`NativeModel` is what a native student is (fitted by :func:`cgkd.kd.native.fit_native`): per
unordered type pair (a, b) an energy table ``U_ab`` on a uniform grid of ``n_points`` distances from 0
to ``cutoff`` (nm), interpolated by the natural cubic spline that OpenMM's ``Continuous1DFunction``
and ``Continuous2DFunction`` use, and zero beyond the cutoff; plus bonded priors in the list form of
``cgkd.export`` (``{"bonds": [...], "angles": [...], "dihedrals": [...]}``), evaluated on the
topology's bonds, angles and dihedrals. All pairs within the cutoff interact, bonded ones included
(as in the neural models and their fits). ``cgkd.openmm.native.native_system`` turns it into a plain
``openmm.System``; :meth:`NativeModel.energy_forces` evaluates the same function without OpenMM
(scipy splines for the pairs, the torch prior modules for the bonded terms).

File: JSON, format ``cgkd-native`` (:func:`save_native`, :func:`load_native`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy.interpolate import CubicSpline

from cgkd.io.atomic import write_text
from cgkd.io.formats import check_format
from cgkd.topology import Topology

FORMAT = "cgkd-native"
FORMAT_VERSION = 1


@dataclass
class NativeModel:
    """Tabulated pair potentials and bonded priors (see the module docstring).

    Attributes
    ----------
    type_names : list of str
    cutoff : float, nm
    tables : np.ndarray, shape=(n_types, n_types, n_points), float64, kJ/mol
        ``tables[a, b]`` = ``tables[b, a]`` = U_ab on ``np.linspace(0, cutoff, n_points)``; the last
        value is 0 (the potential is continuous at the cutoff).
    type_masses : list of float, amu
    periodic : bool
    bonded_priors : dict
        ``{"bonds": [{"types", "r0", "k"}], "angles": [{"types", "theta0", "k"}],
        "dihedrals": [{"types", "terms": [{"n", "k", "phase"}]}]}`` (radians, kJ/mol, nm).
    provenance : dict
    analytic : dict, optional
        For a model fitted on the ``powers`` basis (``cgkd.kd.native.fit_native(basis="powers")``):
        ``{"form": "shifted-force inverse powers", "powers": [n, ...], "coefficients": (n_types, n_types,
        n_powers) kJ/mol nm^n, "table_below_nm": r}``; ``U_ab(r) = sum_n c_n(ab) phi_n(r)`` with
        ``phi_n(r) = r^-n - rc^-n + n rc^-(n+1) (r - rc)``, which ``tables`` sample (below
        ``table_below_nm`` the table continues along the tangent). OpenMM can then use the expression itself.
    """

    type_names: List[str]
    cutoff: float
    tables: np.ndarray
    type_masses: List[float]
    periodic: bool
    bonded_priors: Dict[str, list] = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)
    analytic: Optional[dict] = None

    def __post_init__(self):
        self.type_names = [str(t) for t in self.type_names]
        n = len(self.type_names)
        self.cutoff = float(self.cutoff)
        if not self.cutoff > 0:
            raise ValueError(f"cutoff must be positive (nm), got {self.cutoff}")
        self.tables = np.asarray(self.tables, dtype=np.float64)
        if self.tables.ndim != 3 or self.tables.shape[:2] != (n, n) or self.tables.shape[2] < 4:
            raise ValueError(f"tables must have shape ({n}, {n}, n_points >= 4), got {self.tables.shape}")
        if not np.all(np.isfinite(self.tables)):
            raise ValueError("tables must be finite")
        if not np.allclose(self.tables, np.swapaxes(self.tables, 0, 1)):
            raise ValueError("tables must be symmetric: tables[a, b] == tables[b, a]")
        self.type_masses = [float(m) for m in self.type_masses]
        if len(self.type_masses) != n or any(not m > 0 for m in self.type_masses):
            raise ValueError(f"type_masses must be {n} positive masses (amu), got {self.type_masses}")
        self.periodic = bool(self.periodic)
        self.bonded_priors = {k: list(v) for k, v in (self.bonded_priors or {}).items() if v}
        if self.analytic is not None:
            c = np.asarray(self.analytic.get("coefficients"), dtype=np.float64)
            k = len(self.analytic.get("powers", []))
            if c.shape != (n, n, k) or not np.all(np.isfinite(c)) or not np.allclose(c, np.swapaxes(c, 0, 1)):
                raise ValueError(f"analytic coefficients must be a finite symmetric ({n}, {n}, {k}) array, got {c.shape}")

    @property
    def n_points(self) -> int:
        return self.tables.shape[2]

    @property
    def grid(self) -> np.ndarray:
        """np.ndarray, shape=(n_points,), nm: the distances of the table values."""
        return np.linspace(0.0, self.cutoff, self.n_points)

    def pair_spline(self, a: int, b: int) -> CubicSpline:
        """The natural cubic spline of U_ab (what OpenMM interpolates)."""
        return CubicSpline(self.grid, self.tables[a, b], bc_type="natural")

    def pair_energy(self, a: int, b: int, r) -> np.ndarray:
        """U_ab(r) in kJ/mol (0 at and beyond the cutoff)."""
        r = np.asarray(r, dtype=np.float64)
        return np.where(r < self.cutoff, self.pair_spline(a, b)(np.minimum(r, self.cutoff)), 0.0)

    def pair_force(self, a: int, b: int, r) -> np.ndarray:
        """-dU_ab/dr in kJ/mol/nm (0 beyond the cutoff)."""
        r = np.asarray(r, dtype=np.float64)
        return np.where(r < self.cutoff, -self.pair_spline(a, b)(np.minimum(r, self.cutoff), 1), 0.0)

    # ------------------------------------------------------------------ independent numpy evaluation
    def energy_forces(self, positions, topology: Topology, box: Optional[np.ndarray] = None) -> Tuple[float, np.ndarray]:
        """Energy (kJ/mol) and forces (N, 3) kJ/mol/nm of one frame, evaluated without OpenMM.

        Pairs: every pair within the cutoff (vesin neighbour list, minimum image), scipy splines of the
        tables; bonded priors: the torch prior modules of ``cgkd.nn.priors`` on the topology's terms.
        """
        import torch

        from cgkd.nn.neighbors import neighbor_list

        x = np.asarray(positions, dtype=np.float64)
        types = topology.type_indices(self.type_names, "the native model")
        xt = torch.as_tensor(x)
        bt = torch.zeros(3, 3, dtype=torch.float64) if box is None else torch.as_tensor(np.asarray(box, np.float64))
        ei, sh = neighbor_list(xt, bt, self.cutoff)
        keep = ei[0] < ei[1]
        i, j = ei[0][keep].numpy(), ei[1][keep].numpy()
        d = (xt[ei[1][keep]] - xt[ei[0][keep]] + sh[keep]).numpy()
        r = np.linalg.norm(d, axis=1)
        energy = 0.0
        forces = np.zeros((len(x), 3))
        ti, tj = types[i], types[j]
        for a in range(len(self.type_names)):
            for b in range(a, len(self.type_names)):
                sel = ((ti == a) & (tj == b)) | ((ti == b) & (tj == a))
                if not np.any(sel):
                    continue
                energy += float(self.pair_energy(a, b, r[sel]).sum())
                f_j = (self.pair_force(a, b, r[sel]) / r[sel])[:, None] * d[sel]  # positive force pushes apart
                np.add.at(forces, j[sel], f_j)
                np.add.at(forces, i[sel], -f_j)
        e_b, f_b = self._bonded(xt, bt, topology, types)
        return energy + e_b, forces + f_b

    def _bonded(self, x, box, topology: Topology, types: np.ndarray) -> Tuple[float, np.ndarray]:
        import torch

        from cgkd.nn.priors import FourierDihedrals, HarmonicAngles, HarmonicBonds

        modules = []
        for kind, cls in (("bonds", HarmonicBonds), ("angles", HarmonicAngles), ("dihedrals", FourierDihedrals)):
            terms = topology.terms(kind)
            entries = self.bonded_priors.get(kind)
            if not entries or not len(terms):
                continue
            names = [self.type_names[t] for t in types]
            have = {tuple(e["types"]) for e in entries} | {tuple(e["types"])[::-1] for e in entries}
            terms = [t for t in terms.tolist() if tuple(names[k] for k in t) in have]
            if terms:
                modules.append(cls(self.type_names, entries, terms, len(types)).double())
        if not modules:
            return 0.0, np.zeros((len(types), 3))
        xg = x.clone().requires_grad_(True)
        t = torch.as_tensor(np.array(types))
        batch = torch.zeros(len(types), dtype=torch.int64)
        e = sum(m(xg, t, box.unsqueeze(0), batch, 1).sum() for m in modules)
        (g,) = torch.autograd.grad(e, xg)
        return float(e.detach()), -g.numpy()

    # ------------------------------------------------------------------ file
    def to_dict(self) -> dict:
        n = len(self.type_names)
        pairs = [{"types": [self.type_names[a], self.type_names[b]], "energy": self.tables[a, b].tolist()}
                 for a in range(n) for b in range(a, n)]
        return {"format": FORMAT, "format_version": FORMAT_VERSION,
                "units": {"length": "nm", "energy": "kJ/mol", "mass": "amu", "angle": "rad"},
                "type_names": self.type_names, "cutoff": self.cutoff, "n_points": self.n_points, "pairs": pairs,
                "type_masses": self.type_masses, "periodic": self.periodic, "bonded_priors": self.bonded_priors,
                "provenance": self.provenance, "analytic": self.analytic}

    @classmethod
    def from_dict(cls, d: dict, where: str = "native model") -> "NativeModel":
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected a JSON object, got {type(d).__name__}")
        check_format(d.get("format"), d.get("format_version"), FORMAT, FORMAT_VERSION, where)
        names = list(d["type_names"])
        n, m = len(names), int(d["n_points"])
        tables = np.full((n, n, m), np.nan)
        for k, p in enumerate(d["pairs"]):
            a, b = (names.index(t) for t in p["types"])
            tables[a, b] = tables[b, a] = p["energy"]
        if np.isnan(tables).any():
            raise ValueError(f"{where}: pairs do not give a table for every type pair of {names}")
        return cls(names, d["cutoff"], tables, d["type_masses"], d["periodic"], d.get("bonded_priors") or {},
                   d.get("provenance") or {}, d.get("analytic"))


def save_native(path, model: NativeModel) -> None:
    """Write ``model`` as JSON (atomically)."""
    write_text(path, json.dumps(model.to_dict()))


def load_native(path) -> NativeModel:
    """Read a native model file (checks format and version)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"native model file {str(path)!r} does not exist")
    try:
        d = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a {FORMAT} file (not JSON: {exc})") from None
    return NativeModel.from_dict(d, str(path))


def is_native_file(path) -> bool:
    """True for a JSON file whose format is ``cgkd-native`` (cheap check, for dispatch)."""
    path = Path(path)
    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        return json.loads(path.read_text()).get("format") == FORMAT
    except (ValueError, AttributeError):
        return False


__all__ = ["FORMAT", "FORMAT_VERSION", "NativeModel", "is_native_file", "load_native", "save_native"]
