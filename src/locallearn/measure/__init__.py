"""Memory accounting, timing and parameter counts."""

from locallearn.measure.memory import SavedTensorMeter, peak_rss_bytes
from locallearn.measure.params import count_params, weights_sha256

__all__ = ["SavedTensorMeter", "count_params", "peak_rss_bytes", "weights_sha256"]
