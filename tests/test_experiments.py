"""`dcvae ablate` (Table 1, Figure 3), `dcvae sweep-negatives` (Figure 7) and the shared train-or-reuse of runs, on
runs of 2 iterations of tiny networks on the real MNIST, with metrics on 8 images."""
import argparse
import json
import math

import numpy as np
import pytest
from PIL import Image

import dcvae.cli.main as cli_main
from dcvae.cli import ablate as ablate_cli
from dcvae.errors import UserError
from dcvae.experiments.ablation import EVALUATION_FILE
from dcvae.experiments.negatives import paired_difference
from dcvae.experiments.runs import train_or_reuse
from dcvae.metrics import weights as W

from conftest import requires_mnist, tiny_mnist_config

TINY_NETS = ["--set", "model.gen_width=8", "--set", "model.dis_width=8", "--set", "train.batch_size=16",
             "--set", "train.sample_batch_size=16", "--set", "train.iterations=2", "--set", "train.log_every=1"]
TINY = [*TINY_NETS, "--set", "objective.queue_size=64"]
VARIANTS = ("vae", "vaegan", "vae-contrastive", "dcvae")


def _offline_available(network):
    return any(W._offline_path(copy)[0] is not None for copy in W.SPECS[network].offline)


requires_weights = pytest.mark.skipif(
    not (_offline_available("inception") and _offline_available("vgg16")),
    reason="FID Inception / VGG-16 weights not installed (scripts/setup.sh installs their carriers)")


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Own metrics cache, no weight overrides from the environment, and the experiment subcommands in the parser
    (a no-op once cli/main.py registers them itself)."""
    monkeypatch.setenv("DCVAE_CACHE", str(tmp_path / "cache"))
    for spec in W.SPECS.values():
        monkeypatch.delenv(spec.env_var, raising=False)
    original = cli_main.build_parser

    def build_parser():
        parser = original()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if "ablate" not in sub.choices:
            ablate_cli.add_parser(sub)
        return parser

    monkeypatch.setattr(cli_main, "build_parser", build_parser)


def run_cli(capsys, *argv):
    code = cli_main.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _runs(values):
    """[(value, start, length)] of the runs of equal consecutive values of a 1-d boolean array."""
    runs, start = [], 0
    for i in range(1, len(values) + 1):
        if i == len(values) or values[i] != values[start]:
            runs.append((bool(values[start]), start, i - start))
            start = i
    return runs


@requires_mnist
@requires_weights
def test_ablate_writes_table1_and_figure3_and_reuses_runs(tmp_path, capsys, monkeypatch):
    out = tmp_path / "t1"
    argv = ["ablate", "--out", str(out), "--n", "8", "--n-real", "8", "--figure-images", "4", "--no-progress", *TINY]
    code, stdout, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert stdout.count("ablate: training") == 4

    lines = (out / "table1.md").read_text().splitlines()
    assert lines[0] == ("| Method | Sampling FID ↓ / KID ↓ / IS ↑ | Reconstruction FID ↓ / KID ↓ / IS ↑ | Pixel ↓ | "
                        "Perceptual ↓ |")
    assert [line.split(" | ")[0] for line in lines[2:6]] == ["| VAE", "| VAE/GAN", "| VAE-Contrastive", "| DC-VAE"]
    assert all(line.count(" | ") == 4 for line in lines[2:6])

    result = json.loads((out / "table1.json").read_text())
    assert list(result["rows"]) == list(VARIANTS)
    for variant in VARIANTS:
        row = result["rows"][variant]
        assert {"fid", "kid", "recon_fid", "recon_kid", "pixel", "perceptual"} <= set(row["metrics"])
        assert all(isinstance(v, float) and math.isfinite(v) for v in row["metrics"].values())
        assert row["metrics"]["fid"] > 0 and row["metrics"]["pixel"] > 0
        protocol = result["evaluations"][variant]["protocol"]
        assert protocol["reference"]["n_real"] == 8 and protocol["sampling"]["n_generated"] == 8
        assert protocol["reconstruction"]["n_recon"] == 8 and "pixel" in protocol and "perceptual" in protocol
        assert result["training"][variant]["iterations"] == 2
        assert result["training"][variant]["variant"] == variant
        if "is" not in row["metrics"]:          # the offline Inception copy cannot classify
            assert "classifier" in row["unavailable"]["is"] and "classifier" in row["unavailable"]["recon_is"]
    if "is" not in result["rows"]["vae"]["metrics"]:
        assert all(line.count("n/a") == 2 for line in lines[2:6])

    # Figure 3: four blocks of 3 rows x 4 images (32 px, upscaled 2x, 2 px padding) after a 40 px margin for the
    # row names, 10 px white gaps between blocks, an 18 px band above them for the variant names.
    figure = np.asarray(Image.open(out / "figure3.png").convert("RGB"))
    block_w, block_h = 4 * 66 + 2, 3 * 66 + 2
    assert figure.shape == (18 + block_h, 40 + 4 * block_w + 3 * 10, 3)
    white = (figure[18:, 40:] == 255).all(axis=(0, 2))
    assert [(w, n) for w, _, n in _runs(white)] == [(False, block_w), (True, 10)] * 3 + [(False, block_w)]
    for b in range(4):
        band = figure[:18, 40 + b * (block_w + 10):40 + b * (block_w + 10) + block_w]
        assert (band < 128).any(), f"block {b} has no label"

    # A second call reuses the four finished runs and refuses to replace the table without --overwrite.
    stamps = {v: (out / v / "summary.json").stat().st_mtime_ns for v in VARIANTS}
    table_stamp = (out / "table1.md").stat().st_mtime_ns
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and err.startswith("dcvae: error: ") and err.count("\n") == 1
    assert "table1.md" in err and "--overwrite" in err
    assert (out / "table1.md").stat().st_mtime_ns == table_stamp
    # ... and, with --overwrite, reuses the four evaluations too, even with --out spelled relative to another folder
    evaluated = {v: (out / v / EVALUATION_FILE).stat().st_mtime_ns for v in VARIANTS}
    monkeypatch.chdir(tmp_path)
    code, stdout, err = run_cli(capsys, *[a if a != str(out) else "t1" for a in argv], "--overwrite")
    assert code == 0, err
    assert "ablate: training" not in stdout
    assert {v: (out / v / "summary.json").stat().st_mtime_ns for v in VARIANTS} == stamps
    assert {v: (out / v / EVALUATION_FILE).stat().st_mtime_ns for v in VARIANTS} == evaluated
    again = json.loads((out / "table1.json").read_text())["rows"]
    assert {v: row["metrics"] for v, row in again.items()} == {v: row["metrics"] for v, row in result["rows"].items()}


@requires_mnist
def test_sweep_negatives_writes_json_and_plot(tmp_path, capsys):
    out = tmp_path / "fig7"
    code, stdout, err = run_cli(capsys, "sweep-negatives", "--out", str(out), "--queue-sizes", "64,16", "--n", "8",
                                "--no-progress", *TINY_NETS)
    assert code == 0, err
    result = json.loads((out / "negatives.json").read_text())
    assert list(result["table"]) == ["16", "64"]
    assert all(math.isfinite(v) and v > 0 for v in result["table"].values())
    assert [r["queue_size"] for r in result["rows"]] == [16, 64]
    assert all(r["ci95"] is None and r["trials"] == [r["pixel"]] for r in result["rows"])   # one trial: no interval
    assert result["protocol"]["n"] == 8 and "sum of squared differences" in result["protocol"]["definition"]
    for k in (16, 64):
        assert json.loads((out / f"queue{k}" / "config.json").read_text())["objective"]["queue_size"] == k
        assert result["evaluations"][f"queue{k}"]["protocol"]["reconstruction"]["n_recon"] == 8
        assert f"queue {k}: pixel error {result['table'][str(k)]:.2f}\n" in stdout
    with Image.open(out / "negatives.png") as image:
        assert image.format == "PNG" and image.width > 100 and image.height > 100
    code, _, err = run_cli(capsys, "sweep-negatives", "--out", str(out), "--queue-sizes", "16,64", "--n", "8",
                           "--no-progress", *TINY_NETS)
    assert code == 2 and "negatives.json" in err and "--overwrite" in err


@requires_mnist
def test_sweep_negatives_trials_reuse_trial_zero_and_report_the_interval(tmp_path, capsys):
    out = tmp_path / "fig7"
    args = ["--out", str(out), "--queue-sizes", "16,64", "--n", "8", "--no-progress", *TINY_NETS]
    assert run_cli(capsys, "sweep-negatives", *args)[0] == 0
    assert json.loads((out / "negatives.json").read_text())["paired"] == []           # one trial: nothing to pair
    stamp = (out / "queue16" / "summary.json").stat().st_mtime_ns
    code, stdout, err = run_cli(capsys, "sweep-negatives", *args, "--trials", "3", "--overwrite")
    assert code == 0, err
    assert (out / "queue16" / "summary.json").stat().st_mtime_ns == stamp          # trial 0 reused untouched
    seeds = [json.loads((out / name / "config.json").read_text())["train"]["seed"]
             for name in ("queue16", "queue16-trial1", "queue16-trial2")]
    assert seeds == [0, 1, 2]
    result = json.loads((out / "negatives.json").read_text())
    row = result["rows"][0]
    values = row["trials"]
    assert len(values) == 3 and len(set(values)) == 3           # three seeds, three different models
    mean = sum(values) / 3
    s = math.sqrt(sum((v - mean) ** 2 for v in values) / 2)
    assert row["pixel"] == pytest.approx(mean)
    assert row["ci95"] == pytest.approx(4.302653 * s / math.sqrt(3), rel=1e-5)    # t_{0.975, 2} = 4.302653
    assert row["runs"] == [str(out / n) for n in ("queue16", "queue16-trial1", "queue16-trial2")]
    assert "(95% CI, 3 trials)" in stdout
    # Trial t of queue 16 against trial t of queue 64 (the same seed), with 2 degrees of freedom in closed form.
    [pair] = result["paired"]
    differences = [a - b for a, b in zip(values, result["rows"][1]["trials"])]
    mean = sum(differences) / 3
    s = math.sqrt(sum((d - mean) ** 2 for d in differences) / 2)
    t = mean / (s / math.sqrt(3))
    assert pair["queue_sizes"] == [16, 64] and pair["differences"] == pytest.approx(differences)
    assert pair["mean"] == pytest.approx(mean) and pair["t"] == pytest.approx(t)
    assert pair["p"] == pytest.approx(1 - abs(t) / math.sqrt(t * t + 2), rel=1e-6)   # Student t, 2 d.o.f.
    assert (f"queue 16 minus queue 64, paired by seed: {mean:.2f} ± {pair['ci95']:.2f} (95% CI, 3 pairs; "
            f"paired t = {t:.2f}, p = {pair['p']:.2f})") in stdout


def test_paired_difference_against_hand_computed_values():
    # differences 1, 3, 3: mean 7/3, s = sqrt(4/3), standard error 2/3, t = 3.5; two-sided p on 2 degrees of
    # freedom is 1 - t / sqrt(t^2 + 2) = 1 - 3.5 / sqrt(14.25).
    pair = paired_difference([5.0, 7.0, 9.0], [4.0, 4.0, 6.0])
    assert pair["differences"] == [1.0, 3.0, 3.0]
    assert pair["mean"] == pytest.approx(7 / 3)
    assert pair["ci95"] == pytest.approx(4.302653 * 2 / 3, rel=1e-6)
    assert pair["t"] == pytest.approx(3.5)
    assert pair["p"] == pytest.approx(1 - 3.5 / math.sqrt(14.25), rel=1e-9)
    same = paired_difference([5.0, 6.0], [3.0, 4.0])                  # every difference 2: no spread, no t
    assert same["mean"] == 2.0 and same["ci95"] == 0.0 and same["t"] is None and same["p"] is None
    one = paired_difference([5.0], [3.0])
    assert one["mean"] == 2.0 and one["ci95"] is None and one["t"] is None
    with pytest.raises(ValueError, match="as many trials on each side"):
        paired_difference([1.0, 2.0], [1.0])


@pytest.mark.parametrize("argv, message", [
    (["ablate", "--variants", "vae,gan"], "unknown variant 'gan'; choose from vae, vaegan, vae-contrastive, dcvae"),
    (["ablate", "--variants", ","], "--variants names no variant"),
    (["ablate", "--n", "1"], "--n must be at least 2"),
    (["sweep-negatives", "--queue-sizes", "256,1k"], "--queue-sizes expects comma-separated integers, got '256,1k'"),
    (["sweep-negatives", "--queue-sizes", "0,64"], "--queue-sizes needs positive integers"),
    (["sweep-negatives", "--trials", "0"], "--trials must be at least 1, got 0"),
    (["sweep-negatives", "--queue-sizes", "8,64", "--set", "train.batch_size=16"],
     "--queue-sizes 8 is smaller than the batch (train.batch_size=16)"),
])
def test_bad_input_gives_one_clear_message(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    code, _, err = run_cli(capsys, argv[0], "--out", str(out), *argv[1:], "--no-progress")
    assert code == 2 and err.startswith("dcvae: error: ") and err.count("\n") == 1
    assert message in err and "Traceback" not in err
    assert not out.exists()                      # refused before anything was trained or written


@requires_mnist
def test_train_or_reuse_reuses_resumes_and_refuses_another_config(tmp_path, capsys):
    run = tmp_path / "run"
    cfg = tiny_mnist_config(**{"train.iterations": 2, "train.checkpoint_every": 1})
    assert train_or_reuse(cfg, run, progress=False, label="t") == run
    assert "t: training run (new)" in capsys.readouterr().out
    stamp = (run / "summary.json").stat().st_mtime_ns
    train_or_reuse(cfg, run, progress=False)                          # finished: untouched
    assert capsys.readouterr().out == "" and (run / "summary.json").stat().st_mtime_ns == stamp
    longer = tiny_mnist_config(**{"train.iterations": 3, "train.checkpoint_every": 1})
    train_or_reuse(longer, run, progress=False, label="t")           # continues from its checkpoint
    assert "t: training run (resuming)" in capsys.readouterr().out
    assert json.loads((run / "summary.json").read_text())["iterations"] == 3
    with pytest.raises(UserError, match="different configuration.*model.latent_dim"):
        train_or_reuse(tiny_mnist_config(**{"model.latent_dim": 4}), run, progress=False)
    # a run stopped before its first checkpoint holds only config.json and logs: started again
    stopped = tmp_path / "stopped"
    stopped.mkdir()
    (stopped / "config.json").write_text(cfg.to_json())
    (stopped / "metrics.jsonl").write_text("")
    train_or_reuse(cfg, stopped, progress=False, label="t")
    assert "t: training stopped (new)" in capsys.readouterr().out
    assert json.loads((stopped / "summary.json").read_text())["iterations"] == 2


def test_sampling_curves_script_tabulates_fid_by_iteration_and_the_ratio(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    def evaluation(it, fid, kid, truncation=None, **prior):
        return {"iteration": it, "event": "evaluate", "date": "2026-12-05T00:00:00Z", "eval/fid": fid,
                "eval/kid": kid, "eval/n_generated": 10, "eval/n_real": 10, "eval/reference_split": "train",
                "eval/decoder": "ema", "eval/truncation": truncation, "eval/seed": 0, **prior}

    a, b = tmp_path / "a", tmp_path / "b"
    for run, records in ((a, [{"iteration": 1, "images_per_s": 5.0, "kl": 1.0}, evaluation(2, 100.0, 0.2),
                              evaluation(4, 80.0, 0.1), evaluation(4, 90.0, 0.15, truncation=1.0),
                              evaluation(4, 40.0, 0.02, **{"eval/prior": "fitted"})]),
                         (b, [evaluation(2, 150.0, 0.3), {"iteration": 4, "event": "evaluate", "eval/probe_error": 0.1},
                              evaluation(4, 100.0, 0.12)])):
        run.mkdir()
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (b / "summary.json").write_text(json.dumps({"iterations": 4, "wall_seconds": 12.5, "images_per_s": 7.0}))
    script = Path(__file__).parents[1] / "scripts" / "sampling_curves.py"
    done = subprocess.run([sys.executable, str(script), f"vaegan={a}", f"dcvae={b}", "--command", "dcvae train X"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["command"] == ["dcvae train X"]
    assert [(r["iteration"], r["fid"], r["truncation"]) for r in result["runs"]["vaegan"]["evaluations"]] == \
        [(2, 100.0, None), (4, 80.0, None), (4, 90.0, 1.0), (4, 40.0, None)]
    assert [r["iteration"] for r in result["runs"]["dcvae"]["evaluations"]] == [2, 4]   # the probe record is skipped
    assert "wall_seconds" not in result["runs"]["vaegan"] and result["runs"]["dcvae"]["wall_seconds"] == 12.5
    table = done.stderr.splitlines()
    assert table[2] == "| 2 | 100.0 / 0.2000 | 150.0 / 0.3000 | 1.50x |"
    assert table[3] == "| 4 | 80.0 / 0.1000 | 100.0 / 0.1200 | 1.25x |"
    assert table[4] == "| 4, z from the Gaussian fitted to the aggregate posterior | 40.0 / 0.0200 |  |  |"
    assert table[5] == "| 4, z clipped to [-1, 1] | 90.0 / 0.1500 |  |  |"

    c = tmp_path / "c"                      # evaluated with --metrics fid: no KID, and the table still forms
    c.mkdir()
    (c / "metrics.jsonl").write_text(json.dumps({**evaluation(2, 120.0, None)}) + "\n")
    done = subprocess.run([sys.executable, str(script), f"fid_only={c}", "--command", "x"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[2] == "| 2 | 120.0 |"

    done = subprocess.run([sys.executable, str(script), f"vaegan={tmp_path / 'missing'}", "--command", "x"],
                          capture_output=True, text=True)
    assert done.returncode == 1 and "NAME=RUN" in done.stderr


def _spectra_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "scripts" / "spectra.py"
    spec = importlib.util.spec_from_file_location("spectra", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, path


def test_spectra_put_a_cosine_in_its_band_and_sum_to_the_pixel_variance():
    import torch

    spectra, _ = _spectra_script()
    j = torch.arange(32, dtype=torch.float64)
    for k, band in ((2, "low"), (6, "mid"), (12, "high"), (16, "high")):     # radius k / 32 cycles per pixel
        wave = 0.8 * torch.cos(2 * math.pi * k * j / 32).expand(1, 1, 32, 32) + 0.3   # the offset is removed
        bands = spectra.band_powers(spectra.power_spectrum(wave))
        # a cosine of amplitude a has variance a^2 / 2 (a^2 at the Nyquist frequency, where it is +-a)
        assert bands[band] == pytest.approx(0.64 / (1 if k == 16 else 2), rel=1e-12)
        assert sum(bands.values()) == pytest.approx(bands[band], rel=1e-12)
    noise = torch.rand(5, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    spectrum = spectra.power_spectrum(noise)
    assert float(spectrum.sum()) == pytest.approx(float(noise.double().var(dim=(-2, -1), unbiased=False).mean()))
    # white noise spreads its power by area: the high band (r >= 1/4) holds most of the 32x32 grid's frequencies
    assert spectra.describe(spectrum, None)["high_share"] == pytest.approx(1 - math.pi / 16, abs=0.03)
    assert float(spectra.power_spectrum(torch.full((2, 1, 8, 8), 0.5)).abs().max()) == 0.0


@requires_mnist
def test_spectra_script_compares_a_run_with_the_real_test_images(tiny_run, tmp_path):
    import subprocess
    import sys

    _, script = _spectra_script()
    done = subprocess.run([sys.executable, str(script), f"a={tiny_run}", f"b={tiny_run}", "--n", "6"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["n"] == 6 and result["data"] == "mnist" and set(result["models"]) == {"a", "b"}
    real = result["real_test_images"]
    assert real["low_share"] + real["mid_share"] + real["high_share"] == pytest.approx(1, abs=1e-4)
    assert result["models"]["a"] == result["models"]["b"]      # the same checkpoint and seed: the same images
    assert result["models"]["a"]["samples"]["high_vs_real"] > 0
    assert done.stderr.splitlines()[2].startswith("| real test images |")
    fitted = subprocess.run([sys.executable, str(script), f"a={tiny_run}", "--n", "6", "--prior", "fitted",
                             "--prior-fit-n", "20"], capture_output=True, text=True)
    assert fitted.returncode == 0, fitted.stderr
    fitted = json.loads(fitted.stdout)
    assert fitted["prior"] == "fitted" and fitted["prior_fit_n"] == 20 and result["prior"] == "standard"
    assert fitted["models"]["a"]["reconstructions"] == result["models"]["a"]["reconstructions"]
    assert fitted["models"]["a"]["samples"] != result["models"]["a"]["samples"]

    done = subprocess.run([sys.executable, str(script), f"a={tiny_run}", "--n", "20000"], capture_output=True,
                          text=True)
    assert done.returncode == 1 and "test images" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, str(script), str(tiny_run)], capture_output=True, text=True)
    assert done.returncode == 1 and "NAME=RUN" in done.stderr
    done = subprocess.run([sys.executable, str(script), f"a={tiny_run}", "--prior-fit-n", "20"], capture_output=True,
                          text=True)
    assert done.returncode == 1 and "--prior fitted" in done.stderr
