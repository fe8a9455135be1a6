"""Graph neural networks from PyTorch Geometric layers: ``gcn``, ``sage``, ``gat``.

Every layer is one unit, so rules cut between layers as in every other model. A unit maps
node features (N, F) to (N, W): dropout on its input, the graph convolution, ReLU (none on
the last layer, which outputs the class scores). This is Kipf & Welling's two-layer GCN at
``--depth 2`` (they use width 16 and dropout 0.5; our default width is 64, chosen on Cora's
validation nodes).

The edges are not an input of ``forward``: a unit reads the graph bound to it with
``bind_graph`` (the engine binds the dataset's graph; a rule that adds nodes, like the
single-forward rule's virtual class nodes, binds its own). An unbound unit treats its rows
as isolated nodes, which is what shape probes and ``locallearn measure`` see.

``fresh_unit`` builds a new layer of a unit's kind for another input width (the
label-appending rule widens the first layer by the number of classes) or as a hidden layer
(the single-forward rule's last layer).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from locallearn.errors import UsageError
from locallearn.models.base import MODELS

GAT_HEADS = 4  # Velickovic et al. (2018) use 8 heads of 8 on Cora; 4 keeps width 64 = 4 x 16


class GraphUnit(nn.Module):
    """One graph layer: dropout, convolution over the bound edges, optional ReLU."""

    def __init__(self, conv: nn.Module, relu: bool, dropout: float) -> None:
        super().__init__()
        self.conv = conv
        self.relu = relu
        self.dropout = dropout
        self.edge_index: torch.Tensor | None = None  # set by bind_graph; not a weight
        self.num_nodes = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        edge_index = self.edge_index
        if edge_index is None:
            edge_index = torch.zeros(2, 0, dtype=torch.long, device=x.device)
        elif self.num_nodes != x.shape[0]:
            raise RuntimeError(
                f"a graph layer got {x.shape[0]} rows, but its graph has {self.num_nodes} nodes: "
                "a graph model runs on the whole graph at once"
            )
        x = F.dropout(x, self.dropout, self.training)
        out = self.conv(x, edge_index)
        return F.relu(out) if self.relu else out


def bind_graph(network: nn.Module, edge_index: torch.Tensor | None, num_nodes: int = 0) -> None:
    """Make every graph layer of ``network`` convolve over ``edge_index`` (None: unbind)."""
    for module in network.modules():
        if isinstance(module, GraphUnit):
            module.edge_index = edge_index
            module.num_nodes = num_nodes


def fresh_unit(unit: GraphUnit, in_channels: int, hidden_width: int | None = None) -> GraphUnit:
    """A newly initialised layer of ``unit``'s kind and dropout taking ``in_channels``
    features: with ``unit``'s width and ReLU, or a hidden layer (ReLU) of ``hidden_width``."""
    conv: Any = unit.conv
    kind = {"GCNConv": "gcn", "SAGEConv": "sage", "GATConv": "gat"}[type(conv).__name__]
    if hidden_width is not None:
        return GraphUnit(_conv(kind, in_channels, hidden_width, False), True, unit.dropout)
    heads = getattr(conv, "heads", 1)
    width = conv.out_channels * heads if kind == "gat" and conv.concat else conv.out_channels
    fresh = _conv(kind, in_channels, width, last=kind == "gat" and heads == 1)
    return GraphUnit(fresh, unit.relu, unit.dropout)


def is_graph_network(network: nn.Module) -> bool:
    return any(isinstance(m, GraphUnit) for m in network.modules())


def _conv(kind: str, fan_in: int, width: int, last: bool) -> nn.Module:
    # Imported here: PyTorch Geometric takes seconds to import, and only graph models need it.
    from torch_geometric.nn import GATConv, GCNConv, SAGEConv

    if kind == "gcn":
        return GCNConv(fan_in, width)
    if kind == "sage":
        return SAGEConv(fan_in, width, aggr="mean")
    if last:  # one averaged head gives the class scores (Velickovic et al., sec. 3.3)
        return GATConv(fan_in, width, heads=1)
    return GATConv(fan_in, width // GAT_HEADS, heads=GAT_HEADS)


def _graph_model(
    kind: str,
    input_shape: tuple[int, ...],
    classes: int,
    width: int,
    depth: int,
    dropout: float,
) -> nn.Sequential:
    if len(input_shape) != 1:
        raise UsageError(f"model {kind!r} takes node features (F,), got shape {input_shape}")
    if kind == "gat" and width % GAT_HEADS:
        raise UsageError(
            f"model 'gat' splits --width over {GAT_HEADS} heads; {width} is not a multiple "
            f"of {GAT_HEADS}"
        )
    if not 0 <= dropout < 1:
        raise UsageError(f"--dropout must be in [0, 1), got {dropout}")
    units, fan_in = [], input_shape[0]
    for i in range(depth):
        last = i == depth - 1
        out = classes if last else width
        units.append(GraphUnit(_conv(kind, fan_in, out, last), relu=not last, dropout=dropout))
        fan_in = out
    return nn.Sequential(*units)


def _register(kind: str, description: str) -> None:
    @MODELS.register(
        kind,
        description=description + ": --depth layers (the last gives the classes), --width units",
        options=("width", "depth", "dropout"),
        family="graph",
        ranks=(1,),
        input_hint="graph models run on graph datasets (cora, citeseer, pubmed, sbm)",
    )
    def build(
        input_shape: tuple[int, ...],
        classes: int,
        width: int = 64,
        depth: int = 2,
        dropout: float = 0.5,
    ) -> nn.Sequential:
        return _graph_model(kind, input_shape, classes, width, depth, dropout)


_register("gcn", "graph convolutional network (Kipf & Welling 2017, PyG GCNConv)")
_register("sage", "GraphSAGE, mean aggregator (Hamilton et al. 2017, PyG SAGEConv)")
_register(
    "gat", f"graph attention network, {GAT_HEADS} heads (Velickovic et al. 2018, PyG GATConv)"
)
