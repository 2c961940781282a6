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
    attrs = _attrs(m, force_map, source, allow_constraint_crossing, msf)
    # Leaving whole molecules out (solvent) makes an implicit-solvent CG model without a box.
    box = None if (aa.box is None or not m.cg_periodic) else aa.box.astype(np.float32)
    data = CGData(positions=positions, forces=forces, box=box, topology=m.topology(), temperature=aa.temperature,
                  time=aa.time, attrs=attrs)
    return data, {"mapping": m.name, "force_map": force_map, "msf": msf}


#: Frames the streamed mapping fits a force map on by default (spread evenly over the trajectory).
FIT_FRAMES = 1000


def map_aa_file(
    aa_path,
    out_path,
    mapping: Optional[str] = None,
    force_map: str = "optimal",
    allow_constraint_crossing: bool = False,
    chunk_frames: int = 256,
    fit_frames: Optional[int] = FIT_FRAMES,
    compare: bool = True,
    progress: bool = False,
) -> Dict[str, object]:
    """Map an AA trajectory file to a CG dataset file chunk by chunk: memory for ``chunk_frames`` frames, not all.

    Same mapping, same arrays and same digest as ``write_cg(out_path, map_aa(read_aa(aa_path))[0])`` whenever the
    force map is fitted on all frames (``fit_frames`` None or >= the number of frames); otherwise the force map
    (``optimal``) is fitted on ``fit_frames`` frames spread evenly over the trajectory, and applied to all.

    Parameters
    ----------
    aa_path, out_path : path
        A ``cgkd-aa`` file in, a ``cgkd-cg`` file out (written atomically).
    mapping, force_map, allow_constraint_crossing, compare
        As :func:`map_aa`.
    chunk_frames : int
        Frames read, mapped and written at a time.
    fit_frames : int or None
        Frames the force map is fitted on (None: all, which holds all their forces in memory at once).
    progress : bool

    Returns
    -------
    dict
        The report of :func:`map_aa`, with ``n_frames`` and ``fit_frames``.
    """
    from pathlib import Path

    from cgkd.data.cg_h5 import CGWriter
    from cgkd.io.aa_h5 import n_frames as aa_n_frames, read_aa
    from cgkd.progress import progress as progress_bar

    for name, value in (("chunk_frames", chunk_frames),) + ((("fit_frames", fit_frames),) if fit_frames is not None else ()):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    n = aa_n_frames(aa_path)
    if n == 0:
        raise ValueError(f"the AA trajectory {aa_path} has 0 frames")
    head = read_aa(aa_path, frames=[0])
    m = resolve_mapping(head, mapping)
    fit_idx = np.arange(n) if fit_frames is None or fit_frames >= n else np.unique(
        np.round(np.linspace(0, n - 1, int(fit_frames))).astype(np.int64))
    fit_forces = read_aa(aa_path, frames=fit_idx).forces if force_map != "basic" or compare else None
    chosen = fit_force_map(force_map, m, forces=fit_forces, constraints=head.constraints,
                           allow_constraint_crossing=allow_constraint_crossing)
    others: Dict[str, object] = {}
    if compare:
        for name in FORCE_MAPS.names():
            if name == force_map:
                continue
            try:
                others[name] = fit_force_map(name, m, forces=fit_forces, constraints=head.constraints,
                                             allow_constraint_crossing=allow_constraint_crossing)
            except ValueError as exc:
                others[name] = f"not available: {exc}"
    del fit_forces
    sq = {force_map: 0.0, **{k: 0.0 for k, v in others.items() if not isinstance(v, str)}}
    count = 0
    attrs = _attrs(m, force_map, str(Path(aa_path).resolve()), allow_constraint_crossing, {})
    periodic = head.box is not None and m.cg_periodic
    bar = progress_bar(n, "mapping", unit="frame", enabled=progress)
    with CGWriter(out_path, m.topology(), head.temperature, periodic=periodic, with_time=True, attrs=attrs,
                  chunk_frames=min(64, n)) as w:
        for a in range(0, n, int(chunk_frames)):
            aa = read_aa(aa_path, frames=slice(a, min(a + int(chunk_frames), n)))
            positions, forces = m.map(aa.positions, aa.forces, aa.box, chosen)
            sq[force_map] += float(np.sum(forces.astype(np.float64) ** 2))
            for name, fmap in others.items():
                if not isinstance(fmap, str):
                    sq[name] += float(np.sum(fmap.apply(aa.forces).astype(np.float64) ** 2))
            count += forces.size
            w.append(positions, forces, aa.box.astype(np.float32) if periodic else None, aa.time)
            bar.update(aa.n_frames)
        msf: Dict[str, object] = {k: v / count for k, v in sq.items()}
        msf.update({k: v for k, v in others.items() if isinstance(v, str)})
        w.attrs["mean_squared_force"] = {k: v for k, v in msf.items() if isinstance(v, float)}
    bar.close()
    return {"mapping": m.name, "force_map": force_map, "msf": msf, "n_frames": n, "fit_frames": int(len(fit_idx))}


def _attrs(m: Mapping, force_map: str, source: str, allow_constraint_crossing: bool, msf: dict) -> dict:
    return {
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


__all__ = ["FIT_FRAMES", "map_aa", "map_aa_file", "resolve_mapping"]
