"""The high-resolution data sets (issue 5) on tiny files written here in their real on-disk formats: a CelebA tree
(178x218 JPEGs, list_eval_partition.txt, list_attr_celeba.txt), CelebA-HQ image folders, and LSUN lmdb databases of
WebP and JPEG records written with the lmdb package."""
from __future__ import annotations

import hashlib
import io
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from dcvae.config import Config, DataConfig
from dcvae.data import build_dataset
from dcvae.data import highres
from dcvae.data.stream import BatchStream
from dcvae.errors import UserError

lmdb = pytest.importorskip("lmdb")

# Distinct colours: the quadrants of the part each loader keeps, and the border that it must drop.
QUADRANTS = [(230, 20, 20), (20, 220, 30), (30, 40, 230), (240, 230, 30)]   # top-left, top-right, bottom-l, -r
BORDER = (128, 0, 128)
JPEG_TOLERANCE = 12      # pixel levels: JPEG at quality 100 without chroma subsampling, away from colour edges


def unit(pixels: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float32 [3, H, W] in [-1, 1], as the data sets scale pixels."""
    return torch.from_numpy(np.array(pixels)).permute(2, 0, 1).float() / 127.5 - 1.0


def framed_quadrants(width: int, height: int, box: tuple[int, int, int, int], first: tuple[int, int, int] | None = None
                     ) -> np.ndarray:
    """uint8 [height, width, 3]: BORDER everywhere, the box (left, top, right, bottom) split into four QUADRANTS
    (the top-left one replaced by `first` when given, to tell images apart)."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BORDER
    left, top, right, bottom = box
    mid_x, mid_y = (left + right) // 2, (top + bottom) // 2
    colours = [first or QUADRANTS[0], *QUADRANTS[1:]]
    for (y0, y1), (x0, x1), colour in zip([(top, mid_y)] * 2 + [(mid_y, bottom)] * 2,
                                          [(left, mid_x), (mid_x, right)] * 2, colours):
        image[y0:y1, x0:x1] = colour
    return image


def assert_quadrants(x: torch.Tensor, first: tuple[int, int, int] | None = None, tolerance: float = JPEG_TOLERANCE
                     ) -> None:
    """x float32 [3, R, R] holds the four quadrant colours, up to its very edges (so no BORDER was kept), within
    `tolerance` pixel levels away from the lines where quadrants meet."""
    r = x.shape[-1]
    pixels = ((x + 1) * 127.5).round()
    half, margin = r // 2, max(2, r // 16)
    colours = [first or QUADRANTS[0], *QUADRANTS[1:]]
    for (rows, cols), colour in zip([(slice(0, half - margin), slice(0, half - margin)),
                                     (slice(0, half - margin), slice(half + margin, r)),
                                     (slice(half + margin, r), slice(0, half - margin)),
                                     (slice(half + margin, r), slice(half + margin, r))], colours):
        error = (pixels[:, rows, cols] - torch.tensor(colour, dtype=torch.float32).view(3, 1, 1)).abs().max()
        assert error <= tolerance, (colour, float(error))


def jpeg_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=100, subsampling=0)
    return buffer.getvalue()


def webp_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="WEBP", lossless=True)
    return buffer.getvalue()


def decoded(data: bytes | Path) -> np.ndarray:
    with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as im:
        return np.asarray(im.convert("RGB"))


def pil_resize(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The reference resize: PIL bilinear (antialiased when shrinking), (width, height)."""
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))


# ------------------------------------------------------------------------------------------------------ CelebA

CELEBA_BOX = (19, 39, 159, 179)   # the centred 140x140 square of a 178x218 image: (178-140)/2, (218-140)/2
ATTRIBUTE_NAMES = ["5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive"] + [f"Attribute_{i}" for i in range(3, 39)] \
    + ["Young"]
# 000001..000003 train, 000004 valid, 000005..000006 test.
CELEBA_PARTITION = [1, 1, 1, 2, 3, 3]


def first_colour(i: int) -> tuple[int, int, int]:
    return (40 * i, 100, 200 - 30 * i)


def write_celeba(root: Path, count: int = 6, attribute_order: list[int] | None = None) -> tuple[np.ndarray, list]:
    """A CelebA tree in torchvision's layout; returns (attributes {-1, 1} [count, 40], the JPEG files)."""
    folder = root / "celeba"
    (folder / "img_align_celeba").mkdir(parents=True)
    files = []
    for i in range(count):
        path = folder / "img_align_celeba" / f"{i + 1:06d}.jpg"
        path.write_bytes(jpeg_bytes(framed_quadrants(178, 218, CELEBA_BOX, first_colour(i))))
        files.append(path)
    codes = [CELEBA_PARTITION[i] - 1 for i in range(count)]
    (folder / "list_eval_partition.txt").write_text("".join(f"{i + 1:06d}.jpg {c}\n" for i, c in enumerate(codes)))
    values = np.random.default_rng(0).choice([-1, 1], size=(count, 40))
    order = attribute_order or list(range(count))
    # The real file pads values to two columns: "000001.jpg -1  1  1 -1 ...".
    rows = [f"{i + 1:06d}.jpg " + " ".join(f"{v:2d}" for v in values[i]) for i in order]
    (folder / "list_attr_celeba.txt").write_text(f"{count}\n" + " ".join(ATTRIBUTE_NAMES) + " \n"
                                                 + "\n".join(rows) + "\n")
    return values, files


def celeba(root: Path, split: str = "train", resolution: int = 64, **kw):
    return build_dataset(DataConfig(dataset="celeba", root=str(root), split=split, **kw), 3, resolution)


def test_celeba_splits_attributes_and_pixels(tmp_path):
    values, files = write_celeba(tmp_path)
    sizes = {"train": [0, 1, 2], "valid": [3], "test": [4, 5], "all": [0, 1, 2, 3, 4, 5]}
    for split, members in sizes.items():
        ds = celeba(tmp_path, split)
        assert len(ds) == len(members) and ds.labels is None
        assert [p.name for p in ds.paths] == [files[i].name for i in members]      # partition file order
        assert ds.attribute_names == ATTRIBUTE_NAMES
        assert ds.attributes.dtype == torch.uint8 and ds.attributes.shape == (len(members), 40)
        assert torch.equal(ds.attributes, torch.from_numpy((values[members] == 1).astype(np.uint8)))
        assert f"CelebA {split}, {len(members)} images" in ds.description
        assert "centre 140x140 crop" in ds.description and "resized to 64x64" in ds.description
    ds = celeba(tmp_path, "test")
    for j, i in enumerate(sizes["test"]):
        x, label = ds[j]
        assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and label == -1
        assert -1.0 <= x.min() and x.max() <= 1.0
        # The quadrants fill the image to its edges: the centred square was cut, no purple border kept.
        assert_quadrants(x, first_colour(i))
        # The exact window: the decoded JPEG cut at (19, 39) .. (159, 179), then PIL's bilinear resize.
        left, top, right, bottom = CELEBA_BOX
        reference = pil_resize(decoded(files[i])[top:bottom, left:right], (64, 64))
        assert torch.equal(x, unit(reference))


def test_celeba_at_crop_size_is_not_resized(tmp_path):
    _, files = write_celeba(tmp_path, count=1)
    ds = celeba(tmp_path, resolution=highres.CELEBA_CROP)
    left, top, right, bottom = CELEBA_BOX
    assert torch.equal(ds[0][0], unit(decoded(files[0])[top:bottom, left:right]))
    assert "not resized" in ds.description


def test_celeba_attribute_rows_found_by_name(tmp_path):
    # An attribute file listing the images in another order than the partition file.
    values, _ = write_celeba(tmp_path, attribute_order=[5, 4, 3, 2, 1, 0])
    ds = celeba(tmp_path, "test")
    assert torch.equal(ds.attributes, torch.from_numpy((values[[4, 5]] == 1).astype(np.uint8)))


def test_celeba_missing_and_malformed(tmp_path):
    with pytest.raises(UserError, match=r"CelebA not found: expected .*celeba/ with img_align_celeba/.*missing: "
                                        r"img_align_celeba/, list_eval_partition.txt, list_attr_celeba.txt.*"
                                        r"mmlab.ie.cuhk.edu.hk/projects/CelebA.html.*"
                                        r"torchvision.datasets.CelebA\(.*download=True\)"):
        celeba(tmp_path)
    write_celeba(tmp_path)
    attribute_file = tmp_path / "celeba" / "list_attr_celeba.txt"
    text = attribute_file.read_text()
    attribute_file.unlink()
    with pytest.raises(UserError, match="missing: list_attr_celeba.txt"):
        celeba(tmp_path)
    attribute_file.write_text(text.replace("000002.jpg -1", "000002.jpg  0").replace("000002.jpg  1", "000002.jpg  0"))
    with pytest.raises(UserError, match="row of 000002.jpg .line 4. has values other than 1 and -1"):
        celeba(tmp_path)
    attribute_file.write_text(text)
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg train\n")
    with pytest.raises(UserError, match=r"list_eval_partition.txt line 2 is '000002.jpg train'"):
        celeba(tmp_path)
    (tmp_path / "celeba" / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    with pytest.raises(UserError, match="lists no images of split 'test'"):
        celeba(tmp_path, "test")
    (tmp_path / "celeba" / "img_align_celeba" / "000001.jpg").unlink()
    with pytest.raises(UserError, match="000001.jpg, the first image of list_eval_partition.txt's train split, does "
                                        "not exist"):
        celeba(tmp_path)


def test_celeba_root_may_be_the_celeba_folder(tmp_path):
    write_celeba(tmp_path)
    assert len(celeba(tmp_path / "celeba")) == 3


def test_celeba_too_small(tmp_path):
    _, files = write_celeba(tmp_path)
    with pytest.raises(UserError, match="centred 140x140 square, smaller than the target 256x256, and are never "
                                        "upsampled; use data.dataset=celebahq"):
        celeba(tmp_path, resolution=256)
    # A later image that is too small: refused when read, whatever data.on_bad_image says.
    Image.fromarray(np.zeros((150, 120, 3), np.uint8)).save(files[2])
    ds = celeba(tmp_path, on_bad_image="skip")
    with pytest.raises(UserError, match=r"CelebA image .*000003.jpg is 120x150, smaller than the 140x140 centre crop"):
        ds[2]
    # The first one: refused at build time.
    Image.fromarray(np.zeros((150, 120, 3), np.uint8)).save(files[0])
    with pytest.raises(UserError, match=r"000001.jpg is 120x150, smaller than the 140x140"):
        celeba(tmp_path)


def test_celeba_bad_file_policy(tmp_path):
    _, files = write_celeba(tmp_path)
    files[1].write_bytes(jpeg_bytes(np.zeros((218, 178, 3), np.uint8))[:300])   # cut short
    with pytest.raises(UserError, match=r"cannot read image .*000002.jpg: truncated"):
        celeba(tmp_path)[1]
    ds = celeba(tmp_path, on_bad_image="skip")
    image, label, passed = ds.load_item(1)
    assert torch.equal(image, ds[2][0]) and [Path(p).name for p, _ in passed] == ["000002.jpg"]
    assert "skipped and replaced" in ds.description


def test_celeba_channels_and_split_errors(tmp_path):
    write_celeba(tmp_path)
    with pytest.raises(UserError, match="CelebA images have 3 channels but the model expects 1"):
        build_dataset(DataConfig(dataset="celeba", root=str(tmp_path)), 1, 64)
    with pytest.raises(UserError, match="valid splits: train, valid, test, all"):
        celeba(tmp_path, "val")


def test_config_accepts_the_new_data_sets():
    for name in ("celeba", "celebahq", "lsun_bedroom"):
        cfg = Config()
        cfg.data.dataset = name
        cfg.validate()


# ------------------------------------------------------------------------------------------------------ CelebA-HQ


def test_celebahq_split_of_names():
    padded = [f"{i:05d}.png" for i in range(30_000)]
    random.Random(0).shuffle(padded)
    train, test = highres.celebahq_split(padded, "train"), highres.celebahq_split(padded, "test")
    assert len(train) == 29_000 and len(test) == 1_000
    assert train == [f"{i:05d}.png" for i in range(29_000)] and test == [f"{i:05d}.png" for i in range(29_000, 30_000)]
    # Exports without zero padding: names sort by their numbers, not as text ('10.jpg' after '9.jpg').
    plain = [f"{i}.jpg" for i in range(30_000)]
    random.Random(1).shuffle(plain)
    assert highres.celebahq_split(plain, "train")[:11] == [f"{i}.jpg" for i in range(11)]
    assert highres.celebahq_split(plain, "test") == [f"{i}.jpg" for i in range(29_000, 30_000)]
    assert highres.celebahq_split([Path("a/2.png"), Path("a/10.png")], "all") == [Path("a/2.png"), Path("a/10.png")]
    with pytest.raises(UserError, match=r"CelebA-HQ split 'test' needs the 30000 CelebA-HQ images .*but /x holds "
                                        r"29999 image files.*or set data.split=all"):
        highres.celebahq_split(padded[:-1], "test", "/x")


def write_hq(folder: Path, count: int, size: int = 64) -> list[np.ndarray]:
    """`count` PNGs 00000.png .. of size x size, each with its own top-left quadrant colour."""
    folder.mkdir(parents=True, exist_ok=True)
    images = []
    for i in range(count):
        pixels = framed_quadrants(size, size, (0, 0, size, size), first_colour(i))
        Image.fromarray(pixels).save(folder / f"{i:05d}.png")
        images.append(pixels)
    return images


def celebahq(root: Path | str, split: str = "all", resolution: int = 32, **kw):
    return build_dataset(DataConfig(dataset="celebahq", root=str(root), split=split, **kw), 3, resolution)


def test_celebahq_folder_pixels_and_split(tmp_path, monkeypatch):
    images = write_hq(tmp_path / "celeba-64", 5)   # a subfolder per resolution, as exports often are
    ds = celebahq(tmp_path, "all", 64)
    assert len(ds) == 5 and ds.labels is None
    for i in range(5):
        x, label = ds[i]
        assert label == -1 and torch.equal(x, unit(images[i]))   # lossless PNG at its own size: exact
    ds = celebahq(tmp_path, "all", 32)
    x = ds[3][0]
    assert x.shape == (3, 32, 32)
    assert torch.equal(x, unit(pil_resize(images[3], (32, 32))))
    assert_quadrants(x, first_colour(3), tolerance=0)
    assert "CelebA-HQ all" in ds.description and "5 of 5 images" in ds.description
    assert "shorter side resized to 32 (PIL bilinear, antialiased" in ds.description
    # The 29,000 / 1,000 split, scaled down to 3 / 2 so that the folder stays small.
    monkeypatch.setattr(highres, "CELEBAHQ_COUNT", 5)
    monkeypatch.setattr(highres, "CELEBAHQ_TEST_COUNT", 2)
    train, test = celebahq(tmp_path, "train"), celebahq(tmp_path, "test")
    assert [p.name for p in train.paths] == ["00000.png", "00001.png", "00002.png"]
    assert [p.name for p in test.paths] == ["00003.png", "00004.png"]
    assert torch.equal(test[1][0], unit(pil_resize(images[4], (32, 32))))
    assert "3 of 5 images" in train.description


def test_celebahq_refusals(tmp_path):
    write_hq(tmp_path / "hq", 3)
    with pytest.raises(UserError, match=r"CelebA-HQ split 'train' needs the 30000 CelebA-HQ images .* holds 3 "
                                        r"image files"):
        celebahq(tmp_path / "hq", "train")
    with pytest.raises(UserError, match=r"holds 3 image files"):
        celebahq(tmp_path / "hq", "test")
    with pytest.raises(UserError, match=r"CelebA-HQ image .*00000.png is 64x64, smaller than the target 128x128, "
                                        r"and images are never upsampled"):
        celebahq(tmp_path / "hq", "all", 128)
    with pytest.raises(UserError, match=r"CelebA-HQ not found: data.root=.*nowhere.* is not a folder.*dataset_tool"):
        celebahq(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match=r"CelebA-HQ not found: no image files under .*empty"):
        celebahq(tmp_path / "empty")
    with pytest.raises(UserError, match="data.dataset=celebahq needs data.root"):
        celebahq("")
    with pytest.raises(UserError, match="valid splits: train, test, all"):
        celebahq(tmp_path / "hq", "valid")


def test_celebahq_bad_file_policy_and_later_small_image(tmp_path):
    write_hq(tmp_path, 3)
    (tmp_path / "00001.png").write_bytes(b"")
    with pytest.raises(UserError, match=r"cannot read image .*00001.png: empty file"):
        celebahq(tmp_path)[1]
    ds = celebahq(tmp_path, on_bad_image="skip")
    image, _, passed = ds.load_item(1)
    assert torch.equal(image, ds[2][0]) and passed[0][1].startswith("empty file")
    Image.fromarray(np.zeros((20, 40, 3), np.uint8)).save(tmp_path / "00002.png")
    with pytest.raises(UserError, match=r"00002.png is 40x20, smaller than the target 32x32"):
        ds[2]


# ------------------------------------------------------------------------------------------------------ LSUN


def lsun_key(i: int) -> bytes:
    return hashlib.sha1(str(i).encode()).hexdigest().encode("ascii")   # LSUN's keys: 40 hex digits


# 96x64 landscape images: the central 64x64 square is kept, the 16-pixel side bands dropped.
LSUN_BOX = (16, 0, 80, 64)


def write_lmdb(folder: Path, records: dict[bytes, bytes]) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(folder), map_size=2**24)
    with env.begin(write=True) as txn:
        for key, value in records.items():
            txn.put(key, value)
    env.close()


def lsun_records(count: int = 4) -> dict[bytes, np.ndarray]:
    return {lsun_key(i): framed_quadrants(96, 64, LSUN_BOX, first_colour(i)) for i in range(count)}


def lsun(root: Path, split: str = "train", resolution: int = 32):
    return build_dataset(DataConfig(dataset="lsun_bedroom", root=str(root), split=split), 3, resolution)


@pytest.fixture
def bedroom(tmp_path):
    """ROOT/bedroom_train_lmdb with WebP (even records) and JPEG (odd) images; (root, {key: (pixels, encoded)})."""
    records = {}
    for i, (key, pixels) in enumerate(lsun_records().items()):
        records[key] = (pixels, webp_bytes(pixels) if i % 2 == 0 else jpeg_bytes(pixels))
    write_lmdb(tmp_path / "bedroom_train_lmdb", {k: v for k, (_, v) in records.items()})
    return tmp_path, records


def test_lsun_pixels_and_order(bedroom):
    root, records = bedroom
    ds = lsun(root)
    assert len(ds) == 4 and ds.labels is None
    assert [bytes(k) for k in ds.keys] == sorted(records)             # lmdb's key order
    assert "LSUN bedroom train, 4 images" in ds.description and "bedroom_train_lmdb" in ds.description
    assert "centre square of side min(width, height) cut" in ds.description
    assert "resized to 32x32 (PIL bilinear, antialiased)" in ds.description
    colour_of = {lsun_key(i): first_colour(i) for i in range(4)}
    for j, key in enumerate(sorted(records)):
        pixels, encoded = records[key]
        x, label = ds[j]
        assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and label == -1
        # The centred 64x64 square, resized to 32x32: the side bands are gone, even from the edge pixels.
        assert_quadrants(x, colour_of[key], tolerance=0 if encoded[:4] == b"RIFF" else JPEG_TOLERANCE)
        left, top, right, bottom = LSUN_BOX
        assert torch.equal(x, unit(pil_resize(decoded(encoded)[top:bottom, left:right], (32, 32))))
        if encoded[:4] == b"RIFF":   # lossless: the band-free square of what was written
            assert torch.equal(x, unit(pil_resize(pixels[top:bottom, left:right], (32, 32))))
    assert {records[k][1][:4] for k in records} == {b"RIFF", b"\xff\xd8\xff\xe0"}   # both WebP and JPEG were read


def test_lsun_keys_listed_once_and_workers(bedroom):
    root, _ = bedroom
    highres._lmdb_keys.cache_clear()
    ds = lsun(root)
    other = lsun(root)
    assert highres._lmdb_keys.cache_info().hits == 1 and not ds.keys.flags.writeable
    expected = torch.stack([ds[i][0] for i in range(4)])
    assert torch.equal(other[2][0], expected[2])             # two data sets over one database in one process
    # Forked workers read after this process did (py-lmdb refuses, in a child, a database its parent held open).
    loaded = torch.cat([x for x, _ in DataLoader(ds, batch_size=2, num_workers=2)])
    assert torch.equal(loaded, expected)
    copy = pickle.loads(pickle.dumps(ds))   # spawned workers get a pickled copy
    assert torch.equal(copy[1][0], expected[1])
    stream = BatchStream(ds, batch_size=2, seed=0, device=torch.device("cpu"))
    images, labels = stream.next()
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [-1, -1]


def test_lsun_missing_and_corrupt(tmp_path, bedroom):
    with pytest.raises(UserError, match=r"LSUN bedroom train not found: expected .*nothing/bedroom_train_lmdb/ with "
                                        r"data.mdb.*github.com/fyu/lsun \(python download.py -c bedroom\)"):
        lsun(tmp_path / "nothing")
    root, _ = bedroom
    with pytest.raises(UserError, match=r"LSUN bedroom val not found: expected .*bedroom_val_lmdb/"):
        lsun(root, "val")
    # data.root may also be the database folder itself.
    assert len(lsun(root / "bedroom_train_lmdb")) == 4
    corrupt = tmp_path / "corrupt" / "bedroom_train_lmdb"
    corrupt.mkdir(parents=True)
    (corrupt / "data.mdb").write_bytes(np.random.default_rng(0).integers(0, 256, 65536, dtype=np.uint8).tobytes())
    with pytest.raises(UserError, match=r"corrupt/bedroom_train_lmdb is not a readable lmdb database "
                                        r"\(.*\); expected the lmdb database as distributed: a folder "
                                        r"bedroom_train_lmdb/ holding data.mdb"):
        lsun(tmp_path / "corrupt")
    with pytest.raises(UserError, match="valid splits: train, val, test"):
        lsun(root, "unlabeled")


def test_lsun_bad_records_and_small_images(tmp_path):
    small = framed_quadrants(60, 40, (0, 0, 60, 40))
    keys = sorted(lsun_key(i) for i in range(3))
    # The first record too small: refused at build time.
    write_lmdb(tmp_path / "a" / "bedroom_train_lmdb", {keys[0]: webp_bytes(small), keys[1]: webp_bytes(small)})
    with pytest.raises(UserError, match=rf"record '{keys[0].decode()}' of the lmdb database .* is a 60x40 image, "
                                        r"smaller than the target 64x64 .shorter side 40 < 64., and images are never "
                                        r"upsampled"):
        lsun(tmp_path / "a", resolution=64)
    assert len(lsun(tmp_path / "a", resolution=40)) == 2
    # Later records: one too small, one not an image; each refused when read.
    big = webp_bytes(framed_quadrants(96, 64, LSUN_BOX))
    write_lmdb(tmp_path / "b" / "bedroom_train_lmdb",
               {keys[0]: big, keys[1]: jpeg_bytes(small), keys[2]: b"<html>not found</html>"})
    ds = lsun(tmp_path / "b", resolution=64)
    assert ds[0][0].shape == (3, 64, 64)
    with pytest.raises(UserError, match=rf"record '{keys[1].decode()}' .* is a 60x40 image"):
        ds[1]
    with pytest.raises(UserError, match=rf"cannot decode record '{keys[2].decode()}' of the lmdb database .*: not "
                                        r"an image"):
        ds[2]
    write_lmdb(tmp_path / "c" / "bedroom_train_lmdb", {})
    with pytest.raises(UserError, match="holds no records"):
        lsun(tmp_path / "c")


def test_lsun_test_split_reads_val(tmp_path):
    """LSUN has no test images for its scenes: split test (what the evaluation tools read by default) is val."""
    write_lmdb(tmp_path / "bedroom_val_lmdb",
               {k: webp_bytes(v) for k, v in lsun_records(3).items()})
    test, val = lsun(tmp_path, "test"), lsun(tmp_path, "val")
    assert len(test) == len(val) == 3 and "bedroom_val_lmdb" in test.description
    assert torch.equal(test[0][0], val[0][0])
