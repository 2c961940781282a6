"""Wall time of a training-like step per architecture and preset: ``python -m cgkd.nn.benchmark``.

A step is forward + forces by autograd with ``create_graph=True`` + backward of a force loss to the
parameters, on one frame of ``n_beads`` random beads at ``density`` beads/nm^3 (about reline's CG
bead density) in a cubic periodic box, float32, on the CPU with the current torch thread count.
"""

from __future__ import annotations

import argparse
import time
from typing import Dict, List

import numpy as np
import torch

from cgkd import keys
from cgkd.nn.base import ARCHITECTURES, build_model
from cgkd.nn.neighbors import neighbor_list
from cgkd.nn.potential import CGPotential


def time_training_step(arch: str, preset: str, n_beads: int = 1000, density: float = 15.0, n_types: int = 4,
                       repeats: int = 5, seed: int = 0) -> Dict[str, float]:
    """Median and minimum seconds per step over ``repeats`` steps after one warm-up step."""
    if n_beads < 2 or repeats < 1:
        raise ValueError(f"need n_beads >= 2 and repeats >= 1, got {n_beads} and {repeats}")
    length = (n_beads / density) ** (1.0 / 3.0)
    rng = np.random.default_rng(seed)
    pos = torch.tensor(rng.random((n_beads, 3)) * length, dtype=torch.float32)
    types = torch.tensor(rng.integers(0, n_types, n_beads))
    box = torch.eye(3).unsqueeze(0) * length
    batch = torch.zeros(n_beads, dtype=torch.int64)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(arch, preset, n_types)
    pot = CGPotential(model, [], [f"T{t}" for t in range(n_types)], model.cutoff).train()
    times: List[float] = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        out = pot.forward_batch(pos, types, box, batch, 1, compute_forces=True, create_graph=True)
        (out[keys.FORCE] ** 2).mean().backward()
        pot.zero_grad()
        times.append(time.perf_counter() - t0)
    n_edges = neighbor_list(pos, box[0], model.cutoff)[0].shape[1]
    return {
        "median_s": float(np.median(times[1:])),
        "min_s": float(min(times[1:])),
        "n_parameters": float(sum(p.numel() for p in pot.parameters())),
        "n_edges": float(n_edges),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-beads", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--presets", nargs="+", default=["small", "medium", "large"])
    args = parser.parse_args(argv)
    print(f"torch threads: {torch.get_num_threads()}")
    for arch in ARCHITECTURES.names():
        for preset in args.presets:
            r = time_training_step(arch, preset, n_beads=args.n_beads, repeats=args.repeats)
            print(f"{arch:6s} {preset:6s} params={int(r['n_parameters']):7d} edges={int(r['n_edges'])} "
                  f"step median {1e3 * r['median_s']:.0f} ms, min {1e3 * r['min_s']:.0f} ms", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
