"""Coarse-grained datasets: mapped positions, forces and labels (numpy/HDF5) and the bonded graph helpers of ``graph``."""

from cgkd.data.cg_h5 import CGData, read_cg, write_cg

__all__ = ["CGData", "read_cg", "write_cg"]
