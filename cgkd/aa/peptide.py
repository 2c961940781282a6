"""Capped peptides from a sequence, built from ideal internal coordinates (no download, no RDKit).

:func:`build_peptide` places the backbone atom by atom with the natural-extension reference frame
(NeRF): each atom from the three before it, a bond length, a bond angle and a dihedral. Standard
geometry (Engh & Huber, Acta Cryst. A47, 1991, rounded): N-CA 0.146, CA-C 0.152, C-N 0.133,
C=O 0.123 nm; angles N-CA-C 111, CA-C-N 116, C-N-CA 122 degrees; trans peptide bonds. C-beta is
put at the ideal L position computed from N, CA and C (the construction used by trRosetta and
ProteinMPNN for virtual C-beta), so every residue is an L amino acid. Hydrogens and side chains
beyond C-beta are placed from the residue's bond graph and relaxed by minimisation with the force
field (``amber14-all.xml`` by default); side chains other than Ala and Gly are placed roughly and
only become reasonable after that minimisation.

Residue and atom names follow the Amber/PDB convention OpenMM's force fields use: ``ACE`` and
``NME`` caps, standard residues in between.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u

#: Backbone geometry, nm and degrees (Engh & Huber 1991, rounded).
N_CA, CA_C, C_N, C_O, CH3_C, N_CH3 = 0.146, 0.152, 0.133, 0.123, 0.152, 0.146
ANGLE_N_CA_C, ANGLE_CA_C_N, ANGLE_C_N_CA = 111.0, 116.0, 122.0
BOND_H, BOND_CH = 0.101, 0.109


def nerf(a: np.ndarray, b: np.ndarray, c: np.ndarray, bond: float, angle: float, dihedral: float) -> np.ndarray:
    """Position of atom d with |cd| = bond, angle bcd = ``angle`` and dihedral abcd = ``dihedral`` (degrees).

    The dihedral follows the IUPAC sign convention (the one ``cgkd.geometry.dihedrals`` and OpenMM use).
    """
    theta, phi = np.radians(angle), np.radians(dihedral)
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    d2 = np.array([-bond * np.cos(theta), bond * np.sin(theta) * np.cos(phi), bond * np.sin(theta) * np.sin(phi)])
    return c + d2[0] * bc + d2[1] * m + d2[2] * n


def ideal_cbeta(n: np.ndarray, ca: np.ndarray, c: np.ndarray) -> np.ndarray:
    """The L-amino-acid C-beta position from backbone N, CA, C (nm in, nm out).

    Coefficients of the widely used virtual C-beta construction (fitted on protein structures in
    Angstrom); scaled here so the result is in nm for nm input.
    """
    b, cc = (ca - n) * 10.0, (c - ca) * 10.0
    a = np.cross(b, cc)
    return ca + (-0.58273431 * a + 0.56802827 * b - 0.54067466 * cc) / 10.0


def chirality(n: np.ndarray, ca: np.ndarray, c: np.ndarray, cb: np.ndarray) -> float:
    """Signed volume (CA->N) . ((CA->C) x (CA->CB)), nm^3: the same sign as the ideal L C-beta gives."""
    return float(np.dot(n - ca, np.cross(c - ca, cb - ca)))


def _methyl(top_atoms: dict, pos: dict, far: str, near: str, carbon: str, names: Sequence[str]) -> None:
    for name, dih in zip(names, (60.0, 180.0, 300.0)):
        if name in top_atoms:
            pos[name] = nerf(pos[far], pos[near], pos[carbon], BOND_CH, 109.5, dih)


def backbone_positions(sequence: Sequence[str], phi: float = -80.0, psi: float = 150.0) -> List[dict]:
    """Per residue (caps included) a dict atom name -> position (nm) for backbone, caps and C-beta.

    Parameters
    ----------
    sequence : sequence of str
        Residue names without caps, e.g. ``["ALA"]``.
    phi, psi : float, degrees
        Backbone dihedrals of every residue (the default is in the polyproline / beta region).
    """
    res: List[dict] = [dict() for _ in range(len(sequence) + 2)]
    res[0]["CH3"] = np.zeros(3)
    res[0]["C"] = np.array([CH3_C, 0.0, 0.0])
    # the three atoms before the next N: (a, b, c); the first dihedral is free (an off-axis helper point)
    a, b, c, dihedral = np.array([CH3_C + 0.1, 0.1, 0.0]), res[0]["CH3"], res[0]["C"], 180.0
    for k in range(1, len(sequence) + 1):
        r = res[k]
        r["N"] = nerf(a, b, c, C_N, ANGLE_CA_C_N, dihedral)           # psi of the residue before
        r["CA"] = nerf(b, c, r["N"], N_CA, ANGLE_C_N_CA, 180.0)         # omega: trans
        r["C"] = nerf(c, r["N"], r["CA"], CA_C, ANGLE_N_CA_C, phi)      # phi
        a, b, c, dihedral = r["N"], r["CA"], r["C"], psi
    nme = res[-1]
    nme["N"] = nerf(a, b, c, C_N, ANGLE_CA_C_N, dihedral)
    nme["C"] = nerf(b, c, nme["N"], N_CH3, ANGLE_C_N_CA, 180.0)
    # carbonyl O (cis to the next CA: O=C-N-CA dihedral 0 in a trans peptide) and amide H (trans to O)
    for k in range(len(res) - 1):
        nxt = res[k + 1]
        nxt_second = nxt.get("CA", nxt.get("C"))
        res[k]["O"] = nerf(nxt_second, nxt["N"], res[k]["C"], C_O, 123.0, 0.0)
        nxt["H"] = nerf(res[k]["O"], res[k]["C"], nxt["N"], BOND_H, 119.0, 180.0)
    for k in range(1, len(sequence) + 1):
        r = res[k]
        r["CB"] = ideal_cbeta(r["N"], r["CA"], r["C"])
        d = sum((r["CA"] - r[x]) / np.linalg.norm(r["CA"] - r[x]) for x in ("N", "C", "CB"))
        r["HA"] = r["CA"] + BOND_CH * d / np.linalg.norm(d)
    return res


def build_peptide(sequence: Sequence[str], forcefield: Sequence[str] = ("amber14-all.xml",), phi: float = -80.0,
                  psi: float = 150.0, minimize: bool = True) -> Tuple[app.Topology, np.ndarray]:
    """An ACE-capped, NME-capped peptide: its topology and positions (nm), minimised in vacuum.

    Parameters
    ----------
    sequence : sequence of str
        Residue names without caps, e.g. ``["ALA"]`` for alanine dipeptide (ACE-ALA-NME).
    forcefield : sequence of str
        Force-field files whose residue templates name the atoms (and that minimise the result).
    phi, psi : float, degrees
        Starting backbone dihedrals.
    minimize : bool
        Relax with the force field (needed for hydrogens and side chains beyond C-beta).

    Returns
    -------
    (openmm.app.Topology, np.ndarray shape=(n_atoms, 3) float64 nm)
    """
    names = ["ACE", *[str(s).upper() for s in sequence], "NME"]
    if len(names) < 3:
        raise ValueError(f"sequence must name at least one residue, got {list(sequence)!r}")
    ff = app.ForceField(*forcefield)
    tmpl_of = {}
    for k, name in enumerate(names):
        if name not in ff._templates:
            raise ValueError(f"residue {name!r} is not a residue template of {list(forcefield)}")
        tmpl_of[k] = ff._templates[name]
    bb = backbone_positions(names[1:-1], phi=phi, psi=psi)
    top = app.Topology()
    chain = top.addChain()
    atoms_of = []
    for k, name in enumerate(names):
        tmpl = tmpl_of[k]
        res = top.addResidue(name, chain, str(k + 1))
        atoms = {}
        for ta in tmpl.atoms:
            element = ff._atomTypes[ta.type].element
            atoms[ta.name] = top.addAtom(ta.name, element, res)
        for i, j in tmpl.bonds:
            top.addBond(atoms[tmpl.atoms[i].name], atoms[tmpl.atoms[j].name])
        atoms_of.append(atoms)
    # inter-residue peptide bonds
    for k in range(len(names) - 1):
        top.addBond(atoms_of[k]["C"], atoms_of[k + 1]["N"])
    # methyl hydrogens of the caps and of Ala's C-beta
    ace, nme = bb[0], bb[-1]
    ace["N_next"] = bb[1]["N"]
    _methyl(atoms_of[0], ace, "N_next", "C", "CH3", ("H1", "H2", "H3"))
    nme["C_prev"] = bb[-2]["C"]
    _methyl(atoms_of[-1], nme, "C_prev", "N", "C", ("H1", "H2", "H3"))
    for k in range(1, len(names) - 1):
        if "CB" in atoms_of[k]:
            _methyl(atoms_of[k], bb[k], "N", "CA", "CB", ("HB1", "HB2", "HB3"))
    for k in range(1, len(names) - 1):
        _place_beta_branch(names[k], bb[k])
    xyz = _fill_missing(top, atoms_of, bb)
    if minimize:
        # first relax the roughly placed atoms around the ideal ones (held by restraints), then everything
        placed = [atom.index for atoms, known in zip(atoms_of, bb) for name, atom in atoms.items() if name in known]
        system = ff.createSystem(top, nonbondedMethod=app.NoCutoff, constraints=None)
        hold = openmm.CustomExternalForce("k*((x-x0)^2+(y-y0)^2+(z-z0)^2)")
        for name in ("k", "x0", "y0", "z0"):
            (hold.addGlobalParameter if name == "k" else hold.addPerParticleParameter)(
                *((name, 1e5) if name == "k" else (name,)))
        for i in placed:
            hold.addParticle(i, xyz[i].tolist())
        system.addForce(hold)
        ctx = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        ctx.setPositions(xyz)
        openmm.LocalEnergyMinimizer.minimize(ctx, 1.0, 2000)
        ctx.setParameter("k", 0.0)
        openmm.LocalEnergyMinimizer.minimize(ctx, 1.0, 5000)
        xyz = ctx.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
    xyz = np.asarray(xyz, dtype=np.float64)
    for k in range(1, len(names) - 1):
        a = {at.name: at.index for at in list(top.residues())[k].atoms()}
        if "CB" in a and chirality(xyz[a["N"]], xyz[a["CA"]], xyz[a["C"]], xyz[a["CB"]]) * chirality(
                bb[k]["N"], bb[k]["CA"], bb[k]["C"], bb[k]["CB"]) <= 0:
            raise RuntimeError(f"residue {k} ({names[k]}) lost its L chirality during minimisation")
        if names[k] in BETA_BRANCHED and beta_configuration(names[k], xyz, a) != BETA_BRANCHED[names[k]][1]:
            raise RuntimeError(f"residue {k} ({names[k]}) lost the configuration of its C-beta during minimisation")
    return top, xyz - xyz.mean(axis=0)


#: Residues with a second stereocentre at C-beta: (first, second substituent by CIP priority order around CB,
#: with CA placed by its own priority), and the configuration of CB in the L amino acid (Thr 2S,3R; Ile 2S,3S).
#: Thr: OG1 > CA > CG2 > HB; Ile: CA > CG1 > CG2 > HB.
BETA_BRANCHED = {"THR": (("OG1", "CA", "CG2"), "R", "OG1", "CG2"), "ILE": (("CA", "CG1", "CG2"), "S", "CG1", "CG2")}


def _place_beta_branch(resname: str, r: dict) -> None:
    """Put the two heavy substituents and HB of a Thr or Ile C-beta so that CB has the L configuration.

    Both arrangements are built (the first substituent trans to N, the second at +-120 degrees) and the one
    whose CIP handedness matches is kept: the sign of det[p1 - CB, p2 - CB, p3 - CB] over the three highest
    priorities is compared with that of the S centre made by :func:`ideal_cbeta` (N > C > CB at CA).
    """
    if resname not in BETA_BRANCHED or "CB" not in r:
        return
    order, config, first, second = BETA_BRANCHED[resname]
    s_ref = np.sign(chirality(r["N"], r["CA"], r["C"], ideal_cbeta(r["N"], r["CA"], r["C"])))  # an S centre
    want = s_ref if config == "S" else -s_ref
    for sign in (1.0, -1.0):
        trial = dict(r)
        trial[first] = nerf(r["N"], r["CA"], r["CB"], 0.153, 110.0, 180.0)
        trial[second] = nerf(r["N"], r["CA"], r["CB"], 0.153, 110.0, 180.0 - sign * 120.0)
        trial["HB"] = nerf(r["N"], r["CA"], r["CB"], BOND_CH, 109.5, 180.0 + sign * 120.0)
        p1, p2, p3 = (trial[x] for x in order)
        if np.sign(np.dot(p1 - trial["CB"], np.cross(p2 - trial["CB"], p3 - trial["CB"]))) == want:
            r.update({x: trial[x] for x in (first, second, "HB")})
            return
    raise RuntimeError(f"could not place the C-beta branch of {resname}")  # pragma: no cover - one sign always fits


def beta_configuration(resname: str, xyz: np.ndarray, atoms: dict) -> str:
    """``"R"`` or ``"S"`` at C-beta of a Thr or Ile residue (``atoms``: name -> index into ``xyz``)."""
    order, _, _, _ = BETA_BRANCHED[resname]
    a = {k: xyz[atoms[k]] for k in ("N", "CA", "C", "CB", *order)}
    s_ref = np.sign(chirality(a["N"], a["CA"], a["C"], ideal_cbeta(a["N"], a["CA"], a["C"])))
    p1, p2, p3 = (a[x] - a["CB"] for x in order)
    return "S" if np.sign(np.dot(p1, np.cross(p2, p3))) == s_ref else "R"


def _fill_missing(top: app.Topology, atoms_of: list, bb: list) -> np.ndarray:
    """Positions for every atom: the placed ones, then the rest next to an already placed bonded atom."""
    n = top.getNumAtoms()
    xyz = np.full((n, 3), np.nan)
    for atoms, known in zip(atoms_of, bb):
        for name, atom in atoms.items():
            if name in known:
                xyz[atom.index] = known[name]
    nbrs = {i: [] for i in range(n)}
    for b in top.bonds():
        nbrs[b[0].index].append(b[1].index)
        nbrs[b[1].index].append(b[0].index)
    rng = np.random.default_rng(0)
    for _ in range(n):
        missing = [i for i in range(n) if np.isnan(xyz[i, 0])]
        if not missing:
            break
        for i in missing:
            anchor = [j for j in nbrs[i] if not np.isnan(xyz[j, 0])]
            if anchor:
                d = rng.normal(size=3)
                xyz[i] = xyz[anchor[0]] + 0.14 * d / np.linalg.norm(d)
    if np.isnan(xyz).any():
        raise RuntimeError("could not place every atom of the peptide")
    return xyz


__all__ = ["BETA_BRANCHED", "backbone_positions", "beta_configuration", "build_peptide", "chirality", "ideal_cbeta",
           "nerf"]
