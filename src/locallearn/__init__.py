"""locallearn: training neural networks without end-to-end backpropagation."""

__version__ = "0.1.0"

from locallearn.api import compare, train  # noqa: E402
from locallearn.engine.export import load_network  # noqa: E402

__all__ = ["__version__", "compare", "load_network", "train"]
