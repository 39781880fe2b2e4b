"""Two CPU processes (torchrun, gloo) train, checkpoint and resume with the same code as one process."""
import json
import os
import re
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


@requires_mnist
def test_two_processes_follow_one_process_with_the_same_global_batch(tmp_path):
    """2 processes x batch 8 (prior samples 16) against 1 process x batch 16 (prior samples 32), same seed: same
    images, same noise rows, batch statistics of the global batch, averaged gradients -> the same weights after 3
    iterations up to float summation order. Only rank 0 writes: one TensorBoard file, one log line per step."""
    two = _torchrun(tmp_path, 3, out="two")
    assert two.returncode == 0, two.stderr[-2000:]
    one = _torchrun(tmp_path, 3, "--set", "train.batch_size=16", "--set", "train.sample_batch_size=32",
                    processes=1, out="one")
    assert one.returncode == 0, one.stderr[-2000:]
    a = load_file(str(tmp_path / "one" / "checkpoints" / "iter-0000003" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "checkpoints" / "iter-0000003" / "model.safetensors"))
    assert a.keys() == b.keys()
    # A convolution's bias right before BatchNorm has a gradient of exactly zero in exact arithmetic; Adam's first
    # steps move it by +-lr whatever the sign of the rounding noise, and the BatchNorm's running mean follows it.
    # Nothing downstream depends on them, so they are left out; every other tensor matches.
    invariant = re.compile(r"decoder(_ema)?\.stages\.\d\.(1\.bias|2\.running_mean)$")
    compared = [k for k in a if a[k].is_floating_point() and not invariant.match(k)]
    assert len(compared) > 40
    worst = max(float((a[k] - b[k]).abs().max()) for k in compared)
    assert worst < 2e-5, worst
    log = {run: [json.loads(line) for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
           for run in ("one", "two")}
    assert [r["iteration"] for r in log["two"]] == [1, 2, 3]         # one line per step: only rank 0 writes
    for r1, r2 in zip(log["one"], log["two"]):                       # losses of the global batch, every iteration
        for key in ("loss/d", "loss/g", "loss/nce_final", "kl", "acc/b1"):
            assert r1[key] == pytest.approx(r2[key], rel=1e-4, abs=1e-6), key
    assert len(list((tmp_path / "two" / "tensorboard").iterdir())) == 1


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
