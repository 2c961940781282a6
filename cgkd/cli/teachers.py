"""``cgkd teachers CG.h5 --out DIR``: train an ensemble of teacher potentials on the mapped forces.

A thin shell over :func:`cgkd.kd.teachers.train_teachers`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # argparse building stays light: torch is imported in run() only
    from cgkd.train.trainer import TrainConfig


def add_common_training_args(p: argparse.ArgumentParser) -> None:
    """Options shared by ``cgkd teachers`` and ``cgkd distill``."""
    p.add_argument("--arch", default="hipnn", help="architecture (cgkd.nn.ARCHITECTURES: hipnn, painn); default hipnn")
    p.add_argument(
        "--arch-preset", default="small", metavar="NAME|FILE",
        help="architecture preset (small, medium, large) or a YAML file of its config fields; default small",
    )
    p.add_argument("--epochs", type=int, default=None, help="maximum epochs (overrides the config's max_epochs)")
    p.add_argument("--config", default=None, help="TrainConfig YAML (cgkd.train.TrainConfig fields; unknown keys rejected)")
    p.add_argument("--device", default=None, help="cpu or cuda (overrides the config's device)")
    p.add_argument("--seed", type=int, default=None, help="base seed (overrides the config's seed)")
    p.add_argument("--quiet", action="store_true", help="no progress reports")


def arch_preset_arg(preset: str):
    """An architecture preset name, or the dict in a YAML file of architecture config fields."""
    if preset.endswith((".yaml", ".yml", ".json")):
        from cgkd.io.config import read_yaml

        path = Path(preset)
        if not path.is_file():
            raise FileNotFoundError(f"--arch-preset file {preset!r} does not exist")
        data = read_yaml(path)
        if not isinstance(data, dict):
            raise ValueError(f"--arch-preset file {preset!r} must hold a mapping of config fields, got {type(data).__name__}")
        return data
    return preset


def training_config(args) -> TrainConfig:
    from dataclasses import replace

    from cgkd.io.config import load_yaml
    from cgkd.train.trainer import TrainConfig

    cfg = load_yaml(TrainConfig, args.config) if args.config else TrainConfig()
    over = {"progress": not getattr(args, "quiet", False)}
    if args.epochs is not None:
        over["max_epochs"] = args.epochs
    if args.device is not None:
        over["device"] = args.device
    if args.seed is not None:
        over["seed"] = args.seed
    return replace(cfg, **over)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "teachers",
        help="train an ensemble of teacher CG potentials on mapped forces",
        description=(
            "Train N teacher CG potentials on the (noisy) mapped forces of a CG dataset. Members differ by seed and "
            "by a bootstrap resample of the training frames; validation/test frames are held out (the same for all, "
            "stored in DIR/split.json). Each member is an independent, resumable run in DIR/member_XX: rerunning "
            "the command resumes unfinished members and skips finished ones."
        ),
    )
    p.add_argument("cg", help="CG dataset (HDF5, from cgkd map)")
    p.add_argument("--out", required=True, help="teacher folder")
    p.add_argument("--members", type=int, default=8, help="ensemble size; default 8")
    p.add_argument("--only", type=int, nargs="+", default=None, metavar="K", help="train only these member indices")
    p.add_argument("--stream-chunk", type=int, default=0, metavar="K",
                   help="read the CG frames from the file in chunks of K frames instead of holding them in memory "
                        "(for datasets larger than memory; default 0: in memory)")
    add_common_training_args(p)
    from cgkd.cli.executor import add_executor_args

    add_executor_args(p, workers_help="members trained")
    return p


def run(args) -> int:
    from cgkd.cli.executor import executor_from_args
    from cgkd.kd.teachers import train_teachers

    info = train_teachers(
        Path(args.cg),
        Path(args.out),
        n_members=args.members,
        arch=args.arch,
        preset=arch_preset_arg(args.arch_preset),
        config=training_config(args),
        members=args.only,
        executor=executor_from_args(args),
        stream_chunk=args.stream_chunk,
    )
    for m in info:
        print(json.dumps({k: m[k] for k in ("member", "best_val", "best_epoch", "epochs_run", "seconds_per_epoch")}))
    return 0
