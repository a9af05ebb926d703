"""Datasets for the students: a registry of named datasets and the input pipelines that feed them.

``list_datasets()`` gives the registered datasets (`mfef_keras.choices.DATASETS`, each with a one-line
description; `register_dataset` adds one); ``"folder:PATH"`` serves any image-folder tree. Importing this
package does not import TensorFlow. Batches come from tf.data where TensorFlow is installed and from numpy
otherwise (`mfef_keras.data.pipeline_choice`); without TensorFlow every dataset but CIFAR works.
"""

from mfef_keras.choices import register_dataset
from mfef_keras.data.info import DatasetInfo
from mfef_keras.data.registry import dataset_info, default_data_dir, list_datasets, load_arrays, make_dataset

__all__ = [
    "DatasetInfo",
    "dataset_info",
    "default_data_dir",
    "list_datasets",
    "load_arrays",
    "make_dataset",
    "register_dataset",
]
