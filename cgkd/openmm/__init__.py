"""OpenMM side of cgkd: Systems from exported potentials and CG molecular dynamics (layer export/openmm)."""

from cgkd.openmm.system import BACKENDS, TorchCompute, bonded_terms, create_system, resolve_types, torch_force_available

__all__ = ["BACKENDS", "TorchCompute", "bonded_terms", "create_system", "resolve_types", "torch_force_available"]
