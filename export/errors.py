"""Errors of the export and prediction paths; each message names the bad value and what is expected."""

from __future__ import annotations


class ExportError(ValueError):
    """An export that cannot be made as asked (bad source, option, opset, data or failed validation)."""


class ParityError(ExportError):
    """An exported artefact whose outputs differ from the Keras student beyond the tolerance.

    Args:
        message: what differed and by how much.
        results: the `ParityResult` records measured before the failure.
    """

    def __init__(self, message: str, results: list | None = None):
        super().__init__(message)
        self.results = list(results or [])


class PredictError(ValueError):
    """A model or an input that the `Predictor` cannot use (corrupt file, wrong image size or channels...)."""
