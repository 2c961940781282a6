"""Generate the capped-peptide templates in this folder with :func:`cgkd.aa.peptide.build_peptide`.

Each template is built from ideal internal coordinates, minimised in vacuum with amber14 and checked:
the written PDB must give a System with ``amber14-all.xml`` and every residue must be L. Run::

    python cgkd/systems/templates/make_peptides.py
"""

from __future__ import annotations

from pathlib import Path

import openmm.app as app
import openmm.unit as u

from cgkd.aa.peptide import build_peptide

HERE = Path(__file__).resolve().parent

#: output file -> residues between the ACE and NME caps
PEPTIDES = {"ace-ala-nme.pdb": ["ALA"], "ace-cln025-nme.pdb": "TYR TYR ASP PRO GLU THR GLY THR TRP TYR".split()}


def main() -> None:
    for fname, sequence in PEPTIDES.items():
        top, xyz = build_peptide(sequence)
        with open(HERE / fname, "w") as fh:
            app.PDBFile.writeFile(top, xyz * 10.0 * u.angstrom, fh, keepIds=True)
        pdb = app.PDBFile(str(HERE / fname))
        system = app.ForceField("amber14-all.xml").createSystem(pdb.topology, nonbondedMethod=app.NoCutoff)
        print(f"{fname}: ACE-{'-'.join(sequence)}-NME, {system.getNumParticles()} atoms, "
              f"{pdb.topology.getNumBonds()} bonds")


if __name__ == "__main__":
    main()
