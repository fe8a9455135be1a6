"""The default number of intra-op CPU threads of a run (``--threads`` unset).

Measured on the 2-core development machine (BENCHMARKS.md, "threads on a busy machine"):
intra-op threads of a small model barely help on an idle machine, and with one busy process
beside the run, the threads that spin-wait for each other make every step up to 40-85x
slower. So a small model (few multiply-adds per sample) trains on one thread, and larger
models keep torch's default, with OpenMP threads that sleep instead of spinning while they
wait (``OMP_WAIT_POLICY=PASSIVE``, set by ``locallearn/__init__.py`` before torch loads
unless the environment sets it). The choice depends on the model only, never on the load
of the moment, so the same command always trains on the same thread count: conv results
are bit-identical for one thread count, not across thread counts.
"""

from __future__ import annotations

import torch
from torch import nn

# Forward FLOPs per sample below which one thread is the default (cnn1d on MNIST-1D: ~0.1M;
# mlp 3x1000 on MNIST: ~5.6M; resnet20 on MNIST: ~60M).
SMALL_MODEL_FLOPS = 2e6
# torch's own default for this process (OMP_NUM_THREADS or the core count), read before any
# run changes it: a comparison's later runs choose from the same starting point.
TORCH_DEFAULT_THREADS = torch.get_num_threads()


def forward_flops(network: nn.Module, input_shape: tuple[int, ...]) -> float:
    """FLOPs of one sample's forward pass, counted by torch's FLOP counter."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = network.training
    network.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            network(torch.zeros(1, *input_shape))
    finally:
        network.train(was_training)
    return float(counter.get_total_flops())


def default_threads(network: nn.Module, input_shape: tuple[int, ...]) -> int:
    """One thread for a small model, torch's default otherwise."""
    if TORCH_DEFAULT_THREADS <= 1:
        return 1
    try:
        flops = forward_flops(network, input_shape)
    except Exception:  # a model the counter cannot run on a zero input: keep torch's choice
        return TORCH_DEFAULT_THREADS
    return 1 if flops < SMALL_MODEL_FLOPS else TORCH_DEFAULT_THREADS
