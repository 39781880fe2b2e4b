"""Speed work must not change what is learned (issue 6): the default D step, which builds its reconstructions
without a graph, updates every network exactly as the released code's D step (reconstruction not detached, encoder
and decoder gradients computed and thrown away), and the released path really does the extra work."""
import torch
from accelerate import Accelerator

from conftest import requires_mnist, tiny_mnist_config
from dcvae.objectives.phases import discriminator_phase
from dcvae.training.loop import Trainer


def _trainer(**overrides) -> Trainer:
    return Trainer(tiny_mnist_config(**{"objective.patch_layer": "", **overrides}), Accelerator(cpu=True))


@requires_mnist
def test_d_step_without_reconstruction_graph_gives_the_released_updates():
    """3 generator iterations (2 D steps each) on the same batches and noise: losses and every weight of the
    default path equal those of the reference path within float tolerance."""
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


@requires_mnist
def test_the_reference_path_computes_the_gradients_that_no_update_uses():
    """After one D loss's backward, the released path has filled encoder and decoder gradients (work the D update
    does not use); the default path has not. D's own gradients are the same."""
    grads = {}
    for with_graph in (False, True):
        trainer = _trainer()
        x, _ = trainer.stream.next()
        trainer.noise.seed(0)
        loss, _ = discriminator_phase(trainer.nets, x, trainer.objective, trainer.noise, with_graph)
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
    assert main(["bench", "--cases", "compact", "--json", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["bench", "--cases", "paper64"]) == 2
    assert "--cases: unknown paper64" in capsys.readouterr().err
    assert main(["bench", "--precision", "fp16"]) == 2
    assert "--precision takes fp32 and/or bf16" in capsys.readouterr().err
