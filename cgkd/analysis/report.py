"""AA vs CG comparison: distributions, errors, plots and a Markdown report (see docs/analysis.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import openmm.unit as u

from cgkd.analysis import angles, bonded, dihedrals as dihedral_analysis, plots, transport
from cgkd.analysis.frames import concat, load_frames
from cgkd.analysis.metrics import jensen_shannon, total_absolute_error
from cgkd.analysis.rdf import default_r_max, first_minimum, rdf
from cgkd.io.atomic import write_text

#: nm^2/ps -> 1e-5 cm^2/s (the unit diffusion coefficients of liquids are usually quoted in).
_NM2_PS_TO_1E5_CM2_S = float((1.0 * u.nanometer**2 / u.picosecond).value_in_unit(u.centimeter**2 / u.second)) / 1e-5


@dataclass(frozen=True)
class CompareSettings:
    """Histogram settings shared by all trajectories (so that distributions share their bins).

    YAML-loadable (unknown keys rejected): ``cgkd.io.config.load_yaml(CompareSettings, path)`` or
    ``cgkd compare ... --settings path``.
    """

    r_max: Optional[float] = None  # nm; default: half the smallest reference box edge, at most 1.5 nm
    n_bins: int = 100  # RDF bins
    adf_cutoff: Optional[float] = None  # nm; default: first RDF minimum of the reference (all beads)
    adf_bins: int = 60
    cdf_bins: int = 24
    bonded_bins: int = 60
    max_frames: int = 100  # per trajectory, for structure (evenly spaced)
    msd_max_frames: int = 400
    fit_window: Tuple[float, float] = (0.2, 0.8)  # Einstein fit: fractions of the longest lag
    progress: bool = True  # report each trajectory as it is analysed (stderr)
    fes_bins: int = 36  # Ramachandran grid (10 degree bins)
    dihedral_bins: int = 72  # 1-D distributions of named dihedrals
    fes_max_frames: int = 20000  # per trajectory, for the free-energy surface and the basin dynamics

    def __post_init__(self):
        for name in ("n_bins", "adf_bins", "cdf_bins", "bonded_bins", "max_frames", "msd_max_frames", "fes_bins",
                     "dihedral_bins", "fes_max_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"CompareSettings.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("r_max", "adf_cutoff"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ValueError(f"CompareSettings.{name} must be > 0 nm or None, got {getattr(self, name)}")
        window = tuple(self.fit_window)
        if len(window) != 2 or not 0.0 <= window[0] < window[1] <= 1.0:
            raise ValueError(f"CompareSettings.fit_window must be two fractions 0 <= a < b <= 1, got {self.fit_window}")
        object.__setattr__(self, "fit_window", (float(window[0]), float(window[1])))


def _named_dihedral_properties(segments, s: CompareSettings, named: dict, dynamics=None) -> dict:
    """1-D distributions of the named dihedrals, the Ramachandran surface and the basin dynamics (of
    ``dynamics`` when given: a continuous trajectory of the same system, else of ``segments``)."""
    out: Dict[str, object] = {"named": {}, "fes": None, "basins": None}
    if not named:
        return out
    frames = concat(segments).subsample(s.fes_max_frames)
    edges = np.linspace(-180.0, 180.0, s.dihedral_bins + 1)
    centres = 0.5 * (edges[1:] + edges[:-1])
    series = {k: dihedral_analysis.dihedral_series(frames, q) for k, q in named.items()}
    for k, x in series.items():
        h, _ = np.histogram(x.ravel(), bins=edges, density=True)
        out["named"][k] = (centres, h)
    pair = dihedral_analysis.phi_psi_names(named)
    if pair is not None:
        out["fes"] = dihedral_analysis.ramachandran(series[pair[0]], series[pair[1]], s.fes_bins)
        segs = [seg.subsample(s.fes_max_frames) for seg in (segments if dynamics is None else dynamics)]
        out["basins"] = dihedral_analysis.basin_dynamics(segs, named[pair[0]], named[pair[1]])
    return out


def _properties(segments, s: CompareSettings, r_max: float, adf_cutoff: float, named: Optional[dict] = None,
                dynamics=None) -> dict:
    frames = concat(segments).subsample(s.max_frames)
    names = frames.type_names
    n_types = len(names)
    liquid = frames.box is not None  # the neighbour-shell sections describe liquids, not one molecule in vacuo
    out: Dict[str, dict] = {"rdf": {}, "adf": {}, "cdf": {}, "bonded": {}}
    present = set(np.unique(frames.types).tolist())
    if liquid:
        for a in range(n_types):
            for b in range(a, n_types):
                if a in present and b in present and (a != b or np.sum(frames.types == a) > 1):
                    out["rdf"][f"{names[a]}-{names[b]}"] = rdf(frames, a, b, r_max, s.n_bins)
        theta, p = angles.adf(frames, adf_cutoff, s.adf_bins)
        out["adf"] = {angles.triplet_name(names, k): (theta, v) for k, v in p.items()}
        r, th, c = angles.cdf(frames, adf_cutoff, s.cdf_bins, s.cdf_bins)
        out["cdf"] = {angles.triplet_name(names, k): (r, th, v) for k, v in c.items()}
    for kind, groups in bonded.bonded_distributions(frames, s.bonded_bins).items():
        for k, xy in groups.items():
            out["bonded"][f"{kind[:-1]} " + "-".join(names[t] for t in k)] = xy
    out.update(_named_dihedral_properties(segments, s, named or {}, dynamics))
    out["density"] = float(np.mean(transport.density(frames))) if liquid else None
    out["diffusion"] = {}
    for t in range(n_types if liquid else 0):
        ds = []
        for seg in segments:
            if seg.dt is None or seg.n_frames < 5:
                continue
            seg = seg.subsample(s.msd_max_frames)
            lag_t, m = transport.msd(seg)
            if t in m:
                ds.append(transport.diffusion_coefficient(lag_t, m[t], s.fit_window))
        out["diffusion"][names[t]] = float(np.mean(ds)) if ds else None
    return out


def _errors(ref: dict, cand: dict) -> Dict[str, dict]:
    rows = {}
    for kind in ("rdf", "adf", "bonded"):
        for name, (x, p) in ref[kind].items():
            if name not in cand[kind]:
                continue
            q = cand[kind][name][1]
            dx = float(x[1] - x[0])
            if kind == "rdf":
                tae = total_absolute_error(p, q, dx, normalize=False)
                jsd = jensen_shannon(x**2 * p, x**2 * q) if p.sum() > 0 and q.sum() > 0 else None
            else:
                tae, jsd = total_absolute_error(p, q, dx), jensen_shannon(p, q)
            rows[f"{kind.upper() if kind != 'bonded' else ''} {name}".strip()] = {"tae": tae, "jsd": jsd}
    for name, (x, p) in ref["named"].items():
        if name in cand["named"]:
            q = cand["named"][name][1]
            rows[f"dihedral {name}"] = {"tae": total_absolute_error(p, q, float(x[1] - x[0])), "jsd": jensen_shannon(p, q)}
    if ref["fes"] is not None and cand["fes"] is not None:
        p, q = ref["fes"], cand["fes"]
        rows["FES " + "-".join(ref["fes_names"])] = {
            "tae": float(np.abs(p - q).sum()), "jsd": jensen_shannon(p.ravel(), q.ravel()),
            "kl": dihedral_analysis.kl_divergence(p, q)}
    for name, (r, th, p) in ref["cdf"].items():
        if name in cand["cdf"]:
            q = cand["cdf"][name][2]
            area = float((r[1] - r[0]) * (th[1] - th[0]))
            rows[f"CDF {name}"] = {"tae": total_absolute_error(p.ravel(), q.ravel(), area),
                                   "jsd": jensen_shannon(p.ravel(), q.ravel())}
    return rows


def _named_from(reference) -> dict:
    """``attrs["named_dihedrals"]`` of a CG dataset (object or file), else {}."""
    from cgkd.data.cg_h5 import CGData, read_cg

    data = reference
    if isinstance(reference, (str, Path)) and Path(reference).is_file():
        data = read_cg(reference)
    if isinstance(data, CGData):
        return {k: np.asarray(v, dtype=np.int64).reshape(-1, 4)
                for k, v in (data.attrs.get("named_dihedrals") or {}).items()}
    return {}


def compare(reference, candidates: Dict[str, object], out_dir, *, settings: Optional[CompareSettings] = None,
            reference_label: str = "AA (mapped)", dihedrals: Optional[Dict[str, object]] = None,
            dynamics_reference=None) -> dict:
    """Compare CG trajectories against the mapped AA reference; write plots and ``report.md``.

    Parameters
    ----------
    reference : CGData, Frames, path to a CG dataset or mdtraj.Trajectory
        The mapped AA data.
    candidates : dict label -> CGData, Frames, CG MD output folder, CG dataset path or mdtraj.Trajectory
        E.g. ``{"teacher": "runs/teacher_md", "student": "runs/student_md", "control": ...}``.
    out_dir : str or Path
        Receives ``rdf.png``, ``adf.png``, ``cdf.png``, ``bonded.png`` (when there are bonds),
        ``density.png``, ``diffusion.png``, ``metrics.json`` and ``report.md``.
    settings : CompareSettings, optional
    dihedrals : dict name -> array-like shape=(n, 4), optional
        Named bead dihedrals to analyse (default: ``attrs["named_dihedrals"]`` of a reference CG dataset).
        With ``phi`` and ``psi`` (or any two) the report adds the Ramachandran free-energy surface
        (``fes.png``, TAE, JSD and KL divergence) and the basin populations and exchange rates.
    dynamics_reference : CGData, path or Frames, optional
        A continuous AA trajectory for the reference's basin exchange rates (the held-out reference
        frames are often not evenly spaced); default: the reference itself.

    Returns
    -------
    dict
        ``{"errors": {label: {property: {"tae", "jsd"}}}, "density": {label: g/cm^3},
        "diffusion": {label: {type: nm^2/ps}}, "settings": {...}}`` (also in ``metrics.json``).
    """
    s = settings or CompareSettings()
    if not candidates:
        raise ValueError("candidates must hold at least one labelled CG trajectory, got none")
    ref_segments = load_frames(reference)
    names = ref_segments[0].type_names
    cand_segments = {}
    for label, src in candidates.items():
        segs = load_frames(src, type_names=names)
        if list(segs[0].type_names) != list(names):
            raise ValueError(f"candidate {label!r} has bead types {segs[0].type_names}, the reference {names}")
        if len(segs[0].types) != len(ref_segments[0].types):
            raise ValueError(f"candidate {label!r} has {len(segs[0].types)} beads, the reference {len(ref_segments[0].types)}")
        cand_segments[label] = segs
    ref_all = concat(ref_segments).subsample(s.max_frames)
    r_max = default_r_max(ref_all) if s.r_max is None else s.r_max
    adf_cutoff = s.adf_cutoff
    if adf_cutoff is None:
        all_types = ref_all.one_type("all")
        adf_cutoff = first_minimum(*rdf(all_types, 0, 0, r_max, s.n_bins)) if ref_all.box is not None else 0.6
    from cgkd.progress import progress

    named = _named_from(reference) if dihedrals is None else {
        k: np.asarray(v, dtype=np.int64).reshape(-1, 4) for k, v in dihedrals.items()}
    dyn = None if dynamics_reference is None else load_frames(dynamics_reference)
    bar = progress(1 + len(cand_segments), "compare", unit="trajectory", enabled=s.progress)
    props = {reference_label: _properties(ref_segments, s, r_max, adf_cutoff, named, dynamics=dyn)}
    bar.update(1)
    for label, segs in cand_segments.items():
        bar.set_postfix_str(label)
        props[label] = _properties(segs, s, r_max, adf_cutoff, named)
        bar.update(1)
    bar.close()
    pair = dihedral_analysis.phi_psi_names(named)
    for p in props.values():
        p["fes_names"] = list(pair) if pair else []
    ref = props[reference_label]
    result = {
        "errors": {label: _errors(ref, p) for label, p in props.items() if label != reference_label},
        "density": {label: p["density"] for label, p in props.items()},
        "diffusion": {label: p["diffusion"] for label, p in props.items()},
        "basins": {label: p["basins"] for label, p in props.items() if p["basins"] is not None},
        "named_dihedrals": {k: v.tolist() for k, v in named.items()},
        "settings": {"r_max_nm": r_max, "adf_cutoff_nm": adf_cutoff, "n_bins": s.n_bins, "max_frames": s.max_frames,
                     "fit_window": list(s.fit_window)},
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _plots(out, props, reference_label)
    write_text(out / "metrics.json", json.dumps(result, indent=1))
    write_text(out / "report.md", _markdown(result, reference_label))
    return result


def _plots(out: Path, props: dict, ref_label: str) -> None:
    def panels(kind):
        ref = props[ref_label][kind]
        return {name: {label: p[kind][name][:2] for label, p in props.items() if name in p[kind]} for name in ref}

    plots.overlay_grid(out / "rdf.png", "Radial distribution functions", panels("rdf"), "r (nm)", "g(r)", ref_label)
    plots.overlay_grid(out / "adf.png", "Angular distributions (neighbour triplets)", panels("adf"), "angle (deg)",
                       "p (1/deg)", ref_label)
    plots.overlay_grid(out / "bonded.png", "Bonded distributions", panels("bonded"), "bond (nm) / angle (deg)",
                       "density", ref_label)
    ref_cdf = props[ref_label]["cdf"]
    if ref_cdf:
        name = max(ref_cdf, key=lambda k: ref_cdf[k][2].sum())
        r, th, _ = ref_cdf[name]
        plots.maps(out / "cdf.png", f"Combined distance-angle distribution {name}", r, th,
                   {label: p["cdf"][name][2] for label, p in props.items() if name in p["cdf"]})
    plots.overlay_grid(out / "dihedrals.png", "Named dihedrals", panels("named"), "angle (deg)", "p (1/deg)",
                       ref_label)
    fes = {label: p["fes"] for label, p in props.items() if p["fes"] is not None}
    if fes:
        names = props[ref_label]["fes_names"]
        plots.free_energy_maps(out / "fes.png", f"Free energy ({names[0]}, {names[1]})", fes, names)
    labels = list(props)
    if all(props[k]["density"] is None for k in labels):
        return  # one molecule without a box: no density, no diffusion
    plots.bars(out / "density.png", "Density", labels, [props[k]["density"] for k in labels], "g/cm^3")
    types = list(props[ref_label]["diffusion"])
    if types:
        plots.bars(out / "diffusion.png", f"Diffusion coefficient ({types[0]})", labels,
                   [props[k]["diffusion"].get(types[0]) for k in labels], "D (nm^2/ps)")


def _fmt(v, spec=".3f"):
    return "n/a" if v is None else format(v, spec)


def _markdown(result: dict, ref_label: str) -> str:
    labels = list(result["errors"])
    lines = ["# AA vs CG comparison", "", f"Reference: **{ref_label}**. Settings: `{json.dumps(result['settings'])}`.", "",
             "TAE = sum |p_AA - p_CG| dx (probability densities normalised to 1, in [0, 2]; RDFs: g(r) as is, nm). "
             "JSD = Jensen-Shannon divergence, base 2, in [0, 1] (RDFs: of r^2 g(r)). Lower is better.", "",
             "## Errors (TAE / JSD)", "", "| property | " + " | ".join(labels) + " |",
             "|---|" + "---|" * len(labels)]
    props = sorted({p for label in labels for p in result["errors"][label]})
    for prop in props:
        cells = []
        for label in labels:
            e = result["errors"][label].get(prop)
            cells.append("-" if e is None else f"{_fmt(e['tae'])} / {_fmt(e['jsd'], '.4f')}"
                         + (f" / KL {_fmt(e['kl'], '.3f')}" if "kl" in e else ""))
        lines.append(f"| {prop} | " + " | ".join(cells) + " |")
    all_labels = list(result["density"])
    if result.get("basins"):
        lines += ["", "## Backbone basins", "",
                  "Populations of the Ramachandran basins (alpha_R: phi < 0, -120 <= psi < 50; beta: phi < 0, other "
                  "psi; alpha_L: phi >= 0), changes of basin per ns and mean residence times. CG time follows the "
                  "CG model's Langevin friction, so rates compare exploration, not physical kinetics.", "",
                  "| | " + " | ".join(result["basins"]) + " |", "|---|" + "---|" * len(result["basins"])]
        for basin in dihedral_analysis.BASINS:
            lines.append(f"| population {basin} | " + " | ".join(
                _fmt(b["populations"][basin]) for b in result["basins"].values()) + " |")
        lines.append("| transitions per ns | " + " | ".join(
            _fmt(b["transitions_per_ns"], ".1f") for b in result["basins"].values()) + " |")
        for basin in dihedral_analysis.BASINS:
            lines.append(f"| mean dwell {basin} (ps) | " + " | ".join(
                _fmt(b["dwell_ps"][basin], ".2f") for b in result["basins"].values()) + " |")
        lines.append("| simulated time (ns) | " + " | ".join(
            _fmt(b["time_ns"], ".3f") for b in result["basins"].values()) + " |")
    if all(v is None for v in result["density"].values()):
        lines += ["", "Plots: bonded.png, dihedrals.png, fes.png (one molecule without a box: no RDF, ADF, CDF, "
                  "density or diffusion).", ""]
        return "\n".join(lines)
    lines += ["", "## Density and diffusion", "", "| | " + " | ".join(all_labels) + " |", "|---|" + "---|" * len(all_labels),
              "| density (g/cm^3) | " + " | ".join(_fmt(result["density"][k], ".4f") for k in all_labels) + " |"]
    types = list(result["diffusion"][ref_label])
    for t in types:
        lines.append(f"| D {t} (1e-5 cm^2/s) | " + " | ".join(
            _fmt(None if result["diffusion"][k].get(t) is None else result["diffusion"][k][t] * _NM2_PS_TO_1E5_CM2_S,
                 ".4f") for k in all_labels) + " |")
    lines += ["", "Plots: rdf.png, adf.png, cdf.png, bonded.png (multi-bead molecules), density.png, diffusion.png.", ""]
    return "\n".join(lines)
