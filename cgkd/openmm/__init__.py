"""OpenMM side of cgkd: Systems from exported potentials and CG molecular dynamics (layer export/openmm).

May import units, io, topology, data, nn and export; never train, kd or analysis.
"""

from cgkd.openmm.backends import BACKENDS, TorchCompute, torch_force_available
from cgkd.openmm.md import min_pair_distances, run_cg_md
from cgkd.openmm.system import create_system, resolve_types

__all__ = [
    "BACKENDS",
    "TorchCompute",
    "create_system",
    "min_pair_distances",
    "resolve_types",
    "run_cg_md",
    "torch_force_available",
]
