"""vesin-torch neighbour lists against a brute-force numpy search over periodic images."""

import itertools

import numpy as np
import pytest
import torch

from cgkd.nn.neighbors import batch_neighbor_list, edge_vectors, neighbor_list


def _brute_force(pos, box, cutoff):
    """Set of (i, j, rounded shift vector) for all pairs i != j (or image pairs) within cutoff."""
    out = set()
    periodic = np.any(box != 0)
    images = list(itertools.product(range(-2, 3), repeat=3)) if periodic else [(0, 0, 0)]
    for s in images:
        shift = np.array(s, dtype=float) @ box if periodic else np.zeros(3)
        r = np.linalg.norm(pos[None, :, :] - pos[:, None, :] + shift, axis=-1)  # r[i, j]
        for i, j in zip(*np.nonzero(r < cutoff)):
            if i != j or s != (0, 0, 0):
                out.add((int(i), int(j), tuple(np.round(shift, 6))))
    return out


def _as_set(ei, sh):
    return {(int(i), int(j), tuple(np.round(s, 6))) for i, j, s in zip(ei[0].numpy(), ei[1].numpy(), sh.numpy())}


BOXES = {
    "triclinic": np.array([[1.0, 0.0, 0.0], [0.35, 0.9, 0.0], [-0.25, 0.3, 0.85]]),
    "cubic": np.eye(3) * 0.9,
    "none": np.zeros((3, 3)),
}


@pytest.mark.parametrize("name", list(BOXES))
@pytest.mark.parametrize("cutoff", [0.3, 0.55])  # 0.55 exceeds half the box height: several images
def test_matches_brute_force(name, cutoff):
    box = BOXES[name]
    rng = np.random.default_rng(0)
    pos = rng.random((25, 3)) @ (box if name != "none" else np.eye(3))
    pos += rng.normal(scale=0.3, size=pos.shape)  # some beads outside the box
    ei, sh = neighbor_list(torch.tensor(pos), torch.tensor(box), cutoff)
    assert ei.dtype == torch.int64 and sh.dtype == torch.float64
    expected = _brute_force(pos, box, cutoff)
    assert len(expected) > 10
    assert _as_set(ei, sh) == expected
    # float32 follows the positions
    ei32, sh32 = neighbor_list(torch.tensor(pos, dtype=torch.float32), torch.tensor(box, dtype=torch.float32), cutoff)
    assert sh32.dtype == torch.float32


def test_scripted_and_differentiable():
    scripted = torch.jit.script(neighbor_list)
    box = torch.tensor(BOXES["triclinic"], requires_grad=True)
    pos = torch.rand(20, 3, dtype=torch.float64, requires_grad=True)
    ei, sh = scripted(pos, box, 0.4)
    r = edge_vectors(pos, ei, sh).norm(dim=1)
    r.sum().backward()
    assert pos.grad is not None and box.grad is not None and float(box.grad.abs().sum()) > 0


def test_batched_lists_are_per_frame_lists_with_offsets():
    rng = np.random.default_rng(1)
    frames = [rng.random((12, 3)) for _ in range(3)]
    boxes = [BOXES["triclinic"], BOXES["none"], BOXES["cubic"]]
    pos = torch.tensor(np.concatenate(frames))
    batch = torch.repeat_interleave(torch.arange(3), 12)
    ei, sh = batch_neighbor_list(pos, torch.tensor(np.array(boxes)), batch, 3, 0.4)
    got = _as_set(ei, sh)
    expected = set()
    for g, (p, b) in enumerate(zip(frames, boxes)):
        expected |= {(i + 12 * g, j + 12 * g, s) for i, j, s in _brute_force(p, b, 0.4)}
    assert got == expected


def test_errors():
    pos = torch.rand(4, 3)
    with pytest.raises(ValueError, match="positions must have shape"):
        neighbor_list(torch.rand(4, 2), torch.eye(3), 0.5)
    with pytest.raises(ValueError, match="box must have shape"):
        neighbor_list(pos, torch.eye(2), 0.5)
    with pytest.raises(ValueError, match="cutoff must be positive"):
        neighbor_list(pos, torch.eye(3), 0.0)
    with pytest.raises(ValueError, match="box must have shape"):
        batch_neighbor_list(pos, torch.eye(3), torch.zeros(4, dtype=torch.int64), 1, 0.5)
    with pytest.raises(ValueError, match="batch must be sorted"):
        batch_neighbor_list(pos, torch.zeros(2, 3, 3), torch.tensor([0, 1, 0, 1]), 2, 0.5)
    with pytest.raises(ValueError, match="n_graphs"):
        batch_neighbor_list(pos, torch.zeros(1, 3, 3), torch.tensor([0, 0, 1, 1]), 1, 0.5)
    with pytest.raises(ValueError, match="batch must have shape"):
        batch_neighbor_list(pos, torch.zeros(1, 3, 3), torch.tensor([0, 0]), 1, 0.5)


@pytest.mark.parametrize("skin", [0.0, 0.15])
def test_kept_list_matches_brute_force_along_a_trajectory(skin):
    """The scripted NeighborList keeps its calculator between calls; with a skin it reuses its pairs.

    Moves small and large (beyond skin/2), a changed box and a changed bead count must all give exactly
    the pairs within the cutoff, as a fresh search does.
    """
    from cgkd.nn.neighbors import NeighborList

    module = torch.jit.script(NeighborList(0.4, skin))
    rng = np.random.default_rng(3)
    box = BOXES["triclinic"].copy()
    pos = rng.random((30, 3)) @ box
    vel = rng.normal(scale=0.02, size=pos.shape)
    for step in range(12):
        if step == 6:
            box = box * 1.05  # a barostat move
        if step == 9:
            pos, vel = pos[:25], vel[:25]  # another system on the same module
        ei, sh = module(torch.tensor(pos), torch.tensor(box))
        assert _as_set(ei, sh) == _brute_force(pos, box, 0.4), f"step {step}"
        pos = pos + vel * (4.0 if step == 3 else 1.0)  # step 3 jumps further than the skin


def test_saved_module_keeps_no_calculator(tmp_path):
    """A module that ran (and so built its calculator) is saved without it, its skin kept.

    vesin-torch pickles a calculator without its skin, so a saved one would search on every call.
    """
    from cgkd.nn.neighbors import NeighborList, forget_neighbor_lists

    module = torch.jit.script(NeighborList(0.4, 0.2))
    pos = torch.rand(10, 3, dtype=torch.float64)
    module(pos, torch.eye(3, dtype=torch.float64))
    assert module.calculator is not None
    forget_neighbor_lists(module)
    assert module.calculator is None
    torch.jit.save(module, str(tmp_path / "nl.pt"))
    loaded = torch.jit.load(str(tmp_path / "nl.pt"))
    assert loaded.calculator is None and loaded.skin == pytest.approx(0.2)
    ei, sh = loaded(pos, torch.eye(3, dtype=torch.float64))
    assert _as_set(ei, sh) == _brute_force(pos.numpy(), np.eye(3), 0.4)


def test_neighbor_list_module_errors():
    from cgkd.nn.neighbors import NeighborList

    with pytest.raises(ValueError, match="cutoff must be a positive number of nm, got 0"):
        NeighborList(0.0)
    with pytest.raises(ValueError, match="skin must be a non-negative number of nm, got -0.1"):
        NeighborList(0.5, -0.1)
