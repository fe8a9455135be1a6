"""Image readers (SVHN .mat, STL-10 binary, CIFAR-100 pickles) and the crop/flip augmentation.

Every format is exercised on small files written here in the real on-disk layout; real copies
are not available on this machine (see ../shared/data/README.md), so the tests that would use
them skip with that reason.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import locallearn
from locallearn.data import DATASETS, load_dataset
from locallearn.data.augment import CropFlip, black_fill, crop, hflip, pad
from locallearn.errors import UsageError

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = [REPO.parent / "shared" / "data", REPO / "shared" / "data"]


@pytest.fixture(autouse=True)
def no_default_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # No test may pick up files from ~/.locallearn/data.
    monkeypatch.setenv("LOCALLEARN_DATA", str(tmp_path / "no-data-here"))


def unnormalise(ds: locallearn.data.Dataset, x: torch.Tensor) -> np.ndarray:
    """Back to the uint8 pixels the file held."""
    c = len(ds.mean)
    mean = torch.tensor(ds.mean).view(c, 1, 1)
    std = torch.tensor(ds.std).view(c, 1, 1)
    return ((x * std + mean) * 255).round().to(torch.uint8).numpy()


def check_normalised(ds: locallearn.data.Dataset) -> None:
    per_channel = ds.x_train.transpose(0, 1).reshape(ds.x_train.shape[1], -1)
    assert per_channel.mean(dim=1).abs().max() < 1e-4
    assert (per_channel.std(dim=1) - 1).abs().max() < 1e-3


# --- SVHN ----------------------------------------------------------------------------------


def make_svhn(directory: Path, n_train: int = 30, n_test: int = 12) -> dict[str, np.ndarray]:
    """MATLAB v5 files as distributed: X (32, 32, 3, N) uint8, y (N, 1) with 10 for digit 0."""
    from scipy.io import savemat

    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(5)
    out = {}
    for name, n in (("train_32x32.mat", n_train), ("test_32x32.mat", n_test)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        x[:, :, 2] //= 3  # a darker blue channel
        y = (np.arange(n) % 10 + 1).astype(np.uint8).reshape(n, 1)  # 1..10
        savemat(directory / name, {"X": x, "y": y}, format="5")
        out[name] = x
    return out


@pytest.mark.parametrize("layout", ["svhn", "SVHN", ""])
def test_svhn_loads_with_digit_labels(tmp_path: Path, layout: str) -> None:
    files = make_svhn(tmp_path / layout if layout else tmp_path)
    ds = load_dataset("svhn", data_dir=tmp_path)
    assert ds.input_shape == tuple(DATASETS.get("svhn").meta["shape"]) == (3, 32, 32)
    assert (len(ds.x_train), len(ds.x_test), ds.classes) == (30, 12, 10)
    # File labels 1, 2, ..., 10 are the digits 1, 2, ..., 9, 0.
    assert ds.y_train[:10].tolist() == [1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    check_normalised(ds)
    assert ds.mean[2] < ds.mean[0]
    # X[row, col, channel, image] is pixel (channel, row, col) of that image.
    raw = files["test_32x32.mat"]
    np.testing.assert_array_equal(unnormalise(ds, ds.x_test[3]), raw[:, :, :, 3].transpose(2, 0, 1))


def test_svhn_missing_file_is_named(tmp_path: Path) -> None:
    make_svhn(tmp_path / "svhn")
    (tmp_path / "svhn" / "test_32x32.mat").unlink()
    with pytest.raises(UsageError) as caught:
        load_dataset("svhn", data_dir=tmp_path)
    message = str(caught.value)
    assert "test_32x32.mat" in message and str(tmp_path / "svhn") in message


def test_no_svhn_anywhere_names_every_place(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        load_dataset("svhn", data_dir=tmp_path)
    message = str(caught.value)
    for place in ("svhn", "SVHN"):
        assert str(tmp_path / place) in message
    assert "train_32x32.mat" in message and "--data-dir" in message


@pytest.mark.parametrize("damage", ["garbage", "truncated", "wrong_shape", "bad_label", "no_y"])
def test_corrupt_svhn_file_is_named(tmp_path: Path, damage: str) -> None:
    from scipy.io import savemat

    make_svhn(tmp_path / "svhn")
    path = tmp_path / "svhn" / "train_32x32.mat"
    if damage == "garbage":
        path.write_bytes(b"MATLAB 5.0 MAT-file, but nothing after this" + bytes(200))
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:3000])
    elif damage == "wrong_shape":
        savemat(path, {"X": np.zeros((28, 28, 1, 4), np.uint8), "y": np.ones((4, 1))})
    elif damage == "bad_label":
        savemat(path, {"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.full((4, 1), 11)})
    else:
        savemat(path, {"X": np.zeros((32, 32, 3, 4), np.uint8)})
    with pytest.raises(UsageError) as caught:
        load_dataset("svhn", data_dir=tmp_path)
    assert str(path) in str(caught.value) and "corrupt" in str(caught.value)


# --- STL-10 --------------------------------------------------------------------------------


def make_stl10(directory: Path, n_train: int = 6, n_test: int = 4) -> dict[str, np.ndarray]:
    """The binary release: images back to back, each plane column-major; labels 1..10.

    Returns the images as (N, 3, 96, 96) in row-major order (what the reader must give back).
    """
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)
        images[:, 0] //= 2
        # Column-major plane: write the transpose of each plane in C order.
        (directory / f"{split}_X.bin").write_bytes(images.transpose(0, 1, 3, 2).tobytes())
        labels = (np.arange(n) % 10 + 1).astype(np.uint8)
        (directory / f"{split}_y.bin").write_bytes(labels.tobytes())
        out[split] = images
    return out


@pytest.mark.parametrize("layout", ["stl10", "stl10_binary", "stl10/stl10_binary", ""])
def test_stl10_loads_rows_first(tmp_path: Path, layout: str) -> None:
    images = make_stl10(tmp_path / layout if layout else tmp_path)
    ds = load_dataset("stl10", data_dir=tmp_path)
    assert ds.input_shape == tuple(DATASETS.get("stl10").meta["shape"]) == (3, 96, 96)
    assert (len(ds.x_train), len(ds.x_test), ds.classes) == (6, 4, 10)
    assert ds.y_train.tolist() == [0, 1, 2, 3, 4, 5]  # file labels 1..6
    check_normalised(ds)
    assert ds.mean[0] < ds.mean[1]
    np.testing.assert_array_equal(unnormalise(ds, ds.x_test[2]), images["test"][2])


def test_stl10_column_major_by_hand(tmp_path: Path) -> None:
    # One image whose red plane holds its column index in file order: the stored bytes
    # run down the columns, so the first 96 bytes are column 0, and so on.
    directory = tmp_path / "stl10_binary"
    directory.mkdir()
    red = np.repeat(np.arange(96, dtype=np.uint8), 96)  # 96 zeros (column 0), 96 ones, ...
    image = np.concatenate([red, np.zeros(2 * 96 * 96, np.uint8)])
    for split in ("train", "test"):
        (directory / f"{split}_X.bin").write_bytes(np.tile(image, 2).tobytes())
        (directory / f"{split}_y.bin").write_bytes(bytes([3, 10]))
    from locallearn.data.stl10 import read_images, read_labels

    x = read_images(directory / "train_X.bin")
    assert x.shape == (2, 3, 96, 96)
    assert (x[0, 0, 5, :] == np.arange(96)).all()  # along a row, the column index grows
    assert (x[0, 0, :, 7] == 7).all()
    assert read_labels(directory / "train_y.bin").tolist() == [2, 9]


def test_stl10_missing_file_is_named(tmp_path: Path) -> None:
    make_stl10(tmp_path / "stl10_binary")
    (tmp_path / "stl10_binary" / "test_y.bin").unlink()
    with pytest.raises(UsageError) as caught:
        load_dataset("stl10", data_dir=tmp_path)
    message = str(caught.value)
    assert "test_y.bin" in message and str(tmp_path / "stl10_binary") in message


@pytest.mark.parametrize("damage", ["partial_image", "bad_label", "empty"])
def test_corrupt_stl10_file_is_named(tmp_path: Path, damage: str) -> None:
    make_stl10(tmp_path / "stl10")
    if damage == "partial_image":
        path = tmp_path / "stl10" / "train_X.bin"
        path.write_bytes(path.read_bytes()[:-100])
    elif damage == "bad_label":
        path = tmp_path / "stl10" / "test_y.bin"
        path.write_bytes(bytes([1, 2, 0, 4]))
    else:
        path = tmp_path / "stl10" / "test_X.bin"
        path.write_bytes(b"")
    with pytest.raises(UsageError) as caught:
        load_dataset("stl10", data_dir=tmp_path)
    assert str(path) in str(caught.value) and "corrupt" in str(caught.value)


def test_stl10_image_and_label_counts_must_agree(tmp_path: Path) -> None:
    make_stl10(tmp_path / "stl10")
    (tmp_path / "stl10" / "train_y.bin").write_bytes(bytes([1, 2, 3]))
    with pytest.raises(UsageError, match="6 images but .* 3 labels"):
        load_dataset("stl10", data_dir=tmp_path)


# --- CIFAR-100 -----------------------------------------------------------------------------


def make_cifar100(directory: Path, n_train: int = 200, n_test: int = 50) -> dict[str, np.ndarray]:
    """The python release: ``train``/``test`` pickles with fine and coarse labels, ``meta``."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    out = {}
    for name, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        data[:, 2048:] //= 2  # darker blue
        fine = [(7 * j) % 100 for j in range(n)]
        batch = {
            b"filenames": [f"{j}.png".encode() for j in range(n)],
            b"batch_label": name.encode(),
            b"fine_labels": fine,
            b"coarse_labels": [f // 5 for f in fine],
            b"data": data,
        }
        with (directory / name).open("wb") as f:
            pickle.dump(batch, f, protocol=2)
        out[name] = data
    meta = {
        b"fine_label_names": [f"class{i}".encode() for i in range(100)],
        b"coarse_label_names": [f"super{i}".encode() for i in range(20)],
    }
    (directory / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    return out


@pytest.mark.parametrize("layout", ["cifar100", "cifar-100-python", ""])
def test_cifar100_loads_fine_labels(tmp_path: Path, layout: str) -> None:
    files = make_cifar100(tmp_path / layout if layout else tmp_path)
    ds = load_dataset("cifar100", data_dir=tmp_path)
    entry = DATASETS.get("cifar100")
    assert ds.input_shape == tuple(entry.meta["shape"]) == (3, 32, 32)
    assert ds.classes == entry.meta["classes"] == 100
    assert (len(ds.x_train), len(ds.x_test)) == (200, 50)
    assert ds.y_train[:4].tolist() == [0, 7, 14, 21] and int(ds.y_train.max()) == 99
    check_normalised(ds)
    assert ds.mean[2] < ds.mean[0]
    first = unnormalise(ds, ds.x_test[1])
    np.testing.assert_array_equal(first, files["test"][1].reshape(3, 32, 32))


def test_cifar100_trains_a_step(tmp_path: Path) -> None:
    make_cifar100(tmp_path / "cifar100")
    summary = locallearn.train(
        "bp", "cnn", "cifar100", data_dir=str(tmp_path), epochs=1, batch_size=100, width=4
    )
    assert summary["train_size"] + summary["val_size"] == 200  # --val-split holds out 20
    assert 0 <= summary["test_acc"] <= 1


def test_cifar100_missing_meta_is_named(tmp_path: Path) -> None:
    make_cifar100(tmp_path / "cifar-100-python")
    (tmp_path / "cifar-100-python" / "meta").unlink()
    with pytest.raises(UsageError) as caught:
        load_dataset("cifar100", data_dir=tmp_path)
    assert "meta" in str(caught.value) and str(tmp_path / "cifar-100-python") in str(caught.value)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "cifar10_batch", "label_100", "meta"])
def test_corrupt_cifar100_file_is_named(tmp_path: Path, damage: str) -> None:
    make_cifar100(tmp_path / "cifar100")
    path = tmp_path / "cifar100" / ("meta" if damage == "meta" else "train")
    if damage == "garbage":
        path.write_bytes(b"\x00\x01 not a pickle")
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[:700])
    elif damage == "cifar10_batch":  # a CIFAR-10 batch has b"labels", no b"fine_labels"
        path.write_bytes(pickle.dumps({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0] * 4}))
    elif damage == "label_100":
        bad = {b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [3, 100]}
        path.write_bytes(pickle.dumps(bad))
    else:  # CIFAR-10's batches.meta in place of CIFAR-100's meta
        path.write_bytes(pickle.dumps({b"label_names": [b"cat"] * 10}))
    with pytest.raises(UsageError) as caught:
        load_dataset("cifar100", data_dir=tmp_path)
    assert str(path) in str(caught.value) and "corrupt" in str(caught.value)


# --- real copies, when present --------------------------------------------------------------


@pytest.mark.parametrize(
    "name, folder, sizes",
    [
        ("svhn", "svhn", (73257, 26032)),
        ("stl10", "stl10_binary", (5000, 8000)),
        ("cifar100", "cifar-100-python", (50000, 10000)),
    ],
)
def test_real_copy_loads(name: str, folder: str, sizes: tuple[int, int]) -> None:
    found = [d for d in SHARED_DATA if (d / name).is_dir() or (d / folder).is_dir()]
    if not found:
        pytest.skip(
            f"no real {name} copy in ../shared/data (its README: CIFAR-10/100, SVHN and STL-10 "
            "could not be obtained offline); the reader is tested on generated files above"
        )
    ds = load_dataset(name, data_dir=found[0])
    assert (len(ds.x_train), len(ds.x_test)) == sizes


# --- augmentation --------------------------------------------------------------------------


def test_datasets_carry_the_recipe_of_the_papers(tmp_path: Path) -> None:
    make_svhn(tmp_path / "svhn")
    make_stl10(tmp_path / "stl10")
    make_cifar100(tmp_path / "cifar100")
    expected = {"svhn": (2, False), "stl10": (4, True), "cifar100": (4, True)}
    for name, (padding, flip) in expected.items():
        ds = load_dataset(name, data_dir=tmp_path)
        assert isinstance(ds.augment, CropFlip), name
        assert (ds.augment.padding, ds.augment.flip, ds.augment.mode) == (padding, flip, "constant")
        assert ds.augment.fill == pytest.approx(black_fill(ds.mean, ds.std))
    # A limited training set keeps its augmentation.
    assert load_dataset("svhn", data_dir=tmp_path, train_limit=10).augment is not None


def test_black_fill_is_a_raw_zero_pixel_after_normalising() -> None:
    assert black_fill((0.5, 0.25), (0.25, 0.5)) == (-2.0, -0.5)


def test_pad_by_hand() -> None:
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]], [[[5.0, 6.0], [7.0, 8.0]]]])  # (2, 1, 2, 2)
    padded = pad(x, 1, fill=(-9.0,))
    assert padded.shape == (2, 1, 4, 4)
    assert padded[0, 0].tolist() == [
        [-9, -9, -9, -9],
        [-9, 1, 2, -9],
        [-9, 3, 4, -9],
        [-9, -9, -9, -9],
    ]
    reflected = pad(x, 1, mode="reflect")
    assert reflected[0, 0, 0].tolist() == [4, 3, 4, 3]
    two = pad(torch.zeros(1, 2, 1, 1), 1, fill=(1.0, 2.0))
    assert two[0, 0, 0, 0] == 1 and two[0, 1, 0, 0] == 2


def test_crop_is_a_shift_of_the_padded_image_by_hand() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    padded = pad(x, 2, fill=(-1.0, -2.0, -3.0))
    top, left = torch.tensor([0, 3]), torch.tensor([4, 1])
    out = crop(padded, top, left, (4, 4))
    assert out.shape == x.shape
    # Image 0, corner (0, 4): two rows of border on top, then rows 0-1 of x shifted left by 2.
    assert out[0, 0, :2].tolist() == [[-1.0] * 4] * 2
    assert out[0, 0, 2].tolist() == [2.0, 3.0, -1.0, -1.0]
    assert out[0, 1, 3].tolist() == [16 + 6.0, 16 + 7.0, -2.0, -2.0]
    # Image 1, corner (3, 1): rows 1..3 of x then border; columns -1..2 of x.
    expected = torch.full((3, 4, 4), 0.0)
    expected[:] = torch.tensor([-1.0, -2.0, -3.0]).view(3, 1, 1)
    expected[:, :3, 1:] = x[1, :, 1:4, 0:3]
    assert torch.equal(out[1], expected)
    # The centre corner (p, p) gives the image back.
    assert torch.equal(crop(padded, torch.tensor([2, 2]), torch.tensor([2, 2]), (4, 4)), x)


def test_hflip_mirrors_only_the_chosen_images() -> None:
    x = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).reshape(2, 1, 2, 3)
    out = hflip(x, torch.tensor([True, False]))
    assert out[0, 0].tolist() == [[2.0, 1.0, 0.0], [5.0, 4.0, 3.0]]
    assert torch.equal(out[1], x[1])


def _find_shift(
    out: torch.Tensor, image: torch.Tensor, aug: CropFlip
) -> tuple[int, int, bool] | None:
    """(top, left, flipped) such that ``out`` is that window of the padded image, or None."""
    p = aug.padding
    padded = pad(image[None], p, aug.fill, aug.mode)[0]
    h, w = image.shape[1:]
    for top in range(2 * p + 1):
        for left in range(2 * p + 1):
            window = padded[:, top : top + h, left : left + w]
            for flipped in (False, True):
                if torch.equal(out, window.flip(-1) if flipped else window):
                    return top, left, flipped
    return None


def test_crop_flip_is_deterministic_and_a_real_shift() -> None:
    aug = CropFlip(padding=4, flip=True, fill=(-1.5, 0.5, 2.0))
    x = torch.randn(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    a = aug(x, torch.Generator().manual_seed(123))
    b = aug(x, torch.Generator().manual_seed(123))
    c = aug(x, torch.Generator().manual_seed(124))
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b) and not torch.equal(a, c)
    shifts = [_find_shift(a[i], x[i], aug) for i in range(len(x))]
    assert all(s is not None for s in shifts), "every output is a window of its padded input"
    tops = {s[0] for s in shifts if s}
    flips = [s[2] for s in shifts if s]
    # 64 images: all 9 offsets of each axis appear with overwhelming probability, and both
    # flip outcomes (P(all equal) = 2 * 2^-64).
    assert tops == set(range(9))
    assert 0 < sum(flips) < len(flips)


def test_no_flip_for_digits_and_generator_advances() -> None:
    aug = CropFlip(padding=2, flip=False)
    x = torch.randn(32, 3, 8, 8)
    g = torch.Generator().manual_seed(1)
    first, second = aug(x, g), aug(x, g)
    assert not torch.equal(first, second)  # the generator moved on
    shifts = [_find_shift(first[i], x[i], aug) for i in range(len(x))]
    assert all(s is not None and not s[2] for s in shifts), "never mirrored"


def test_crop_flip_keeps_the_batch_device() -> None:
    aug = CropFlip(padding=1, flip=True)
    x = torch.randn(4, 1, 5, 5, device="meta")
    # The meta device runs shapes only: proves no op sends the batch through the host.
    out = aug(x, torch.Generator().manual_seed(0))
    assert out.device.type == "meta" and out.shape == x.shape


def test_crop_flip_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="padding"):
        CropFlip(padding=-1, flip=True)
    with pytest.raises(ValueError, match="mode"):
        CropFlip(padding=1, flip=True, mode="wrap")
    with pytest.raises(ValueError, match="image batches"):
        CropFlip(padding=1, flip=True)(torch.zeros(3, 40), torch.Generator())


def test_augment_touches_training_batches_only(tmp_path: Path) -> None:
    make_cifar100(tmp_path / "cifar100", n_train=60, n_test=20)
    ds = load_dataset("cifar100", data_dir=tmp_path)
    seen: list[torch.Tensor] = []
    recipe = ds.augment

    def recording(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        seen.append(x.clone())
        return recipe(x, g)

    ds.augment = recording
    locallearn.train("bp", "cnn", ds, epochs=2, batch_size=25, width=4, augment=True)
    assert [len(x) for x in seen] == [25, 25, 10] * 2  # every training batch, nothing else
    train_rows = {tuple(r.tolist()) for r in ds.x_train.reshape(60, -1)[:, :8]}
    test_rows = {tuple(r.tolist()) for r in ds.x_test.reshape(20, -1)[:, :8]}
    batch_rows = {tuple(r.tolist()) for x in seen for r in x.reshape(len(x), -1)[:, :8]}
    assert batch_rows == train_rows and not batch_rows & test_rows
