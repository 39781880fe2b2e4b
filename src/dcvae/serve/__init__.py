"""`dcvae serve`: a local web app to reconstruct, interpolate, edit and sample with a trained model.

The defaults live here and the app (Flask) is imported on first use, so that `dcvae --help` works without Flask.
"""
from __future__ import annotations

from typing import Any

DEFAULT_HOST = "127.0.0.1"   # this machine only: the app has no authentication
DEFAULT_PORT = 8000
DEFAULT_MAX_UPLOAD_BYTES = 10 * 2**20
DEFAULT_EXAMPLES = 8

_LAZY = ("ServeState", "build_state", "create_app", "image_from_bytes", "make_server", "png_data_url", "server_url")
__all__ = ["DEFAULT_EXAMPLES", "DEFAULT_HOST", "DEFAULT_MAX_UPLOAD_BYTES", "DEFAULT_PORT", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import app
        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
