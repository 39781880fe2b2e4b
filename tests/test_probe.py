"""The linear probe of Table 6: classifier, confidence interval, and the table on real (tiny) runs."""
import json
import math

import pytest
import torch

from dcvae.errors import UserError
from dcvae.metrics.probe import (classification_error, confidence_interval, fit_linear_classifier,
                                 nearest_neighbour_error, whitening)

from conftest import requires_mnist, tiny_mnist_config


def test_linear_classifier_separates_separable_data_and_not_noise():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 8, generator=g) * 5
    labels = torch.arange(400) % 4
    features = centres[labels] + torch.randn(400, 8, generator=g)
    fit = fit_linear_classifier(features[:300], labels[:300])
    assert classification_error(*fit, features[300:], labels[300:]) == 0.0
    noise = torch.randn(400, 8, generator=g)
    fit = fit_linear_classifier(noise[:300], labels[:300])
    assert classification_error(*fit, noise[300:], labels[300:]) > 0.5      # chance is 0.75


def test_whitened_probe_is_the_same_for_any_invertible_linear_map_of_the_features():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3000) % 5
    features = (torch.randn(5, 8, generator=g) * 1.5)[labels] + torch.randn(3000, 8, generator=g)
    q1, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    q2, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    mixing = q1 @ torch.diag(torch.logspace(0, -4, 8)) @ q2        # condition number 10^4, as an encoder head's
    train, test = slice(0, 2000), slice(2000, None)
    errors = []
    for x in (features, features @ mixing):
        fit = fit_linear_classifier(x[train], labels[train])
        errors.append(classification_error(*fit, x[test], labels[test]))
    assert 0.02 < errors[0] < 0.5 and errors[1] == errors[0]
    standardised = fit_linear_classifier((features @ mixing)[train], labels[train], scaling="standardised")
    assert classification_error(*standardised, (features @ mixing)[test], labels[test]) > errors[0] + 0.02


def test_whitened_probe_finds_a_class_in_a_low_variance_direction_that_the_standardised_one_prices_out():
    # two features that share a large common part and differ by the class (+-1 against std 1000), and a third that
    # tells the class only weakly (+-0.5 against noise of std 1): a penalty on standardised weights prices the
    # decisive difference out (its weight would have to be ~1000) and leaves the weak feature, wrong 31 % of the time
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(2000) % 2
    sign = 2 * labels - 1
    common = torch.randn(2000, generator=g) * 1000
    features = torch.stack([common + sign, common, 0.5 * sign + torch.randn(2000, generator=g)], 1)
    train, test = slice(0, 1500), slice(1500, None)
    whitened = fit_linear_classifier(features[train], labels[train])
    assert classification_error(*whitened, features[test], labels[test]) == 0.0
    standardised = fit_linear_classifier(features[train], labels[train], scaling="standardised")
    assert classification_error(*standardised, features[test], labels[test]) > 0.2
    # a constant feature carries nothing and is dropped, not divided by zero
    mean, feature_map = whitening(torch.cat([features, torch.full((2000, 1), 3.0)], 1))
    assert feature_map.shape == (4, 3) and feature_map[3].abs().max() < 1e-12
    with pytest.raises(UserError, match="unknown probe scaling 'pca'"):
        fit_linear_classifier(features, labels, scaling="pca")
    from dcvae.cli.main import build_parser
    from dcvae.cli.probe import SCALING_NAMES
    from dcvae.metrics.probe import DEFAULT_SCALING, SCALINGS
    assert SCALING_NAMES == tuple(SCALINGS)
    assert build_parser().parse_args(["probe", "--out", "x"]).scaling == DEFAULT_SCALING


def test_nearest_neighbour_reads_what_a_linear_classifier_cannot():
    # class = whether a point lies inside a circle: no line separates it, its neighbours do
    g = torch.Generator().manual_seed(0)
    points = torch.rand(3000, 2, generator=g) * 4 - 2
    labels = (points.norm(dim=1) < 1.4).long()   # 38 % inside: a line does no better than 'all outside'
    train, test = slice(0, 2000), slice(2000, None)
    assert nearest_neighbour_error(points[train], labels[train], points[test], labels[test]) < 0.05
    linear = fit_linear_classifier(points[train], labels[train])
    assert classification_error(*linear, points[test], labels[test]) > 0.3
    # by hand: 1-NN and 3-NN votes on a line of labelled points
    train_x, train_y = torch.tensor([[0.0], [1.0], [2.0], [10.0]]), torch.tensor([0, 0, 1, 1])
    test_x, test_y = torch.tensor([[0.9], [1.6], [9.0]]), torch.tensor([0, 1, 1])
    assert nearest_neighbour_error(train_x, train_y, test_x, test_y, k=1) == 0.0
    assert nearest_neighbour_error(train_x, train_y, test_x, test_y, k=3) == 1 / 3   # 1.6's 3 nearest (2, 1, 0) vote 0
    # standardising lets a small-scale but decisive feature count: (0.9, 0) is nearer (1, 0.1) in raw units
    train_x, train_y = torch.tensor([[0.0, 0.0], [1.0, 0.1]]), torch.tensor([0, 1])
    test_x, test_y = torch.tensor([[0.9, 0.0]]), torch.tensor([0])
    assert nearest_neighbour_error(train_x, train_y, test_x, test_y, k=1) == 0.0
    assert nearest_neighbour_error(train_x, train_y, test_x, test_y, k=1, standardise=False) == 1.0


def test_confidence_interval_by_hand():
    ci = confidence_interval([0.010, 0.012, 0.014, 0.011, 0.013])
    s = math.sqrt(sum((v - 0.012) ** 2 for v in [0.010, 0.012, 0.014, 0.011, 0.013]) / 4)
    assert math.isclose(ci.mean, 0.012) and math.isclose(ci.half_width, 2.7764451 * s / math.sqrt(5), rel_tol=1e-6)
    assert ci.percent() == "1.20% ± 0.20"
    assert confidence_interval([0.02]).percent() == "2.00% (1 trial)"


@requires_mnist
def test_probe_command_trains_grid_and_writes_table(tmp_path, capsys):
    from dcvae.cli.main import main
    tiny = ["--set", "model.gen_width=8", "--set", "model.dis_width=8", "--set", "objective.queue_size=64",
            "--set", "train.batch_size=16", "--set", "train.sample_batch_size=16", "--set", "train.iterations=2",
            "--set", "train.log_every=1"]
    argv = ["probe", "--out", str(tmp_path / "t6"), "--variants", "vae,dcvae", "--latent-dims", "4,8", "--trials", "2",
            "--train-images", "1000", "--test-images", "300", "--no-progress", *tiny]
    assert main(argv) == 0
    table = (tmp_path / "t6" / "table6.md").read_text().splitlines()
    assert table[0] == "| Method | d_z=4 ↓ | d_z=8 ↓ |"
    assert table[2].startswith("| DC-VAE | ") and table[3].startswith("| VAE | ") and "±" in table[2]
    result = json.loads((tmp_path / "t6" / "table6.json").read_text())
    assert len(result["rows"]["vae"]["8"]["errors"]) == 2 and 0 <= result["rows"]["vae"]["8"]["mean"] <= 1
    assert result["rows"]["dcvae"]["4"]["iterations"] == [2, 2]
    # a second call reuses the finished runs instead of training again
    before = (tmp_path / "t6" / "vae-z4-trial0" / "summary.json").stat().st_mtime_ns
    assert main(argv) == 0
    assert (tmp_path / "t6" / "vae-z4-trial0" / "summary.json").stat().st_mtime_ns == before
    too_many = [a if a != "1000" else "999999" for a in argv]
    assert main(too_many) == 2
    assert "more than the 60000 images of the train split" in capsys.readouterr().err


@requires_mnist
def test_probe_error_is_an_evaluate_metric_on_the_whole_splits(tiny_run):
    from dcvae.errors import UserError
    from dcvae.metrics import evaluate as ev
    from dcvae.metrics.probe import probe_error

    result = ev.evaluate(tiny_run, metrics="probe_error", progress=False)
    error = result["metrics"]["probe_error"]
    # One iteration of an 8-d tiny model: nearly random conv features (0.55 measured), still far from chance (0.9):
    # labels that did not match their images would give chance.
    assert 0 < error < 0.75
    probe = result["protocol"]["probe"]
    assert (probe["n_train"], probe["n_test"]) == (60000, 10000) and "MNIST test" in probe["test"]
    assert probe["features"].startswith("posterior mean") and "sampling" not in result["protocol"]
    last = json.loads((tiny_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "evaluate" and last["eval/probe_error"] == round(error, 6)
    assert last["eval/probe_scaling"] == probe["scaling"] == "whitened"

    # the same number as the probe of `dcvae probe` on the same splits
    from dcvae.data import build_dataset
    from dcvae.model import load
    model = load(tiny_run)
    d, m = model.config.data, model.config.model
    splits = [build_dataset(d, m.image_channels, m.resolution, split=s) for s in ("train", "test")]
    assert probe_error(model, *splits) == error

    with pytest.raises(UserError, match="probe_error, which needs class labels"):
        tiny_mnist_config(**{"data.dataset": "folder", "data.root": str(tiny_run), "train.eval_every": 3,
                             "train.eval_metrics": ["probe_error"]})


def test_probe_curve_script_collects_evaluations_and_their_training_records(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    def training(it, kl):
        return {"iteration": it, "epoch": 0, "images_per_s": 100.0 + it, "kl": kl, "acc/b1": 0.25, "acc/final": 0.5}

    def evaluation(it, error):
        return {"iteration": it, "event": "evaluate", "eval/probe_error": error, "eval/decoder": "ema"}

    records = [training(2, 9.0), training(4, 7.04), evaluation(4, 0.3), training(6, 5.0),
               {**evaluation(6, 0.2), "eval/probe_scaling": "whitened"}, training(8, 4.0), evaluation(8, 0.1)]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"probe_error_by_iteration": {"4": 0.5}}))
    script = Path(__file__).parents[1] / "scripts" / "probe_curve.py"
    done = subprocess.run([sys.executable, str(script), str(tmp_path), "--command", "dcvae train X",
                           "--max-iteration", "6", "--compare", str(other)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    curve = json.loads(done.stdout)
    assert curve["run"] == "dcvae train X"
    assert curve["probe_error_by_iteration"] == {"4": 0.3, "6": 0.2}          # 8 lies beyond --max-iteration
    assert curve["probe_scaling_by_iteration"] == {"6": "whitened"}         # 4's record predates the field
    assert curve["kl_nats_per_image"] == {"4": 7.0, "6": 5.0}
    assert curve["images_per_s"] == {"4": 104.0, "6": 106.0}
    assert curve["contrastive_top1_b1_final"]["6"] == [0.25, 0.5]
    assert done.stderr.split() == ["4", "30.00", "%", "50.00", "%", "6", "20.00", "%", "-"]

    (tmp_path / "metrics.jsonl").write_text(json.dumps(training(2, 9.0)) + "\n")
    done = subprocess.run([sys.executable, str(script), str(tmp_path), "--command", "x"],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "train.eval_metrics=probe_error" in done.stderr
