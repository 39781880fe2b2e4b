"""Latent tools: the math on synthetic latents, and the commands on a tiny trained model."""
import pytest
import torch
from PIL import Image

from dcvae.cli.main import main
from dcvae.errors import UserError
from dcvae.latent import apply_directions, attribute_direction, fit_aggregate_posterior, mix, traverse
from dcvae.latent.tools import load_latents, save_latents
from dcvae.training import train

from conftest import requires_mnist, tiny_mnist_config


def test_direction_from_synthetic_latents_recovers_the_true_direction():
    g = torch.Generator().manual_seed(0)
    true = torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0) * 3
    base = torch.randn(400, 16, generator=g)
    with_attr, without_attr = base[:200] + true, base[200:]
    estimate = attribute_direction(with_attr, without_attr)
    assert torch.nn.functional.cosine_similarity(estimate, true, dim=0) > 0.97
    with pytest.raises(UserError, match="at least 20 images with the attribute"):
        attribute_direction(with_attr[:19], without_attr)


def test_apply_directions_adds_scaled_sum():
    z = torch.zeros(2, 3)
    out = apply_directions(z, [torch.tensor([1.0, 0, 0]), torch.tensor([0, 2.0, 0])], [0.5, -1.0])
    assert torch.equal(out, torch.tensor([[0.5, -2.0, 0.0]] * 2))


def test_mix_changes_exactly_the_chosen_dimensions():
    a, b = torch.zeros(3, 8), torch.ones(3, 8)
    out = mix(a, b, [1, 4, 5])
    assert torch.equal(out[:, [1, 4, 5]], torch.ones(3, 3))
    assert torch.equal(out[:, [0, 2, 3, 6, 7]], torch.zeros(3, 5))
    assert torch.equal(a, torch.zeros(3, 8))               # inputs untouched
    with pytest.raises(UserError, match="0..7"):
        mix(a, b, [8])


def test_aggregate_posterior_fit_matches_hand_computed_moments():
    class TwoDimensionalEncoder:
        """mu = (x, 2x) of an image's single pixel x, sigma^2 = 0.25 for every image."""
        def prepare_images(self, x):
            return x

        def encoder(self, x):
            v = x.flatten(1)
            return torch.cat([v, 2 * v], 1), torch.full((len(x), 2), 0.25).log()

    images = torch.tensor([0.0, 1.0, 2.0, 3.0, 100.0]).view(5, 1, 1, 1)
    data = torch.utils.data.TensorDataset(images, torch.zeros(5))
    mean, covariance = fit_aggregate_posterior(TwoDimensionalEncoder(), data, n=4, batch_size=3)
    # the first 4 images: mean of x 1.5, population variance 1.25; Cov(x, 2x) = [[1.25, 2.5], [2.5, 5]] + 0.25 I
    assert mean.dtype == torch.float64 and torch.allclose(mean, torch.tensor([1.5, 3.0], dtype=torch.float64))
    assert torch.allclose(covariance, torch.tensor([[1.5, 2.5], [2.5, 5.25]], dtype=torch.float64))
    with pytest.raises(UserError, match="2 to 5 images"):
        fit_aggregate_posterior(TwoDimensionalEncoder(), data, n=6)


def test_traverse_sets_one_dimension_per_row():
    z = torch.arange(4.0)
    rows = traverse(z, torch.tensor([-1.0, 1.0]), dims=[0, 2])
    assert rows.shape == (2, 2, 4)
    assert torch.equal(rows[1, 0], torch.tensor([0.0, 1.0, -1.0, 3.0]))
    along = traverse(z, torch.tensor([0.0, 2.0]), direction=torch.ones(4))
    assert torch.equal(along[0, 1], z + 2)


@pytest.mark.parametrize("suffix", [".safetensors", ".npy"])
def test_latents_round_trip_with_ids(tmp_path, suffix):
    latents, ids = torch.randn(5, 4), [f"img{i}.png" for i in range(5)]
    save_latents(tmp_path / f"z{suffix}", latents, ids)
    back, back_ids = load_latents(tmp_path / f"z{suffix}")
    assert torch.equal(back, latents) and back_ids == ids




@requires_mnist
def test_latent_commands(tiny_run, tmp_path, capsys):
    d = tmp_path
    assert main(["interpolate", str(tiny_run), "--out", str(d / "i.png"), "--gif", str(d / "i.gif")]) == 0
    gif = Image.open(d / "i.gif")
    assert gif.n_frames == 2 * 10 - 2                      # forth and back
    assert main(["traverse", str(tiny_run), "--dims", "0-2", "--steps", "5", "--out", str(d / "t.png")]) == 0
    assert Image.open(d / "t.png").size == (5 * 34 + 2, 3 * 34 + 2)
    assert main(["edit", str(tiny_run), "--class", "3", "--examples", "25", "--save-direction",
                 str(d / "three.safetensors"), "--out", str(d / "e.png")]) == 0
    assert main(["edit", str(tiny_run), "--direction", str(d / "three.safetensors"), "--strengths", "1,2",
                 "--out", str(d / "e2.png")]) == 0
    assert main(["mix", str(tiny_run), "--dims", "0-3", "--n-a", "2", "--n-b", "3", "--out", str(d / "m.png")]) == 0
    assert Image.open(d / "m.png").size == (4 * 34 + 2, 3 * 34 + 2)
    assert main(["embed", str(tiny_run), "--split", "test", "--out", str(d / "z.safetensors")]) == 0
    latents, ids = load_latents(d / "z.safetensors")
    assert latents.shape == (10000, 8) and ids[7] == "test:7"


@requires_mnist
def test_latent_bad_input(tiny_run, tmp_path, capsys):
    def fails(*argv, message):
        assert main(list(argv)) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err

    fails("edit", str(tiny_run), "--class", "3", "--examples", "5", "--out", str(tmp_path / "e.png"),
          message="at least 20 images with the attribute")
    fails("edit", str(tiny_run), "--class", "42", "--out", str(tmp_path / "e.png"), message="class 42 does not occur")
    fails("edit", str(tiny_run), "--out", str(tmp_path / "e.png"), message="nothing to apply")
    labels = tmp_path / "list_attr_celeba.txt"
    labels.write_text("2\nSmiling Young\na.png 1 -1\nb.png -1 1\n")
    fails("edit", str(tiny_run), "--labels", str(labels), "--images-root", str(tmp_path), "--attribute", "Bald",
          "--out", str(tmp_path / "e.png"), message="unknown attribute 'Bald'; the file has: Smiling, Young")
    # a direction from another model
    other = tmp_path / "other"
    train(tiny_mnist_config(**{"train.iterations": 1, "train.seed": 7}), other, progress=False)
    assert main(["edit", str(other), "--class", "3", "--examples", "20", "--save-direction",
                 str(tmp_path / "d.safetensors"), "--out", str(tmp_path / "o.png")]) == 0
    fails("edit", str(tiny_run), "--direction", str(tmp_path / "d.safetensors"), "--out", str(tmp_path / "x.png"),
          message="was computed with another model")
    (tmp_path / "fake.png").write_text("not an image")
    fails("reconstruct", str(tiny_run), "--images", str(tmp_path / "fake.png"), "--out", str(tmp_path / "r.png"),
          message="cannot read image")
    fails("mix", str(tiny_run), "--dims", "0-99", "--out", str(tmp_path / "m.png"), message="mixing dimensions")
    fails("traverse", str(tiny_run), "--dims", "x", "--out", str(tmp_path / "t.png"), message="--dims expects integers")
    fails("embed", str(tiny_run), "--out", str(tmp_path / "z.txt"), message="must end in .safetensors or .npy")
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "z.txt").exists()
