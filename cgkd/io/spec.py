"""System specifications: composition, force field, thermodynamic state, protocol and CG mappings.

A spec is a YAML file (see ``docs/systems.md``) loaded into :class:`SystemSpec`; unknown keys are
rejected. Paths inside a spec (templates) are relative to the spec file's folder. The specs that ship
with cgkd are package data of ``cgkd.systems`` (``systems/`` at the repository root links there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Dict, List, Optional

import yaml

from cgkd.io.config import from_dict, to_dict

#: Folder with the specs that ship with cgkd: the package data of ``cgkd.systems`` (a folder on disk, since a
#: spec's templates are read by path; cgkd is never run from a zip file).
SYSTEMS_DIR = Path(str(files("cgkd.systems")))


@dataclass(frozen=True)
class MoleculeSpec:
    """One molecule kind. ``per_unit`` copies go into one formula unit (e.g. 2 urea per ChCl)."""

    residue: str  # residue template name in the force field (CHOL, UREA, CLA, HOH)
    per_unit: int = 1
    template: str = ""  # PDB with one molecule and the force field's atom names (relative to spec)


@dataclass(frozen=True)
class NonbondedSpec:
    method: str = "PME"  # PME, CutoffPeriodic, NoCutoff
    cutoff: float = 1.0  # nm
    switch_distance: Optional[float] = None  # nm; None: no switch
    ewald_error_tolerance: float = 5e-4
    dispersion_correction: bool = True


@dataclass(frozen=True)
class ProtocolSpec:
    """How one size is built and run. Steps are MD steps of ``SystemSpec.timestep``."""

    units: int  # formula units in the box
    minimize_iterations: int = 500
    npt_steps: int = 5000  # NPT equilibration to density (skipped if pressure is None)
    nvt_steps: int = 2000  # NVT equilibration at the NPT-average box
    production_steps: int = 10000
    report_interval: int = 100  # steps between saved frames
    checkpoint_interval: int = 1000  # steps between checkpoints of the production run
    cutoff: Optional[float] = None  # nm; overrides nonbonded.cutoff for this size (tiny test boxes)

    def __post_init__(self):
        if self.units < 1:
            raise ValueError(f"units must be >= 1 formula unit, got {self.units}")
        for name in ("minimize_iterations", "npt_steps", "nvt_steps", "production_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("report_interval", "checkpoint_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 step, got {getattr(self, name)}")
        if self.cutoff is not None and self.cutoff <= 0:
            raise ValueError(f"cutoff must be > 0 nm or null, got {self.cutoff}")


@dataclass(frozen=True)
class BeadSpec:
    name: str  # bead name, unique inside its residue
    type: str  # bead type name (shared between beads of the same kind)
    atoms: List[str] = field(default_factory=lambda: ["*"])  # atom names; ["*"] = the whole residue


@dataclass(frozen=True)
class MappingSpec:
    center: str = "mass"  # "mass" or "geometry"
    residues: Dict[str, List[BeadSpec]] = field(default_factory=dict)  # residue name -> beads


@dataclass(frozen=True)
class SystemSpec:
    name: str
    forcefield: List[str]  # force-field XML files OpenMM ships (or paths relative to the spec)
    molecules: List[MoleculeSpec]
    temperature: float  # K
    sizes: Dict[str, ProtocolSpec]  # "quick", "default", "paper", ...
    mappings: Dict[str, MappingSpec]
    default_mapping: str
    description: str = ""
    pressure: Optional[float] = 1.0  # bar; None: NVT only at the packing density
    density: float = 1.0  # g/cm^3, initial packing density
    timestep: float = 0.002  # ps
    friction: float = 1.0  # 1/ps, Langevin
    constraints: Optional[str] = "HBonds"  # None, HBonds, AllBonds, HAngles
    rigid_water: bool = True
    nonbonded: NonbondedSpec = field(default_factory=NonbondedSpec)
    seed: int = 2024
    source: str = ""  # where the spec was loaded from (filled in by load_spec)

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 K, got {self.temperature}")
        if self.timestep <= 0:
            raise ValueError(f"timestep must be > 0 ps, got {self.timestep}")
        if self.default_mapping not in self.mappings:
            raise ValueError(
                f"default_mapping {self.default_mapping!r} is not one of the mappings {sorted(self.mappings)}"
            )
        if not self.molecules:
            raise ValueError("molecules must list at least one molecule")
        if self.pressure is not None and self.pressure <= 0:
            raise ValueError(f"pressure must be > 0 bar or null, got {self.pressure}")
        if self.density <= 0:
            raise ValueError(f"density must be > 0 g/cm^3, got {self.density}")
        if self.constraints not in (None, "HBonds", "AllBonds", "HAngles"):
            raise ValueError(f"constraints must be null, HBonds, AllBonds or HAngles, got {self.constraints!r}")
        if self.nonbonded.method not in ("PME", "CutoffPeriodic", "NoCutoff"):
            raise ValueError(f"nonbonded.method must be PME, CutoffPeriodic or NoCutoff, got {self.nonbonded.method!r}")
        for m in self.molecules:
            if m.per_unit < 1:
                raise ValueError(f"molecule {m.residue}: per_unit must be >= 1, got {m.per_unit}")
        for m in self.mappings.values():
            if m.center not in ("mass", "geometry"):
                raise ValueError(f"mapping center must be 'mass' or 'geometry', got {m.center!r}")

    @property
    def folder(self) -> Path:
        return Path(self.source).parent if self.source else SYSTEMS_DIR

    def size(self, name: str) -> ProtocolSpec:
        if name not in self.sizes:
            raise ValueError(f"size {name!r} is not defined for system {self.name!r}; available: {sorted(self.sizes)}")
        return self.sizes[name]

    def mapping(self, name: Optional[str] = None) -> MappingSpec:
        name = name or self.default_mapping
        if name not in self.mappings:
            raise ValueError(f"mapping {name!r} is not defined for system {self.name!r}; available: {sorted(self.mappings)}")
        return self.mappings[name]

    def template_path(self, molecule: MoleculeSpec) -> Path:
        return (self.folder / molecule.template).resolve()

    def to_yaml(self) -> str:
        d = to_dict(self)
        d.pop("source", None)
        return yaml.safe_dump(d, sort_keys=False)


def shipped_systems() -> list:
    """Names of the specs that ship with cgkd (``load_spec(name)`` loads each)."""
    return sorted(x.stem for x in SYSTEMS_DIR.glob("*.yaml"))


def load_spec(path_or_name: str | Path) -> SystemSpec:
    """Load a spec from a YAML path, or by name from the specs shipped with cgkd (:func:`shipped_systems`).

    A path that exists wins over a shipped name; the spec's ``source`` is the resolved path of its file.
    """
    p = Path(path_or_name)
    if not p.is_file():
        cand = SYSTEMS_DIR / f"{path_or_name}.yaml"
        if cand.is_file():
            p = cand
        else:
            raise FileNotFoundError(
                f"spec {str(path_or_name)!r} is neither a file nor a shipped system {shipped_systems()}")
    with open(p) as fh:
        data = yaml.safe_load(fh) or {}
    data["source"] = str(p.resolve())
    return from_dict(SystemSpec, data, where=p.name)


def spec_from_yaml_text(text: str) -> SystemSpec:
    """Rebuild a spec from the YAML embedded in a data file."""
    return from_dict(SystemSpec, yaml.safe_load(text), where="embedded spec")


__all__ = [
    "BeadSpec",
    "MappingSpec",
    "MoleculeSpec",
    "NonbondedSpec",
    "ProtocolSpec",
    "SystemSpec",
    "load_spec",
    "shipped_systems",
    "spec_from_yaml_text",
    "SYSTEMS_DIR",
]
