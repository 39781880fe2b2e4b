"""Speed work must not change what is learned (issue 6): the default path — a D step that builds its reconstructions
without a graph, networks and batches in channels_last — updates every network as the released code's path (D step
with the reconstruction's graph, encoder and decoder gradients computed and thrown away, NCHW), and the released
path really does the extra work."""
import pytest
import torch
from accelerate import Accelerator

from conftest import requires_mnist, tiny_mnist_config
from dcvae.objectives.phases import contrastive_phase, discriminator_phase, generator_phase
from dcvae.training.loop import Trainer


def _trainer(**overrides) -> Trainer:
    return Trainer(tiny_mnist_config(**{"objective.patch_layer": "", **overrides}), Accelerator(cpu=True))


@requires_mnist
def test_the_graph_free_d_step_gives_the_released_updates():
    """3 generator iterations (2 D steps each) on the same batches and noise: losses and every weight of the
    default D step equal those of the released D step within float tolerance."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fast, reference = _trainer(), _trainer(**{"train.released_d_step": True})
        for _ in range(3):
            stats_fast, stats_ref = fast.run_iteration(), reference.run_iteration()
            for key in ("loss/d", "loss/g", "loss/nce_final", "kl"):
                torch.testing.assert_close(stats_fast[key], stats_ref[key], rtol=1e-5, atol=1e-6)
        ref_weights = reference.weights()
        for key, value in fast.weights().items():
            torch.testing.assert_close(value, ref_weights[key], rtol=1e-5, atol=1e-6, msg=key)
    finally:
        torch.set_num_threads(threads)


def _phase_gradients(trainer: Trainer, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """The loss and every parameter gradient of the D, E/G and contrastive phases on one batch, no update."""
    nets, o = trainer.nets, trainer.cfg.objective
    out = {}

    def record(phase: str, loss: torch.Tensor, modules: dict) -> None:
        for module in (nets.encoder, nets.decoder, nets.discriminator):
            module.zero_grad(set_to_none=True)      # as each optimiser step does
        loss.backward()
        out[f"{phase}/loss"] = loss.detach()
        for name, module in modules.items():
            for key, p in module.named_parameters():
                if p.grad is not None:
                    out[f"{phase}/{name}.{key}"] = p.grad.contiguous()

    trainer.noise.seed(0)
    record("d", discriminator_phase(nets, x, o, trainer.noise, trainer.cfg.train.released_d_step)[0],
           {"discriminator": nets.discriminator})
    nets.discriminator.requires_grad_(False)
    record("g", generator_phase(nets, x, o, trainer.terms, trainer.noise, trainer.cfg.train.sample_batch_size)[0],
           {"encoder": nets.encoder, "decoder": nets.decoder})
    nets.discriminator.requires_grad_(True)
    loss, _, _ = contrastive_phase(nets, trainer.momentum_discriminator, trainer.queues, x, o, trainer.noise, True)
    record("c", loss, {"encoder": nets.encoder, "decoder": nets.decoder, "discriminator": nets.discriminator})
    return out


@requires_mnist
@pytest.mark.parametrize("backbone", ["compact32", "autogan32"])
def test_the_default_path_gives_the_reference_losses_and_gradients(backbone):
    """One batch through the three phases: the default path (graph-free D step, channels_last, resampling folded
    into the convolutions) and the plain reference path (released D step, NCHW, resampling and convolution apart)
    give the same losses and the same gradients for every parameter, within float tolerance (atol relative to the
    largest gradient of the phase: a conv bias before BatchNorm has a zero gradient in exact arithmetic, and only
    rounding noise in either layout).

    One thread: with two, the channels_last convolutions round differently from their one-thread run (the NCHW ones
    happen not to), and in the batch measured one ReLU unit of 65,536, within rounding of zero after BatchNorm,
    switched sides; that one element of the backward changed the E/G step's decoder gradients by up to 1e-3
    (relative to the largest). A gradient comparison across a ReLU kink can fail that way for any two paths that
    round differently, so the test fixes the rounding as far as it can."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fast = _trainer(**{"model.backbone": backbone, "objective.patch_layer": "b2"})
        reference = _trainer(**{"model.backbone": backbone, "objective.patch_layer": "b2",
                                "train.released_d_step": True, "train.channels_last": False,
                                "train.fold_resampling": False})
        conv = next(p for p in fast.nets.decoder.parameters() if p.dim() == 4)
        assert conv.is_contiguous(memory_format=torch.channels_last)
        assert next(p for p in reference.nets.decoder.parameters() if p.dim() == 4).is_contiguous()
        x = fast._real_batch()
        assert x.is_contiguous(memory_format=torch.channels_last)   # with one channel, NCHW is channels_last too
        got, expected = _phase_gradients(fast, x), _phase_gradients(reference, x.contiguous())
    finally:
        torch.set_num_threads(threads)
    assert got.keys() == expected.keys() and len(got) > 30
    for phase in ("d", "g", "c"):
        scale = max(float(v.abs().max()) for k, v in expected.items() if k.startswith(phase + "/"))
        for key in (k for k in expected if k.startswith(phase + "/")):
            torch.testing.assert_close(got[key], expected[key], rtol=1e-4, atol=1e-4 * scale, msg=key)


@requires_mnist
def test_the_reference_path_computes_the_gradients_that_no_update_uses():
    """After one D loss's backward, the released path has filled encoder and decoder gradients (work the D update
    does not use); the default path has not. D's own gradients are the same."""
    grads = {}
    for with_graph in (False, True):
        trainer = _trainer()
        x, _ = trainer.stream.next()
        trainer.noise.seed(0)
        loss, _ = discriminator_phase(trainer.nets, x, trainer.cfg.objective, trainer.noise, with_graph)
        loss.backward()
        encoder_grads = [p.grad for p in trainer.nets.encoder.parameters()]
        assert all(g is not None for g in encoder_grads) == with_graph
        assert all(g is None for g in encoder_grads) != with_graph
        grads[with_graph] = [p.grad.clone() for p in trainer.nets.discriminator.gan_parameters()]
    for a, b in zip(grads[False], grads[True]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_bench_command_measures_a_case_and_refuses_bad_options(tmp_path, capsys):
    """`dcvae bench` on the compact network: one row with the counted FLOPs (a compact iteration is tens of
    GFLOP), time, peak and memory; bad options get one message; a GPU asked for on a CPU machine falls back."""
    import json

    from dcvae.cli.main import main
    out = tmp_path / "bench.json"
    device = [] if torch.cuda.is_available() else ["--device", "cuda"]
    assert main(["bench", "--cases", "compact", "--no-inference", "--json", str(out), *device]) == 0
    printed = capsys.readouterr().out
    if device:
        assert "no GPU: falling back to the CPU" in printed
    (row,) = json.loads(out.read_text())["iterations"]
    assert row["case"] == "compact (mnist)" and row["device"] == "cpu" and row["batch_size"] == 64
    assert 0.01 < row["tflop_per_iteration"] < 0.2 and row["seconds_per_iteration"] > 0
    assert row["matmul_peak_gflop_s"] > 0 and 0 < row["utilisation"] < 5 and row["peak_memory_gib"] > 0.1
    assert "| compact (mnist) |" in printed
    # several batch sizes, each a case; CUDA graphs asked for on a CPU: said, and run without
    if not torch.cuda.is_available():
        out = tmp_path / "batches.json"
        assert main(["bench", "--cases", "compact", "--batch-size", "8,16", "--resampling", "plain",
                     "--cuda-graphs", "--no-inference", "--json", str(out)]) == 0
        assert "--cuda-graphs needs a GPU" in capsys.readouterr().out
        small, large = json.loads(out.read_text())["iterations"]
        assert (small["case"], small["batch_size"], large["batch_size"]) == (
            "compact (mnist), batch 8, plain resampling", 8, 16)
        assert not small["cuda_graphs"] and not large["compiled"] and not large["fold_resampling"]
        # the iteration's arithmetic scales with the batch (the prior samples follow it)
        assert 1.8 < large["tflop_per_iteration"] / small["tflop_per_iteration"] < 2.05
    assert main(["bench", "--cases", "compact", "--json", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["bench", "--cases", "paper64"]) == 2
    assert "--cases: unknown paper64" in capsys.readouterr().err
    assert main(["bench", "--precision", "fp16"]) == 2
    assert "--precision takes fp32 and/or bf16" in capsys.readouterr().err
    assert main(["bench", "--layout", "nhwc"]) == 2
    assert "--layout takes channels_last and/or nchw" in capsys.readouterr().err
    assert main(["bench", "--batch-size", "64,big"]) == 2
    assert "--batch-size takes comma-separated whole numbers" in capsys.readouterr().err
    assert main(["bench", "--resampling", "bicubic"]) == 2
    assert "--resampling takes folded and/or plain" in capsys.readouterr().err


@requires_mnist
def test_compile_without_a_backend_falls_back_to_eager_and_says_so(monkeypatch, caplog):
    """train.compile on a CPU without a C++ compiler: one warning naming what is missing, and eager modules."""
    monkeypatch.setenv("CXX", "no-such-compiler-dcvae")
    with caplog.at_level("WARNING", logger="dcvae.train"):
        trainer = _trainer(**{"train.compile": True})
    assert "no-such-compiler-dcvae not found" in caplog.text and "falling back to eager mode" in caplog.text
    assert trainer.nets.decoder._compiled_call_impl is None


@requires_mnist
def test_cuda_graphs_without_a_gpu_run_eager_and_say_so(caplog):
    """train.cuda_graphs on a CPU: one warning, and the networks are neither compiled nor graphed."""
    if torch.cuda.is_available():
        pytest.skip("tests the CPU fallback; tests/test_gpu.py covers the GPU")
    with caplog.at_level("WARNING", logger="dcvae.train"):
        trainer = _trainer(**{"train.cuda_graphs": True})
    assert "train.cuda_graphs needs a CUDA device and this run is on cpu" in caplog.text
    assert not trainer.compiled and not trainer.cuda_graphs
    assert trainer.nets.decoder._compiled_call_impl is None and not trainer.nets.decoder._forward_hooks


@requires_mnist
def test_compiled_networks_give_the_eager_losses():
    """train.compile (inductor on the CPU): one iteration's losses equal the eager ones within float tolerance,
    and the checkpoint's parameter names are those of the eager modules."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        eager, compiled = _trainer(), _trainer(**{"train.compile": True})
        assert compiled.nets.decoder._compiled_call_impl is not None
        stats_eager, stats_compiled = eager.run_iteration(), compiled.run_iteration()
    finally:
        torch.set_num_threads(threads)
    for key in ("loss/d", "loss/g", "loss/nce_final", "kl"):
        torch.testing.assert_close(stats_compiled[key], stats_eager[key], rtol=1e-4, atol=1e-5)
    assert compiled.weights().keys() == eager.weights().keys()


def test_bench_markdown_pairs_each_released_row_with_its_default_twin():
    """The speed-up line compares a released-path row with the default-path row of the same preset, precision,
    batch and compilation, in the default layout when the run measured several; rows of other settings are not
    paired."""
    from dcvae.experiments.bench import markdown

    def row(case, seconds, path="default", precision="fp32", batch=64, layout="channels_last", fold=True):
        return {"case": case, "preset": "cifar10", "device": "cpu", "precision": precision, "batch_size": batch,
                "compiled": False, "cuda_graphs": False, "update_path": path, "memory_format": layout,
                "fold_resampling": fold, "seconds_per_iteration": seconds, "real_images_per_s": 1.0,
                "tflop_per_iteration": 1.0, "achieved_gflop_s": 1.0, "matmul_peak_gflop_s": 1.0, "utilisation": 0.5,
                "floor_seconds": seconds / 2, "peak_memory_gib": 1.0}

    rows = [row("a, NCHW", 30.0, layout="NCHW"), row("a", 20.0), row("a, bf16", 5.0, precision="bf16"),
            row("released", 60.0, path="released"), row("released, batch 256", 90.0, path="released", batch=256),
            row("released, bf16", 10.0, path="released", precision="bf16")]
    text = markdown(rows, [])
    assert "Same run, a: the default path (graph-free D step, channels_last, folded resampling) is 3.00x" in text
    assert "Same run, a, bf16: the default path" in text and "is 2.00x" in text
    assert text.count("Same run") == 2                  # batch 256 has no default row in this run
