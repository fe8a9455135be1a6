"""Dataset registry, readers and the --train-limit subset.

Everything runs offline: file formats (idx, CIFAR-10 batches) are exercised on small files
written here byte for byte, and the real MNIST files are used only when present beside the
repository.
"""

from __future__ import annotations

import gzip
import pickle
import random
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from locallearn.data import DATASETS, dataset_infos, load_dataset, resolve_data_dir
from locallearn.data import cache as cache_module
from locallearn.data import mnist1d as mnist1d_module
from locallearn.data.idx import read_idx
from locallearn.data.subset import class_counts, limit_train, stratified_indices
from locallearn.errors import UsageError

OFFLINE = {
    # name: (train size, test size)
    "mnist1d": (4000, 1000),
    "mnist1d-shuffled": (4000, 1000),
    "digits": (1437, 360),
    "mnist5k": (4000, 1000),
}
GENERATED = {"dsd", "shortcut"}  # synthetic tasks (tests/test_dsd.py, tests/test_shortcut.py)
FILES = {"mnist", "fashion-mnist", "kmnist", "cifar10", "cifar100", "svhn", "stl10"}
# scikit-learn's tabular sets (tests/test_regression.py checks their splits)
TABULAR = {"iris", "wine", "breast-cancer", "diabetes", "friedman1"}
ALL = {*OFFLINE, *GENERATED, *FILES, *TABULAR}
IDX_NAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR_BATCHES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the session, so mnist1d is generated once, never in the home dir."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def isolated_dirs(shared_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALLEARN_CACHE", str(shared_cache))
    # A data root that does not exist: no test may pick up files from ~/.locallearn/data.
    monkeypatch.setenv("LOCALLEARN_DATA", str(tmp_path / "no-data-here"))
    # Generating mnist1d imports matplotlib (mnist1d.utils), which writes a font cache.
    monkeypatch.setenv("MPLCONFIGDIR", str(shared_cache / "matplotlib"))


# --- registry ------------------------------------------------------------------------------


def test_registry_holds_every_family() -> None:
    assert set(DATASETS.names()) == ALL
    infos = dataset_infos()
    assert [info["name"] for info in infos] == sorted(ALL)
    for info in infos:
        assert set(info) == {"name", "shape", "classes", "source", "description"}
        expected = {
            "cifar100": 100,
            "dsd": 2,
            "shortcut": 2,
            "iris": 3,
            "wine": 3,
            "breast-cancer": 2,
            "diabetes": 1,  # regression: one output
            "friedman1": 1,
        }.get(info["name"], 10)
        assert info["classes"] == expected
        assert isinstance(info["shape"], tuple) and info["source"] and info["description"]


@pytest.mark.parametrize("name", sorted(OFFLINE))
def test_offline_dataset_matches_its_metadata(name: str) -> None:
    ds = load_dataset(name)
    entry = DATASETS.get(name)
    assert ds.name == name
    assert ds.input_shape == tuple(entry.meta["shape"])
    assert ds.classes == entry.meta["classes"] == 10
    assert (len(ds.x_train), len(ds.x_test)) == OFFLINE[name]
    assert (len(ds.y_train), len(ds.y_test)) == OFFLINE[name]
    assert ds.x_train.dtype == ds.x_test.dtype == torch.float32
    assert ds.y_train.dtype == ds.y_test.dtype == torch.int64
    assert set(ds.y_train.tolist()) == set(range(10)) == set(ds.y_test.tolist())
    assert torch.isfinite(ds.x_train).all() and torch.isfinite(ds.x_test).all()
    assert len(ds.mean) == len(ds.std) == ds.input_shape[0]


def test_unknown_name_lists_valid_choices() -> None:
    with pytest.raises(UsageError) as caught:
        load_dataset("mnsit")
    message = str(caught.value)
    assert "'mnsit'" in message and "did you mean 'mnist'" in message
    for name in ALL:
        assert name in message


def test_resolve_data_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCALLEARN_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("LOCALLEARN_DATA")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir(None) == tmp_path / "home" / ".locallearn" / "data"


# --- normalisation -------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "scale"), [("digits", 16.0), ("mnist5k", 255.0)])
def test_bundled_sets_are_normalised_with_training_statistics(name: str, scale: float) -> None:
    ds = load_dataset(name)
    channels = ds.x_train.transpose(0, 1).reshape(ds.input_shape[0], -1)
    assert channels.mean(dim=1).abs().max() < 1e-4
    assert (channels.std(dim=1) - 1).abs().max() < 1e-3
    # Undoing the stored statistics gives back pixels scaled to [0, 1] on the original grid.
    raw = ds.x_test * ds.std[0] + ds.mean[0]
    assert raw.min() > -1e-5 and raw.max() < 1 + 1e-5
    levels = raw * scale
    assert (levels - levels.round()).abs().max() < 1e-3


def test_bundled_split_is_fixed_and_stratified() -> None:
    a, b = load_dataset("digits"), load_dataset("digits")
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.y_test, b.y_test)
    train_share = np.bincount(a.y_train.numpy()) / len(a.y_train)
    test_share = np.bincount(a.y_test.numpy()) / len(a.y_test)
    assert np.abs(train_share - test_share).max() < 0.01


# --- mnist1d -------------------------------------------------------------------------------


def test_mnist1d_shuffled_is_one_fixed_column_permutation() -> None:
    plain, shuffled = load_dataset("mnist1d"), load_dataset("mnist1d-shuffled")
    assert torch.equal(plain.y_train, shuffled.y_train)
    assert torch.equal(plain.y_test, shuffled.y_test)
    p = np.concatenate([plain.x_train[:, 0].numpy(), plain.x_test[:, 0].numpy()])
    s = np.concatenate([shuffled.x_train[:, 0].numpy(), shuffled.x_test[:, 0].numpy()])
    # For each shuffled position, the plain position holding the same column of values.
    distance = np.abs(s[:, :, None] - p[:, None, :]).max(axis=0)
    perm = distance.argmin(axis=1)
    assert sorted(perm.tolist()) == list(range(40))
    assert not np.array_equal(perm, np.arange(40))
    # Not bitwise: the global standardisation sums in a different order after shuffling.
    np.testing.assert_allclose(s, p[:, perm], atol=1e-5)


def test_mnist1d_is_read_from_cache(shared_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = load_dataset("mnist1d")
    cached = sorted(p.name for p in shared_cache.iterdir())
    assert any(n.startswith("mnist1d-plain") and n.endswith(".npz") for n in cached)
    assert not any(n.endswith(".tmp") for n in cached)

    def fail(shuffle_seq: bool) -> None:
        raise AssertionError("regenerated although a valid cache exists")

    monkeypatch.setattr(mnist1d_module, "generate", fail)
    assert torch.equal(load_dataset("mnist1d").x_train, first.x_train)


def test_corrupt_mnist1d_cache_is_regenerated_without_touching_global_rng(
    shared_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = load_dataset("mnist1d")
    cache_file = next(shared_cache.glob("mnist1d-plain*.npz"))
    fresh = tmp_path / "cache"
    fresh.mkdir()
    (fresh / cache_file.name).write_bytes(cache_file.read_bytes()[:5000])  # truncated
    monkeypatch.setenv("LOCALLEARN_CACHE", str(fresh))

    np.random.seed(123)
    random.seed(123)
    expected = (np.random.rand(), random.random())
    np.random.seed(123)
    random.seed(123)
    regenerated = load_dataset("mnist1d")  # make_dataset reseeds globally inside
    assert (np.random.rand(), random.random()) == expected

    assert torch.equal(regenerated.x_train, reference.x_train)
    with np.load(fresh / cache_file.name) as npz:  # rewritten whole
        assert npz["x_train"].shape == (4000, 40)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "missing_key", "length_mismatch"])
def test_cached_arrays_rebuilds_bad_files(
    damage: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = {"x_train": np.arange(12.0).reshape(6, 2), "y_train": np.arange(6)}
    path = tmp_path / "thing.npz"
    if damage == "garbage":
        path.write_bytes(b"not a zip file at all")
    elif damage == "truncated":
        np.savez(path, **good)
        path.write_bytes(path.read_bytes()[:-40])
    elif damage == "missing_key":
        np.savez(path, x_train=good["x_train"])
    else:
        np.savez(path, x_train=good["x_train"], y_train=np.arange(5))
    calls = []

    def make() -> dict[str, np.ndarray]:
        calls.append(1)
        return good

    monkeypatch.setenv("LOCALLEARN_CACHE", str(tmp_path))
    out = cache_module.cached_arrays("thing", ("x_train", "y_train"), make)
    assert calls == [1]
    np.testing.assert_array_equal(out["y_train"], good["y_train"])
    again = cache_module.cached_arrays("thing", ("x_train", "y_train"), make)
    assert calls == [1]  # the rewritten file is valid
    np.testing.assert_array_equal(again["x_train"], good["x_train"])
    assert [p.name for p in tmp_path.iterdir()] == ["thing.npz"]  # no temporary left


# --- --train-limit -------------------------------------------------------------------------


def test_class_counts_are_proportional_and_sum_to_n() -> None:
    labels = np.repeat(np.arange(4), [50, 30, 15, 5])
    for n in range(1, 101):
        counts = class_counts(labels, n)
        assert counts.sum() == n
        assert np.all(np.abs(counts - n * np.array([0.5, 0.3, 0.15, 0.05])) < 1)
    # Equal remainders go to the lower class index, every time.
    assert class_counts(np.arange(10), 3).tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]


def test_train_limit_is_stratified_and_fixed() -> None:
    full = load_dataset("digits")
    small = load_dataset("digits", train_limit=100)
    assert len(small.x_train) == len(small.y_train) == 100
    assert torch.equal(small.x_test, full.x_test)  # the test set is never cut
    assert small.mean == full.mean and small.std == full.std
    counts = np.bincount(small.y_train.numpy(), minlength=10)
    expected = 100 * np.bincount(full.y_train.numpy()) / len(full.y_train)
    assert np.all(np.abs(counts - expected) < 1)
    # Rows are real training rows with their own labels.
    index = stratified_indices(full.y_train, 100)
    assert torch.equal(small.x_train, full.x_train[index])
    assert torch.equal(small.y_train, full.y_train[index])


def test_train_limit_ignores_the_run_seed() -> None:
    labels = load_dataset("mnist1d").y_train
    np.random.seed(1)
    torch.manual_seed(1)
    random.seed(1)
    first = stratified_indices(labels, 250)
    np.random.seed(99)
    torch.manual_seed(99)
    random.seed(99)
    second = stratified_indices(labels, 250)
    np.testing.assert_array_equal(first, second)
    assert len(np.unique(first)) == 250
    assert torch.equal(
        load_dataset("mnist1d", train_limit=250).y_train,
        load_dataset("mnist1d", train_limit=250).y_train,
    )


def test_train_limit_equal_to_size_keeps_everything() -> None:
    full = load_dataset("digits")
    assert torch.equal(limit_train(full, 1437).x_train, full.x_train)


@pytest.mark.parametrize("bad", [0, -5, 1438, 10**6, 2.5, "100", True])
def test_bad_train_limit_names_value_and_range(bad: object) -> None:
    with pytest.raises(UsageError) as caught:
        load_dataset("digits", train_limit=bad)  # type: ignore[arg-type]
    message = str(caught.value)
    assert repr(bad) in message and "1 to 1437" in message and "--train-limit" in message


# --- idx files -----------------------------------------------------------------------------

IDX_CODES = {
    np.dtype(np.uint8): 0x08,
    np.dtype(np.int8): 0x09,
    np.dtype(">i2"): 0x0B,
    np.dtype(">i4"): 0x0C,
    np.dtype(">f4"): 0x0D,
    np.dtype(">f8"): 0x0E,
}


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    """Write ``array`` in the idx format independently of the reader under test."""
    big = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, IDX_CODES[big.dtype], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + big.tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        payload = gzip.compress(payload)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)
    return path


def make_idx_set(directory: Path, gz: bool, n_train: int = 30, n_test: int = 10) -> dict:
    """Small MNIST-format files: random 28x28 images, labels cycling through 0..9."""
    rng = np.random.default_rng(7)
    arrays = {
        IDX_NAMES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        IDX_NAMES[1]: (np.arange(n_train) % 10).astype(np.uint8),
        IDX_NAMES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        IDX_NAMES[3]: (np.arange(n_test) % 10).astype(np.uint8),
    }
    paths = {name: write_idx(directory / name, a, gz) for name, a in arrays.items()}
    return {"arrays": arrays, "paths": paths}


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", ["u1", "i1", ">i2", ">i4", ">f4", ">f8"])
def test_read_idx_round_trips(tmp_path: Path, dtype: str, gz: bool) -> None:
    array = (np.arange(2 * 3 * 4) - 5).reshape(2, 3, 4).astype(dtype)
    if dtype == "u1":
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    out = read_idx(write_idx(tmp_path / "a-idx3", array, gz))
    assert out.shape == (2, 3, 4) and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize(
    ("name", "layout", "gz"),
    [
        ("mnist", "mnist", True),
        ("mnist", "", False),
        ("mnist", "MNIST/raw", True),
        ("fashion-mnist", "fashion-mnist", False),
        ("fashion-mnist", "FashionMNIST/raw", True),
        ("kmnist", "kmnist", True),
    ],
)
def test_idx_dataset_loads(tmp_path: Path, name: str, layout: str, gz: bool) -> None:
    made = make_idx_set(tmp_path / layout if layout else tmp_path, gz)
    ds = load_dataset(name, data_dir=tmp_path)
    assert ds.input_shape == tuple(DATASETS.get(name).meta["shape"]) == (1, 28, 28)
    assert (len(ds.x_train), len(ds.x_test)) == (30, 10)
    np.testing.assert_array_equal(ds.y_train.numpy(), made["arrays"][IDX_NAMES[1]])
    np.testing.assert_array_equal(ds.y_test.numpy(), made["arrays"][IDX_NAMES[3]])
    assert abs(ds.x_train.mean().item()) < 1e-4 and abs(ds.x_train.std().item() - 1) < 1e-3
    pixels = (ds.x_test[:, 0] * ds.std[0] + ds.mean[0]) * 255
    np.testing.assert_allclose(pixels.numpy(), made["arrays"][IDX_NAMES[2]], atol=1e-3)


def test_idx_dataset_found_through_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_idx_set(tmp_path / "mnist", gz=True)
    monkeypatch.setenv("LOCALLEARN_DATA", str(tmp_path))
    assert len(load_dataset("mnist").x_train) == 30


def _rewrite(path: Path, change: Callable[[bytes], bytes]) -> None:
    raw = path.read_bytes()
    plain = gzip.decompress(raw) if path.suffix == ".gz" else raw
    path.write_bytes(change(plain))


@pytest.mark.parametrize(
    ("damage", "file_index", "words"),
    [
        ("bad_magic", 0, "magic number 2049, expected 2051"),
        ("truncated", 2, "file has"),
        ("extra_bytes", 1, "file has"),
        ("header_only", 3, "truncated"),
        ("empty", 0, "shorter than an idx header"),
        ("bad_gzip", 0, "gzip"),
        ("label_too_big", 1, "label 10"),
        ("not_28x28", 0, "expected 28x28"),
    ],
)
def test_corrupt_idx_file_is_named(
    tmp_path: Path, damage: str, file_index: int, words: str
) -> None:
    made = make_idx_set(tmp_path / "mnist", gz=True)
    path = made["paths"][IDX_NAMES[file_index]]
    if damage == "bad_magic":
        _rewrite(path, lambda b: b[:2] + bytes([8, 1]) + b[4:])
    elif damage == "truncated":
        _rewrite(path, lambda b: b[:-100])
    elif damage == "extra_bytes":
        _rewrite(path, lambda b: b + b"\0")
    elif damage == "header_only":
        _rewrite(path, lambda b: b[:6])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "bad_gzip":
        path.write_bytes(path.read_bytes()[:-30])
    elif damage == "label_too_big":
        labels = made["arrays"][IDX_NAMES[1]].copy()
        labels[3] = 10
        write_idx(tmp_path / "mnist" / IDX_NAMES[1], labels, gz=True)
    else:
        write_idx(tmp_path / "mnist" / IDX_NAMES[0], np.zeros((30, 27, 28), np.uint8), gz=True)
    with pytest.raises(UsageError) as caught:
        load_dataset("mnist", data_dir=tmp_path)
    message = str(caught.value)
    assert str(path) in message and words in message


def test_image_and_label_counts_must_agree(tmp_path: Path) -> None:
    made = make_idx_set(tmp_path, gz=False)
    write_idx(tmp_path / IDX_NAMES[3], np.zeros(9, np.uint8))
    with pytest.raises(UsageError) as caught:
        load_dataset("mnist", data_dir=tmp_path)
    message = str(caught.value)
    assert "10 images" in message and "9 labels" in message
    assert str(made["paths"][IDX_NAMES[2]]) in message


def test_missing_idx_files_name_every_place_looked(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        load_dataset("fashion-mnist", data_dir=tmp_path)
    message = str(caught.value)
    for name in IDX_NAMES:
        assert f"{name} or {name}.gz" in message
    for place in ("fashion-mnist", "FashionMNIST/raw", ""):
        assert str(tmp_path / place if place else tmp_path) in message
    assert "--data-dir" in message and "$LOCALLEARN_DATA" in message


def test_one_missing_idx_file_is_named(tmp_path: Path) -> None:
    made = make_idx_set(tmp_path / "mnist", gz=True)
    made["paths"][IDX_NAMES[3]].unlink()
    # The same file name in the root must not fill the gap: it could be another dataset.
    write_idx(tmp_path / IDX_NAMES[3], np.zeros(10, np.uint8))
    with pytest.raises(UsageError) as caught:
        load_dataset("mnist", data_dir=tmp_path)
    message = str(caught.value)
    assert IDX_NAMES[3] in message and f"missing from {tmp_path / 'mnist'}" in message
    assert str(tmp_path / "MNIST/raw") in message


# --- CIFAR-10 ------------------------------------------------------------------------------


def make_cifar(directory: Path, per_batch: int = 20) -> dict[str, np.ndarray]:
    """Batch pickles in the python-version layout: dict with b"data" (N, 3072), b"labels"."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    batches = {}
    for i, name in enumerate(CIFAR_BATCHES):
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        data[:, :1024] //= 2  # a darker red plane, so channels get different statistics
        labels = [(i + j) % 10 for j in range(per_batch)]
        with (directory / name).open("wb") as f:
            pickle.dump(
                {b"batch_label": name.encode(), b"labels": labels, b"data": data}, f, protocol=2
            )
        batches[name] = data
    return batches


@pytest.mark.parametrize(
    "layout", ["cifar10", "cifar-10-batches-py", "cifar10/cifar-10-batches-py", ""]
)
def test_cifar10_loads_and_normalises_per_channel(tmp_path: Path, layout: str) -> None:
    batches = make_cifar(tmp_path / layout if layout else tmp_path)
    ds = load_dataset("cifar10", data_dir=tmp_path)
    assert ds.input_shape == tuple(DATASETS.get("cifar10").meta["shape"]) == (3, 32, 32)
    assert (len(ds.x_train), len(ds.x_test)) == (100, 20)
    assert ds.y_train[:3].tolist() == [0, 1, 2] and ds.y_test[0].item() == 5
    assert len(ds.mean) == len(ds.std) == 3 and ds.mean[0] < ds.mean[1]
    per_channel = ds.x_train.transpose(0, 1).reshape(3, -1)
    assert per_channel.mean(dim=1).abs().max() < 1e-4
    assert (per_channel.std(dim=1) - 1).abs().max() < 1e-3
    # Row layout: 1024 red, then green, then blue values, each a row-major 32x32 plane.
    mean, std = torch.tensor(ds.mean).view(3, 1, 1), torch.tensor(ds.std).view(3, 1, 1)
    first = ((ds.x_test[0] * std + mean) * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(first, batches["test_batch"][0].reshape(3, 32, 32))


def test_missing_cifar_batch_is_named(tmp_path: Path) -> None:
    make_cifar(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(UsageError) as caught:
        load_dataset("cifar10", data_dir=tmp_path)
    message = str(caught.value)
    assert "data_batch_3" in message and str(tmp_path / "cifar-10-batches-py") in message
    assert "--data-dir" in message


def test_no_cifar_anywhere_names_every_place(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        load_dataset("cifar10", data_dir=tmp_path)
    message = str(caught.value)
    for place in ("cifar10", "cifar-10-batches-py", "cifar10/cifar-10-batches-py"):
        assert str(tmp_path / place) in message
    assert "test_batch" in message and "$LOCALLEARN_DATA" in message


@pytest.mark.parametrize("damage", ["garbage", "truncated", "not_a_dict", "wrong_width"])
def test_corrupt_cifar_batch_is_named(tmp_path: Path, damage: str) -> None:
    make_cifar(tmp_path / "cifar10")
    path = tmp_path / "cifar10" / "data_batch_2"
    if damage == "garbage":
        path.write_bytes(b"\x00\x01 this is not a pickle")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:500])
    elif damage == "not_a_dict":
        path.write_bytes(pickle.dumps([1, 2, 3]))
    else:
        bad = {b"data": np.zeros((20, 100), np.uint8), b"labels": [0] * 20}
        path.write_bytes(pickle.dumps(bad))
    with pytest.raises(UsageError) as caught:
        load_dataset("cifar10", data_dir=tmp_path)
    assert str(path) in str(caught.value)


# --- the real MNIST, when present ----------------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
# Beside the repository (a developer checkout) or inside it (a copy that carries shared/).
SHARED_DATA = [REPO.parent / "shared" / "data", REPO / "shared" / "data"]


def test_real_mnist_loads() -> None:
    found = [d for d in SHARED_DATA if (d / "mnist").is_dir()]
    if not found:
        pytest.skip(
            "../shared/data/mnist not present: the real MNIST idx files are only on machines "
            "that carry them; looked in " + ", ".join(str(d) for d in SHARED_DATA)
        )
    ds = load_dataset("mnist", data_dir=found[0])
    assert (len(ds.x_train), len(ds.x_test)) == (60000, 10000)
    assert ds.input_shape == (1, 28, 28)
    assert np.bincount(ds.y_train.numpy()).tolist()[:2] == [5923, 6742]  # the known counts
    assert abs(ds.mean[0] - 0.1307) < 1e-3 and abs(ds.std[0] - 0.3081) < 1e-3
