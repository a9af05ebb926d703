"""Each process's share of every batch, for data parallelism over several processes (JAX's `jax.distributed`).

Every process builds the same global batches (same seed, same data) and feeds only its slice: process ``i`` of
``n`` the ``i``-th of ``n`` equal parts of each batch. Keras then assembles the global batch from the parts.
Building every batch in every process costs input-pipeline work, not accelerator time, and keeps the batches,
their order and their augmentation those of a run on one device, with no sharding of files to arrange.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras

if TYPE_CHECKING:
    import tensorflow as tf


def _check(process: int, processes: int) -> None:
    if not 0 <= process < processes:
        raise ValueError(f"process {process} must be in [0, {processes - 1}] for {processes} processes.")


class ProcessShare(keras.utils.PyDataset):
    """Process ``process``'s part of each batch of a `keras.utils.PyDataset`, the batches split ``processes`` ways.

    Args:
        batches: a `keras.utils.PyDataset` of ``(images, labels)`` batches whose sizes are multiples of
            ``processes``.
        process: this process's index.
        processes: the number of processes.

    Example:
        >>> share = ProcessShare(batches, process=1, processes=2)  # doctest: +SKIP
        >>> images, labels = share[0]  # the second half of batch 0  # doctest: +SKIP
    """

    def __init__(self, batches: keras.utils.PyDataset, process: int, processes: int) -> None:
        super().__init__()
        _check(process, processes)
        self.batches = batches
        self.process = process
        self.processes = processes

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, index: int):
        images, labels = self.batches[index]
        size = len(labels)
        if size % self.processes:
            raise ValueError(
                f"Batch {index} of {size} examples cannot be split evenly over {self.processes} processes."
            )
        part = slice(self.process * size // self.processes, (self.process + 1) * size // self.processes)
        return images[part], labels[part]

    def on_epoch_end(self) -> None:
        self.batches.on_epoch_end()


def _tf_share(dataset: tf.data.Dataset, process: int, processes: int) -> tf.data.Dataset:
    import tensorflow as tf

    def part(images, labels):
        size = tf.shape(labels)[0] // processes
        return images[process * size : (process + 1) * size], labels[process * size : (process + 1) * size]

    return dataset.map(part, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def process_share(batches, process: int, processes: int):
    """This process's part of every batch of ``batches`` (a `tf.data.Dataset` or a `keras.utils.PyDataset`).

    Args:
        batches: batches of ``(images, labels)`` whose sizes are multiples of ``processes``.
        process: this process's index.
        processes: the number of processes.
    """
    _check(process, processes)
    if isinstance(batches, keras.utils.PyDataset):
        return ProcessShare(batches, process, processes)
    return _tf_share(batches, process, processes)
