"""Datasets for the students: a registry of named datasets and the tf.data pipeline that feeds them.

``list_datasets()`` gives ``cifar10``, ``cifar100``, ``cinic10`` and ``digits`` (scikit-learn's digits, the
embedded default that needs no download); ``"folder:PATH"`` serves any image-folder tree. Importing this
package does not import TensorFlow; building a dataset does.
"""

from mfef_keras.data.info import DatasetInfo
from mfef_keras.data.registry import dataset_info, default_data_dir, list_datasets, load_arrays, make_dataset

__all__ = ["DatasetInfo", "dataset_info", "default_data_dir", "list_datasets", "load_arrays", "make_dataset"]
