"""ASTEROID: bias-aware training on many cheap labels, then fine-tuning on a few accurate ones.

Bukharin et al. (ICML 2023) weight each cheap-labelled configuration by ``w_i = exp(-b_i / gamma)``, where ``b_i``
estimates how far its cheap label is from the accurate one. The estimate comes from a model trained on the small
accurate set: ``b_i = RMS_atoms |F_cheap(x_i) - F_acc-model(x_i)|`` (kJ/mol/nm), the force error of the cheap label
against the accurate model's prediction. A model is trained on the cheap set with those weights and then
fine-tuned on the accurate set. :func:`run_asteroid` does all three steps with :func:`cgkd.kd.atomistic.train_atomistic`
(every step resumable). The learned pairwise-correction model (:mod:`cgkd.nn.fidelity`) is a different method.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Union

import numpy as np

from cgkd import keys
from cgkd.io.atomic import write_text
from cgkd.io.atoms import AtomsData, read_atoms
from cgkd.kd.atomistic import train_atomistic
from cgkd.train.trainer import TrainConfig


def bias_estimates(model_file, cheap: AtomsData, batch_size: int = 32) -> np.ndarray:
    """Per-structure bias of cheap labels: RMS over atoms of ``|F_cheap - F_model|``, shape (S,), kJ/mol/nm."""
    import torch

    import cgkd.nn.priors  # noqa: F401  (registers the prior kinds)
    from cgkd.nn.potential import load_potential
    from cgkd.train.atoms import AtomsSet

    if cheap.forces is None:
        raise ValueError("cheap must be labelled (forces) to estimate the bias of its labels")
    pot = load_potential(model_file)
    ds = AtomsSet(cheap, pot.type_names, dtype=next(pot.parameters()).dtype)
    out = np.zeros(cheap.n_structures)
    for start in range(0, cheap.n_structures, batch_size):
        idx = np.arange(start, min(start + batch_size, cheap.n_structures))
        b = ds.batch(idx)
        res = pot.forward_batch(b[keys.POSITIONS], b[keys.TYPES], b[keys.BOX], b["batch"], b["n_graphs"],
                                compute_forces=True, create_graph=False)
        d2 = ((res[keys.FORCE] - b[keys.FORCES]) ** 2).sum(-1).detach()
        n = torch.bincount(b["batch"], minlength=len(idx)).to(d2.dtype)
        out[idx] = torch.sqrt(torch.zeros(len(idx), dtype=d2.dtype).index_add(0, b["batch"], d2) / n).numpy()
    return out


def asteroid_weights(bias: np.ndarray, gamma: Optional[float] = None) -> np.ndarray:
    """``exp(-b / gamma)``; ``gamma`` (kJ/mol/nm) defaults to the median bias."""
    b = np.asarray(bias, dtype=np.float64)
    if b.ndim != 1 or b.size == 0 or np.any(~np.isfinite(b)) or np.any(b < 0):
        raise ValueError(f"bias must be a non-empty 1-D array of finite values >= 0, got shape {b.shape}")
    g = float(np.median(b)) if gamma is None else float(gamma)
    if not g > 0:
        raise ValueError(f"gamma must be positive (kJ/mol/nm), got {g}")
    return np.exp(-b / g)


def run_asteroid(cheap_path, accurate_path, out_dir, *, arch: str = "hipnn", preset: Union[str, dict] = "small",
                 cutoff: float = 0.5, gamma: Optional[float] = None, config: Optional[TrainConfig] = None,
                 finetune_config: Optional[TrainConfig] = None, energy_weight: float = 0.1) -> dict:
    """Bias model on the accurate set -> weighted training on the cheap set -> fine-tuning on the accurate set.

    The cheap and accurate files may hold different configurations. Returns (and writes to
    ``out_dir/asteroid.json``) the three runs' summaries, the bias statistics and gamma.
    """
    out = Path(out_dir)
    cfg = config or TrainConfig()
    common = dict(arch=arch, preset=preset, cutoff=cutoff, energy_weight=energy_weight)
    accurate_model = train_atomistic(accurate_path, out / "bias_model", config=cfg, **common)
    cheap = read_atoms(cheap_path)
    bias = bias_estimates(accurate_model["model"], cheap)
    weights = asteroid_weights(bias, gamma)
    weighted = train_atomistic(cheap_path, out / "cheap_weighted", config=cfg, sample_weight=weights, **common)
    tuned = train_atomistic(accurate_path, out / "finetuned", config=finetune_config or cfg, init=weighted["model"],
                            energy_weight=energy_weight)
    summary = {"bias_model": accurate_model["test"], "cheap_weighted": weighted["test"], "finetuned": tuned["test"],
               "model": tuned["model"], "gamma": float(np.median(bias)) if gamma is None else float(gamma),
               "bias": {"median": float(np.median(bias)), "min": float(bias.min()), "max": float(bias.max())},
               "weights": {"mean": float(weights.mean()), "min": float(weights.min())}}
    write_text(out / "asteroid.json", json.dumps(summary, indent=1))
    return summary


__all__ = ["asteroid_weights", "bias_estimates", "run_asteroid"]
