"""Online knowledge distillation: the distiller, its methods, loss terms and schedules."""

from mfef_keras.distill.fusion_module import build_fusion_module
from mfef_keras.distill.losses import KDLoss, rampup_weight
from mfef_keras.distill.methods import OnlineMethod, list_methods, method_class, register_method
from mfef_keras.distill.online_distiller import OnlineDistiller
from mfef_keras.distill.pytorch_sgd import PyTorchSGD
from mfef_keras.distill.schedules import MultiStepDecay

__all__ = [
    "KDLoss",
    "MultiStepDecay",
    "OnlineDistiller",
    "OnlineMethod",
    "PyTorchSGD",
    "build_fusion_module",
    "list_methods",
    "method_class",
    "rampup_weight",
    "register_method",
]
