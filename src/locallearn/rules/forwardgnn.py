"""ForwardGNN: forward learning of graph neural networks (Park et al., ICLR 2024).

Every layer of a graph model learns from its own forward pass, layer after layer, so only
one layer's activations are ever alive and memory stays flat as the network deepens.

``sf`` (single forward, sec. 3.2) adds one *virtual node* per class, with random features,
joined in both directions to the training nodes of that class. Each layer normalises its
input rows, convolves real and virtual nodes together, and scores a node against each class
by the similarity of its embedding to that class's virtual-node embedding; the loss is the
cross-entropy of those scores (over a temperature) on the training nodes. Prediction sums
the layers' softmax scores.

``ff`` on graphs (sec. 3.1, the forward-forward variants): a layer's goodness
:math:`G = \\|h\\|^2 / d` (the mean square of its d units, as the authors' code
computes it) should exceed the threshold :math:`\\theta = 2` on positive data and stay
below it on negative data (binary cross-entropy of :math:`G - \\theta`). Negatives come
from *label appending* (every node's features get a one-hot label appended: the true label
on training nodes for positives, a random wrong one for negatives, uniform 1/C on the other
nodes) or from *virtual nodes* (the training nodes are joined to their own class's virtual
node for positives, to a random wrong class's for negatives). Prediction tries every label
(or joins every node to each class's virtual node) and takes the class of largest goodness
summed over layers.

Choices the paper leaves open, and ours:

- Normalisation: each layer's input rows are divided by their L2 norm (plus 1e-8); the
  first layer's input too, as the authors' code does.
- Virtual-node features: standard normal, drawn once when the rule is built (from the run
  seed) and kept in the checkpoint; their edges are untyped (a GCN/SAGE/GAT layer sees them
  like every other edge; the paper's typed edges are for relational convolutions).
- Similarity: the dot product of the embeddings, divided by ``--temperature``.
- Layers: the paper's networks are hidden layers of one width. sf keeps the model's layers
  but turns its class layer into one more hidden layer (ReLU, the model's width): every
  layer is then an embedding compared with the virtual nodes. ff, as our ff on fully
  connected networks, trains the hidden layers only and drops the output layer (a
  goodness of the ReLU-free class layer misled prediction: validation accuracy fell below
  chance once it trained, on sbm).
- Schedule: layer after layer, each layer to early stopping on validation accuracy with
  its best state restored (``engine.layerwise``), by default with patience 20 (the rule's
  recipe; ``--patience`` sets another) and at most ``--epochs`` epochs per layer.
  Prediction during training uses the layers trained so far.
- Defaults chosen on Cora's validation nodes (gcn, depth 2, width 64, seed 0; final val
  accuracy): the class layer as a hidden layer 0.762 vs kept 0.752, temperature 0.5 0.752
  vs 1.0 0.732 and 0.2 0.756, early stopping with patience 20 0.778 vs the 60 epochs split
  evenly 0.762; width 128 (0.754), weight decay 5e-4 (0.754), dropout 0 (0.736 at
  temperature 1) and edges only towards the virtual nodes (0.738) did not help.
- ff: the loss is the mean over the training nodes of positives and negatives, with one
  fresh wrong label per training node each step; in prediction the training nodes keep
  their own label (or virtual node) and every other node tries each class in turn. A
  layer sees positives and negatives as one graph, the disjoint union of the two copies
  (so a resting layer's forward pass needs no special case).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from locallearn.errors import UsageError, unknown_choice
from locallearn.models.gnn import GraphUnit, bind_graph, fresh_unit
from locallearn.recipe import Recipe
from locallearn.rules.base import RULES, Rule, Signal, Stage
from locallearn.rules.schedule import LayerAfterLayer

EPS = 1e-8
FF_THRESHOLD = 2.0  # the paper's theta
FF_NEGATIVES = ("label", "virtual")


def l2_normalise(h: torch.Tensor) -> torch.Tensor:
    return h / (h.norm(dim=1, keepdim=True) + EPS)


def graph_units(network: nn.Sequential, rule: str) -> list[GraphUnit]:
    units = list(network)
    if not units or not all(isinstance(u, GraphUnit) for u in units):
        raise UsageError(
            f"rule {rule!r} trains graph models layer by layer (--model gcn, sage or gat); this "
            "network's units are " + ", ".join(type(u).__name__ for u in units)
        )
    return units  # type: ignore[return-value]


def _out_width(unit: GraphUnit) -> int:
    conv: Any = unit.conv
    return (
        conv.out_channels * getattr(conv, "heads", 1)
        if getattr(conv, "concat", False)
        else conv.out_channels
    )


def _in_width(unit: GraphUnit) -> int:
    conv: Any = unit.conv
    return conv.in_channels


def virtual_edges(nodes: torch.Tensor, classes_of: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Edges, both ways, between each of ``nodes`` and the virtual node of its class
    (virtual node c is node ``num_nodes + c``)."""
    virtual = num_nodes + classes_of
    return torch.cat([torch.stack([nodes, virtual]), torch.stack([virtual, nodes])], dim=1)


class NormalisedLayer(nn.Module):
    """A graph layer whose input rows are L2-normalised first."""

    def __init__(self, unit: GraphUnit) -> None:
        super().__init__()
        self.unit = unit

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.unit(l2_normalise(h))


class VirtualNodeLoss(Signal):
    r"""Cross-entropy of :math:`s_{vc} = h_v \cdot h_{\mathrm{virtual}(c)} / \tau` over the
    classes c, on the training nodes (labels of other nodes are ignored)."""

    def __init__(self, classes: int, temperature: float) -> None:
        super().__init__()
        self.classes = classes
        self.temperature = temperature

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        real, virtual = h[: -self.classes], h[-self.classes :]
        return real @ virtual.t() / self.temperature  # (N, C)

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.scores(h), y)


class VirtualNodes(nn.Module):
    """The virtual nodes' input features: a buffer, so the checkpoint keeps them."""

    def __init__(self, classes: int, features: int) -> None:
        super().__init__()
        self.register_buffer("features", torch.randn(classes, features))


class SingleForward(LayerAfterLayer, Rule):
    r"""Layer :math:`l` minimises
    :math:`\mathrm{CE}(\mathrm{softmax}_c(h^l_v \cdot h^l_{c} / \tau), y_v)` over the
    training nodes v, where :math:`h^l = \mathrm{GNN}_l(\mathrm{norm}(\bar h^{l-1}))` on the
    graph with one virtual node per class (joined to that class's training nodes) and
    :math:`\bar h^{l-1}` is the previous layer's output with gradients stopped. Prediction:
    :math:`\arg\max_c \sum_l \mathrm{softmax}_c(h^l_v \cdot h^l_c / \tau)`.
    """

    def __init__(self, units: list[GraphUnit], classes: int, features: int, temperature: float):
        layers = [NormalisedLayer(u) for u in units]
        self.losses = [VirtualNodeLoss(classes, temperature) for _ in layers]
        network = nn.Sequential(*layers)
        stages = [Stage(layer, loss) for layer, loss in zip(layers, self.losses)]
        super().__init__(network, stages, cuts=list(range(1, len(layers))))
        self.classes = classes
        self.virtual = VirtualNodes(classes, features)

    def bind_graph(self, graph: Any) -> None:
        train = torch.nonzero(graph.train_mask).flatten()
        extra = virtual_edges(train, graph.labels[train], graph.num_nodes)
        edges = torch.cat([graph.edge_index, extra], dim=1)
        bind_graph(self.network, edges, graph.num_nodes + self.classes)

    def begin_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([x, self.virtual.features]), y

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x, self.virtual.features])
        probs = x.new_zeros(x.shape[0], self.classes)
        for layer, loss in list(zip(self.network, self.losses))[: self.learned_positions()]:
            h = layer(h)
            probs += loss.scores(h).softmax(dim=1)
        return probs

    # The virtual nodes travel with the signals: device moves and checkpoints.
    def signal_modules(self) -> nn.ModuleList:
        return nn.ModuleList([*(s.signal for s in self.stages), self.virtual])


@RULES.register(
    "sf",
    aliases=("forwardgnn",),
    description="ForwardGNN single-forward: per-layer similarity to virtual class nodes",
    options=("temperature",),
    paper="Park et al., 'Forward Learning of Graph Neural Networks', ICLR 2024",
    families=("graph",),
    layerwise=True,
    patience=20,  # its default: each layer to early stopping (engine.layerwise)
    recipe=Recipe(
        source="the global default, Adam lr 1e-2; each layer to early stopping, patience 20. "
        "The paper's scripts: Adam lr 1e-3, up to 1,000 epochs a layer, patience 100; on "
        "Cora's validation nodes lr 5e-3 for 120 epochs did worse than 1e-2 for 60 (0.712 vs "
        "0.732, an early configuration)"
    ),
)
def build_sf(
    network: nn.Sequential,
    *,
    input_shape: tuple[int, ...],
    classes: int,
    temperature: float = 0.5,
) -> SingleForward:
    if not temperature > 0:
        raise UsageError(f"--temperature must be a positive number, got {temperature}")
    units = graph_units(network, "sf")
    if len(units) > 1:  # the class layer becomes a hidden layer of the others' width
        last, width = units[-1], _out_width(units[0])
        units[-1] = fresh_unit(last, _in_width(last), hidden_width=width)
    return SingleForward(units, classes, input_shape[0], temperature)


# -- forward-forward on graphs --------------------------------------------------------------
@dataclass
class FFGraphTargets:
    """Training nodes and their labels, of the positive and the negative copy alike."""

    train: torch.Tensor  # (T,) node indices
    rows: int  # rows of one copy (real nodes, plus virtual ones)


class GoodnessLoss(Signal):
    r"""Mean over the training nodes of both copies of
    :math:`\mathrm{BCE}(\sigma(G - \theta), s)`, :math:`G = \|h\|^2 / d`, s = 1 on the positive
    copy (first half of the rows) and 0 on the negative one."""

    def forward(self, h: torch.Tensor, target: FFGraphTargets) -> torch.Tensor:
        pos = h[target.train].pow(2).mean(dim=1) - FF_THRESHOLD
        neg = h[target.rows + target.train].pow(2).mean(dim=1) - FF_THRESHOLD
        logits = torch.cat([pos, neg])
        labels = torch.cat([torch.ones_like(pos), torch.zeros_like(neg)])
        return F.binary_cross_entropy_with_logits(logits, labels)


class GraphForwardForward(LayerAfterLayer, Rule):
    r"""Layer :math:`l` minimises the goodness loss (``GoodnessLoss``) of
    :math:`h^l = \mathrm{GNN}_l(\mathrm{norm}(\bar h^{l-1}))` on the disjoint union of a
    positive and a negative copy of the graph, built by label appending or virtual nodes
    (module docstring). Prediction: :math:`\arg\max_c \sum_l \|h^l_v\|^2` with class c
    appended to (or joined by a virtual node to) every node.
    """

    def __init__(self, units: list[GraphUnit], classes: int, features: int, negatives: str) -> None:
        layers = [NormalisedLayer(u) for u in units]
        network = nn.Sequential(*layers)
        stages = [Stage(layer, GoodnessLoss()) for layer in layers]
        super().__init__(network, stages, cuts=list(range(1, len(layers))))
        self.classes = classes
        self.negatives = negatives
        self.virtual = VirtualNodes(classes, features)
        self.graph: Any = None

    def bind_graph(self, graph: Any) -> None:
        self.graph = graph  # each step binds the copies it builds

    def _extra(self) -> int:
        return self.classes if self.negatives == "virtual" else 0

    def _copy(self, x: torch.Tensor, labels: torch.Tensor, nodes: torch.Tensor) -> tuple:
        """One copy of the graph in which ``nodes`` carry ``labels``: (features, edges)."""
        g = self.graph
        if self.negatives == "label":
            onehot = x.new_full((x.shape[0], self.classes), 1.0 / self.classes)
            onehot[nodes] = F.one_hot(labels, self.classes).to(x.dtype)
            return torch.cat([x, onehot], dim=1), g.edge_index
        edges = torch.cat([g.edge_index, virtual_edges(nodes, labels, g.num_nodes)], dim=1)
        return torch.cat([x, self.virtual.features]), edges

    def _bind_union(self, copies: list[tuple]) -> torch.Tensor:
        rows = copies[0][0].shape[0]
        edges = torch.cat([e + k * rows for k, (_, e) in enumerate(copies)], dim=1)
        bind_graph(self.network, edges, rows * len(copies))
        return torch.cat([h for h, _ in copies])

    def begin_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, FFGraphTargets]:
        train = torch.nonzero(y >= 0).flatten()
        labels = y[train]
        shift = torch.randint(1, self.classes, labels.shape, device=y.device)
        wrong = (labels + shift) % self.classes
        h = self._bind_union([self._copy(x, labels, train), self._copy(x, wrong, train)])
        return h, FFGraphTargets(train, x.shape[0] + self._extra())

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        n, g = x.shape[0], self.graph
        train = torch.nonzero(g.train_mask).flatten()
        others = torch.nonzero(~g.train_mask).flatten()
        scores = x.new_zeros(n, self.classes)
        for c in range(self.classes):
            # Training nodes keep their own label (or virtual node); every other node tries c.
            nodes = torch.cat([train, others])
            labels = torch.cat([g.labels[train], torch.full_like(others, c)])
            h = self._bind_union([self._copy(x, labels, nodes)])
            for layer in list(self.network)[: self.learned_positions()]:
                h = layer(h)
                scores[:, c] += h[:n].pow(2).mean(dim=1)
        return scores

    def signal_modules(self) -> nn.ModuleList:
        return nn.ModuleList([*(s.signal for s in self.stages), self.virtual])


def build_graph_ff(
    network: nn.Sequential, input_shape: tuple[int, ...], classes: int, negatives: str
) -> GraphForwardForward:
    if negatives not in FF_NEGATIVES:
        raise unknown_choice("--ff-negatives", negatives, FF_NEGATIVES)
    units = graph_units(network, "ff")[:-1]  # as in our ff: the network is its hidden layers
    if not units:
        raise UsageError("rule 'ff' needs a hidden layer: give the graph model --depth 2 or more")
    if negatives == "label":  # the first layer reads the features and the appended label
        units[0] = fresh_unit(units[0], input_shape[0] + classes)
    return GraphForwardForward(units, classes, input_shape[0], negatives)
