"""The restricted unpickler: a data file that names code is refused before anything runs."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from locallearn.data.safe_pickle import CIFAR_TYPES, PLANETOID_TYPES, safe_load
from locallearn.errors import UsageError

SHARED_PLANETOID = [
    Path(__file__).resolve().parents[1].parent / "shared" / "data" / "planetoid",
    Path(__file__).resolve().parents[1] / "shared" / "data" / "planetoid",
]


class WritesMarker:
    """Unpickling this calls os.system, which creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


class EvalsMarker:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


def crafted_batch(marker: Path, payload: type = WritesMarker) -> bytes:
    """A CIFAR-shaped batch whose labels entry is the payload."""
    return pickle.dumps(
        {b"data": np.zeros((2, 3072), np.uint8), b"labels": payload(marker)}, protocol=2
    )


def test_safe_load_reads_a_cifar_batch(tmp_path: Path) -> None:
    batch = {b"data": np.arange(6, dtype=np.uint8).reshape(2, 3), b"labels": [1, 2]}
    path = tmp_path / "batch"
    path.write_bytes(pickle.dumps(batch, protocol=2))
    loaded = safe_load(path, CIFAR_TYPES, encoding="bytes")
    np.testing.assert_array_equal(loaded[b"data"], batch[b"data"])
    assert loaded[b"labels"] == [1, 2]
    # the same from an open file and from bytes
    with path.open("rb") as f:
        assert safe_load(f, CIFAR_TYPES, encoding="bytes")[b"labels"] == [1, 2]
    assert safe_load(path.read_bytes(), CIFAR_TYPES)[b"labels"] == [1, 2]


@pytest.mark.parametrize("payload", [WritesMarker, EvalsMarker])
def test_a_crafted_file_runs_no_code(tmp_path: Path, payload: type) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "data_batch_1"
    path.write_bytes(crafted_batch(marker, payload))
    with pytest.raises(UsageError) as caught:
        safe_load(path, CIFAR_TYPES, encoding="bytes", dataset="cifar10")
    message = str(caught.value)
    assert not marker.exists(), "the pickle ran its payload"
    assert str(path) in message and "refused" in message
    refused = "posix.system" if payload is WritesMarker else "builtins.eval"
    assert refused in message, message
    # plain pickle would have run it: the test file really is hostile
    pickle.loads(path.read_bytes())
    assert marker.exists()


def test_python2_names_are_translated_then_checked(tmp_path: Path) -> None:
    # A protocol-2 pickle naming __builtin__.eval (as Python 2 would) is still eval.
    marker = tmp_path / "marker"
    code = f"open({str(marker)!r}, 'w').close()".encode()
    stream = b"\x80\x02c__builtin__\neval\nq\x00U" + bytes([len(code)]) + code + b"\x85R."
    with pytest.raises(UsageError, match=r"builtins\.eval"):
        safe_load(stream, CIFAR_TYPES)
    assert not marker.exists()


def test_an_object_array_cannot_smuggle_code(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    data = np.empty(1, dtype=object)
    data[0] = WritesMarker(marker)
    with pytest.raises(UsageError, match="posix.system"):
        safe_load(pickle.dumps({b"data": data}, protocol=2), CIFAR_TYPES)
    assert not marker.exists()


def test_each_format_admits_only_its_own_types() -> None:
    # CIFAR batches hold no sparse matrices or defaultdicts; Planetoid's graph file does.
    from collections import defaultdict

    graph = pickle.dumps(defaultdict(list, {0: [1]}), protocol=2)
    with pytest.raises(UsageError, match="collections.defaultdict"):
        safe_load(graph, CIFAR_TYPES)
    assert safe_load(graph, PLANETOID_TYPES) == {0: [1]}


@pytest.mark.parametrize(
    "damage", [b"", b"\x00\x01 not a pickle", pickle.dumps({b"a": 1}, protocol=2)[:-3]]
)
def test_damaged_pickles_are_usage_errors(tmp_path: Path, damage: bytes) -> None:
    path = tmp_path / "f"
    path.write_bytes(damage)
    with pytest.raises(UsageError, match="corrupt or not the expected file"):
        safe_load(path, CIFAR_TYPES, dataset="cifar10")


def test_a_directory_is_named(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is a directory"):
        safe_load(tmp_path, CIFAR_TYPES, dataset="cifar10")


def test_the_real_planetoid_files_load() -> None:
    found = [d for d in SHARED_PLANETOID if (d / "ind.cora.x").is_file()]
    if not found:
        pytest.skip("../shared/data/planetoid not present; looked in " + str(SHARED_PLANETOID))
    for suffix in ("x", "tx", "allx", "y", "ty", "ally", "graph"):
        obj = safe_load(found[0] / f"ind.cora.{suffix}", PLANETOID_TYPES, encoding="latin1")
        assert obj is not None
    assert safe_load(found[0] / "ind.cora.x", PLANETOID_TYPES, encoding="latin1").shape[0] == 140
