"""Device set-up and the distribution strategy of a run.

On TensorFlow a run is spread by tf.distribute. On JAX, ``mirrored`` is `keras.distribution.DataParallel`
over every local device, and ``multiworker`` over the devices of all the processes of a `jax.distributed` run:
one program over the global batch, so its gradients and BatchNorm statistics are those of one device (nothing
to synchronise or rescale). The torch backend trains on one device.
"""

from __future__ import annotations

import contextlib
import os

from mfef_keras._names import unknown_name_error
from mfef_keras.training.config import STRATEGIES


def _keras_backend() -> str:
    # Importing Keras (and with it TensorFlow) initialises no device, so this may run first.
    import keras

    return keras.backend.backend()


def _unsupported(option: str, backend: str, backends: str) -> ValueError:
    return ValueError(
        f"{option} needs the {backends} backend; KERAS_BACKEND is {backend!r}. "
        f"Run with KERAS_BACKEND set to {backends.replace(' or ', ' or to ')}, or leave the option out to train "
        "on one device."
    )


class OneDevice:
    """The strategy of a run on one device of a backend without tf.distribute: one replica, nothing to enter."""

    num_replicas_in_sync = 1
    cluster_resolver = None

    def scope(self):
        return contextlib.nullcontext()


def _replicated_batches(devices: list):
    """`keras.distribution.DataParallel` over ``devices`` that gives every device the whole batch.

    Every process then feeds the whole batch too, so Keras must not shard a tf.data pipeline by process.
    """
    import keras

    class ReplicatedBatches(keras.distribution.DataParallel):
        def get_data_layout(self, data_shape):
            return keras.distribution.TensorLayout([None] * len(data_shape), self.device_mesh)

    return ReplicatedBatches(devices=devices, auto_shard_dataset=False)


class JaxDataParallel:
    """The strategy of a JAX run over several devices: `keras.distribution.DataParallel`, set for the process.

    It is set globally rather than in `scope`, because Keras's JAX trainer reads the distribution when `fit`
    and `evaluate` run, not only when the variables are made. JAX cannot split a batch of 9 over 2 devices,
    and Keras lays out all the batches of a `fit` or `evaluate` call as it laid out the first: see
    `shared_train_size` and `evaluation_scope` for how runs keep every batch shareable. Over several
    processes (`jax.distributed`), each process feeds its part of every batch (`batch_share`).

    Args:
        devices: the JAX devices to spread each batch over (all processes' devices in a multi-process run).
    """

    cluster_resolver = None

    def __init__(self, devices: list):
        import jax
        import keras

        self.devices = list(devices)
        self.num_replicas_in_sync = len(self.devices)
        self.process_index = jax.process_index()
        self.process_count = jax.process_count()
        keras.distribution.set_distribution(self.sharded_distribution())

    def sharded_distribution(self):
        """The `keras.distribution.DataParallel` that splits every batch over the devices."""
        import keras

        # Each process passes its own part of the batch; Keras must not shard a tf.data pipeline itself.
        return keras.distribution.DataParallel(devices=self.devices, auto_shard_dataset=self.process_count == 1)

    def scope(self):
        return contextlib.nullcontext()


def _start_jax_processes() -> None:
    """Joins this process to the others of a multi-process JAX run (`keras.distribution.initialize`)."""
    import jax
    import keras
    from jax._src import distributed

    if distributed.global_state.client is not None:
        return
    # The CPU's collectives between processes (JAX's default has none); GPUs use NCCL whatever this says.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        keras.distribution.initialize()
    except (ValueError, RuntimeError) as error:
        raise ValueError(
            "strategy multiworker (--strategy) on JAX starts jax.distributed and could not: "
            f"{error} Set KERAS_DISTRIBUTION_JOB_ADDRESSES (the coordinator's host:port, the same in every "
            "process), KERAS_DISTRIBUTION_NUM_PROCESSES and KERAS_DISTRIBUTION_PROCESS_ID (0 to N-1) in each "
            "process, or run under a cluster manager JAX detects (SLURM, Open MPI)."
        ) from None


def configure_cpu_devices(count: int | None) -> None:
    """Split the CPU into ``count`` logical devices; must run before TensorFlow initialises its devices.

    On TensorFlow these are logical devices for tf.distribute; on JAX, CPU devices for
    `keras.distribution.DataParallel` (JAX's ``jax_num_cpu_devices``).

    Args:
        count: logical devices wanted, at most the machine's CPU cores; None or 0 leaves the CPU whole.

    Raises:
        ValueError: ``count`` exceeds the CPU cores (replicas would wait on each other without end), or the
            backend is neither TensorFlow nor JAX.
        RuntimeError: the backend has already set up its devices.
    """
    if not count:
        return
    backend = _keras_backend()
    if backend not in ("tensorflow", "jax"):
        raise _unsupported(f"cpu_devices {count} (--cpu-devices)", backend, "tensorflow or jax")
    cores = os.cpu_count() or 1
    if count > cores:
        # Each replica's step waits for all the others at every all-reduce; with more replicas than cores
        # they take turns, and an epoch was seen not to finish in 12 minutes.
        raise ValueError(
            f"cpu_devices {count} (--cpu-devices) is more than the {cores} CPU cores of this machine; "
            f"use {cores} or fewer."
        )
    if backend == "jax":
        _split_jax_cpu(count)
        return
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    wanted = [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return
    try:
        tf.config.set_logical_device_configuration(cpu, wanted)
    except RuntimeError as error:
        raise RuntimeError(
            f"Cannot split the CPU into {count} logical devices: TensorFlow has already initialised its devices "
            f"({error}). Set cpu_devices before anything else runs TensorFlow."
        ) from None


def _split_jax_cpu(count: int) -> None:
    import jax
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        if len(jax.devices("cpu")) == count:
            return
        raise RuntimeError(
            f"Cannot split the CPU into {count} devices: JAX has already set up its devices. Set cpu_devices "
            "before anything else runs JAX."
        )
    jax.config.update("jax_num_cpu_devices", count)


def make_strategy(name: str):
    """``default``: one device; ``mirrored``: all GPUs, else all (logical) CPUs; ``multiworker``: from TF_CONFIG.

    On TensorFlow these are tf.distribute strategies. On JAX, ``default`` is `OneDevice`, ``mirrored`` is
    `JaxDataParallel` over all local devices of the default platform (GPUs where there are some), and
    ``multiworker`` joins the processes of a `jax.distributed` run (see `_start_jax_processes`) and is
    `JaxDataParallel` over all their devices. Torch has ``default`` only.

    Raises:
        ValueError: an unknown name, or a strategy the backend does not have.
    """
    if name not in STRATEGIES:
        raise unknown_name_error("strategy", name, STRATEGIES)
    backend = _keras_backend()
    if backend == "jax":
        import jax
        import keras

        # A run on one device must not inherit a distribution set by an earlier run in this process.
        keras.distribution.set_distribution(None)
        if name == "default":
            return OneDevice()
        if name == "mirrored":
            return JaxDataParallel(jax.local_devices())
        _start_jax_processes()
        return JaxDataParallel(jax.devices())
    if backend != "tensorflow":
        if name == "default":
            return OneDevice()
        raise _unsupported(f"strategy {name} (--strategy)", backend, "tensorflow or jax")
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return tf.distribute.MirroredStrategy([d.name for d in gpus])
        # Collective all-reduces between logical CPUs must run in the same order on every
        # replica, which two students computed side by side do not guarantee (synchronised
        # BatchNorm then fails with "Shape mismatch in the collective"); reducing on one
        # device has no such ordering constraint.
        devices = [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    return tf.distribute.MultiWorkerMirroredStrategy()


def shared_train_size(strategy, train_size: int, batch_size: int) -> int:
    """How many of ``train_size`` training images a run uses: all, except over several JAX devices.

    There it is the largest multiple of the device count, so that every batch, the last partial one too,
    splits evenly (at most devices - 1 images, the last of the split, are left out).

    Raises:
        ValueError: ``batch_size`` is not a multiple of the JAX devices.
    """
    if not isinstance(strategy, JaxDataParallel):
        return train_size
    devices = strategy.num_replicas_in_sync
    if batch_size % devices:
        raise ValueError(
            f"batch_size {batch_size} (--batch-size) cannot be shared by the {devices} devices of this "
            f"data-parallel run; use a multiple of {devices}."
        )
    return train_size - train_size % devices


def _shares_every_batch(strategy: JaxDataParallel, examples: int, batch_size: int) -> bool:
    """Whether ``examples`` images in batches of ``batch_size`` split evenly over the strategy's devices."""
    devices = strategy.num_replicas_in_sync
    return examples % devices == 0 and batch_size % devices == 0


@contextlib.contextmanager
def evaluation_scope(strategy, examples: int, batch_size: int):
    """Evaluates ``examples`` images in batches of ``batch_size`` on every device of ``strategy``.

    Over several JAX devices, when some batch would not split evenly, each device computes every batch whole
    (slower, the same result) instead of failing; evaluation must see every image.
    """
    if not isinstance(strategy, JaxDataParallel) or _shares_every_batch(strategy, examples, batch_size):
        yield
        return
    import keras

    keras.distribution.set_distribution(_replicated_batches(strategy.devices))
    try:
        yield
    finally:
        keras.distribution.set_distribution(strategy.sharded_distribution())


def batch_share(strategy, examples: int, batch_size: int) -> tuple[int, int] | None:
    """``(process, processes)``: the part of every batch this process feeds, or None for whole batches.

    Only a multi-process JAX run splits batches between processes, and only where `evaluation_scope` does
    not give every device whole batches (then every process feeds the whole batch).
    """
    if not isinstance(strategy, JaxDataParallel) or strategy.process_count == 1:
        return None
    if not _shares_every_batch(strategy, examples, batch_size):
        return None
    return strategy.process_index, strategy.process_count


def is_chief(strategy) -> bool:
    """Whether this process writes the run directory: the only one, TensorFlow's chief, or JAX's process 0."""
    if isinstance(strategy, JaxDataParallel):
        return strategy.process_index == 0
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0)
