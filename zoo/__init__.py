"""The model zoo: published students by name, pulled into a verified cache and loaded as `keras.Model`s.

Names read ``arch_method.dataset_tag`` (``resnet8_mfef.digits_s0``). A preset is a
student directory (``model.keras`` + ``metadata.json``) with a model card (``README.md``), the
training log (``metrics.csv``) and ``preset.json``, the sha256 of every file; hashes are checked on every load.

Example:
    >>> from mfef_keras.zoo import list_models, load_student
    >>> list_models("resnet8_*")  # doctest: +SKIP
    >>> model = load_student("resnet8_mfef.digits_s0", include_preprocessing=True)  # doctest: +SKIP

Environment: ``MFEF_ZOO_CACHE`` (cache folder, default ``~/.cache/mfef_keras/zoo``),
``MFEF_ZOO_OFFLINE=1`` (never use the network), ``MFEF_ZOO_MANIFEST`` (more manifests),
``MFEF_ZOO_TIMEOUT`` (seconds a download may stall, default 10), ``MFEF_ZOO_MIN_RATE`` and
``MFEF_ZOO_RATE_WINDOW`` (the bytes/s a download must average over each window, default 1000 over 30 s),
``MFEF_ZOO_DEADLINE`` (seconds a whole download may take, default: its recorded size at the minimum rate,
at most 3600), ``MFEF_ZOO_MAX_BYTES`` (the most a download or an unpacked
archive of unrecorded size may bring, default 2 GiB).
"""

from mfef_keras.zoo.cache import cache_dir
from mfef_keras.zoo.errors import DownloadError, IntegrityError, OfflineError, UnsafeArchiveError, ZooError
from mfef_keras.zoo.loading import load_student
from mfef_keras.zoo.preset import verify_preset
from mfef_keras.zoo.publish import publish
from mfef_keras.zoo.registry import list_models, model_info
from mfef_keras.zoo.resolve import pull, resolve_preset

__all__ = [
    "DownloadError",
    "IntegrityError",
    "OfflineError",
    "UnsafeArchiveError",
    "ZooError",
    "cache_dir",
    "list_models",
    "load_student",
    "model_info",
    "publish",
    "pull",
    "resolve_preset",
    "verify_preset",
]
