"""One unit system: nm, ps, kJ/mol, amu, K. Every conversion factor is derived from openmm.unit."""

from __future__ import annotations

import numpy as np
import openmm.unit as u

#: Molar gas constant in kJ/mol/K (k_B * N_A), from openmm.unit.
KB = float((u.BOLTZMANN_CONSTANT_kB * u.AVOGADRO_CONSTANT_NA).value_in_unit(u.kilojoule_per_mole / u.kelvin))
#: kcal -> kJ.
KCAL_TO_KJ = float((1.0 * u.kilocalorie).value_in_unit(u.kilojoule))
#: Angstrom -> nm.
ANGSTROM_TO_NM = float((1.0 * u.angstrom).value_in_unit(u.nanometer))
#: eV -> kJ/mol.
EV_TO_KJ_PER_MOL = float((1.0 * u.elementary_charge * u.volt * u.AVOGADRO_CONSTANT_NA).value_in_unit(u.kilojoule_per_mole))
#: amu / nm^3 -> g/cm^3 (mass density).
AMU_PER_NM3_TO_G_PER_CM3 = float(
    (1.0 * u.dalton / u.AVOGADRO_CONSTANT_NA / u.nanometer**3).value_in_unit(u.gram / u.centimeter**3)
)

DISTANCE = u.nanometer
TIME = u.picosecond
ENERGY = u.kilojoule_per_mole
FORCE = u.kilojoule_per_mole / u.nanometer
MASS = u.dalton
TEMPERATURE = u.kelvin
PRESSURE = u.bar


def strip(value, unit, name: str):
    """Return ``value`` as a plain number or array in ``unit``.

    Parameters
    ----------
    value : float, np.ndarray or openmm.unit.Quantity
        A bare value is taken to be in ``unit`` already.
    unit : openmm.unit.Unit
        The cgkd unit for this quantity (e.g. ``cgkd.units.DISTANCE``).
    name : str
        The argument's name, used in error messages.
    """
    if value is None:
        return None
    if u.is_quantity(value):
        if not value.unit.is_compatible(unit):
            raise ValueError(f"{name} has unit {value.unit}, which cannot be converted to {unit}")
        value = value.value_in_unit(unit)
        if isinstance(value, (list, tuple)):
            value = np.asarray([v.value_in_unit(unit) if u.is_quantity(v) else v for v in value])
        return value
    return value


def kbt(temperature: float) -> float:
    """k_B T in kJ/mol for ``temperature`` in K."""
    return KB * float(strip(temperature, TEMPERATURE, "temperature"))
