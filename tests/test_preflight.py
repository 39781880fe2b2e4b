"""Preflight: a run that cannot write its folder, has no room, would land on another run or cannot read its data is
refused before training starts, with one message naming the problem and the fix, and nothing written."""
import collections
import errno
import os
import shutil

import pytest
import torch

from dcvae.cli.main import main
from dcvae.errors import UserError
from dcvae.training import preflight as preflight_module
from dcvae.training.checkpoint import list_checkpoints
from dcvae.training.preflight import preflight

from conftest import requires_mnist, tiny_mnist_config

DiskUsage = collections.namedtuple("DiskUsage", "total used free")


def snapshot(folder):
    """Every path under `folder` (itself included) with its kind, size and modification time."""
    return {str(p.relative_to(folder)): (p.is_dir(), p.stat().st_size, p.stat().st_mtime_ns)
            for p in [folder, *sorted(folder.rglob("*"))]}


def refused(cfg, run_dir, watched, *messages, **kwargs):
    """preflight raises a UserError containing each of `messages`, and `watched` is left exactly as it was."""
    before = snapshot(watched)
    with pytest.raises(UserError) as error:
        preflight(cfg, run_dir, **kwargs)
    text = str(error.value)
    assert "\n" not in text
    for message in messages:
        assert message in text, text
    assert snapshot(watched) == before
    return text


@pytest.fixture
def read_only(monkeypatch):
    """Make a folder behave as if on a read-only file system: opening a file for writing under it fails with EROFS.
    The tests run as root, for whom permission bits stop no write, and mounting a real read-only file system needs
    privileges a test does not have; the preflight probes writability with os.open, so failing that call is what a
    read-only mount does to it."""
    roots = []
    real_open = os.open

    def fake_open(path, flags, *args, **kwargs):
        where = os.path.abspath(path)
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and any(
                where == r or where.startswith(r + os.sep) for r in roots):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    return lambda folder: roots.append(os.path.abspath(folder))


@pytest.fixture
def full_disk(monkeypatch):
    """Report `free` bytes free: filling a real disk is not something a test may do to the machine."""
    def set_free(free):
        monkeypatch.setattr(shutil, "disk_usage", lambda path: DiskUsage(10 * free + 1, 9 * free + 1, free))
    return set_free


# -- the output folder -------------------------------------------------------------------------------------------
def test_output_path_is_a_file(tmp_path):
    (tmp_path / "run").write_text("notes")
    refused(tiny_mnist_config(), tmp_path / "run", tmp_path, "exists and is not a folder", "choose another --out")
    (tmp_path / "file").write_text("notes")
    refused(tiny_mnist_config(), tmp_path / "file" / "run", tmp_path, "is a file, not a folder",
            "choose another --out")


def test_read_only_parent(tmp_path, read_only):
    read_only(tmp_path)
    refused(tiny_mnist_config(), tmp_path / "new" / "run", tmp_path, f"its parent {tmp_path}",
            "read-only file system", "choose another --out")


def test_read_only_folder(tmp_path, read_only):
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("kept")
    read_only(run)
    refused(tiny_mnist_config(), run, tmp_path, f"output folder {run} is on a read-only file system",
            "choose another --out")


@pytest.mark.skipif(os.geteuid() == 0, reason="permission bits stop no write by root")
def test_folder_without_write_permission(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o555)
    try:
        refused(tiny_mnist_config(), run, tmp_path, "is not writable", "choose another --out")
    finally:
        run.chmod(0o755)


# -- disk space ----------------------------------------------------------------------------------------------------
def test_full_disk(tmp_path, full_disk):
    full_disk(1 << 20)
    text = refused(tiny_mnist_config(), tmp_path / "run", tmp_path, "not enough disk space", "1.0 MB are free",
                   "train.keep_checkpoints=3", "lower train.keep_checkpoints", "choose another --out")
    assert "will write about" in text


@requires_mnist
def test_fewer_checkpoints_fit(tmp_path, full_disk):
    """The estimate grows with train.keep_checkpoints, and lowering it (the fix the message names) lets the run
    start; a preflight that passes writes nothing either."""
    full_disk(24 << 20)
    refused(tiny_mnist_config(**{"train.keep_checkpoints": 20}), tmp_path / "run", tmp_path, "not enough disk space")
    before = snapshot(tmp_path)
    dataset = preflight(tiny_mnist_config(**{"train.keep_checkpoints": 1}), tmp_path / "run")
    assert len(dataset) > 0 and snapshot(tmp_path) == before


def test_estimate_covers_a_real_checkpoint(tiny_run):
    """The size of one checkpoint estimated from the networks is close to what training wrote; the part it leaves
    out (RNG states, JSON, pickle framing: 8% at this tiny size, less for larger models) is within the margin."""
    cfg = tiny_mnist_config(**{"train.iterations": 1})
    written = sum(f.stat().st_size for f in list_checkpoints(tiny_run / "checkpoints")[-1].iterdir())
    estimate = preflight_module._checkpoint_bytes(cfg)
    assert 0.85 * written <= estimate <= 1.5 * written


def test_estimate_leaves_the_random_state(tmp_path):
    state = torch.get_rng_state()
    preflight_module._checkpoint_bytes(tiny_mnist_config())
    assert torch.equal(torch.get_rng_state(), state)


# -- a folder that already holds a run ---------------------------------------------------------------------------
def test_folder_holding_another_run(tiny_run):
    refused(tiny_mnist_config(**{"train.iterations": 1, "model.latent_dim": 16}), tiny_run, tiny_run,
            "already holds a run of another configuration", "model.latent_dim", "choose another --out")
    refused(tiny_mnist_config(**{"train.iterations": 1}), tiny_run, tiny_run, "already holds a run",
            "continue it with --resume")
    refused(tiny_mnist_config(**{"train.iterations": 5}), tiny_run, tiny_run, "train settings differ",
            "train.iterations", "--resume")


def test_folder_holding_parts_of_a_run(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("{}\n")
    refused(tiny_mnist_config(), run, tmp_path, "holds parts of a run (checkpoints, metrics.jsonl) but no config.json",
            "choose another --out")


@requires_mnist
def test_resume_checks(tiny_run, tmp_path):
    checkpoint = list_checkpoints(tiny_run / "checkpoints")[-1]
    cfg = tiny_mnist_config(**{"train.iterations": 1})
    before = snapshot(tiny_run)
    assert len(preflight(cfg, tiny_run, checkpoint)) > 0
    assert snapshot(tiny_run) == before
    refused(tiny_mnist_config(**{"train.iterations": 1, "model.latent_dim": 16}), tiny_run, tiny_run,
            "cannot resume", "different model configuration", "latent_dim", "only train.* settings may change",
            resume_from=checkpoint)
    # continuing this checkpoint into a folder that holds a run of another model
    other = tmp_path / "other"
    other.mkdir()
    (other / "config.json").write_text(tiny_mnist_config(**{"model.latent_dim": 16}).to_json())
    refused(cfg, other, tmp_path, f"cannot continue the run in {other}", "model.latent_dim", "choose another --out",
            resume_from=checkpoint)
    (other / "config.json").write_text("{ cut")
    refused(cfg, other, tmp_path, "config.json cannot be read", "choose another --out", resume_from=checkpoint)


# -- data ----------------------------------------------------------------------------------------------------------
def image_folder(folder, n=20):
    from PIL import Image
    folder.mkdir()
    for i in range(n):
        Image.new("L", (28, 28), i * 10).save(folder / f"{i:02d}.png")
    return folder


def folder_config(folder, **overrides):
    return tiny_mnist_config(**{"data.dataset": "folder", "data.root": str(folder), "train.batch_size": 4,
                                **overrides})


def test_unreadable_last_image(tmp_path):
    folder = image_folder(tmp_path / "images")
    (folder / "19.png").write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    refused(folder_config(folder), tmp_path / "run", tmp_path, "19.png", "data.on_bad_image=skip")


def test_data_that_fails_to_read(tmp_path, monkeypatch):
    """A reader error that is not a UserError (an I/O error of a damaged file) is reported as one."""
    class Damaged(torch.utils.data.Dataset):
        description = "damaged test data; no transforms"

        def __len__(self):
            return 100

        def __getitem__(self, index):
            if index == 99:
                raise OSError(errno.EIO, "Input/output error")
            return torch.zeros(1, 32, 32), 0

    monkeypatch.setattr(preflight_module, "build_dataset", lambda *args: Damaged())
    refused(tiny_mnist_config(), tmp_path / "run", tmp_path, "cannot read item 99 of the data (damaged test data)",
            "Input/output error", "repair or replace the data")


def test_fewer_images_than_a_batch(tmp_path):
    folder = image_folder(tmp_path / "images", n=3)
    refused(folder_config(folder), tmp_path / "run", tmp_path, "3 images, fewer than one batch of 4",
            "lower train.batch_size")
    refused(folder_config(folder, **{"train.batch_size": 2}), tmp_path / "run", tmp_path, "fewer than one batch of 4",
            processes=2)


def test_every_rank_reads_the_data_but_only_rank_0_checks_the_folder(tmp_path):
    folder = image_folder(tmp_path / "images")
    (tmp_path / "run").write_text("a file: rank 0's problem")
    assert len(preflight(folder_config(folder), tmp_path / "run", main=False)) == 20
    (folder / "00.png").write_bytes(b"")
    refused(folder_config(folder), tmp_path / "run", tmp_path, "00.png", main=False)


# -- through the command line --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fault", ["full disk", "read-only folder", "unreadable data"])
def test_cli_reports_one_line_and_writes_nothing(capsys, tmp_path, fault, full_disk, read_only):
    folder = image_folder(tmp_path / "images")
    run = tmp_path / "run"
    if fault == "full disk":
        full_disk(1 << 20)
    elif fault == "read-only folder":
        read_only(tmp_path)
    else:
        (folder / "19.png").write_bytes(b"not an image")
    before = snapshot(tmp_path)
    code = main(["train", "--preset", "mnist", "--set", "data.dataset=folder", "--set", f"data.root={folder}",
                 "--set", "train.batch_size=4", "--out", str(run), "--no-progress"])
    _, err = capsys.readouterr()
    assert code == 2 and err.startswith("dcvae: error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert {"full disk": "not enough disk space", "read-only folder": "read-only file system",
            "unreadable data": "19.png"}[fault] in err
    assert snapshot(tmp_path) == before and not run.exists()
