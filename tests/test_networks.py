"""Architecture: the paper's exact parameter counts, shapes, and which parameters each loss updates."""
import copy

import pytest
import torch

from dcvae.config import ObjectiveConfig, preset
from dcvae.networks import build_networks, count_parameters
from dcvae.objectives.phases import TERMS, contrastive_phase, discriminator_phase, generator_phase
from dcvae.objectives.queue import NegativeQueue
from dcvae.training.loop import _step


def _noise(seed: int = 0):
    from dcvae.objectives.noise import BatchNoise
    noise = BatchNoise(torch.device("cpu"))
    noise.seed(seed)
    return noise


def test_paper_width_parameter_counts_are_exact():
    nets = build_networks(preset("cifar10").model)
    assert count_parameters(nets.encoder) == 1_086_464
    assert count_parameters(nets.decoder) == 4_405_251
    assert count_parameters(nets.discriminator) == 1_063_445


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_shapes_and_ranges(name):
    m = preset(name).model
    nets = build_networks(m)
    x = torch.rand(3, m.image_channels, 32, 32) * 2 - 1
    mu, logvar = nets.encoder(x)
    assert mu.shape == logvar.shape == (3, m.latent_dim)
    y = nets.decoder(mu)
    assert y.shape == x.shape and y.min() >= -1 and y.max() <= 1
    out = nets.discriminator(x, tuple(nets.discriminator.layer_names), ("b2",))
    assert out["logit"].shape == (3,)
    for layer in nets.discriminator.layer_names:
        assert out[layer].shape == (3, m.contrastive_dim)
    assert out["map:b2"].shape[0] == 3 and out["map:b2"].dim() == 4


def _setup():
    torch.manual_seed(0)
    m = preset("mnist").model
    nets = build_networks(m)
    opt = {n: torch.optim.Adam(getattr(nets, n).parameters(), lr=1e-2, betas=(0.0, 0.9))
           for n in ("encoder", "decoder", "discriminator")}
    x = torch.rand(8, 1, 32, 32) * 2 - 1
    return nets, opt, x


def _snapshot(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _changed(before, module):
    return {n for n, p in module.named_parameters() if not torch.equal(before[n], p.detach())}


def test_discriminator_step_changes_only_the_discriminator_gan_path():
    nets, opt, x = _setup()
    snaps = {n: _snapshot(getattr(nets, n)) for n in ("encoder", "decoder", "discriminator")}
    loss, _ = discriminator_phase(nets, x, ObjectiveConfig(), _noise())
    _step(loss, [opt["discriminator"]])
    assert not _changed(snaps["encoder"], nets.encoder)
    assert not _changed(snaps["decoder"], nets.decoder)
    assert all(p.grad is None for p in nets.encoder.parameters())  # no backward into E or G at all
    assert all(p.grad is None for p in nets.decoder.parameters())
    changed = _changed(snaps["discriminator"], nets.discriminator)
    assert any(n.startswith("trunk.") for n in changed) and any(n.startswith("logit.") for n in changed)
    assert not any(n.startswith("block_heads.") for n in changed)


def test_contrastive_step_changes_encoder_decoder_trunk_heads_but_not_gan_logit():
    nets, opt, x = _setup()
    o = ObjectiveConfig(contrastive_layers=["b1", "final"], queue_size=32, patch_layer="b2")
    queues = torch.nn.ModuleDict({n: NegativeQueue(32, 16) for n in ("b1", "final")} |
                                 {"patch": NegativeQueue(32, 64)})
    momentum = copy.deepcopy(nets.discriminator).eval()
    snaps = {n: _snapshot(getattr(nets, n)) for n in ("encoder", "decoder", "discriminator")}
    loss, stats, keys = contrastive_phase(nets, momentum, queues, x, o, _noise(), True)
    _step(loss, [opt["encoder"], opt["decoder"], opt["discriminator"]])
    assert _changed(snaps["encoder"], nets.encoder) == set(snaps["encoder"])
    assert _changed(snaps["decoder"], nets.decoder) == set(snaps["decoder"])
    changed = _changed(snaps["discriminator"], nets.discriminator)
    assert not any(n.startswith("logit.") for n in changed)
    assert {n for n in snaps["discriminator"] if n.startswith(("trunk.", "l5.", "block_heads.b1."))} <= changed
    assert not any(n.startswith(("block_heads.b2.", "block_heads.b3.")) for n in changed)
    assert set(keys) == {"b1", "final", "patch"} and keys["patch"].shape == (8, 64)
    assert {"acc/b1", "acc/final", "acc/patch", "loss/nce_patch"} <= set(stats)


def test_generator_step_changes_encoder_and_decoder_only():
    nets, opt, x = _setup()
    snap_d = _snapshot(nets.discriminator)
    nets.discriminator.requires_grad_(False)
    loss, stats = generator_phase(nets, x, ObjectiveConfig(), TERMS["dcvae"], _noise(), 16)
    _step(loss, [opt["encoder"], opt["decoder"]])
    assert not _changed(snap_d, nets.discriminator)
    assert all(p.grad is None for p in nets.discriminator.parameters())
    assert {"loss/g", "kl"} <= set(stats)


@pytest.mark.parametrize("variant", ["vae", "vaegan"])
def test_reconstruction_terms_of_ablations(variant):
    nets, _, x = _setup()
    _, stats = generator_phase(nets, x, ObjectiveConfig(variant=variant), TERMS[variant],
                               _noise(), 16)
    assert ("loss/pixel" in stats) == (variant == "vae")
    assert ("loss/feature" in stats) == (variant == "vaegan")
    assert ("loss/g" in stats) == (variant == "vaegan")
