"""ASTEROID: bias-aware training on many cheap labels, then fine-tuning on a few accurate ones.

Bukharin et al. (ICML 2023) weight each cheap-labelled configuration by ``w_i = exp(-b_i / gamma)``, where ``b_i``
estimates how far its cheap label is from the accurate one. The estimate comes from a model trained on the small
accurate set: ``b_i = RMS_atoms |F_cheap(x_i) - F_acc-model(x_i)|`` (kJ/mol/nm), the force error of the cheap label
against the accurate model's prediction. A model is trained on the cheap set with those weights and then
fine-tuned on the accurate set. :func:`run_asteroid` does all three steps with :func:`cgkd.kd.atomistic.train_atomistic`
(every step resumable). The learned pairwise-correction model (:mod:`cgkd.nn.fidelity`) is a different method.

The score-matching variant learns from configurations *without* labels: configurations sampled at a known
temperature T (MD with any cheap method) have the score ``grad_x log p = F / kT``, and sliced score matching
(``sliced_score`` loss) fits the model's forces to it. :func:`train_score_matching` pre-trains on such
configurations; fine-tuning on the accurate labels follows as for the other arms (``train_atomistic(init=...)``).
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


#: Energy scale (kJ/mol) of a score-matching model, which sees no forces to set it from: 0.1 nm x 1000 kJ/mol/nm,
#: the size of the force components of small organic molecules near room temperature (xTB ethanol: 917 RMS).
SCORE_ENERGY_SCALE = 100.0


def train_score_matching(data_path, out_dir, *, arch: str = "hipnn", preset: Union[str, dict] = "small",
                         cutoff: float = 0.5, config: Optional[TrainConfig] = None,
                         temperature_key: str = "temperature_K", split_seed: int = 0,
                         energy_scale: float = SCORE_ENERGY_SCALE) -> dict:
    """Pre-train an atomistic potential by sliced score matching on unlabelled configurations; resumable.

    Parameters
    ----------
    data_path : path
        Structures (extended XYZ or ASE database); labels, if any, are ignored. Each structure's ``info`` holds its
        sampling temperature under ``temperature_key`` (K): ``cgkd.aa.labelers.sample_md`` writes ``temperature_K``.
    out_dir : path
        Run folder (``model.pt``, ``score.json`` written last).
    config : TrainConfig, optional
        Its ``losses`` and ``monitor`` are set here (the ``sliced_score`` term, which picks the best epoch).
    energy_scale : float, kJ/mol
        Output scale of the untrained network (:data:`SCORE_ENERGY_SCALE`).

    Returns
    -------
    dict
        The summary (model file, split, temperatures, best epoch).
    """
    from dataclasses import replace

    from cgkd.io.provenance import file_digest
    from cgkd.kd.atomistic import atomistic_potential, split_structures
    from cgkd.nn.potential import save_potential
    from cgkd.train.atoms import AtomsSet
    from cgkd.train.losses import KBT, LossSpec
    from cgkd.train.trainer import fit
    from cgkd import units

    out = Path(out_dir)
    done = out / "score.json"
    digest = file_digest(data_path)
    if done.is_file():
        summary = json.loads(done.read_text())
        if summary.get("data_digest") != digest:
            raise ValueError(f"{out} holds a model trained on other data; choose another out_dir")
        return summary
    data = read_atoms(data_path)
    missing = [s for s in range(data.n_structures) if temperature_key not in data.info[s]]
    if missing:
        raise ValueError(f"structures {missing[:5]}{'...' if len(missing) > 5 else ''} of {data_path} have no "
                         f"{temperature_key!r} in their info; score matching needs each one's sampling temperature (K)")
    temps = np.array([float(data.info[s][temperature_key]) for s in range(data.n_structures)])
    if not np.all(np.isfinite(temps) & (temps > 0)):
        raise ValueError(f"{temperature_key} must be positive (K), got {sorted(set(temps.tolist()))[:5]}")
    unlabelled = AtomsData(numbers=data.numbers, positions=data.positions, offsets=data.offsets, cells=data.cells,
                           info=data.info)
    train, val, _ = split_structures(data.n_structures, split_seed, 0.1, 0.05)
    elements = data.elements
    pot = atomistic_potential(elements, arch, preset, cutoff, {e: 0.0 for e in elements}, float(energy_scale))
    cfg = replace(config or TrainConfig(), losses=[LossSpec("sliced_score", target=KBT)], monitor="sliced_score")
    ds = AtomsSet(unlabelled, elements, structure_targets={KBT: np.array([units.kbt(t) for t in temps])})
    result = fit(pot, ds, ds, cfg, out, train, val, extra={"data_digest": digest, "elements": elements})
    model_file = out / "model.pt"
    settings = {"arch": arch, "preset": preset, "cutoff": cutoff, "max_epochs": cfg.max_epochs, "seed": cfg.seed,
                "temperatures_K": sorted(set(temps.tolist())), "energy_scale": float(energy_scale)}
    save_potential(model_file, pot, extra={"role": "score_matching", **settings})
    summary = {"model": str(model_file), "data": str(data_path), "data_digest": digest, "elements": elements,
               "split": {"train": train.tolist(), "val": val.tolist()}, "settings": settings,
               "best_epoch": int(result.best_epoch), "best_val": float(result.best_val)}
    write_text(done, json.dumps(summary, indent=1))
    return summary


__all__ = ["SCORE_ENERGY_SCALE", "asteroid_weights", "bias_estimates", "run_asteroid", "train_score_matching"]
