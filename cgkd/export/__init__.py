"""Self-describing TorchScript artefacts of CG potentials (layer export/openmm: may import units, io, data, nn).

Also holds :class:`LennardJonesPair`, a reference pair potential with the ``CGPotential.forward``
signature, used for tests and as a physics-based control model.
"""

from cgkd.export.artefact import (
    FORMAT,
    FORMAT_VERSION,
    METADATA_FILE,
    export_cg_potential,
    export_model,
    export_potential,
    load_potential_artefact,
    normalize_bonded_priors,
    read_metadata,
    type_masses_from_data,
)
from cgkd.export.reference import LennardJonesPair

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "METADATA_FILE",
    "LennardJonesPair",
    "export_cg_potential",
    "export_model",
    "export_potential",
    "load_potential_artefact",
    "normalize_bonded_priors",
    "read_metadata",
    "type_masses_from_data",
]
