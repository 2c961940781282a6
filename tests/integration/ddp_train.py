"""Driver for test_ddp.py: train one small potential with cgkd.train.fit; run alone or under torchrun.

usage: python ddp_train.py CG.h5 OUT_DIR MAX_EPOCHS
"""

import sys
from pathlib import Path

import torch

from cgkd.data.cg_h5 import read_cg
from cgkd.kd.teachers import build_potential
from cgkd.train import TrainConfig, distributed, fit
from cgkd.train.checkpoint import seeded
from cgkd.train.frames import frameset_from_cg

TINY = dict(n_features=8, n_interactions=1, n_atom_layers=1, n_radial=6, cutoff=0.45)

if __name__ == "__main__":
    cg, out, epochs = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    distributed.init_from_env("cpu")
    data = read_cg(cg)
    # 16 training frames in batches of 5: 5, 5, 5, 1 (on two ranks the last leaves one rank a stand-in frame)
    cfg = TrainConfig(max_epochs=epochs, batch_size=5, lr=5e-3, dtype="float64", early_stopping=0, seed=3, threads=1)
    with seeded(cfg.seed):
        pot = build_potential(data, "hipnn", TINY, range(16))
    frames = frameset_from_cg(data, dtype=torch.float64)
    res = fit(pot, frames, frames, cfg, out, train_indices=range(16), val_indices=range(16, 23))
    if distributed.is_main():
        torch.save({"state": res.model.state_dict(), "best_val": res.best_val,
                    "world_size": distributed.world_size()}, out / "final.pt")
