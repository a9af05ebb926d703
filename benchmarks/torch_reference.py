"""A plain PyTorch eager implementation of the distiller's training step, for benchmarks only.

It mirrors, layer for layer, what `mfef_keras` builds with ``build_students(backbone, classes, n, topology)``
and ``OnlineDistiller(students, method)`` for CIFAR ResNets and the ``"mfef"`` / ``"ffl"`` methods: the
students, the fusion path (per-student `MultiScaleBlock` and `DualAttention`, then `FusionHead`), FFL's
objective (spec section 3) and the recipe's two SGD optimisers (momentum 0.9, Nesterov, L2 added to the
gradient). Every weight-carrying module records the Keras variable path it corresponds to, so the Keras
weights can be copied in (`load_keras_weights`) and the results compared (`compare_one_step`).

torch is not a dependency of the package: only the benchmark and its test import this module. Nothing here
imports TensorFlow except `compare_one_step` and `compare_forward`, which run Keras too; the benchmark replays a
Keras run recorded in another process with `compare_steps` instead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from keras_steps import KerasSteps, record_keras_steps
from torch import nn

# Keras's BatchNormalization(momentum=0.9, epsilon=1e-5) in PyTorch's convention.
BN_MOMENTUM = 0.1
BN_EPSILON = 1e-5


def _keras(module: nn.Module, path: str) -> nn.Module:
    """Tag ``module`` with the Keras variable-path prefix of its weights."""
    module.keras_path = path
    return module


def _conv(cin: int, cout: int, kernel: int, path: str, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    # padding=k//2 on every side: the official FFL code's convolutions, and the package's.
    return _keras(nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False), path)


def _bn(channels: int, path: str) -> nn.BatchNorm2d:
    return _keras(nn.BatchNorm2d(channels, eps=BN_EPSILON, momentum=BN_MOMENTUM), path)


def _dense(cin: int, cout: int, path: str, bias: bool = True) -> nn.Linear:
    return _keras(nn.Linear(cin, cout, bias=bias), path)


# ---------------------------------------------------------------- backbone
class BasicBlock(nn.Module):
    """CIFAR ResNet basic block with a 1x1 conv + BN projection shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int, name: str):
        super().__init__()
        self.conv1 = _conv(cin, cout, 3, f"{name}_conv1", stride)
        self.bn1 = _bn(cout, f"{name}_bn1")
        self.conv2 = _conv(cout, cout, 3, f"{name}_conv2")
        self.bn2 = _bn(cout, f"{name}_bn2")
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(_conv(cin, cout, 1, f"{name}_down_conv", stride), _bn(cout, f"{name}_down_bn"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.down is None else self.down(x)))


def resnet_stem(width: int, prefix: str) -> nn.Sequential:
    return nn.Sequential(_conv(3, width, 3, f"{prefix}stem_conv"), _bn(width, f"{prefix}stem_bn"), nn.ReLU())


def resnet_stage(index: int, blocks: int, base_width: int, prefix: str) -> nn.Sequential:
    """Stage ``index`` (0-based) of a CIFAR ResNet, named as `mfef_keras.models.resnet_cifar` names it."""
    cout = base_width * 2**index
    cin = base_width * 2 ** max(index - 1, 0)
    layers = []
    for b in range(blocks):
        stride = 2 if index > 0 and b == 0 else 1
        layers.append(BasicBlock(cin if b == 0 else cout, cout, stride, f"{prefix}stage{index + 1}_block{b + 1}"))
    return nn.Sequential(*layers)


# ------------------------------------------------------------- fusion path
class MultiScaleBlock(nn.Module):
    """`mfef_keras.layers.MultiScaleBlock` with its defaults (input projection, output = input channels)."""

    def __init__(self, channels: int, splits: int, name: str):
        super().__init__()
        width = channels // splits
        self.splits = splits
        self.proj_conv = _conv(channels, channels, 1, f"{name}/proj_conv")
        self.proj_bn = _bn(channels, f"{name}/proj_bn")
        self.group_convs = nn.ModuleList(_conv(width, width, 3, f"{name}/group{k}_conv") for k in range(1, splits))
        self.group_bns = nn.ModuleList(_bn(width, f"{name}/group{k}_bn") for k in range(1, splits))
        self.fuse_conv = _conv(channels, channels, 1, f"{name}/fuse_conv")
        self.fuse_bn = _bn(channels, f"{name}/fuse_bn")

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.proj_bn(self.proj_conv(inputs)))
        groups = torch.chunk(x, self.splits, dim=1)
        outputs = [groups[0]]
        previous = None
        for group, conv, bn in zip(groups[1:], self.group_convs, self.group_bns):
            y = group if previous is None else group + previous
            previous = F.relu(bn(conv(y)))
            outputs.append(previous)
        return self.fuse_bn(self.fuse_conv(torch.cat(outputs, dim=1))) + inputs


class DualAttention(nn.Module):
    """`mfef_keras.layers.DualAttention`: CBAM channel attention, then spatial attention."""

    def __init__(self, channels: int, reduction: int, kernel_size: int, name: str):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.mlp_hidden = _dense(channels, hidden, f"{name}/channel/mlp_hidden", bias=False)
        self.mlp_output = _dense(hidden, channels, f"{name}/channel/mlp_output", bias=False)
        self.spatial = _conv(2, 1, kernel_size, f"{name}/spatial/conv")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg, mx = x.mean(dim=(2, 3)), x.amax(dim=(2, 3))
        mlp = self.mlp_output(F.relu(self.mlp_hidden(avg))) + self.mlp_output(F.relu(self.mlp_hidden(mx)))
        x = x * torch.sigmoid(mlp)[:, :, None, None]
        stats = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(stats))


class FusionHead(nn.Module):
    """FFL's fusion module: depthwise 3x3 -> BN -> ReLU -> 1x1 -> BN -> ReLU -> GAP -> linear."""

    def __init__(self, channels: int, num_inputs: int, num_classes: int, name: str = "fusion_head"):
        super().__init__()
        total = channels * num_inputs
        self.depthwise = _conv(total, total, 3, f"{name}/depthwise", groups=total)
        self.depthwise_bn = _bn(total, f"{name}/depthwise_bn")
        self.pointwise = _conv(total, channels, 1, f"{name}/pointwise")
        self.pointwise_bn = _bn(channels, f"{name}/pointwise_bn")
        self.classifier = _dense(channels, num_classes, f"{name}/classifier")

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        x = F.relu(self.depthwise_bn(self.depthwise(torch.cat(list(maps), dim=1))))
        x = F.relu(self.pointwise_bn(self.pointwise(x)))
        return self.classifier(x.mean(dim=(2, 3)))


class FusionModule(nn.Module):
    """Per-student multi-scale block and dual attention (``"mfef"``; none for ``"ffl"``), then the head."""

    def __init__(
        self,
        channels: int,
        num_students: int,
        num_classes: int,
        mfef: bool,
        splits: int = 4,
        reduction: int = 8,
        kernel_size: int = 7,
    ):
        super().__init__()
        self.paths = nn.ModuleList(
            nn.Sequential(
                MultiScaleBlock(channels, splits, f"s{i}_multi_scale"),
                DualAttention(channels, reduction, kernel_size, f"s{i}_dual_attention"),
            )
            if mfef
            else nn.Identity()
            for i in range(num_students)
        )
        self.head = FusionHead(channels, num_students, num_classes)

    def forward(self, features: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.head([path(f) for path, f in zip(self.paths, features)])


# --------------------------------------------------------------- distiller
class TorchDistiller(nn.Module):
    """Students (independent or with a shared trunk) and the fusion path; returns student and fused logits.

    Args:
        depth: CIFAR ResNet depth (6n + 2).
        num_classes: number of logits.
        num_students: how many students.
        topology: ``"independent"`` or ``"shared_trunk"`` (stem and the first two stages shared).
        method: ``"mfef"`` or ``"ffl"``.
        base_width: channels of the first stage.
    """

    def __init__(
        self,
        depth: int = 32,
        num_classes: int = 100,
        num_students: int = 2,
        topology: str = "independent",
        method: str = "mfef",
        base_width: int = 16,
    ):
        super().__init__()
        if method not in ("mfef", "ffl"):
            raise ValueError(f"The PyTorch reference implements methods 'mfef' and 'ffl', not {method!r}.")
        if topology not in ("independent", "shared_trunk"):
            raise ValueError(f"Unknown topology {topology!r}.")
        blocks = (depth - 2) // 6
        self.trunk = None
        if topology == "shared_trunk":
            self.trunk = nn.Sequential(
                resnet_stem(base_width, "trunk_"), *(resnet_stage(k, blocks, base_width, "trunk_") for k in range(2))
            )
        stages = (2,) if self.trunk is not None else (0, 1, 2)
        self.branches = nn.ModuleList(
            nn.Sequential(
                *([] if self.trunk is not None else [resnet_stem(base_width, f"s{i}_")]),
                *(resnet_stage(k, blocks, base_width, f"s{i}_") for k in stages),
            )
            for i in range(num_students)
        )
        channels = base_width * 4
        self.heads = nn.ModuleList(_dense(channels, num_classes, f"s{i}_logits") for i in range(num_students))
        self.fusion = FusionModule(channels, num_students, num_classes, mfef=method == "mfef")

    def student_parameters(self) -> list[nn.Parameter]:
        modules = [self.branches, self.heads] + ([self.trunk] if self.trunk is not None else [])
        return [p for m in modules for p in m.parameters()]

    def forward(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        x = images if self.trunk is None else self.trunk(images)
        features = [branch(x) for branch in self.branches]
        logits = [head(f.mean(dim=(2, 3))) for head, f in zip(self.heads, features)]
        return logits, self.fusion(features)


# -------------------------------------------------------------------- loss
def rampup_weight(epoch: int, rampup_epochs: float = 80.0) -> float:
    """FFL's sigmoid ramp-up ``exp(-5 (1 - min(epoch, R) / R)^2)``; 1 when ``R`` is 0."""
    if rampup_epochs <= 0:
        return 1.0
    return math.exp(-5.0 * (1.0 - min(epoch, rampup_epochs) / rampup_epochs) ** 2)


def kd_loss(teacher: torch.Tensor, student: torch.Tensor, temperature: float = 3.0, eps: float = 1e-7) -> torch.Tensor:
    """``T^2 * mean_batch sum_c q (log q - log_softmax(student / T))``, ``q = softmax(teacher / T) + eps`` detached."""
    target = F.softmax(teacher.detach() / temperature, dim=1) + eps
    log_student = F.log_softmax(student / temperature, dim=1)
    return temperature**2 * (target * (target.log() - log_student)).sum(dim=1).mean()


def loss_terms(
    logits: Sequence[torch.Tensor], fused: torch.Tensor, labels: torch.Tensor, weight: float, temperature: float = 3.0
) -> dict[str, torch.Tensor]:
    """FFL's objective term by term, named as `OnlineDistiller.loss_terms` names them; the total is ``"loss"``."""
    terms = {f"ce_s{i}": F.cross_entropy(z, labels) for i, z in enumerate(logits)}
    terms["ce_fused"] = F.cross_entropy(fused, labels)
    for i, z in enumerate(logits):
        terms[f"kd_s{i}"] = kd_loss(fused, z, temperature)
    terms["kd_fused"] = kd_loss(torch.stack(list(logits)).mean(dim=0), fused, temperature)
    distill = sum(terms[f"kd_s{i}"] for i in range(len(logits))) + terms["kd_fused"]
    terms["loss"] = sum(terms[f"ce_s{i}"] for i in range(len(logits))) + terms["ce_fused"] + weight * distill
    return terms


# ---------------------------------------------------------------- training
@dataclass
class Trainer:
    """The model, its two SGD optimisers (the recipe) and one training step with running metrics.

    Args:
        model: the distiller.
        learning_rate: initial SGD learning rate.
        student_weight_decay: L2 added to the students' gradients.
        fusion_weight_decay: L2 added to the fusion path's gradients.
        steps_per_epoch: turns the step counter into the epoch of the ramp-up and of the rate's milestones.
        rampup_epochs: epochs of the KD weight's ramp-up.
        lr_milestones: epochs at which `torch.optim.lr_scheduler.MultiStepLR` multiplies the rate by 0.1.
        autocast: a factory of the mixed-precision context the forward pass runs in (``None``: fp32).
    """

    model: TorchDistiller
    learning_rate: float = 0.1
    student_weight_decay: float = 1e-4
    fusion_weight_decay: float = 1e-5
    steps_per_epoch: int = 391
    rampup_epochs: float = 80.0
    autocast: Callable[[], object] | None = None
    lr_milestones: Sequence[int] = (150, 225)
    iterations: int = 0
    optimizers: list[torch.optim.Optimizer] = field(init=False)
    schedulers: list[torch.optim.lr_scheduler.MultiStepLR] = field(init=False)
    # Running totals of the loss terms and accuracies: the per-step work of Keras's metric trackers.
    sums: dict[str, torch.Tensor] = field(init=False, default_factory=dict)

    def __post_init__(self):
        sgd = dict(lr=self.learning_rate, momentum=0.9, nesterov=True)
        self.optimizers = [
            torch.optim.SGD(self.model.student_parameters(), weight_decay=self.student_weight_decay, **sgd),
            torch.optim.SGD(self.model.fusion.parameters(), weight_decay=self.fusion_weight_decay, **sgd),
        ]
        self.schedulers = [
            torch.optim.lr_scheduler.MultiStepLR(optimizer, list(self.lr_milestones), gamma=0.1)
            for optimizer in self.optimizers
        ]

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        """One training step; returns the loss terms (detached) and the KD weight (``"kd_weight"``) it used."""
        weight = rampup_weight(self.iterations // self.steps_per_epoch, self.rampup_epochs)
        if self.autocast is None:
            logits, fused = self.model(images)
        else:
            with self.autocast():
                logits, fused = self.model(images)
            logits, fused = [z.float() for z in logits], fused.float()
        terms = loss_terms(logits, fused, labels, weight)
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        for optimizer in self.optimizers:
            optimizer.step()
        self.iterations += 1
        if self.iterations % self.steps_per_epoch == 0:
            for scheduler in self.schedulers:
                scheduler.step()
        with torch.no_grad():
            # What the Keras step tracks too: the loss terms and the accuracy of each head.
            heads = {f"acc_s{i}": z for i, z in enumerate(logits)}
            heads["acc_fused"] = fused
            heads["acc_ensemble"] = torch.stack([F.softmax(z, dim=1) for z in logits]).mean(dim=0)
            values = {name: t.detach() for name, t in terms.items()}
            values.update({name: (z.argmax(dim=1) == labels).float().mean() for name, z in heads.items()})
            for name, value in values.items():
                self.sums[name] = self.sums.get(name, 0.0) + value
        values["kd_weight"] = torch.tensor(weight)
        return {name: values[name] for name in [*terms, "kd_weight"]}


# ------------------------------------------------- Keras weights <-> torch
def _tagged(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(m.keras_path, m) for m in model.modules() if hasattr(m, "keras_path")]


Layout = Callable[[np.ndarray], np.ndarray]


def _swap_depthwise(kernel: np.ndarray) -> np.ndarray:
    return kernel.transpose(2, 3, 0, 1)


def _pairs(module: nn.Module) -> list[tuple[str, torch.Tensor, Layout, Layout]]:
    """(Keras variable name, torch tensor, Keras -> torch layout, torch -> Keras layout) for ``module``'s weights."""
    same = np.asarray
    if isinstance(module, nn.BatchNorm2d):
        return [
            ("gamma", module.weight, same, same),
            ("beta", module.bias, same, same),
            ("moving_mean", module.running_mean, same, same),
            ("moving_variance", module.running_var, same, same),
        ]
    if isinstance(module, nn.Conv2d):
        if module.groups > 1:  # depthwise: Keras (kh, kw, C, 1) <-> PyTorch (C, 1, kh, kw), its own inverse
            return [("kernel", module.weight, _swap_depthwise, _swap_depthwise)]
        # Keras (kh, kw, in, out) <-> PyTorch (out, in, kh, kw)
        return [("kernel", module.weight, lambda k: k.transpose(3, 2, 0, 1), lambda k: k.transpose(2, 3, 1, 0))]
    if isinstance(module, nn.Linear):  # Keras (in, out) <-> PyTorch (out, in)
        pairs = [("kernel", module.weight, np.transpose, np.transpose)]
        return pairs + ([("bias", module.bias, same, same)] if module.bias is not None else [])
    raise TypeError(f"No Keras mapping for {type(module).__name__}.")


def load_keras_weights(model: nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Copy Keras weights (``{variable.path: value}``) into ``model``; every torch weight must be covered."""
    with torch.no_grad():
        for path, module in _tagged(model):
            for name, tensor, to_torch, _ in _pairs(module):
                value = np.ascontiguousarray(to_torch(np.asarray(arrays[f"{path}/{name}"])))
                if value.shape != tuple(tensor.shape):
                    raise ValueError(f"{path}/{name}: Keras {value.shape} vs torch {tuple(tensor.shape)}.")
                tensor.copy_(torch.from_numpy(value))


def torch_weights(model: nn.Module) -> dict[str, np.ndarray]:
    """``model``'s weights in Keras layout, keyed by Keras variable path (the inverse of `load_keras_weights`)."""
    return {
        f"{path}/{name}": np.array(to_keras(tensor.detach().cpu().numpy()))
        for path, module in _tagged(model)
        for name, tensor, _, to_keras in _pairs(module)
    }


# ------------------------------------------------------------- comparison
def _update_diff(
    after: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    start: Mapping[str, np.ndarray],
    paths: Sequence[str],
) -> tuple[float, str, float]:
    """``|Δ - Δ_ref| / |Δ_ref|`` of the updates since ``start`` over all ``paths``, and the worst single tensor."""
    num = den = 0.0
    worst, worst_diff = "", 0.0
    for path in paths:
        delta, ref = after[path] - start[path], reference[path] - start[path]
        err, norm = float(np.sum((delta - ref) ** 2)), float(np.sum(ref**2))
        num, den = num + err, den + norm
        if math.sqrt(err / max(norm, 1e-30)) > worst_diff:
            worst, worst_diff = path, math.sqrt(err / max(norm, 1e-30))
    return math.sqrt(num / max(den, 1e-30)), worst, worst_diff


@dataclass
class StepComparison:
    """Keras vs PyTorch after one more training step on the same batch, both from the same initial weights.

    Update differences are ``|Δw_a - Δw_b| / |Δw_b|`` over every trainable weight, Δw since the start.
    ``fp64_*`` compare with the PyTorch model run in float64 (``None`` without it): the fp32 rounding floor.
    """

    terms: dict[str, tuple[float, float]]
    max_term_rel_diff: float
    update_rel_diff: float
    worst_update: str
    worst_update_rel_diff: float
    moving_mean_max_abs_diff: float
    moving_variance_max_rel_diff: float
    keras_vs_fp64: float | None = None
    torch_vs_fp64: float | None = None


@dataclass
class Comparison:
    """`compare_one_step`'s result: one `StepComparison` per step."""

    steps: list[StepComparison]

    @property
    def first_step_term_rel_diff(self) -> float:
        """Largest relative difference of a loss term computed from identical weights (step 1)."""
        return self.steps[0].max_term_rel_diff

    @property
    def max_term_rel_diff(self) -> float:
        return max(s.max_term_rel_diff for s in self.steps)

    @property
    def max_update_rel_diff(self) -> float:
        return max(s.update_rel_diff for s in self.steps)

    def lines(self) -> list[str]:
        out = []
        for k, s in enumerate(self.steps, start=1):
            terms = ", ".join(f"{n} {a:.6g}/{b:.6g}" for n, (a, b) in s.terms.items())
            out.append(f"step {k} loss terms keras/torch: {terms}")
            line = (
                f"step {k}: loss terms max rel diff {s.max_term_rel_diff:.1e}; update rel diff keras vs torch "
                f"{s.update_rel_diff:.1e} (worst {s.worst_update} {s.worst_update_rel_diff:.1e})"
            )
            if s.keras_vs_fp64 is not None:
                line += f", vs torch float64: keras {s.keras_vs_fp64:.1e}, torch fp32 {s.torch_vs_fp64:.1e}"
            out.append(
                line + f"; moving mean max abs diff {s.moving_mean_max_abs_diff:.1e}, moving variance max rel diff "
                f"{s.moving_variance_max_rel_diff:.1e} (PyTorch's running variance is unbiased, Keras's biased)"
            )
        return out


def compare_steps(record: KerasSteps, float64_reference: bool = False) -> Comparison:
    """Replay recorded Keras steps in `TorchDistiller` from the same weights on the same batch and compare.

    Each step's loss terms are compared, and the weights after each step (see `StepComparison`). Needs no
    TensorFlow: the benchmark records the Keras side in another process (`keras_steps.record_keras_steps`).

    Args:
        record: the Keras run.
        float64_reference: also run a float64 copy of the PyTorch model, to tell fp32 rounding from a real
            difference.
    """
    setup = record.setup
    depth = int(setup["backbone"][len("resnet") :])
    torch_images = torch.from_numpy(record.images.transpose(0, 3, 1, 2).copy())
    torch_labels = torch.from_numpy(record.labels.astype("int64"))

    def torch_trainer(dtype: torch.dtype) -> Trainer:
        model = TorchDistiller(
            depth, setup["num_classes"], 2, setup["topology"], setup["method"], setup["base_width"]
        ).to(dtype)
        load_keras_weights(model, record.start)
        return Trainer(
            model.train(),
            steps_per_epoch=setup["steps_per_epoch"],
            rampup_epochs=setup["rampup_epochs"],
            lr_milestones=setup["lr_milestones"],
        )

    trainer = torch_trainer(torch.float32)
    reference = torch_trainer(torch.float64) if float64_reference else None
    start, trainable = record.start, record.trainable
    results = []
    for logs, after_keras in zip(record.logs, record.weights):
        terms = {k: (logs[k], float(v)) for k, v in trainer.step(torch_images, torch_labels).items()}
        after_torch = torch_weights(trainer.model)
        update, worst, worst_diff = _update_diff(after_keras, after_torch, start, trainable)
        fp64 = {}
        if reference is not None:
            reference.step(torch_images.double(), torch_labels)
            exact = torch_weights(reference.model)
            fp64 = dict(
                keras_vs_fp64=_update_diff(after_keras, exact, start, trainable)[0],
                torch_vs_fp64=_update_diff(after_torch, exact, start, trainable)[0],
            )
        means = [p for p in after_torch if p.endswith("moving_mean")]
        variances = [p for p in after_torch if p.endswith("moving_variance")]
        results.append(
            StepComparison(
                terms=terms,
                max_term_rel_diff=max(abs(a - b) / max(abs(a), 1e-12) for a, b in terms.values()),
                update_rel_diff=update,
                worst_update=worst,
                worst_update_rel_diff=worst_diff,
                moving_mean_max_abs_diff=max(float(np.max(np.abs(after_keras[p] - after_torch[p]))) for p in means),
                moving_variance_max_rel_diff=max(
                    float(np.max(np.abs(after_keras[p] - after_torch[p]) / np.abs(after_keras[p]))) for p in variances
                ),
                **fp64,
            )
        )
    return Comparison(results)


def compare_one_step(
    backbone: str = "resnet32",
    num_classes: int = 100,
    topology: str = "independent",
    method: str = "mfef",
    batch_size: int = 128,
    base_width: int = 16,
    steps: int = 2,
    seed: int = 0,
    float64_reference: bool = False,
    lr_milestones: Sequence[int] = (150, 225),
) -> Comparison:
    """Train Keras's `OnlineDistiller` and `TorchDistiller` from the same weights on the same batch and compare.

    Both in this process: `keras_steps.record_keras_steps`, then `compare_steps` (see both for the setup and
    the arguments). ``lr_milestones=(1,)`` puts a milestone between the two steps, where PyTorch's SGD
    (momentum on the raw gradient) and Keras's (velocity scaled by the rate) part. Needs the TensorFlow
    backend, and a torch build that can share a process with TensorFlow (the CPU build can; the benchmark
    runs the two halves in separate processes).
    """
    record = record_keras_steps(
        backbone, num_classes, topology, method, batch_size, base_width, steps, seed, lr_milestones
    )
    return compare_steps(record, float64_reference)


def _max_rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a - b)) / max(float(np.max(np.abs(b))), 1e-12))


def compare_forward(
    backbone: str = "resnet32",
    num_classes: int = 100,
    topology: str = "shared_trunk",
    method: str = "ffl",
    batch_size: int = 16,
    base_width: int = 16,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Logits and loss terms of Keras's `OnlineDistiller` and `TorchDistiller` from identical weights.

    Returns ``{"train": {...}, "eval": {...}}``: for each mode, ``max|a - b| / max|b|`` of every student's
    logits (``"s0"``...) and the fused logits (``"fused"``), and the relative difference of each loss term.
    The defaults are the official FFL model: a shared-trunk resnet32 pair with FFL's fusion module.
    """
    import keras

    from mfef_keras.distill import OnlineDistiller
    from mfef_keras.models import build_students

    keras.utils.set_random_seed(seed)
    students = build_students(backbone, num_classes, 2, topology, base_width=base_width)
    distiller = OnlineDistiller(students, method)
    rng = np.random.default_rng(seed)
    # Moving statistics away from their initial values, so evaluation mode uses real ones.
    for v in distiller.students_net.non_trainable_variables + distiller.fusion.non_trainable_variables:
        shape = tuple(v.shape)
        v.assign(rng.uniform(0.5, 1.5, shape) if "variance" in v.path else rng.normal(0, 0.1, shape))
    weights = {v.path: np.array(v.numpy()) for v in distiller.students_net.variables + distiller.fusion.variables}
    model = TorchDistiller(int(backbone[len("resnet") :]), num_classes, 2, topology, method, base_width)
    load_keras_weights(model, weights)
    images = rng.standard_normal((batch_size, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, num_classes, batch_size)
    torch_images = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    result = {}
    # Evaluation first: a training-mode pass moves the moving statistics, and PyTorch's running variance
    # is the unbiased batch variance where Keras keeps the biased one.
    for mode in ("eval", "train"):
        training = mode == "train"
        keras_logits, keras_extras = distiller._forward(images, training=training)
        keras_terms = distiller.loss_terms(labels, keras_logits, keras_extras)
        keras_fused = keras_extras["fused"]
        model.train(training)
        with torch.no_grad():
            torch_logits, torch_fused = model(torch_images)
            torch_terms = loss_terms(
                torch_logits, torch_fused, torch.from_numpy(labels), float(keras_terms["kd_weight"])
            )
        diffs = {
            f"s{i}": _max_rel(np.asarray(k), t.numpy()) for i, (k, t) in enumerate(zip(keras_logits, torch_logits))
        }
        diffs["fused"] = _max_rel(np.asarray(keras_fused), torch_fused.numpy())
        diffs.update(
            {name: _max_rel(np.asarray(keras_terms[name]), value.numpy()) for name, value in torch_terms.items()}
        )
        result[mode] = diffs
    return result
