"""Do an artefact's logits match the Keras student's? Measured at several batch sizes, checked against a tolerance."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from mfef_keras.export.errors import ParityError

# fp32 artefacts must give the Keras logits to within this, with the same top-1 class for every image.
ATOL = 1e-4
# Batch sizes each artefact is run at; 7 is odd on purpose, to catch code that assumes even or fixed batches.
BATCH_SIZES = (1, 2, 7)


@dataclass(frozen=True)
class ParityResult:
    """How an artefact's logits compare with the reference's on the same images.

    Args:
        artifact: the artefact compared (``"onnx"``, ``"saved_model"``, ``"onnx_int8"``...).
        data: what the images were (``"10 random uint8 images"``, ``"digits test split (360 images)"``...).
        batch_sizes: the batch sizes the artefact was run at.
        images: number of images compared.
        max_abs_diff: largest absolute difference of any logit.
        top1_agreement: fraction of images with the same arg-max class.
        tolerance: the allowed ``max_abs_diff``; None for artefacts only measured (quantized ones).
    """

    artifact: str
    data: str
    batch_sizes: tuple[int, ...]
    images: int
    max_abs_diff: float
    top1_agreement: float
    tolerance: float | None

    @property
    def passed(self) -> bool:
        """Within tolerance with identical top-1 classes (always true for measured-only results)."""
        if self.tolerance is None:
            return True
        return self.max_abs_diff <= self.tolerance and self.top1_agreement == 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "batch_sizes": list(self.batch_sizes), "passed": self.passed}

    def __str__(self) -> str:
        limit = "measured only" if self.tolerance is None else f"tolerance {self.tolerance:g}"
        verdict = "ok" if self.passed else "FAILED"
        return (
            f"{self.artifact} vs keras on {self.data}, {describe_batches(self.batch_sizes)}: "
            f"max |diff| {self.max_abs_diff:.3g}, top-1 agreement {self.top1_agreement:.2%} ({limit}) {verdict}"
        )


def describe_batches(batch_sizes: Sequence[int]) -> str:
    """The batch sizes for a console line: listed when few, else counted (a test split makes dozens).

    Args:
        batch_sizes: sizes of the successive calls.
    """
    sizes = list(batch_sizes)
    if len(sizes) <= 4:
        return f"batches {sizes}"
    head = sizes[:-1] if sizes[-1] != sizes[0] else sizes
    if len(set(head)) == 1:
        last = f" and 1 of {sizes[-1]}" if len(head) < len(sizes) else ""
        return f"{len(head)} batches of {head[0]}{last}"
    return f"{len(sizes)} batches of {min(sizes)} to {max(sizes)}"


def at_batch_sizes(
    fn: Callable[[np.ndarray], np.ndarray], images: np.ndarray, batch_sizes: Sequence[int] = BATCH_SIZES
) -> np.ndarray:
    """``fn`` run on consecutive slices of ``images`` of the given sizes, concatenated.

    Args:
        fn: batch of images -> logits.
        images: at least ``sum(batch_sizes)`` images.
        batch_sizes: sizes of the successive calls.
    """
    bounds = np.cumsum([0, *batch_sizes])
    if bounds[-1] > len(images):
        raise ValueError(f"Batches {list(batch_sizes)} need {bounds[-1]} images; got {len(images)}.")
    return np.concatenate([fn(images[start:stop]) for start, stop in zip(bounds[:-1], bounds[1:])])


def compare(
    artifact: str,
    reference: np.ndarray,
    candidate: np.ndarray,
    *,
    data: str,
    batch_sizes: Sequence[int],
    tolerance: float | None,
) -> ParityResult:
    """Compare two ``(images, classes)`` logit arrays.

    Args:
        artifact: name of the artefact that produced ``candidate``.
        reference: the Keras student's logits.
        candidate: the artefact's logits on the same images.
        data: what the images were.
        batch_sizes: the batch sizes ``candidate`` was computed at.
        tolerance: allowed max absolute difference, or None to measure only.
    """
    if reference.shape != candidate.shape:
        raise ParityError(f"{artifact} gives logits of shape {candidate.shape}; Keras gives {reference.shape}.")
    difference = np.abs(reference.astype(np.float64) - candidate.astype(np.float64))
    return ParityResult(
        artifact=artifact,
        data=data,
        batch_sizes=tuple(int(b) for b in batch_sizes),
        images=len(reference),
        max_abs_diff=float(difference.max()) if difference.size else 0.0,
        top1_agreement=float(np.mean(reference.argmax(-1) == candidate.argmax(-1))),
        tolerance=tolerance,
    )


def require(results: Sequence[ParityResult]) -> None:
    """Raise `ParityError`, naming the measured differences, if any result failed."""
    failed = [result for result in results if not result.passed]
    if failed:
        details = "; ".join(str(result) for result in failed)
        raise ParityError(f"Exported model does not match the Keras student: {details}.", list(results))


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy of ``logits`` against integer ``labels``."""
    return float(np.mean(np.asarray(logits).argmax(-1) == np.asarray(labels).reshape(-1)))
