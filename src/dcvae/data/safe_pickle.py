"""Unpickling data files (the MNIST pickle, CIFAR-10 batches) without letting them run code.

A pickle can call any importable function while it loads, so `pickle.load` on a downloaded file is code execution.
`load_pickle` only resolves the few globals that numpy arrays and plain containers need and refuses the rest.
"""
from __future__ import annotations

import codecs
import collections
import importlib
import pickle
from typing import IO, Any, Callable

from ..errors import UserError


def _numpy_global(submodule: str, name: str) -> Callable[..., Any]:
    # numpy 2 renamed numpy.core to numpy._core and warns on the old name; pickles carry either name depending on
    # the numpy that wrote them, so both resolve to whichever module this numpy has.
    for module in (f"numpy._core.{submodule}", f"numpy.core.{submodule}"):
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise UserError(f"this numpy has no {submodule}.{name}, which the pickle needs; install numpy>=1.24")


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
    # Python 3 writes `bytes` as _codecs.encode(text, "latin1") under protocols 0-2. Other codecs (zlib, base64, ...)
    # are never written by pickle itself, so they are refused rather than trusted.
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise UserError(f"safe_pickle refuses to unpickle _codecs.encode with encoding {encoding!r}: pickle only "
                        "writes latin1 here, so this file was crafted; use a file from the data set's official source")
    return codecs.encode(text, "latin1", errors)


def _allowed() -> dict[tuple[str, str], Callable[[], Any]]:
    numpy_names = {
        ("multiarray", "_reconstruct"),   # ndarray.__reduce__
        ("multiarray", "scalar"),         # numpy scalars, e.g. an np.int64 label
        ("numeric", "_frombuffer"),       # ndarray.__reduce_ex__ under protocol 5
    }
    table: dict[tuple[str, str], Callable[[], Any]] = {}
    for submodule, name in numpy_names:
        for package in ("numpy.core", "numpy._core"):
            table[(f"{package}.{submodule}", name)] = lambda s=submodule, n=name: _numpy_global(s, n)
    table[("numpy", "ndarray")] = lambda: importlib.import_module("numpy").ndarray
    table[("numpy", "dtype")] = lambda: importlib.import_module("numpy").dtype
    basic = {"set": set, "frozenset": frozenset, "bytearray": bytearray, "bytes": bytes, "complex": complex}
    for module in ("builtins", "__builtin__"):          # __builtin__: pickles written by Python 2
        for name, value in basic.items():
            table[(module, name)] = lambda v=value: v
    table[("collections", "OrderedDict")] = lambda: collections.OrderedDict
    table[("_codecs", "encode")] = lambda: _latin1_encode
    return table


_ALLOWED = _allowed()


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that resolves only numpy arrays, numpy scalars and plain Python containers."""

    def find_class(self, module: str, name: str) -> Any:
        resolve = _ALLOWED.get((module, name))
        if resolve is None:
            raise UserError(
                f"safe_pickle refuses to unpickle {module}.{name}: this file could run code; only numpy arrays and "
                "plain Python containers are allowed in data files. Delete the file and fetch the data set again "
                "from its official source")
        return resolve()


def load_pickle(fileobj: IO[bytes], encoding: str = "latin1") -> Any:
    """Load one pickle from a binary file object, refusing any global but numpy arrays and basic types.

    `encoding` decodes Python 2 `str` objects (latin1 keeps numpy's raw array bytes intact, as torchvision does).
    Raises `UserError` for a refused global; a corrupt file raises pickle's own errors (UnpicklingError, EOFError).
    """
    return RestrictedUnpickler(fileobj, encoding=encoding).load()
