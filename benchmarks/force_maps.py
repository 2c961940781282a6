"""Force maps (issue 5, part 3): mapped-force variance with the basic and the optimal force map, and the
quality of a model trained on each.

For each (system, mapping) -- reline ``one_bead`` and ``two_bead_choline`` from a finished ``cgkd run``,
water from a short AA run made here -- the AA forces are mapped with ``basic`` and ``optimal``
(:func:`cgkd.data.mapped.map_aa`). The mean squared mapped force (the mapped-force variance, the mean force
being zero) of each map is recorded. Then one model (the pipeline's student architecture/preset, no
bootstrap) is trained per force map on the same training frames, and its force RMSE on the held-out test
frames is measured against the mapped forces of *both* maps: both maps estimate the same mean force, so the
comparison against one common reference is fair (its noise adds the same amount to both).

Usage::

    python -m benchmarks.force_maps --preset reduced --run-dir runs/reline-quick --device cpu
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from benchmarks.common import ROOT, check_device, save_result
from cgkd import keys

FORCE_MAPS = ("basic", "optimal")


@dataclass(frozen=True)
class ForceMapPreset:
    systems: Tuple[Tuple[str, str], ...]  # (spec, mapping)
    water_size: str
    epochs: int
    arch: str = "hipnn"
    preset: str = "small"


PRESETS: Dict[str, ForceMapPreset] = {
    "reduced": ForceMapPreset(systems=(("reline", "one_bead"), ("reline", "two_bead_choline"), ("water", "")),
                              water_size="test", epochs=8),
    "cpu": ForceMapPreset(systems=(("reline", "one_bead"), ("reline", "two_bead_choline"), ("water", "")),
                          water_size="quick", epochs=30),
    "gpu": ForceMapPreset(systems=(("reline", "one_bead"), ("reline", "two_bead_choline"), ("water", "")),
                          water_size="default", epochs=200, preset="medium"),
}


def variance_ratio(msf: Dict[str, object]) -> Optional[float]:
    """``msf["optimal"] / msf["basic"]`` when both are numbers (``map_aa`` reports a string for a map it
    could not build), else None."""
    a, b = msf.get("optimal"), msf.get("basic")
    if isinstance(a, float) and isinstance(b, float):
        if not b > 0:
            raise ValueError(f"the basic map's mean squared force must be positive, got {b}")
        return a / b
    return None


def map_both(aa, mapping: Optional[str]):
    """CG datasets of ``aa`` with each force map, and the mean squared force of each, (kJ/mol/nm)^2."""
    from cgkd.data.mapped import map_aa

    datasets, msf = {}, {}
    for fm in FORCE_MAPS:
        data, report = map_aa(aa, mapping=mapping or None, force_map=fm, compare=False)
        datasets[fm] = data
        msf[fm] = report["msf"][fm]
    return datasets, msf


def train_and_cross_evaluate(datasets: dict, folder: Path, p: ForceMapPreset, device: str) -> dict:
    """Train one model per force map; RMSE (kJ/mol/nm) on the test frames against every map's forces."""
    from cgkd.data.cg_h5 import write_cg
    from cgkd.kd.labels import force_rmse, predict
    from cgkd.kd.teachers import load_teachers, read_split, train_teachers
    from cgkd.train.trainer import TrainConfig

    out = {}
    for fm, data in datasets.items():
        sub = folder / fm
        sub.mkdir(parents=True, exist_ok=True)
        cg = sub / "cg.h5"
        if not cg.is_file():
            write_cg(cg, data)
        t0 = time.perf_counter()
        train_teachers(cg, sub / "model", n_members=1, arch=p.arch, preset=p.preset, bootstrap=False,
                       config=TrainConfig(max_epochs=p.epochs, seed=0, device=device, progress=False))
        test = np.asarray(read_split(sub / "model")["test"], dtype=np.int64)
        pred = predict(load_teachers(sub / "model")[0], data.subset(test))[keys.FORCE]
        out[fm] = {"train_s": time.perf_counter() - t0,
                   "rmse_vs": {ref: force_rmse(pred, datasets[ref].forces[test]) for ref in datasets}}
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="reduced", choices=sorted(PRESETS))
    parser.add_argument("--run-dir", default="runs/reline-quick", help="finished reline `cgkd run` (its aa/aa.h5)")
    parser.add_argument("--out", default=None, help="work folder (default benchmarks/runs/forcemaps-<preset>)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--no-train", action="store_true", help="only the mapped-force variances")
    args = parser.parse_args(argv)
    device = check_device(args.device)
    p = PRESETS[args.preset]
    out_dir = Path(args.out or ROOT / "benchmarks" / "runs" / f"forcemaps-{args.preset}")
    from cgkd.aa import simulate
    from cgkd.io.aa_h5 import read_aa

    aa_files = {"reline": Path(args.run_dir) / "aa" / "aa.h5"}
    if not aa_files["reline"].is_file():
        raise FileNotFoundError(f"{aa_files['reline']} does not exist; run `cgkd run reline` first or pass --run-dir")
    rows = []
    for spec, mapping in p.systems:
        if spec not in aa_files:
            aa_files[spec] = simulate(spec, size=p.water_size, out=out_dir / f"{spec}-{p.water_size}" / "aa.h5", progress=False)
        aa = read_aa(aa_files[spec])
        datasets, msf = map_both(aa, mapping)
        row = {"system": spec, "mapping": mapping or "default", "aa_file": str(aa_files[spec]), "frames": aa.n_frames,
               "beads": datasets["basic"].n_beads, "msf": msf, "ratio_optimal_over_basic": variance_ratio(msf)}
        print(f"{spec}/{row['mapping']}: msf basic {msf['basic']:.1f}, optimal {msf['optimal']:.1f}, "
              f"ratio {row['ratio_optimal_over_basic']:.4f}", flush=True)
        if not args.no_train:
            row["models"] = train_and_cross_evaluate(datasets, out_dir / f"{spec}-{row['mapping']}", p, device)
            print(f"  models: {row['models']}", flush=True)
        rows.append(row)
    path = save_result(f"force_maps_{args.preset}_{device}", {"preset": asdict(p), "rows": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
