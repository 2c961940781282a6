"""Synthetic configurations, done properly (issue 11, deliver 5): rounds of the student's own MD, selection by the
ensemble's disagreement and coverage, ensemble labels, retraining (``cgkd.synthetic.synthetic_rounds``).

Per seed, round 0 is the student on the AA frames alone; each later round adds ``--per-round`` configurations
from the previous student's MD. Reported per round over the seeds (mean and 95 % t-interval; differences to round 0
paired by seed): force RMSE against the held-out mapped forces and against the ensemble, the ensemble's mean
disagreement on the round's student's own MD (against its disagreement on held-out AA frames), the survival of that
MD, and its RDF/ADF/CDF total absolute error against the held-out AA frames.

    python -m benchmarks.synthetic --cg runs/lc-water-strong/n0032/seed0/cg.h5 \\
        --teachers runs/lc-water-strong/n0032/seed0/teachers --out runs/synthetic --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from benchmarks.common import mean_ci, save_result


def structure(folder: Path, reference) -> dict:
    """Mean RDF/ADF/CDF TAE of the round's own MD against the held-out reference frames (a comparison newer than
    the finished round is read back, not redone)."""
    from cgkd.analysis import CompareSettings, compare

    metrics = folder / "compare" / "metrics.json"
    if metrics.is_file() and metrics.stat().st_mtime > (folder / "round.json").stat().st_mtime:
        rows = json.loads(metrics.read_text())["errors"]["student"]
    else:
        res = compare(reference, {"student": folder / "md"}, folder / "compare",
                      settings=CompareSettings(max_frames=200, progress=False))
        rows = res["errors"]["student"]
    return {k: float(np.mean([v["tae"] for name, v in rows.items() if name.startswith(k.upper())]))
            for k in ("rdf", "adf", "cdf")}


def plot(result: dict, path: Path, title: str) -> None:
    """Per round: force RMSE against the held-out mapped forces and against the ensemble (mean and 95 % CI over the
    seeds), the ensemble's disagreement on the round's own MD (each seed, log scale; the held-out AA value as a line),
    and RDF/ADF/CDF TAE (mean and 95 % CI). ``result`` is what :func:`main` saves (``rows`` and ``runs``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, runs = result["rows"], result["runs"]
    r = np.array([row["round"] for row in rows])
    fig, ax = plt.subplots(1, 3, figsize=(13, 4))

    def bar(a, key, label, style):
        m = np.array([row[key]["mean"] for row in rows])
        h = np.nan_to_num(np.array([row[key]["ci95"] for row in rows], dtype=float))
        a.errorbar(r, m, yerr=h, fmt=style, capsize=3, label=label)

    bar(ax[0], "force_rmse_vs_mapped", "vs held-out mapped forces", "o-")
    bar(ax[0], "force_rmse_vs_ensemble", "vs the ensemble's labels", "s-")
    ax[0].set_ylabel("student force RMSE (kJ/mol/nm)")
    for i, (seed, recs) in enumerate(sorted(runs.items())):
        ax[1].plot([x["round"] for x in recs], [x["own_md_mean_force_std"] for x in recs], "o-", color=f"C{i}",
                   alpha=0.8, label=f"seed {seed}: the student's own MD")
    ax[1].axhline(np.mean([row["aa_mean_force_std"] for row in rows]), color="k", lw=0.8, ls="--",
                  label="held-out AA frames")
    ax[1].set_yscale("log")
    ax[1].set_ylabel("ensemble force_std on the MD (kJ/mol/nm)")
    bar(ax[2], "rdf_tae", "RDF", "o-")
    bar(ax[2], "adf_tae", "ADF", "^-")
    bar(ax[2], "cdf_tae", "CDF", "s-")
    ax[2].set_ylabel("TAE of the own MD vs held-out AA")
    for a in ax:
        a.set_xlabel("round")
        a.set_xticks(r)
        a.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cg", required=True, type=Path)
    p.add_argument("--teachers", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--per-round", type=int, default=32)
    p.add_argument("--coverage", type=float, default=0.5)
    p.add_argument("--md-ps", type=float, default=20.0)
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--preset", default="small")
    p.add_argument("--device", default="cpu", help="torch device of the students' training (cpu, cuda)")
    p.add_argument("--name", default="synthetic")
    p.add_argument("--plot", type=Path, default=None, help="PNG of the per-round curves")
    p.add_argument("--sampler", choices=["student", "ensemble", "frames"], default="student",
                   help="candidates: the student's own MD (default), the ensemble's, or AA frames (--pool)")
    p.add_argument("--pool", type=Path, default=None,
                   help="--sampler frames: the full CG dataset the cell was cut from; its frames before the cell's "
                        "test block and outside its training and validation frames are the candidates")
    p.add_argument("--pool-size", type=int, default=None,
                   help="--sampler frames: keep this many of the candidate frames, evenly spaced (default all)")
    p.add_argument("--cell-result", type=Path, default=None,
                   help="--sampler frames: the cell's result.json (benchmarks.learning_curve), naming its frames")
    args = p.parse_args(argv)

    from cgkd.data.cg_h5 import read_cg
    from cgkd.synthetic import synthetic_rounds
    from cgkd.kd.teachers import read_split
    from cgkd.progress import note
    from cgkd.train import TrainConfig
    from cgkd.train.checkpoint import num_threads

    data = read_cg(args.cg)
    reference = data.subset(np.asarray(read_split(args.teachers)["test"]))
    pool = None
    if args.sampler == "frames":
        if args.pool is None or args.cell_result is None:
            p.error("--sampler frames needs --pool and --cell-result")
        sel = json.loads(args.cell_result.read_text())["frames"]
        full = read_cg(args.pool)
        idx = np.setdiff1d(np.arange(min(sel["test"])), np.asarray(sel["train"] + sel["val"]))
        if args.pool_size is not None and args.pool_size < len(idx):
            idx = idx[np.unique(np.round(np.linspace(0, len(idx) - 1, args.pool_size)).astype(np.int64))]
        pool = full.subset(idx)
        note(f"synthetic: {len(idx)} candidate AA frames of {args.pool} (up to frame {min(sel['test'])}, outside "
             f"the cell's {len(sel['train'])} training and {len(sel['val'])} validation frames)")
    runs = {}
    with num_threads(1):
        for seed in args.seeds:
            cfg = TrainConfig(max_epochs=args.epochs, batch_size=8, seed=3000 + seed, device=args.device,
                              progress=False)
            recs = synthetic_rounds(args.cg, args.teachers, args.out / f"seed{seed}", rounds=args.rounds,
                                    per_round=args.per_round, coverage=args.coverage, md_ps=args.md_ps,
                                    replicas=args.replicas, preset=args.preset, config=cfg, seed=seed,
                                    sampler=args.sampler, frames=pool)
            for r in recs:
                r["tae"] = structure(args.out / f"seed{seed}" / f"round_{r['round']:02d}", reference)
                note(f"synthetic: seed {seed} round {r['round']}: {r['n_synthetic']} synthetic frames, force RMSE "
                     f"{r['force_rmse_vs_mapped']:.2f}, own-MD disagreement {r['own_md_mean_force_std']:.1f} "
                     f"(AA {r['aa_mean_force_std']:.1f}), RDF TAE {r['tae']['rdf']:.3f}")
            runs[seed] = recs
    rows = []
    for r in range(args.rounds + 1):
        row = {"round": r, "n_synthetic": runs[args.seeds[0]][r]["n_synthetic"]}
        for key, get in (("force_rmse_vs_mapped", lambda x: x["force_rmse_vs_mapped"]),
                         ("force_rmse_vs_ensemble", lambda x: x["force_rmse_vs_ensemble"]),
                         ("own_md_mean_force_std", lambda x: x["own_md_mean_force_std"]),
                         ("rdf_tae", lambda x: x["tae"]["rdf"]), ("adf_tae", lambda x: x["tae"]["adf"]),
                         ("cdf_tae", lambda x: x["tae"]["cdf"])):
            vals = [get(runs[s][r]) for s in args.seeds]
            m, h, n = mean_ci(vals)
            d = [get(runs[s][r]) - get(runs[s][0]) for s in args.seeds]
            dm, dh, _ = mean_ci(d)
            row[key] = {"mean": m, "ci95": h, "minus_round0": dm, "minus_round0_ci95": dh,
                        "lower_than_round0": int(sum(x < 0 for x in d)), "n": n}
        row["own_md_survived"] = [runs[s][r]["own_md_survived"] for s in args.seeds]
        row["aa_mean_force_std"] = float(np.mean([runs[s][r]["aa_mean_force_std"] for s in args.seeds]))
        rows.append(row)
        f, dis, rdf = row["force_rmse_vs_mapped"], row["own_md_mean_force_std"], row["rdf_tae"]
        print(f"round {r}: +{row['n_synthetic']} frames  force {f['mean']:.2f} +- {f['ci95']:.2f} "
              f"(vs round 0 {f['minus_round0']:+.2f} +- {f['minus_round0_ci95']:.2f})  own-MD std {dis['mean']:.1f} "
              f"(AA {row['aa_mean_force_std']:.1f})  RDF TAE {rdf['mean']:.3f} ({rdf['minus_round0']:+.3f} +- "
              f"{rdf['minus_round0_ci95']:.3f})  survived {row['own_md_survived']}")
    result = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "rows": rows, "runs": {str(k): v for k, v in runs.items()}}
    if args.plot:
        plot(result, args.plot, f"synthetic rounds: {len(args.seeds)} seeds, {args.per_round} configurations a round")
    save_result(args.name, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
