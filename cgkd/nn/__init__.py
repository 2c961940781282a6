"""CG neural-network potentials: neighbour lists, architectures, priors and :class:`CGPotential`.

Layer ``nn`` imports from ``units``, ``io``, ``registry``, ``keys``, ``geometry``, ``topology`` and
``data`` only (``nn.geometry`` holds the torch twins of ``cgkd.geometry``; ``nn.native`` the tabulated
native model); ``train``,
``kd``, ``export`` and above import from here. Importing this package registers the built-in
architectures ("hipnn", "painn") and priors.
"""

from cgkd.nn.base import ARCHITECTURES, PRIORS, build_model
from cgkd.nn import hipnn, painn, priors  # noqa: F401  (registration)
from cgkd.nn.hipnn import HIPNNConfig
from cgkd.nn.painn import PaiNNConfig
from cgkd.nn.neighbors import neighbor_list
from cgkd.nn.potential import CGPotential, load_potential, save_potential

__all__ = [
    "ARCHITECTURES",
    "PRIORS",
    "build_model",
    "HIPNNConfig",
    "PaiNNConfig",
    "neighbor_list",
    "CGPotential",
    "save_potential",
    "load_potential",
]
