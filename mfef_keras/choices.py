"""The names a user chooses from: the backbone and dataset registries, topologies and MFEF ablations.

Importing this module imports neither Keras, TensorFlow nor numpy (which take seconds, or a tenth of one), so
the CLI lists and checks the names at start-up; each registered entry imports its module when it is used.
Methods are registered in `mfef_keras.distill.methods`, export formats in `mfef_keras.export.formats`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from mfef_keras.registry import Registry

if TYPE_CHECKING:
    from mfef_keras.data.source import DatasetSource
    from mfef_keras.models.recipe import BackboneRecipe, LayerFactory

TOPOLOGIES = ("independent", "shared_trunk")
ABLATIONS = ("multi_scale", "attention", "channel_attention", "spatial_attention")

# Name -> recipe builder ``f(make=LayerFactory, **family options) -> BackboneRecipe``.
BACKBONES: Registry[Callable[..., BackboneRecipe]] = Registry("backbone")


def _resnet(depth: int, make: LayerFactory, **options) -> BackboneRecipe:
    from mfef_keras.models.resnet_cifar import resnet_cifar_recipe

    return resnet_cifar_recipe(depth, make=make, **options)


def _wide_resnet(depth: int, widen: int, make: LayerFactory, **options) -> BackboneRecipe:
    from mfef_keras.models.wide_resnet import wide_resnet_recipe

    return wide_resnet_recipe(depth, widen, make=make, **options)


def _vgg(depth: int, make: LayerFactory, **options) -> BackboneRecipe:
    from mfef_keras.models.vgg_cifar import vgg_cifar_recipe

    return vgg_cifar_recipe(depth, make=make, **options)


for _depth in (8, 20, 32, 44, 56, 110):
    BACKBONES.register(f"resnet{_depth}", f"CIFAR ResNet-{_depth} (BasicBlocks, widths 16/32/64)")(
        partial(_resnet, _depth)
    )
for _depth, _widen in ((10, 1), (16, 1), (16, 2), (16, 4), (16, 8), (28, 4), (28, 10), (40, 1), (40, 2), (40, 4)):
    BACKBONES.register(
        f"wrn{_depth}_{_widen}", f"Wide ResNet WRN-{_depth}-{_widen} (widths {16 * _widen}/{32 * _widen}/{64 * _widen})"
    )(partial(_wide_resnet, _depth, _widen))
for _depth in (8, 11, 13, 16):
    BACKBONES.register(f"vgg{_depth}", f"VGG-{_depth} in its CIFAR form (BatchNorm, one classifier layer)")(
        partial(_vgg, _depth)
    )


@dataclass(frozen=True)
class DatasetEntry:
    """A registered dataset: how to open its source, and what it needs.

    Args:
        open: ``open(root, named) -> DatasetSource``: the source in data directory ``root``; ``named`` says the
            user gave that directory (a default one may fall back to a system copy).
        reads_data_dir: the data lies in the data directory (checked before ``open``).
        needs_tensorflow: read through tensorflow-datasets, so only where TensorFlow is installed.

    Example:
        >>> DATASETS.get("cifar10").needs_tensorflow, DATASETS.get("digits").reads_data_dir
        (True, False)
    """

    open: Callable[[Path, bool], DatasetSource]
    reads_data_dir: bool = True
    needs_tensorflow: bool = False


# Name -> `DatasetEntry`; any "folder:PATH" (an image-folder tree) is accepted beside them.
DATASETS: Registry[DatasetEntry] = Registry("dataset")


def register_dataset(
    name: str, description: str, *, reads_data_dir: bool = True, needs_tensorflow: bool = False
) -> Callable[[Callable[[Path, bool], DatasetSource]], Callable[[Path, bool], DatasetSource]]:
    """Decorator registering ``open(root, named) -> DatasetSource`` as dataset ``name`` (see `DatasetEntry`).

    Args:
        name: the name given to ``--dataset`` and `mfef_keras.data.make_dataset`.
        description: the dataset in one line.
        reads_data_dir: the data lies in the data directory.
        needs_tensorflow: the source reads through TensorFlow.
    """

    def decorate(open_source: Callable[[Path, bool], DatasetSource]) -> Callable[[Path, bool], DatasetSource]:
        DATASETS.register(name, description)(DatasetEntry(open_source, reads_data_dir, needs_tensorflow))
        return open_source

    return decorate


# Each source is imported when opened: CIFAR's imports TensorFlow, the others' PIL or scikit-learn.
@register_dataset("cifar10", "CIFAR-10: 32x32 colour, 10 classes (tensorflow-datasets)", needs_tensorflow=True)
def _cifar10(root: Path, named: bool) -> DatasetSource:
    from mfef_keras.data.tfds_cifar import CifarSource

    return CifarSource("cifar10", root)


@register_dataset("cifar100", "CIFAR-100: 32x32 colour, 100 classes (tensorflow-datasets)", needs_tensorflow=True)
def _cifar100(root: Path, named: bool) -> DatasetSource:
    from mfef_keras.data.tfds_cifar import CifarSource

    return CifarSource("cifar100", root)


@register_dataset("cinic10", "CINIC-10: 32x32 colour, 10 classes, an image-folder tree in <data dir>/cinic10")
def _cinic10(root: Path, named: bool) -> DatasetSource:
    from mfef_keras.data.image_folder import cinic10_source

    return cinic10_source(root)


@register_dataset(
    "digits", "scikit-learn's handwritten digits, embedded: the default, needs no download", reads_data_dir=False
)
def _digits(root: Path, named: bool) -> DatasetSource:
    from mfef_keras.data.digits import DigitsSource

    return DigitsSource()


@register_dataset("fashion_mnist", "Fashion-MNIST: 28x28 grayscale, 10 classes, its official IDX files")
def _fashion_mnist(root: Path, named: bool) -> DatasetSource:
    from mfef_keras.data.fashion_mnist import FashionMnistSource

    # Debian's copy serves only where the user named no data directory.
    return FashionMnistSource(root, fallback=not named)


def cohort_names(name: str | Sequence[str], num_students: int | None = None) -> list[str]:
    """The backbone of each student: ``num_students`` (default 2) times one name, or the given names.

    Args:
        name: a backbone name, a comma-separated list of them, or a sequence of names.
        num_students: students of a single name; with several names, None or their number.
    """
    names = [part.strip() for part in name.split(",") if part.strip()] if isinstance(name, str) else list(name)
    if not names:
        raise ValueError(f"No backbone named: give one name or one per student, got {name!r}.")
    if len(names) == 1:
        count = 2 if num_students is None else int(num_students)
        if count < 1:
            raise ValueError(f"num_students must be >= 1, got {num_students!r}.")
        return names * count
    if num_students is not None and int(num_students) != len(names):
        raise ValueError(
            f"The cohort {','.join(names)} names {len(names)} students, but num_students is {num_students}: "
            "give one backbone name per student, or one name with --students N."
        )
    return names
