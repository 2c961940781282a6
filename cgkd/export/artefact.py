"""Self-describing TorchScript artefacts (format ``cgkd-potential``, see docs/export.md).

One file holds the scripted potential (``forward(positions (N, 3) nm, types (N,) int64, box (3, 3) nm)
-> energy () kJ/mol``) and, as the TorchScript extra file ``cgkd_metadata.json``, everything needed to
run it: units, bead type names and masses, cutoff, periodicity, float precision, bonded priors (run as
native OpenMM forces) and training provenance. Modules are never pickled.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from cgkd.io.atomic import atomic_path
from cgkd.io.formats import check_format
from cgkd.nn.neighbors import forget_neighbor_lists

FORMAT = "cgkd-potential"
FORMAT_VERSION = 1
METADATA_FILE = "cgkd_metadata.json"
UNITS = {"length": "nm", "energy": "kJ/mol", "force": "kJ/mol/nm", "mass": "amu", "time": "ps", "angle": "rad"}
DTYPES = {"float32": torch.float32, "float64": torch.float64}

#: Parameters of each bonded prior kind (see docs/design.md, "Priors").
_PRIOR_KINDS = {"bonds": (2, ("r0", "k")), "angles": (3, ("theta0", "k")), "dihedrals": (4, ("terms",)),
                "impropers": (4, ("terms",))}


def _split_key(key: Any, n: int, where: str) -> List[str]:
    if isinstance(key, (tuple, list)):
        names = [str(k) for k in key]
    elif isinstance(key, str):
        names = key.split("-")
    else:
        raise ValueError(f"{where}: expected a tuple of {n} type names or 'A-B' string, got {key!r}")
    if len(names) != n:
        raise ValueError(f"{where}: expected {n} type names, got {names}")
    return names


def normalize_bonded_priors(priors: Optional[dict], type_names: Sequence[str]) -> Dict[str, list]:
    """Bring bonded priors into the canonical list form stored in the metadata.

    Parameters
    ----------
    priors : dict or None
        ``{"bonds": ..., "angles": ..., "dihedrals": ...}``; each kind is either a list of entries
        ``{"types": [a, b], "r0": nm, "k": kJ/mol/nm^2}``, ``{"types": [a, b, c], "theta0": rad,
        "k": kJ/mol/rad^2}``, ``{"types": [a, b, c, d], "terms": [{"n": int, "k": kJ/mol,
        "phase": rad}, ...]}``, or a mapping from a type tuple (or ``"A-B"`` string) to the same
        parameters without ``types``.
    type_names : sequence of str
        The potential's bead types; every type named in a prior must be one of them.

    Returns
    -------
    dict with keys ``bonds``, ``angles``, ``dihedrals``, each a list of entries as above.
    """
    out: Dict[str, list] = {kind: [] for kind in _PRIOR_KINDS}
    if priors is None:
        return out
    if not isinstance(priors, dict):
        raise ValueError(f"bonded_priors: expected a mapping, got {type(priors).__name__}")
    unknown = sorted(set(priors) - set(_PRIOR_KINDS))
    if unknown:
        raise ValueError(f"bonded_priors: unknown kind(s) {unknown}; allowed are {sorted(_PRIOR_KINDS)}")
    known = set(type_names)
    for kind, entries in priors.items():
        n, params = _PRIOR_KINDS[kind]
        if isinstance(entries, dict):
            entries = [dict(v, types=_split_key(k, n, f"bonded_priors.{kind}")) for k, v in entries.items()]
        for idx, entry in enumerate(entries or []):
            where = f"bonded_priors.{kind}[{idx}]"
            if not isinstance(entry, dict) or "types" not in entry:
                raise ValueError(f"{where}: expected a mapping with 'types', got {entry!r}")
            names = _split_key(entry["types"], n, where)
            bad = [t for t in names if t not in known]
            if bad:
                raise ValueError(f"{where}: type(s) {bad} are not bead types of the potential {sorted(known)}")
            missing = [p for p in params if p not in entry]
            if missing:
                raise ValueError(f"{where}: missing parameter(s) {missing}")
            clean: Dict[str, Any] = {"types": names}
            if kind in ("dihedrals", "impropers"):
                clean["terms"] = [
                    {"n": int(t["n"]), "k": float(t["k"]), "phase": float(t.get("phase", 0.0))} for t in entry["terms"]
                ]
                if any(t["n"] < 1 for t in clean["terms"]):
                    raise ValueError(f"{where}: dihedral periodicities n must be >= 1, got {entry['terms']}")
            else:
                for p in params:
                    value = float(entry[p])
                    if not math.isfinite(value):
                        raise ValueError(f"{where}: {p} must be finite, got {value}")
                    clean[p] = value
            out[kind].append(clean)
    return out


def make_metadata(
    *,
    type_names: Sequence[str],
    type_masses: Sequence[float],
    cutoff: float,
    periodic: bool,
    bonded_priors: Optional[dict] = None,
    provenance: Optional[dict] = None,
    dtype: str = "float32",
) -> dict:
    """Build and validate the metadata dictionary embedded in an artefact (see :func:`export_potential`)."""
    type_names = [str(t) for t in type_names]
    if not type_names:
        raise ValueError("type_names must name at least one bead type, got an empty list")
    if len(set(type_names)) != len(type_names):
        raise ValueError(f"type_names must be unique, got {type_names}")
    masses = [float(m) for m in type_masses]
    if len(masses) != len(type_names):
        raise ValueError(f"type_masses has {len(masses)} entries but there are {len(type_names)} types")
    if any(not (m > 0 and math.isfinite(m)) for m in masses):
        raise ValueError(f"type_masses must be positive amu (mass 0 freezes a particle in OpenMM), got {masses}")
    if not (float(cutoff) > 0 and math.isfinite(float(cutoff))):
        raise ValueError(f"cutoff must be a positive number of nm, got {cutoff}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    provenance = dict(provenance or {})
    try:
        json.dumps(provenance)
    except TypeError as exc:
        raise ValueError(f"provenance must be JSON-serialisable: {exc}") from None
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "units": dict(UNITS),
        "type_names": type_names,
        "type_masses": masses,
        "cutoff": float(cutoff),
        "periodic": bool(periodic),
        "dtype": dtype,
        "bonded_priors": normalize_bonded_priors(bonded_priors, type_names),
        "provenance": provenance,
    }


def check_metadata(metadata: Any, source: str = "artefact") -> dict:
    """Raise ``ValueError`` unless ``metadata`` describes an artefact this cgkd can run; return it.

    Format and version go through the shared check :func:`cgkd.io.formats.check_format` (its
    ``FormatError`` is a ``ValueError``).
    """
    if not isinstance(metadata, dict):
        raise ValueError(f"{source}: metadata must be a JSON object, got {type(metadata).__name__}")
    version = check_format(metadata.get("format"), metadata.get("format_version"), FORMAT, FORMAT_VERSION, source)
    if metadata.get("units") != UNITS:
        raise ValueError(f"{source}: units are {metadata.get('units')!r}, expected {UNITS!r}")
    missing = [k for k in ("type_names", "type_masses", "cutoff", "periodic", "dtype") if k not in metadata]
    if missing:
        raise ValueError(f"{source}: metadata lacks {missing}")
    # Re-validate the values through the same checks used at export time.
    clean = make_metadata(
        type_names=metadata["type_names"],
        type_masses=metadata["type_masses"],
        cutoff=metadata["cutoff"],
        periodic=metadata["periodic"],
        bonded_priors=metadata.get("bonded_priors"),
        provenance=metadata.get("provenance"),
        dtype=metadata["dtype"],
    )
    clean["format_version"] = version
    return clean


def inline_calls(module: torch.jit.ScriptModule) -> torch.jit.ScriptModule:
    """Inline every submodule call into ``module.forward``'s graph, in place; returns ``module``.

    ``torch.jit.freeze`` (which openmm-torch applies on every platform) drops the submodules' methods and
    relies on the graph executor's optimiser to have inlined their calls first; with the optimiser off
    (``torch._C._set_graph_executor_optimize(False)``) a module that still calls them fails with
    "Couldn't find method". An inlined ``forward`` freezes under either setting, and is what
    ``torch.jit.save`` writes.
    """
    # deepest modules first, so that each inlined callee is already flat (with the optimiser off, the
    # pass inlines one level only)
    for sub in reversed(list(module.modules())):
        if isinstance(sub, torch.jit.ScriptModule):
            for name in sub._c._method_names():
                torch._C._jit_pass_inline(sub._c._get_method(name).graph)
    return module


def export_potential(
    potential: torch.nn.Module,
    path: str | Path,
    *,
    type_names: Sequence[str],
    type_masses: Sequence[float],
    cutoff: float,
    periodic: bool,
    bonded_priors: Optional[dict] = None,
    provenance: Optional[dict] = None,
    dtype: str = "float32",
) -> dict:
    """Script ``potential`` and save it with its metadata as one file, atomically.

    Parameters
    ----------
    potential : torch.nn.Module
        TorchScript-able (or already scripted) module with ``forward(positions (N, 3) nm, types (N,)
        int64, box (3, 3) nm, all-zero = non-periodic) -> energy () kJ/mol``. It is not modified;
        the saved copy is cast to ``dtype``.
    path : str or Path
        Output file (conventionally ``*.pt``).
    type_names : sequence of str
    type_masses : sequence of float, amu, one per type
    cutoff : float, nm
    periodic : bool
        Whether the potential was trained on a periodic system.
    bonded_priors : dict, optional
        See :func:`normalize_bonded_priors`; run as native OpenMM forces by ``cgkd.openmm``.
    provenance : dict, optional
        JSON-serialisable training provenance.
    dtype : {"float32", "float64"}

    Returns
    -------
    dict
        The metadata written.
    """
    metadata = make_metadata(
        type_names=type_names,
        type_masses=type_masses,
        cutoff=cutoff,
        periodic=periodic,
        bonded_priors=bonded_priors,
        provenance=provenance,
        dtype=dtype,
    )
    if not isinstance(potential, torch.nn.Module):
        raise ValueError(f"potential must be a torch.nn.Module, got {type(potential).__name__}")
    scripted = potential if isinstance(potential, torch.jit.ScriptModule) else torch.jit.script(potential)
    # Round-trip through memory so that casting never touches the caller's parameters.
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    copy = torch.jit.load(buf, map_location="cpu")
    copy = copy.to(DTYPES[dtype])
    copy.eval()
    forget_neighbor_lists(copy)  # a calculator built by an earlier call would be saved without its skin
    inline_calls(copy)
    with atomic_path(path, suffix=".pt") as tmp:
        torch.jit.save(copy, str(tmp), _extra_files={METADATA_FILE: json.dumps(metadata, indent=1)})
    return metadata


def read_metadata(path: str | Path) -> dict:
    """The checked metadata of an artefact, without keeping the module."""
    return load_potential_artefact(path)[1]


def load_potential_artefact(path: str | Path, device: str = "cpu") -> Tuple[torch.jit.ScriptModule, dict]:
    """Load an artefact written by :func:`export_potential`.

    Returns
    -------
    module : torch.jit.ScriptModule
        In eval mode, on ``device``.
    metadata : dict
        Checked metadata (format, version, units, types, masses, cutoff, priors, provenance).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not a TorchScript archive, has no cgkd metadata, or has a format, version
        or units this cgkd cannot run.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"potential artefact {str(path)!r} does not exist")
    extra = {METADATA_FILE: ""}
    try:
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    except RuntimeError as exc:
        raise ValueError(f"{path} is not a TorchScript archive: {str(exc).splitlines()[0]}") from None
    if not extra[METADATA_FILE]:
        raise ValueError(f"{path} has no {METADATA_FILE}; it was not written by cgkd.export.export_potential")
    try:
        metadata = json.loads(extra[METADATA_FILE])
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: {METADATA_FILE} is not valid JSON ({exc})") from None
    metadata = check_metadata(metadata, source=str(path))
    module.eval()
    return module, metadata


def export_cg_potential(potential: torch.nn.Module, path: str | Path, *, type_masses: Sequence[float], periodic: bool,
                        provenance: Optional[dict] = None, dtype: Optional[str] = None) -> dict:
    """Export a ``cgkd.nn.CGPotential``: its ``type_names``, ``cutoff`` and ``bonded_prior_spec()`` go in the metadata.

    ``dtype`` defaults to the potential's parameter dtype. See :func:`export_potential`.
    """
    for attr in ("type_names", "cutoff", "bonded_prior_spec"):
        if not hasattr(potential, attr):
            raise ValueError(f"potential must be a cgkd.nn.CGPotential (it has no {attr!r}); use export_potential")
    if dtype is None:
        first = next(iter(potential.parameters()), None)
        dtype = "float64" if first is not None and first.dtype == torch.float64 else "float32"
    prov = dict(getattr(potential, "metadata", {}) or {})
    prov.update(provenance or {})
    return export_potential(potential, path, type_names=list(potential.type_names), type_masses=type_masses,
                            cutoff=float(potential.cutoff), periodic=periodic, bonded_priors=potential.bonded_prior_spec(),
                            provenance=prov, dtype=dtype)


def export_model(model_file: str | Path, cg_path: str | Path, out: str | Path, *, dtype: Optional[str] = None,
                 provenance: Optional[dict] = None) -> dict:
    """Export a model file (``cgkd.nn.save_potential``: a teacher's or student's ``model.pt``) as an artefact.

    Parameters
    ----------
    model_file : str or Path
        The trained model file.
    cg_path : str or Path
        CG dataset (``cgkd-cg``) of the system: bead masses per type are the mean bead masses of that
        type in it (amu); periodicity follows it.
    out : str or Path
        The artefact to write (conventionally ``*.pt``).
    dtype : {"float32", "float64"}, optional
        Default: the model's parameter dtype.
    provenance : dict, optional
        Added to the provenance (which records ``model_file`` and ``cg_data``).

    Returns
    -------
    dict
        The artefact's metadata.
    """
    from cgkd.data.cg_h5 import read_cg
    import cgkd.nn.priors  # noqa: F401  (registers the prior kinds load_potential looks up)
    from cgkd.nn.potential import load_potential

    potential = load_potential(model_file)
    data = read_cg(cg_path, frames=slice(0, 1))
    top = data.topology.with_type_names(potential.type_names, f"the model {model_file}")
    masses = top.masses_by_type().tolist()
    prov = {"model_file": str(model_file), "cg_data": str(cg_path)}
    prov.update(provenance or {})
    return export_cg_potential(potential, out, type_masses=masses, periodic=data.periodic, dtype=dtype, provenance=prov)


def export_ensemble(teacher_dir: str | Path, cg_path: str | Path, out: str | Path, *, dtype: Optional[str] = None,
                    provenance: Optional[dict] = None) -> dict:
    """Export the mean of a teacher ensemble (``cgkd teachers`` output) as one artefact.

    The members' ``member_*/model.pt`` files become one ``cgkd.nn.EnsemblePotential`` (mean energy, so
    mean forces; shared neighbour list and bonded priors). Otherwise as :func:`export_model`.
    """
    from cgkd.data.cg_h5 import read_cg
    import cgkd.nn.priors  # noqa: F401  (registers the prior kinds load_potential looks up)
    from cgkd.nn.ensemble import EnsemblePotential
    from cgkd.nn.potential import load_potential

    files = sorted(Path(teacher_dir).glob("member_*/model.pt"))
    if not files:
        raise FileNotFoundError(f"teacher_dir {str(teacher_dir)!r} holds no member_*/model.pt (train teachers first)")
    ensemble = EnsemblePotential([load_potential(f) for f in files])
    data = read_cg(cg_path, frames=slice(0, 1))
    top = data.topology.with_type_names(ensemble.type_names, f"the ensemble in {teacher_dir}")
    prov = {"teacher_dir": str(teacher_dir), "members": len(files), "cg_data": str(cg_path)}
    prov.update(provenance or {})
    return export_cg_potential(ensemble, out, type_masses=top.masses_by_type().tolist(), periodic=data.periodic,
                               dtype=dtype, provenance=prov)



def export_atomistic(model_file: str | Path, out: str | Path, *, periodic: bool, dtype: Optional[str] = None,
                     provenance: Optional[dict] = None) -> dict:
    """Export an element-typed model file (``cgkd.kd.atomistic``) as an artefact; masses are the elements'.

    Parameters
    ----------
    model_file : str or Path
        A model whose type names are element symbols (``cgkd atoms train`` writes one).
    out : str or Path
    periodic : bool
        Whether the systems it will run on have a periodic box.
    dtype, provenance : see :func:`export_model`.
    """
    from ase.data import atomic_masses, atomic_numbers

    import cgkd.nn.priors  # noqa: F401  (registers the prior kinds load_potential looks up)
    from cgkd.nn.potential import load_potential

    potential = load_potential(model_file)
    bad = [t for t in potential.type_names if t not in atomic_numbers]
    if bad:
        raise ValueError(f"{model_file} has types {bad} that are not element symbols; export a CG model with "
                         "export_model (it takes bead masses from a CG dataset)")
    masses = [float(atomic_masses[atomic_numbers[t]]) for t in potential.type_names]
    prov = {"model_file": str(model_file), "typing": "element"}
    prov.update(provenance or {})
    return export_cg_potential(potential, out, type_masses=masses, periodic=periodic, dtype=dtype, provenance=prov)
