"""cgkd: coarse-grained potentials for OpenMM by knowledge distillation from teacher ensembles.

Units inside cgkd are OpenMM's: nanometre (nm), picosecond (ps), kJ/mol, atomic mass unit (amu,
g/mol) and kelvin (K). Forces are kJ/mol/nm. Public functions accept ``openmm.unit.Quantity``
where a physical value is expected and strip it with :func:`cgkd.units.strip`.

Layers (a module may import only from layers to its left; docs/design.md has the contracts):

    units, keys, registry, errors, arrays, seeds, progress -> io -> parallel -> geometry -> topology -> aa -> mapping -> data -> nn -> train -> kd
        -> export/openmm -> analysis -> pipeline (and synthetic) -> cli

``geometry`` (minimum image, distances, angles, IUPAC dihedrals) and ``topology`` (the frozen CG or
atomistic topology with its bonded terms) are the floor every later layer reads. Torch is imported
only from ``nn`` on (``cgkd.nn.geometry`` holds the torch twins of ``cgkd.geometry``), never by
``mapping``, ``data`` or ``analysis``.

The verbs of the pipeline, in order, are attributes of this package, imported on first use (so that
``import cgkd`` and ``cgkd --help`` load neither torch nor OpenMM)::

    import cgkd
    spec = cgkd.load_spec("water")
    aa = cgkd.read_aa(cgkd.simulate(spec, size="test", out="aa.h5"))
    cg, report = cgkd.map_aa(aa)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: Public name -> module that defines it, in pipeline order.
_FACE = {
    # system spec and all-atom data
    "load_spec": "cgkd.io.spec",
    "simulate": "cgkd.aa.simulate",
    "read_aa": "cgkd.io.aa_h5",
    "load_external": "cgkd.io.external",
    # mapping to the CG system
    "Mapping": "cgkd.mapping",
    "map_aa": "cgkd.data.mapped",
    "Topology": "cgkd.topology",
    "CGData": "cgkd.data.cg_h5",
    "read_cg": "cgkd.data.cg_h5",
    "write_cg": "cgkd.data.cg_h5",
    # knowledge distillation
    "train_teachers": "cgkd.kd.teachers",
    "make_labels": "cgkd.kd.labels",
    "train_student": "cgkd.kd.students",
    # OpenMM
    "export_model": "cgkd.export.artefact",
    "create_system": "cgkd.openmm",
    "run_cg_md": "cgkd.openmm",
    # analysis and the whole job
    "compare": "cgkd.analysis",
    "run_pipeline": "cgkd.pipeline",
}

__all__ = list(_FACE)


def __getattr__(name: str):
    module = _FACE.get(name)
    if module is None:
        raise AttributeError(f"module 'cgkd' has no attribute {name!r}; the pipeline's verbs are {', '.join(__all__)}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
