"""Datasets larger than memory (issue 16, deliver 3): map and train on files several times larger than a memory cap
the benchmark sets on itself, and report the peak memory of each stage.

Each arm runs in its own process. A watcher thread samples the process's resident set size every 20 ms and ends the
process (exit code 3) as soon as it exceeds the baseline (after imports) by more than ``--cap-mb``; the peak above the
baseline (Linux VmHWM) is reported. The arms:

- ``map_memory``: ``read_aa`` + ``map_aa`` + ``write_cg`` (the whole AA file in memory);
- ``map_stream``: ``map_aa_file`` in chunks of ``--chunk`` frames;
- ``train_memory``: one teacher member with the frames in memory;
- ``train_stream``: the same member with ``stream_chunk=--chunk``.

The data are the frames of a real AA run (``--aa``, default the reline quick run of ``make demo``) tiled in time to
``--aa-frames`` frames, and its mapped CG data tiled to ``--cg-frames`` frames: repeated frames, which is what a
memory benchmark needs (the arrays' sizes), not new physics.

    python -m benchmarks.streaming --out runs/streaming

writes ``benchmarks/results/streaming.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks.common import peak_rss_bytes, reset_peak_rss, rss_bytes, save_result

MB = 1024.0 ** 2
#: Frames per training batch (the model's working memory grows with it; 16 frames of reline: about 20 MB).
BATCH = 16
ARMS = ("map_memory", "map_stream", "train_memory", "train_stream")


def _tile_aa(src: Path, dst: Path, n_frames: int) -> None:
    from cgkd.io.aa_h5 import AAWriter, create_aa, read_aa

    if dst.is_file():
        return
    aa = read_aa(src)
    tmp = dst.with_suffix(".partial.h5")
    create_aa(tmp, topology=aa.topology, masses=aa.masses, constraints=aa.constraints, temperature=aa.temperature,
              periodic=aa.box is not None, spec=aa.spec, attrs=aa.attrs, chunk_frames=64)
    dt = float(np.median(np.diff(aa.time))) if aa.n_frames > 1 else 1.0
    with AAWriter(tmp) as w:
        done = 0
        while done < n_frames:
            k = min(aa.n_frames, n_frames - done)
            w.append(aa.positions[:k], aa.forces[:k], None if aa.box is None else aa.box[:k],
                     aa.potential_energy[:k], aa.time[0] + dt * np.arange(done, done + k))
            done += k
    os.replace(tmp, dst)


def _tile_cg(src: Path, dst: Path, n_frames: int) -> None:
    from cgkd.data.cg_h5 import CGWriter, read_cg

    if dst.is_file():
        return
    cg = read_cg(src)
    with CGWriter(dst, cg.topology, cg.temperature, periodic=cg.box is not None, with_time=cg.time is not None,
                  attrs=cg.attrs) as w:
        done = 0
        while done < n_frames:
            k = min(cg.n_frames, n_frames - done)
            w.append(cg.positions[:k], cg.forces[:k], None if cg.box is None else cg.box[:k],
                     None if cg.time is None else cg.time[:k] + 1000.0 * done)
            done += k


def _watch(cap_bytes: float, base: int) -> None:
    def run():
        while True:
            if rss_bytes() - base > cap_bytes:
                print(json.dumps({"exceeded_cap": True, "rss_above_baseline_mb": (rss_bytes() - base) / MB}), flush=True)
                os._exit(3)
            time.sleep(0.02)

    threading.Thread(target=run, daemon=True).start()


def run_arm(arm: str, aa: Path, cg: Path, out: Path, chunk: int, cap_mb: float) -> dict:
    """One arm in this process, under the cap; returns its measurements."""
    import torch  # noqa: F401 - imported before the baseline, as every arm needs it

    import cgkd.nn.hipnn  # noqa: F401 - the modules training imports on first use, also before the baseline
    import cgkd.nn.potential  # noqa: F401
    import cgkd.nn.prior_fit  # noqa: F401

    # Adam's first step imports torch._dynamo (about 120 MB measured, once per process): before the baseline too
    w = torch.zeros(1, requires_grad=True)
    w.grad = torch.zeros(1)
    torch.optim.Adam([w]).step()

    from cgkd.data.cg_h5 import write_cg
    from cgkd.data.mapped import map_aa, map_aa_file
    from cgkd.io.aa_h5 import read_aa
    from cgkd.kd.teachers import train_teachers
    from cgkd.train import TrainConfig

    base = rss_bytes()
    reset_peak_rss()
    _watch(cap_mb * MB, base)
    t0 = time.perf_counter()
    info: dict = {}
    if arm == "map_memory":
        data, rep = map_aa(read_aa(aa))
        write_cg(out / "map_memory.h5", data)
    elif arm == "map_stream":
        rep = map_aa_file(aa, out / "map_stream.h5", chunk_frames=chunk)
        info["fit_frames"] = rep["fit_frames"]
    else:
        cfg = TrainConfig(max_epochs=1, batch_size=BATCH, lr=1e-3, threads=1)
        res = train_teachers(cg, out / arm, n_members=1, preset="small", config=cfg,
                             stream_chunk=chunk if arm == "train_stream" else 0)
        info["best_val"] = res[0]["best_val"]
    return {"arm": arm, "exceeded_cap": False, "seconds": time.perf_counter() - t0,
            "baseline_rss_mb": base / MB, "peak_above_baseline_mb": (peak_rss_bytes() - base) / MB, **info}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--aa", default="runs/reline-quick/aa/aa.h5", help="a real AA file whose frames are tiled")
    p.add_argument("--out", default="runs/streaming")
    p.add_argument("--aa-frames", type=int, default=24000)
    p.add_argument("--cg-frames", type=int, default=210000)
    p.add_argument("--chunk", type=int, default=256, help="frames per chunk (mapping and training)")
    p.add_argument("--cap-mb", type=float, default=150.0, help="memory above the baseline an arm may use")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    p.add_argument("--arm", choices=ARMS, default=None, help=argparse.SUPPRESS)  # one arm, in this process
    p.add_argument("--name", default="streaming")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    aa_big, cg_big = out / "aa_big.h5", out / "cg_big.h5"
    if args.arm:
        print(json.dumps(run_arm(args.arm, aa_big, cg_big, out, args.chunk, args.cap_mb)), flush=True)
        return 0
    from cgkd.data.cg_h5 import write_cg
    from cgkd.data.mapped import map_aa
    from cgkd.io.aa_h5 import read_aa

    src = Path(args.aa)
    if not src.is_file():
        raise SystemExit(f"--aa {src} does not exist (make demo writes runs/reline-quick/aa/aa.h5)")
    _tile_aa(src, aa_big, args.aa_frames)
    small = out / "cg_small.h5"
    if not small.is_file():
        write_cg(small, map_aa(read_aa(src))[0])
    _tile_cg(small, cg_big, args.cg_frames)
    rows = []
    for arm in args.arms:
        cmd = [sys.executable, "-m", "benchmarks.streaming", "--arm", arm, "--out", str(out), "--chunk",
               str(args.chunk), "--cap-mb", str(args.cap_mb)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        row = json.loads(lines[-1]) if lines else {"error": res.stderr[-2000:]}
        row.update(arm=arm, returncode=res.returncode)
        rows.append(row)
        print(json.dumps(row), flush=True)
    sizes = {"aa_file_mb": aa_big.stat().st_size / MB, "cg_file_mb": cg_big.stat().st_size / MB,
             "aa_frames": args.aa_frames, "cg_frames": args.cg_frames}
    path = save_result(args.name, {"cap_mb": args.cap_mb, "chunk": args.chunk, **sizes, "arms": rows})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
