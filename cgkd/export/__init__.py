"""Self-describing TorchScript artefacts of CG potentials (layer export/openmm: may import units, io, data, nn).

A model file (``cgkd.nn.save_potential``) becomes an artefact with :func:`export_model`; any module
with the ``CGPotential.forward`` signature with :func:`export_potential`. Also holds
:class:`LennardJonesPair`, a reference pair potential with that signature, used for tests and as a
physics-based control model. Format details (``FORMAT``, ``METADATA_FILE``) are in ``cgkd.export.artefact``.
"""

from cgkd.export.artefact import export_atomistic, export_cg_potential, export_ensemble, export_model, export_potential, load_potential_artefact, read_metadata
from cgkd.export.reference import LennardJonesPair

__all__ = ["LennardJonesPair", "export_atomistic", "export_cg_potential", "export_ensemble", "export_model", "export_potential", "load_potential_artefact",
           "read_metadata"]
