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
