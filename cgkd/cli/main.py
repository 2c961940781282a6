"""``cgkd`` console script. Each verb lives in ``cgkd/cli/<verb>.py`` with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import sys

#: Verbs in pipeline order; a verb whose module is missing is simply not offered.
VERBS = ["aa", "map", "teachers", "distill", "synthetic", "export", "simulate", "compare", "run", "atoms", "jobscript"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cgkd",
        description="Coarse-grained potentials for OpenMM by knowledge distillation from teacher ensembles.",
    )
    from cgkd import __version__

    parser.add_argument("--version", action="version", version=f"cgkd {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        try:
            mod = importlib.import_module(f"cgkd.cli.{verb}")
        except ModuleNotFoundError as exc:
            if exc.name == f"cgkd.cli.{verb}":
                continue
            raise
        p = mod.add_parser(sub)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 1
    from cgkd.errors import CgkdError

    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun: one model on several processes
        from cgkd.train.distributed import init_from_env

        init_from_env(getattr(args, "device", None))
    try:
        return int(args._run(args) or 0)
    except (CgkdError, ValueError, KeyError, OSError) as exc:  # bad input, unknown names, and file/OS errors on user paths
        if args.debug:
            raise
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror and exc.filename else exc
        where = f" ({exc.filename})" if isinstance(exc, OSError) and exc.filename else ""
        print(f"cgkd {args.verb}: error: {detail}{where} (--debug shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
