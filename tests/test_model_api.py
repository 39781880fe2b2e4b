"""The inference API of a trained model."""
import pytest
import torch

import dcvae
from dcvae.training import train

from conftest import requires_mnist, tiny_mnist_config


@requires_mnist
def test_load_encode_decode_interpolate(tmp_path):
    train(tiny_mnist_config(**{"train.iterations": 2}), tmp_path / "run", progress=False)
    model = dcvae.load(tmp_path / "run")
    live = dcvae.load(tmp_path / "run", decoder="live")
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    z = model.encode(x)
    assert z.shape == (3, 8)
    assert torch.equal(model.reconstruct(x), model.decode(z))
    assert not torch.equal(model.decode(z), live.decode(z))   # EMA and live decoders differ after training
    frames = model.interpolate(x[:2], x[1:3], steps=5)
    assert frames.shape == (2, 5, 1, 32, 32)
    assert torch.allclose(frames[:, 0], model.decode(z[:2]), atol=1e-6)
    assert torch.allclose(frames[:, -1], model.decode(z[1:3]), atol=1e-6)
    g = torch.Generator().manual_seed(3)
    s = model.sample(4, truncation=1.0, generator=g)
    assert s.shape == (4, 1, 32, 32) and s.abs().max() <= 1
    # the training layout (channels_last) is kept for inference; outputs come back in the default layout and
    # equal those of the same weights in NCHW
    assert model.memory_format == torch.channels_last and model.decode(z).is_contiguous()
    assert model.decoder.stages[0][1].weight.is_contiguous(memory_format=torch.channels_last)
    nchw = dcvae.load(tmp_path / "run").to(memory_format=torch.contiguous_format)
    nchw.memory_format = torch.contiguous_format
    torch.testing.assert_close(nchw.decode(z), model.decode(z), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(nchw.encode(x), z, rtol=1e-5, atol=1e-5)
    try:
        model.encode(torch.zeros(1, 3, 32, 32))
    except dcvae.UserError as e:
        assert "[N, 1, 32, 32]" in str(e)
    else:
        raise AssertionError("wrong image shape accepted")


@requires_mnist
def test_the_encoder_options_are_rebuilt_on_load(tmp_path):
    train(tiny_mnist_config(**{"train.iterations": 2, "model.encoder_pool": "flatten",
                               "model.encoder_spectral_norm": False}), tmp_path / "run", progress=False)
    model = dcvae.load(tmp_path / "run")
    assert model.config.model.encoder_pool == "flatten" and model.encoder.head.in_features == 4 * 8 * 16
    assert model.config.model.encoder_spectral_norm is False
    assert not any(torch.nn.utils.parametrize.is_parametrized(layer) for layer in model.encoder.modules())
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    assert model.encode(x).shape == (2, 8)


@requires_mnist
def test_sampling_from_a_given_gaussian_prior(tiny_run):
    model = dcvae.load(tiny_run)
    d = model.latent_dim
    standard = model.sample_latents(6, generator=torch.Generator().manual_seed(1))
    assert torch.equal(standard, torch.randn(6, d, generator=torch.Generator().manual_seed(1)))   # the paper's N(0, I)
    assert torch.equal(model.sample(6, generator=torch.Generator().manual_seed(1)), model.decode(standard))
    mean = torch.arange(d, dtype=torch.float64)
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    covariance = a @ a.T / d + 0.5 * torch.eye(d, dtype=torch.float64)
    z = model.sample_latents(40_000, generator=torch.Generator().manual_seed(3), prior=(mean, covariance)).double()
    assert torch.allclose(z.mean(0), mean, atol=0.03)
    assert torch.allclose(torch.cov(z.T), covariance, atol=0.05)
    # truncation clips the standard normal draw eps, so L^-1 (z - mean) lies in [-t, t]
    clipped = model.sample_latents(500, truncation=0.5, generator=torch.Generator().manual_seed(4),
                                   prior=(mean, covariance)).double()
    eps = torch.linalg.solve_triangular(torch.linalg.cholesky(covariance), (clipped - mean).T, upper=False).T
    assert eps.abs().max() <= 0.5 + 1e-4 and eps.abs().max() > 0.45
    with pytest.raises(dcvae.UserError, match="covariance"):
        model.sample_latents(2, prior=(mean[:2], covariance[:2, :2]))
    with pytest.raises(dcvae.UserError, match="positive definite"):
        model.sample_latents(2, prior=(mean, -covariance))
