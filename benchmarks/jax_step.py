"""The distiller's training step on the JAX backend, driven the way `fit` drives it, for the benchmarks.

Keras's JAX trainer keeps the model's state outside the variables while it trains: `fit` gathers
``(trainable, non_trainable, optimizer, metrics)`` values once, then calls ``train_function(state, iterator)``
per step, each call taking one batch from the iterator (device-put, as Keras's data adapters do), running the
`jax.jit`-compiled `OnlineDistiller.train_step` and returning the new state. `JaxTrainFunction` does exactly that,
so a benchmark times what `fit` runs per step and nothing else. Import this module only in a process whose
``KERAS_BACKEND`` is ``jax``; it never imports torch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def build_distiller(
    config: str,
    backbone: str = "resnet32",
    num_classes: int = 100,
    precision: str = "float32",
    steps_per_epoch: int = 391,
    jit: bool = True,
    seed: int = 0,
):
    """An `OnlineDistiller` of two students built, compiled and prepared as the throughput benchmark builds it.

    Args:
        config: ``"method/topology"``, e.g. ``"mfef/independent"``.
        backbone: a student backbone name (``"resnet32"``).
        num_classes: number of logits.
        precision: a Keras dtype policy (``"float32"``, ``"mixed_bfloat16"``), set globally before building.
        steps_per_epoch: for the step counter's epoch (LR schedule and KD ramp-up), as in training.
        jit: compile the step (`jax.jit` on JAX; False runs it op by op).
        seed: seeds the initial weights.
    """
    import keras

    from mfef_keras.distill import OnlineDistiller
    from mfef_keras.models import build_students

    method, topology = config.split("/")
    keras.mixed_precision.set_global_policy(precision)
    keras.utils.set_random_seed(seed)
    distiller = OnlineDistiller(build_students(backbone, num_classes, 2, topology), method)
    distiller.compile(jit_compile=jit)
    distiller.prepare(steps_per_epoch=steps_per_epoch)
    return distiller


class JaxTrainFunction:
    """A compiled distiller's ``train_function`` with the state that `fit` threads through it.

    Args:
        distiller: a compiled and prepared `OnlineDistiller` on the JAX backend.
    """

    def __init__(self, distiller):
        import keras

        if keras.backend.backend() != "jax":
            raise RuntimeError(f"JaxTrainFunction needs KERAS_BACKEND=jax, not {keras.backend.backend()!r}.")
        self.distiller = distiller
        distiller.make_train_function()
        self.state = self._gather_state()

    def _variable_groups(self) -> tuple[list, list, list, list]:
        d = self.distiller
        return d.trainable_variables, d.non_trainable_variables, d.optimizer.variables, d.metrics_variables

    def _gather_state(self) -> tuple[list, ...]:
        """What `fit` passes to the first ``train_function`` call of an epoch."""
        return tuple([v.value for v in variables] for variables in self._variable_groups())

    def __call__(self, images: np.ndarray, labels: np.ndarray) -> dict:
        """One training step on a host batch; returns the step's logs (JAX arrays: reading one waits for it)."""
        logs, self.state = self.distiller.train_function(self.state, self._one_batch(images, labels))
        return logs

    @staticmethod
    def _one_batch(images: np.ndarray, labels: np.ndarray) -> Iterator:
        import jax

        # Host to device per step, as Keras's JAX data adapters put each batch.
        yield jax.device_put((images, labels))

    def write_back(self) -> None:
        """Assign the threaded state to the model's variables, as `fit` does at the end of an epoch."""
        for variables, values in zip(self._variable_groups(), self.state):
            for variable, value in zip(variables, values):
                variable.assign(value)
        self.state = self._gather_state()

    def reset_metrics(self) -> None:
        """Write the state back and zero the metric trackers, so the next logs are that step's own values."""
        self.write_back()
        self.distiller.reset_metrics()
        self.state = self._gather_state()


def forward_flops_per_image(distiller, image_shape: tuple[int, ...]) -> float:
    """Multiply-adds x2 of every convolution and matrix product in one inference forward pass, per image.

    Counted from the traced jaxpr (`conv_general_dilated`, `dot_general`, nested jaxprs included), the JAX
    counterpart of the TensorFlow graph count and the torch hook count in `train_throughput`.
    """
    import jax

    jaxpr = jax.make_jaxpr(lambda x: distiller(x, training=False))(np.zeros((1, *image_shape), "float32"))
    return _jaxpr_flops(jaxpr.jaxpr)


def _nested_jaxprs(eqn) -> Iterator:
    """The jaxprs inside an equation's parameters (jit, custom_jvp, remat...)."""
    for param in eqn.params.values():
        for value in param if isinstance(param, (list, tuple)) else (param,):
            if hasattr(value, "jaxpr") and hasattr(value, "consts"):  # a ClosedJaxpr
                yield value.jaxpr
            elif hasattr(value, "eqns"):  # a Jaxpr
                yield value


def _jaxpr_flops(jaxpr) -> float:
    """2 x multiply-adds of the convolutions and matrix products in ``jaxpr`` (batch of the traced input)."""
    total = 0.0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            kernel, out = eqn.invars[1].aval, eqn.outvars[0].aval
            # Kernel elements per output channel = kh * kw * input channels / groups (1 for depthwise).
            out_channels = kernel.shape[eqn.params["dimension_numbers"].rhs_spec[0]]
            total += 2 * np.prod(out.shape) * np.prod(kernel.shape) / out_channels
        elif name == "dot_general":
            lhs, out = eqn.invars[0].aval, eqn.outvars[0].aval
            (contracting, _), _ = eqn.params["dimension_numbers"]
            total += 2 * np.prod(out.shape) * np.prod([lhs.shape[i] for i in contracting])
        for inner in _nested_jaxprs(eqn):
            total += _jaxpr_flops(inner)
    return float(total)
