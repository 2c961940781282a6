"""File formats and configuration: atomic writes, YAML -> dataclass, HDF5 trajectories, system specs."""
