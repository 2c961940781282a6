"""Plots for docs/benchmarks.md from the result files: ``python -m benchmarks.plots``."""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Optional, Sequence

from benchmarks.common import RESULTS, ROOT


def plot_speed(result: dict, out: Path) -> None:
    """Cost per bead-step and peak-RSS increase per bead vs beads; training frames/s per architecture."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    rows = result["scaling"]["student"]
    n = [r["n_beads"] for r in rows]
    axes[0].loglog(n, [r["us_per_bead_step"] for r in rows], "o-")
    axes[0].set_xlabel("beads")
    axes[0].set_ylabel("us per bead-step (energy + forces)")
    axes[1].semilogx(n, [r["peak_rss_increase_bytes_per_bead"] / 1024 for r in rows], "o-")
    axes[1].set_xlabel("beads")
    axes[1].set_ylabel("peak RSS increase per bead (KiB)")
    tr = result["training"]
    axes[2].bar(range(len(tr)), [r["frames_per_s"] for r in tr])
    axes[2].set_xticks(range(len(tr)))
    axes[2].set_xticklabels([f"{r['arch']}/{r['preset']}" for r in tr], rotation=45, ha="right")
    axes[2].set_ylabel(f"training frames/s ({tr[0]['n_beads']} beads)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_force_maps(result: dict, out: Path) -> None:
    """Mean squared mapped force, basic vs optimal, per system/mapping."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    fig, ax = plt.subplots(figsize=(6, 4))
    x = range(len(rows))
    for k, fm in enumerate(("basic", "optimal")):
        ax.bar([i + 0.4 * k for i in x], [r["msf"][fm] for r in rows], width=0.4, label=fm)
    ax.set_xticks([i + 0.2 for i in x])
    ax.set_xticklabels([f"{r['system']}/{r['mapping']}" for r in rows], rotation=20)
    ax.set_ylabel("mean squared mapped force ((kJ/mol/nm)^2)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speed", default=str(RESULTS / "speed_cpu_cpu.json"))
    parser.add_argument("--force-maps", default=str(RESULTS / "force_maps_reduced_cpu.json"))
    parser.add_argument("--kd-png", default=str(ROOT / "benchmarks" / "runs" / "kd-cpu" / "kd_table.png"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for src, fn, name in ((args.speed, plot_speed, "speed.png"), (args.force_maps, plot_force_maps, "force_maps.png")):
        if not Path(src).is_file():
            raise FileNotFoundError(f"result file {src} does not exist; run its benchmark first")
        fn(json.loads(Path(src).read_text()), out / name)
    if Path(args.kd_png).is_file():
        shutil.copyfile(args.kd_png, out / "kd_table.png")
    print(f"plots in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
