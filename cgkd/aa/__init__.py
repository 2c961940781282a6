"""All-atom systems: building boxes from specs (``build``) and MD with forces (``simulate``).

Layer: imports ``cgkd.units`` and ``cgkd.io`` only; never torch.
"""

from cgkd.aa.build import AASystem, build, choose_platform, create_system
from cgkd.aa.simulate import simulate

__all__ = ["AASystem", "build", "choose_platform", "create_system", "simulate"]
