"""Generate the one-molecule PDB templates in this folder from OpenMM force-field residue templates.

No RDKit: atoms are placed from the residue's bond graph, relaxed with a soft custom force field
(harmonic bonds + soft repulsion between atoms more than two bonds apart), then minimised in vacuum
with the real force field. Each template is checked with ``ForceField.createSystem`` on a
``Modeller`` topology. Run from anywhere::

    python cgkd/systems/templates/make_templates.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u

HERE = Path(__file__).resolve().parent

#: output file -> (force-field files, residue name)
TEMPLATES = {
    "chol.pdb": (["charmm36.xml", "charmm36/water.xml"], "CHOL"),
    "urea.pdb": (["charmm36.xml", "charmm36/water.xml"], "UREA"),
    "cla.pdb": (["charmm36.xml", "charmm36/water.xml"], "CLA"),
    "hoh.pdb": (["amber14/tip3pfb.xml"], "HOH"),
}


def _residue_template(ff: app.ForceField, name: str):
    if name not in ff._templates:
        raise ValueError(f"residue {name!r} is not a template of the force field")
    return ff._templates[name]


def _element(ff: app.ForceField, atom_type: str):
    return ff._atomTypes[atom_type].element


def _topology(ff: app.ForceField, resname: str) -> app.Topology:
    tmpl = _residue_template(ff, resname)
    top = app.Topology()
    chain = top.addChain()
    res = top.addResidue(resname, chain)
    atoms = [top.addAtom(a.name, _element(ff, a.type), res) for a in tmpl.atoms]
    for i, j in tmpl.bonds:
        top.addBond(atoms[i], atoms[j])
    return top


def _bond_length(e1, e2) -> float:
    return 0.10 if "H" in (e1.symbol, e2.symbol) else 0.145


def _initial_positions(top: app.Topology, rng: np.random.Generator) -> np.ndarray:
    """Breadth-first placement along the bond graph, then a soft relaxation."""
    atoms = list(top.atoms())
    n = len(atoms)
    nbrs = {i: [] for i in range(n)}
    for b in top.bonds():
        nbrs[b[0].index].append(b[1].index)
        nbrs[b[1].index].append(b[0].index)
    pos = np.zeros((n, 3))
    placed = {0}
    queue = [0]
    while queue:
        i = queue.pop(0)
        for j in nbrs[i]:
            if j in placed:
                continue
            d = rng.normal(size=3)
            pos[j] = pos[i] + _bond_length(atoms[i].element, atoms[j].element) * d / np.linalg.norm(d)
            placed.add(j)
            queue.append(j)
    if n == 1:
        return pos
    # soft relaxation: harmonic bonds, 1-3 distances and repulsion beyond
    system = openmm.System()
    for a in atoms:
        system.addParticle(a.element.mass)
    bonds = openmm.HarmonicBondForce()
    pairs13 = set()
    for b in top.bonds():
        i, j = b[0].index, b[1].index
        bonds.addBond(i, j, _bond_length(b[0].element, b[1].element), 2e5)
    for i in range(n):
        for j in nbrs[i]:
            for k in nbrs[i]:
                if j < k:
                    pairs13.add((j, k))
    for j, k in pairs13:
        r = 1.65 * max(_bond_length(atoms[j].element, atoms[j].element), 0.1)
        bonds.addBond(j, k, r, 5e4)
    system.addForce(bonds)
    rep = openmm.CustomBondForce("1e3*step(0.3-r)*(0.3-r)^2")
    bonded = {tuple(sorted((b[0].index, b[1].index))) for b in top.bonds()} | pairs13
    for i in range(n):
        for j in range(i + 1, n):
            if (i, j) not in bonded:
                rep.addBond(i, j, [])
    system.addForce(rep)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(pos)
    openmm.LocalEnergyMinimizer.minimize(ctx, 1e-3, 5000)
    return ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)


def make(ff_files: list[str], resname: str, seed: int = 0) -> tuple[app.Topology, np.ndarray, float]:
    """Return topology, positions (n, 3) nm and the vacuum potential energy (kJ/mol) of one molecule."""
    ff = app.ForceField(*ff_files)
    top = _topology(ff, resname)
    pos = _initial_positions(top, np.random.default_rng(seed))
    modeller = app.Modeller(top, pos * u.nanometer)
    system = ff.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff, constraints=None, rigidWater=False)
    ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    ctx.setPositions(modeller.positions)
    openmm.LocalEnergyMinimizer.minimize(ctx, 1e-2, 20000)
    state = ctx.getState(getPositions=True, getEnergy=True)
    pos = state.getPositions(asNumpy=True).value_in_unit(u.nanometer)
    pos = pos - pos.mean(axis=0)
    energy = state.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole)
    return modeller.topology, pos, energy


def main() -> None:
    for fname, (ff_files, resname) in TEMPLATES.items():
        top, pos, energy = make(ff_files, resname)
        with open(HERE / fname, "w") as fh:
            app.PDBFile.writeFile(top, pos * 10.0 * u.angstrom, fh, keepIds=True)
        # check: the written file is recognised by the force field
        pdb = app.PDBFile(str(HERE / fname))
        ff = app.ForceField(*ff_files)
        system = ff.createSystem(app.Modeller(pdb.topology, pdb.positions).topology, nonbondedMethod=app.NoCutoff)
        print(f"{fname}: {resname}, {system.getNumParticles()} atoms, vacuum energy {energy:.1f} kJ/mol")


if __name__ == "__main__":
    main()
