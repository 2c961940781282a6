"""Per-atom-energy KD and Born-Again on EMT aluminium (issue 14, "reproduce 001" at CPU scale).

The claim tested (Matin et al., Digital Discovery 2025): a student trained on the labels plus its teacher's
per-atom energies has lower force error than the same architecture trained on the labels alone, and a
Born-Again student (the teacher's own size, taught by it with a weight ramp) beats its teacher.

1. **Data**: cubic fcc Al cells of 32, 48, 72 and 108 atoms, Langevin MD on ASE's EMT at several temperatures
   and isotropic strains, a labelled frame every ``interval`` steps (``cgkd.aa.labelers.sample_md``); one
   extended XYZ file, split once (``cgkd.kd.atomistic.split_structures``) into train / validation / test.
2. **Teacher**: HIP-NN with one interaction layer and several atom layers (the paper's shape).
3. **Arms**, per width and seed: ``control`` (labels only) and ``student`` (labels + teacher atom energies);
   and ``born_again``: the teacher's architecture taught by the teacher with the Born-Again ramp.
4. **Cost**: wall time of one energy + forces evaluation per atom on a 4x4x4 cell (256 atoms) and the memory
   the backward pass keeps (bytes of saved tensors per atom), measured in this process, one thread.

Every training folder is resumable and skipped when finished. Result: ``benchmarks/results/atomistic_kd_<preset>.json``
and ``docs/benchmarks/atomistic_kd_<preset>.png`` (force RMSE against time and memory per atom).

Usage::

    OMP_NUM_THREADS=1 python -m benchmarks.atomistic_kd --preset cpu --out runs/atomistic-kd
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Tuple

import numpy as np

from benchmarks.common import machine_info, mean_ci, save_result


@dataclass(frozen=True)
class AtomisticPreset:
    repeats: Tuple[Tuple[int, int, int], ...] = ((2, 2, 2), (2, 2, 3), (2, 3, 3), (3, 3, 3))
    temperatures: Tuple[float, ...] = (300.0, 700.0, 1100.0, 1500.0)
    strains: Tuple[float, ...] = (0.97, 1.0, 1.03)
    frames_per_run: int = 10
    interval: int = 20
    equilibration: int = 50
    teacher: Tuple[int, int, int] = (32, 3, 16)  # features, atom layers, radial functions; one interaction
    widths: Tuple[int, ...] = (4, 8, 16)
    seeds: Tuple[int, ...] = (0, 1, 2, 3)
    epochs: int = 60
    teacher_epochs: int = 100
    batch_size: int = 8
    lr: float = 2e-3
    energy_weight: float = 0.1
    atom_energy_weight: float = 1.0
    born_again_fraction: float = 0.5  # the ramp switches after this fraction of the epochs


PRESETS: Dict[str, AtomisticPreset] = {
    "tiny": AtomisticPreset(repeats=((2, 2, 2), (2, 2, 3)), temperatures=(300.0, 1200.0), strains=(1.0,),
                            frames_per_run=4, interval=5, equilibration=5, teacher=(8, 1, 6), widths=(4,), seeds=(0,),
                            epochs=2, teacher_epochs=2, batch_size=4),
    "cpu": AtomisticPreset(),
    # for a GPU: more and larger cells, the paper's widths
    "gpu": AtomisticPreset(repeats=((2, 2, 2), (3, 3, 3), (4, 4, 4), (5, 5, 5)), frames_per_run=50,
                           teacher=(128, 3, 20), widths=(8, 16, 32, 64), seeds=(0, 1, 2, 3, 4), epochs=200,
                           teacher_epochs=300, batch_size=16),
}


def _config(features: int, atom_layers: int, radial: int) -> dict:
    return {"n_features": features, "n_interactions": 1, "n_atom_layers": atom_layers, "n_radial": radial}


def cost_per_atom(model_file, repeats=(4, 4, 4), repeats_timed: int = 5) -> dict:
    """us per atom of one energy + forces evaluation and saved-tensor bytes per atom, on an Al supercell."""
    import torch

    from cgkd import keys
    from cgkd.aa.labelers import fcc_cells
    from cgkd.io.atoms import from_ase
    from cgkd.nn.potential import load_potential
    from cgkd.train.atoms import AtomsSet

    pot = load_potential(model_file)
    cell = fcc_cells("Al", [repeats])[0]
    cell.rattle(0.05, seed=0)
    data = from_ase([cell], labels=False)
    b = AtomsSet(data, pot.type_names).batch([0])
    n = len(cell)
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    def run():
        return pot.forward_batch(b[keys.POSITIONS], b[keys.TYPES], b[keys.BOX], b["batch"], 1, compute_forces=True,
                                 create_graph=False)

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run()
        t0 = time.perf_counter()
        for _ in range(repeats_timed):
            run()
        wall = (time.perf_counter() - t0) / repeats_timed
    finally:
        torch.set_num_threads(old)
    return {"us_per_atom": 1e6 * wall / n, "saved_bytes_per_atom": saved[0] / n, "n_atoms": n}


def run(preset: AtomisticPreset, out: Path, name: str, born_again: bool = True, labeler: str = "emt") -> dict:
    from cgkd.aa.labelers import fcc_cells, get_labeler, sample_md
    from cgkd.io.atoms import concatenate, write_atoms
    from cgkd.kd.atomistic import train_atomistic
    from cgkd.train.trainer import TrainConfig

    out.mkdir(parents=True, exist_ok=True)
    data_path = out / "al.xyz"
    t0 = time.perf_counter()
    if not data_path.exists():
        sets = [sample_md(get_labeler("emt"), cell, temperatures=preset.temperatures, strains=preset.strains,
                          frames_per_run=preset.frames_per_run, interval=preset.interval,
                          equilibration=preset.equilibration, seed=1000 * k)
                for k, cell in enumerate(fcc_cells("Al", preset.repeats))]
        write_atoms(data_path, concatenate(sets))
    if labeler != "emt":  # the same configurations, labelled by another method (e.g. a universal model)
        relabelled = out / f"al_{labeler}.xyz"
        if not relabelled.exists():
            from cgkd.io.atoms import read_atoms

            write_atoms(relabelled, get_labeler(labeler).label(read_atoms(data_path), cache=out / f"{labeler}_cache"))
        data_path = relabelled
    label_s = time.perf_counter() - t0

    def cfg(epochs, seed):
        return TrainConfig(max_epochs=epochs, batch_size=preset.batch_size, lr=preset.lr, seed=seed,
                           early_stopping=max(10, epochs // 3), progress=True)

    f, layers, radial = preset.teacher
    common = dict(energy_weight=preset.energy_weight, split_seed=0)
    teacher = train_atomistic(data_path, out / "teacher", preset=_config(f, layers, radial),
                              config=cfg(preset.teacher_epochs, 0), **common)
    rows = [dict(arm="teacher", width=f, seed=0, **_row(teacher))]
    t_model = teacher["model"]
    for seed in preset.seeds:
        for width in preset.widths:
            for arm in ("control", "student"):
                kw = dict(teacher=t_model, atom_energy_weight=preset.atom_energy_weight) if arm == "student" else {}
                s = train_atomistic(data_path, out / f"{arm}_w{width}_s{seed}", preset=_config(width, 1, min(radial, 8)),
                                    config=cfg(preset.epochs, seed), **common, **kw)
                rows.append(dict(arm=arm, width=width, seed=seed, **_row(s)))
        if not born_again:
            continue
        ba = train_atomistic(data_path, out / f"born_again_s{seed}", preset=_config(f, layers, radial),
                             config=cfg(preset.teacher_epochs, 100 + seed), teacher=t_model,
                             atom_energy_weight=preset.atom_energy_weight,
                             born_again_epoch=max(1, int(preset.born_again_fraction * preset.teacher_epochs)), **common)
        rows.append(dict(arm="born_again", width=f, seed=seed, **_row(ba)))
        ctl = train_atomistic(data_path, out / f"teacher_size_control_s{seed}", preset=_config(f, layers, radial),
                              config=cfg(preset.teacher_epochs, 100 + seed), **common)
        rows.append(dict(arm="teacher_size_control", width=f, seed=seed, **_row(ctl)))
    costs = {}
    for r in rows:
        key = (r["arm"] in ("teacher", "born_again", "teacher_size_control"), r["width"])
        if key not in costs:
            costs[key] = cost_per_atom(r["model"])
        r.update(costs[key])
    result = {"machine": machine_info(), "preset": name, "settings": preset.__dict__, "data": str(data_path),
              "label_seconds": label_s, "teacher": teacher["test"], "rows": rows, "paired": paired(rows)}
    save_result(f"atomistic_kd_{name}", result)
    plot(result, Path("docs/benchmarks") / f"atomistic_kd_{name}.png")
    return result


def _row(summary: dict) -> dict:
    t = summary["test"]
    return {"model": summary["model"], "n_parameters": summary["n_parameters"], "force_rmse": t["force_rmse"],
            "force_rmse_eV_per_A": t["force_rmse_eV_per_A"], "energy_rmse_meV_per_atom": t["energy_rmse_meV_per_atom"],
            "best_epoch": summary["best_epoch"], "seconds_per_epoch": summary["seconds_per_epoch"]}


def paired(rows) -> dict:
    """Student - control force RMSE per width (paired by seed), and Born-Again - teacher-size control; mean and
    95 % Student-t half-width."""
    out = {}

    def stats(d):
        mean, half, n = mean_ci(d)
        return {"mean": mean, "ci95": half, "better": int((np.asarray(d) < 0).sum()), "n": n}

    by = {(r["arm"], r["width"], r["seed"]): r["force_rmse_eV_per_A"] for r in rows}
    for width in sorted({r["width"] for r in rows if r["arm"] == "student"}):
        seeds = sorted(s for (a, w, s) in by if a == "student" and w == width and ("control", w, s) in by)
        out[f"student-control w{width}"] = stats([by[("student", width, s)] - by[("control", width, s)] for s in seeds])
    seeds = sorted(s for (a, w, s) in by if a == "born_again")
    if seeds:
        w = next(r["width"] for r in rows if r["arm"] == "born_again")
        out["born_again-teacher_size_control"] = stats(
            [by[("born_again", w, s)] - by[("teacher_size_control", w, s)] for s in seeds
             if ("teacher_size_control", w, s) in by])
        teacher = next(r["force_rmse_eV_per_A"] for r in rows if r["arm"] == "teacher")
        out["born_again-teacher"] = stats([by[("born_again", w, s)] - teacher for s in seeds])
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    colours = {"control": "tab:blue", "student": "tab:orange", "teacher": "k", "born_again": "tab:green",
               "teacher_size_control": "tab:purple"}
    for ax, key, label in ((axes[0], "us_per_atom", "us per atom (energy + forces, 1 thread)"),
                           (axes[1], "saved_bytes_per_atom", "saved-tensor bytes per atom")):
        for arm, colour in colours.items():
            pts = [(r[key], r["force_rmse_eV_per_A"]) for r in result["rows"] if r["arm"] == arm]
            if pts:
                x, y = zip(*pts)
                ax.scatter(x, y, c=colour, label=arm, s=18, alpha=0.8)
        ax.set_xlabel(label)
        ax.set_ylabel("test force RMSE (eV/A)")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(result: dict) -> str:
    lines = ["| arm | width | seeds | parameters | test force RMSE (meV/A), mean +- sd | energy RMSE (meV/atom) | "
             "us/atom | bytes/atom |", "|---|---|---|---|---|---|---|---|"]
    groups = {}
    for r in result["rows"]:
        groups.setdefault((r["arm"], r["width"]), []).append(r)
    for (arm, width), rs in groups.items():
        f = np.array([r["force_rmse_eV_per_A"] for r in rs]) * 1e3
        e = np.array([r["energy_rmse_meV_per_atom"] for r in rs])
        lines.append(f"| {arm} | {width} | {len(rs)} | {rs[0]['n_parameters']} | {f.mean():.1f} +- "
                     f"{f.std(ddof=1) if len(f) > 1 else 0:.1f} | {e.mean():.2f} | {rs[0]['us_per_atom']:.1f} | "
                     f"{rs[0]['saved_bytes_per_atom']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    p.add_argument("--out", type=Path, default=Path("runs/atomistic-kd"))
    p.add_argument("--energy-weight", type=float, default=None, help="weight of the energy term (default: the preset's)")
    p.add_argument("--widths", type=int, nargs="+", default=None, help="student widths (default: the preset's)")
    p.add_argument("--no-born-again", action="store_true", help="skip the Born-Again and same-size control arms")
    p.add_argument("--labels", default="emt", help="label the EMT-sampled configurations with this labeler instead "
                   "(e.g. chgnet: energies that are not an explicit per-atom sum)")
    args = p.parse_args(argv)
    from dataclasses import replace

    preset, name = PRESETS[args.preset], args.preset
    if args.energy_weight is not None:
        preset, name = replace(preset, energy_weight=args.energy_weight), f"{name}_ew{args.energy_weight:g}"
    if args.widths:
        preset = replace(preset, widths=tuple(args.widths))
    if args.labels != "emt":
        name = f"{name}_{args.labels}"
    result = run(preset, args.out, name, born_again=not args.no_born_again, labeler=args.labels)
    print(markdown(result))
    print(json.dumps(result["paired"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
