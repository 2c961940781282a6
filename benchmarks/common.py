"""Shared helpers of the benchmark scripts: machine description, device check, result files, RSS, and the
mean with its 95 % Student-t confidence interval."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Optional, Sequence, Tuple

import numpy as np

from cgkd.io.atomic import write_text

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DEVICES = ("cpu", "cuda")


def check_device(device: str) -> str:
    """``device`` if it is usable here; ValueError naming what is available otherwise."""
    import torch

    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device here; use --device cpu")
    return device


def machine_info() -> dict:
    """Date (UTC), host CPU model and count, thread settings, torch/openmm versions, git commit."""
    import openmm
    import torch

    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        model = platform.processor()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                check=False).stdout.strip()
    except OSError:
        commit = ""
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "openmm": openmm.__version__,
        "git_commit": commit,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def save_result(name: str, result: dict, out_dir: Optional[Path] = None) -> Path:
    """Write ``result`` plus :func:`machine_info` to ``<out_dir>/<name>.json`` atomically; returns the path."""
    out = Path(out_dir or RESULTS) / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, json.dumps({"machine": machine_info(), **result}, indent=1, default=float))
    return out


def rss_bytes() -> int:
    """Resident set size of this process (bytes), from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise ValueError("/proc/self/status has no VmRSS line; RSS measurement needs Linux")


def peak_rss_bytes() -> int:
    """Peak resident set size (VmHWM, bytes) since the last :func:`reset_peak_rss`."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise ValueError("/proc/self/status has no VmHWM line; RSS measurement needs Linux")


def reset_peak_rss() -> None:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` value 5)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


#: Two-sided 95 % Student-t quantiles by degrees of freedom.
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
       15: 2.131, 20: 2.086, 30: 2.042}


def t95(dof: int) -> float:
    if dof < 1:
        return float("nan")
    keys_ = sorted(T95)
    return T95[max(k for k in keys_ if k <= dof)] if dof < 30 else 1.96 + (2.042 - 1.96) * 30 / dof


def mean_ci(x: Sequence[float]) -> Tuple[float, float, int]:
    """Mean and the half-width of its 95 % confidence interval (t over n - 1 degrees of freedom)."""
    x = np.asarray([v for v in x if v is not None and np.isfinite(v)], dtype=np.float64)
    if len(x) == 0:
        return float("nan"), float("nan"), 0
    if len(x) == 1:
        return float(x[0]), float("nan"), 1
    return float(x.mean()), float(t95(len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x))), len(x)
