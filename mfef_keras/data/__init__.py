"""Datasets for the students: a registry of named datasets and the input pipelines that feed them.

``list_datasets()`` gives ``cifar10``, ``cifar100``, ``cinic10``, ``digits`` (scikit-learn's digits, the
embedded default that needs no download) and ``fashion_mnist`` (28x28 grayscale, from its official IDX
files or Debian's dataset-fashion-mnist package); ``"folder:PATH"`` serves any image-folder tree. Importing this
package does not import TensorFlow. Batches come from tf.data where TensorFlow is installed and from numpy
otherwise (`mfef_keras.data.pipeline_choice`); without TensorFlow every dataset but CIFAR works.
"""

from mfef_keras.data.info import DatasetInfo
from mfef_keras.data.registry import dataset_info, default_data_dir, list_datasets, load_arrays, make_dataset

__all__ = ["DatasetInfo", "dataset_info", "default_data_dir", "list_datasets", "load_arrays", "make_dataset"]
