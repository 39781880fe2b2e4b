"""The GPU path (issue 6): the same updates as the plain reference path, bf16 autocast, torch.compile and CUDA graphs
that give the eager losses, and forwards that never wait for the device. Skipped without CUDA: CI has
no GPU; `scripts/gpu_checks.sh` runs this file on a GPU machine, with no data set needed (random images)."""
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch.utils.data import TensorDataset

from conftest import tiny_mnist_config
from dcvae.config import preset
from dcvae.networks import build_networks
from dcvae.networks.progressive import ProgressiveDecoder, ProgressiveTrunk
from dcvae.objectives.queue import NegativeQueue
from dcvae.training.loop import Trainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

LOSSES = ("loss/d", "loss/g", "loss/nce_final", "kl")


@pytest.fixture(autouse=True)
def strict_float32():
    """TF32 off (cuDNN convolutions use it by default): float32 comparisons at float32 precision."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _trainer(bf16: bool = False, **overrides) -> Trainer:
    cfg = tiny_mnist_config(**{"objective.patch_layer": "", **overrides})
    images = torch.rand(256, 1, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    AcceleratorState._reset_state(reset_partial_state=True)   # a CPU-only Accelerator made earlier is forgotten
    trainer = Trainer(cfg, Accelerator(), dataset=TensorDataset(images, torch.zeros(256, dtype=torch.long)), bf16=bf16)
    assert trainer.acc.device.type == "cuda"
    return trainer


def _iterations(trainer: Trainer, n: int) -> list[dict[str, float]]:
    return [{key: float(value) for key, value in trainer.run_iteration().items()} for _ in range(n)]


def _assert_close(a: list[dict[str, float]], b: list[dict[str, float]], rtol: float, atol: float) -> None:
    for i, (x, y) in enumerate(zip(a, b)):
        for key in LOSSES:
            assert x[key] == pytest.approx(y[key], rel=rtol, abs=atol), f"{key} at iteration {i + 1}"


@pytest.mark.parametrize("backbone", ["compact32", "autogan32"])
def test_default_path_gives_the_reference_updates_on_the_gpu(backbone):
    """Graph-free D step, channels_last and folded resampling against the released D step in NCHW with plain
    resampling, on CUDA: the same losses (cuDNN picks other kernels per layout, so equal within float32 rounding,
    not bit for bit)."""
    fast = _iterations(_trainer(**{"model.backbone": backbone}), 2)
    reference = _iterations(_trainer(**{"model.backbone": backbone, "train.released_d_step": True,
                                        "train.channels_last": False, "train.fold_resampling": False}), 2)
    _assert_close(fast, reference, rtol=1e-3, atol=1e-5)


def test_bf16_autocast_stays_near_float32():
    """One iteration in bf16 autocast: finite, and each loss within bf16's rounding of the float32 one."""
    full, half = _iterations(_trainer(), 1), _iterations(_trainer(bf16=True), 1)
    assert all(torch.isfinite(torch.tensor(list(row.values()))).all() for row in half)
    _assert_close(half, full, rtol=0.05, atol=0.02)


def test_compiled_networks_give_the_eager_losses_on_the_gpu():
    compiled = _trainer(**{"train.compile": True})
    assert compiled.compiled and not compiled.cuda_graphs
    _assert_close(_iterations(compiled, 2), _iterations(_trainer(), 2), rtol=1e-3, atol=1e-5)


def test_cuda_graphs_replay_the_eager_training():
    """train.cuda_graphs on the paper's backbone (narrow): iteration 1 compiles and warms up, 2 records, 3 on replay
    the graphs. Every iteration's losses follow the eager run's (a recycled output buffer would show as a wrong
    loss or an error), and the checkpoint's tensor names are the eager modules'."""
    graphs = _trainer(**{"model.backbone": "autogan32", "train.cuda_graphs": True})
    eager = _trainer(**{"model.backbone": "autogan32"})
    assert graphs.compiled and graphs.cuda_graphs
    _assert_close(_iterations(graphs, 4), _iterations(eager, 4), rtol=2e-2, atol=1e-4)
    weights = graphs.weights()
    assert weights.keys() == eager.weights().keys()
    assert all(torch.isfinite(value).all() for value in weights.values())


def test_forwards_never_wait_for_the_device():
    """Training-mode forwards of every network make no host synchronisation (which would stall the GPU and which
    CUDA graphs cannot capture): the progressive ones after set_growth (the growth is known on the host), the
    paper-width ones with their folded resampling; and the negative queue's enqueue (its pointer stays on the
    device)."""
    g = ProgressiveDecoder(16, 32, 3, 32).cuda()
    d = ProgressiveTrunk(3, 32, 32).cuda()
    z, x = torch.randn(4, 16, device="cuda"), torch.randn(4, 3, 32, 32, device="cuda")
    g.set_growth(2, 0.5)
    d.set_growth(2, 0.5)
    m = preset("cifar10").model
    m.gen_width, m.dis_width = 32, 16
    nets = build_networks(m)
    for module in (nets.encoder, nets.decoder, nets.discriminator):
        module.cuda().train()
    queue = NegativeQueue(8, 4).cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        g(z), d(x)
        nets.discriminator(nets.decoder(nets.encoder(x)[0]))
        queue.enqueue(torch.randn(3, 4, device="cuda"))
    finally:
        torch.cuda.set_sync_debug_mode("default")
