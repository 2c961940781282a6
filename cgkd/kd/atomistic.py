"""Atomistic potentials on the same models and trainer: element-typed teachers and students, and their KD.

A model is a :class:`cgkd.nn.CGPotential` whose types are element symbols and which has no priors; its per-type
energy shift starts at the per-element reference energies (:func:`cgkd.data.atoms.fit_reference_energies`) and
its energy scale at the RMS force x 0.1 nm. :func:`train_atomistic` trains one on a labelled structure file
(extended XYZ or an ASE database) with force and energy terms in the RMSE + MAE form, and, given a teacher,
adds the teacher's per-atom energies as a target (the per-atom-energy KD of Matin et al., Digital Discovery
2025), optionally with a Born-Again schedule that hands the weight from the teacher term to the labels.

The split of the structures (train / validation / test) depends only on their number and ``split_seed``, so a
teacher and its students trained on one file share it. A finished run folder (``atomistic.json``) is skipped;
an interrupted one resumes from the trainer's checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np
import torch

from cgkd import keys, units
from cgkd.data.atoms import fit_reference_energies
from cgkd.io.atomic import write_text
from cgkd.io.atoms import EV_PER_A_TO_KJ_PER_MOL_NM, AtomsData, read_atoms
from cgkd.io.provenance import file_digest
from cgkd.nn import CGPotential, build_model
from cgkd.nn.base import energy_scale_from_forces
from cgkd.nn.potential import load_potential, save_potential
from cgkd.train.atoms import ENERGY_LABEL, AtomsSet
from cgkd.train.losses import LossSpec
from cgkd.train.schedule import born_again
from cgkd.train.trainer import TrainConfig, fit

SUMMARY_FILE = "atomistic.json"
#: KD targets taken from a teacher: name -> (loss term, teacher output). ``atom_energy`` is the per-atom-energy
#: KD of Matin et al. (2025); ``n2n``, ``e2n`` and ``v2v`` the feature KD of Ekstroem Kelvinius et al. (NeurIPS
#: 2023): node-to-node, edge-to-node and vector-to-vector (the last needs vector features, i.e. PaiNN).
KD_TERMS = {
    "atom_energy": ("node_energy", keys.NODE_ENERGY),
    "n2n": ("node_features", keys.NODE_FEATURES),
    "e2n": ("edge_to_node", keys.EDGE_FEATURES),
    "v2v": ("vector_features", keys.VECTOR_FEATURES),
}
#: Default neighbour cutoff of atomistic models, nm (5 Angstrom).
DEFAULT_CUTOFF = 0.5


def split_structures(n: int, split_seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1):
    """(train, val, test) index arrays of ``n`` structures, a permutation fixed by ``split_seed``."""
    if n < 3:
        raise ValueError(f"need at least 3 structures to split into train, validation and test, got {n}")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction and test_fraction must be in (0, 1) with a sum below 1, got {val_fraction}, "
                         f"{test_fraction}")
    order = np.random.default_rng(int(split_seed)).permutation(n)
    n_test = max(1, int(round(test_fraction * n)))
    n_val = max(1, int(round(val_fraction * n)))
    return order[n_test + n_val:], order[n_test:n_test + n_val], order[:n_test]


def atomistic_potential(elements: Sequence[str], arch: str = "hipnn", preset: Union[str, dict] = "small",
                        cutoff: float = DEFAULT_CUTOFF, references: Optional[Dict[str, float]] = None,
                        energy_scale: float = 1.0) -> CGPotential:
    """An untrained element-typed potential (no priors).

    Parameters
    ----------
    elements : sequence of str
        Element symbols, the type order.
    arch, preset : the architecture (``cgkd.nn.ARCHITECTURES``) and its preset name or config dict; the
        preset's cutoff is replaced by ``cutoff``.
    cutoff : float, nm
    references : dict element -> kJ/mol, optional
        Per-element reference energies: the start of the per-type energy shift.
    energy_scale : float, kJ/mol
    """
    from cgkd.nn.base import config_dict, resolve_config

    elements = [str(e) for e in elements]
    cfg = config_dict(resolve_config(arch, preset))
    cfg["cutoff"] = float(cutoff)
    if "r_min" in cfg and cfg["r_min"] >= 0.5 * cutoff:
        cfg["r_min"] = 0.0  # the radial basis must start inside the cutoff
    model = build_model(arch, cfg, len(elements))
    pot = CGPotential(model, [], elements, float(cutoff))
    pot.set_energy_scale(float(energy_scale))
    if references:
        missing = [e for e in elements if e not in references]
        if missing:
            raise ValueError(f"references lack elements {missing}")
        with torch.no_grad():
            pot.model.scale_shift.shift.copy_(torch.tensor([references[e] for e in elements]))
    return pot


def rereference(potential: CGPotential, data: AtomsData, batch_size: int = 32) -> Dict[str, float]:
    """Shift the per-element energies of ``potential`` to the energy zero of ``data``'s labels, in place.

    Labels of another method (PBE after xTB, EMT after a universal model) differ by a per-element constant that
    forces never see; fine-tuning would spend its epochs on it. The correction is the least-squares fit of the
    energy residual ``E_label - E_model`` on composition (:func:`cgkd.data.atoms.fit_reference_energies`), added to
    the per-type shift. Returns it (kJ/mol per atom, by element).
    """
    if data.energy is None:
        raise ValueError("data must have energies to re-reference a potential")
    ds = AtomsSet(data, potential.type_names, dtype=next(potential.parameters()).dtype)
    pred = np.zeros(data.n_structures)
    potential.eval()
    with torch.no_grad():
        for start in range(0, data.n_structures, batch_size):
            idx = np.arange(start, min(start + batch_size, data.n_structures))
            b = ds.batch(idx)
            out = potential.forward_batch(b[keys.POSITIONS], b[keys.TYPES], b[keys.BOX], b["batch"], b["n_graphs"])
            pred[idx] = out[keys.ENERGY].double().numpy()
    residual = AtomsData(numbers=data.numbers, positions=data.positions, offsets=data.offsets, cells=data.cells,
                         energy=data.energy - pred)
    delta = fit_reference_energies(residual, elements=potential.type_names)
    with torch.no_grad():
        shift = potential.model.scale_shift.shift
        shift.add_(torch.tensor([delta[e] for e in potential.type_names], dtype=shift.dtype))
    return delta


def evaluate_atomistic(potential: CGPotential, data: AtomsData, indices: Optional[Sequence[int]] = None,
                       batch_size: int = 16) -> dict:
    """Force and energy errors of ``potential`` on labelled structures (kJ/mol/nm, kJ/mol per atom, and eV units)."""
    if data.energy is None or data.forces is None:
        raise ValueError("data must be labelled (energies and forces) to evaluate a potential on it")
    ds = AtomsSet(data, potential.type_names, dtype=next(potential.parameters()).dtype)
    idx = np.arange(data.n_structures) if indices is None else np.asarray(indices, dtype=np.int64)
    df, de = [], []
    potential.eval()
    for b in ds.batches(idx, batch_size):
        out = potential.forward_batch(b[keys.POSITIONS], b[keys.TYPES], b[keys.BOX], b["batch"], b["n_graphs"],
                                      compute_forces=True, create_graph=False)
        df.append((out[keys.FORCE] - b[keys.FORCES]).detach().numpy())
        n = torch.bincount(b["batch"], minlength=b["n_graphs"]).to(out[keys.ENERGY].dtype)
        de.append(((out[keys.ENERGY] - b[ENERGY_LABEL]) / n).detach().numpy())
    df, de = np.concatenate(df), np.concatenate(de)
    f_rmse, e_rmse = float(np.sqrt(np.mean(df**2))), float(np.sqrt(np.mean(de**2)))
    return {"force_rmse": f_rmse, "force_mae": float(np.mean(np.abs(df))), "energy_rmse_per_atom": e_rmse,
            "energy_mae_per_atom": float(np.mean(np.abs(de))), "force_rmse_eV_per_A": f_rmse / EV_PER_A_TO_KJ_PER_MOL_NM,
            "energy_rmse_meV_per_atom": 1e3 * e_rmse / units.EV_TO_KJ_PER_MOL, "n_structures": int(len(idx))}


def train_atomistic(data_path: str | Path, out_dir: str | Path, *, arch: str = "hipnn",
                    preset: Union[str, dict] = "small", cutoff: float = DEFAULT_CUTOFF,
                    config: Optional[TrainConfig] = None, force_weight: float = 1.0, energy_weight: float = 0.1,
                    teacher: Optional[str | Path] = None, atom_energy_weight: float = 1.0,
                    kd: Sequence[str] = ("atom_energy",), feature_weight: float = 1.0, born_again_epoch: int = 0,
                    split_seed: int = 0, val_fraction: float = 0.1, test_fraction: float = 0.1,
                    init: Optional[str | Path] = None, sample_weight: Optional[np.ndarray] = None) -> dict:
    """Train an atomistic potential (a teacher, a control, or a student of ``teacher``); resumable.

    Parameters
    ----------
    data_path : path
        Labelled structures (extended XYZ or ASE database, ``cgkd.io.atoms.read_atoms``).
    out_dir : path
        Run folder: ``checkpoint.pt``, ``log.jsonl``, ``model.pt`` and ``atomistic.json`` (written last).
    arch, preset, cutoff : the model (see :func:`atomistic_potential`).
    config : TrainConfig, optional
        Epochs, batch size, learning rate, seed ...; its ``losses`` and ``schedule`` are set here, and its
        ``monitor`` (the validation quantity that picks the best model) defaults to ``forces``.
    force_weight, energy_weight : float
        Weights of the ``forces`` and ``energy_rmse_mae`` terms (both RMSE + MAE).
    teacher : path, optional
        A trained model file (``model.pt`` of another run) whose outputs become targets. Its elements must be
        the data's.
    kd : sequence of str
        With a teacher, the targets taken from it (:data:`KD_TERMS`): ``atom_energy`` (weight
        ``atom_energy_weight``), ``n2n``, ``e2n``, ``v2v`` (weight ``feature_weight``; a learned projection maps
        the student's width to the teacher's).
    born_again_epoch : int
        With a teacher and > 0: the Born-Again ramp, the teacher terms at weight 1 and the label terms at 0.1
        until this epoch, then the other way round.
    split_seed, val_fraction, test_fraction : the structure split (:func:`split_structures`).
    init : path, optional
        Start from this model file's weights and architecture (fine-tuning); ``arch``, ``preset`` and ``cutoff``
        are then taken from it, and its per-element energies are moved to the new labels' zero first
        (:func:`rereference`).
    sample_weight : array, shape=(n_structures,), optional
        Per-structure weights of every loss term (e.g. ASTEROID's ``exp(-bias / gamma)``), >= 0.

    Returns
    -------
    dict
        The summary written to ``atomistic.json`` (model file, split, test errors, settings).
    """
    out = Path(out_dir)
    done = out / SUMMARY_FILE
    data_path = Path(data_path)
    digest = file_digest(data_path)
    if sample_weight is not None:  # other weights are other training data
        import hashlib

        w = np.ascontiguousarray(np.asarray(sample_weight, dtype=np.float64))
        digest = f"{digest}+w{hashlib.sha256(w.tobytes()).hexdigest()[:16]}"
    if done.is_file():
        summary = json.loads(done.read_text())
        if summary.get("data_digest") != digest:
            raise ValueError(f"{out} holds a model trained on other data (digest {summary.get('data_digest')}, this "
                             f"file {digest}); choose another out_dir")
        return summary
    data = read_atoms(data_path)
    if data.energy is None or data.forces is None:
        raise ValueError(f"{data_path} has no energies and forces; label it first (cgkd atoms label)")
    train, val, test = split_structures(data.n_structures, split_seed, val_fraction, test_fraction)
    elements = data.elements
    teacher_model = None
    if teacher is not None:
        teacher_model = load_potential(teacher)
        if list(teacher_model.type_names) != elements:
            raise ValueError(f"teacher {teacher} has element types {teacher_model.type_names}, the data {elements}")
    missing = sorted(set(elements) - set(data.select(train).elements))
    if missing:
        raise ValueError(f"elements {missing} occur only in validation or test structures of {data_path}; the model "
                         "cannot learn them (add structures with them, or change split_seed)")
    references = fit_reference_energies(data.select(train))
    if init is not None:
        pot = load_potential(init)
        if list(pot.type_names) != elements:
            raise ValueError(f"init model {init} has element types {pot.type_names}, the data {elements}")
        rereference(pot, data.select(train))
        pot.train()
    else:
        scale = energy_scale_from_forces(data.forces[np.concatenate([np.arange(data.offsets[s], data.offsets[s + 1])
                                                                      for s in train])])
        pot = atomistic_potential(elements, arch, preset, cutoff, references, scale)
    losses = [LossSpec("forces", weight=force_weight, target=keys.FORCES),
              LossSpec("energy_rmse_mae", weight=energy_weight, target=ENERGY_LABEL)]
    schedule = []
    kd = [str(k) for k in kd] if teacher_model is not None else []
    unknown = [k for k in kd if k not in KD_TERMS]
    if unknown:
        raise ValueError(f"kd must name terms among {sorted(KD_TERMS)}, got {unknown}")
    if teacher_model is not None and not kd:
        raise ValueError("a teacher was given but kd names no term to take from it")
    for k in kd:
        term, target = KD_TERMS[k]
        losses.append(LossSpec(term, weight=atom_energy_weight if k == "atom_energy" else feature_weight,
                               target=target, source="teacher", name=f"teacher_{k}"))
    if kd and born_again_epoch > 0:
        schedule = born_again([f"teacher_{k}" for k in kd], ["forces", "energy_rmse_mae"], born_again_epoch)
    cfg = config or TrainConfig()
    # the best model is the one with the lowest validation force loss against the labels, for every arm alike: a
    # KD student's total loss also rewards imitating its teacher (a Born-Again student picked by it is the
    # teacher-imitation phase before the switch)
    cfg = replace(cfg, losses=losses, schedule=schedule, monitor=cfg.monitor or "forces")
    ds = AtomsSet(data, elements, sample_weight=sample_weight)
    result = fit(pot, ds, ds, cfg, out, train, val, teacher=teacher_model,
                 extra={"data_digest": digest, "elements": elements})
    model_file = out / "model.pt"
    settings = {"arch": arch, "preset": preset, "cutoff": cutoff, "force_weight": force_weight,
                "energy_weight": energy_weight, "teacher": None if teacher is None else str(teacher),
                "atom_energy_weight": atom_energy_weight if "atom_energy" in kd else 0.0, "kd": kd,
                "feature_weight": feature_weight if set(kd) - {"atom_energy"} else 0.0,
                "born_again_epoch": born_again_epoch, "split_seed": split_seed, "max_epochs": cfg.max_epochs,
                "init": None if init is None else str(init), "weighted": sample_weight is not None,
                "seed": cfg.seed}
    save_potential(model_file, pot, extra={"role": "atomistic", **settings})
    summary = {"model": str(model_file), "data": str(data_path), "data_digest": digest, "elements": elements,
               "references_kJ_mol": references, "n_parameters": int(sum(p.numel() for p in pot.parameters())),
               "split": {"train": train.tolist(), "val": val.tolist(), "test": test.tolist()},
               "test": evaluate_atomistic(pot, data, test), "settings": settings,
               "best_epoch": int(result.best_epoch), "seconds_per_epoch": float(result.seconds_per_epoch)}
    write_text(done, json.dumps(summary, indent=1))
    return summary


__all__ = ["DEFAULT_CUTOFF", "KD_TERMS", "rereference", "atomistic_potential", "evaluate_atomistic", "split_structures", "train_atomistic"]
