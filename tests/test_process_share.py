"""Each process's part of every batch (multi-process JAX runs): the parts, in process order, are the batch."""

from __future__ import annotations

import numpy as np
import pytest

from mfef_keras.data import make_dataset
from mfef_keras.data.process_share import process_share


def _batches(dataset) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.asarray(images), np.asarray(labels)) for images, labels in dataset]


@pytest.mark.parametrize("pipeline", ["tf.data", "numpy"])
def test_the_parts_of_the_processes_make_up_each_batch(monkeypatch, pipeline):
    monkeypatch.setenv("MFEF_INPUT_PIPELINE", pipeline)
    whole = _batches(make_dataset("digits", "train", 30, training=True, seed=3, limit=72))
    parts = [
        _batches(process_share(make_dataset("digits", "train", 30, training=True, seed=3, limit=72), i, 3))
        for i in range(3)
    ]
    assert [len(labels) for _, labels in whole] == [30, 30, 12]
    for index, (images, labels) in enumerate(whole):
        shares = [part[index] for part in parts]
        assert len({len(share_labels) for _, share_labels in shares}) == 1
        np.testing.assert_array_equal(np.concatenate([share_images for share_images, _ in shares]), images)
        np.testing.assert_array_equal(np.concatenate([share_labels for _, share_labels in shares]), labels)


def test_a_batch_the_processes_cannot_share_is_refused(monkeypatch):
    monkeypatch.setenv("MFEF_INPUT_PIPELINE", "numpy")
    share = process_share(make_dataset("digits", "train", 32, training=False, limit=70), 0, 4)
    share[0]
    with pytest.raises(ValueError, match="Batch 2 of 6 examples cannot be split evenly over 4 processes"):
        share[2]


def test_a_process_outside_the_run_is_refused(monkeypatch):
    monkeypatch.setenv("MFEF_INPUT_PIPELINE", "numpy")
    with pytest.raises(ValueError, match=r"process 2 must be in \[0, 1\] for 2 processes"):
        process_share(make_dataset("digits", "train", 32, training=False, limit=64), 2, 2)
