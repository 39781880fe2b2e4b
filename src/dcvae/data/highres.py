"""The paper's high-resolution data sets in their on-disk formats: CelebA, CelebA-HQ and LSUN Bedroom.

Items follow `datasets.py`: (image float32 [3, R, R] in [-1, 1], pixel p -> p / 127.5 - 1; label -1), with a one-line
`description` (source, split, count, every transform) and `labels` (None: all three are unlabeled; CelebA's 40 binary
attributes are in `attributes` instead). Images are never upsampled: a source smaller than the target raises
`UserError` when the data set is built (the first image is checked) and again for any later image when it is read.

CelebA and CelebA-HQ are files read through `ImageFolder`'s machinery (the data.on_bad_image policy, skip bookkeeping
across DataLoader workers, `fit_image`'s conversion); LSUN is an lmdb database read with the `lmdb` package.
"""
from __future__ import annotations

import functools
import io
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import Dataset

from ..config import DataConfig
from ..errors import UserError
from .datasets import (IMAGE_EXTENSIONS, MAX_IMAGE_FILE_BYTES, PIXEL_SCALING, BadImage, ImageFolder, _check_index,
                       _classify, _data_root, bad_file_policy_text, fit_image)

# ---------------------------------------------------------------------------------------------------- shared


def _open_image(source: Path | bytes) -> Image.Image:
    """A file or encoded bytes -> an opened (not yet decoded) PIL image.

    Makes the checks that `datasets._decode_image` and `fit_image` make before decoding (empty, over
    MAX_IMAGE_FILE_BYTES, over PIL's Image.MAX_IMAGE_PIXELS), raising `BadImage` with the same kinds, so that the
    bad-file policy words these files the same way. Here, unlike `_decode_image`, the caller sees the image's size
    before anything is resized (to refuse upsampling) and may crop first (CelebA, LSUN).
    """
    size = len(source) if isinstance(source, bytes) else source.stat().st_size
    # PIL calls an empty file "cannot identify image file", which hides the usual cause: an interrupted copy.
    if size == 0:
        raise BadImage("empty file", "the file has 0 bytes")
    if size > MAX_IMAGE_FILE_BYTES:
        raise BadImage("too large", f"file is {size / 2**20:.0f} MB, over the {MAX_IMAGE_FILE_BYTES // 2**20} MB "
                       "limit for one image")
    with warnings.catch_warnings():
        # PIL only warns between 1x and 2x Image.MAX_IMAGE_PIXELS; refused below instead.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        opened = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    limit, (width, height) = Image.MAX_IMAGE_PIXELS, opened.size
    if limit and width * height > limit:
        opened.close()
        raise BadImage("decompression bomb", f"{width}x{height} = {width * height} pixels, over PIL's "
                       f"Image.MAX_IMAGE_PIXELS = {limit}")
    return opened


def _centre_square(opened: Image.Image, side: int) -> Image.Image:
    """The centred side x side square of an opened image, after its EXIF orientation is applied (so that the crop is
    centred on the image as seen); offsets rounded down. Cropping before resizing keeps the dropped parts out of the
    edge pixels, which a resize filter would otherwise reach into."""
    upright = ImageOps.exif_transpose(opened)
    left, top = (upright.width - side) // 2, (upright.height - side) // 2
    return upright.crop((left, top, left + side, top + side))


# what replaces an unreadable file under data.on_bad_image=skip (`_ListedImageFiles` reads a split, not a folder)
SPLIT_REPLACEMENT = "the next readable file of the split"


class _ListedImageFiles(ImageFolder):
    """`ImageFolder` over a given list of files (a split) instead of every file under a folder.

    Inherits reading by index with the data.on_bad_image policy (`load_item`, `skipped`, `remember_skipped`), so the
    batch stream counts and lists skipped files as it does for folders. Subclasses define `_load(path)` -> float32
    [3, R, R] in [-1, 1]; a `UserError` there (an image too small) stops the run whatever the policy.
    """

    def __init__(self, folder: Path, paths: list[Path], channels: int, resolution: int, on_bad_image: str):
        # ImageFolder.__init__ is not called: it lists the folder recursively, and these data sets take their files
        # from a split (a list file, or a slice of the sorted folder).
        self.folder, self.paths = folder, paths
        self.channels, self.resolution, self.on_bad_image = channels, resolution, on_bad_image
        self.skipped: dict[str, str] = {}
        self.description = ""

    def _first_readable_size(self) -> tuple[Path, int, int] | None:
        """(path, width, height) of the first file of the split whose header can be read, or None. A file that
        cannot be read is left to the bad-file policy when training reads it."""
        for path in self.paths:
            try:
                with _open_image(path) as opened:
                    return path, opened.width, opened.height
            except Exception:   # decoders raise almost any exception type on a corrupt file
                continue
        return None


# ---------------------------------------------------------------------------------------------------- CelebA

CELEBA_URL = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"
# The square cut from the centre of each 178x218 aligned image before resizing: the 140x140 centre crop of the CelebA
# 64x64 protocol common in the autoencoder literature (e.g. WAE, Tolstikhin et al. 2018: centre crop, then resize),
# also used here at 128. It keeps the face and drops most of the background; targets above it would need upsampling
# and are refused. (ProGAN's own dataset tool cuts 128x128 around (89, 121) instead, without resizing.)
CELEBA_CROP = 140
CELEBA_SPLIT_CODES = {"train": (0,), "valid": (1,), "test": (2,), "all": (0, 1, 2)}
CELEBA_ATTRIBUTE_COUNT = 40


def _celeba_folder(root: Path) -> Path:
    """torchvision's ROOT/celeba, or ROOT itself when it is that folder (data.root pointed one level too deep)."""
    if not (root / "celeba").is_dir() and (root / "img_align_celeba").is_dir():
        return root
    return root / "celeba"


def read_celeba_partition(path: Path) -> list[tuple[str, int]]:
    """list_eval_partition.txt ("000001.jpg 0" lines; 0 train, 1 valid, 2 test) -> [(file name, code)] in file
    order. Raises `UserError` naming the first malformed line."""
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or fields[1] not in ("0", "1", "2"):
            raise UserError(f"{path} line {number} is {line.strip()[:80]!r}, not '<image file> <0|1|2>'; replace "
                            f"the file with CelebA's list_eval_partition.txt ({CELEBA_URL})")
        pairs.append((fields[0], int(fields[1])))
    return pairs


def read_celeba_attributes(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """list_attr_celeba.txt -> (the 40 attribute names, file names [N] (object array of str), attributes uint8
    [N, 40] in {0, 1}).

    The file: a line with the count N, a line with the 40 names, then N lines "000001.jpg -1  1 ..." (1 = has the
    attribute, -1 = has not). Raises `UserError` naming what is malformed."""
    fix = f"replace it with CelebA's list_attr_celeba.txt ({CELEBA_URL})"
    lines = path.read_text().split("\n", 2)
    if len(lines) < 2 or not lines[0].strip().isdigit():
        raise UserError(f"{path} does not start with a line holding the image count; {fix}")
    count, names = int(lines[0]), lines[1].split()
    if len(names) != CELEBA_ATTRIBUTE_COUNT:
        raise UserError(f"{path} line 2 names {len(names)} attributes, not {CELEBA_ATTRIBUTE_COUNT}; {fix}")
    # One split of the whole body, compared as Python strings (object dtype: half the time of numpy's fixed-width
    # strings): one to two seconds for the 202,599 rows.
    tokens = np.array(lines[2].split() if len(lines) > 2 else [], dtype=object)
    width = CELEBA_ATTRIBUTE_COUNT + 1
    if tokens.size != count * width:
        raise UserError(f"{path} says {count} images of {CELEBA_ATTRIBUTE_COUNT} attributes, so "
                        f"{count * width} fields after line 2, but holds {tokens.size}; {fix}")
    table = tokens.reshape(count, width)
    values = table[:, 1:]
    has, has_not = values == "1", values == "-1"
    bad = np.flatnonzero(~(has | has_not).all(axis=1))
    if bad.size:
        row = table[bad[0]]
        raise UserError(f"{path}: the row of {row[0]} (line {bad[0] + 3}) has values other than 1 and -1; {fix}")
    return names, table[:, 0], has.astype(np.uint8)


class CelebA(_ListedImageFiles):
    """CelebA's aligned crops (img_align_celeba, 178x218 JPEGs) in torchvision's layout, one split of
    list_eval_partition.txt, in that file's order.

    Items: float32 [3, R, R] in [-1, 1], label -1. Per image: EXIF orientation applied, the centred CELEBA_CROP x
    CELEBA_CROP square cut, converted to RGB, resized to R x R (PIL bilinear, antialiased). `attributes`: uint8
    [N, 40] in {0, 1} (row i belongs to item i), named by `attribute_names` (list_attr_celeba.txt's order).
    """

    def __init__(self, root: Path, split: str, channels: int, resolution: int, on_bad_image: str):
        if resolution > CELEBA_CROP:
            raise UserError(f"CelebA images are cut to their centred {CELEBA_CROP}x{CELEBA_CROP} square, smaller than "
                            f"the target {resolution}x{resolution}, and are never upsampled; use "
                            f"data.dataset=celebahq for resolutions above {CELEBA_CROP}, or set model.resolution to "
                            f"{CELEBA_CROP} or less (64 or 128 in the paper)")
        folder = _celeba_folder(root)
        images, partition_file, attribute_file = (folder / "img_align_celeba", folder / "list_eval_partition.txt",
                                                  folder / "list_attr_celeba.txt")
        missing = [p.name + ("/" if p is images else "") for p, present in
                   ((images, images.is_dir()), (partition_file, partition_file.is_file()),
                    (attribute_file, attribute_file.is_file())) if not present]
        if missing:
            raise UserError(
                f"CelebA not found: expected {folder}/ with img_align_celeba/ (the 202,599 aligned 178x218 JPEGs, "
                f"000001.jpg ..), list_eval_partition.txt and list_attr_celeba.txt (torchvision's layout); missing: "
                f"{', '.join(missing)}. Get them from {CELEBA_URL} (img_align_celeba.zip, Eval/ and Anno/), or run "
                f"torchvision.datasets.CelebA('{folder.parent}', download=True) on a machine with internet, then set "
                f"data.root to the folder that contains celeba")
        codes = CELEBA_SPLIT_CODES[split]
        names = [name for name, code in read_celeba_partition(partition_file) if code in codes]
        if not names:
            raise UserError(f"{partition_file} lists no images of split {split!r}; replace it with CelebA's "
                            f"list_eval_partition.txt ({CELEBA_URL})")
        super().__init__(images, [images / name for name in names], channels, resolution, on_bad_image)

        self.attribute_names, attribute_files, attributes = read_celeba_attributes(attribute_file)
        if len(attribute_files) >= len(names) and (attribute_files[:len(names)] == np.array(names)).all():
            rows = np.arange(len(names))   # the official files: both list the images in the same order
        else:
            row_of = {name: i for i, name in enumerate(attribute_files.tolist())}
            absent = [name for name in names if name not in row_of]
            if absent:
                raise UserError(f"{attribute_file} has no attributes for {len(absent)} images of the {split} split "
                                f"(e.g. {absent[0]}); replace it with CelebA's list_attr_celeba.txt ({CELEBA_URL})")
            rows = np.array([row_of[name] for name in names])
        self.attributes = torch.from_numpy(np.ascontiguousarray(attributes[rows]))

        if not self.paths[0].is_file():
            raise UserError(f"{self.paths[0]}, the first image of list_eval_partition.txt's {split} split, does not "
                            f"exist: {images} is incomplete; extract img_align_celeba.zip ({CELEBA_URL}) there again")
        # Only the first readable file is checked here (all CelebA images are 178x218); `_load` checks each one.
        first = self._first_readable_size()
        if first is not None:
            self._refuse_small(*first)
        resize = ("not resized" if resolution == CELEBA_CROP else
                  f"resized to {resolution}x{resolution} (PIL bilinear, antialiased)")
        self.description = (
            f"CelebA {split}, {len(self)} images from {images} (split: list_eval_partition.txt; 40 attributes from "
            f"list_attr_celeba.txt in .attributes), labels -1; each image: EXIF orientation applied, centre "
            f"{CELEBA_CROP}x{CELEBA_CROP} crop (CELEBA_CROP, the CelebA 64x64 protocol's), converted to RGB by "
            f"PIL, {resize}; {PIXEL_SCALING}; "
            f"an image smaller than the crop is an error; unreadable files are "
            f"{bad_file_policy_text(on_bad_image, SPLIT_REPLACEMENT)}")

    def _refuse_small(self, path: Path, width: int, height: int) -> None:
        if width < CELEBA_CROP or height < CELEBA_CROP:
            raise UserError(f"CelebA image {path} is {width}x{height}, smaller than the {CELEBA_CROP}x{CELEBA_CROP} "
                            f"centre crop (aligned CelebA images are 178x218), and images are never upsampled; "
                            f"replace it with the file from img_align_celeba.zip ({CELEBA_URL})")

    def _load(self, path: Path) -> torch.Tensor:
        with _open_image(path) as opened:
            self._refuse_small(path, opened.width, opened.height)
            return fit_image(_centre_square(opened, CELEBA_CROP), self.channels, self.resolution)[0]


# ---------------------------------------------------------------------------------------------------- CelebA-HQ

CELEBAHQ_COUNT = 30_000
CELEBAHQ_TEST_COUNT = 1_000   # IntroVAE's split: the last 1,000 images by file name are the test set
CELEBAHQ_SOURCE = ("the ProGAN repository's dataset_tool.py (https://github.com/tkarras/progressive_growing_of_gans: "
                   "create_celebahq, then extract to one image file per face), or a ready export named by index "
                   "(00000.png .. 29999.png, or 0.jpg .. 29999.jpg as in CelebAMask-HQ's CelebA-HQ-img)")

Named = TypeVar("Named", str, Path)


def _natural_key(name: str) -> list[Any]:
    # Digit runs compare as numbers, so '2.jpg' < '10.jpg' in exports without zero padding; zero-padded names sort
    # as plain text would. re.split alternates text and digits, so equal positions always hold equal types.
    return [int(part) if i % 2 else part for i, part in enumerate(re.split(r"(\d+)", name))]


def celebahq_split(files: Sequence[Named], split: str, source: str = "the folder") -> list[Named]:
    """IntroVAE's CelebA-HQ split of `files` (names or paths): sorted by file name (digit runs as numbers), the first
    29,000 are `train`, the last 1,000 `test`; `all` is every file, sorted, whatever the count.

    Raises `UserError` when train or test is asked of anything but 30,000 files (`source` names where they came
    from in the message)."""
    ordered = sorted(files, key=lambda f: (_natural_key(Path(f).name), str(f)))
    if split == "all":
        return ordered
    if len(ordered) != CELEBAHQ_COUNT:
        raise UserError(
            f"CelebA-HQ split {split!r} needs the {CELEBAHQ_COUNT} CelebA-HQ images (IntroVAE's split: sorted by "
            f"file name, the first {CELEBAHQ_COUNT - CELEBAHQ_TEST_COUNT} train, the last {CELEBAHQ_TEST_COUNT} "
            f"test), but {source} holds {len(ordered)} image files; point data.root at a folder holding exactly one "
            f"resolution of CelebA-HQ (subfolders are searched, so a folder of several resolutions counts each face "
            f"several times), or set data.split=all to use every file it holds")
    cut = CELEBAHQ_COUNT - CELEBAHQ_TEST_COUNT
    return ordered[:cut] if split == "train" else ordered[cut:]


class CelebAHQ(_ListedImageFiles):
    """CelebA-HQ as a folder of image files (searched recursively), one split of `celebahq_split`.

    Items: float32 [3, R, R] in [-1, 1], label -1; each image as `ImageFolder` reads it (EXIF orientation, RGB,
    shorter side resized to R with PIL bilinear antialiased, centre crop), except that an image whose shorter side is
    below R is refused instead of upsampled.
    """

    def __init__(self, folder: Path, split: str, channels: int, resolution: int, on_bad_image: str):
        if not folder.is_dir():
            raise UserError(
                f"CelebA-HQ not found: data.root={str(folder)!r} is not a folder. Expected a folder of the "
                f"{CELEBAHQ_COUNT} CelebA-HQ images at one resolution ({' '.join(IMAGE_EXTENSIONS)}), e.g. from "
                f"{CELEBAHQ_SOURCE}; the train/test split is IntroVAE's (sorted by name, last "
                f"{CELEBAHQ_TEST_COUNT} test). Set data.root to that folder")
        files = [p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()]
        if not files:
            raise UserError(f"CelebA-HQ not found: no image files under {folder} (searched recursively for "
                            f"{' '.join(IMAGE_EXTENSIONS)}); expected the {CELEBAHQ_COUNT} CelebA-HQ images, e.g. "
                            f"from {CELEBAHQ_SOURCE}")
        total = len(files)
        super().__init__(folder, celebahq_split(files, split, str(folder)), channels, resolution, on_bad_image)
        # Only the first readable file is checked here (CelebA-HQ exports have one size); `_load` checks each one.
        first = self._first_readable_size()
        if first is not None:
            self._refuse_small(*first)
        first_size = f" (the first is {first[1]}x{first[2]})" if first is not None else ""
        self.description = (
            f"CelebA-HQ {split} (IntroVAE split: sorted by file name, the first {CELEBAHQ_COUNT - CELEBAHQ_TEST_COUNT}"
            f" train, the last {CELEBAHQ_TEST_COUNT} test), {len(self)} of {total} images under {folder}{first_size}, "
            f"labels -1; each image: EXIF orientation applied, converted to RGB by PIL, shorter side resized to "
            f"{resolution} (PIL bilinear, antialiased; not when already {resolution}), centre-cropped to "
            f"{resolution}x{resolution}; {PIXEL_SCALING}; an image smaller than {resolution} is an error; unreadable "
            f"files are {bad_file_policy_text(on_bad_image, SPLIT_REPLACEMENT)}")

    def _refuse_small(self, path: Path, width: int, height: int) -> None:
        if min(width, height) < self.resolution:
            raise UserError(f"CelebA-HQ image {path} is {width}x{height}, smaller than the target {self.resolution}x"
                            f"{self.resolution}, and images are never upsampled; point data.root at CelebA-HQ "
                            f"exported at {self.resolution} or more (e.g. the 1024x1024 images), or lower "
                            f"model.resolution to {min(width, height)} or less")

    def _load(self, path: Path) -> torch.Tensor:
        with _open_image(path) as opened:
            self._refuse_small(path, opened.width, opened.height)
            return fit_image(opened, self.channels, self.resolution)[0]


# ---------------------------------------------------------------------------------------------------- LSUN Bedroom

LSUN_URL = "https://github.com/fyu/lsun"
# LSUN releases no test images for its scene categories: the held-out split is val (300 bedrooms), which is also
# what the evaluation tools' default split "test" reads.
LSUN_FOLDERS = {"train": "bedroom_train_lmdb", "val": "bedroom_val_lmdb", "test": "bedroom_val_lmdb"}


def _import_lmdb() -> Any:
    try:
        import lmdb
    except ImportError:
        raise UserError("LSUN's databases are read with the lmdb package, which is not installed: pip install "
                        "'lmdb>=1.4,<4'") from None
    return lmdb


def _open_lmdb(path: Path) -> Any:
    """Read-only, without the lock file (the databases are never written, and may sit on read-only storage), and
    without readahead (random access over tens of GB: readahead would fill the page cache with unused pages)."""
    return _import_lmdb().open(str(path), readonly=True, lock=False, readahead=False, meminit=False)


@functools.lru_cache(maxsize=4)
def _lmdb_keys(path: str, size: int, mtime_ns: int) -> np.ndarray:
    """Every key of the database at `path`, in the database's (sorted) order, as a read-only array of bytes.

    A process lists them once (size and mtime of data.mdb are part of the cache key, so a replaced database is listed
    again). For LSUN Bedroom's 3,033,042 records that reads every leaf page of the B-tree: about 0.5 us per key in
    Python (some 2 s), plus the disk's time to read a few hundred MB scattered through the 43 GB file: seconds on
    an SSD, minutes on a disk that seeks. One fixed-width array, not a list of 3M bytes objects: DataLoader workers
    share its pages after fork, where reference counting on a list's items would copy them into every worker."""
    env = _open_lmdb(Path(path))
    try:
        with env.begin(write=False) as txn:
            keys = list(txn.cursor().iternext(keys=True, values=False))
    finally:
        env.close()
    # numpy's bytes dtype drops trailing NUL bytes on the way out; such keys (not LSUN's hex ids) stay objects.
    array = np.array(keys, dtype=object if any(k.endswith(b"\0") for k in keys) else bytes)
    array.setflags(write=False)
    return array


class LSUNBedroom(Dataset):
    """LSUN Bedroom as distributed: an lmdb database (bedroom_train_lmdb/data.mdb) of encoded WebP/JPEG images
    under ASCII hex keys, items in key order.

    Items: float32 [3, R, R] in [-1, 1], label -1. Per image (ProGAN's LSUN protocol): decoded by PIL, the centred
    square of side min(width, height) cut, converted to RGB, resized to R x R (PIL bilinear, antialiased). An image
    whose shorter side is below R, or a record that cannot be decoded, raises `UserError` naming its key.

    The keys are listed once per process, at build time (`_lmdb_keys`). The database is opened for each read and
    closed after it (about 40 us, against milliseconds of decoding), so that no process ever holds it open between
    reads: py-lmdb refuses to open one environment twice in a process, and a forked DataLoader worker could not open
    one that its parent held open at the fork (lmdb forbids using an environment across fork, and py-lmdb keeps the
    parent's claim on it in the child).
    """

    labels = None

    def __init__(self, path: Path, split: str, channels: int, resolution: int):
        self.path, self.split, self.channels, self.resolution = path, split, channels, resolution
        lmdb = _import_lmdb()
        expected = (f"the lmdb database as distributed: a folder {path.name}/ holding data.mdb (and lock.mdb), "
                    f"unzipped from {path.name}.zip")
        try:
            stat = (path / "data.mdb").stat()
            self.keys = _lmdb_keys(str(path), stat.st_size, stat.st_mtime_ns)
        except (FileNotFoundError, NotADirectoryError):
            raise UserError(
                f"LSUN bedroom {split} not found: expected {path}/ with data.mdb, {expected}. Download it with the "
                f"script of {LSUN_URL} (python download.py -c bedroom), unzip it in {path.parent} and set data.root "
                f"to the folder that contains {path.name}") from None
        except lmdb.Error as e:
            raise UserError(f"{path} is not a readable lmdb database ({type(e).__name__}: {e}); expected {expected} "
                            f"({LSUN_URL}); download and unzip it again") from None
        if not len(self.keys):
            raise UserError(f"the lmdb database {path} holds no records; expected {expected} ({LSUN_URL})")
        # Only the first record is checked here (LSUN stores images with a shorter side of 256); each read checks its
        # own image.
        self._decode(0)
        self.description = (
            f"LSUN bedroom {split}, {len(self.keys)} images from the lmdb database {path} (keys listed once at build "
            f"time and held in memory: seconds to minutes for the 3M-image train set), labels -1; each image "
            f"(ProGAN's LSUN protocol): decoded by PIL (WebP/JPEG), centre square of side min(width, height) cut, "
            f"converted to RGB, resized to {resolution}x{resolution} (PIL bilinear, antialiased); {PIXEL_SCALING}; "
            f"an image whose shorter side is below {resolution}, or an undecodable record, is an error")

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self._decode(_check_index(index, len(self))), -1

    def load_item(self, index: int) -> tuple[torch.Tensor, int, list[tuple[str, str]]]:
        """(image float32 [3, R, R] in [-1, 1], label -1, no skipped files). Having `load_item` makes the batch
        stream carry a `UserError` raised in a DataLoader worker back as its message, not a worker traceback."""
        return (*self[index], [])

    def remember_skipped(self, entries: dict[str, str]) -> None:
        """Part of the `load_item` protocol; nothing is ever skipped here (a bad record is an error)."""

    def _decode(self, index: int) -> torch.Tensor:
        key = bytes(self.keys[index])
        where = f"record {key.decode('ascii', 'backslashreplace')!r} of the lmdb database {self.path}"
        lmdb = _import_lmdb()
        try:
            env = _open_lmdb(self.path)
            try:
                with env.begin(write=False) as txn:
                    value = txn.get(key)
            finally:
                env.close()
        except (OSError, lmdb.Error) as e:
            raise UserError(f"cannot read {where} ({type(e).__name__}: {e}); it was readable when the data set was "
                            "built: restore the database and restart") from e
        if value is None:
            raise UserError(f"{where} has disappeared since its keys were listed; restart with the database unchanged")
        try:
            with _open_image(value) as opened:
                side = min(opened.size)
                if side < self.resolution:
                    raise UserError(
                        f"{where} is a {opened.width}x{opened.height} image, smaller than the target "
                        f"{self.resolution}x{self.resolution} (shorter side {side} < {self.resolution}), and images "
                        f"are never upsampled; lower model.resolution to {side} or less")
                return fit_image(_centre_square(opened, side), self.channels, self.resolution)[0]
        except UserError:
            raise
        except Exception as e:   # decoders raise almost any exception type on corrupt bytes
            raise UserError(f"cannot decode {where}: {_classify(e)}; the database is damaged: download and unzip "
                            f"it again ({LSUN_URL})") from e


def _lsun_path(data: DataConfig, split: str) -> Path:
    """ROOT/bedroom_<split>_lmdb, or ROOT itself when it is that folder."""
    root = _data_root(data)
    name = LSUN_FOLDERS[split]
    return root if root.name == name and (root / "data.mdb").exists() else root / name


# ---------------------------------------------------------------------------------------------------- entry point


def build_highres(data: DataConfig, split: str, channels: int, resolution: int) -> Dataset:
    """`build_dataset`'s branch for celeba, celebahq and lsun_bedroom (split and channels already checked)."""
    if data.dataset == "celeba":
        return CelebA(_data_root(data), split, channels, resolution, data.on_bad_image)
    if data.dataset == "celebahq":
        if not data.root:
            raise UserError(f"data.dataset=celebahq needs data.root: set data.root to the folder of the "
                            f"{CELEBAHQ_COUNT} CelebA-HQ images at one resolution, e.g. from {CELEBAHQ_SOURCE}")
        return CelebAHQ(Path(data.root).expanduser(), split, channels, resolution, data.on_bad_image)
    if data.dataset == "lsun_bedroom":
        return LSUNBedroom(_lsun_path(data, split), split, channels, resolution)
    raise AssertionError(data.dataset)
