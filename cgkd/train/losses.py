"""Composable loss terms, registered by name in :data:`LOSS_TERMS`.

The training loss is ``sum_k w_k(epoch) * term_k``. A term compares the model's outputs on a batch
with a target taken either from the batch (mapped forces, ensemble labels) or from a frozen
teacher model evaluated on the same batch (feature / bead-energy distillation).

Every term honours per-sample weights ``batch["sample_weight"] (G,)`` and per-bead weights
``batch["bead_weight"] (N,)``: a residual r_i of bead i in frame g(i) enters as
``sum_i w_i r_i / sum_i w_i`` with ``w_i = sample_weight[g(i)] * bead_weight[i]``, so a sample of
weight zero contributes nothing (not to the numerator, not to the denominator).

A term may also have its own per-frame mask (``LossSpec.mask``: the name of a per-frame target of
shape (F,), 1 where the term applies, 0 where not) that multiplies those weights for that term only.
This mixes frames with and without labels in one run: ``forces`` masked to the labelled frames,
``sliced_score`` to the unlabelled ones.

Adding a term: subclass :class:`LossTerm`, set ``default_target`` and decorate it with
``@LOSS_TERMS.register("name")``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from cgkd import keys
from cgkd.registry import Registry
from cgkd.train.distributed import batch_max, batch_sum

#: Loss terms by name. Values are :class:`LossTerm` subclasses.
LOSS_TERMS: Registry = Registry("loss_terms")

#: Batch key of the per-frame weights, shape (G,).
SAMPLE_WEIGHT = "sample_weight"
#: Batch key of the per-bead weights, shape (N,).
BEAD_WEIGHT = "bead_weight"
#: Output key of the positions tensor the forces were taken with respect to (N, 3).
POSITIONS_LEAF = "positions_leaf"
#: Batch key of k_B T per frame (G,), kJ/mol, used by score matching.
KBT = "kbt"
#: ``LossSpec.source`` values.
SOURCES = ("batch", "teacher")


@dataclass(frozen=True)
class LossSpec:
    """One term of the loss (YAML-loadable).

    Attributes
    ----------
    term : str
        Name in :data:`LOSS_TERMS` (``forces``, ``forces_mse``, ``energy``, ``node_energy``,
        ``node_features``, ``vector_features``).
    weight : float
        Weight of the term; a schedule (:mod:`cgkd.train.schedule`) may override it per epoch.
    target : str
        Key of the target in the batch (or in the teacher's outputs); "" takes the term's default.
    source : str
        ``"batch"``: target from the batch (labels, mapped forces); ``"teacher"``: from a frozen teacher
        model evaluated on the batch.
    name : str
        Name of the term in logs and schedules; "" means ``term``.
    mask : str
        Key of a per-frame batch array (G,) of 0/1 (or any weights >= 0) that multiplies this term's
        sample weights; "" = the term applies to every frame.
    """

    term: str
    weight: float = 1.0
    target: str = ""
    source: str = "batch"
    name: str = ""
    mask: str = ""

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"LossSpec.source must be one of {SOURCES}, got {self.source!r}")
        if self.weight < 0:
            raise ValueError(f"LossSpec.weight must be >= 0, got {self.weight}")

    @property
    def label(self) -> str:
        return self.name or self.term


def _frame_mask(batch: Dict[str, Tensor], mask: str, like: Tensor) -> Optional[Tensor]:
    if not mask:
        return None
    if mask not in batch:
        raise ValueError(f"loss mask {mask!r} is not in the batch; available: {sorted(k for k in batch if k != 'n_graphs')}")
    m = batch[mask]
    g = int(batch["n_graphs"])
    if m.shape != (g,):
        raise ValueError(f"loss mask {mask!r} must be per frame with shape ({g},) in this batch, got {tuple(m.shape)}")
    return m.to(like.dtype)


def bead_weights(batch: Dict[str, Tensor], like: Tensor, mask: str = "") -> Tensor:
    """Per-bead weights ``w_i = sample_weight[batch_i] * mask[batch_i] * bead_weight_i``, shape (N,), dtype of
    ``like``; ``mask`` names a per-frame batch array ("" = none)."""
    n = batch[keys.POSITIONS].shape[0]
    w = torch.ones(n, dtype=like.dtype, device=like.device)
    if SAMPLE_WEIGHT in batch:
        w = w * batch[SAMPLE_WEIGHT].to(like.dtype)[batch["batch"]]
    m = _frame_mask(batch, mask, like)
    if m is not None:
        w = w * m[batch["batch"]]
    if BEAD_WEIGHT in batch:
        w = w * batch[BEAD_WEIGHT].to(like.dtype)
    return w


def frame_weights(batch: Dict[str, Tensor], like: Tensor, mask: str = "") -> Tensor:
    """Per-frame weights ``sample_weight * mask``, shape (G,)."""
    g = int(batch["n_graphs"])
    w = batch[SAMPLE_WEIGHT].to(like.dtype) if SAMPLE_WEIGHT in batch else torch.ones(g, dtype=like.dtype, device=like.device)
    m = _frame_mask(batch, mask, like)
    return w if m is None else w * m


def weighted_mean(values: Tensor, weights: Tensor) -> Tensor:
    """``sum w v / sum w`` over the first axis (other axes averaged first); 0 when all weights are 0."""
    if values.dim() > 1:
        values = values.reshape(values.shape[0], -1).mean(dim=1)
    # sums over the global batch when training on several ranks (cgkd.train.distributed)
    total = batch_sum(weights.sum())
    # all weights zero (a batch without frames for a masked term): 0 with zero (not NaN) gradients;
    # dividing by a clamped tiny total would make the gradient 0 * inf = NaN
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return batch_sum((weights * values).sum()) / safe


class LossTerm(nn.Module):
    """Base class. ``forward(outputs, batch, teacher_outputs) -> (loss scalar, metrics dict)``."""

    #: Target key used when ``LossSpec.target`` is "".
    default_target: str = ""
    #: The model's forces are needed (computed by autograd in the trainer).
    needs_forces: bool = False
    #: Derivatives of the forces are needed (the force graph is kept in evaluation too).
    needs_force_graph: bool = False

    def __init__(self, target: str = "", source: str = "batch", mask: str = ""):
        super().__init__()
        self.target = target or self.default_target
        self.source = source
        self.mask = mask

    def bead_weights(self, batch: Dict[str, Tensor], like: Tensor) -> Tensor:
        """:func:`bead_weights` with this term's mask."""
        return bead_weights(batch, like, self.mask)

    def frame_weights(self, batch: Dict[str, Tensor], like: Tensor) -> Tensor:
        """:func:`frame_weights` with this term's mask."""
        return frame_weights(batch, like, self.mask)

    def setup(self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor], teacher_outputs: Optional[Dict[str, Tensor]]):
        """Called once with a first batch before the optimiser exists (create learned projections here)."""
        self._get_target(batch, teacher_outputs)

    def _get_target(self, batch: Dict[str, Tensor], teacher_outputs: Optional[Dict[str, Tensor]]) -> Tensor:
        if self.source == "teacher":
            if teacher_outputs is None:
                raise ValueError(f"loss term {type(self).__name__} takes its target from a teacher, but no teacher was given")
            table, where = teacher_outputs, "the teacher's outputs"
        else:
            table, where = batch, "the batch"
        if self.target not in table:
            raise ValueError(
                f"loss term {type(self).__name__} needs target {self.target!r} in {where}; available: {sorted(table)}"
            )
        return table[self.target]

    def forward(self, outputs, batch, teacher_outputs=None) -> Tuple[Tensor, Dict[str, float]]:  # pragma: no cover
        raise NotImplementedError


@LOSS_TERMS.register("forces")
class ForceLoss(LossTerm):
    """Force matching, RMSE + MAE over bead force components (kJ/mol/nm), per-bead weighted."""

    default_target = keys.FORCES
    needs_forces = True

    def _residual(self, outputs, batch, teacher_outputs):
        pred = outputs[keys.FORCE]
        target = self._get_target(batch, teacher_outputs).to(pred.dtype)
        if target.shape != pred.shape:
            raise ValueError(f"force target {self.target!r} has shape {tuple(target.shape)}, model forces {tuple(pred.shape)}")
        return pred - target, self.bead_weights(batch, pred)

    def forward(self, outputs, batch, teacher_outputs=None):
        d, w = self._residual(outputs, batch, teacher_outputs)
        mse = weighted_mean(d.pow(2), w)
        mae = weighted_mean(d.abs(), w)
        rmse = torch.sqrt(mse + 1e-12)
        return rmse + mae, {"force_rmse": float(rmse.detach()), "force_mae": float(mae.detach())}


@LOSS_TERMS.register("forces_mse")
class ForceMSELoss(ForceLoss):
    """Force matching, mean squared error of the components ((kJ/mol/nm)^2), per-bead weighted."""

    def forward(self, outputs, batch, teacher_outputs=None):
        d, w = self._residual(outputs, batch, teacher_outputs)
        mse = weighted_mean(d.pow(2), w)
        return mse, {"force_rmse": float(torch.sqrt(mse.detach())), "force_mae": float(weighted_mean(d.detach().abs(), w))}


@LOSS_TERMS.register("energy")
class EnergyLoss(LossTerm):
    """Total energy per frame, MSE of (E - E_target) / n_beads ((kJ/mol)^2 per bead^2), per-sample weighted.

    Energies of CG models are defined up to a constant; here the constant is matched too (``energy_gauge``
    is blind to it).
    """

    default_target = keys.MEAN_ENERGY

    def _gauge(self, d: Tensor, w: Tensor, batch: Dict[str, Tensor]) -> Tensor:
        return d

    def _per_bead_residual(self, outputs, batch, teacher_outputs):
        """``((E - E_target) / n_beads, frame weights)``, each of shape (G,), after this term's gauge."""
        pred = outputs[keys.ENERGY]
        target = self._get_target(batch, teacher_outputs).to(pred.dtype)
        if target.shape != pred.shape:
            raise ValueError(f"energy target {self.target!r} has shape {tuple(target.shape)}, model energy {tuple(pred.shape)}")
        n_per = torch.bincount(batch["batch"], minlength=pred.shape[0]).to(pred.dtype)
        w = self.frame_weights(batch, pred)
        return self._gauge((pred - target) / n_per, w, batch), w

    def forward(self, outputs, batch, teacher_outputs=None):
        d, w = self._per_bead_residual(outputs, batch, teacher_outputs)
        mse = weighted_mean(d.pow(2), w)
        return mse, {"energy_rmse_per_bead": float(torch.sqrt(mse.detach()))}


@LOSS_TERMS.register("energy_gauge")
class GaugeFreeEnergyLoss(EnergyLoss):
    """Total energy per frame blind to a constant offset, MSE per bead^2 ((kJ/mol)^2), per-sample weighted.

    The batch mean of ``(E - E_target) / n_beads`` is removed before squaring, so only the variation of the
    energy between frames is matched (exact for frames of one composition, the CG case).
    """

    def _gauge(self, d, w, batch):
        total = batch_sum(w.sum())
        return d - batch_sum((w * d).sum()) / torch.where(total > 0, total, torch.ones_like(total))


@LOSS_TERMS.register("energy_rmse_mae")
class EnergyRMSEMAELoss(EnergyLoss):
    """Total energy per structure, RMSE + MAE of (E - E_target) / n_atoms (kJ/mol per atom), per-sample weighted.

    The form of the force term (``forces``), so that the energy and force weights of atomistic studies that use
    RMSE + MAE for both carry over. Default target ``energy`` (an atomistic set's own labels,
    ``cgkd.train.atoms.AtomsSet``).
    """

    default_target = keys.ENERGY

    def forward(self, outputs, batch, teacher_outputs=None):
        d, w = self._per_bead_residual(outputs, batch, teacher_outputs)
        rmse = torch.sqrt(weighted_mean(d.pow(2), w) + 1e-12)
        mae = weighted_mean(d.abs(), w)
        return rmse + mae, {"energy_rmse_per_atom": float(rmse.detach()), "energy_mae_per_atom": float(mae.detach())}


@LOSS_TERMS.register("node_energy")
class NodeEnergyLoss(LossTerm):
    """Per-bead ("atom") energy matching, MSE (kJ/mol)^2, per-bead weighted."""

    default_target = keys.MEAN_NODE_ENERGY

    def _gauge(self, d: Tensor, w: Tensor, batch: Dict[str, Tensor]) -> Tensor:
        return d

    def forward(self, outputs, batch, teacher_outputs=None):
        pred = outputs[keys.NODE_ENERGY]
        target = self._get_target(batch, teacher_outputs).detach().to(pred.dtype)
        if target.shape != pred.shape:
            raise ValueError(
                f"node energy target {self.target!r} has shape {tuple(target.shape)}, model {tuple(pred.shape)}"
            )
        w = self.bead_weights(batch, pred)
        mse = weighted_mean(self._gauge(pred - target, w, batch).pow(2), w)
        return mse, {"node_energy_rmse": float(torch.sqrt(mse.detach()))}


def _remove_group_means(d: Tensor, groups: Tensor, weights: Tensor) -> Tensor:
    """``d`` less its weighted mean within each group (the gauge a loss must not see)."""
    n = batch_max(int(groups.max()) + 1 if groups.numel() else 0, device=groups.device)
    wsum = batch_sum(torch.zeros(n, dtype=d.dtype, device=d.device).index_add_(0, groups, weights))
    dsum = batch_sum(torch.zeros(n, dtype=d.dtype, device=d.device).index_add_(0, groups, weights * d))
    # a group without weight (masked out) has no mean to remove; dividing by a clamped tiny number would be
    # 0/0 in float32 (1e-300 rounds to 0) and make the loss and its gradient NaN
    safe = torch.where(wsum > 0, wsum, torch.ones_like(wsum))
    return d - torch.where(wsum > 0, dsum / safe, torch.zeros_like(dsum))[groups]


@LOSS_TERMS.register("node_energy_gauge")
class GaugeFreeNodeEnergyLoss(NodeEnergyLoss):
    """Per-bead energy matching blind to a constant per bead type, MSE (kJ/mol)^2, per-bead weighted.

    Per-bead energies of a CG model are defined up to a constant per bead type (in a fixed composition the
    constants add up to an energy offset no force feels). Independently trained teachers pick very different
    constants (measured on the reline quick ensemble: 27-50 kJ/mol spread between members, against 3.5-6.4
    kJ/mol of per-bead energy variation within a member), so the ensemble mean of raw per-bead energies
    mostly averages arbitrary offsets. This term removes, within the batch, the per-type mean of the
    difference before squaring: the student matches how per-bead energies vary, not the teachers' gauge.
    """

    def _gauge(self, d, w, batch):
        return _remove_group_means(d, batch[keys.TYPES].long(), w)


class _FeatureLoss(LossTerm):
    """Feature matching with a learned linear projection of the student's features when widths differ."""

    key: str = keys.NODE_FEATURES

    def __init__(self, target: str = "", source: str = "teacher", mask: str = ""):
        super().__init__(target=target, source=source, mask=mask)
        self.projection: nn.Module = nn.Identity()

    def _feature_target(self, batch, teacher_outputs) -> Tensor:
        return self._get_target(batch, teacher_outputs)

    def setup(self, outputs, batch, teacher_outputs):
        target = self._feature_target(batch, teacher_outputs)
        if self.key not in outputs:
            raise ValueError(f"loss term {type(self).__name__} needs {self.key!r} from the model; it returns {sorted(outputs)}")
        hs, ht = outputs[self.key].shape[-1], target.shape[-1]
        if hs != ht:
            self.projection = nn.Linear(hs, ht, bias=False).to(dtype=outputs[self.key].dtype, device=outputs[self.key].device)

    def forward(self, outputs, batch, teacher_outputs=None):
        pred = self.projection(outputs[self.key])
        target = self._feature_target(batch, teacher_outputs).detach().to(pred.dtype)
        if target.shape != pred.shape:
            raise ValueError(f"{self.key} target has shape {tuple(target.shape)}, projected student {tuple(pred.shape)}")
        mse = weighted_mean((pred - target).pow(2), self.bead_weights(batch, pred))
        return mse, {f"{self.metric}_rmse": float(torch.sqrt(mse.detach()))}

    @property
    def metric(self) -> str:
        return self.key


@LOSS_TERMS.register("node_features")
class NodeFeatureLoss(_FeatureLoss):
    """Node-to-node feature distillation: MSE between P h_student (N, Ht) and h_teacher (N, Ht)."""

    key = keys.NODE_FEATURES
    default_target = keys.NODE_FEATURES


@LOSS_TERMS.register("vector_features")
class VectorFeatureLoss(_FeatureLoss):
    """Vector-to-vector distillation (equivariant models): MSE between v_student P (N, 3, Ht) and v_teacher.

    The projection acts on the channel axis only, so it commutes with rotations.
    """

    key = keys.VECTOR_FEATURES
    default_target = keys.VECTOR_FEATURES


@LOSS_TERMS.register("edge_to_node")
class EdgeToNodeLoss(_FeatureLoss):
    """Edge-to-node distillation: the teacher's edge features (E, Ht) averaged onto their receiving bead
    (``edge_index[0]``, the teacher's own neighbour list; beads without edges get zeros) are matched by
    the projected student node features P h_student (N, Ht), MSE.

    The target needs ``edge_features`` and ``edge_index`` (2, E) in the teacher's outputs
    (:class:`cgkd.nn.potential.CGPotential` returns both).
    """

    key = keys.NODE_FEATURES
    default_target = keys.EDGE_FEATURES

    @property
    def metric(self) -> str:
        return "edge_to_node"

    def _feature_target(self, batch, teacher_outputs) -> Tensor:
        edges = self._get_target(batch, teacher_outputs)
        table = teacher_outputs if self.source == "teacher" else batch
        if table is None or keys.EDGE_INDEX not in table:
            raise ValueError(f"edge_to_node needs {keys.EDGE_INDEX!r} (2, E) beside {self.target!r} in the "
                             f"{'teacher outputs' if self.source == 'teacher' else 'batch'}")
        index = table[keys.EDGE_INDEX]
        if index.dim() != 2 or index.shape[0] != 2 or index.shape[1] != edges.shape[0]:
            raise ValueError(f"{keys.EDGE_INDEX} must have shape (2, {edges.shape[0]}) to match {self.target!r}, "
                             f"got {tuple(index.shape)}")
        n = batch[keys.POSITIONS].shape[0]
        centre = index[0]
        summed = torch.zeros(n, edges.shape[1], dtype=edges.dtype, device=edges.device).index_add(0, centre, edges)
        degree = torch.bincount(centre, minlength=n).to(edges.dtype).clamp(min=1.0)
        return summed / degree.unsqueeze(1)


@LOSS_TERMS.register("sliced_score")
class SlicedScoreLoss(LossTerm):
    """Sliced score matching for configurations without force labels (kJ^2/mol^2/nm^2 per bead).

    The model's score is ``s = F / kT``. With random projections ``v ~ N(0, I)`` (3N per frame) the
    sliced score-matching objective ``E_v[v^T (grad_x s) v + (v^T s)^2 / 2]``, multiplied by
    ``kT^2`` to keep force units, is per frame ``kT v^T (grad_x F) v + (v^T F)^2 / 2``, divided by
    the frame's bead count. It is minimised by the Boltzmann forces of the sampled ensemble and
    needs no labels; only k_B T per frame (batch key ``kbt``, kJ/mol). One projection per frame
    and step, drawn from the global torch RNG (seeded and checkpointed by the trainer).
    """

    default_target = KBT
    needs_forces = True
    needs_force_graph = True

    def forward(self, outputs, batch, teacher_outputs=None):
        force = outputs[keys.FORCE]
        if POSITIONS_LEAF not in outputs:
            raise ValueError("sliced_score needs the positions the forces were computed from (trainer.model_outputs)")
        kbt = self._get_target(batch, teacher_outputs).to(force.dtype)
        v = torch.randn(force.shape, dtype=force.dtype, device=force.device)
        (hv,) = torch.autograd.grad((force * v).sum(), outputs[POSITIONS_LEAF], create_graph=True)
        g = int(batch["n_graphs"])
        graph = batch["batch"]
        quad = torch.zeros(g, dtype=force.dtype, device=force.device).index_add(0, graph, (v * hv).sum(-1))
        proj = torch.zeros(g, dtype=force.dtype, device=force.device).index_add(0, graph, (v * force).sum(-1))
        n_per = torch.bincount(graph, minlength=g).to(force.dtype)
        per_frame = (kbt * quad + 0.5 * proj.pow(2)) / n_per
        value = weighted_mean(per_frame, self.frame_weights(batch, force))
        return value, {"sliced_score": float(value.detach())}


class Loss(nn.Module):
    """The weighted sum of loss terms; learned projections inside terms are trained with the model.

    Parameters
    ----------
    specs : list of LossSpec
        The terms; labels (``spec.label``) must be unique.
    """

    def __init__(self, specs: List[LossSpec]):
        super().__init__()
        if not specs:
            raise ValueError("specs must list at least one loss term, got an empty list")
        labels = [s.label for s in specs]
        if len(set(labels)) != len(labels):
            raise ValueError(f"loss term names must be unique, got {labels}")
        self.specs = list(specs)
        self.terms = nn.ModuleDict(
            {s.label: LOSS_TERMS.get(s.term)(target=s.target, source=s.source, mask=s.mask) for s in specs}
        )

    @property
    def base_weights(self) -> Dict[str, float]:
        return {s.label: float(s.weight) for s in self.specs}

    @property
    def needs_forces(self) -> bool:
        return any(t.needs_forces for t in self.terms.values())

    @property
    def needs_force_graph(self) -> bool:
        return any(t.needs_force_graph for t in self.terms.values())

    @property
    def needs_teacher(self) -> bool:
        return any(t.source == "teacher" for t in self.terms.values())

    def setup(self, outputs, batch, teacher_outputs=None) -> None:
        for t in self.terms.values():
            t.setup(outputs, batch, teacher_outputs)

    def forward(self, outputs, batch, weights: Dict[str, float], teacher_outputs=None) -> Tuple[Tensor, Dict[str, float]]:
        """Weighted sum; terms of weight 0 are skipped. Returns (loss, metrics incl. ``loss/<name>``)."""
        total = None
        metrics: Dict[str, float] = {}
        for name, term in self.terms.items():
            w = float(weights.get(name, 0.0))
            if w == 0.0:
                continue
            value, m = term(outputs, batch, teacher_outputs)
            metrics[f"loss/{name}"] = float(value.detach())
            metrics.update(m)
            total = w * value if total is None else total + w * value
        if total is None:
            raise ValueError(f"every loss weight is zero ({weights}); at least one term must have a positive weight")
        return total, metrics


__all__ = [
    "LOSS_TERMS",
    "Loss",
    "LossSpec",
    "LossTerm",
    "ForceLoss",
    "ForceMSELoss",
    "EnergyLoss",
    "NodeEnergyLoss",
    "NodeFeatureLoss",
    "VectorFeatureLoss",
    "EdgeToNodeLoss",
    "SlicedScoreLoss",
    "POSITIONS_LEAF",
    "KBT",
    "SAMPLE_WEIGHT",
    "BEAD_WEIGHT",
    "bead_weights",
    "frame_weights",
    "weighted_mean",
]
