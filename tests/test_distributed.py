"""Two CPU processes (torchrun, gloo) train, checkpoint and resume with the same code as one process."""
import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

from conftest import requires_mnist
from dcvae.cli.main import main

TINY = """
model: {gen_width: 8, dis_width: 8, latent_dim: 8}
objective: {queue_size: 64}
train: {batch_size: 8, sample_batch_size: 16, d_steps: 2, iterations: ITER, log_every: 2, checkpoint_every: 2,
        image_every: 2}
"""


def _torchrun(tmp_path: Path, iterations: int, *extra: str) -> subprocess.CompletedProcess:
    config = tmp_path / f"tiny-{iterations}.yaml"
    config.write_text(TINY.replace("ITER", str(iterations)))
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node", "2", "--master_port", str(29500 + os.getpid() % 1000),
           "-m", "dcvae.cli.main", "train", "--out", str(tmp_path / "run"), "--no-progress", *extra]
    if "--resume" not in extra:
        cmd += ["--preset", "mnist", "--config", str(config)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


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
