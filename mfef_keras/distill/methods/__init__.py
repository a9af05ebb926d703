"""The online-distillation methods, one module each, registered by name as they are imported.

Every module of this package is imported here, so a new method is one new file in it (plus its tests).
"""

import importlib
import pkgutil

from mfef_keras.distill.methods.base import METHODS, MethodOption, OnlineMethod, method_class, register_method

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")


def list_methods() -> list[str]:
    """The names of the registered methods, the baseline first."""
    return sorted(METHODS, key=lambda name: (name != "independent", name))


def method_descriptions() -> dict[str, str]:
    """Name -> one-line description of every registered method, as `mfef list-methods` prints them."""
    return {name: METHODS.description(name) for name in list_methods()}


def fused_methods() -> list[str]:
    """The methods whose runs keep a fused classifier of the whole cohort (`mfef export RUN --model fused`)."""
    return [name for name in list_methods() if METHODS.get(name).has_fused_classifier()]


__all__ = [
    "METHODS",
    "MethodOption",
    "OnlineMethod",
    "fused_methods",
    "list_methods",
    "method_class",
    "method_descriptions",
    "register_method",
]
