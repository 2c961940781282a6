"""CG mappings: atoms -> beads for positions (``Mapping``) and forces (``fit_force_map``: basic, optimal).

Layer: imports ``cgkd.units``, ``cgkd.registry``, ``cgkd.io``, ``cgkd.geometry`` and ``cgkd.topology``
only; never torch, never ``cgkd.data``. Modules: ``mapping`` (the ``Mapping`` class), ``constructors``
(mappings read off an OpenMM topology), ``linear`` (applying a linear map), ``forcemap`` (force maps,
fitted by an explicit call), ``pbc`` (making molecules whole), ``grouping`` (automatic beads),
``checks`` (input validation).
"""

from cgkd.mapping.forcemap import FORCE_MAPS, ForceMap, fit_force_map, mean_squared_force
from cgkd.mapping.mapping import Mapping

__all__ = ["FORCE_MAPS", "ForceMap", "Mapping", "fit_force_map", "mean_squared_force"]
