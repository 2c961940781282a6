"""A plain ``openmm.System`` from a native model: tabulated pair forces and native bonded forces only.

No openmm-torch and no Python callback: the System serialises to XML and runs on every OpenMM
platform (CUDA included). Pair encodings (measured by ``benchmarks/native_speed.py``, docs/benchmarks.md section 4):

- ``"analytic"`` (the default for a model fitted on the ``powers`` basis): one ``CustomNonbondedForce``
  whose energy is the shifted-force inverse-power expansion itself, ``sum_n c_n(t1, t2) phi_n(r)``, with each
  symmetric coefficient matrix ``c_n`` written exactly as ``sum_m s_m v_m(t1) v_m(t2)`` (its eigen-
  decomposition) in per-particle parameters, so OpenMM compiles one expression without table look-ups;
- ``"table"`` (the default otherwise): one ``CustomNonbondedForce``; with one bead type its energy is a
  ``Continuous1DFunction`` of r, with several a ``Continuous2DFunction`` of (r, type-pair index
  ``t1 * n_types + t2``), read at integer pair indices, where OpenMM's bicubic spline equals the natural
  cubic spline of that pair's table;
- ``"groups"``: one ``CustomNonbondedForce`` per type pair restricted by interaction groups (slow on
  the CPU platform for large systems; kept for the measurement).

Force groups: 0 pairs, then 1 bonds, 2 angles, 3 dihedrals (``cgkd.openmm.bonded``).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import openmm

from cgkd.nn.native import NativeModel
from cgkd.openmm.bonded import add_bonded_priors
from cgkd import geometry
from cgkd.openmm.system import artefact_topology, resolve_box

ENCODINGS = ("analytic", "table", "groups")


def _metadata(model: NativeModel) -> dict:
    return {"type_names": model.type_names, "type_masses": model.type_masses, "bonded_priors": model.bonded_priors}


def _pair_force(expression: str, model: NativeModel, periodic: bool) -> openmm.CustomNonbondedForce:
    force = openmm.CustomNonbondedForce(expression)
    force.setNonbondedMethod(openmm.CustomNonbondedForce.CutoffPeriodic if periodic
                             else openmm.CustomNonbondedForce.CutoffNonPeriodic)
    force.setCutoffDistance(model.cutoff)
    force.setUseLongRangeCorrection(False)
    force.setUseSwitchingFunction(False)
    return force


def _analytic_force(model: NativeModel, types: np.ndarray, periodic: bool) -> openmm.CustomNonbondedForce:
    an = model.analytic
    powers = [int(n) for n in an["powers"]]
    coef = np.asarray(an["coefficients"], dtype=np.float64)
    rc = model.cutoff
    terms, defs, params = [], [], []
    per_type = []  # (n_types,) values of each per-particle parameter
    for k, n in enumerate(powers):
        w, v = np.linalg.eigh(coef[:, :, k])
        parts = []
        for m in range(len(w)):
            if abs(w[m]) <= 1e-12 * max(np.abs(w).max(), 1e-300):
                continue
            name = f"v{k}_{m}"
            params.append(name)
            per_type.append(v[:, m] * np.sqrt(abs(w[m])))
            sign = "-" if w[m] < 0 else ("+" if parts else "")
            parts.append(f"{sign}{name}1*{name}2")
        if parts:
            terms.append(f"({''.join(parts)})*p{k}")
            defs.append(f"p{k}=r^(-{n})-({rc!r})^(-{n})+{n}*({rc!r})^(-{n + 1})*(r-{rc!r})")
    expression = ("+".join(terms) or "0") + "".join(f"; {d}" for d in defs)
    force = _pair_force(expression, model, periodic)
    for name in params:
        force.addPerParticleParameter(name)
    values = np.array(per_type).T if per_type else np.zeros((len(model.type_names), 0))
    for t in types:
        force.addParticle([float(x) for x in values[t]])
    return force


def native_system(model: NativeModel, topology, *, box=None, encoding: Optional[str] = None,
                  masses=None) -> openmm.System:
    """An ``openmm.System`` of ``model`` on ``topology``.

    Parameters
    ----------
    model : NativeModel
    topology : cgkd.topology.Topology or openmm.app.Topology
        One particle per bead; an OpenMM topology's atom names must be the model's type names.
    box : array-like, shape=(3, 3), nm, optional
        Periodic box vectors (rows); required for a periodic model.
    encoding : {"analytic", "table", "groups"}, optional
        Default: ``analytic`` for a model with an analytic form, else ``table``.
    masses : array-like, shape=(N,), amu, optional
        Default: a cgkd Topology's masses, else the model's per-type masses.
    """
    if not isinstance(model, NativeModel):
        raise ValueError(f"model must be a cgkd.nn.native.NativeModel, got {type(model).__name__}")
    if encoding is None:
        encoding = "analytic" if model.analytic is not None else "table"
    if encoding not in ENCODINGS:
        raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    if encoding == "analytic" and model.analytic is None:
        raise ValueError("encoding 'analytic' needs a model fitted on the powers basis (fit_native(basis='powers'))")
    meta = _metadata(model)
    top = artefact_topology(topology, meta, types=None, type_map=None, masses=masses)
    box = resolve_box(box, topology, top.n_particles)
    periodic = box is not None
    if model.periodic and not periodic:
        raise ValueError("the native model is periodic but neither box= nor the topology gives a box")
    if box is not None and model.cutoff > 0.5 * geometry.box_heights(box).min():
        raise ValueError(f"the model's cutoff {model.cutoff} nm exceeds half the smallest box height "
                         f"({0.5 * geometry.box_heights(box).min():.3f} nm); OpenMM needs a larger box")
    system = openmm.System()
    for m in top.masses:
        system.addParticle(float(m))
    if periodic:
        system.setDefaultPeriodicBoxVectors(*[openmm.Vec3(*row) for row in box])
    nt = len(model.type_names)
    types = top.types
    if encoding == "analytic":
        force = _analytic_force(model, types, periodic)
        force.setName("cgkd native pairs")
        force.setForceGroup(0)
        system.addForce(force)
    elif encoding == "table":
        if nt == 1:
            force = _pair_force("u(r)", model, periodic)
            force.addTabulatedFunction("u", openmm.Continuous1DFunction(model.tables[0, 0].tolist(), 0.0, model.cutoff))
            for _ in types:
                force.addParticle([])
        else:
            force = _pair_force(f"u(r, t1 * {nt} + t2)", model, periodic)
            values = model.tables.reshape(nt * nt, model.n_points)  # x (r) fastest, then the pair index
            force.addTabulatedFunction("u", openmm.Continuous2DFunction(model.n_points, nt * nt, values.ravel().tolist(),
                                                                         0.0, model.cutoff, 0.0, float(nt * nt - 1)))
            force.addPerParticleParameter("t")
            for t in types:
                force.addParticle([float(t)])
        force.setName("cgkd native pairs")
        force.setForceGroup(0)
        system.addForce(force)
    else:
        for a in range(nt):
            for b in range(a, nt):
                sa, sb = set(np.flatnonzero(types == a).tolist()), set(np.flatnonzero(types == b).tolist())
                if not sa or not sb:
                    continue
                force = _pair_force("u(r)", model, periodic)
                force.addTabulatedFunction("u", openmm.Continuous1DFunction(model.tables[a, b].tolist(), 0.0,
                                                                             model.cutoff))
                for _ in types:
                    force.addParticle([])
                force.addInteractionGroup(sa, sb)
                force.setName(f"cgkd native pairs {model.type_names[a]}-{model.type_names[b]}")
                force.setForceGroup(0)
                system.addForce(force)
    add_bonded_priors(system, top, meta, periodic)
    return system


__all__ = ["ENCODINGS", "native_system"]
