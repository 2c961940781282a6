"""Knowledge distillation: teacher ensembles (``teachers``), ensemble labels (``labels``), students
(``students``), named KD strategies (``strategies``), Born-Again generations (``generations``) and the
fine-tuning / bias-aware multi-fidelity workflows (``workflows``).

Layer rule: ``cgkd.kd`` imports from ``cgkd.train``, ``cgkd.nn``, ``cgkd.data``, ``cgkd.io`` and below;
never from ``cgkd.export``, ``cgkd.openmm``, ``cgkd.analysis`` or ``cgkd.cli``.
"""

from cgkd.kd.generations import born_again_generations
from cgkd.kd.labels import ensemble_errors, make_labels, read_labels
from cgkd.kd.students import train_student
from cgkd.kd.teachers import build_potential, load_teachers, train_teachers
from cgkd.kd.workflows import fine_tune, multi_fidelity

__all__ = ["train_teachers", "load_teachers", "build_potential", "make_labels", "read_labels", "ensemble_errors", "train_student",
           "born_again_generations", "fine_tune", "multi_fidelity"]
