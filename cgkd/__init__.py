"""cgkd: coarse-grained potentials for OpenMM by knowledge distillation from teacher ensembles.

Units inside cgkd are OpenMM's: nanometre (nm), picosecond (ps), kJ/mol, atomic mass unit (amu,
g/mol) and kelvin (K). Forces are kJ/mol/nm. Public functions accept ``openmm.unit.Quantity``
where a physical value is expected and strip it with :func:`cgkd.units.strip`.

Layers (a module may import only from layers to its left):

    units -> io -> aa -> mapping -> data -> nn -> train -> kd -> export/openmm -> analysis -> cli

``aa`` (building and simulating all-atom systems) sits beside ``io``; torch is imported only from
``data`` on, and never by ``mapping`` or ``analysis``.
"""

__version__ = "0.1.0"
