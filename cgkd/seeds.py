"""Random seeds that mean the same thing everywhere.

OpenMM reads a random-number seed of 0 as "pick one at random", so ``seed=0`` gave a different
trajectory on every run. :func:`openmm_seed` maps any integer seed (and a stream number, e.g. the
replica index) to a fixed seed in 1..2**31-1, so every seed cgkd passes to OpenMM is reproducible.
"""

from __future__ import annotations

import hashlib

import numpy as np

_MAX = 2**31 - 1


def openmm_seed(seed: int, stream: int = 0) -> int:
    """A reproducible, nonzero OpenMM seed for ``seed`` and ``stream``.

    Distinct (seed, stream) pairs give distinct seeds with overwhelming probability; the same pair
    always gives the same one.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an integer, got {type(seed).__name__} {seed!r}")
    digest = hashlib.sha256(f"cgkd-seed:{int(seed)}:{int(stream)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (_MAX - 1) + 1


__all__ = ["openmm_seed"]
