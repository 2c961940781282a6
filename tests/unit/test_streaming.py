"""Datasets larger than memory (issue 16): the CG file written chunk by chunk, and training frames read from it in
chunks, shuffled by chunk, with the arrays of the in-memory set."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from cgkd import keys
from cgkd.data.cg_h5 import CGWriter, content_digest, data_digest, read_cg, write_cg
from cgkd.train.frames import FrameSet, StreamingFrameSet, frameset_from_cg
from test_kd import TINY, lj_fluid


@pytest.fixture(scope="module")
def cg_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "cg.h5"
    write_cg(path, lj_fluid(n_frames=30))
    return path


def test_streamed_batches_hold_the_in_memory_arrays(cg_file):
    ref = frameset_from_cg(read_cg(cg_file))
    fs = StreamingFrameSet(cg_file, chunk_frames=7)
    assert fs.n_frames == ref.n_frames == 30 and fs.n_beads == ref.n_beads
    for frames in ([3], [3, 4, 6], [5, 9, 20, 29]):  # inside one chunk and across chunks
        a, b = ref.batch(frames), fs.batch(frames)
        assert a.keys() == b.keys()
        for k in a:
            if k == "n_graphs":
                assert a[k] == b[k]
            else:
                torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=k)
    # without a generator: the order asked for, as FrameSet
    idx = [0, 8, 8, 15, 2, 29]
    got = torch.cat([b["frame"] for b in fs.batches(idx, 4)]).tolist()
    assert got == idx
    # shuffled by chunk: every requested frame once per request, each chunk's frames together
    idx = np.concatenate([np.arange(24), [3, 3, 17]])
    gen = torch.Generator().manual_seed(0)
    order = torch.cat([b["frame"] for b in fs.batches(idx, 5, generator=gen)]).numpy()
    assert Counter(order.tolist()) == Counter(idx.tolist())
    chunks = order // 7
    assert (np.diff(chunks) != 0).sum() == len(np.unique(chunks)) - 1  # chunk-major order
    assert len(fs._cache) <= 2  # at most two chunks held
    with pytest.raises(ValueError, match="chunk_frames must be a positive integer"):
        StreamingFrameSet(cg_file, chunk_frames=0)
    with pytest.raises(ValueError, match="frame indices must lie in 0..29"):
        fs.batch([30])


def test_streamed_batches_without_a_box(cg_file, tmp_path):
    from dataclasses import replace

    data = replace(read_cg(cg_file), box=None)
    write_cg(tmp_path / "nobox.h5", data)
    ref, fs = frameset_from_cg(data), StreamingFrameSet(tmp_path / "nobox.h5", chunk_frames=4)
    a, b = ref.batch([1, 6, 13]), fs.batch([1, 6, 13])  # across three chunks
    for k in (keys.POSITIONS, keys.BOX, keys.FORCES):
        torch.testing.assert_close(b[k], a[k], rtol=0, atol=0, msg=k)


def test_teachers_train_from_the_file_in_chunks(cg_file, tmp_path):
    from cgkd.kd import load_teachers, train_teachers
    from cgkd.kd.labels import predict
    from cgkd.train import TrainConfig

    cfg = TrainConfig(max_epochs=3, batch_size=6, lr=5e-3, early_stopping=0)
    info = train_teachers(cg_file, tmp_path / "t", n_members=1, preset=TINY, config=cfg, stream_chunk=8)
    log = info[0]
    assert log["epochs_run"] == 3 and np.isfinite(log["best_val"])
    (model,) = load_teachers(tmp_path / "t")
    data = read_cg(cg_file)
    f = predict(model, data.subset(np.arange(25, 30)))[keys.FORCE]
    assert np.all(np.isfinite(f))
    with pytest.raises(ValueError, match="stream_chunk must be an integer >= 0"):
        train_teachers(cg_file, tmp_path / "t2", n_members=1, preset=TINY, config=cfg, stream_chunk=-1)


def test_cg_writer_equals_write_cg_and_leaves_nothing_on_error(cg_file, tmp_path):
    data = read_cg(cg_file)
    assert data.time is None  # this dataset has no times: the writer is told so
    with CGWriter(tmp_path / "w.h5", data.topology, data.temperature, periodic=True, with_time=False,
                  attrs=data.attrs, chunk_frames=4) as w:
        for a in range(0, data.n_frames, 11):
            s = slice(a, a + 11)
            w.append(data.positions[s], data.forces[s], data.box[s])
    assert content_digest(tmp_path / "w.h5") == data_digest(data) == data_digest(read_cg(tmp_path / "w.h5"))
    with pytest.raises(ValueError, match="box is required"):
        with CGWriter(tmp_path / "bad.h5", data.topology, data.temperature, periodic=True, with_time=False) as w:
            w.append(data.positions[:2], data.forces[:2], None)
    assert not (tmp_path / "bad.h5").exists() and not list(tmp_path.glob("*.tmp*"))
