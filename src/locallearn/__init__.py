"""locallearn: training neural networks without end-to-end backpropagation."""

import os
import sys

__version__ = "0.1.0"

# OpenMP threads that sleep rather than spin while they wait: with another busy process on
# the machine, spinning intra-op threads slowed training 40-85x (engine/threads.py). Only
# effective before torch loads, and never over the user's own setting.
if "torch" not in sys.modules:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from locallearn.api import compare, train  # noqa: E402
from locallearn.engine.export import load_network  # noqa: E402

__all__ = ["__version__", "compare", "load_network", "train"]
