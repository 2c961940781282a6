"""Coarse-grained datasets: mapped positions, forces and labels (numpy/HDF5; torch helpers in ``torch_data``)."""

from cgkd.data.cg_h5 import CGData, read_cg, write_cg

__all__ = ["CGData", "read_cg", "write_cg"]
