"""Loss-weight schedules: an epoch -> {term name: weight} table.

A schedule is a list of rows ``{"epoch": e, "weights": {...}}``. From epoch ``e`` on (until the
next row) the listed weights replace the base weights of those terms; terms not listed keep their
base weight (from :class:`cgkd.train.losses.LossSpec`). With ``interpolate=True`` the weights change
linearly between consecutive rows instead of stepwise.

Born-Again distillation, for example, starts on the teacher terms and shifts the weight to the
label terms::

    schedule:
      - {epoch: 0,  weights: {node_energy: 1.0, forces: 0.1}}
      - {epoch: 20, weights: {node_energy: 0.1, forces: 1.0}}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Sequence


@dataclass(frozen=True)
class ScheduleRow:
    """Weights that apply from ``epoch`` (0-based) on."""

    epoch: int
    weights: Dict[str, float] = field(default_factory=dict)


def born_again(teacher_terms: Sequence[str], label_terms: Sequence[str], switch_epoch: int, low: float = 0.1) -> List[ScheduleRow]:
    """A two-row Born-Again schedule: teacher terms weight 1 and label terms ``low`` until
    ``switch_epoch``, then the other way round."""
    if switch_epoch < 1:
        raise ValueError(f"switch_epoch must be >= 1, got {switch_epoch}")
    first = {**{t: 1.0 for t in teacher_terms}, **{t: low for t in label_terms}}
    second = {**{t: low for t in teacher_terms}, **{t: 1.0 for t in label_terms}}
    return [ScheduleRow(0, first), ScheduleRow(switch_epoch, second)]


class WeightSchedule:
    """Per-epoch loss weights.

    Parameters
    ----------
    base : dict of str -> float
        The weights of every term when no row applies.
    rows : list of ScheduleRow
        Sorted or not; epochs must be distinct and >= 0; names must be terms in ``base``.
    interpolate : bool
        Linear interpolation between rows (a term missing from one of the two rows uses its base weight there).
    """

    def __init__(self, base: Dict[str, float], rows: Sequence[ScheduleRow] = (), interpolate: bool = False):
        self.base = dict(base)
        self.rows = sorted(rows, key=lambda r: r.epoch)
        self.interpolate = interpolate
        epochs = [r.epoch for r in self.rows]
        if len(set(epochs)) != len(epochs):
            raise ValueError(f"schedule epochs must be distinct, got {epochs}")
        for r in self.rows:
            if r.epoch < 0:
                raise ValueError(f"schedule epoch must be >= 0, got {r.epoch}")
            unknown = sorted(set(r.weights) - set(self.base))
            if unknown:
                raise ValueError(f"schedule row at epoch {r.epoch} names unknown loss term(s) {unknown}; terms are {sorted(self.base)}")
            bad = {k: v for k, v in r.weights.items() if v < 0}
            if bad:
                raise ValueError(f"schedule weights must be >= 0, got {bad} at epoch {r.epoch}")

    def _row_weights(self, row: ScheduleRow) -> Dict[str, float]:
        return {**self.base, **{k: float(v) for k, v in row.weights.items()}}

    def weights(self, epoch: int) -> Dict[str, float]:
        """The weights of every term at ``epoch`` (0-based)."""
        before = [r for r in self.rows if r.epoch <= epoch]
        if not before:
            return dict(self.base)
        cur = before[-1]
        w = self._row_weights(cur)
        if self.interpolate:
            after = [r for r in self.rows if r.epoch > epoch]
            if after:
                nxt = after[0]
                wn = self._row_weights(nxt)
                t = (epoch - cur.epoch) / (nxt.epoch - cur.epoch)
                w = {k: (1 - t) * w[k] + t * wn[k] for k in w}
        return w


__all__ = ["ScheduleRow", "WeightSchedule", "born_again"]
