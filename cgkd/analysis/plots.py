"""PNG plots of AA vs CG distributions (matplotlib object API: no pyplot, no global backend change)."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Sequence, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from cgkd.io.atomic import atomic_path


def _save(fig: Figure, path: Path) -> None:
    FigureCanvasAgg(fig)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")


def overlay_grid(path, title: str, panels: Dict[str, Dict[str, Tuple[np.ndarray, np.ndarray]]], xlabel: str,
                 ylabel: str, reference_label: str) -> None:
    """One panel per key of ``panels`` (e.g. type pair), each overlaying ``label -> (x, y)`` curves.

    The reference is drawn black and thick, candidates in colour.
    """
    if not panels:
        return
    n = len(panels)
    cols = min(3, n)
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(4.2 * cols, 3.2 * rows), layout="constrained")
    for idx, (name, curves) in enumerate(panels.items()):
        ax = fig.add_subplot(rows, cols, idx + 1)
        for label, (x, y) in curves.items():
            if label == reference_label:
                ax.plot(x, y, color="black", lw=2.2, label=label)
            else:
                ax.plot(x, y, lw=1.3, label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if idx == 0:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    _save(fig, Path(path))


def maps(path, title: str, r: np.ndarray, theta: np.ndarray, labelled: Dict[str, np.ndarray]) -> None:
    """Side-by-side 2-D maps (combined distance-angle distributions), one per label."""
    if not labelled:
        return
    n = len(labelled)
    fig = Figure(figsize=(3.6 * n, 3.2), layout="constrained")
    vmax = max(float(m.max()) for m in labelled.values())
    for idx, (label, m) in enumerate(labelled.items()):
        ax = fig.add_subplot(1, n, idx + 1)
        im = ax.pcolormesh(theta, r, m, vmin=0, vmax=vmax, shading="nearest")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("angle (deg)")
        ax.set_ylabel("r (nm)")
    fig.colorbar(im, ax=fig.axes, shrink=0.8)
    fig.suptitle(title)
    _save(fig, Path(path))


def bars(path, title: str, labels: Sequence[str], values: Sequence[float], ylabel: str) -> None:
    """A bar chart (density, diffusion coefficient) per label."""
    fig = Figure(figsize=(1.2 + 1.1 * len(labels), 3.2), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.bar(range(len(labels)), [np.nan if v is None else v for v in values], color="C0")
    ax.set_xticks(range(len(labels)), labels, rotation=20)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    _save(fig, Path(path))


def free_energy_maps(path, title: str, labelled: Dict[str, np.ndarray], names: Sequence[str],
                     vmax_kt: float = 8.0) -> None:
    """Side-by-side free-energy surfaces ``-ln p`` (k_B T, minimum 0, capped at ``vmax_kt``) over [-180, 180)^2.

    ``labelled`` maps a label to a joint probability grid (rows: first angle, columns: second angle).
    """
    if not labelled:
        return
    n = len(labelled)
    fig = Figure(figsize=(3.4 * n + 0.8, 3.3), layout="constrained")
    for idx, (label, p) in enumerate(labelled.items()):
        n_bins = p.shape[0]
        centres = -180.0 + (np.arange(n_bins) + 0.5) * 360.0 / n_bins
        with np.errstate(divide="ignore"):
            f = -np.log(p)
        f = np.where(np.isfinite(f), f - (np.nanmin(f[np.isfinite(f)]) if np.isfinite(f).any() else 0.0), np.nan)
        ax = fig.add_subplot(1, n, idx + 1)
        im = ax.pcolormesh(centres, centres, np.minimum(f, vmax_kt).T, vmin=0, vmax=vmax_kt, shading="nearest",
                           cmap="viridis")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel(f"{names[0]} (deg)")
        ax.set_ylabel(f"{names[1]} (deg)")
        ax.set_xlim(-180, 180)
        ax.set_ylim(-180, 180)
        ax.set_aspect("equal")
    fig.colorbar(im, ax=fig.axes, shrink=0.8, label="F / k_B T")
    fig.suptitle(title)
    _save(fig, Path(path))
