"""Training: the loop (loop.py), checkpoints (checkpoint.py) and the run folder (run_dir.py)."""


def train(*args, **kwargs):
    """See `dcvae.training.loop.train` (imported on first use: it pulls in Accelerate and TensorBoard)."""
    from .loop import train as _train
    return _train(*args, **kwargs)


__all__ = ["train"]
