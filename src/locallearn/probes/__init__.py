"""What a trained network learned: linear probes, neural collapse, filter quality."""

from locallearn.probes.collapse import nc1, nc2, nc3, nc4, neural_collapse
from locallearn.probes.filters import filter_quality, sparsity, variance_entropy
from locallearn.probes.linear import linear_probe, pool_features
from locallearn.probes.run import probe_run

__all__ = [
    "filter_quality",
    "nc1",
    "nc2",
    "nc3",
    "nc4",
    "neural_collapse",
    "pool_features",
    "probe_run",
    "linear_probe",
    "sparsity",
    "variance_entropy",
]
