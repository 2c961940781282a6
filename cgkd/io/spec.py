"""System specifications: composition, force field, thermodynamic state, protocol and CG mappings.

A spec is a YAML file (see ``docs/systems.md``) loaded into :class:`SystemSpec`; unknown keys are
rejected. Paths inside a spec (templates) are relative to the spec file's folder. The specs that ship
with cgkd are package data of ``cgkd.systems`` (``systems/`` at the repository root links there).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from cgkd.io.config import from_dict, read_yaml, to_dict

#: Folder with the specs that ship with cgkd: the package data of ``cgkd.systems`` (a folder on disk, since a
#: spec's templates are read by path; cgkd is never run from a zip file).
SYSTEMS_DIR = Path(str(files("cgkd.systems")))


@dataclass(frozen=True)
class MoleculeSpec:
    """One molecule kind. ``per_unit`` copies go into one formula unit (e.g. 2 urea per ChCl)."""

    residue: str  # residue template name in the force field (CHOL, UREA, CLA, HOH), or a label of a chain
    per_unit: int = 1
    template: str = ""  # PDB with one molecule and the force field's atom names (relative to spec)
    residues: List[str] = field(default_factory=list)  # residue names of a multi-residue template (a peptide)

    @property
    def residue_names(self) -> List[str]:
        """Residue names this molecule brings into the topology."""
        return list(self.residues) if self.residues else [self.residue]


@dataclass(frozen=True)
class SolventSpec:
    """Explicit solvent added around the solute with ``openmm.app.Modeller.addSolvent``."""

    model: str = "tip3p"  # water model name Modeller knows (tip3p, spce, tip4pew, tip5p, swm4ndp)
    padding: float = 1.0  # nm between the solute and the box edge
    ionic_strength: float = 0.0  # molar
    neutralize: bool = True
    positive_ion: str = "Na+"
    negative_ion: str = "Cl-"

    def __post_init__(self):
        if not self.padding > 0:
            raise ValueError(f"solvent.padding must be > 0 nm, got {self.padding}")
        if self.ionic_strength < 0:
            raise ValueError(f"solvent.ionic_strength must be >= 0 molar, got {self.ionic_strength}")

    @property
    def residue_names(self) -> List[str]:
        """Residue names the solvent may add: water and the two ions (OpenMM's names)."""
        ions = {"Na+": "NA", "K+": "K", "Li+": "LI", "Rb+": "RB", "Cs+": "CS", "Cl-": "CL", "Br-": "BR", "F-": "F",
                "I-": "I"}
        return ["HOH", ions.get(self.positive_ion, self.positive_ion), ions.get(self.negative_ion, self.negative_ion)]


@dataclass(frozen=True)
class NonbondedSpec:
    method: str = "PME"  # PME, CutoffPeriodic, NoCutoff
    cutoff: float = 1.0  # nm
    switch_distance: Optional[float] = None  # nm; None: no switch
    ewald_error_tolerance: float = 5e-4
    dispersion_correction: bool = True

    def __post_init__(self):
        if not self.cutoff > 0:
            raise ValueError(f"nonbonded.cutoff must be > 0 nm, got {self.cutoff}")
        if self.switch_distance is not None and not 0 < self.switch_distance < self.cutoff:
            raise ValueError(
                f"nonbonded.switch_distance must lie between 0 and the cutoff ({self.cutoff} nm) or be null, got "
                f"{self.switch_distance}")
        if not 0 < self.ewald_error_tolerance < 1:
            raise ValueError(f"nonbonded.ewald_error_tolerance must lie in (0, 1), got {self.ewald_error_tolerance}")


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
    temperature: Optional[float] = None  # K; overrides the spec's temperature for this size (a state that relaxes)

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
        if self.temperature is not None and not self.temperature > 0:
            raise ValueError(f"temperature must be > 0 K or null, got {self.temperature}")


@dataclass(frozen=True)
class BeadSpec:
    name: str  # bead name, unique inside its residue
    type: str  # bead type name (shared between beads of the same kind)
    atoms: List[str] = field(default_factory=lambda: ["*"])  # atom names; ["*"] = the whole residue
    weights: Optional[List[float]] = None  # position weights per atom (normalised); None: the mapping's center

    def __post_init__(self):
        if self.weights is not None:
            if self.atoms == ["*"]:
                raise ValueError(f"bead {self.name}: weights need the atoms listed by name, not '*'")
            if len(self.weights) != len(self.atoms):
                raise ValueError(f"bead {self.name}: {len(self.weights)} weights for {len(self.atoms)} atoms "
                                 f"{self.atoms}")


@dataclass(frozen=True)
class MappingSpec:
    center: str = "mass"  # "mass" or "geometry"
    residues: Dict[str, List[BeadSpec]] = field(default_factory=dict)  # residue name -> beads
    unmapped: List[str] = field(default_factory=list)  # residue names left out of the CG model (solvent, ions)
    # named collective dihedrals by bead names (one molecule), e.g. {phi: [C0, N1, CA, C1]}: analysed as
    # distributions and, for a pair named phi and psi, as a Ramachandran free-energy surface
    dihedrals: Dict[str, List[str]] = field(default_factory=dict)
    # improper priors by bead names (one molecule), e.g. [[N1, C1, CA, CB]]: the handedness at CA
    impropers: List[List[str]] = field(default_factory=list)

    def __post_init__(self):
        for name, beads in self.dihedrals.items():
            if len(beads) != 4:
                raise ValueError(f"dihedrals.{name}: expected 4 bead names, got {beads}")
        for k, beads in enumerate(self.impropers):
            if len(beads) != 4:
                raise ValueError(f"impropers[{k}]: expected 4 bead names, got {beads}")


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
    solvent: Optional[SolventSpec] = None  # explicit solvent around one solute molecule (peptides)
    # per pipeline preset name, Preset fields this system changes (e.g. longer CG runs for a peptide)
    presets: Dict[str, Dict[str, Any]] = field(default_factory=dict)
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
        if self.friction < 0:
            raise ValueError(f"friction must be >= 0 (1/ps), got {self.friction}")
        residues = [r for m in self.molecules for r in m.residue_names]
        if self.solvent is not None:
            residues += self.solvent.residue_names
            if self.nonbonded.method == "NoCutoff":
                raise ValueError("solvent needs a periodic box; nonbonded.method must be PME or CutoffPeriodic")
        for name, m in self.mappings.items():
            if m.center not in ("mass", "geometry"):
                raise ValueError(f"mapping {name}: center must be 'mass' or 'geometry', got {m.center!r}")
            both = sorted(set(m.residues) & set(m.unmapped))
            if both:
                raise ValueError(f"mapping {name}: residue(s) {both} are both mapped and listed in 'unmapped'")
            unknown = sorted((set(m.residues) | set(m.unmapped)) - set(residues))
            if unknown:
                raise ValueError(f"mapping {name} maps residue(s) {unknown} that are not molecules of the spec "
                                 f"{residues}")
        sw = self.nonbonded.switch_distance
        for size, p in self.sizes.items():
            if sw is not None and p.cutoff is not None and sw - (self.nonbonded.cutoff - p.cutoff) <= 0:
                raise ValueError(
                    f"sizes.{size}: cutoff {p.cutoff} nm shifts nonbonded.switch_distance ({sw} nm, "
                    f"{self.nonbonded.cutoff - sw:.3g} nm below the cutoff) to zero or below; use a larger size cutoff "
                    "or a switch_distance closer to the cutoff")

    def check_templates(self) -> None:
        """Refuse, before any MD, templates that are missing or whose atoms do not match the mappings.

        Every bead of every mapping must name atoms of its residue's template (``*`` takes all);
        an atom in two beads of one mapping is refused.
        """
        import openmm.app as app

        atoms = {}
        for m in self.molecules:
            path = self.template_path(m)
            if not path.is_file():
                raise FileNotFoundError(f"molecule {m.residue}: template {str(path)!r} does not exist")
            try:
                pdb = app.PDBFile(str(path))
            except Exception as exc:  # noqa: BLE001 - PDB parse errors come in several types
                raise ValueError(f"molecule {m.residue}: template {path} is not a readable PDB file ({exc})") from None
            found = [r.name for r in pdb.topology.residues()]
            if not m.residues:  # one residue, named by the spec (PDB files cut residue names to 3 characters)
                if len(found) != 1:
                    raise ValueError(f"molecule {m.residue}: template {path.name} holds residues {found}; list them "
                                     "under 'residues' for a multi-residue molecule")
                atoms[m.residue] = [a.name for a in pdb.topology.atoms()]
                continue
            if sorted(set(found)) != sorted(set(m.residues)):
                raise ValueError(f"molecule {m.residue}: template {path.name} holds residues {found}, the spec names "
                                 f"{m.residues}")
            for r in pdb.topology.residues():
                atoms.setdefault(r.name, [a.name for a in r.atoms()])
        for name, mapping in self.mappings.items():
            for res, beads in mapping.residues.items():
                if res not in atoms:
                    continue  # a solvent residue: its atoms come from the force field
                seen = {}
                for bead in beads:
                    if bead.atoms == ["*"]:
                        continue
                    missing = [a for a in bead.atoms if a not in atoms[res]]
                    if missing:
                        raise ValueError(f"mapping {name}, residue {res}, bead {bead.name}: atom(s) {missing} are not "
                                         f"in the template (its atoms: {atoms[res]})")
                    for a in bead.atoms:
                        if a in seen:
                            raise ValueError(f"mapping {name}, residue {res}: atom {a} is in beads {seen[a]} and "
                                             f"{bead.name}")
                        seen[a] = bead.name

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
    data = read_yaml(p) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{p}: a spec must be a mapping of keys, got {type(data).__name__}")
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
    "SolventSpec",
    "ProtocolSpec",
    "SystemSpec",
    "load_spec",
    "shipped_systems",
    "spec_from_yaml_text",
    "SYSTEMS_DIR",
]
