"""The `mfef` command line: train, evaluate, publish, export and serve distilled students."""

from __future__ import annotations

import importlib.util
import os
import sys

# The backend KERAS_BACKEND names; unset, the first of these that is installed (TensorFlow, the design's
# backend, where it is; JAX with the `jax` extra), noted on stderr when it is not TensorFlow. `mfef train`
# says which backend it uses. Set here, before anything imports Keras, so that keras.json's choice does not apply.
DEFAULT_BACKENDS = ("tensorflow", "jax", "torch")


def _choose_backend() -> None:
    if os.environ.get("KERAS_BACKEND"):
        return
    # find_spec looks a package up without importing it.
    installed = [name for name in DEFAULT_BACKENDS if importlib.util.find_spec(name) is not None]
    if not installed:
        sys.exit(
            f"Error: no Keras backend is installed: none of {', '.join(DEFAULT_BACKENDS)}. Install one with "
            "pip install 'mfef-keras[jax]' (or [cpu], [gpu] for TensorFlow)."
        )
    os.environ["KERAS_BACKEND"] = installed[0]
    if installed[0] != "tensorflow":
        print(
            f"note: TensorFlow is not installed; using the {installed[0]} backend (set KERAS_BACKEND to choose).",
            file=sys.stderr,
        )


_choose_backend()

import click  # noqa: E402

from mfef_keras import __version__  # noqa: E402
from mfef_keras._names import unknown_name_error  # noqa: E402
from mfef_keras._outputs import user_errors  # noqa: E402
from mfef_keras._tensorflow import tensorflow_installed, tensorflow_missing  # noqa: E402
from mfef_keras.choices import ABLATIONS, BACKBONES, DATASETS, TOPOLOGIES  # noqa: E402
from mfef_keras.training.config import (  # noqa: E402
    LR_SCHEDULES,
    PRECISIONS,
    SELECTIONS,
    STRATEGIES,
    TrainConfig,
    shipped_configs,
)

USER_ERRORS = (ValueError, FileNotFoundError, PermissionError, RuntimeError)


def _default(name: str) -> str:
    value = TrainConfig.__dataclass_fields__[name]
    default = value.default_factory() if callable(value.default_factory) else value.default
    return f"[default: {default}]"


class NameChoice(click.Choice):
    """A `click.Choice` whose refusal names what is allowed and the closest match, as config files are told.

    Args:
        kind: what the names are (``"method"``...), for the message.
        choices: the allowed names.
    """

    def __init__(self, kind: str, choices: tuple[str, ...]) -> None:
        super().__init__(choices)
        self.kind = kind

    def convert(self, value, param, ctx):
        try:
            return super().convert(value, param, ctx)
        except click.BadParameter:
            self.fail(str(unknown_name_error(self.kind, value, self.choices)), param, ctx)


class OptionAssignment(click.ParamType):
    """``NAME=VALUE`` on the command line, as the pair (NAME, VALUE); the value is converted by the method's option."""

    name = "NAME=VALUE"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        option, equals, setting = value.partition("=")
        if not equals or not option.strip():
            self.fail(f"expected NAME=VALUE (e.g. ema_decay=0.99), got {value!r}.", param, ctx)
        return option.strip(), setting.strip()


# Packages only the TensorFlow extras (`cpu`, `gpu`) install: CIFAR, export (tf2onnx, onnx) and ONNX models need them.
TENSORFLOW_EXTRA_PACKAGES = ("tensorflow", "tensorflow_datasets", "tf2onnx", "onnx", "onnxruntime")


class Commands(click.Group):
    """The `mfef` group: a command that reaches for a package of the TensorFlow extras where they are not
    installed ends in one line saying what to install, not a traceback."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as error:
            if tensorflow_installed() or (error.name or "").split(".")[0] not in TENSORFLOW_EXTRA_PACKAGES:
                raise
            command = f"mfef {ctx.invoked_subcommand}" if ctx.invoked_subcommand else "This command"
            needs = tensorflow_missing(
                f"{command} needs {error.name}", "use mfef train, study and eval of Keras students, which do not"
            )
            raise click.ClickException(str(needs)) from None


@click.group(cls=Commands, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="mfef")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's own log messages (hidden by default).")
def main(verbose: bool) -> None:
    """Train, evaluate and ship small image classifiers by online knowledge distillation (MFEF).

    Start with `mfef train`: it trains two students with MFEF on the embedded digits
    data in a few minutes on a CPU and saves the best one.
    """
    if not verbose:
        from mfef_keras.training.tf_logs import quiet_tensorflow

        # Runs before any command imports TensorFlow.
        quiet_tensorflow()


# Options shared by `train` and `study`, each keyed by the TrainConfig field it sets.
TRAINING_OPTIONS = {
    "config_file": click.option(
        "--config", "config_file", help=f"YAML/JSON config file, or a shipped one: {', '.join(shipped_configs())}."
    ),
    "dataset": click.option("--dataset", help=f"{', '.join(DATASETS.list())} or folder:PATH. {_default('dataset')}"),
    "data_dir": click.option("--data-dir", help="Where datasets live. [default: $MFEF_DATA_DIR or ~/.mfef/data]"),
    "backbone": click.option(
        "--backbone",
        help="Student network (mfef list-backbones), or one per student separated by commas, e.g. resnet32,resnet8 "
        "(a large peer beside the small student to deploy: best_student/ is the best of the smallest). "
        f"{_default('backbone')}",
    ),
    "base_width": click.option("--base-width", type=int, help="Channels of the first stage. [default: the family's]"),
    "method": click.option(
        "--method",
        help=f"Distillation method (mfef list-methods); independent is the vanilla baseline. {_default('method')}",
    ),
    "num_students": click.option(
        "--students",
        "num_students",
        type=int,
        help=f"Students of a single --backbone trained together. {_default('num_students')}",
    ),
    "topology": click.option(
        "--topology",
        type=NameChoice("topology", TOPOLOGIES),
        help=f"Own weights per student, or a shared trunk (FFL/ONE). {_default('topology')}",
    ),
    "ablate": click.option(
        "--ablate", type=NameChoice("ablation", ABLATIONS), multiple=True, help="Switch off an MFEF part. Repeatable."
    ),
    "method_options": click.option(
        "--method-option",
        "method_options",
        type=OptionAssignment(),
        multiple=True,
        help="Set one of the method's own hyper-parameters, e.g. --method-option ema_decay=0.99 (pcl); repeatable. "
        "mfef list-methods shows each method's options and defaults.",
    ),
    "epochs": click.option("--epochs", type=int, help=f"Training epochs. {_default('epochs')}"),
    "batch_size": click.option("--batch-size", type=int, help=f"Global training batch. {_default('batch_size')}"),
    "eval_batch_size": click.option("--eval-batch-size", type=int, help=f"Test batch. {_default('eval_batch_size')}"),
    "learning_rate": click.option(
        "--lr", "learning_rate", type=float, help=f"Initial SGD learning rate. {_default('learning_rate')}"
    ),
    "lr_milestones": click.option(
        "--lr-milestones",
        # Passed on as given: TrainConfig splits and checks it like the same string in a config file.
        help="Epochs at which the rate is multiplied by --lr-decay, e.g. 150,225 (PyTorch MultiStepLR's meaning). "
        "[default: 150 and 225 of 300, scaled to --epochs]",
    ),
    "lr_decay": click.option(
        "--lr-decay", type=float, help=f"Rate multiplier at each milestone. {_default('lr_decay')}"
    ),
    "lr_schedule": click.option(
        "--lr-schedule",
        type=NameChoice("lr_schedule", LR_SCHEDULES),
        help="step: the rate times --lr-decay at each milestone (the FFL recipe); cosine: annealed from "
        "--lr towards 0 over --epochs, once per epoch (PyTorch's CosineAnnealingLR), no milestones. "
        f"{_default('lr_schedule')}",
    ),
    "student_weight_decay": click.option(
        "--student-wd",
        "student_weight_decay",
        type=float,
        help=f"L2 on student weights (added to gradients). {_default('student_weight_decay')}",
    ),
    "fusion_weight_decay": click.option(
        "--fusion-wd",
        "fusion_weight_decay",
        type=float,
        help=f"L2 on the fusion path. {_default('fusion_weight_decay')}",
    ),
    "temperature": click.option("--temperature", type=float, help=f"KD temperature. {_default('temperature')}"),
    "rampup_epochs": click.option(
        "--rampup-epochs", type=float, help="Epochs of the KD weight ramp-up. [default: 80/300 of --epochs]"
    ),
    "teacher": click.option(
        "--teacher",
        help="A frozen teacher every student also distils from (Hinton KD, combinable with any --method): a run "
        "directory (its deployed student), a student directory, a zoo name or a .keras file, trained on the same "
        "dataset. [default: none]",
    ),
    "teacher_weight": click.option(
        "--teacher-weight", type=float, help=f"Weight of the teacher's KD terms. {_default('teacher_weight')}"
    ),
    "train_limit": click.option(
        "--train-limit",
        type=int,
        help="Train on the first N training examples (of those the validation split leaves) only. [default: all]",
    ),
    "selection": click.option(
        "--selection",
        type=NameChoice("selection", SELECTIONS),
        help="Split that picks the best epoch and student: validation (held out from train), or test, the papers' "
        f"protocol (for reproducing published tables; it flatters results). {_default('selection')}",
    ),
    "seed": click.option("--seed", type=int, help=f"Seed for weights, data order and augmentation. {_default('seed')}"),
    "precision": click.option(
        "--precision", type=NameChoice("precision", PRECISIONS), help=f"Compute precision. {_default('precision')}"
    ),
    "jit": click.option(
        "--jit/--no-jit",
        default=None,
        help="TensorFlow: XLA-compile the training step (slower on CPU); torch: torch.compile it. JAX always "
        "compiles it with jax.jit. [default: no]",
    ),
    "strategy": click.option(
        "--strategy",
        type=NameChoice("strategy", STRATEGIES),
        help="How to spread training: default (one device); mirrored (data parallel over all GPUs, else over "
        "--cpu-devices CPUs: tf.distribute on TensorFlow, keras.distribution.DataParallel on JAX); multiworker "
        "(several processes: TF_CONFIG on TensorFlow, jax.distributed from KERAS_DISTRIBUTION_* on JAX). "
        f"{_default('strategy')}",
    ),
    "cpu_devices": click.option(
        "--cpu-devices",
        type=int,
        help="Split the CPU into N devices, at most its cores (mirrored runs without GPUs; TensorFlow or JAX).",
    ),
    "run_dir": click.option(
        "--run-dir", help="Run directory. [default: runs/<dataset>-<backbone>-<method>-<config hash>]"
    ),
    "progress": click.option("--progress/--no-progress", default=None, help="Show progress bars. [default: yes]"),
}


def training_options(exclude: tuple[str, ...] = ()):
    """Apply the shared training options, less those named in ``exclude``."""

    def decorate(function):
        for name, option in reversed(TRAINING_OPTIONS.items()):
            if name not in exclude:
                function = option(function)
        return function

    return decorate


def _resolve(config_file, ablate, options):
    from mfef_keras.training.config import resolve_config

    if ablate:
        options["ablate"] = list(ablate)
    options["method_options"] = dict(options.get("method_options") or ()) or None
    return resolve_config(config_file, options)


@main.command()
@training_options()
def train(config_file, ablate, **options):
    """Train students together by online distillation and save the best one.

    Running the same command again resumes from the last completed epoch. The same
    command with a larger --epochs extends a finished (or stopped) run: it goes on from
    its last epoch with the schedule it had (the LR milestones and ramp-up of the shorter
    run, so the added epochs train at its last rate; a cosine run, at rate 0, is refused).
    The run directory gets the resolved config, the environment, per-epoch metrics (CSV
    and JSON), training curves (PNG), a checkpoint, every student and the best student.

    \b
    Examples:
      mfef train                                     # MFEF, 2 students, digits
      mfef train --method dml --epochs 10
      mfef train --method dml --epochs 14 --run-dir R # run R of 10 epochs, 4 more
      mfef train --config paper-cifar100-resnet32    # the FFL recipe on CIFAR-100
    """
    from mfef_keras.training.runner import train as run_training

    with user_errors(*USER_ERRORS):
        run_training(_resolve(config_file, ablate, options), echo=click.echo)


@main.command(name="eval")
@click.argument("source")
@click.option("--dataset", help="Dataset to evaluate on. [default: the one the student was trained on]")
@click.option("--data-dir", help="Where datasets live.")
@click.option("--student", type=int, help="Student index in a run directory. [default: the best student]")
@click.option(
    "--out",
    "out_dir",
    help="Where to write metrics.json and confusion_matrix.png. [default: eval/ beside SOURCE; for a zoo name, "
    "NAME-eval/ in the current directory]",
)
@click.option("--batch-size", type=int, default=100, show_default=True, help="Evaluation batch.")
@click.option("--normalize", is_flag=True, help="Draw the confusion matrix's rows as fractions of their true class.")
def evaluate(source, dataset, data_dir, student, out_dir, batch_size, normalize):
    """Top-1/top-5 accuracy and a confusion matrix of SOURCE on a test split.

    SOURCE is a run directory, a student directory (model.keras + metadata.json), a zoo
    preset name or a .keras file (--dataset is required when no metadata.json is beside it);
    or an exported ONNX model (an .onnx file or an `mfef export` folder, fp32 or int8), run
    by onnxruntime on the CPU, which gives the same figures on every run.
    """
    from mfef_keras.export.evaluation import evaluate_onnx, is_onnx_model
    from mfef_keras.training.evaluation import evaluate_student

    with user_errors(*USER_ERRORS):
        if not is_onnx_model(source):
            results = evaluate_student(
                source,
                dataset,
                data_dir,
                student,
                out_dir,
                batch_size,
                normalize=normalize,
                note=lambda message: click.echo(message, err=True),
            )
        elif student is not None:
            raise click.BadParameter(f"applies to run directories; {source} is an ONNX model.", param_hint="--student")
        else:
            results = evaluate_onnx(source, dataset, data_dir, out_dir, batch_size, normalize=normalize)
            click.echo(f"{results['model']} on {results['runtime']}")
    top_k = next(k for k in results if k.startswith("top") and k != "top1")
    click.echo(
        f"{results['dataset']} test ({results['examples']} images): top-1 {100 * results['top1']:.2f}%  "
        f"{top_k} {100 * results[top_k]:.2f}%"
    )
    click.echo(f"Wrote {results['out_dir']}/metrics.json and confusion_matrix.png")


@main.command()
# Method options are one method's: a study's methods take their defaults.
@training_options(exclude=("method", "method_options", "seed", "run_dir", "ablate"))
@click.option(
    "--methods", default="independent,dml,ffl,mfef", show_default=True, help="Comma-separated methods to compare."
)
@click.option(
    "--seeds", "num_seeds", type=int, default=3, show_default=True, help="Number of seeds every method runs with."
)
@click.option(
    "--first-seed",
    type=int,
    default=0,
    show_default=True,
    help="The seeds are K..K+N-1 (N: --seeds). Fresh seeds for a confirmatory study of cells chosen on others.",
)
@click.option("--ablation", is_flag=True, help="Add MFEF without multi-scale, without attention, and without both.")
@click.option(
    "--cohort",
    "cohorts",
    multiple=True,
    help="Backbones of a cohort, comma-separated (resnet32,resnet8); repeatable. Every method but independent "
    "trains each cohort, and independent trains --backbone (the student the cohorts deploy) alone.",
)
@click.option("--force", is_flag=True, help="Retrain the runs whose stored configuration differs from the study's.")
@click.option(
    "--no-train",
    is_flag=True,
    help="Train nothing: write the table, chart and study.json of the runs finished so far (the same seeds paired).",
)
@click.option("--out", "out_dir", help="Study directory. [default: studies/<dataset>-<backbone>]")
def study(config_file, methods, num_seeds, first_seed, ablation, cohorts, force, no_train, out_dir, **options):
    """Compare methods (and MFEF ablations) over several seeds: a markdown table and a dot plot with 95 % intervals.

    Every method runs with the same seeds, so the same data order (and, within a cohort, the same initial
    students); runs go seed by seed. Interrupted studies resume: finished runs are skipped, unfinished ones
    continue, and a run trained with other settings is refused (--force trains it again).

    \b
    Examples:
      mfef study --dataset digits --backbone resnet8 --train-limit 300 --seeds 3 --ablation
      mfef study --dataset fashion_mnist --backbone resnet8 --cohort resnet32,resnet8 --cohort resnet8,resnet8 \\
        --methods independent,dml,mfef,kdcl-minlogit,one --seeds 5 --epochs 15
      mfef study --dataset fashion_mnist --backbone resnet8 --cohort resnet20,resnet8 --methods independent,mfef \\
        --seeds 10 --first-seed 5 --epochs 15   # seeds 5..14, none of the study above
    """
    from mfef_keras.training.study import run_study

    if num_seeds < 1:
        raise click.BadParameter(f"must be >= 1, got {num_seeds}", param_hint="--seeds")
    if first_seed < 0:
        raise click.BadParameter(f"must be >= 0, got {first_seed}", param_hint="--first-seed")
    with user_errors(*USER_ERRORS):
        base = _resolve(config_file, (), options)
        out = out_dir or f"studies/{base.dataset.replace('folder:', 'folder-').replace('/', '_')}-{base.backbone}"
        names = [m.strip() for m in methods.split(",") if m.strip()]
        result = run_study(
            base,
            names,
            list(range(first_seed, first_seed + num_seeds)),
            out,
            ablation=ablation,
            echo=click.echo,
            cohorts=cohorts,
            force=force,
            train=not no_train,
        )
    figures = ", ".join(f"{out}/{os.path.basename(figure)}" for figure in result["figures"])
    click.echo(f"Wrote {out}/table.md, {figures} and {out}/study.json")


@main.command(name="list-methods")
def list_methods_command():
    """List the online-distillation methods, each with a one-line description and its own options.

    Under each method: its options (--method-option NAME=VALUE) with their defaults, and whether its run keeps
    a fused classifier (mfef export RUN --model fused).
    """
    from mfef_keras.distill.methods import method_class, method_descriptions

    descriptions = method_descriptions()
    width = max(len(name) for name in descriptions)
    for name, description in descriptions.items():
        click.echo(f"{name:<{width}}  {description}")
        method = method_class(name)
        for option, spec in method.options.items():
            click.echo(f"{'':<{width}}    --method-option {option}={spec.default}  {spec.help}")
        if method.has_fused_classifier():
            click.echo(f"{'':<{width}}    fused classifier: mfef export RUN --model fused")


@main.command(name="list-backbones")
@click.argument("pattern", default="*")
def list_backbones_command(pattern):
    """List the student backbones matching PATTERN (shell wildcards, e.g. 'wrn*')."""
    for name in BACKBONES.list(pattern):
        click.echo(name)


def _register_plugins() -> None:
    from mfef_keras.export.commands import export_command, predict_command, serve_command
    from mfef_keras.zoo.commands import zoo_group

    main.add_command(zoo_group)
    main.add_command(export_command)
    main.add_command(predict_command)
    main.add_command(serve_command)


_register_plugins()

if __name__ == "__main__":
    main()
