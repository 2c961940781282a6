"""The two OpenMM backends of an exported network and the one function that builds its force.

- ``"torch"``: ``openmmtorch.TorchForce`` running :class:`_OpenMMModule`, a TorchScript wrapper that
  bakes the bead types in (the model runs inside OpenMM, on its device);
- ``"python"``: ``openmm.PythonForce`` calling :class:`TorchCompute` (the model runs in this Python
  process, on the CPU; works wherever torch does).

:func:`choose_backend` picks one; :func:`make_potential_force` builds the force for
:func:`cgkd.openmm.create_system` and for the OpenMM-ML plugin (``plugins/cgkd-openmmml``).
Units are cgkd's: positions and box nm, energy kJ/mol, forces kJ/mol/nm.
"""

from __future__ import annotations

import io
import os
import re
from typing import Optional, Sequence, Tuple

import numpy as np
import openmm
import openmm.unit as u
import torch

from cgkd.export.artefact import DTYPES, inline_calls

BACKENDS = ("torch", "python")

_TORCH_PLUGINS_RELOADED = False


def _reload_torch_plugins() -> None:
    """Load openmm-torch's kernel plugins that failed because openmm was imported before torch.

    OpenMM loads its plugins when ``openmm`` is first imported; ``libOpenMMTorchReference.so`` needs
    libraries that only ``import torch`` puts in place, so ``import openmm; import torch`` leaves the
    TorchForce without kernels ("does not support all required kernels"). Loading the failed
    libraries again once torch is imported fixes that; it is done once per process.
    """
    global _TORCH_PLUGINS_RELOADED
    if _TORCH_PLUGINS_RELOADED:
        return
    _TORCH_PLUGINS_RELOADED = True
    for message in openmm.Platform.getPluginLoadFailures():
        match = re.match(r"Error loading library (.+?): ", message)
        if match and os.path.basename(match.group(1)).startswith("libOpenMMTorch"):
            try:
                openmm.Platform.loadPluginLibrary(match.group(1))
            except openmm.OpenMMException:
                pass  # e.g. the OpenCL kernels where no OpenCL runtime exists


def torch_force_available() -> bool:
    """True where ``openmmtorch`` can be imported (the ``"torch"`` backend works)."""
    try:
        import openmmtorch  # noqa: F401  (torch is imported first, at module level)
    except ImportError:
        return False
    _reload_torch_plugins()
    return True


def choose_backend(backend: Optional[str], use_cuda_graphs: bool = False) -> str:
    """The backend to run: ``backend`` checked, or for None ``"torch"`` where openmmtorch loads, else ``"python"``.

    Parameters
    ----------
    backend : {"torch", "python", None}
    use_cuda_graphs : bool
        True needs the ``"torch"`` backend.

    Raises
    ------
    ValueError
        For an unknown backend, ``"torch"`` without openmmtorch, or CUDA graphs without ``"torch"``.
    """
    if backend is None:
        backend = "torch" if torch_force_available() else "python"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")
    if backend == "torch" and not torch_force_available():
        raise ValueError("backend 'torch' needs openmmtorch, which cannot be imported here; use backend='python'")
    if use_cuda_graphs and backend != "torch":
        raise ValueError("use_cuda_graphs=True needs backend 'torch'")
    return backend


class _OpenMMModule(torch.nn.Module):
    """``forward(positions, boxvectors=None) -> energy`` for ``TorchForce``, with the bead types baked in.

    What TorchForce hands over, and how this wrapper copes:

    - ``positions``: shape (n_particles, 3), nm, float64 on the Reference and CPU platforms and
      float32 on CUDA/OpenCL, on the platform's device; cast to the model's dtype here.
    - ``boxvectors`` (only with periodic boundary conditions): shape (3, 3), nm, rows are the box
      vectors, the second argument; absent otherwise, and then an all-zero box (the model's
      "non-periodic") is passed on.
    - positions are not wrapped into the box: the model must apply the minimum image itself
      (cgkd models do).

    Parameters
    ----------
    model : torch.nn.Module
        ``model(positions (n, 3) nm, types (n,) int64, box (3, 3) nm) -> energy () kJ/mol``.
    types : torch.Tensor, shape=(n,), int64
        Type index of each particle the model acts on.
    dtype : torch.dtype
        The model's float precision.
    atoms : torch.Tensor, shape=(n,), int64, optional
        The particles of the System the model acts on (an OpenMM-ML subset); default all, in order.
    """

    def __init__(self, model: torch.nn.Module, types: torch.Tensor, dtype: torch.dtype,
                 atoms: Optional[torch.Tensor] = None):
        super().__init__()
        self.model = model
        self.register_buffer("types", types)
        self.register_buffer("dtype_probe", torch.zeros(0, dtype=dtype))
        self.subset = atoms is not None
        self.register_buffer("atoms", atoms if atoms is not None else torch.zeros(0, dtype=torch.int64))

    def forward(self, positions: torch.Tensor, boxvectors: Optional[torch.Tensor] = None) -> torch.Tensor:
        dtype = self.dtype_probe.dtype
        pos = positions.to(dtype)
        if self.subset:
            pos = pos.index_select(0, self.atoms)
        if boxvectors is None:
            box = torch.zeros((3, 3), dtype=dtype, device=positions.device)
        else:
            box = boxvectors.to(dtype)
        return self.model(pos, self.types, box).to(torch.float64)


class TorchCompute:
    """The computation function of a ``PythonForce``: energy and forces of a scripted potential.

    Picklable (it pickles the TorchScript bytes, not the module), so a System holding it survives
    ``XmlSerializer``. The model runs on the CPU.

    Parameters
    ----------
    model_bytes : bytes
        ``torch.jit.save`` output of the potential.
    types : np.ndarray, shape=(n,), int64
        Type index of each particle the model acts on.
    dtype : {"float32", "float64"}
        The model's float precision.
    periodic : bool
        Pass the State's box vectors to the model (else an all-zero box).
    atoms : np.ndarray, shape=(n,), int64, optional
        The particles of the System the model acts on; default all, in order. The others get zero force.
    """

    def __init__(self, model_bytes: bytes, types: np.ndarray, dtype: str, periodic: bool,
                 atoms: Optional[np.ndarray] = None):
        self.model_bytes = bytes(model_bytes)
        self.types_np = np.asarray(types, dtype=np.int64)
        self.dtype = dtype
        self.periodic = bool(periodic)
        self.atoms = None if atoms is None else np.asarray(atoms, dtype=np.int64)
        self._setup()

    def _setup(self) -> None:
        self.model = torch.jit.load(io.BytesIO(self.model_bytes), map_location="cpu")
        self.model.eval()
        self.types = torch.from_numpy(self.types_np.copy())
        self.torch_dtype = DTYPES[self.dtype]

    def __getstate__(self):
        return {"model_bytes": self.model_bytes, "types_np": self.types_np, "dtype": self.dtype,
                "periodic": self.periodic, "atoms": self.atoms}

    def __setstate__(self, state):
        state.setdefault("atoms", None)
        self.__dict__.update(state)
        self._setup()

    def energy_forces(self, positions: np.ndarray, box: Optional[np.ndarray]) -> Tuple[float, np.ndarray]:
        """Energy and forces of the model's particles.

        Parameters
        ----------
        positions : np.ndarray, shape=(n, 3), nm
        box : np.ndarray, shape=(3, 3), nm, or None (non-periodic)

        Returns
        -------
        energy : float, kJ/mol
        forces : np.ndarray, shape=(n, 3), float64, kJ/mol/nm
        """
        x = torch.tensor(np.asarray(positions), dtype=self.torch_dtype).requires_grad_(True)
        if box is None:
            b = torch.zeros((3, 3), dtype=self.torch_dtype)
        else:
            b = torch.tensor(np.asarray(box), dtype=self.torch_dtype)
        energy = self.model(x, self.types, b)
        (grad,) = torch.autograd.grad(energy, x)
        return float(energy.detach()), -grad.detach().to(torch.float64).numpy()

    def __call__(self, state):
        pos = state.getPositions(asNumpy=True).value_in_unit(u.nanometer)
        box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer) if self.periodic else None
        if self.atoms is None:
            return self.energy_forces(pos, box)
        energy, sub = self.energy_forces(np.asarray(pos)[self.atoms], box)
        forces = np.zeros((len(pos), 3))
        forces[self.atoms] = sub
        return energy, forces


def _index_array(values, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} must be a 1-D integer array, got {arr.dtype} with shape {arr.shape}")
    return arr.astype(np.int64)


def make_potential_force(
    module: torch.nn.Module,
    metadata: dict,
    types,
    *,
    backend: Optional[str] = None,
    periodic: bool,
    atoms: Optional[Sequence[int]] = None,
    use_cuda_graphs: bool = False,
    force_group: int = 0,
) -> openmm.Force:
    """The OpenMM force running the network of an exported potential (not yet added to a System).

    Parameters
    ----------
    module : torch.jit.ScriptModule
        The scripted potential, ``module(positions (n, 3) nm, types (n,) int64, box (3, 3) nm) ->
        energy () kJ/mol``.
    metadata : dict
        The artefact's metadata (``type_names`` and ``dtype`` are read).
    types : array-like, shape=(n,), int
        Type index (into ``metadata["type_names"]``) of each particle the potential acts on.
    backend : {"torch", "python", None}
        See :func:`choose_backend`.
    periodic : bool
        Whether the force uses periodic boundary conditions (the System's box reaches the model).
    atoms : sequence of int, shape=(n,), optional
        The System particles the potential acts on (default: all particles, in order); they must
        exist in the System the force is added to.
    use_cuda_graphs : bool
        Set the TorchForce property ``useCUDAGraphs`` (CUDA platform only; needs backend ``"torch"``).
    force_group : int
        OpenMM force group, 0..31.

    Returns
    -------
    openmm.Force
        An ``openmmtorch.TorchForce`` or ``openmm.PythonForce`` named ``"cgkd potential (<backend>)"``.
    """
    backend = choose_backend(backend, use_cuda_graphs)
    type_idx = _index_array(types, "types")
    n_types = len(metadata["type_names"])
    if type_idx.size and (type_idx.min() < 0 or type_idx.max() >= n_types):
        raise ValueError(
            f"types must index the artefact's {n_types} type names, got {type_idx.min()}..{type_idx.max()}"
        )
    atom_idx = None
    if atoms is not None:
        atom_idx = _index_array(list(atoms), "atoms")
        if atom_idx.size and atom_idx.min() < 0:
            raise ValueError(f"atoms must be particle indices >= 0, got {atom_idx.min()}")
        if len(np.unique(atom_idx)) != len(atom_idx):
            raise ValueError("atoms must not repeat a particle")
        if type_idx.shape != atom_idx.shape:
            raise ValueError(f"types must have one entry per atom ({len(atom_idx)}), got shape {type_idx.shape}")
    if not 0 <= int(force_group) <= 31:
        raise ValueError(f"force_group must be 0..31, got {force_group}")
    dtype = metadata["dtype"]
    if backend == "torch":
        import openmmtorch

        sub = None if atom_idx is None else torch.from_numpy(atom_idx)
        wrapper = inline_calls(torch.jit.script(_OpenMMModule(module, torch.from_numpy(type_idx), DTYPES[dtype], sub)))
        force = openmmtorch.TorchForce(wrapper)
        force.setOutputsForces(False)
        if use_cuda_graphs:
            force.setProperty("useCUDAGraphs", "true")
    else:
        buf = io.BytesIO()
        torch.jit.save(module, buf)
        force = openmm.PythonForce(TorchCompute(buf.getvalue(), type_idx, dtype, periodic, atom_idx))
    force.setUsesPeriodicBoundaryConditions(periodic)
    force.setName(f"cgkd potential ({backend})")
    force.setForceGroup(int(force_group))
    return force


__all__ = ["BACKENDS", "TorchCompute", "choose_backend", "make_potential_force", "torch_force_available"]
