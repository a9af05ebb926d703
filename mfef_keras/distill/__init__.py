"""Online knowledge distillation: the distiller, its loss terms and schedules."""

from mfef_keras.distill.fusion_module import build_fusion_module
from mfef_keras.distill.losses import KDLoss, rampup_weight
from mfef_keras.distill.online_distiller import ABLATIONS, METHODS, OnlineDistiller
from mfef_keras.distill.pytorch_sgd import PyTorchSGD
from mfef_keras.distill.schedules import MultiStepDecay

__all__ = [
    "ABLATIONS",
    "METHODS",
    "KDLoss",
    "MultiStepDecay",
    "OnlineDistiller",
    "PyTorchSGD",
    "build_fusion_module",
    "rampup_weight",
]
