"""Data: `build_dataset` turns a `DataConfig` into a data set of (image [C, R, R] in [-1, 1], label) pairs."""
from .datasets import build_dataset

__all__ = ["build_dataset"]
