"""``CGPotential``: a representation model plus priors, its single-frame (exported) and batched
(training) entry points, and ``save_potential``/``load_potential``.

What is where (docs/design.md, "Models" and "Priors"):

- ``forward(positions, types, box) -> energy`` (TorchScript, exported): network + non-bonded
  priors (pair repulsion). Bonded priors are *not* in it: the export adds them as native OpenMM
  forces from :meth:`CGPotential.bonded_prior_spec`.
- ``forward_batch(positions, types, box, batch, n_graphs)`` (training, eager): network + all
  priors (bonded ones included, their topology is stored in the prior modules), with the
  neighbour lists computed inside with the potential's cutoff.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn

from cgkd import keys
from cgkd.io.atomic import atomic_path
from cgkd.io.formats import FormatError, check_format
from cgkd.nn.base import ARCHITECTURES, PRIORS, build_model, config_dict
from cgkd.nn.neighbors import DEFAULT_SKIN, NeighborList, batch_neighbor_list

FORMAT = "cgkd-model"
FORMAT_VERSION = 1


class CGPotential(nn.Module):
    """Representation model + priors.

    Parameters
    ----------
    model : nn.Module
        A registered architecture (``build_model``); its ``cutoff`` must not exceed ``cutoff``.
    priors : list of nn.Module
        Prior modules (``cgkd.nn.priors``); non-bonded and bonded ones are kept apart.
    type_names : list of str
        Bead type names, indexed by ``types``.
    cutoff : float, nm
        Neighbour-list cutoff (network and pair priors).
    """

    def __init__(self, model: nn.Module, priors: Sequence[nn.Module], type_names: Sequence[str], cutoff: float):
        super().__init__()
        if not cutoff > 0:
            raise ValueError(f"cutoff must be positive (nm), got {cutoff}")
        model_cutoff = float(getattr(model, "cutoff", cutoff))
        if model_cutoff > cutoff + 1e-12:
            raise ValueError(f"cutoff ({cutoff} nm) is shorter than the model's cutoff ({model_cutoff} nm)")
        n_types = getattr(model, "n_types", len(type_names))
        if n_types != len(type_names):
            raise ValueError(f"type_names has {len(type_names)} names but the model was built for {n_types} types")
        nonbonded: List[nn.Module] = []
        bonded: List[nn.Module] = []
        for k, p in enumerate(priors):
            if not hasattr(p, "is_bonded"):
                raise ValueError(f"priors[{k}] is a {type(p).__name__}, expected a cgkd.nn.priors prior module")
            if list(p.type_names) != list(type_names):
                raise ValueError(f"priors[{k}] has type_names {p.type_names}, expected {list(type_names)}")
            (bonded if p.is_bonded else nonbonded).append(p)
            if not p.is_bonded and p.max_sigma() > cutoff:
                raise ValueError(f"priors[{k}] acts up to {p.max_sigma()} nm, beyond the cutoff {cutoff} nm")
        self.model = model
        self.nonbonded_priors = nn.ModuleList(nonbonded)
        self.bonded_priors = nn.ModuleList(bonded)
        self.type_names: List[str] = [str(t) for t in type_names]
        self.cutoff = float(cutoff)
        self.neighbors = NeighborList(self.cutoff, DEFAULT_SKIN)

    @torch.jit.unused
    def set_neighbor_skin(self, skin: float) -> None:
        """Verlet skin (nm) of the neighbour list that :meth:`forward` keeps between calls (MD steps).

        The energy does not depend on it; 0 searches on every call. Default
        :data:`cgkd.nn.neighbors.DEFAULT_SKIN`.
        """
        self.neighbors = NeighborList(self.cutoff, skin)

    def forward(self, positions: Tensor, types: Tensor, box: Tensor) -> Tensor:
        """Energy of one frame without bonded priors (the exported part).

        Parameters
        ----------
        positions : Tensor, shape=(N, 3), float32 or float64 (the model's dtype), nm
        types : Tensor, shape=(N,), int64
        box : Tensor, shape=(3, 3), nm; all zero for a non-periodic system

        Returns
        -------
        Tensor, shape=(), kJ/mol
        """
        edge_index, edge_shifts = self.neighbors(positions, box)
        return self.energy_on_edges(positions, types, edge_index, edge_shifts)

    @torch.jit.export
    def energy_on_edges(self, positions: Tensor, types: Tensor, edge_index: Tensor, edge_shifts: Tensor) -> Tensor:
        """Energy (kJ/mol) of one frame on a given neighbour list (network + non-bonded priors).

        Lets several potentials with the same cutoff share one neighbour list (``EnsemblePotential``).
        """
        batch = torch.zeros(positions.size(0), dtype=torch.int64, device=positions.device)
        out = self.model(positions, types, edge_index, edge_shifts, batch, 1)
        energy = out[keys.NODE_ENERGY].sum()
        for prior in self.nonbonded_priors:
            energy = energy + prior(positions, types, edge_index, edge_shifts, batch, 1).sum()
        return energy

    @torch.jit.unused
    def forward_batch(
        self,
        positions: Tensor,
        types: Tensor,
        box: Tensor,
        batch: Tensor,
        n_graphs: int,
        include_bonded: bool = True,
        compute_forces: bool = False,
        create_graph: Optional[bool] = None,
    ) -> Dict[str, Tensor]:
        """Batched evaluation for training.

        Parameters
        ----------
        positions : Tensor, shape=(N, 3), nm
            Beads of ``n_graphs`` frames, frame by frame.
        types : Tensor, shape=(N,), int64
        box : Tensor, shape=(n_graphs, 3, 3), nm; all zero rows-blocks for non-periodic frames
        batch : Tensor, shape=(N,), int64, frame index of each bead (sorted)
        n_graphs : int
        include_bonded : bool
            Add the bonded priors (they need ``N == n_graphs * n_beads`` of their topology).
        compute_forces : bool
            Also return ``keys.FORCE`` = -dE/dx (N, 3) kJ/mol/nm by autograd.
        create_graph : bool or None
            Keep the force graph for a backward pass through it; default ``self.training``.

        Returns
        -------
        dict with ``keys.ENERGY`` (G,) kJ/mol, ``keys.NODE_ENERGY`` (N,) kJ/mol (network only),
        ``keys.NODE_FEATURES`` (N, H), the model's vector/edge features, ``keys.EDGE_INDEX`` (2, E) int64
        (the neighbour list the edge features belong to), ``keys.FORCE`` if asked, and ``"prior_energy"``
        (G,) kJ/mol.
        """
        if compute_forces and not positions.requires_grad:
            positions = positions.detach().requires_grad_(True)
        edge_index, edge_shifts = batch_neighbor_list(positions, box.to(positions.dtype), batch, n_graphs, self.cutoff)
        out = dict(self.model(positions, types, edge_index, edge_shifts, batch, n_graphs))
        node_energy = out[keys.NODE_ENERGY]
        net = torch.zeros(n_graphs, dtype=positions.dtype, device=positions.device).index_add(0, batch, node_energy)
        prior_energy = torch.zeros_like(net)
        for prior in self.nonbonded_priors:
            prior_energy = prior_energy + prior(positions, types, edge_index, edge_shifts, batch, n_graphs)
        if include_bonded:
            for prior in self.bonded_priors:
                prior_energy = prior_energy + prior(positions, types, box.to(positions.dtype), batch, n_graphs)
        out[keys.ENERGY] = net + prior_energy
        out["prior_energy"] = prior_energy
        out[keys.EDGE_INDEX] = edge_index
        if compute_forces:
            graph = self.training if create_graph is None else bool(create_graph)
            (grad,) = torch.autograd.grad(out[keys.ENERGY].sum(), positions, create_graph=graph)
            out[keys.FORCE] = -grad
        return out

    @torch.jit.unused
    def set_energy_scale(self, value: float) -> None:
        """Set the network's global energy scale, kJ/mol (see :mod:`cgkd.nn.base`)."""
        self.model.set_energy_scale(value)

    @torch.jit.unused
    def bonded_prior_spec(self) -> Dict[str, list]:
        """Bonded priors for the export: ``{"bonds": [...], "angles": [...], "dihedrals": [...], "impropers": [...]}``."""
        spec: Dict[str, list] = {"bonds": [], "angles": [], "dihedrals": [], "impropers": []}
        for prior in self.bonded_priors:
            for kind, entries in prior.bonded_prior_spec().items():
                spec[kind].extend(entries)
        return spec

    @torch.jit.unused
    def check_types(self, types: Tensor) -> None:
        """Raise ValueError if a bonded term has bead types without prior parameters."""
        for prior in self.bonded_priors:
            prior.check_types(types)


def potential_config(potential: CGPotential) -> dict:
    """JSON-serialisable recipe to rebuild ``potential`` (architecture, config, priors, types, cutoff)."""
    model = potential.model
    arch = None
    for name in ARCHITECTURES.names():
        if type(model) is ARCHITECTURES.get(name):
            arch = name
    if arch is None:
        raise ValueError(f"potential.model is a {type(model).__name__}, which is not a registered architecture")
    priors = []
    for prior in list(potential.nonbonded_priors) + list(potential.bonded_priors):
        kinds = [n for n in PRIORS.names() if type(prior) is PRIORS.get(n)]
        if not kinds:
            raise ValueError(f"prior {type(prior).__name__} is not registered in cgkd.nn.PRIORS; it cannot be saved")
        kind = kinds[0]
        priors.append({"kind": kind, "config": prior.config()})
    return {
        "architecture": arch,
        "config": config_dict(model.config),
        "n_types": model.n_types,
        "type_names": list(potential.type_names),
        "cutoff": potential.cutoff,
        "priors": priors,
    }


def potential_from_config(config: dict) -> CGPotential:
    """Build an (untrained) :class:`CGPotential` from :func:`potential_config`'s dict."""
    model = build_model(config["architecture"], dict(config["config"]), int(config["n_types"]))
    priors = [PRIORS.get(p["kind"]).from_config(p["config"]) for p in config["priors"]]
    return CGPotential(model, priors, config["type_names"], float(config["cutoff"]))


def save_potential(path, potential: CGPotential, extra: Optional[dict] = None) -> None:
    """Save ``potential`` as state dict + JSON recipe (format ``cgkd-model``), atomically.

    The file holds only tensors, strings and numbers (``torch.load(weights_only=True)``).
    ``extra`` is JSON-serialisable caller metadata (e.g. training provenance).
    """
    if not isinstance(potential, CGPotential):
        raise ValueError(f"potential must be a CGPotential, got {type(potential).__name__}")
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "potential": potential_config(potential)}
    meta["dtype"] = str(next(potential.parameters()).dtype).replace("torch.", "")
    meta["extra"] = dict(extra or {})
    payload = {"metadata": json.dumps(meta), "state_dict": {k: v.detach().cpu() for k, v in potential.state_dict().items()}}
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def load_potential(path) -> CGPotential:
    """Load a potential written by :func:`save_potential` (checks format and version); eval mode.

    The metadata dict (including ``extra``) is available as ``potential.metadata``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"potential file {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle/zip errors of many types for a damaged or foreign file
        raise FormatError(f"{path} is not a readable {FORMAT} model file ({type(exc).__name__})") from None
    if not isinstance(payload, dict) or "metadata" not in payload:
        raise FormatError(f"{path} is not a {FORMAT} model file (no metadata)")
    meta = json.loads(payload["metadata"])
    check_format(meta.get("format"), meta.get("format_version"), FORMAT, FORMAT_VERSION, str(path))
    potential = potential_from_config(meta["potential"])
    potential.to(getattr(torch, meta.get("dtype", "float32")))
    potential.load_state_dict(payload["state_dict"])
    potential.metadata = meta
    potential.eval()
    return potential
