"""The training configuration: defaults, config files (YAML or JSON) and command-line overrides."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path

from mfef_keras import recipe
from mfef_keras._names import unknown_name_error
from mfef_keras._regular_files import read_regular
from mfef_keras.choices import ABLATIONS, BACKBONES, TOPOLOGIES, cohort_names
from mfef_keras.typed_values import convert_value

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("default", "mirrored", "multiworker")
# The split that picks the best epoch and student: the held-out validation split, or the test split as the
# papers did (kept to reproduce their tables; it flatters every number).
SELECTIONS = ("validation", "test")
LR_SCHEDULES = ("step", "cosine")
CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
# Keys that say where and how a run executes, not what it computes: changing them does not
# make a run directory belong to another experiment.
EXECUTION_KEYS = ("run_dir", "data_dir", "strategy", "cpu_devices", "progress")


@dataclass
class TrainConfig:
    """Everything a training run needs; the defaults train MFEF on the embedded digits data.

    Args:
        dataset: dataset name (see `mfef_keras.data.list_datasets`) or ``folder:PATH``.
        data_dir: where datasets live (default ``$MFEF_DATA_DIR`` or ``~/.mfef/data``).
        backbone: student backbone (see `mfef_keras.models.list_backbones`), or one per student separated by
            commas (a mixed cohort such as ``resnet32,resnet8``; a list in YAML), which sets ``num_students``.
        base_width: width of the backbone's first stage (family default if None).
        method: a registered method (`mfef list-methods`); ``independent`` is plain training.
        num_students: students trained together (of a single ``backbone``).
        topology: ``independent`` or ``shared_trunk``.
        ablate: MFEF components to switch off.
        method_options: the method's own hyper-parameters by name (`mfef list-methods` shows each method's, with
            its default), e.g. ``{"ema_decay": 0.99}`` for PCL; kept with the declared types, those equal to the
            default left out, so that spelling a default does not change the experiment.
        epochs: training epochs.
        batch_size: global training batch.
        eval_batch_size: evaluation batch.
        learning_rate: initial SGD rate.
        lr_milestones: epochs (from 0) at whose start the rate is multiplied by ``lr_decay``;
            None scales the recipe's 150 and 225 of 300 epochs to ``epochs``.
        lr_decay: step-decay factor.
        lr_schedule: ``step`` (decay at the milestones) or ``cosine`` (annealed to 0 over ``epochs``, PyTorch's
            per-epoch CosineAnnealingLR; milestones and decay unused).
        student_weight_decay: L2 on student weights (added to the gradient).
        fusion_weight_decay: L2 on fusion-path weights.
        temperature: KD temperature.
        rampup_epochs: ramp-up length of the KD weight; None scales FFL's 80-of-300 to ``epochs``.
        teacher: a frozen teacher every student also distils from (Hinton KD), beside the method: a run
            directory (its deployed student), a student directory, a zoo name or a ``.keras`` file, trained on the
            same dataset.
        teacher_weight: the weight of the teacher's KD terms.
        schedule_epochs: the run length the default LR milestones, the default ramp-up and a cosine schedule are
            scaled to; None: ``epochs``. A run extended to more epochs keeps those of the run it extends.
        train_limit: use only the first N training examples (a reduced split) of those the validation
            hold-out leaves.
        selection: ``validation`` selects the best epoch and student on the validation split; ``test`` on the
            test split, the papers' protocol (for reproducing their tables only).
        seed: seed for weights, data order and augmentation.
        precision: ``float32``, ``mixed_float16`` or ``mixed_bfloat16``.
        jit: compile the training step: XLA on TensorFlow, torch.compile on torch (JAX always uses jax.jit).
        strategy: ``default``, ``mirrored`` (tf.distribute on TensorFlow, `keras.distribution.DataParallel` on
            JAX) or ``multiworker`` (TensorFlow).
        cpu_devices: split the CPU into this many devices (for mirrored runs without GPUs).
        run_dir: the run directory (derived from the config when None).
        progress: show progress bars.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    backbone: str = "resnet8"
    base_width: int | None = None
    method: str = "mfef"
    num_students: int = 2
    topology: str = "independent"
    ablate: list[str] = field(default_factory=list)
    method_options: dict = field(default_factory=dict)
    epochs: int = 20
    batch_size: int = 64
    eval_batch_size: int = 100
    learning_rate: float = recipe.LEARNING_RATE
    lr_milestones: list[int] | None = None
    lr_decay: float = recipe.LR_DECAY
    lr_schedule: str = "step"
    student_weight_decay: float = recipe.STUDENT_WEIGHT_DECAY
    fusion_weight_decay: float = recipe.FUSION_WEIGHT_DECAY
    temperature: float = recipe.TEMPERATURE
    rampup_epochs: float | None = None
    teacher: str | None = None
    teacher_weight: float = 1.0
    schedule_epochs: int | None = None
    train_limit: int | None = None
    selection: str = "validation"
    seed: int = 0
    precision: str = "float32"
    jit: bool = False
    strategy: str = "default"
    cpu_devices: int | None = None
    run_dir: str | None = None
    progress: bool = True

    def __post_init__(self):
        # One string names the cohort in every source (YAML list, command line, API), so a single backbone
        # keeps the experiment_hash it always had.
        if isinstance(self.backbone, list | tuple):
            self.backbone = ",".join(str(name) for name in self.backbone)
        if isinstance(self.backbone, str) and "," in self.backbone:
            self.num_students = len(cohort_names(self.backbone))
        # Every value gets its declared type, so that 1e-2 from YAML and 0.01 from the command line
        # are the same float (and the same experiment_hash).
        for name, annotation in typing.get_type_hints(TrainConfig).items():
            if annotation is not dict:
                setattr(self, name, convert_value(name, getattr(self, name), annotation))
        self.method_options = self._declared_options()
        self.validate()

    def _declared_options(self) -> dict:
        """``method_options`` as the method declares them (ValueError for another), less those at their default."""
        from mfef_keras.distill.methods import method_class

        method = method_class(self.method)
        defaults = method.option_defaults()
        checked = method.checked_options(self.method_options)
        return {name: value for name, value in sorted(checked.items()) if value != defaults[name]}

    def validate(self) -> None:
        """Raise ValueError naming the first bad value and what is allowed (values already have their types)."""
        from mfef_keras.distill.methods import method_class

        method = method_class(self.method)
        if self.topology not in TOPOLOGIES:
            raise unknown_name_error("topology", self.topology, TOPOLOGIES)
        for backbone in dict.fromkeys(self.cohort):
            BACKBONES.get(backbone)
        if self.topology == "shared_trunk" and len(set(self.cohort)) > 1:
            raise ValueError(
                f"topology shared_trunk shares one backbone's trunk; the cohort {self.backbone} mixes backbones."
            )
        if self.precision not in PRECISIONS:
            raise unknown_name_error("precision", self.precision, PRECISIONS)
        if self.strategy not in STRATEGIES:
            raise unknown_name_error("strategy", self.strategy, STRATEGIES)
        if self.lr_schedule not in LR_SCHEDULES:
            raise unknown_name_error("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if self.lr_schedule == "cosine" and self.lr_milestones is not None:
            raise ValueError(
                f"lr_milestones {self.lr_milestones} are step-decay epochs; lr_schedule cosine anneals over the run "
                "without them."
            )
        if self.selection not in SELECTIONS:
            raise unknown_name_error("selection", self.selection, SELECTIONS)
        for name in self.ablate:
            if name not in ABLATIONS:
                raise unknown_name_error("ablation", name, ABLATIONS)
        if self.ablate and not method.ablations:
            raise ValueError(f"ablate {self.ablate} does not apply to method {self.method!r} (MFEF's parts only).")
        positive = {"epochs": self.epochs, "batch_size": self.batch_size, "eval_batch_size": self.eval_batch_size}
        positive["num_students"] = self.num_students
        for key, value in positive.items():
            if value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}.")
        # One student is plain training, the baseline; the distillation methods need peers to learn from.
        if self.num_students < method.min_students:
            raise ValueError(
                f"num_students must be >= {method.min_students} for online distillation with {self.method}, got "
                f"{self.num_students} (one student trains alone only with --method independent)."
            )
        ranges = {
            "learning_rate": (self.learning_rate > 0, "> 0"),
            # A decay above 1 grows the rate at every milestone, <= 0 trains by gradient ascent or not at all.
            "lr_decay": (0 < self.lr_decay <= 1, "> 0 and <= 1"),
            "student_weight_decay": (self.student_weight_decay >= 0, ">= 0"),
            "fusion_weight_decay": (self.fusion_weight_decay >= 0, ">= 0"),
            "temperature": (self.temperature > 0, "> 0"),
            "teacher_weight": (self.teacher_weight >= 0, ">= 0"),
            "schedule_epochs": (
                self.schedule_epochs is None or 1 <= self.schedule_epochs <= self.epochs,
                f"null or an integer from 1 to epochs ({self.epochs})",
            ),
            "rampup_epochs": (self.rampup_epochs is None or self.rampup_epochs >= 0, ">= 0 or null"),
            "base_width": (self.base_width is None or self.base_width >= 1, "a positive integer or null"),
            "seed": (self.seed >= 0, ">= 0"),
            "train_limit": (self.train_limit is None or self.train_limit >= 1, "a positive integer or null"),
            "cpu_devices": (self.cpu_devices is None or self.cpu_devices >= 1, "a positive integer or null"),
        }
        for key, (ok, allowed) in ranges.items():
            if not ok:
                raise ValueError(f"{key} must be {allowed}, got {getattr(self, key)!r}.")
        milestones = self.lr_milestones
        if milestones is not None and (
            milestones != sorted(set(milestones)) or any(not 0 < m < self.epochs for m in milestones)
        ):
            raise ValueError(
                f"lr_milestones must be distinct epochs in ascending order, each > 0 and < epochs "
                f"({self.epochs}), got {milestones!r}."
            )

    @property
    def cohort(self) -> list[str]:
        """The backbone of each student, in order (``num_students`` copies of a single backbone)."""
        return cohort_names(self.backbone, None if "," in self.backbone else self.num_students)

    @property
    def schedule_span(self) -> int:
        """The epochs the default schedules are scaled to: ``schedule_epochs``, or ``epochs``."""
        return self.schedule_epochs or self.epochs

    @property
    def effective_rampup_epochs(self) -> float:
        return self.rampup_epochs if self.rampup_epochs is not None else recipe.scaled_rampup_epochs(self.schedule_span)

    @property
    def effective_lr_milestones(self) -> list[int]:
        """The milestones in epochs: the given ones, or the recipe's scaled to `schedule_span`."""
        if self.lr_milestones is not None:
            return list(self.lr_milestones)
        return recipe.scaled_lr_milestones(self.schedule_span)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def experiment_hash(self) -> str:
        """A hash of what the run computes (not of where or how it executes)."""
        data = {k: v for k, v in self.to_dict().items() if k not in EXECUTION_KEYS}
        # Runs from before methods had options hashed no such key: a method at its defaults keeps their hash.
        if not data["method_options"]:
            del data["method_options"]
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def default_run_dir(self) -> str:
        name = self.dataset.replace("folder:", "folder-").replace("/", "_").strip("_")
        cohort = self.backbone.replace(",", "+")
        return str(Path("runs") / f"{name}-{cohort}-{self.method}-{self.experiment_hash()[:8]}")


def shipped_configs() -> list[str]:
    """Names of the config files that ship with the package (``mfef train --config NAME``)."""
    return sorted(p.stem for p in CONFIGS_DIR.glob("*.yaml"))


def read_config_file(path: str) -> dict:
    """Read a YAML or JSON config (a path, or the name of a shipped config) into a dict, checking its keys."""
    import yaml

    file = Path(path)
    if file.is_dir():
        raise ValueError(
            f"Config file {path!r} is a directory; give a YAML or JSON file, or a shipped config: "
            f"{', '.join(shipped_configs())}."
        )
    if not file.exists():
        if path in shipped_configs():
            file = CONFIGS_DIR / f"{path}.yaml"
        else:
            raise FileNotFoundError(
                f"Config file {path!r} not found (shipped configs: {', '.join(shipped_configs())})."
            )
    try:
        text = read_regular(file, "read as a config").decode()
    except UnicodeDecodeError as error:
        raise ValueError(f"Config file {file} is not UTF-8 text ({error}); give a YAML or JSON file.") from None
    try:
        data = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"Cannot parse config file {file}, {_parse_problem(error, text)}.") from None
    data = data or {}
    if not isinstance(data, dict):
        raise ValueError(f"Config file {file} must hold a mapping of keys to values, got {type(data).__name__}.")
    known = [f.name for f in dataclasses.fields(TrainConfig)]
    for key in data:
        if key not in known:
            error = unknown_name_error("config key", key, known)
            raise ValueError(f"{error} (in {file})")
    return data


def _parse_problem(error: Exception, text: str) -> str:
    """Where and why ``text`` failed to parse, on one line: ``line L, column C: problem``.

    PyYAML's own message spans several lines (the offending line, a caret) and calls the text "<unicode
    string>", which would only puzzle whoever wrote the file.
    """
    import yaml

    if isinstance(error, json.JSONDecodeError):
        return f"line {error.lineno}, column {error.colno}: {error.msg}"
    if isinstance(error, yaml.reader.ReaderError):
        # It gives only the character's offset in the text.
        before = text[: error.position]
        line, column = before.count("\n") + 1, len(before) - before.rfind("\n")
        return f"line {line}, column {column}: character U+{error.character:04X}: {error.reason}"
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    if mark is None:
        return " ".join(str(error).split())
    problem = getattr(error, "problem", None) or "invalid YAML"
    context = f" ({error.context})" if getattr(error, "context", None) else ""
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}{context}"


def resolve_config(config_file: str | None = None, overrides: dict | None = None) -> TrainConfig:
    """Defaults, then the config file, then command-line ``overrides`` (None values are ignored)."""
    values = read_config_file(config_file) if config_file else {}
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    if isinstance(values.get("method_options"), dict) and "method_options" in overrides:
        # An option on the command line overrides that option of the file, not the file's others.
        overrides["method_options"] = {**values["method_options"], **overrides["method_options"]}
    values.update(overrides)
    if "backbone" in values and "num_students" in values:
        # Only here is it known that num_students was given, not defaulted: it must agree with the cohort.
        cohort_names(values["backbone"], values["num_students"])
    return TrainConfig(**values)
