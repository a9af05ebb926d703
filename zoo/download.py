"""Fetching an archive by URL into a temporary file, with short timeouts, a progress bar and checks.

Implemented with urllib rather than `keras.utils.get_file`, which falls back to another
folder when its cache folder is missing, keeps files that fail the hash check, and
re-downloads a bad cached file instead of reporting it (spec §7, pitfall 3).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from mfef_keras import __version__
from mfef_keras.zoo.cache import ENV_OFFLINE, PART_PREFIX
from mfef_keras.zoo.errors import DownloadError, IntegrityError

ENV_TIMEOUT = "MFEF_ZOO_TIMEOUT"
DEFAULT_TIMEOUT_S = 10.0
NETWORK_SCHEMES = ("http", "https")
CHUNK_BYTES = 1 << 16


def is_network_url(url: str) -> bool:
    """Whether fetching ``url`` needs the network (``http``/``https``), as opposed to ``file://``."""
    return urllib.parse.urlsplit(url).scheme.lower() in NETWORK_SCHEMES


def timeout_s() -> float:
    """Seconds a connection or a read may stall: ``$MFEF_ZOO_TIMEOUT`` or 10."""
    raw = os.environ.get(ENV_TIMEOUT)
    try:
        return float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ValueError(f"${ENV_TIMEOUT} must be a number of seconds, got {raw!r}.") from None


def _failure(label: str, url: str, reason: object) -> DownloadError:
    hint = f" Check the network, or set {ENV_OFFLINE}=1 to use only the cache." if is_network_url(url) else ""
    return DownloadError(f"Cannot fetch {label} from {url}: {reason}.{hint}")


def _size_error(label: str, expected: int, actual: int, when: str) -> IntegrityError:
    return IntegrityError(
        f"{label} has the wrong size {when}: expected {expected} bytes, got {actual}.",
        file=label,
        expected=str(expected),
        actual=str(actual),
    )


def download(
    url: str,
    folder: Path,
    sha256: str | None = None,
    size: int | None = None,
    progress: bool = True,
    label: str | None = None,
) -> tuple[Path, str]:
    """Stream ``url`` into a temporary file in ``folder`` and check its size, then its sha256.

    On any failure the temporary file is removed. The caller renames the returned file
    into place: only files that passed the checks are ever renamed.

    Args:
        url: ``https://``, ``http://`` or ``file://`` URL of the archive.
        folder: where the temporary file goes (the cache folder, so the rename is atomic).
        sha256: expected hex sha256, or None to accept any content (the hash is returned).
        size: expected size in bytes, or None if unknown.
        progress: show a progress bar on stderr.
        label: how to name the download in messages (default: the URL).

    Returns:
        The temporary file and its sha256.

    Raises:
        DownloadError: no connection, a timeout or an HTTP error.
        IntegrityError: the size or the sha256 differs; the message gives both values.
    """
    # Imported here so that `import mfef_keras.zoo` needs nothing beyond the standard library.
    from tqdm.auto import tqdm

    label = label or url
    request = urllib.request.Request(url, headers={"User-Agent": f"mfef-keras/{__version__}"})
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s())
    except urllib.error.HTTPError as error:
        raise _failure(label, url, f"HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise _failure(label, url, error.reason) from None
    except (OSError, http.client.HTTPException) as error:
        raise _failure(label, url, error) from None
    with response:
        announced = response.headers.get("Content-Length")
        if size is not None and announced is not None and announced.isdigit() and int(announced) != size:
            raise _size_error(label, size, int(announced), "(announced by the server)")
        total = size if size is not None else (int(announced) if announced and announced.isdigit() else None)
        handle = tempfile.NamedTemporaryFile(dir=folder, prefix=PART_PREFIX, delete=False)
        try:
            digest, received = hashlib.sha256(), 0
            bar = tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=not progress)
            with handle, bar:
                while True:
                    try:
                        chunk = response.read(CHUNK_BYTES)
                    except (OSError, http.client.HTTPException) as error:
                        raise _failure(label, url, error) from None
                    if not chunk:
                        break
                    received += len(chunk)
                    # Stop as soon as the file is longer than recorded instead of filling the disk.
                    if size is not None and received > size:
                        raise _size_error(label, size, received, "(more bytes than recorded)")
                    digest.update(chunk)
                    handle.write(chunk)
                    bar.update(len(chunk))
            if size is not None and received != size:
                raise _size_error(label, size, received, "(download ended early)")
            actual = digest.hexdigest()
            if sha256 is not None and actual != sha256.lower():
                raise IntegrityError(
                    f"{label} failed its sha256 check: expected {sha256.lower()}, got {actual}. "
                    "Nothing was kept in the cache.",
                    file=label,
                    expected=sha256.lower(),
                    actual=actual,
                )
        except BaseException:
            Path(handle.name).unlink(missing_ok=True)
            raise
    return Path(handle.name), actual
