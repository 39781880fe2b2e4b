"""Architecture: the paper's exact parameter counts, shapes, and which parameters each loss updates."""
import copy

import pytest
import torch

from dcvae.config import ObjectiveConfig, preset
from dcvae.errors import UserError
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


def test_flattened_encoder_pool_keeps_the_layout_of_the_last_map():
    m = preset("mnist").model
    m.encoder_pool = "flatten"
    encoder = build_networks(m).encoder.eval()
    w = m.dis_width
    assert encoder.head.in_features == 4 * w * 4 * 4                   # the compact trunk's last map: [4w, 4, 4]
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    mu, logvar = encoder(x)
    by_hand = encoder.head(encoder.trunk(x)[-1].reshape(3, -1)).chunk(2, dim=1)
    assert torch.allclose(mu, by_hand[0]) and torch.allclose(logvar, by_hand[1])
    # The summed encoder cannot tell apart two last maps that hold the same values at other places; this one can.
    last = encoder.trunk(x[:1])[-1]
    moved = last.flip(-1)
    head = encoder.head
    assert not torch.allclose(head(last.flatten(1)), head(moved.flatten(1)))
    assert torch.allclose(last.sum((2, 3)), moved.sum((2, 3)), atol=1e-5)


def test_flattened_encoder_pool_exists_for_the_compact_backbone_only():
    cfg = preset("cifar10")
    cfg.model.encoder_pool = "flatten"
    with pytest.raises(UserError, match="compact32 backbone only.*encoder_pool=sum"):
        cfg.validate()


@pytest.mark.parametrize("name", ["cifar10", "mnist"])
def test_an_encoder_without_spectral_norm_is_the_same_network_on_plain_weights(name):
    """model.encoder_spectral_norm=false removes the normalisation from every encoder layer and nothing else: given
    the normalised encoder's effective weights (W / sigma(W)), the plain encoder computes the same posterior."""
    m = preset(name).model
    normalised = build_networks(m).encoder.eval()
    m.encoder_spectral_norm = False
    nets = build_networks(m)
    plain = nets.encoder.eval()
    assert count_parameters(plain) == count_parameters(normalised)
    assert not any(torch.nn.utils.parametrize.is_parametrized(layer) for layer in plain.modules())
    assert all(torch.nn.utils.parametrize.is_parametrized(layer) for layer in nets.discriminator.trunk.modules()
               if isinstance(layer, (torch.nn.Conv2d, torch.nn.Linear)))
    with torch.no_grad():
        for path, target in plain.named_modules():
            if isinstance(target, (torch.nn.Conv2d, torch.nn.Linear)):
                source = normalised.get_submodule(path)
                target.weight.copy_(source.weight)          # in eval mode: the weight divided by its spectral norm
                if target.bias is not None:
                    target.bias.copy_(source.bias)
    x = torch.rand(3, m.image_channels, 32, 32) * 2 - 1
    for a, b in zip(plain(x), normalised(x)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_removing_the_encoders_spectral_norm_is_refused_on_the_progressive_backbone():
    cfg = preset("cifar10")
    cfg.model.backbone, cfg.model.resolution = "progressive", 64
    cfg.model.encoder_spectral_norm = False
    with pytest.raises(UserError, match="32x32 backbones only"):
        cfg.validate()


def test_upsampling_folded_into_the_convolution_by_hand():
    """Nearest x2 then a 3x3 convolution, computed at the low resolution: on a 1-channel 2x2 image with an all-ones
    kernel and bias 0.5, each output is 0.5 plus the sum of the upsampled 4x4 image over its 3x3 window."""
    from dcvae.networks.layers import upsample_nearest_conv3x3

    conv = torch.nn.Conv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        conv.bias.fill_(0.5)
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    up = x.repeat_interleave(2, 2).repeat_interleave(2, 3)[0, 0]                    # the 4x4 nearest upsampling
    padded = torch.nn.functional.pad(up, (1, 1, 1, 1))
    by_hand = torch.tensor([[float(padded[i:i + 3, j:j + 3].sum()) + 0.5 for j in range(4)] for i in range(4)])
    assert by_hand[0, 0] == 1 + 1 + 1 + 1 + 0.5 and by_hand[1, 1] == 1 + 1 + 2 + 1 + 1 + 2 + 3 + 3 + 4 + 0.5
    assert torch.allclose(upsample_nearest_conv3x3(x, conv.weight, conv.bias)[0, 0], by_hand)


def test_pooling_folded_into_the_convolution_by_hand():
    """A 3x3 convolution then 2x2 average pooling, as one 4x4 convolution of stride 2: on a 1-channel 4x4 image
    with an all-ones kernel and bias 0.5, the pooled output is 0.5 plus the mean of four 3x3 window sums."""
    from dcvae.networks.layers import conv3x3_avg_pool2

    weight, bias = torch.ones(1, 1, 3, 3), torch.tensor([0.5])
    x = torch.arange(16.0).view(1, 1, 4, 4)
    window_sums = torch.nn.functional.conv2d(x, weight, padding=1)[0, 0]       # 3x3 sums around each pixel
    by_hand = torch.tensor([[float(window_sums[2 * i:2 * i + 2, 2 * j:2 * j + 2].mean()) + 0.5 for j in range(2)]
                            for i in range(2)])
    assert torch.allclose(conv3x3_avg_pool2(x, weight, bias)[0, 0], by_hand)


def test_folded_resampling_saves_arithmetic_at_paper_width():
    """Counted by torch's FLOP counter, one image through the paper-width networks: folding cuts the decoder's
    forward from 3.53 GFLOP (the authors' count) by over a quarter, and the encoder's by over a third."""
    from torch.utils.flop_counter import FlopCounterMode

    from dcvae.networks import set_fold_resampling

    nets = build_networks(preset("cifar10").model)
    flops = {}
    for fold in (False, True):
        for part, module, x in (("decoder", nets.decoder, torch.randn(2, 128)),
                                ("encoder", nets.encoder, torch.randn(2, 3, 32, 32))):
            set_fold_resampling(module, fold)
            with torch.no_grad(), FlopCounterMode(display=False) as counter:
                module(x)
            flops[part, fold] = counter.get_total_flops() / 2
    assert round(flops["decoder", False] / 1e9, 2) == 3.53
    assert flops["decoder", True] < 0.75 * flops["decoder", False]
    assert flops["encoder", True] < 0.65 * flops["encoder", False]


def _outputs_and_gradients(module, inputs):
    out = module(inputs)
    leaves = [t for t in (out if isinstance(out, (tuple, list)) else [out]) if t is not None]
    loss = sum((t * torch.linspace(-1, 1, t.numel(), dtype=t.dtype).view_as(t)).sum() for t in leaves)
    grads = torch.autograd.grad(loss, [inputs, *module.parameters()], allow_unused=True)   # progressive: levels unused
    return [t.detach() for t in leaves], [torch.zeros(()) if g is None else g for g in grads]


@pytest.mark.parametrize("name", ["cifar10", "mnist", "celeba64"])
@pytest.mark.parametrize("part", ["decoder", "encoder", "trunk"])
def test_folded_resampling_is_the_same_network(name, part):
    """train.fold_resampling (default) against the released order of operations, in float64 so that only the order
    of the arithmetic differs, in training mode and in both memory layouts: the same outputs, the same gradients
    for the input and every parameter, and (trunks) the same spectral-norm power iterations (one per weight read)."""
    from dcvae.networks import set_fold_resampling

    torch.manual_seed(0)
    m = preset(name).model
    m.gen_width, m.dis_width = min(m.gen_width, 32), min(m.dis_width, 16)
    nets = build_networks(m)
    module = {"decoder": nets.decoder, "encoder": nets.encoder, "trunk": nets.discriminator.trunk}[part].double()
    shape = (4, m.latent_dim) if part == "decoder" else (4, m.image_channels, m.resolution, m.resolution)
    inputs = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    results = {}
    for layout in (torch.contiguous_format, torch.channels_last):
        for fold in (False, True):
            copy_ = copy.deepcopy(module).to(memory_format=layout)
            set_fold_resampling(copy_, fold)
            results[layout, fold] = (*_outputs_and_gradients(copy_, inputs), copy_.state_dict())
    expected_out, expected_grads, expected_state = results[torch.contiguous_format, False]
    for key, (out, grads, state) in results.items():
        for a, b in [*zip(out, expected_out, strict=True), *zip(grads, expected_grads, strict=True)]:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=str(key))
        for k, v in state.items():      # spectral-norm vectors (u, v) and BatchNorm statistics after one forward
            torch.testing.assert_close(v, expected_state[k], rtol=1e-9, atol=1e-11, msg=f"{key} {k}")


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


def test_the_bernoulli_vae_loss_is_the_negative_elbo_at_kl_weight_one():
    nets, _, x = _setup()
    objective = ObjectiveConfig(variant="vae", pixel_likelihood="bernoulli", kl_weight=1.0)
    loss, stats = generator_phase(nets, x, objective, TERMS["vae"], _noise(), 16)
    # both terms summed over the batch: loss = sum over images of (BCE + KL); stats are per image
    torch.testing.assert_close(loss.detach(), len(x) * (stats["loss/bernoulli"] + stats["kl"]))
    assert 0 < stats["loss/pixel"] < 4 and stats["loss/bernoulli"] > 0       # the MSE is still logged beside it


def test_a_pixel_likelihood_is_refused_for_a_variant_without_a_pixel_term():
    cfg = preset("mnist")
    cfg.objective.pixel_likelihood = "bernoulli"
    with pytest.raises(UserError, match="pixel term of the vae variant.*variant=vae"):
        cfg.validate()
    cfg.objective.variant = "vae"
    cfg.validate()
    cfg.objective.pixel_likelihood = "laplace"
    with pytest.raises(UserError, match="pixel_likelihood"):
        cfg.validate()
