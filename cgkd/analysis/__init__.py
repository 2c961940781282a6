"""AA vs CG analysis: RDF, ADF/CDF, bonded distributions, density, MSD/diffusion, metrics, report.

Layer: analysis (numpy, mdtraj, matplotlib only; never torch). May import units, io, geometry,
topology and data; nothing here imports nn, train, kd, export or openmm.
"""

from cgkd.analysis.angles import adf, cdf
from cgkd.analysis.bonded import bonded_distributions, bonded_values
from cgkd.analysis.frames import Frames, concat, load_frames
from cgkd.analysis.metrics import jensen_shannon, total_absolute_error
from cgkd.analysis.rdf import first_minimum, rdf
from cgkd.analysis.report import CompareSettings, compare
from cgkd.analysis.sampling import aa_sampling_report, integrated_autocorrelation_time, sampling_report
from cgkd.analysis.transport import density, diffusion_coefficient, msd, unwrap

__all__ = [
    "CompareSettings",
    "aa_sampling_report",
    "integrated_autocorrelation_time",
    "sampling_report",
    "Frames",
    "adf",
    "bonded_distributions",
    "bonded_values",
    "cdf",
    "compare",
    "concat",
    "density",
    "diffusion_coefficient",
    "first_minimum",
    "jensen_shannon",
    "load_frames",
    "msd",
    "rdf",
    "total_absolute_error",
    "unwrap",
]
