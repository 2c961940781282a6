"""Denoising: an ensemble trained on noisy force labels predicts forces closer to the truth than the
labels, and so does a student distilled from the ensemble mean.

A Lennard-Jones fluid (64 argon atoms, one particle per bead, NonbondedForce with a cutoff) is
simulated with OpenMM, so the true forces are known. Gaussian noise of standard deviation
``NOISE`` times the RMS force component is added to the force labels (mimicking the noise of
mapped forces). 3 teachers are trained on the noisy labels for a few epochs.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from cgkd import keys
from cgkd.data.cg_h5 import write_cg
from cgkd.kd import ensemble_errors, make_labels, read_labels, train_student, train_teachers
from cgkd.kd.labels import force_rmse
from cgkd.train import TrainConfig
from lj_fluid import lj_cg_data, simulate_lj

NOISE = 1.0  # noise std / RMS true force component
ARCH = dict(n_features=16, n_interactions=1, n_atom_layers=1, n_radial=12, cutoff=0.7)
CONFIG = TrainConfig(max_epochs=5, batch_size=8, lr=1e-2, early_stopping=0)


def lj_fluid(n_side: int = 4, n_frames: int = 100, stride: int = 25, temperature: float = 120.0, seed: int = 7):
    """Positions (F, N, 3) nm, true forces (F, N, 3) kJ/mol/nm and box length (nm) of LJ argon."""
    return simulate_lj(n_side, n_frames, stride, temperature, seed, cutoff=0.7, equilibration=500)


@pytest.mark.slow
def test_ensemble_and_student_denoise_force_labels(tmp_path):
    pos, true_f, box = lj_fluid()
    rms = float(np.sqrt(np.mean(true_f**2)))
    rng = np.random.default_rng(0)
    noisy = true_f + rng.normal(0.0, NOISE * rms, size=true_f.shape)
    data = lj_cg_data(pos, noisy, box)
    cg = tmp_path / "cg.h5"
    write_cg(cg, data)
    t0 = time.perf_counter()
    members = train_teachers(cg, tmp_path / "teachers", n_members=3, preset=ARCH, config=CONFIG)
    t_teachers = time.perf_counter() - t0
    make_labels(cg, tmp_path / "teachers")
    lab = read_labels(cg, [keys.MEAN_FORCES, keys.MEMBER_FORCES])
    noisy_err = force_rmse(noisy, true_f)
    mean_err = force_rmse(lab[keys.MEAN_FORCES], true_f)
    member_err = [force_rmse(m, true_f) for m in lab[keys.MEMBER_FORCES]]
    t0 = time.perf_counter()
    student = train_student(cg, tmp_path / "teachers", tmp_path / "student", force_target="mean", preset=ARCH, config=CONFIG)
    t_student = time.perf_counter() - t0
    test = np.asarray(json.loads((tmp_path / "teachers/split.json").read_text())["test"])
    from cgkd.kd.labels import predict
    from cgkd.nn.potential import load_potential

    student_f = predict(load_potential(tmp_path / "student/model.pt"), data)[keys.FORCE]
    student_err = force_rmse(student_f, true_f)
    report = {
        "rms_true_force": rms,
        "noisy_label_rmse": noisy_err,
        "member_rmse": member_err,
        "ensemble_mean_rmse": mean_err,
        "student_rmse": student_err,
        "student_rmse_test_frames": force_rmse(student_f[test], true_f[test]),
        "ensemble_mean_rmse_test_frames": force_rmse(lab[keys.MEAN_FORCES][test], true_f[test]),
        "student_vs_label_test": student["force_rmse_vs_label"],
        "errors_vs_noisy_mapped_test": ensemble_errors(cg, tmp_path / "teachers"),
        "seconds_teachers": t_teachers,
        "seconds_student": t_student,
        "seconds_per_epoch_member": [m["seconds_per_epoch"] for m in members],
    }
    print(json.dumps(report, indent=1))
    # the labels are off by NOISE * rms; the ensemble mean and the student must do much better,
    # and better than predicting zero force (error = rms)
    assert mean_err < 0.4 * noisy_err and mean_err < 0.4 * rms, report
    assert student_err < 0.4 * noisy_err and student_err < 0.4 * rms, report
    assert mean_err <= np.mean(member_err) + 1e-6
