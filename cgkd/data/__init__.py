"""Coarse-grained datasets: the CG file (``cg_h5``: ``CGData`` with its ``Topology``, and the labels group)
and mapped datasets made from AA data (``mapped.map_aa``).

Layer: imports units, io, geometry, topology and mapping; never torch.
"""

from cgkd.data.cg_h5 import CGData, read_cg, read_labels, read_topology, write_cg
from cgkd.data.mapped import map_aa

__all__ = ["CGData", "map_aa", "read_cg", "read_labels", "read_topology", "write_cg"]
