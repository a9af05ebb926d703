"""What a mixed cohort's training step costs beside its members trained alone, side by side in one process.

The target (issue 21): one step of a cohort (say MFEF on resnet32 + resnet8) costs at most 1.1x the sum of
each member's own single-student step plus the fusion path's step on its own. Every step here is the
distiller's compiled train function on the same random batch, timed after warm-up, the median of rounds
of steps (rounds alternate between the models, so machine load shifts all alike).

    python benchmarks/cohort_step.py --cohort resnet32,resnet8 --method mfef
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _distiller(backbones: list[str], method: str, classes: int, shape: tuple[int, int, int]):
    from mfef_keras.distill import OnlineDistiller
    from mfef_keras.models import build_students

    students = build_students(backbones, classes, num_students=len(backbones), input_shape=shape)
    distiller = OnlineDistiller(students, method=method, rampup_epochs=0)
    distiller.compile(steps_per_epoch=1000)
    distiller.prepare()
    return distiller


def _fusion_alone(cohort, classes: int):
    """The cohort's fusion path as its own model, trained on its input maps with the same optimiser form."""
    import keras

    from mfef_keras.distill import PyTorchSGD

    head = cohort.fusion
    maps = [keras.Input(tuple(t.shape[1:])) for t in cohort.fusion.inputs]
    model = keras.Model(maps, head(maps))
    model.compile(
        optimizer=PyTorchSGD(0.1, momentum=0.9, nesterov=True),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _stepper(model, inputs, labels):
    step = model.make_train_function() or model.train_function
    data = (inputs, labels)

    def run():
        step([data])

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", default="resnet32,resnet8", help="comma-separated backbones, one per student")
    parser.add_argument("--method", default="mfef", help="a method with a fusion head (mfef or ffl)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="steps per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    import numpy as np
    import tensorflow as tf

    backbones = [name.strip() for name in args.cohort.split(",")]
    classes, shape = 10, (args.image_size, args.image_size, 3)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(args.batch_size, *shape)).astype("float32"))
    labels = tf.constant(rng.integers(0, classes, size=args.batch_size))

    cohort = _distiller(backbones, args.method, classes, shape)
    features = [tf.constant(np.asarray(t)) for t in cohort.students_net(images, training=False)[0::2]]
    steppers = {"cohort": _stepper(cohort, images, labels)}
    for i, name in enumerate(backbones):
        steppers[f"s{i} {name} alone"] = _stepper(_distiller([name], "independent", classes, shape), images, labels)
    steppers["fusion path alone"] = _stepper(_fusion_alone(cohort, classes), features, labels)

    for run in steppers.values():
        for _ in range(2):
            run()
    times: dict[str, list[float]] = {name: [] for name in steppers}
    for _ in range(args.rounds):
        for name, run in steppers.items():
            started = time.perf_counter()
            for _ in range(args.steps):
                run()
            times[name].append((time.perf_counter() - started) / args.steps)
    medians = {name: statistics.median(values) for name, values in times.items()}
    parts = sum(value for name, value in medians.items() if name != "cohort")
    print(
        f"{args.method} on {'+'.join(backbones)}, batch {args.batch_size}, {shape[0]}x{shape[1]} images, "
        f"TensorFlow on {os.cpu_count()} cores; median of {args.rounds} rounds of {args.steps} steps"
    )
    print("| step | ms |")
    print("|---|---|")
    for name, value in medians.items():
        print(f"| {name} | {1000 * value:.1f} |")
    print(f"| sum of the parts | {1000 * parts:.1f} |")
    ratio = medians["cohort"] / parts
    print(f"\ncohort / sum of parts: {ratio:.3f} (target <= 1.10: {'met' if ratio <= 1.10 else 'NOT met'})")


if __name__ == "__main__":
    main()
