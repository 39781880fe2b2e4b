"""Two CPU processes (torchrun, gloo) train, checkpoint and resume with the same code as one process."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import requires_mnist
from dcvae.cli.main import main

TINY = """
model: {gen_width: 8, dis_width: 8, latent_dim: 8}
objective: {queue_size: 64}
train: {batch_size: 8, sample_batch_size: 16, d_steps: 2, iterations: ITER, log_every: 1, checkpoint_every: 2,
        image_every: 2}
"""


def _command(tmp_path: Path, iterations: int, *extra: str, processes: int = 2, out: str = "run") -> list[str]:
    config = tmp_path / f"tiny-{iterations}.yaml"
    config.write_text(TINY.replace("ITER", str(iterations)))
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node", str(processes), "--master_port", str(29500 + os.getpid() % 1000),
           "-m", "dcvae.cli.main", "train", "--out", str(tmp_path / out), "--no-progress", *extra]
    if "--resume" not in extra:
        cmd += ["--preset", "mnist", "--config", str(config)]
    return cmd


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _torchrun(tmp_path: Path, iterations: int, *extra: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(_command(tmp_path, iterations, *extra, **kwargs), capture_output=True, text=True,
                          timeout=300, env=ENV)


@requires_mnist
def test_two_processes_train_and_resume(tmp_path):
    first = _torchrun(tmp_path, 2)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.count("run folder:") == 1          # only rank 0 reports
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["iterations"] == 2
    second = _torchrun(tmp_path, 4, "--resume", "--set", "train.iterations=4")
    assert second.returncode == 0, second.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["iterations"] == 4
    weights = load_file(str(tmp_path / "run" / "checkpoints" / "iter-0000004" / "model.safetensors"))
    assert weights["decoder_ema.l1.weight"].shape == (8 * 4 * 4 * 4, 8)


@requires_mnist
def test_resume_with_another_process_count_is_refused(tmp_path, capsys):
    first = _torchrun(tmp_path, 2)
    assert first.returncode == 0, first.stderr[-2000:]
    code = main(["train", "--out", str(tmp_path / "run"), "--resume", "--set", "train.iterations=3", "--no-progress"])
    assert code == 2
    assert "written by 2 process(es)" in capsys.readouterr().err


def test_every_command_leaves_its_process_group(tmp_path, capsys):
    """The CLI destroys the process group before it returns, whatever the command's outcome (here a refusal): a gloo
    process that exits with its group alive can abort at interpreter shutdown."""
    import torch.distributed as dist
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert main(["train"]) == 2
        assert "say what to train" in capsys.readouterr().err
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@requires_mnist
def test_two_processes_follow_one_process_with_the_same_global_batch(tmp_path):
    """2 processes x batch 8 (prior samples 16) against 1 process x batch 16 (prior samples 32), same seed: the same
    images, noise rows and global batch statistics give the same losses of the global batch. Only rank 0 writes:
    one TensorBoard file, one log line per step.

    Iteration 1's D steps and adversarial losses are forward passes of identical weights: equal up to rounding.
    After that the runs drift apart within float32: the two processes take their batch statistics through another
    summation than one process does, D is piecewise linear (LeakyReLU), and a unit within rounding of its kink
    takes the other slope in one run (seen on an AVX-512 CPU); Adam's sign-like first steps turn such a change of a
    near-zero gradient into a step of +-lr. So later losses are compared loosely here; the arithmetic of the
    distributed step is checked exactly, in float64, by `test_distributed_phases_give_the_global_batch_gradients`.
    """
    two = _torchrun(tmp_path, 3, out="two")
    assert two.returncode == 0, two.stderr[-2000:]
    one = _torchrun(tmp_path, 3, "--set", "train.batch_size=16", "--set", "train.sample_batch_size=32",
                    processes=1, out="one")
    assert one.returncode == 0, one.stderr[-2000:]
    log = {run: [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
           for run in ("one", "two")}
    assert [r["iteration"] for r in log["two"]] == [1, 2, 3]         # one line per step: only rank 0 writes
    first_one, first_two = log["one"][0], log["two"][0]
    for key in ("loss/d", "d/real", "d/fake", "d/rec", "loss/g"):
        assert first_one[key] == pytest.approx(first_two[key], rel=1e-5, abs=1e-7), key
    for r1, r2 in zip(log["one"], log["two"]):                       # losses of the global batch, every iteration
        for key in ("loss/d", "loss/g", "loss/nce_b1", "loss/nce_final", "kl"):
            assert r1[key] == pytest.approx(r2[key], rel=2e-2), (r1["iteration"], key)
    a = load_file(str(tmp_path / "one" / "checkpoints" / "iter-0000003" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "checkpoints" / "iter-0000003" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert len(list((tmp_path / "two" / "tensorboard").iterdir())) == 1


def _phase_gradients(rank: int, world: int, init_file: str, out: str, variant: str, likelihood: str) -> None:
    """One process of `test_distributed_phases_give_the_global_batch_gradients`: the adversarial and the
    contrastive phase on this rank's slice of a fixed global batch, float64 networks, gradients averaged as the
    training loop averages them; rank 0 saves them."""
    import torch
    import torch.distributed as dist
    from torch import nn

    from dcvae.config import ModelConfig, ObjectiveConfig
    from dcvae.networks import build_networks
    from dcvae.objectives.noise import BatchNoise
    from dcvae.objectives.phases import TERMS, contrastive_phase, generator_phase
    from dcvae.objectives.queue import NegativeQueue
    from dcvae.training.distributed import average_gradients, use_global_batch_statistics

    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = ModelConfig(backbone="compact32", image_channels=1, gen_width=8, dis_width=8, latent_dim=8)
    objective = ObjectiveConfig(variant=variant, pixel_likelihood=likelihood, queue_size=32,
                                kl_weight=1.0 if likelihood == "bernoulli" else 1e-2)
    nets = build_networks(model)
    for module in (nets.encoder, nets.decoder, nets.discriminator):
        use_global_batch_statistics(module).double().train()
    momentum = build_networks(model).discriminator.double().eval()
    queues = nn.ModuleDict({name: NegativeQueue(32, model.contrastive_dim, torch.Generator().manual_seed(1))
                            for name in objective.contrastive_layers}).double()
    images = torch.rand(16, 1, 32, 32, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 2 - 1
    x = images[rank * 16 // world:(rank + 1) * 16 // world]
    noise = BatchNoise(torch.device("cpu"), rank, world)
    gradients = {}
    for phase in ("generator", "contrastive") if TERMS[variant].contrastive else ("generator",):
        noise.seed(3)
        if phase == "generator":
            loss, _ = generator_phase(nets, x, objective, TERMS[variant], noise, 32 // world, world)
            params = [*nets.encoder.parameters(), *nets.decoder.parameters()]
        else:
            loss, _, _ = contrastive_phase(nets, momentum, queues, x, objective, noise, False, world)
            params = [*nets.encoder.parameters(), *nets.decoder.parameters(), *nets.discriminator.parameters()]
        for p in params:
            p.grad = None
        loss.backward()
        average_gradients(params)
        gradients[phase] = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    if rank == 0:
        torch.save(gradients, out)
    if world > 1:
        dist.destroy_process_group()


@pytest.mark.parametrize("variant, likelihood", [("dcvae", "gaussian"), ("vae", "bernoulli")])
def test_distributed_phases_give_the_global_batch_gradients(tmp_path, variant, likelihood):
    """Two gloo processes, each with half of a batch of 16, against one process with all 16, in float64 (where no
    rounding reaches a LeakyReLU's kink): the averaged gradients of the adversarial / reconstruction phase and of
    the contrastive phase are those of the global batch. This covers the terms summed over the batch (the KL,
    the Bernoulli likelihood: scaled by the number of processes), the mean-reduced terms, the BatchNorm statistics
    of the global batch with their gradient, and the noise rows of each rank."""
    import torch
    import torch.multiprocessing as mp

    results = {}
    for world in (1, 2):
        out = str(tmp_path / f"world{world}.pt")
        mp.spawn(_phase_gradients, args=(world, str(tmp_path / f"init{world}"), out, variant, likelihood),
                 nprocs=world, join=True)
        results[world] = torch.load(out, weights_only=True)
    assert list(results[2]) == (["generator", "contrastive"] if variant == "dcvae" else ["generator"])
    for phase, one in results[1].items():
        two = results[2][phase]
        scale = max(float(g.abs().max()) for g in one)
        assert scale > 0
        worst = max(float((a - b).abs().max()) for a, b in zip(one, two))
        # float32 only in the loss heads (KL, InfoNCE and the logits are taken in float32): ~1e-7 relative
        assert worst < 1e-5 * scale, (phase, worst, scale)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    ranks = [int(v.split(b"=", 1)[1]) for v in env if v.startswith(b"RANK=")]
    return ranks[0] if ranks else None


@requires_mnist
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the workers through /proc (Linux)")
def test_a_killed_worker_ends_the_run_and_it_resumes(tmp_path):
    """SIGKILL rank 1 while training: torchrun ends the whole run (no worker left waiting forever in a collective),
    every checkpoint on disk is whole, and `--resume` on 2 processes finishes the run."""
    import signal
    import time

    from dcvae.training.checkpoint import list_checkpoints, verify_checkpoint

    proc = subprocess.Popen(_command(tmp_path, 400), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=ENV)
    deadline = time.monotonic() + 240
    while not list_checkpoints(tmp_path / "run" / "checkpoints") and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.05)
    rank1 = [pid for pid in _children(proc.pid) if _rank_of(pid) == 1]
    assert len(rank1) == 1
    os.kill(rank1[0], signal.SIGKILL)
    assert proc.wait(timeout=120) != 0                 # the run ends, and says it failed
    checkpoints = list_checkpoints(tmp_path / "run" / "checkpoints")
    assert checkpoints and all(verify_checkpoint(c, need_state=True) for c in checkpoints)
    last = int(checkpoints[-1].name[5:])
    assert last < 400
    resumed = _torchrun(tmp_path, 400, "--resume", "--set", f"train.iterations={last + 4}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["iterations"] == last + 4
