"""Prior energy terms (torch modules) whose energies add to the network's.

Functional forms (identical in OpenMM, docs/design.md "Priors"):

- ``pair_repulsion``: per bead-type pair (a, b) a purely repulsive wall that vanishes, with its
  force, at ``sigma_ab``: ``E = eps [(sigma/r)^12 - 1 + 12 (r - sigma)/sigma]`` for r < sigma,
  0 beyond (a shifted-force r^-12 term; value and force are continuous at sigma). ``sigma_ab`` is
  the distance below which the CG pair distribution is empty (see :mod:`cgkd.nn.prior_fit`), so the
  wall acts only where the data never go and does not bias sampled distances. Evaluated on the
  network's neighbour list (all pairs, bonded ones included; the fit includes them too, so the two
  agree). It stays inside the exported TorchScript module.
- ``bonds``: ``E = 0.5 k (r - r0)^2`` (k kJ/mol/nm^2, r0 nm) -> OpenMM ``HarmonicBondForce``;
- ``angles``: ``E = 0.5 k (theta - theta0)^2`` (k kJ/mol/rad^2, theta0 rad) -> ``HarmonicAngleForce``;
- ``dihedrals``: ``E = sum_n k_n (1 + cos(n phi - phase_n))`` (IUPAC sign of phi, as OpenMM)
  -> ``PeriodicTorsionForce``.

Bonded priors hold the term topology of one frame (bead index tuples: ``Topology.bonds``,
``.angles``, ``.dihedrals`` of the CG data) and
parameters per bead-type tuple (a tuple and its reverse share parameters). In a batch of G frames
of the same system the terms are repeated with offsets ``g * n_beads``. Distances, angles and
dihedrals come from :mod:`cgkd.nn.geometry` (minimum image of the frame's box, so molecules may be
split across the box; IUPAC dihedral sign). At export the bonded
priors become native OpenMM forces, described by :meth:`bonded_prior_spec` in the list form of
``cgkd.export`` (``{"bonds": [{"types": [a, b], "r0": .., "k": ..}], ...}``).
"""

from __future__ import annotations

import math
from typing import Dict, List, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from cgkd.nn import geometry
from cgkd.nn.base import PRIORS

#: Keeps acos away from +-1 so the angle gradient stays finite for (near) linear triplets.
ANGLE_CLAMP = 1.0 - 1e-7


def _type_index(type_names: Sequence[str], names: Sequence[str], where: str) -> List[int]:
    out = []
    for n in names:
        if n not in type_names:
            raise ValueError(f"{where}: type {n!r} is not one of the bead types {list(type_names)}")
        out.append(list(type_names).index(n))
    return out


def _flat(idx: Sequence[int], n_types: int) -> int:
    f = 0
    for t in idx:
        f = f * n_types + t
    return f


class NonbondedPrior(nn.Module):
    """Base of priors evaluated on the neighbour list (exported inside the TorchScript module)."""

    is_bonded = False


class BondedPrior(nn.Module):
    """Base of priors on bead tuples (exported as native OpenMM forces)."""

    is_bonded = True
    kind = ""
    arity = 0


@PRIORS.register("pair_repulsion")
class PairRepulsion(NonbondedPrior):
    """Shifted-force r^-12 wall per type pair; see the module docstring.

    Parameters
    ----------
    type_names : list of str
    entries : list of dict
        ``{"types": [a, b], "sigma": nm}``; pairs not listed get no wall.
    epsilon : float, kJ/mol
    exclusions : array-like, shape=(n, 2), int, optional
        Bead pairs (indices within one frame) that feel no wall: bonded neighbours (1-2 and 1-3
        pairs), whose distances the bonded priors govern. Needs ``n_beads``.
    n_beads : int
        Beads per frame (with exclusions; frames of a batch are consecutive blocks of ``n_beads``).
    """

    def __init__(self, type_names: Sequence[str], entries: Sequence[dict], epsilon: float,
                 exclusions=None, n_beads: int = 0):
        super().__init__()
        if not epsilon > 0:
            raise ValueError(f"epsilon must be positive (kJ/mol), got {epsilon}")
        self.type_names = [str(t) for t in type_names]
        self.entries = [{"types": [str(a) for a in e["types"]], "sigma": float(e["sigma"])} for e in entries]
        n = len(self.type_names)
        sigma = torch.zeros(n, n, dtype=torch.float64)
        for k, e in enumerate(self.entries):
            if len(e["types"]) != 2:
                raise ValueError(f"entries[{k}]: expected 2 type names, got {e['types']}")
            if not e["sigma"] >= 0 or not math.isfinite(e["sigma"]):
                raise ValueError(f"entries[{k}]: sigma must be a non-negative number of nm, got {e['sigma']}")
            a, b = _type_index(self.type_names, e["types"], f"entries[{k}]")
            sigma[a, b] = e["sigma"]
            sigma[b, a] = e["sigma"]
        self.epsilon = float(epsilon)
        self.register_buffer("sigma", sigma.to(torch.get_default_dtype()))
        pairs = np.asarray([] if exclusions is None else exclusions, dtype=np.int64).reshape(-1, 2)
        self.n_beads = int(n_beads)
        if pairs.size and (self.n_beads < 1 or pairs.min() < 0 or pairs.max() >= self.n_beads):
            raise ValueError(f"exclusions must index beads 0..n_beads-1 with n_beads >= 1, got n_beads={n_beads} and "
                             f"values {pairs.min()}..{pairs.max()}")
        self.exclusions = sorted({(int(min(a, b)), int(max(a, b))) for a, b in pairs if a != b})
        keys = sorted({a * self.n_beads + b for a, b in self.exclusions} | {b * self.n_beads + a for a, b in self.exclusions})
        # not in the state dict (rebuilt from the config), so model files written before exclusions still load
        self.register_buffer("excluded", torch.as_tensor(keys, dtype=torch.int64), persistent=False)

    def max_sigma(self) -> float:
        return float(self.sigma.max()) if self.sigma.numel() else 0.0

    def config(self) -> dict:
        out = {"type_names": list(self.type_names), "entries": self.entries, "epsilon": self.epsilon}
        if self.exclusions:
            out |= {"exclusions": [list(p) for p in self.exclusions], "n_beads": self.n_beads}
        return out

    @classmethod
    def from_config(cls, config: dict) -> "PairRepulsion":
        return cls(config["type_names"], config["entries"], config["epsilon"], exclusions=config.get("exclusions"),
                   n_beads=int(config.get("n_beads", 0)))

    def pair_energy(self, r: Tensor, ti: Tensor, tj: Tensor) -> Tensor:
        """Energy of each pair, shape like ``r`` (kJ/mol)."""
        sigma = self.sigma[ti, tj].to(r.dtype)
        on = sigma > 0
        safe = torch.where(on, sigma, torch.ones_like(sigma))
        rr = torch.minimum(r, safe)
        x = safe / rr
        x6 = x * x * x
        x6 = x6 * x6
        e = self.epsilon * (x6 * x6 - 1.0 + 12.0 * (rr - safe) / safe)
        return torch.where(on, e, torch.zeros_like(e))

    def forward(
        self, positions: Tensor, types: Tensor, edge_index: Tensor, edge_shifts: Tensor, batch: Tensor, n_graphs: int
    ) -> Tensor:
        """Energy per graph, shape (n_graphs,), kJ/mol (full list: each pair counted twice, halved).

        Only the pairs closer than their sigma feel the wall, so they are picked first without gradients
        and the energy (and its backward pass) runs on those alone: a few per cent of the edges.
        """
        i = edge_index[0]
        j = edge_index[1]
        n = self.sigma.size(0)
        with torch.no_grad():
            d = positions[j] - positions[i] + edge_shifts
            reach = self.sigma.flatten()[types[i] * n + types[j]].to(positions.dtype)
            keep = ((d * d).sum(-1) < reach * reach).nonzero().squeeze(1)
        i = i.index_select(0, keep)
        j = j.index_select(0, keep)
        vec = positions[j] - positions[i] + edge_shifts.index_select(0, keep)
        r = torch.sqrt((vec * vec).sum(-1))
        e = 0.5 * self.pair_energy(r, types[i], types[j])
        if self.excluded.numel() > 0:
            if positions.size(0) != n_graphs * self.n_beads:
                raise ValueError("pair_repulsion prior with exclusions was built for a fixed number of beads per frame")
            key = (i % self.n_beads) * self.n_beads + (j % self.n_beads)
            at = torch.searchsorted(self.excluded, key).clamp(max=self.excluded.numel() - 1)
            e = torch.where(self.excluded[at] == key, torch.zeros_like(e), e)
        return torch.zeros(n_graphs, dtype=positions.dtype, device=positions.device).index_add(0, batch[i], e)


class _TupleTable(BondedPrior):
    """Shared machinery: type-tuple parameter tables and per-frame term topology."""

    def _setup(self, type_names: Sequence[str], terms, n_beads: int):
        self.kind = type(self).kind  # instance attributes, so TorchScript sees them
        self.arity = type(self).arity
        self.type_names = [str(t) for t in type_names]
        self.n_types = len(self.type_names)
        terms = np.array(terms, dtype=np.int64).reshape(-1, self.arity)  # a writable copy
        if int(n_beads) < 1:
            raise ValueError(f"n_beads must be >= 1, got {n_beads}")
        if terms.size and (terms.min() < 0 or terms.max() >= n_beads):
            raise ValueError(f"terms must index beads 0..{n_beads - 1}, got values {terms.min()}..{terms.max()}")
        self.n_beads = int(n_beads)
        self.register_buffer("terms", torch.as_tensor(terms))

    def _slots(self, names: Sequence[str], where: str) -> List[int]:
        idx = _type_index(self.type_names, names, where)
        return sorted({_flat(idx, self.n_types), _flat(idx[::-1], self.n_types)})

    def check_types(self, types: Tensor) -> None:
        """Raise ValueError if a term of the topology has bead types without parameters."""
        if self.terms.numel() == 0:
            return
        t = types[: self.n_beads][self.terms]
        flat = torch.zeros(t.size(0), dtype=torch.int64)
        for a in range(self.arity):
            flat = flat * self.n_types + t[:, a]
        missing = ~self.defined[flat]
        if bool(missing.any()):
            bad = t[missing][0].tolist()
            raise ValueError(
                f"{self.kind} prior has no parameters for bead types {[self.type_names[b] for b in bad]} "
                f"(term {self.terms[missing][0].tolist()})"
            )

    def _batched_terms(self, n_nodes: int, n_graphs: int) -> Tensor:
        if n_nodes != n_graphs * self.n_beads:
            raise ValueError(
                f"{self.kind} prior was built for {self.n_beads} beads per frame but the batch has "
                f"{n_nodes} beads in {n_graphs} frames"
            )
        offsets = torch.arange(n_graphs, device=self.terms.device) * self.n_beads
        return (self.terms.unsqueeze(0) + offsets.view(-1, 1, 1)).reshape(-1, self.arity)

    def _flat_types(self, types: Tensor, terms: Tensor) -> Tensor:
        t = types[terms]
        flat = t[:, 0]
        for a in range(1, self.arity):
            flat = flat * self.n_types + t[:, a]
        return flat

    def config(self) -> dict:
        return {
            "type_names": list(self.type_names),
            "entries": self.entries,
            "terms": self.terms.tolist(),
            "n_beads": self.n_beads,
        }

    @classmethod
    def from_config(cls, config: dict):
        return cls(config["type_names"], config["entries"], config["terms"], config["n_beads"])

    def bonded_prior_spec(self) -> Dict[str, list]:
        """``{kind: [entry, ...]}`` in the list form of ``cgkd.export`` (docs/design.md)."""
        return {self.kind: [dict(e) for e in self.entries]}


@PRIORS.register("bonds")
class HarmonicBonds(_TupleTable):
    """``E = 0.5 k (r - r0)^2`` per bond; entries ``{"types": [a, b], "k": kJ/mol/nm^2, "r0": nm}``."""

    kind = "bonds"
    arity = 2

    def __init__(self, type_names: Sequence[str], entries: Sequence[dict], terms, n_beads: int):
        super().__init__()
        self._setup(type_names, terms, n_beads)
        size = self.n_types**2
        k = torch.zeros(size, dtype=torch.float64)
        r0 = torch.zeros(size, dtype=torch.float64)
        defined = torch.zeros(size, dtype=torch.bool)
        self.entries = []
        for n, e in enumerate(entries):
            entry = {"types": [str(a) for a in e["types"]], "r0": float(e["r0"]), "k": float(e["k"])}
            if entry["k"] < 0 or entry["r0"] < 0:
                raise ValueError(f"bonds entries[{n}] {entry['types']}: k and r0 must be >= 0, got {entry}")
            for s in self._slots(entry["types"], f"bonds entries[{n}]"):
                k[s], r0[s], defined[s] = entry["k"], entry["r0"], True
            self.entries.append(entry)
        self.register_buffer("k", k.to(torch.get_default_dtype()))
        self.register_buffer("r0", r0.to(torch.get_default_dtype()))
        self.register_buffer("defined", defined)

    def forward(self, positions: Tensor, types: Tensor, box: Tensor, batch: Tensor, n_graphs: int) -> Tensor:
        """Energy per graph, shape (n_graphs,), kJ/mol."""
        terms = self._batched_terms(positions.size(0), n_graphs)
        graph = batch[terms[:, 0]]
        r = geometry.distances(positions, terms, box.to(positions.dtype)[graph])
        flat = self._flat_types(types, terms)
        e = 0.5 * self.k[flat].to(r.dtype) * (r - self.r0[flat].to(r.dtype)) ** 2
        return torch.zeros(n_graphs, dtype=positions.dtype, device=positions.device).index_add(0, graph, e)


@PRIORS.register("angles")
class HarmonicAngles(_TupleTable):
    """``E = 0.5 k (theta - theta0)^2``; entries ``{"types": [a, b, c], "k": kJ/mol/rad^2, "theta0": rad}``."""

    kind = "angles"
    arity = 3

    def __init__(self, type_names: Sequence[str], entries: Sequence[dict], terms, n_beads: int):
        super().__init__()
        self._setup(type_names, terms, n_beads)
        self.clamp = ANGLE_CLAMP
        size = self.n_types**3
        k = torch.zeros(size, dtype=torch.float64)
        theta0 = torch.zeros(size, dtype=torch.float64)
        defined = torch.zeros(size, dtype=torch.bool)
        self.entries = []
        for n, e in enumerate(entries):
            entry = {"types": [str(a) for a in e["types"]], "theta0": float(e["theta0"]), "k": float(e["k"])}
            if entry["k"] < 0 or not 0 <= entry["theta0"] <= math.pi:
                raise ValueError(f"angles entries[{n}] {entry['types']}: need k >= 0, 0 <= theta0 <= pi, got {entry}")
            for s in self._slots(entry["types"], f"angles entries[{n}]"):
                k[s], theta0[s], defined[s] = entry["k"], entry["theta0"], True
            self.entries.append(entry)
        self.register_buffer("k", k.to(torch.get_default_dtype()))
        self.register_buffer("theta0", theta0.to(torch.get_default_dtype()))
        self.register_buffer("defined", defined)

    def forward(self, positions: Tensor, types: Tensor, box: Tensor, batch: Tensor, n_graphs: int) -> Tensor:
        """Energy per graph, shape (n_graphs,), kJ/mol."""
        terms = self._batched_terms(positions.size(0), n_graphs)
        graph = batch[terms[:, 0]]
        theta = geometry.angles(positions, terms, box.to(positions.dtype)[graph], self.clamp)
        flat = self._flat_types(types, terms)
        e = 0.5 * self.k[flat].to(theta.dtype) * (theta - self.theta0[flat].to(theta.dtype)) ** 2
        return torch.zeros(n_graphs, dtype=positions.dtype, device=positions.device).index_add(0, graph, e)


@PRIORS.register("dihedrals")
class FourierDihedrals(_TupleTable):
    """``E = sum_n k_n (1 + cos(n phi - phase_n))``.

    Entries ``{"types": [a, b, c, d], "terms": [{"n": int, "k": kJ/mol, "phase": rad}, ...]}``.
    Reversed tuples share parameters (the IUPAC dihedral is the same for d-c-b-a).
    """

    kind = "dihedrals"
    arity = 4

    def __init__(self, type_names: Sequence[str], entries: Sequence[dict], terms, n_beads: int):
        super().__init__()
        self._setup(type_names, terms, n_beads)
        self.entries = []
        for n, e in enumerate(entries):
            harmonics = [{"n": int(t["n"]), "k": float(t["k"]), "phase": float(t["phase"])} for t in e["terms"]]
            if any(t["n"] < 1 or t["k"] < 0 for t in harmonics):
                raise ValueError(f"dihedrals entries[{n}] {list(e['types'])}: need n >= 1 and k >= 0, got {harmonics}")
            self.entries.append({"types": [str(a) for a in e["types"]], "terms": harmonics})
        n_max = max([t["n"] for e in self.entries for t in e["terms"]] + [1])
        size = self.n_types**4
        k = torch.zeros(size, n_max, dtype=torch.float64)
        phase = torch.zeros(size, n_max, dtype=torch.float64)
        defined = torch.zeros(size, dtype=torch.bool)
        for n, entry in enumerate(self.entries):
            for s in self._slots(entry["types"], f"dihedrals entries[{n}]"):
                defined[s] = True
                for t in entry["terms"]:
                    if k[s, t["n"] - 1] != 0:
                        raise ValueError(f"dihedrals entries[{n}] {entry['types']}: periodicity {t['n']} given twice")
                    k[s, t["n"] - 1], phase[s, t["n"] - 1] = t["k"], t["phase"]
        self.register_buffer("k", k.to(torch.get_default_dtype()))
        self.register_buffer("phase", phase.to(torch.get_default_dtype()))
        self.register_buffer("periodicity", torch.arange(1, n_max + 1).to(torch.get_default_dtype()))
        self.register_buffer("defined", defined)

    def forward(self, positions: Tensor, types: Tensor, box: Tensor, batch: Tensor, n_graphs: int) -> Tensor:
        """Energy per graph, shape (n_graphs,), kJ/mol."""
        terms = self._batched_terms(positions.size(0), n_graphs)
        graph = batch[terms[:, 0]]
        phi = geometry.dihedrals(positions, terms, box.to(positions.dtype)[graph])
        flat = self._flat_types(types, terms)
        k = self.k[flat].to(phi.dtype)
        arg = phi.unsqueeze(-1) * self.periodicity.to(phi.dtype) - self.phase[flat].to(phi.dtype)
        e = (k * (1.0 + torch.cos(arg))).sum(-1)
        return torch.zeros(n_graphs, dtype=positions.dtype, device=positions.device).index_add(0, graph, e)


@PRIORS.register("impropers")
class FourierImpropers(FourierDihedrals):
    """The :class:`FourierDihedrals` form on the topology's ``impropers`` (chosen quadruples, e.g. the
    handedness at C-alpha); its own kind, so it is fitted, exported and analysed apart from the proper dihedrals."""

    kind = "impropers"
    arity = 4

