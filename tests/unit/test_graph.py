"""Angles and dihedrals derived from a CG bond graph."""

import numpy as np
import pytest

from cgkd.data.graph import angles_from_bonds, dihedrals_from_bonds


def test_angles_and_dihedrals_from_a_branched_graph():
    # 0-1-2-3 chain with a branch 1-4, plus a separate 3-ring 5-6-7
    bonds = [[0, 1], [1, 2], [2, 3], [1, 4], [5, 6], [6, 7], [7, 5]]
    angles = angles_from_bonds(bonds)
    assert {tuple(a) for a in angles} == {(0, 1, 2), (0, 1, 4), (2, 1, 4), (1, 2, 3), (5, 6, 7), (6, 5, 7), (5, 7, 6)}
    dih = dihedrals_from_bonds(bonds)
    assert {tuple(d) for d in dih} == {(0, 1, 2, 3), (3, 2, 1, 4)}
    assert angles.dtype == np.int64 and angles_from_bonds(np.zeros((0, 2))).shape == (0, 3)
    with pytest.raises(ValueError, match="self bond"):
        angles_from_bonds([[2, 2]])
