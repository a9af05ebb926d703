"""TensorFlow's own log lines kept off the console of `mfef` unless asked for (`mfef --verbose`)."""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ and Python logs below ERROR, and its import banner, in this process.

    Call it before TensorFlow is imported; a ``TF_CPP_MIN_LOG_LEVEL`` already set is kept.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "tensorflow" not in sys.modules and not any(isinstance(finder, _QuietImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


@contextmanager
def _stderr_discarded() -> Iterator[None]:
    """File descriptor 2 points at /dev/null inside the block (C++ code writes there, not to `sys.stderr`)."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _QuietImport(importlib.abc.MetaPathFinder):
    """Runs the first ``import tensorflow`` with stderr discarded.

    Loading TensorFlow's two native libraries prints the oneDNN notice and absl's "All log messages before
    absl::InitializeLog()" warning once each, before ``TF_CPP_MIN_LOG_LEVEL`` is read (TF 2.21).
    """

    def find_spec(self, fullname: str, path=None, target=None):
        if fullname != "tensorflow":
            return None
        # A lookup without import (`importlib.util.find_spec`, asking whether TensorFlow is installed) lands
        # here too, so the finder stays until TensorFlow is loaded; it steps aside only for its own lookup.
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader, self)
        return spec


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, finder: _QuietImport):
        self.loader = loader
        self.finder = finder

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        # TensorFlow sees its own loader, as if imported without this one.
        module.__spec__.loader = module.__loader__ = self.loader
        if self.finder in sys.meta_path:
            sys.meta_path.remove(self.finder)
        with _stderr_discarded():
            self.loader.exec_module(module)
