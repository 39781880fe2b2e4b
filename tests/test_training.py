"""The training loop on real MNIST: run folder contents, exact resume, and real learning."""
import json
import shutil

import torch
from safetensors.torch import load_file

import dcvae
from dcvae.training import train
from dcvae.training.checkpoint import STATE_FILE, list_checkpoints, load_training_state

from conftest import assert_same, requires_mnist, tiny_mnist_config

pytestmark = requires_mnist


def _final(run):
    folder = list_checkpoints(run / "checkpoints")[-1]
    return folder, load_file(str(folder / "model.safetensors")), load_training_state(folder)




def test_run_folder_contents(tmp_path):
    run = tmp_path / "run"
    summary = train(tiny_mnist_config(), run, progress=False)
    assert summary["iterations"] == 6
    assert json.loads((run / "config.json").read_text())["model"]["latent_dim"] == 8
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines] == [2, 4, 6]
    assert {"loss/d", "loss/g", "loss/nce_b1", "acc/final", "acc/patch", "images_per_s"} <= set(lines[-1])
    assert "acc/patch" not in lines[0]          # the local-patch term starts at iteration patch_start=2
    assert sorted(p.name for p in (run / "images").iterdir()) == [
        "reconstructions-0000003.png", "reconstructions-0000006.png", "samples-0000003.png", "samples-0000006.png"]
    assert any((run / "tensorboard").iterdir())
    assert [p.name for p in list_checkpoints(run / "checkpoints")] == ["iter-0000003", "iter-0000006"]
    assert (run / "checkpoints" / "latest").read_text().strip() == "iter-0000006"
    model = dcvae.load(run)
    assert model.sample(2).shape == (2, 1, 32, 32)


def test_keep_last_n_checkpoints(tmp_path):
    cfg = tiny_mnist_config(**{"train.iterations": 4, "train.checkpoint_every": 1, "train.keep_checkpoints": 2})
    train(cfg, tmp_path / "run", progress=False)
    assert [p.name for p in list_checkpoints(tmp_path / "run" / "checkpoints")] == ["iter-0000003", "iter-0000004"]


def test_resume_continues_bit_for_bit(tmp_path):
    """6 iterations straight == 3 iterations, stop, resume to 6: every weight, optimiser moment, queue, RNG and the
    data position are equal. The local-patch term switches on in between (patch_start=2) and an epoch boundary
    is crossed (a 60k-image epoch is not, so the data set is not the limit; the stream test covers epochs)."""
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    train(tiny_mnist_config(), straight, progress=False)
    train(tiny_mnist_config(**{"train.iterations": 3}), stopped, progress=False)
    train(tiny_mnist_config(), stopped, resume=True, progress=False)
    _, weights_a, state_a = _final(straight)
    _, weights_b, state_b = _final(stopped)
    assert_same(weights_a, weights_b, "weights")
    assert_same(state_a, state_b, "state")
    # The logged losses of the last window (iterations 5-6, both after the resume) are equal too.
    strip = lambda line: {k: v for k, v in json.loads(line).items() if k != "images_per_s"}  # noqa: E731
    last_a = strip((straight / "metrics.jsonl").read_text().splitlines()[-1])
    last_b = strip((stopped / "metrics.jsonl").read_text().splitlines()[-1])
    assert last_a["iteration"] == 6 and last_a == last_b


def test_a_learning_rate_given_on_resume_replaces_the_saved_one(tmp_path):
    """The optimiser state saved at iteration 3 carries lr 2e-4; resumed with train.lr=2e-5, every group of every
    optimiser steps at 2e-5, and the encoder moves several times less than when resumed at the saved rate."""
    at_saved_rate, lowered = tmp_path / "saved", tmp_path / "lowered"
    train(tiny_mnist_config(**{"train.iterations": 3}), at_saved_rate, progress=False)
    shutil.copytree(at_saved_rate, lowered)
    _, start, _ = _final(lowered)
    train(tiny_mnist_config(), at_saved_rate, resume=True, progress=False)
    train(tiny_mnist_config(**{"train.lr": 2e-5}), lowered, resume=True, progress=False)
    _, weights, state = _final(lowered)
    assert {g["lr"] for opt in state["optimizers"].values() for g in opt["param_groups"]} == {2e-5}
    _, weights_saved_rate, _ = _final(at_saved_rate)
    encoder_parameters = [k for k in start
                          if k.startswith("encoder.") and k.endswith((".weight", ".original", ".bias"))]
    step = lambda w: sum((w[k].double() - start[k].double()).norm() for k in encoder_parameters)  # noqa: E731
    assert step(weights) < 0.5 * step(weights_saved_rate)   # Adam: a step is ~lr per weight (6x smaller here)


def test_batch_stream_resumes_across_epochs():
    from torch.utils.data import TensorDataset
    from dcvae.data.stream import BatchStream

    data = TensorDataset(torch.arange(10).float().view(10, 1), torch.arange(10))
    a = BatchStream(data, 3, seed=5, device=torch.device("cpu"))
    seq = [a.next()[1].tolist() for _ in range(7)]   # 3 batches per epoch: crosses two epoch boundaries
    assert sorted(sum(seq[:3], [])) == sorted(set(sum(seq[:3], [])))    # no repeats inside an epoch
    b = BatchStream(data, 3, seed=5, device=torch.device("cpu"))
    [b.next() for _ in range(4)]
    c = BatchStream(data, 3, seed=5, device=torch.device("cpu"))
    c.load_state_dict(b.state_dict())
    assert [c.next()[1].tolist() for _ in range(3)] == seq[4:]
    assert seq[:3] != seq[3:6]                      # each epoch has its own order


def test_training_state_is_plain_tensors(tmp_path):
    run = tmp_path / "run"
    train(tiny_mnist_config(**{"train.iterations": 1}), run, progress=False)
    folder = list_checkpoints(run / "checkpoints")[-1]
    state = torch.load(folder / STATE_FILE, weights_only=True)
    assert state["iteration"] == 1 and set(state["queues"]) >= {"b1.keys", "final.keys", "patch.keys"}
