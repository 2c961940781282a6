"""OpenMM side of cgkd: Systems from exported potentials and CG molecular dynamics (layer export/openmm).

May import units, io, geometry, topology, data, nn and export; never train, kd or analysis. Modules:
``backends`` (openmm-torch plugin loading, the TorchForce and PythonForce network forces), ``bonded``
(native bonded prior forces), ``system`` (``create_system``), ``md`` (``run_cg_md``).
"""

from cgkd.openmm.backends import BACKENDS, torch_force_available
from cgkd.openmm.md import run_cg_md
from cgkd.openmm.system import create_system

__all__ = ["BACKENDS", "create_system", "run_cg_md", "torch_force_available"]
