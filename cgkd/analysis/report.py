"""AA vs CG comparison: distributions, errors, plots and a Markdown report (see docs/analysis.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np
import openmm.unit as u

from cgkd.analysis import angles, bonded, plots, transport
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

    def __post_init__(self):
        for name in ("n_bins", "adf_bins", "cdf_bins", "bonded_bins", "max_frames", "msd_max_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"CompareSettings.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("r_max", "adf_cutoff"):
            if getattr(self, name) is not None and not getattr(self, name) > 0:
                raise ValueError(f"CompareSettings.{name} must be > 0 nm or None, got {getattr(self, name)}")
        window = tuple(self.fit_window)
        if len(window) != 2 or not 0.0 <= window[0] < window[1] <= 1.0:
            raise ValueError(f"CompareSettings.fit_window must be two fractions 0 <= a < b <= 1, got {self.fit_window}")
        object.__setattr__(self, "fit_window", (float(window[0]), float(window[1])))


def _properties(segments, s: CompareSettings, r_max: float, adf_cutoff: float) -> dict:
    frames = concat(segments).subsample(s.max_frames)
    names = frames.type_names
    n_types = len(names)
    out: Dict[str, dict] = {"rdf": {}, "adf": {}, "cdf": {}, "bonded": {}}
    present = set(np.unique(frames.types).tolist())
    if frames.box is not None:
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
    out["density"] = float(np.mean(transport.density(frames))) if frames.box is not None else None
    out["diffusion"] = {}
    for t in range(n_types):
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
    for name, (r, th, p) in ref["cdf"].items():
        if name in cand["cdf"]:
            q = cand["cdf"][name][2]
            area = float((r[1] - r[0]) * (th[1] - th[0]))
            rows[f"CDF {name}"] = {"tae": total_absolute_error(p.ravel(), q.ravel(), area),
                                   "jsd": jensen_shannon(p.ravel(), q.ravel())}
    return rows


def compare(reference, candidates: Dict[str, object], out_dir, *, settings: Optional[CompareSettings] = None,
            reference_label: str = "AA (mapped)") -> dict:
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

    bar = progress(1 + len(cand_segments), "compare", unit="trajectory", enabled=s.progress)
    props = {reference_label: _properties(ref_segments, s, r_max, adf_cutoff)}
    bar.update(1)
    for label, segs in cand_segments.items():
        bar.set_postfix_str(label)
        props[label] = _properties(segs, s, r_max, adf_cutoff)
        bar.update(1)
    bar.close()
    ref = props[reference_label]
    result = {
        "errors": {label: _errors(ref, p) for label, p in props.items() if label != reference_label},
        "density": {label: p["density"] for label, p in props.items()},
        "diffusion": {label: p["diffusion"] for label, p in props.items()},
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
    labels = list(props)
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
            cells.append("-" if e is None else f"{_fmt(e['tae'])} / {_fmt(e['jsd'], '.4f')}")
        lines.append(f"| {prop} | " + " | ".join(cells) + " |")
    all_labels = list(result["density"])
    lines += ["", "## Density and diffusion", "", "| | " + " | ".join(all_labels) + " |", "|---|" + "---|" * len(all_labels),
              "| density (g/cm^3) | " + " | ".join(_fmt(result["density"][k], ".4f") for k in all_labels) + " |"]
    types = list(result["diffusion"][ref_label])
    for t in types:
        lines.append(f"| D {t} (1e-5 cm^2/s) | " + " | ".join(
            _fmt(None if result["diffusion"][k].get(t) is None else result["diffusion"][k][t] * _NM2_PS_TO_1E5_CM2_S,
                 ".4f") for k in all_labels) + " |")
    lines += ["", "Plots: rdf.png, adf.png, cdf.png, bonded.png (multi-bead molecules), density.png, diffusion.png.", ""]
    return "\n".join(lines)
