"""The command line: every bad input gets one clear message and a non-zero exit, and nothing written is lost."""
import hashlib
import json
import math
import pickle

import pytest
import torch

from dcvae.cli.main import main
from dcvae.errors import UserError
from dcvae.experiments.runs import train_or_reuse
from dcvae.networks import build_networks
from dcvae.training import train
from dcvae.training.checkpoint import STATE_FILE, list_checkpoints, load_module_weights, load_training_state

from conftest import requires_mnist, tiny_mnist_config


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_training_imports_neither_torchvision_nor_dynamo():
    """Both cost ~3 s of start-up in every training process (each kill/resume, each worker); they are imported
    where they are used (a resize, an image grid, torch.compile)."""
    import subprocess
    import sys
    code = ("import sys, dcvae.cli.main, dcvae.training.loop, dcvae.data; "
            "print(sorted(m for m in ('torchvision', 'torch._dynamo') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_info_json_paper_counts(capsys):
    code, out, _ = run_cli(capsys, "info", "--preset", "cifar10", "--json")
    assert code == 0
    assert json.loads(out)["params"] == {"encoder": 1_086_464, "decoder": 4_405_251, "discriminator": 1_063_445}


def test_dry_run_prints_resolved_config(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "train", "--preset", "mnist", "--set", "train.lr=1e-4",
                           "--set", "objective.contrastive_layers=b2,final", "--out", str(tmp_path / "r"), "--dry-run")
    cfg = json.loads(out)
    assert code == 0 and cfg["train"]["lr"] == 1e-4 and cfg["objective"]["contrastive_layers"] == ["b2", "final"]
    assert not (tmp_path / "r").exists()


def test_config_file(capsys, tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  batch_size: 32\nmodel:\n  latent_dim: 16\n")
    code, out, _ = run_cli(capsys, "train", "--preset", "mnist", "--config", str(f), "--dry-run")
    assert code == 0 and json.loads(out)["train"]["batch_size"] == 32 and json.loads(out)["model"]["latent_dim"] == 16


def test_config_differences_name_each_changed_setting():
    from dcvae.config import Config, apply_overrides, preset
    saved = Config.completed(preset("mnist").to_dict())
    now = apply_overrides(preset("mnist"), {"model.latent_dim": 16, "train.lr": 1e-4})
    assert now.differences(saved) == {"model.latent_dim": (saved["model"]["latent_dim"], 16)}
    assert now.differences(saved, ("train",)) == {"train.lr": (saved["train"]["lr"], 1e-4)}
    # A section missing from the saved dict (a foreign file) differs in every key; a completed one only where set.
    del saved["data"]
    assert set(now.differences(saved, ("data",))) == {f"data.{k}" for k in now.to_dict()["data"]}
    assert preset("mnist").differences(Config.completed(preset("mnist").to_dict())) == {}


@pytest.mark.parametrize("argv, message", [
    (["train", "--preset", "imagenet"], "unknown preset 'imagenet'"),
    (["train", "--preset", "mnist", "--set", "train.learning_rate=1"], "unknown config key 'train.learning_rate'"),
    (["train", "--preset", "mnist", "--set", "train.batch_size=many"], "train.batch_size expects int, got 'many'"),
    (["train", "--preset", "mnist", "--set", "train.batch_size=1.5"], "train.batch_size expects int"),
    (["train", "--preset", "mnist", "--set", "objective.variant=gan"], "objective.variant='gan' is not one of"),
    (["train", "--preset", "mnist", "--set", "objective.contrastive_layers=b9"], "objective.contrastive_layers"),
    (["train", "--preset", "mnist", "--set", "nonsense"], "--set expects key=value"),
    (["train", "--preset", "mnist", "--set", "train.iterations=0"], "train.iterations must be at least 1"),
    (["train"], "say what to train"),
    (["train", "--preset", "mnist", "--config", "/nonexistent.yaml"], "config file /nonexistent.yaml does not exist"),
    (["sample", "/nonexistent-run"], "does not exist"),
])
def test_bad_arguments_give_one_clear_message(capsys, argv, message):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert err.startswith("dcvae: error: ") and err.count("\n") == 1


def test_wrong_channels_and_empty_folder(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--preset", "mnist", "--set", "model.image_channels=3",
                           "--out", str(tmp_path / "a"), "--no-progress")
    assert code == 2 and "MNIST images have 1 channel but the model expects 3" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "train", "--preset", "mnist", "--set", "data.dataset=folder",
                           "--set", f"data.root={tmp_path / 'empty'}", "--out", str(tmp_path / "b"), "--no-progress")
    assert code == 2 and "no images found under" in err


def test_corrupt_image_in_folder_is_named(capsys, tmp_path):
    from PIL import Image
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(20):
        Image.new("L", (28, 28), i * 10).save(folder / f"{i:02d}.png")
    (folder / "05.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    code, _, err = run_cli(capsys, "train", "--preset", "mnist", "--set", "data.dataset=folder",
                           "--set", f"data.root={folder}", "--set", "train.batch_size=4", "--set", "train.iterations=8",
                           "--set", "objective.queue_size=8", "--out", str(tmp_path / "r"), "--no-progress")
    assert code == 2 and "05.png" in err and "data.on_bad_image=skip" in err


@requires_mnist
def test_existing_run_is_never_overwritten(capsys, tmp_path):
    run = tmp_path / "run"
    train(tiny_mnist_config(**{"train.iterations": 1}), run, progress=False)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code, _, err = run_cli(capsys, "train", "--preset", "mnist", "--out", str(run), "--no-progress")
    assert code == 2 and "already holds a run" in err and "--resume" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


@requires_mnist
def test_checkpoint_problems_are_explained(capsys, caplog, tmp_path):
    run = tmp_path / "run"
    train(tiny_mnist_config(**{"train.iterations": 2, "train.checkpoint_every": 1}), run, progress=False)
    newest, older = list_checkpoints(run / "checkpoints")[-1], list_checkpoints(run / "checkpoints")[-2]

    # another architecture: a clear explanation, not a shape traceback
    other = build_networks(tiny_mnist_config(**{"model.latent_dim": 16}).model)
    from safetensors.torch import load_file
    with pytest.raises(UserError, match="do not fit this architecture.*shape mismatch"):
        load_module_weights(other.encoder, load_file(str(newest / "model.safetensors")), "encoder", newest)

    # a truncated newest checkpoint: named as corrupt when asked for directly...
    data = (newest / "model.safetensors").read_bytes()
    (newest / "model.safetensors").write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(capsys, "sample", str(newest), "--out", str(tmp_path / "s.png"))
    assert code == 2 and "corrupt" in err and "model.safetensors" in err
    # ...and skipped, with a log line, when loading the run: the previous good one is used
    code, _, err = run_cli(capsys, "sample", str(run), "--out", str(tmp_path / "s.png"))
    assert code == 0 and f"falling back to {older.name}" in caplog.text and (tmp_path / "s.png").is_file()

    # an output file that exists is not overwritten
    code, _, err = run_cli(capsys, "sample", str(run), "--out", str(tmp_path / "s.png"))
    assert code == 2 and "already exists" in err


@requires_mnist
def test_pickle_that_runs_code_is_refused(tmp_path):
    run = tmp_path / "run"
    train(tiny_mnist_config(**{"train.iterations": 1}), run, progress=False)
    folder = list_checkpoints(run / "checkpoints")[-1]
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    with open(folder / STATE_FILE, "wb") as f:
        pickle.dump({"iteration": Exploit()}, f, protocol=2)
    with pytest.raises(UserError, match="weights_only"):
        load_training_state(folder)
    assert not marker.exists()


@requires_mnist
def test_sample_reconstruct_interpolate_commands(capsys, tmp_path):
    from PIL import Image
    run = tmp_path / "run"
    train(tiny_mnist_config(**{"train.iterations": 1}), run, progress=False)
    for cmd in ("sample", "reconstruct", "interpolate"):
        out = tmp_path / f"{cmd}.png"
        code, stdout, err = run_cli(capsys, cmd, str(run), "--out", str(out))
        assert code == 0, err
        assert Image.open(out).size[0] > 32
    rgb = tmp_path / "photo.jpg"
    Image.new("RGB", (50, 40), (200, 10, 10)).save(rgb)
    code, _, err = run_cli(capsys, "reconstruct", str(run), "--images", str(rgb), str(rgb), "--out",
                           str(tmp_path / "r2.png"))
    assert code == 0, err
    (tmp_path / "notes.png").write_text("not an image")
    code, _, err = run_cli(capsys, "reconstruct", str(run), "--images", str(tmp_path / "notes.png"), "--out",
                           str(tmp_path / "r3.png"))
    assert code == 2 and "cannot read image" in err and not (tmp_path / "r3.png").exists()


@requires_mnist
def test_resume_refuses_another_architecture(capsys, tmp_path):
    run = tmp_path / "run"
    train(tiny_mnist_config(**{"train.iterations": 1}), run, progress=False)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code, _, err = run_cli(capsys, "train", "--out", str(run), "--resume", "--set", "model.latent_dim=16",
                           "--no-progress")
    assert code == 2 and "different model configuration" in err and "latent_dim" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    code, _, err = run_cli(capsys, "train", "--out", str(tmp_path / "none"), "--resume", "--no-progress")
    assert code == 2 and "holds no run to resume" in err


@requires_mnist
def test_resume_extends_a_finished_run(capsys, tmp_path):
    run = tmp_path / "run"
    train(tiny_mnist_config(**{"train.iterations": 2}), run, progress=False)
    code, out, err = run_cli(capsys, "train", "--out", str(run), "--resume", "--set", "train.iterations=3",
                             "--no-progress")
    assert code == 0, err
    assert json.loads((run / "summary.json").read_text())["iterations"] == 3
    assert json.loads((run / "config.json").read_text())["train"]["iterations"] == 2   # the first config is kept
    assert json.loads((run / "config.resume-1.json").read_text())["train"]["iterations"] == 3
    # Resuming it again to the same length trains nothing and keeps its summary (time, last losses) as it was.
    summary = (run / "summary.json").read_text()
    code, out, err = run_cli(capsys, "train", "--out", str(run), "--resume", "--no-progress")
    assert code == 0, err
    assert (run / "summary.json").read_text() == summary and json.loads(summary)["final"]


@requires_mnist
def test_a_run_made_before_a_setting_existed_resumes_and_is_reused(capsys, tmp_path):
    run = tmp_path / "run"
    train(tiny_mnist_config(**{"train.iterations": 2, "train.checkpoint_every": 1}), run, progress=False)
    # Written as an earlier dcvae wrote them: without model.encoder_pool, whose default is what that version did.
    for path in [run / "config.json", *run.glob("checkpoints/iter-*/config.json")]:
        saved = json.loads(path.read_text())
        del saved["model"]["encoder_pool"]
        path.write_text(json.dumps(saved))
        if path.parent != run:
            manifest = json.loads((path.parent / "manifest.json").read_text())
            manifest["sha256"]["config.json"] = hashlib.sha256(path.read_bytes()).hexdigest()
            (path.parent / "manifest.json").write_text(json.dumps(manifest))
    code, out, err = run_cli(capsys, "train", "--out", str(run), "--resume", "--set", "train.iterations=3",
                             "--no-progress")
    assert code == 0, err
    assert json.loads((run / "summary.json").read_text())["iterations"] == 3
    stamp = (run / "summary.json").stat().st_mtime_ns
    assert train_or_reuse(tiny_mnist_config(**{"train.iterations": 3}), run, progress=False) == run
    assert (run / "summary.json").stat().st_mtime_ns == stamp                    # reused as it is


def test_bf16_without_gpu_or_cpu_support_falls_back_with_a_warning(caplog, tmp_path, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    import dcvae.training.loop as loop
    monkeypatch.setattr(loop, "cpu_has_bf16", lambda: False)
    cfg = tiny_mnist_config(**{"train.iterations": 1, "train.mixed_precision": "bf16"})
    train(cfg, tmp_path / "run", progress=False)
    assert "needs a GPU or a CPU with bf16 instructions" in caplog.text and "float32" in caplog.text


def test_bf16_autocast_trains_on_a_cpu_that_has_it(caplog, tmp_path):
    """On a CPU with native bf16 the convolutions run in bf16 (no fallback) and training stays finite."""
    import dcvae.training.loop as loop
    if torch.cuda.is_available() or not loop.cpu_has_bf16():
        pytest.skip("needs a CPU with AVX512-BF16 or AMX and no GPU")
    cfg = tiny_mnist_config(**{"train.iterations": 2, "train.mixed_precision": "bf16"})
    summary = train(cfg, tmp_path / "run", progress=False)
    assert "float32" not in caplog.text and summary["iterations"] == 2
    assert all(math.isfinite(v) for v in summary["final"].values())
