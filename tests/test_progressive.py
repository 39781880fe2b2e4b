"""The progressive-growing backbone (issue 5): ProGAN's layers and sizes, fade-ins that join levels without a jump,
the growing schedule, and a real run that grows 4 -> 8 -> 16 and resumes bit for bit in the middle of a fade-in."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from conftest import assert_same, requires_mnist
from dcvae.config import Config, apply_overrides, preset
from dcvae.errors import UserError
from dcvae.networks import build_networks, count_parameters
from dcvae.networks.progressive import (EqualizedConv2d, ProgressiveDecoder, ProgressiveTrunk, minibatch_stddev,
                                        pixel_norm)
from dcvae.training.checkpoint import list_checkpoints, load_training_state
from dcvae.training.growth import GrowthSchedule, Phase, real_images
from dcvae.training.loop import train
from safetensors.torch import load_file


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_parameter_counts_are_progan_at_1024():
    """ProGAN (Karras et al. 2018, Table 2): 23.1M parameters in the generator and in the discriminator at 1024."""
    g = ProgressiveDecoder(512, 512, 3, 1024)
    d = ProgressiveTrunk(3, 512, 1024)
    assert round(count_parameters(g) / 1e6, 1) == 23.1
    assert round((count_parameters(d) + 512 + 1) / 1e6, 1) == 23.1      # + ProGAN's Linear(512 -> 1) output
    # channels: 512 up to 32x32, then halving: the to_rgb of 64 px takes 256 channels, that of 1024 px 16
    assert g.to_rgb[4].weight.shape[1] == 256 and g.to_rgb[8].weight.shape[1] == 16


def test_equalized_learning_rate_keeps_the_unit_variance():
    """Weights are N(0, 1) and scaled at run time by sqrt(2 / fan_in): on a unit-variance input, a layer's output
    variance is about 2 whatever its fan-in (He's constant), and the stored weight is not rescaled."""
    torch.manual_seed(0)
    for fan_in in (16, 256):
        conv = EqualizedConv2d(fan_in, 64, 3, padding=1)
        assert abs(float(conv.weight.detach().std()) - 1) < 0.05
        with torch.no_grad():
            y = conv(torch.randn(8, fan_in, 16, 16))
        assert abs(float(y.var()) - 2) < 0.3


def test_pixel_norm_and_minibatch_stddev_by_hand():
    x = torch.tensor([[[[3.0]], [[4.0]]]])                        # one position, channels (3, 4): rms = sqrt(12.5)
    assert torch.allclose(pixel_norm(x).flatten(), torch.tensor([3, 4]) / 12.5 ** 0.5)
    batch = torch.tensor([1.0, 3.0, 2.0, 2.0]).view(4, 1, 1, 1).expand(4, 1, 2, 2)
    out = minibatch_stddev(batch, group_size=4)
    assert out.shape == (4, 2, 2, 2)
    # one group of 4: the population std of (1, 3, 2, 2) at each position is sqrt(0.5)
    assert torch.allclose(out[:, 1], torch.full((4, 2, 2), 0.5 ** 0.5), atol=1e-6)


def test_fade_in_starts_where_the_previous_level_ends():
    """At alpha = 0 the new level contributes nothing: the decoder's image is the previous level's, upsampled, and
    the trunk's 4x4 map is the one it computes on the half-size image; at alpha = 1 the new level alone."""
    torch.manual_seed(0)
    g, d = ProgressiveDecoder(8, 16, 3, 32), ProgressiveTrunk(3, 16, 32)
    z, x = torch.randn(4, 8), torch.randn(4, 3, 16, 16)
    g.set_growth(1, 1.0)
    d.set_growth(1, 1.0)
    at_8, maps_8 = g(z), d(F.avg_pool2d(x, 2))
    g.set_growth(2, 0.0)
    d.set_growth(2, 0.0)
    assert torch.allclose(g(z), F.interpolate(at_8, scale_factor=2, mode="nearest"), atol=1e-6)
    assert torch.allclose(d(x)[-1], maps_8[-1], atol=1e-6)
    g.set_growth(2, 1.0)
    assert not torch.allclose(g(z), F.interpolate(at_8, scale_factor=2, mode="nearest"), atol=1e-3)
    assert g(z).shape == (4, 3, 16, 16) and g.resolution == 16


class _HostReads(torch.overrides.TorchFunctionMode):
    """Counts the calls that copy a tensor's values to the host (a GPU synchronisation each)."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.tolist, torch.Tensor.item):
            self.count += 1
        return func(*args, **(kwargs or {}))


def test_forwards_read_the_growth_from_the_host_without_copying_the_buffer():
    """After set_growth a forward reads no tensor back to the host (on a GPU that would wait for the device on
    every forward); a state dict or EMA copy that changes the buffer behind set_growth's back is still seen."""
    torch.manual_seed(0)
    g, d = ProgressiveDecoder(8, 16, 3, 32), ProgressiveTrunk(3, 16, 32)
    z, x = torch.randn(2, 8), torch.randn(2, 3, 32, 32)
    g.set_growth(2, 0.25)
    d.set_growth(2, 0.25)
    with _HostReads() as reads:
        g(z), d(x), g(z)
    assert reads.count == 0
    assert g.current_growth() == (2, 0.25)
    other = ProgressiveDecoder(8, 16, 3, 32)
    other.set_growth(1, 0.5)
    g.load_state_dict(other.state_dict())
    assert g.current_growth() == (1, 0.5) and g(z).shape == (2, 3, 8, 8)
    with torch.no_grad():
        g.growth.copy_(torch.tensor([0.0, 1.0]))             # as the EMA update copies buffers
    assert g.current_growth() == (0, 1.0) and g.resolution == 4
    g.set_growth(2, 0.3)                                     # alpha as the float32 buffer holds it
    assert g.current_growth() == (2, torch.tensor(0.3).item()) == (2, g.growth[1].item())


def test_an_ema_copy_of_the_buffers_carries_the_known_growth_along():
    """The momentum discriminator and the EMA decoder get the live networks' buffers every iteration: the copy
    takes the source's host-known phase along (no device read at the next forward), and a source whose phase is
    not known on the host (a loaded state dict) leaves the copy to read it once, correctly."""
    from dcvae.networks import copy_buffers

    torch.manual_seed(0)
    live, ema = ProgressiveTrunk(3, 16, 32), ProgressiveTrunk(3, 16, 32)
    x = torch.randn(2, 3, 16, 16)
    live.set_growth(2, 0.25)
    with _HostReads() as reads:
        copy_buffers(ema, live)
        ema(x)
    assert reads.count == 0 and ema.current_growth() == (2, 0.25) and torch.equal(ema.growth, live.growth)
    other = ProgressiveTrunk(3, 16, 32)
    other.set_growth(1, 0.5)
    live.load_state_dict(other.state_dict())                  # live's phase is now unknown on the host
    copy_buffers(ema, live)
    with _HostReads() as reads:
        assert ema.current_growth() == (1, 0.5) and ema.current_growth() == (1, 0.5)
    assert reads.count == 1


def test_schedule_phases_by_hand():
    cfg = _tiny_config("/nowhere")                   # 4 -> 16, fade 32 and stable 32 images, batches 8, 8, 4
    s = GrowthSchedule(cfg)
    assert s.phase(0) == Phase(0, 1.0, 8) and s.phase(31) == Phase(0, 1.0, 8)
    assert s.phase(32) == Phase(1, 0.0, 8) and s.phase(48) == Phase(1, 0.5, 8)
    assert s.phase(64) == Phase(1, 1.0, 8) and s.phase(95) == Phase(1, 1.0, 8)
    assert s.phase(96) == Phase(2, 0.0, 4) and s.phase(120) == Phase(2, 0.75, 4)
    assert s.phase(10 ** 9) == Phase(2, 1.0, 4) and s.images_to_full_growth() == 128
    assert GrowthSchedule(preset("mnist")).phase(10 ** 6) == Phase(-1, 1.0, 64)


def test_real_images_fade_like_the_generator():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(real_images(x, Phase(0, 1.0, 1)), x)       # already at the phase's resolution
    x8 = torch.arange(64.0).view(1, 1, 8, 8)
    low = F.interpolate(F.avg_pool2d(x8, 2), scale_factor=2, mode="nearest")
    assert torch.equal(real_images(x8, Phase(1, 0.0, 1)), low)
    assert torch.allclose(real_images(x8, Phase(1, 0.25, 1)), 0.75 * low + 0.25 * x8)
    assert torch.equal(real_images(x8, Phase(0, 1.0, 1)), F.avg_pool2d(x8, 2))


def test_presets_build_the_paper_networks():
    """Each high-resolution preset is a progressive network at its resolution, latent 512, ProGAN's optimiser, and
    its contrastive heads on maps that exist from the 4x4 phase on."""
    for name, resolution in (("celeba64", 64), ("celeba128", 128), ("celebahq256", 256), ("celebahq512", 512),
                             ("lsun_bedroom128", 128)):
        cfg = preset(name).validate()
        assert (cfg.model.backbone, cfg.model.resolution, cfg.model.latent_dim) == ("progressive", resolution, 512)
        assert (cfg.train.lr, cfg.train.betas) == (1e-3, [0.0, 0.99])
        schedule = GrowthSchedule(cfg)
        assert schedule.phase(schedule.images_to_full_growth()).resolution == resolution
        nets = build_networks(cfg.model) if resolution <= 64 else None
        if nets is not None:
            head = nets.discriminator.block_heads[cfg.objective.contrastive_layers[0]]
            assert head.project.in_features == 16      # the 4x4 map


@pytest.mark.parametrize("override, message", [
    ({"growth.start_resolution": 32}, "growth.start_resolution=32 must be one of"),
    ({"growth.start_resolution": 6}, "growth.start_resolution=6 must be one of"),
    ({"growth.batch_sizes": "8,8"}, "needs one positive batch size per resolution 4, 8, 16"),
    ({"growth.batch_sizes": "8,0,8"}, "needs one positive batch size"),
    ({"growth.fade_images": 0}, "growth.fade_images (0) must be at least 1"),
    ({"model.resolution": 48}, "model.resolution=48 is not one of"),
    ({"objective.contrastive_layers": "b1,final"}, "objective.contrastive_layers='b1' is not one of: b2, final"),
])
def test_inconsistent_growth_is_refused(override, message):
    cfg = _tiny_config("/nowhere", validate=False)
    apply_overrides(cfg, override)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cfg.validate()


def _tiny_config(root, validate=True, **overrides) -> Config:
    cfg = Config()
    apply_overrides(cfg, {
        "data.dataset": "folder", "data.root": str(root), "model.backbone": "progressive", "model.resolution": 16,
        "model.latent_dim": 8, "model.gen_width": 8, "model.dis_width": 8,
        "objective.contrastive_layers": "b2,final", "objective.queue_size": 64,
        "growth.fade_images": 32, "growth.stable_images": 32, "growth.batch_sizes": "8,8,4",
        "train.batch_size": 8, "train.sample_batch_size": 16, "train.d_steps": 1, "train.iterations": 18,
        "train.log_every": 1, "train.checkpoint_every": 3, "train.image_every": 100,
        "train.lr": 1e-3, "train.betas": "0,0.99", **overrides})
    return cfg.validate() if validate else cfg


def _write_images(folder, n=40):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")


def test_training_grows_logs_alpha_and_resumes_in_a_fade_in_bit_for_bit(tmp_path):
    """18 iterations straight == 15 iterations (stopped in the fade-in of 16x16: alpha 0.25 at iteration 15),
    then resumed to 18. The log shows the growth 4 -> 8 -> 16 with alpha rising through each fade-in, the batch
    shrinks to 4 at 16x16, and D learns something along the way."""
    _write_images(tmp_path / "images")
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    train(_tiny_config(tmp_path / "images"), straight, progress=False)
    train(_tiny_config(tmp_path / "images", **{"train.iterations": 15}), stopped, progress=False)
    train(_tiny_config(tmp_path / "images"), stopped, resume=True, progress=False)

    log = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    growth = [(r["growth/resolution"], r["growth/alpha"]) for r in log]
    assert growth[:4] == [(4, 1.0)] * 4                               # 32 images at 4x4, batch 8
    assert growth[4:8] == [(8, 0.0), (8, 0.25), (8, 0.5), (8, 0.75)]  # fade-in of 8x8
    assert growth[8:12] == [(8, 1.0)] * 4
    assert growth[12:18] == [(16, a / 8) for a in range(6)]           # batch 4: alpha steps of 4 / 32
    final = list_checkpoints(straight / "checkpoints")[-1]
    assert final.name == "iter-0000018" == list_checkpoints(stopped / "checkpoints")[-1].name
    a, b = final, stopped / "checkpoints" / final.name
    weights = load_file(str(a / "model.safetensors"))
    assert_same(weights, load_file(str(b / "model.safetensors")), "weights")
    assert_same(load_training_state(a), load_training_state(b), "state")
    assert load_training_state(a)["images_seen"] == 12 * 8 + 6 * 4
    # the EMA decoder and the momentum discriminator followed the growth: level 2, alpha 5/8 at the last step
    for key in ("decoder.growth", "decoder_ema.growth", "discriminator.trunk.growth", "encoder.trunk.growth"):
        assert weights[key].tolist() == [2.0, 0.625], key
    assert load_training_state(a)["momentum_discriminator"]["trunk.growth"].tolist() == [2.0, 0.625]
    log_b = [json.loads(line) for line in (stopped / "metrics.jsonl").read_text().splitlines()]
    strip = lambda r: {k: v for k, v in r.items() if k != "images_per_s"}  # noqa: E731
    assert [strip(r) for r in log_b] == [strip(r) for r in log]


def test_a_checkpoint_saved_mid_growth_samples_and_encodes_at_its_resolution(tmp_path):
    """dcvae.load on a run stopped at 8x8: samples are 8x8, and full-size images are encoded after pooling."""
    import dcvae
    _write_images(tmp_path / "images")
    run = tmp_path / "run"
    train(_tiny_config(tmp_path / "images", **{"train.iterations": 9}), run, progress=False)
    model = dcvae.load(run)
    samples = model.sample(3)
    assert samples.shape == (3, 3, 8, 8) and samples.abs().max() <= 1
    assert model.encode(torch.zeros(2, 3, 16, 16)).shape == (2, 8)


@requires_mnist
def test_data_smaller_than_the_preset_is_refused_before_training(tmp_path):
    """celeba64 pointed at MNIST (28x28): one message naming both sizes, nothing written."""
    cfg = preset("celeba64")
    apply_overrides(cfg, {"data.dataset": "mnist", "model.image_channels": 1})
    with pytest.raises(UserError, match=r"MNIST has 28x28 images, smaller than model.resolution=64; images are "
                                        r"never upsampled"):
        train(cfg.validate(), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
