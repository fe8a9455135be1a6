"""Graph datasets for node classification: one graph, with train/validation/test node masks.

A graph dataset is a ``Dataset`` whose "samples" are the nodes of one graph, in node order:
``x_train`` (= ``x_test``) holds every node's features and the label tensors hold every
node's class, with the nodes outside the split set to ``IGNORE`` (-100, the value
``F.cross_entropy`` skips). So a loss over ``y_train`` is the loss over the training mask,
and an accuracy over ``y_test`` counts the test nodes only. The edges live in ``graph``.

Planetoid citation graphs (Yang, Cohen & Salakhutdinov, ICML 2016) are read from their
original ``ind.<name>.*`` files with the public split of Kipf & Welling (ICLR 2017): the 20
labelled nodes per class of ``ind.<name>.y`` train, the next 500 nodes validate, the 1,000
nodes of ``ind.<name>.test.index`` test. Features are row-normalised (each row sums to 1),
as Kipf & Welling do. Edges are made undirected, with duplicates and self-loops removed
(a GCN layer adds its own self-loops). The files are pickles: they go through
``safe_pickle`` with the allow-list below, never through the stock unpickler.

``sbm`` is a generated stochastic block model: ``--communities`` equal-probability classes,
each edge leaving a uniformly drawn node lands in the same community with probability
``--homophily``, otherwise in a uniformly drawn other one; features are the class mean
(a standard normal vector per class) plus Gaussian noise of std ``--feature-noise``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from locallearn.data.base import DATASETS, Dataset
from locallearn.data.files import corrupt_file, locate_files
from locallearn.data.safe_pickle import PLANETOID_TYPES, safe_load
from locallearn.errors import UsageError

IGNORE = -100  # label of a node outside the split: F.cross_entropy's default ignore_index

PLANETOID_PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")
# nodes, features, classes, directed edges, for `locallearn list datasets`. Cora's figures
# are what read_planetoid gives on the real files; CiteSeer's and PubMed's are the counts
# PyTorch Geometric documents for the same files (not checked here: no copy at hand).
PLANETOID_SIZES = {
    "cora": (2708, 1433, 7, 10556),
    "citeseer": (3327, 3703, 6, 9104),
    "pubmed": (19717, 500, 3, 88648),
}
PUBLIC_VAL = 500


@dataclass
class Graph:
    """The structure of a node-classification graph (everything but the features)."""

    edge_index: torch.Tensor  # (2, E) int64, both directions of every undirected edge
    num_nodes: int
    labels: torch.Tensor  # (N,) int64, every node's class
    train_mask: torch.Tensor  # (N,) bool
    val_mask: torch.Tensor
    test_mask: torch.Tensor

    @property
    def classes(self) -> int:
        return int(self.labels.max()) + 1

    def masked(self, mask: torch.Tensor) -> torch.Tensor:
        """The labels with every node outside ``mask`` set to IGNORE."""
        return torch.where(mask, self.labels, torch.full_like(self.labels, IGNORE))

    def to(self, device: torch.device | str) -> Graph:
        return Graph(
            self.edge_index.to(device),
            self.num_nodes,
            self.labels.to(device),
            self.train_mask.to(device),
            self.val_mask.to(device),
            self.test_mask.to(device),
        )


@dataclass
class GraphDataset(Dataset):
    """A ``Dataset`` of one graph's nodes (see the module docstring); ``y_val`` labels the
    validation nodes the same way (``x_val`` is the same features tensor)."""

    graph: Graph | None = None


def make_graph_dataset(name: str, x: torch.Tensor, graph: Graph, source: str) -> GraphDataset:
    return GraphDataset(
        name=name,
        x_train=x,
        y_train=graph.masked(graph.train_mask),
        x_test=x,  # the same tensor: the whole graph is the input of every evaluation
        y_test=graph.masked(graph.test_mask),
        classes=graph.classes,
        source=source,
        graph=graph,
        x_val=x,
        y_val=graph.masked(graph.val_mask),
    )


def undirected_edges(row: torch.Tensor, col: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """(2, E) edges in both directions, sorted, without duplicates or self-loops."""
    keep = row != col
    row, col = row[keep], col[keep]
    both = torch.cat([torch.stack([row, col]), torch.stack([col, row])], dim=1)
    key = torch.unique(both[0] * num_nodes + both[1])  # sorted, so the order is canonical
    return torch.stack([key // num_nodes, key % num_nodes])


def check_graph_options(name: str, train_limit: int | None, as_sequence: bool) -> None:
    """Options that cut or reshape samples do not apply to the nodes of one graph."""
    if train_limit is not None:
        raise UsageError(
            f"--train-limit does not apply to graph dataset {name!r}: its training nodes are "
            "the split's (a graph cannot be cut into a subset of rows)"
        )
    if as_sequence:
        raise UsageError(f"--as-sequence does not apply to graph dataset {name!r}")


def graph_info(meta: dict[str, object]) -> dict[str, object]:
    """Nodes and edges (directed pairs) of a graph dataset entry, for listings; {} if none."""
    if not meta.get("graph"):
        return {}
    edges = meta["edges"]
    return {"nodes": meta["nodes"], "edges": edges() if callable(edges) else edges}


# -- Planetoid -----------------------------------------------------------------------------
def _dense(matrix: object, path: Path, label: str) -> np.ndarray:
    if isinstance(matrix, np.ndarray):
        return matrix
    toarray = getattr(matrix, "toarray", None)
    if toarray is None:
        raise corrupt_file(label, path, f"holds a {type(matrix).__name__}, not a matrix")
    try:
        return np.asarray(toarray())
    except Exception as error:  # a CSR matrix with inconsistent arrays
        raise corrupt_file(label, path, f"its sparse matrix is inconsistent ({error})")


def read_planetoid(name: str, data_dir: Path) -> GraphDataset:
    """Read ``ind.<name>.*`` from ``data_dir/planetoid`` (or ``data_dir`` itself)."""
    files = locate_files(
        name,
        data_dir,
        ("planetoid", f"planetoid/{name}", name),
        [f"ind.{name}.{p}" for p in PLANETOID_PARTS],
    )
    parts = {}
    for part in ("x", "y", "tx", "ty", "allx", "ally"):
        path = files[f"ind.{name}.{part}"]
        parts[part] = _dense(
            safe_load(path, PLANETOID_TYPES, encoding="latin1", dataset=name), path, name
        )
    graph_path = files[f"ind.{name}.graph"]
    adjacency = safe_load(graph_path, PLANETOID_TYPES, encoding="latin1", dataset=name)
    if not isinstance(adjacency, dict):
        raise corrupt_file(name, graph_path, f"holds a {type(adjacency).__name__}, not a dict")
    index_path = files[f"ind.{name}.test.index"]
    try:
        test_index = np.array([int(line) for line in index_path.read_text().split()])
    except ValueError as error:
        raise corrupt_file(name, index_path, f"not one node index per line ({error})")

    x, y, tx, ty, allx, ally = (parts[k] for k in ("x", "y", "tx", "ty", "allx", "ally"))
    if not (len(x) == len(y) and len(tx) == len(ty) == len(test_index) and len(allx) == len(ally)):
        raise corrupt_file(name, files[f"ind.{name}.x"], "feature and label counts disagree")
    # Test nodes are stored in their own order; some citeseer test nodes are isolated and
    # absent, so the test block spans min..max of the index with zero rows for the gaps.
    low, high = int(test_index.min()), int(test_index.max())
    span = high - low + 1
    tx_full = np.zeros((span, tx.shape[1]), dtype=np.float32)
    ty_full = np.zeros((span, ty.shape[1]), dtype=np.float32)
    tx_full[test_index - low], ty_full[test_index - low] = tx, ty
    features = np.concatenate([allx, tx_full]).astype(np.float32)
    onehot = np.concatenate([ally, ty_full])
    n = features.shape[0]
    if low != len(allx):
        raise corrupt_file(name, index_path, f"test nodes start at {low}, expected {len(allx)}")
    labels = torch.from_numpy(onehot.argmax(axis=1)).long()
    unlabelled = torch.from_numpy(onehot.sum(axis=1) == 0)

    rows, cols = [], []
    for node, neighbours in adjacency.items():
        if not isinstance(node, int) or not isinstance(neighbours, list):
            raise corrupt_file(name, graph_path, "not a dict of node -> list of nodes")
        rows += [node] * len(neighbours)
        cols += neighbours
    row, col = torch.tensor(rows, dtype=torch.long), torch.tensor(cols, dtype=torch.long)
    if row.numel() and (min(row.min(), col.min()) < 0 or max(row.max(), col.max()) >= n):
        raise corrupt_file(name, graph_path, f"an edge names a node outside 0..{n - 1}")

    train_mask = torch.zeros(n, dtype=torch.bool)
    train_mask[: len(y)] = True
    val_mask = torch.zeros(n, dtype=torch.bool)
    val_mask[len(y) : len(y) + PUBLIC_VAL] = True
    test_mask = torch.zeros(n, dtype=torch.bool)
    test_mask[torch.from_numpy(test_index)] = True
    test_mask &= ~unlabelled
    rowsum = features.sum(axis=1, keepdims=True)
    features = features / np.where(rowsum > 0, rowsum, 1.0)
    graph = Graph(undirected_edges(row, col, n), n, labels, train_mask, val_mask, test_mask)
    source = f"{files[f'ind.{name}.x'].parent} (Planetoid, public split)"
    return make_graph_dataset(name, torch.from_numpy(features), graph, source)


def _register_planetoid(name: str, title: str) -> None:
    nodes, features, classes, edges = PLANETOID_SIZES[name]

    @DATASETS.register(
        name,
        description=f"{title} citation graph (Planetoid files ind.{name}.*), public split "
        "20 per class / 500 / 1000",
        shape=(features,),
        classes=classes,
        nodes=nodes,
        edges=edges,
        source=f"ind.{name}.* in --data-dir or --data-dir/planetoid",
        graph=True,
    )
    def build(data_dir: Path | None) -> GraphDataset:
        return read_planetoid(name, data_dir if data_dir is not None else Path("."))


_register_planetoid("cora", "Cora")
_register_planetoid("citeseer", "CiteSeer")
_register_planetoid("pubmed", "PubMed")


# -- stochastic block model ----------------------------------------------------------------
SBM_DEFAULTS = {
    "nodes": 1000,
    "communities": 4,
    "avg_degree": 8.0,
    "homophily": 0.8,
    "feature_noise": 2.0,
    "node_features": 32,
}


def make_sbm(
    nodes: int = SBM_DEFAULTS["nodes"],
    communities: int = SBM_DEFAULTS["communities"],
    avg_degree: float = SBM_DEFAULTS["avg_degree"],
    homophily: float = SBM_DEFAULTS["homophily"],
    feature_noise: float = SBM_DEFAULTS["feature_noise"],
    node_features: int = SBM_DEFAULTS["node_features"],
    seed: int = 0,
) -> GraphDataset:
    """A stochastic-block-model graph with the split of the Planetoid graphs: 20 training
    nodes per class, then 500 validation and 1,000 test nodes (fewer on small graphs: a
    third of the rest each), all drawn at random."""
    for flag, value, least in (
        ("--nodes", nodes, 2),
        ("--communities", communities, 2),
        ("--node-features", node_features, 1),
    ):
        if value < least:
            raise UsageError(f"{flag} must be at least {least}, got {value}")
    if nodes < 21 * communities:
        raise UsageError(
            f"--nodes {nodes} is too few for {communities} communities: the split takes 20 "
            f"training nodes per class and needs some left to test (give at least "
            f"{21 * communities})"
        )
    if not (0 <= homophily <= 1):
        raise UsageError(f"--homophily must be in [0, 1], got {homophily}")
    if not (avg_degree > 0 and math.isfinite(avg_degree)):
        raise UsageError(f"--avg-degree must be a positive number, got {avg_degree}")
    if not (feature_noise >= 0 and math.isfinite(feature_noise)):
        raise UsageError(f"--feature-noise must be a number >= 0, got {feature_noise}")
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, communities, (nodes,), generator=g)
    # Every class needs 20 training nodes; with equal probabilities a shortfall only
    # happens on tiny graphs, where the labels are then dealt round-robin instead.
    if int(torch.bincount(labels, minlength=communities).min()) < 21:
        labels = torch.arange(nodes) % communities
        labels = labels[torch.randperm(nodes, generator=g)]
    order = torch.argsort(labels, stable=True)
    counts = torch.bincount(labels, minlength=communities)
    offsets = torch.cumsum(counts, 0) - counts

    edges = max(1, round(nodes * avg_degree / 2))
    src = torch.randint(0, nodes, (edges,), generator=g)
    same = torch.rand(edges, generator=g) < homophily
    shift = torch.randint(1, communities, (edges,), generator=g)
    target = torch.where(same, labels[src], (labels[src] + shift) % communities)
    pick = (torch.rand(edges, generator=g) * counts[target]).long().clamp(max=counts[target] - 1)
    dst = order[offsets[target] + pick]

    means = torch.randn(communities, node_features, generator=g)
    x = means[labels] + feature_noise * torch.randn(nodes, node_features, generator=g)

    perm = torch.randperm(nodes, generator=g)
    train_mask = torch.zeros(nodes, dtype=torch.bool)
    for c in range(communities):
        train_mask[perm[labels[perm] == c][:20]] = True
    rest = perm[~train_mask[perm]]
    n_val = min(PUBLIC_VAL, len(rest) // 3)
    n_test = min(1000, len(rest) // 3)
    val_mask = torch.zeros(nodes, dtype=torch.bool)
    val_mask[rest[:n_val]] = True
    test_mask = torch.zeros(nodes, dtype=torch.bool)
    test_mask[rest[n_val : n_val + n_test]] = True
    graph = Graph(undirected_edges(src, dst, nodes), nodes, labels, train_mask, val_mask, test_mask)
    source = (
        f"generated SBM: {nodes} nodes, {communities} communities, degree {avg_degree:g}, "
        f"homophily {homophily:g}, noise {feature_noise:g}, seed {seed}"
    )
    return make_graph_dataset("sbm", x, graph, source)


@DATASETS.register(
    "sbm",
    description="stochastic block model graph: --nodes, --communities, --avg-degree, "
    "--homophily, --feature-noise, --node-features (20 train per class / 500 / 1000)",
    options=(*SBM_DEFAULTS, "data_seed"),
    shape=(SBM_DEFAULTS["node_features"],),
    classes=SBM_DEFAULTS["communities"],
    nodes=SBM_DEFAULTS["nodes"],
    edges=lambda: int(make_sbm().graph.edge_index.shape[1]),  # the default graph's
    source="generated",
    graph=True,
)
def build_sbm(data_dir: Path | None, data_seed: int = 0, **options: float) -> GraphDataset:
    return make_sbm(seed=data_seed, **options)  # type: ignore[arg-type]
