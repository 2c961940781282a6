"""ASTEROID on ethanol: many GFN2-xTB labels, a few PBE/def2-SVP labels (issue 15, deliver 3).

1. **Data** (``--stage data``, resumable through the label cache): Langevin MD of ethanol on GFN2-xTB at several
   temperatures; every frame labelled by xTB (cheap). A fixed random subset is labelled by PBE/def2-SVP with
   density fitting in PySCF (accurate): ``n_pool`` frames to draw training labels from and ``n_test`` held out.
2. **Arms** (``--stage arms``), at each number N of accurate labels and seed:
   ``scratch`` (N accurate only), ``cheap`` (all xTB only), ``pooled`` (xTB + N accurate, unweighted),
   ``cheap_finetune`` (xTB, then fine-tuned on N accurate), ``asteroid`` (bias model on N accurate, xTB weighted by
   exp(-b/gamma), fine-tuned on N accurate), ``score`` (sliced score matching on the xTB configurations at their
   sampling temperatures, no labels), ``score_finetune`` (that model fine-tuned on N accurate) and ``correction``
   (the xTB-trained model plus a learned correction, a second model trained on accurate - that model's prediction
   on the N accurate frames: Delta-learning on top of the cheap fidelity).
3. **Output**: force RMSE (and energy RMSE per atom, offset included: xTB and PBE have different zeros, which
   the arms that see accurate labels learn) against the held-out PBE frames, mean and 95 % interval over seeds.

Usage::

    OMP_NUM_THREADS=1 python -m benchmarks.asteroid --preset cpu --stage data --out runs/asteroid
    OMP_NUM_THREADS=1 python -m benchmarks.asteroid --preset cpu --stage arms --out runs/asteroid
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

import numpy as np

from benchmarks.common import machine_info, mean_ci, save_result

ARMS = ("scratch", "cheap", "pooled", "cheap_finetune", "asteroid", "score", "score_finetune", "correction")


@dataclass(frozen=True)
class AsteroidPreset:
    molecule: str = "CH3CH2OH"
    temperatures: Tuple[float, ...] = (300.0, 600.0, 900.0)
    frames_per_run: int = 500
    interval: int = 10
    timestep_fs: float = 0.5
    n_pool: int = 100
    n_test: int = 50
    sizes: Tuple[int, ...] = (25, 50, 100)
    seeds: Tuple[int, ...] = (0, 1, 2)
    model: Tuple[int, int] = (32, 2)  # HIP-NN features, interactions
    epochs: int = 60
    finetune_epochs: int = 60
    batch_size: int = 16


PRESETS: Dict[str, AsteroidPreset] = {
    "tiny": AsteroidPreset(molecule="H2O", temperatures=(500.0,), frames_per_run=20, interval=2, n_pool=6, n_test=3,
                           sizes=(3, 6), seeds=(0,), model=(8, 1), epochs=2, finetune_epochs=2, batch_size=4),
    "cpu": AsteroidPreset(),
    "gpu": AsteroidPreset(frames_per_run=2000, n_pool=400, n_test=100, sizes=(25, 50, 100, 200, 400),
                          seeds=(0, 1, 2, 3, 4), model=(64, 3), epochs=300, finetune_epochs=200),
}


def data(preset: AsteroidPreset, out: Path) -> dict:
    from ase.build import molecule

    from cgkd.aa.labelers import get_labeler, sample_md
    from cgkd.io.atoms import write_atoms

    out.mkdir(parents=True, exist_ok=True)
    cheap_path = out / "cheap_xtb.xyz"
    if not cheap_path.exists():
        write_atoms(cheap_path, sample_md(get_labeler("xtb"), molecule(preset.molecule),
                                          temperatures=preset.temperatures, frames_per_run=preset.frames_per_run,
                                          interval=preset.interval, timestep_fs=preset.timestep_fs,
                                          equilibration=100, seed=0))
    from cgkd.io.atoms import read_atoms

    cheap = read_atoms(cheap_path)
    pick = np.random.default_rng(0).permutation(cheap.n_structures)[: preset.n_pool + preset.n_test]
    acc_path = out / "accurate_dft.xyz"
    if not acc_path.exists():
        acc = get_labeler("dft").label(cheap.select(pick), cache=out / "dft_cache")
        write_atoms(acc_path, acc)
    return {"cheap": str(cheap_path), "accurate": str(acc_path), "n_cheap": cheap.n_structures,
            "picked": pick.tolist()}


def arms(preset: AsteroidPreset, out: Path, name: str) -> dict:
    from cgkd.io.atoms import concatenate, read_atoms, write_atoms
    from cgkd.kd.asteroid import run_asteroid, train_score_matching
    from cgkd.kd.atomistic import train_atomistic
    from cgkd.nn.potential import load_potential
    from cgkd.train.trainer import TrainConfig

    acc = read_atoms(out / "accurate_dft.xyz")
    cheap_path = out / "cheap_xtb.xyz"
    cheap = read_atoms(cheap_path)
    test = acc.select(np.arange(preset.n_pool, preset.n_pool + preset.n_test))
    pool = acc.select(np.arange(preset.n_pool))
    f, layers = preset.model
    model = {"n_features": f, "n_interactions": layers}
    rows = []

    def cfg(epochs, seed):
        return TrainConfig(max_epochs=epochs, batch_size=preset.batch_size, seed=seed, progress=True,
                           early_stopping=max(10, epochs // 3))

    cheap_run = None
    for seed in preset.seeds:
        cheap_run = train_atomistic(cheap_path, out / f"cheap_s{seed}", preset=model, config=cfg(preset.epochs, seed))
        rows.append(dict(arm="cheap", n=0, seed=seed, **_score(load_potential(cheap_run["model"]), test)))
        score_run = train_score_matching(cheap_path, out / f"score_s{seed}", preset=model, config=cfg(preset.epochs, seed))
        rows.append(dict(arm="score", n=0, seed=seed, **_score(load_potential(score_run["model"]), test)))
        for n in preset.sizes:
            sub = out / f"accurate_n{n}_s{seed}.xyz"
            if not sub.exists():
                write_atoms(sub, pool.select(np.random.default_rng(seed).permutation(preset.n_pool)[:n]))
            scratch = train_atomistic(sub, out / f"scratch_n{n}_s{seed}", preset=model,
                                      config=cfg(preset.epochs, seed), val_fraction=0.15, test_fraction=0.05)
            rows.append(dict(arm="scratch", n=n, seed=seed, **_score(load_potential(scratch["model"]), test)))
            both = out / f"pooled_n{n}_s{seed}.xyz"
            if not both.exists():
                write_atoms(both, concatenate([cheap, read_atoms(sub)]))
            pooled = train_atomistic(both, out / f"pooled_n{n}_s{seed}", preset=model, config=cfg(preset.epochs, seed))
            rows.append(dict(arm="pooled", n=n, seed=seed, **_score(load_potential(pooled["model"]), test)))
            tuned = train_atomistic(sub, out / f"cheap_finetune_n{n}_s{seed}", init=cheap_run["model"],
                                    config=cfg(preset.finetune_epochs, seed), val_fraction=0.15, test_fraction=0.05)
            rows.append(dict(arm="cheap_finetune", n=n, seed=seed, **_score(load_potential(tuned["model"]), test)))
            ast = run_asteroid(cheap_path, sub, out / f"asteroid_n{n}_s{seed}", preset=model,
                               config=cfg(preset.epochs, seed), finetune_config=cfg(preset.finetune_epochs, seed))
            rows.append(dict(arm="asteroid", n=n, seed=seed, gamma=ast["gamma"],
                             **_score(load_potential(ast["model"]), test)))
            sm = train_atomistic(sub, out / f"score_finetune_n{n}_s{seed}", init=score_run["model"],
                                 config=cfg(preset.finetune_epochs, seed), val_fraction=0.15, test_fraction=0.05)
            rows.append(dict(arm="score_finetune", n=n, seed=seed, **_score(load_potential(sm["model"]), test)))
            from cgkd.kd.pfd import ModelLabeler, TeacherLabeler, fit_correction

            base = ModelLabeler(cheap_run["model"])
            corr = fit_correction(base, sub, out / f"correction_n{n}_s{seed}", preset=model,
                                  config=cfg(preset.finetune_epochs, seed))
            both = TeacherLabeler(base, corr["model"]).label(test, show_progress=False)
            rows.append(dict(arm="correction", n=n, seed=seed, **_label_errors(both, test)))
    result = {"machine": machine_info(), "preset": name, "settings": preset.__dict__, "rows": rows,
              "summary": summarise(rows)}
    save_result(f"asteroid_{name}", result)
    return result


def _score(potential, test) -> dict:
    """Force RMSE and energy RMSE per atom against the held-out accurate labels."""
    from cgkd.kd.atomistic import evaluate_atomistic

    e = evaluate_atomistic(potential, test)
    return {"force_rmse_eV_per_A": e["force_rmse_eV_per_A"], "energy_rmse_meV_per_atom": e["energy_rmse_meV_per_atom"]}


def _label_errors(pred, test) -> dict:
    """Force RMSE (eV/A) and energy RMSE per atom (meV) of labels ``pred`` against ``test`` (same structures)."""
    from cgkd import units
    from cgkd.io.atoms import EV_PER_A_TO_KJ_PER_MOL_NM

    df = (pred.forces - test.forces) / EV_PER_A_TO_KJ_PER_MOL_NM
    de = (pred.energy - test.energy) / test.n_atoms / units.EV_TO_KJ_PER_MOL * 1e3
    return {"force_rmse_eV_per_A": float(np.sqrt(np.mean(df ** 2))),
            "energy_rmse_meV_per_atom": float(np.sqrt(np.mean(de ** 2)))}


def summarise(rows) -> dict:
    out = {}
    for arm in ARMS:
        for n in sorted({r["n"] for r in rows if r["arm"] == arm}):
            mean, half, k = mean_ci([1e3 * r["force_rmse_eV_per_A"] for r in rows if r["arm"] == arm and r["n"] == n])
            out[f"{arm} n={n}"] = {"force_rmse_meV_per_A": mean, "ci95": half, "n_seeds": k}
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--stage", default="all", choices=["data", "arms", "all"])
    p.add_argument("--out", type=Path, default=Path("runs/asteroid"))
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds of the arms (default: the preset's); "
                   "one process per seed shares the data and writes asteroid_<preset>_s<seeds>.json")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="numbers of accurate labels")
    p.add_argument("--epochs", type=int, default=None, help="epochs of every training (default: the preset's)")
    args = p.parse_args(argv)
    from dataclasses import replace

    preset, name = PRESETS[args.preset], args.preset
    if args.sizes:
        preset = replace(preset, sizes=tuple(args.sizes))
    if args.epochs:
        preset, name = replace(preset, epochs=args.epochs, finetune_epochs=args.epochs), f"{name}_e{args.epochs}"
    if args.seeds is not None:
        preset, name = replace(preset, seeds=tuple(args.seeds)), f"{name}_s{'-'.join(map(str, args.seeds))}"
    if args.stage in ("data", "all"):
        print(json.dumps({k: v for k, v in data(preset, args.out).items() if k != "picked"}))
    if args.stage in ("arms", "all"):
        print(json.dumps(arms(preset, args.out, name)["summary"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
