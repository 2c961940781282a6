"""CG mappings: atoms -> beads for positions (``Mapping``) and forces (``FORCE_MAPS``: basic, optimal).

Layer: imports only ``cgkd.units``, ``cgkd.registry`` and ``cgkd.io``; never torch, never ``cgkd.data``.
"""

from cgkd.mapping.forcemap import FORCE_MAPS, BasicForceMap, ForceMap, OptimalForceMap, make_force_map, mean_squared_force
from cgkd.mapping.mapping import Mapping

__all__ = [
    "FORCE_MAPS",
    "BasicForceMap",
    "ForceMap",
    "Mapping",
    "OptimalForceMap",
    "make_force_map",
    "mean_squared_force",
]
