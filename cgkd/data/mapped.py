"""Mapped datasets from AA data: choose a mapping, fit a force map, build a :class:`CGData`."""

from __future__ import annotations

import re
from typing import Dict, Optional, Tuple

import numpy as np

from cgkd.data.cg_h5 import CGData
from cgkd.io.aa_h5 import AAData
from cgkd.mapping import FORCE_MAPS, Mapping, fit_force_map, mean_squared_force

_AUTO = re.compile(r"^auto(\d+)$")


def resolve_mapping(aa: AAData, mapping: Optional[str] = None) -> Mapping:
    """The mapping named ``mapping`` for ``aa``.

    Parameters
    ----------
    aa : AAData
    mapping : str, optional
        A mapping JSON file (``Mapping.save``), a mapping name of the embedded system spec,
        ``"residue"`` (one bead per residue) or ``"auto<N>"`` (``Mapping.auto`` with N heavy atoms
        per bead). Default: the spec's default mapping, or one bead per residue without a spec.
        Atom masses are the AA system's (``aa.masses``).
    """
    if mapping is not None and mapping.endswith(".json"):
        m = Mapping.load(mapping)
        if m.n_atoms != aa.n_atoms:
            raise ValueError(f"mapping {mapping!r} has {m.n_atoms} atoms but the AA file has {aa.n_atoms}")
        return m
    if mapping == "residue" or (mapping is None and aa.spec is None):
        m = Mapping.one_bead_per_residue(aa.topology, masses=aa.masses)
    elif mapping is not None and _AUTO.match(mapping):
        m = Mapping.auto(aa.topology, heavy_atoms_per_bead=int(_AUTO.match(mapping).group(1)), masses=aa.masses)
    else:
        if aa.spec is None:
            raise ValueError(
                f"mapping {mapping!r} is not a .json file, 'residue' or 'auto<N>', and the AA file has no embedded "
                "system spec to look it up in"
            )
        name = mapping or aa.spec.default_mapping
        m = Mapping.from_spec(aa.topology, aa.spec.mapping(name), masses=aa.masses, name=name)
    m.periodic = aa.periodic  # the data decide (a saved mapping may come from a non-periodic topology)
    return m


def map_aa(
    aa: AAData,
    mapping: Optional[str] = None,
    force_map: str = "optimal",
    allow_constraint_crossing: bool = False,
    source: str = "",
    compare: bool = True,
) -> Tuple[CGData, Dict[str, object]]:
    """Map an AA trajectory to a CG dataset.

    Parameters
    ----------
    aa : AAData
    mapping : str, optional
        See :func:`resolve_mapping`.
    force_map : str
        Registered force-map name used for the dataset (``optimal``, the default of ``cgkd map`` and
        ``cgkd run``, or ``basic``).
    allow_constraint_crossing : bool
        Let the basic map sum forces across bead-crossing constraints (biased).
    source : str
        Recorded in ``attrs["source"]``.
    compare : bool
        Also compute the mean squared mapped force of every registered force map (diagnostics).

    Returns
    -------
    (CGData, dict)
        The dataset and a report: ``mapping``, ``force_map``, ``msf`` (force-map name -> mean squared
        mapped force, (kJ/mol/nm)^2, or the reason it could not be built).
    """
    if aa.n_frames == 0:
        raise ValueError("the AA trajectory has 0 frames")
    m = resolve_mapping(aa, mapping)
    chosen = fit_force_map(
        force_map, m, forces=aa.forces, constraints=aa.constraints, allow_constraint_crossing=allow_constraint_crossing
    )
    positions, forces = m.map(aa.positions, aa.forces, aa.box, chosen)
    msf: Dict[str, object] = {force_map: mean_squared_force(forces)}
    if compare:
        for name in FORCE_MAPS.names():
            if name in msf:
                continue
            try:
                other = fit_force_map(
                    name, m, forces=aa.forces, constraints=aa.constraints,
                    allow_constraint_crossing=allow_constraint_crossing,
                )
            except ValueError as exc:
                msf[name] = f"not available: {exc}"
                continue
            msf[name] = mean_squared_force(other.apply(aa.forces))
    attrs = {
        "mapping": m.name,
        "force_map": force_map,
        "source": str(source),
        "allow_constraint_crossing": bool(allow_constraint_crossing),
        "mapping_center": m.center,
        "mapped_atoms": int(m.mapped_atoms.size),
        "dropped_molecules": int(m.dropped_molecules.size),
        "named_dihedrals": {k: v.tolist() for k, v in m.named_dihedrals.items()},
        "mean_squared_force": {k: v for k, v in msf.items() if isinstance(v, float)},
    }
    # Leaving whole molecules out (solvent) makes an implicit-solvent CG model without a box.
    box = None if (aa.box is None or not m.cg_periodic) else aa.box.astype(np.float32)
    data = CGData(positions=positions, forces=forces, box=box, topology=m.topology(), temperature=aa.temperature,
                  time=aa.time, attrs=attrs)
    return data, {"mapping": m.name, "force_map": force_map, "msf": msf}


__all__ = ["map_aa", "resolve_mapping"]
