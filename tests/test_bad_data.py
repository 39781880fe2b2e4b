"""Bad data in an image folder (issue 7, item 3): every awkward but valid file is converted to the right pixels,
every unreadable one is refused with a message naming it, the reason and the fix (data.on_bad_image=error), or
skipped, counted per epoch and listed (data.on_bad_image=skip) without breaking exact resume."""
import io
import logging
import os
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dcvae.cli.main import main
from dcvae.config import DataConfig
from dcvae.data import build_dataset
from dcvae.data.datasets import BAD_IMAGE_KINDS, bad_image_kind
from dcvae.data.stream import BatchStream
from dcvae.errors import UserError
from dcvae.training import train
from dcvae.training.checkpoint import list_checkpoints, load_training_state
from safetensors.torch import load_file

from conftest import assert_same, tiny_mnist_config

SUMMARY = re.compile(r"data: epoch (\d+): skipped (\d+) of (\d+) files \(([^)]*)\)")


@pytest.fixture(autouse=True)
def one_thread():
    """The tiny model on one thread: this file's training test took 1.8 s so, and 27 s on the default threads while
    another job held both cores of a 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- writing files -------------------------------------------------------------------------------------------------
def png_bytes(width: int, height: int, bit_depth: int, color_type: int, idat: bytes | None) -> bytes:
    """A PNG written by hand, for what PIL cannot write: 16-bit RGB, garbage pixel data, a header with no pixels."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))
    return b"\x89PNG\r\n\x1a\n" + header + (chunk(b"IDAT", idat) if idat is not None else b"") + chunk(b"IEND", b"")


def bands(*columns) -> np.ndarray:
    """A 32x32 image of vertical bands of equal width, one value (a scalar or a pixel tuple) per band."""
    width = 32 // len(columns)
    return np.concatenate([np.broadcast_to(np.asarray(c), (32, width) + np.shape(c)) for c in columns], axis=1)


def write_awkward(folder: Path) -> dict[str, tuple[np.ndarray, int]]:
    """Valid files of every awkward kind; name -> (expected RGB uint8 [32, 32, 3], tolerance in pixel levels)."""
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, tuple[np.ndarray, int]] = {}

    def save(name, image, rgb, tolerance=0, **kw):
        image.save(folder / name, **kw)
        expected[name] = (np.asarray(np.broadcast_to(rgb, (32, 32, 3)), np.uint8), tolerance)

    # CMYK without colour management: pure cyan / yellow -> (0, 255, 255) / (255, 255, 0); JPEG within a few levels
    save("cmyk-cyan.jpg", Image.new("CMYK", (32, 32), (255, 0, 0, 0)), (0, 255, 255), 4, quality=95)
    save("cmyk-yellow.jpg", Image.new("CMYK", (32, 32), (0, 0, 255, 0)), (255, 255, 0), 4, quality=95)
    # 16-bit grayscale: scaled (65535 -> 255, 128 * 257 -> 128), not clipped at 255
    sixteen = bands(65535, 128 * 257, 0, 65535).astype("<u2")
    save("gray16.png", Image.frombytes("I;16", (32, 32), sixteen.tobytes()),
         bands(*[(v,) * 3 for v in (255, 128, 0, 255)]))
    # 16-bit RGB (PIL cannot write it): (65535, 32768, 0) -> (255, 128, 0)
    rgb16 = np.broadcast_to(np.array([65535, 32768, 0], ">u2"), (32, 32, 3))
    raw = b"".join(b"\0" + row.tobytes() for row in rgb16)
    (folder / "rgb16.png").write_bytes(png_bytes(32, 32, 16, 2, zlib.compress(raw)))
    expected["rgb16.png"] = (np.broadcast_to(np.array([255, 128, 0], np.uint8), (32, 32, 3)), 0)
    # palette without and with a transparent index (PNG tRNS, GIF transparency): colours mapped, transparent -> black
    palette = [10, 200, 30, 250, 5, 100] + [0] * 762
    indices = Image.fromarray(bands(0, 1).astype(np.uint8), "L")
    p = indices.convert("P")
    p.putpalette(palette)
    save("palette.png", p, bands((10, 200, 30), (250, 5, 100)))
    save("palette-transparent.png", p, bands((0, 0, 0), (250, 5, 100)), transparency=0)
    save("palette-transparent.gif", p, bands((0, 0, 0), (250, 5, 100)), transparency=0)
    # alpha composited onto black: a pixel keeps alpha/255 of its colour
    alpha = bands(255, 128, 0, 255)
    la = np.stack([np.full((32, 32), 200), alpha], axis=2).astype(np.uint8)
    save("gray-alpha.png", Image.fromarray(la, "LA"), bands(*[(v,) * 3 for v in (200, 100, 0, 200)]), 1)
    rgba = np.concatenate([np.broadcast_to(np.array([255, 128, 0]), (32, 32, 3)), alpha[..., None]],
                          axis=2).astype(np.uint8)
    save("rgba.png", Image.fromarray(rgba, "RGBA"), bands((255, 128, 0), (128, 64, 0), (0, 0, 0), (255, 128, 0)), 1)
    # grayscale in an RGB set: replicated; a transparent colour key (tRNS) of L and RGB images counts as alpha
    save("gray.png", Image.new("L", (32, 32), 77), (77, 77, 77))
    save("gray-key.png", Image.fromarray(bands(77, 150).astype(np.uint8), "L"), bands((0,) * 3, (150,) * 3),
         transparency=77)
    save("rgb-key.png", Image.fromarray(bands((1, 2, 3), (9, 8, 7)).astype(np.uint8)), bands((0, 0, 0), (9, 8, 7)),
         transparency=(1, 2, 3))
    save("bilevel.png", Image.fromarray(bands(False, True)).convert("1"), bands((0,) * 3, (255,) * 3))
    # CIELab through littleCMS: L=100, a=b=0 is white
    save("lab.tif", Image.new("LAB", (32, 32), (255, 128, 128)), (255, 255, 255), 2)
    return expected


def write_bad(folder: Path) -> dict[str, str]:
    """Unreadable files; name -> the kind each must be counted as."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    kinds = {}
    (folder / "empty.png").write_bytes(b"")
    kinds["empty.png"] = "empty file"
    for fmt, name in (("JPEG", "half.jpg"), ("PNG", "half.png")):
        buffer = io.BytesIO()
        noise.save(buffer, fmt)
        (folder / name).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        kinds[name] = "truncated"
    (folder / "random.png").write_bytes(rng.integers(0, 256, 3000, dtype=np.uint8).tobytes())
    kinds["random.png"] = "not an image"
    (folder / "notes.jpg").write_text("a text file renamed to .jpg\n")
    kinds["notes.jpg"] = "not an image"
    (folder / "garbled.png").write_bytes(png_bytes(32, 32, 8, 2, rng.integers(0, 256, 500, dtype=np.uint8).tobytes()))
    kinds["garbled.png"] = "corrupt"
    # headers only: 10^10 pixels (PIL refuses over 2x Image.MAX_IMAGE_PIXELS) and 10^8 (PIL would only warn and
    # allocate 100 MB; dcvae refuses anything over 1x)
    (folder / "bomb.png").write_bytes(png_bytes(100_000, 100_000, 8, 0, None))
    kinds["bomb.png"] = "decompression bomb"
    (folder / "bomb-small.png").write_bytes(png_bytes(10_000, 10_000, 8, 0, None))
    kinds["bomb-small.png"] = "decompression bomb"
    Image.new("F", (32, 32), 0.5).save(folder / "float.tif")
    kinds["float.tif"] = "unsupported pixel format"
    return kinds


def pixels(image: torch.Tensor) -> np.ndarray:
    """[C, H, W] in [-1, 1] -> uint8 [H, W, C] pixel levels (the inverse of p / 127.5 - 1)."""
    return ((image + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def folder_set(root: Path, policy: str, channels: int = 3):
    return build_dataset(DataConfig(dataset="folder", root=str(root), on_bad_image=policy), channels, 32)


# -- conversion ----------------------------------------------------------------------------------------------------
def test_awkward_images_are_converted_to_the_right_pixels(tmp_path):
    expected = write_awkward(tmp_path / "images")
    dataset = folder_set(tmp_path / "images", "error")    # a conversion failure would raise
    assert len(dataset) == len(expected)
    for name, (want, tolerance) in expected.items():
        got = pixels(dataset[dataset.paths.index(tmp_path / "images" / name)][0])
        assert got.shape == want.shape, name
        difference = int(np.abs(got.astype(int) - want.astype(int)).max())
        assert difference <= tolerance, f"{name}: off by {difference} levels"
    # one channel: the same conversions, then ITU-R 601 luma
    gray = folder_set(tmp_path / "images", "error", channels=1)
    for name in ("gray16.png", "cmyk-cyan.jpg", "palette-transparent.gif"):
        x = gray[gray.paths.index(tmp_path / "images" / name)][0]
        assert x.shape == (1, 32, 32)
    luma = pixels(gray[gray.paths.index(tmp_path / "images" / "cmyk-cyan.jpg")][0])
    assert abs(int(luma[16, 16, 0]) - round(0.587 * 255 + 0.114 * 255)) <= 4
    assert dataset.skipped == {} and gray.skipped == {}


# -- bad files -----------------------------------------------------------------------------------------------------
def test_bad_files_are_skipped_and_counted_by_kind(tmp_path, recwarn):
    kinds = write_bad(tmp_path / "images")
    Image.new("RGB", (32, 32), (1, 2, 3)).save(tmp_path / "images" / "good.png")
    dataset = folder_set(tmp_path / "images", "skip")
    assert "skipped and replaced by the next readable file" in dataset.description
    good = pixels(dataset[dataset.paths.index(tmp_path / "images" / "good.png")][0])
    for i in range(len(dataset)):     # every index gives the one readable image
        assert np.array_equal(pixels(dataset[i][0]), good)
    assert {Path(p).name: bad_image_kind(r) for p, r in dataset.skipped.items()} == kinds
    assert set(kinds.values()) <= set(BAD_IMAGE_KINDS)
    assert "MAX_IMAGE_PIXELS" in dataset.skipped[str(tmp_path / "images" / "bomb-small.png")]
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_bad_files_stop_with_one_message_naming_file_reason_and_fix(tmp_path):
    kinds = write_bad(tmp_path / "images")
    dataset = folder_set(tmp_path / "images", "error")
    assert "an error (data.on_bad_image=error)" in dataset.description
    for name, kind in kinds.items():
        path = tmp_path / "images" / name
        with pytest.raises(UserError) as err:
            dataset[dataset.paths.index(path)]
        message = str(err.value)
        assert f"cannot read image {path}: {kind}: " in message and "data.on_bad_image=skip" in message, message
        assert "\n" not in message
    assert dataset.skipped == {}
    with pytest.raises(UserError, match="0 bytes; copy the file again or delete it, or set data.on_bad_image=skip"):
        dataset[dataset.paths.index(tmp_path / "images" / "empty.png")]


def test_a_real_bomb_is_not_decoded(tmp_path, monkeypatch, recwarn):
    """A valid image with more pixels than the limit: PIL alone would decode one between 1x and 2x of it (with a
    warning); it is refused before decoding, with the limit lowered so that the file stays small."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64)
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (32, 32), (5, 6, 7)).save(folder / "a.png")
    Image.new("RGB", (80, 80), (200, 0, 0)).save(folder / "b-warned.png")       # 1.6x: PIL only warns
    Image.new("RGB", (100, 100), (200, 0, 0)).save(folder / "c-refused.png")    # 2.4x: PIL refuses
    dataset = folder_set(folder, "skip")
    assert np.array_equal(pixels(dataset[1][0]), pixels(dataset[0][0]))      # replaced (wrapping) by a.png
    assert {Path(p).name: bad_image_kind(r) for p, r in dataset.skipped.items()} == {
        "b-warned.png": "decompression bomb", "c-refused.png": "decompression bomb"}
    assert not [w for w in recwarn if issubclass(w.category, Image.DecompressionBombWarning)]


def test_unreadable_file(tmp_path, monkeypatch):
    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (32, 32)).save(folder / "a.png")
    Image.new("RGB", (32, 32)).save(folder / "b.png")
    (folder / "b.png").chmod(0)
    if os.geteuid() == 0:    # root reads it anyway: the refusal the file system would give, from PIL's open
        real_open = Image.open

        def refuse(fp, *args, **kwargs):
            if Path(fp).name == "b.png":
                raise PermissionError(13, "Permission denied", str(fp))
            return real_open(fp, *args, **kwargs)
        monkeypatch.setattr(Image, "open", refuse)
    dataset = folder_set(folder, "skip")
    dataset[1]
    assert bad_image_kind(dataset.skipped[str(folder / "b.png")]) == "unreadable"


def test_replacement_is_the_next_readable_file_wrapping(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name, value in (("a.png", 10), ("d.png", 40)):
        Image.new("L", (32, 32), value).save(folder / name)
    (folder / "b.png").write_bytes(b"")
    (folder / "c.jpg").write_text("not an image")
    (folder / "e.png").write_bytes(b"")
    dataset = folder_set(folder, "skip", channels=1)
    values = [int(pixels(dataset[i][0])[0, 0, 0]) for i in range(5)]
    assert values == [10, 40, 40, 40, 10]       # b, c -> d; e (the last) wraps to a
    _, _, passed = dataset.load_item(1)
    assert [Path(p).name for p, _ in passed] == ["b.png", "c.jpg"]
    assert dataset.load_item(1)[2] == passed    # the same again, from the cache


# -- the stream: counts per epoch, skipped.txt, exact resume -------------------------------------------------------
def make_mixed_folder(folder: Path, good: int) -> dict[str, str]:
    """`good` readable 32x32 images (14 in awkward formats) and the bad files; returns name -> kind. In path order
    the bad files come after the awkward ones, so that the first and last files are good."""
    kinds = write_bad(folder / "bad")
    awkward = sorted(write_awkward(folder / "awkward"))
    colours = np.random.default_rng(1).integers(0, 256, (good, 3))
    for i in range(good - len(awkward)):
        Image.new("RGB", (32, 32), tuple(int(c) for c in colours[i])).save(folder / f"img-{i:03d}.png")
    return kinds


def summaries(caplog) -> list[tuple[int, int, int, str]]:
    return [(int(m[1]), int(m[2]), int(m[3]), m[4]) for r in caplog.records if (m := SUMMARY.search(r.getMessage()))]


def stream(folder: Path, workers: int = 0) -> BatchStream:
    return BatchStream(folder_set(folder, "skip"), 8, seed=3, device=torch.device("cpu"), num_workers=workers)


def test_stream_counts_skips_per_epoch_and_resumes_exactly(tmp_path, caplog):
    folder = tmp_path / "images"
    kinds = make_mixed_folder(folder, good=23)      # 23 + 9 bad = 32 files = 4 batches of 8 per epoch
    assert len(kinds) == 9
    straight = stream(folder)
    straight.skipped_file = tmp_path / "skipped.txt"
    with caplog.at_level(logging.WARNING, logger="dcvae.data"):
        batches = [straight.next()[0] for _ in range(10)]      # epochs 0 and 1, and 2 batches of epoch 2
    by_kind = {}
    for kind in kinds.values():
        by_kind[kind] = by_kind.get(kind, 0) + 1
    text = ", ".join(f"{c} {k}" for k, c in sorted(by_kind.items(), key=lambda kc: (-kc[1], kc[0])))
    assert summaries(caplog) == [(0, 9, 32, text), (1, 9, 32, text)]
    assert f"list in {tmp_path / 'skipped.txt'}" in caplog.text
    # one warning per bad file, the first time it is met, not once per epoch
    assert caplog.text.count("skipping unreadable image") == len(kinds)
    listed = [line.split("\t") for line in (tmp_path / "skipped.txt").read_text().splitlines()[1:]]
    assert {str(Path(p).relative_to(folder / "bad")): bad_image_kind(r) for p, r in listed} == kinds
    assert all(b.shape == (8, 3, 32, 32) for b in batches)

    # a new process (empty cache) resumed in the middle of epoch 1: the same batches, and the full count for epoch 1
    first = stream(folder)
    [first.next() for _ in range(6)]
    resumed = stream(folder)
    resumed.load_state_dict(first.state_dict())
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dcvae.data"):
        for expected in batches[6:]:
            assert torch.equal(resumed.next()[0], expected)
    assert summaries(caplog) == [(1, 9, 32, text)]

    # worker processes: the same batches and counts (their skips travel back with each batch)
    caplog.clear()
    parallel = stream(folder, workers=2)
    with caplog.at_level(logging.WARNING, logger="dcvae.data"):
        for expected in batches:
            assert torch.equal(parallel.next()[0], expected)
    assert summaries(caplog) == [(0, 9, 32, text), (1, 9, 32, text)]
    assert set(parallel.dataset.skipped) == {str(folder / "bad" / name) for name in kinds}   # learnt from the workers
    parallel.close()


def test_error_in_a_worker_is_one_message(tmp_path):
    folder = tmp_path / "images"
    make_mixed_folder(folder, good=23)
    parallel = BatchStream(folder_set(folder, "error"), 8, seed=3, device=torch.device("cpu"), num_workers=2)
    with pytest.raises(UserError) as err:
        [parallel.next() for _ in range(4)]    # one epoch: every file
    message = str(err.value)
    assert message.startswith(f"cannot read image {folder}") and "data.on_bad_image=skip" in message
    assert "\n" not in message and "Traceback" not in message


# -- training ------------------------------------------------------------------------------------------------------
def folder_config(folder: Path, policy: str, **overrides):
    """The tiny model on a folder of RGB images: 24 files in batches of 8, 2 batches per iteration, so that an epoch
    (every file) ends every 1.5 iterations."""
    return tiny_mnist_config(**{"data.dataset": "folder", "data.root": str(folder), "data.on_bad_image": policy,
                                "model.image_channels": 3, "train.batch_size": 8, "train.sample_batch_size": 8,
                                "train.checkpoint_every": 1, "train.iterations": 4, **overrides})


def test_training_skips_bad_files_reports_them_and_resumes_bit_for_bit(tmp_path, caplog):
    folder = tmp_path / "images"
    kinds = make_mixed_folder(folder, good=15)       # 15 + 9 bad = 24 files
    text = "2 decompression bomb, 2 not an image, 2 truncated, 1 corrupt, 1 empty file, 1 unsupported pixel format"
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    with caplog.at_level(logging.WARNING, logger="dcvae.data"):
        summary = train(folder_config(folder, "skip"), straight, progress=False)
    # 8 batches: the stream wraps at batches 4 and 7, ending epochs 0 and 1
    assert summary["iterations"] == 4 and summary["epochs"] == 2
    assert summaries(caplog) == [(0, 9, 24, text), (1, 9, 24, text)]
    assert f"list in {straight / 'skipped.txt'}" in caplog.text
    listed = (straight / "skipped.txt").read_text()
    assert {Path(line.split("\t")[0]).name for line in listed.splitlines()[1:]} == set(kinds)

    # stopped after 2 of epoch 0's 3 batches, which skipped some of the bad files: the resumed run still counts all
    train(folder_config(folder, "skip", **{"train.iterations": 1}), stopped, progress=False)
    carried = load_training_state(list_checkpoints(stopped / "checkpoints")[-1])["data"]
    assert carried["epoch"] == 0 and carried["position"] == 2 and 0 < len(carried["skipped"]) < len(kinds)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dcvae.data"):
        train(folder_config(folder, "skip"), stopped, resume=True, progress=False)
    assert summaries(caplog) == [(0, 9, 24, text), (1, 9, 24, text)]
    final = {run: list_checkpoints(run / "checkpoints")[-1] for run in (straight, stopped)}
    assert_same(load_file(str(final[straight] / "model.safetensors")),
                load_file(str(final[stopped] / "model.safetensors")), "weights")
    assert_same(load_training_state(final[straight]), load_training_state(final[stopped]), "state")
    assert (stopped / "skipped.txt").read_text() == listed


def test_training_under_error_stops_with_one_message(tmp_path, capsys):
    folder = tmp_path / "images"
    make_mixed_folder(folder, good=15)      # the first and last files are good: the stream meets the first bad one
    tiny = ["model.gen_width=8", "model.dis_width=8", "model.latent_dim=8", "objective.queue_size=64",
            "objective.patch_queue_size=64", "train.batch_size=8", "train.sample_batch_size=8", "train.d_steps=2",
            "train.iterations=4", "model.image_channels=3", "data.dataset=folder", f"data.root={folder}"]
    code = main(["train", "--preset", "mnist", *[a for setting in tiny for a in ("--set", setting)],
                 "--out", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"dcvae: error: cannot read image {folder / 'bad'}") and err.count("\n") == 1
    assert "data.on_bad_image=skip" in err and "Traceback" not in err
    assert (tmp_path / "run" / "config.json").is_file()      # it got past the start: the stream met the file
