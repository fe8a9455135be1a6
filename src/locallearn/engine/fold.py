"""An evaluation view of a network with each eval-mode BatchNorm folded into its conv.

In eval mode a BatchNorm is a per-channel affine map, ``(z - mean) / sqrt(var + eps) * gamma
+ beta``, so a conv whose only consumer is that BatchNorm equals one conv with rescaled
weights and a bias: the same function up to float rounding, with one pass over the
activations fewer (BatchNorm was 9% of resnet20's eval forward in a CPU profile; the view
as a whole: BENCHMARKS.md, "evaluation speed").

The folded 2-D convs are kept in channels_last memory layout and 4-D inputs are converted to
it: oneDNN's convolutions at resnet20's 16-32 channels run faster on NHWC than on NCHW (the
same sums in another order: float rounding again; measured in the same section).

The network is traced with torch.fx once; the traced module shares every other layer with
the network (so their weights are always the live ones) and holds one new conv for each
folded pair, whose weights ``refresh`` recomputes from the live conv and BatchNorm before
each evaluation (about a millisecond for resnet20, against a 0.3-1 s trace). Training never
sees the view. A network fx cannot trace (data-dependent control flow) or with nothing to
fold gives None: it is evaluated as it is.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

_PAIRS = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}


class BatchNormFold:
    """The folded evaluation view of one network (see the module docstring)."""

    def __init__(
        self,
        network: nn.Module,
        module: fx.GraphModule,
        pairs: list[tuple[nn.Module, nn.Module, nn.Module]],
        channels_last: bool = True,
    ) -> None:
        self.network = network
        self.module = module
        self.pairs = pairs  # (folded conv in the view, live conv, live BatchNorm)
        self._layout = _layout(network)
        # NHWC where every folded conv is 2-D (a 4-D input throughout).
        self.channels_last = channels_last and all(isinstance(c, nn.Conv2d) for _, c, _ in pairs)
        if self.channels_last:
            for folded, _, _ in pairs:
                folded.to(memory_format=torch.channels_last)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output for ``x`` (eval mode), through the folded view."""
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.module(x)

    @classmethod
    def of(cls, network: nn.Module, channels_last: bool = True) -> BatchNormFold | None:
        """The view of ``network``, or None where nothing folds or fx cannot trace it."""
        if not any(type(m) in _PAIRS.values() for m in network.modules()):
            return None  # the common case (MLPs, cnn1d): no trace at all
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traced = fx.symbolic_trace(network)
        except Exception:  # any failure of the tracer means "evaluate unfolded"
            return None
        pairs = _fold(traced)
        if not pairs:
            return None
        view = cls(network, traced, pairs, channels_last)
        view.refresh()
        return view

    def stale(self) -> bool:
        """Whether the network's modules changed since the trace (a rule grew or replaced
        a layer): the view must then be traced again."""
        return _layout(self.network) != self._layout

    @torch.no_grad()
    def refresh(self) -> BatchNormFold:
        """The view (callable), its folded convs recomputed from the live weights and
        statistics."""
        for folded, conv, bn in self.pairs:
            assert bn.running_mean is not None and bn.running_var is not None
            weight, bias = fuse_conv_bn_weights(
                conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias
            )
            folded.weight.copy_(weight)  # keeps the folded weight's memory layout
            folded.bias.copy_(bias)
        return self


def _fold(traced: fx.GraphModule) -> list[tuple[nn.Module, nn.Module, nn.Module]]:
    """Replace, in ``traced``, each conv -> BatchNorm pair by one new conv; the pairs."""
    modules = dict(traced.named_modules())
    calls: dict[str, int] = {}
    for node in traced.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs = []
    for node in list(traced.graph.nodes):
        if node.op != "call_module" or not node.args or not isinstance(node.args[0], fx.Node):
            continue
        prev, bn = node.args[0], modules[node.target]
        if prev.op != "call_module" or len(prev.users) != 1:
            continue  # the conv's output feeds something besides the BatchNorm
        conv = modules[prev.target]
        if _PAIRS.get(type(conv)) is not type(bn) or not bn.track_running_stats:
            continue
        if bn.running_mean is None or calls[prev.target] > 1 or calls[node.target] > 1:
            continue  # a layer called twice would see the other call's fold
        folded = copy.deepcopy(conv)
        if folded.bias is None:
            like = conv.weight
            folded.bias = nn.Parameter(like.new_zeros(conv.out_channels))
        folded.requires_grad_(False)
        # Only the view's own containers are changed: fx made them, the layers are shared.
        parent, _, name = prev.target.rpartition(".")
        setattr(traced.get_submodule(parent) if parent else traced, name, folded)
        node.replace_all_uses_with(prev)
        traced.graph.erase_node(node)
        pairs.append((folded, conv, bn))
    if pairs:
        traced.delete_all_unused_submodules()
        traced.recompile()
    return pairs


def _layout(network: nn.Module) -> tuple[int, ...]:
    return tuple(id(m) for m in network.modules())
