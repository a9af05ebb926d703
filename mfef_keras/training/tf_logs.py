"""TensorFlow's own log lines kept off the console of `mfef` unless asked for (`mfef --verbose`), and said once.

Loading TensorFlow's two native libraries prints the same start-up lines twice (the oneDNN notice, absl's
warning), before ``TF_CPP_MIN_LOG_LEVEL`` is read (TF 2.21). `mfef` discards them; elsewhere (`mfef --verbose`,
a script that imports the package) each is written once.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager


def quiet_tensorflow() -> None:
    """Silence TensorFlow's C++ and Python logs below ERROR, and its import banner, in this process.

    Call it before TensorFlow is imported; a ``TF_CPP_MIN_LOG_LEVEL`` already set is kept.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)
    _hook_tensorflow_import(discard=True)


def tensorflow_logs_once() -> None:
    """Write each of TensorFlow's import-time log lines once, not once per native library, in this process.

    Nothing is hidden: the lines are held while TensorFlow loads and then written to stderr without repeats.
    Call it before TensorFlow is imported (importing `mfef_keras` does); `quiet_tensorflow` overrides it.
    """
    _hook_tensorflow_import(discard=False)


def _hook_tensorflow_import(discard: bool) -> None:
    if "tensorflow" in sys.modules:
        return
    hooks = [finder for finder in sys.meta_path if isinstance(finder, _QuietImport)]
    if hooks:
        # Discarding wins over deduplicating: `mfef` asks for it after the package's import asked for the other.
        hooks[0].discard = hooks[0].discard or discard
    else:
        sys.meta_path.insert(0, _QuietImport(discard))


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


# A glog line's prefix: severity and date, time, thread id. The same message from the two libraries differs in it.
_GLOG_PREFIX = re.compile(r"^[IWEF]\d{4} [\d:.]+\s+\d+ ")


@contextmanager
def _stderr_once() -> Iterator[None]:
    """File descriptor 2 goes to a temporary file inside the block; then each distinct line goes to it once."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            seen, kept = set(), []
            for line in held.read().decode(errors="replace").splitlines(keepends=True):
                message = _GLOG_PREFIX.sub("", line)
                if message not in seen:
                    seen.add(message)
                    kept.append(line)
            os.write(2, "".join(kept).encode())


class _QuietImport(importlib.abc.MetaPathFinder):
    """Runs the first ``import tensorflow`` with its stderr discarded, or with each line of it written once.

    Args:
        discard: discard what TensorFlow writes to stderr while it loads, rather than write each line once.
    """

    def __init__(self, discard: bool) -> None:
        self.discard = discard

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
        with _stderr_discarded() if self.finder.discard else _stderr_once():
            self.loader.exec_module(module)
