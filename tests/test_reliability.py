"""Reliability (issue 7): divergence is caught within the iteration and rolled back; kills lose nothing."""
import json

import pytest
import torch
from safetensors.torch import load_file

from dcvae.errors import UserError
from dcvae.training import loop, train
from dcvae.training.checkpoint import list_checkpoints, load_training_state

from conftest import artifacts_folder, requires_mnist, tiny_mnist_config

pytestmark = requires_mnist


def _events(run):
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "event" in r]


def test_transient_nan_rolls_back_lowers_lr_and_finishes(tmp_path, monkeypatch):
    """A NaN generator loss in iteration 5 (once): the run reloads the iteration-3 checkpoint, halves the learning
    rate, trains on to 6 with finite weights, and says so in metrics.jsonl."""
    real, calls = loop.generator_phase, {"n": 0}

    def nan_once_in_iteration_5(*args, **kwargs):
        loss, stats = real(*args, **kwargs)
        calls["n"] += 1
        return (loss * float("nan"), stats) if calls["n"] == 5 else (loss, stats)

    monkeypatch.setattr(loop, "generator_phase", nan_once_in_iteration_5)
    run = tmp_path / "run"
    summary = train(tiny_mnist_config(), run, progress=False)
    assert summary["iterations"] == 6 and calls["n"] == 5 + 3    # iterations 4, 5 (again) and 6
    (event,) = _events(run)
    assert event["iteration"] == 3 and "generator loss" in event["reason"] and "iteration 5" in event["reason"]
    folder = list_checkpoints(run / "checkpoints")[-1]
    state = load_training_state(folder)
    assert state["rollbacks"] == 1
    assert all(g["lr"] == pytest.approx(1e-4) for opt in state["optimizers"].values() for g in opt["param_groups"])
    assert all(torch.isfinite(v).all() for v in load_file(str(folder / "model.safetensors")).values())


def test_divergence_before_the_first_checkpoint_restarts_from_the_initial_weights(tmp_path, monkeypatch):
    real, calls = loop.discriminator_phase, {"n": 0}

    def inf_gradient_once(nets, x, *args, **kwargs):
        loss, stats = real(nets, x, *args, **kwargs)
        calls["n"] += 1
        return (loss * float("inf"), stats) if calls["n"] == 2 else (loss, stats)

    monkeypatch.setattr(loop, "discriminator_phase", inf_gradient_once)
    run = tmp_path / "run"
    train(tiny_mnist_config(), run, progress=False)
    (event,) = _events(run)
    assert event["iteration"] == 0 and "initial weights" in event["reason"]
    assert "iteration 1" in event["reason"] and "discriminator" in event["reason"]


def test_persistent_divergence_stops_after_k_rollbacks_with_a_clear_message(tmp_path):
    """A learning rate of 1e30 diverges for real, every time: two rollbacks, then a stop naming the fix."""
    run = tmp_path / "run"
    cfg = tiny_mnist_config(**{"train.lr": 1e30, "train.max_rollbacks": 2, "train.checkpoint_every": 1})
    with pytest.raises(UserError, match=r"diverged: .* after 2 rollback\(s\).*--set train.lr="):
        train(cfg, run, progress=False)
    assert len(_events(run)) == 2
    for folder in list_checkpoints(run / "checkpoints"):    # what was saved is finite and loadable
        assert all(torch.isfinite(v).all() for v in load_file(str(folder / "model.safetensors")).values())


def test_stop_policy_stops_at_the_first_divergence(tmp_path):
    cfg = tiny_mnist_config(**{"train.lr": 1e30, "train.on_nonfinite": "stop"})
    with pytest.raises(UserError, match=r"non-finite at iteration 1 .*train.on_nonfinite=stop"):
        train(cfg, tmp_path / "run", progress=False)
    assert not list_checkpoints(tmp_path / "run" / "checkpoints")


def _launch(run, config_file, resume):
    import subprocess
    import sys
    cmd = [sys.executable, "-m", "dcvae.cli.main", "train", "--out", str(run), "--no-progress"]
    cmd += ["--resume"] if resume else ["--config", str(config_file)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _latest(run):
    try:
        return (run / "checkpoints" / "latest").read_text()
    except FileNotFoundError:
        return None


def test_sigkill_anywhere_ten_times_then_identical_to_an_uninterrupted_run(tmp_path):
    """SIGKILL a training process 10 times at random moments, some of them while a checkpoint is being written;
    every time `--resume` continues, and the final weights and training state equal those of a run never killed.
    A checkpoint is written every iteration, so most of the process's time is spent writing one."""
    import random
    import signal
    import time

    cfg = tiny_mnist_config(**{"train.iterations": 60, "train.checkpoint_every": 1, "train.keep_checkpoints": 2,
                               "train.log_every": 1, "train.image_every": 1000})
    config_file = tmp_path / "tiny.json"
    config_file.write_text(cfg.to_json())
    straight = tmp_path / "straight"
    assert _launch(straight, config_file, resume=False).wait(timeout=600) == 0

    run, rng = tmp_path / "killed", random.Random(7)
    kills, cut_writes, killed_at = 0, 0, []
    while True:
        before = _latest(run)
        proc = _launch(run, config_file, resume=before is not None)
        if kills == 10:
            assert proc.wait(timeout=600) == 0, proc.stderr.read()[-2000:]
            break
        deadline = time.monotonic() + 300
        while _latest(run) == before and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)     # this launch has written a checkpoint of its own: training is under way
        assert proc.poll() is None, f"the run ended before kill {kills + 1}: {proc.stderr.read()[-2000:]}"
        if kills % 2:             # the moment a checkpoint's temporary folder appears
            while not any((run / "checkpoints").glob(".tmp-iter-*")) and time.monotonic() < deadline:
                time.sleep(0.0005)
        else:
            time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        cut_writes += any((run / "checkpoints").glob(".tmp-iter-*"))   # a write was cut half-way
        killed_at.append(int(list_checkpoints(run / "checkpoints")[-1].name[5:]))
    assert cut_writes >= 1

    final = list_checkpoints(straight / "checkpoints")[-1].name
    assert final == "iter-0000060" == list_checkpoints(run / "checkpoints")[-1].name
    assert not list((run / "checkpoints").glob(".tmp-*"))
    a, b = straight / "checkpoints" / final, run / "checkpoints" / final
    from conftest import assert_same
    assert_same(load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors")), "weights")
    assert_same(load_training_state(a), load_training_state(b), "state")
    # The metrics log reads as one run: every iteration once, in order.
    iterations = [json.loads(line)["iteration"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert iterations == list(range(1, 61))
    _report("sigkill", {"kills": kills, "checkpoint_writes_cut": cut_writes,
                        "newest_checkpoint_at_each_kill": killed_at, "final_weights_and_state": "bit-identical"})


def _report(name, record):
    """Keep what a fault test did in test-artifacts/reliability-<name>.json (for docs/results.md)."""
    (artifacts_folder() / f"reliability-{name}.json").write_text(json.dumps(record, indent=2) + "\n")


def test_checkpoint_of_another_format_version_is_explained(tiny_run, tmp_path):
    import shutil

    import dcvae
    folder = tmp_path / "future"
    shutil.copytree(list_checkpoints(tiny_run / "checkpoints")[-1], folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["dcvae_version"] == dcvae.__version__
    manifest.update(format=2, dcvae_version="9.0")
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=r"written by dcvae 9\.0 in checkpoint format 2; this dcvae \(.*\) reads "
                                        r"format 1\. Load it with dcvae 9\.0"):
        dcvae.load(folder)


def test_resume_of_a_run_killed_before_its_first_checkpoint_starts_it_again(tmp_path):
    """--resume on a folder with a config but no checkpoint yet (a kill during the first iterations) starts from
    iteration 0 in the same folder, dropping what the dead run logged, and gives the uninterrupted result."""
    run, straight = tmp_path / "run", tmp_path / "straight"
    cfg = tiny_mnist_config(**{"train.iterations": 2, "train.checkpoint_every": 2, "train.log_every": 1})
    train(cfg, straight, progress=False)
    run.mkdir()
    (run / "config.json").write_text(cfg.to_json())
    (run / "metrics.jsonl").write_text('{"iteration": 1, "loss/d": 9.0}\n{"iteration": 2, "lo')   # cut by the kill
    train(cfg, run, resume=True, progress=False)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["iteration"] for r in records] == [1, 2] and records[0]["loss/d"] != 9.0
    a, b = (load_file(str(r / "checkpoints" / "iter-0000002" / "model.safetensors")) for r in (straight, run))
    from conftest import assert_same
    assert_same(a, b, "weights")
