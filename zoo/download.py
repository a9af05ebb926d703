"""Fetching an archive by URL into a temporary file, with short timeouts, a progress bar and checks.

Every download is bounded: ``$MFEF_ZOO_TIMEOUT`` per stall, ``$MFEF_ZOO_MIN_RATE`` bytes/s averaged over every
``$MFEF_ZOO_RATE_WINDOW`` seconds (a server that drips a byte now and then never stalls a read), a total deadline
(``$MFEF_ZOO_DEADLINE``, or what the recorded size takes at the minimum rate), and its recorded size (or
``$MFEF_ZOO_MAX_BYTES`` when none is recorded) in bytes.

Implemented with urllib rather than `keras.utils.get_file`, which falls back to another
folder when its cache folder is missing, keeps files that fail the hash check, and
re-downloads a bad cached file instead of reporting it (spec §7, pitfall 3).
"""

from __future__ import annotations

import hashlib
import http.client
import math
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from mfef_keras import __version__
from mfef_keras.zoo.cache import ENV_OFFLINE, PART_PREFIX
from mfef_keras.zoo.errors import DownloadError, IntegrityError

ENV_TIMEOUT = "MFEF_ZOO_TIMEOUT"
ENV_DEADLINE = "MFEF_ZOO_DEADLINE"
ENV_MAX_BYTES = "MFEF_ZOO_MAX_BYTES"
ENV_MIN_RATE = "MFEF_ZOO_MIN_RATE"
ENV_RATE_WINDOW = "MFEF_ZOO_RATE_WINDOW"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_DEADLINE_S = 3600.0
DEFAULT_MIN_RATE = 1000.0
DEFAULT_RATE_WINDOW_S = 30.0
DEFAULT_MAX_BYTES = 2 << 30
NETWORK_SCHEMES = ("http", "https")
CHUNK_BYTES = 1 << 16


def is_network_url(url: str) -> bool:
    """Whether fetching ``url`` needs the network (``http``/``https``), as opposed to ``file://``."""
    return urllib.parse.urlsplit(url).scheme.lower() in NETWORK_SCHEMES


def _positive_env(name: str, default: float, convert: type, unit: str) -> float:
    """``$name`` as a positive finite ``convert`` (int or float), or ``default`` when unset or empty."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = convert(raw)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value <= 0:
        what = "whole number" if convert is int else "number"
        raise ValueError(f"${name} must be a positive {what} of {unit}, got {raw!r}.")
    return value


def timeout_s() -> float:
    """Seconds a connection or a single read may stall: ``$MFEF_ZOO_TIMEOUT`` or 10."""
    return _positive_env(ENV_TIMEOUT, DEFAULT_TIMEOUT_S, float, "seconds")


def deadline_s() -> float:
    """Seconds a whole download may take, however steadily bytes arrive: ``$MFEF_ZOO_DEADLINE`` or 3600."""
    return _positive_env(ENV_DEADLINE, DEFAULT_DEADLINE_S, float, "seconds")


def min_rate() -> float:
    """Bytes per second a download must average over each rate window: ``$MFEF_ZOO_MIN_RATE`` or 1000."""
    return _positive_env(ENV_MIN_RATE, DEFAULT_MIN_RATE, float, "bytes per second")


def rate_window_s() -> float:
    """Seconds over which the transfer rate is averaged: ``$MFEF_ZOO_RATE_WINDOW`` or 30."""
    return _positive_env(ENV_RATE_WINDOW, DEFAULT_RATE_WINDOW_S, float, "seconds")


def total_deadline(size: int | None) -> tuple[float, str]:
    """Seconds a whole download of ``size`` bytes (None: unknown) may take, and which limit that is, for messages.

    ``$MFEF_ZOO_DEADLINE`` when set; else, for a known size, the time it takes at the minimum rate (plus one rate
    window, the least in which a rate is judged), capped at 3600 s; else 3600 s.
    """
    if os.environ.get(ENV_DEADLINE, "").strip():
        allowed = deadline_s()
        return allowed, f"${ENV_DEADLINE}={allowed:g} s"
    if size is None:
        return DEFAULT_DEADLINE_S, f"the default deadline of {DEFAULT_DEADLINE_S:g} s (${ENV_DEADLINE})"
    rate, window = min_rate(), rate_window_s()
    allowed = min(DEFAULT_DEADLINE_S, size / rate + window)
    return allowed, (
        f"the deadline of {allowed:g} s that its {size}-byte size takes at ${ENV_MIN_RATE}={rate:g} bytes/s "
        f"(plus ${ENV_RATE_WINDOW}={window:g} s; at most {DEFAULT_DEADLINE_S:g} s)"
    )


def max_bytes() -> int:
    """The most bytes a download of unrecorded size may bring: ``$MFEF_ZOO_MAX_BYTES`` or 2 GiB."""
    return _positive_env(ENV_MAX_BYTES, DEFAULT_MAX_BYTES, int, "bytes")


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


def _too_large(label: str, count: int, verb: str) -> DownloadError:
    return DownloadError(
        f"{label} {verb} {count} bytes, more than ${ENV_MAX_BYTES}={max_bytes()}, the most a download of "
        f"unrecorded size may bring. Pin its size (#sha256=<hex>&size=<bytes>) or raise ${ENV_MAX_BYTES}."
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
        size: expected size in bytes, or None if unknown (then at most ``$MFEF_ZOO_MAX_BYTES`` are accepted).
        progress: show a progress bar on stderr, where stderr is a terminal.
        label: how to name the download in messages (default: the URL).

    Returns:
        The temporary file and its sha256.

    Raises:
        DownloadError: no connection, a stall longer than ``$MFEF_ZOO_TIMEOUT``, a rate under
            ``$MFEF_ZOO_MIN_RATE`` over a ``$MFEF_ZOO_RATE_WINDOW``, a download longer than its `total_deadline`,
            an unrecorded size above ``$MFEF_ZOO_MAX_BYTES``, or an HTTP error.
        ValueError: one of those variables is not a positive number.
        IntegrityError: the size or the sha256 differs; the message gives both values.
    """
    # Imported here so that `import mfef_keras.zoo` needs nothing beyond the standard library.
    from tqdm.auto import tqdm

    label = label or url
    # Read first, so that a bad setting is refused before anything is fetched or written.
    stall_s, rate, window = timeout_s(), min_rate(), rate_window_s()
    allowed_s, deadline = total_deadline(size)
    limit = size if size is not None else max_bytes()
    started = time.monotonic()
    request = urllib.request.Request(url, headers={"User-Agent": f"mfef-keras/{__version__}"})
    try:
        response = urllib.request.urlopen(request, timeout=stall_s)
    except urllib.error.HTTPError as error:
        raise _failure(label, url, f"HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise _failure(label, url, error.reason) from None
    except (OSError, http.client.HTTPException) as error:
        raise _failure(label, url, error) from None
    with response:
        announced = response.headers.get("Content-Length")
        announced = int(announced) if announced and announced.isdigit() else None
        if size is not None and announced is not None and announced != size:
            raise _size_error(label, size, announced, "(announced by the server)")
        if size is None and announced is not None and announced > limit:
            raise _too_large(label, announced, "announces")
        if size is None and announced is not None and not os.environ.get(ENV_DEADLINE, "").strip():
            allowed_s, deadline = total_deadline(announced)
        handle = tempfile.NamedTemporaryFile(dir=folder, prefix=PART_PREFIX, delete=False)
        try:
            digest, received = hashlib.sha256(), 0
            # The start of the current rate window: its time and the bytes received by then.
            window_started, window_bytes = started, 0
            # disable=None: no bar where stderr is not a terminal (a pipe, a log file), which would get its \r redraws.
            bar = tqdm(
                total=size or announced, unit="B", unit_scale=True, desc=label, disable=None if progress else True
            )
            with handle, bar:
                while True:
                    try:
                        # read1 returns what has arrived; read() would wait for a whole chunk of a trickle.
                        chunk = response.read1(CHUNK_BYTES)
                    except (OSError, http.client.HTTPException) as error:
                        raise _failure(label, url, error) from None
                    now = time.monotonic()
                    if now - started > allowed_s:
                        raise DownloadError(
                            f"Cannot fetch {label} from {url}: it took longer than {deadline} ({received} bytes "
                            f"received). Raise ${ENV_DEADLINE} for a slow connection."
                        )
                    if not chunk:
                        break
                    received += len(chunk)
                    if now - window_started >= window:
                        average = (received - window_bytes) / (now - window_started)
                        if average < rate:
                            raise DownloadError(
                                f"Cannot fetch {label} from {url}: it arrived at {average:.0f} bytes/s over the last "
                                f"{now - window_started:.0f} s, under ${ENV_MIN_RATE}={rate:g} bytes/s ({received} "
                                f"bytes received). Lower ${ENV_MIN_RATE} (or raise ${ENV_RATE_WINDOW}) for a slow "
                                "connection."
                            )
                        window_started, window_bytes = now, received
                    # Stop as soon as the file is longer than recorded (or allowed) instead of filling the disk.
                    if received > limit:
                        if size is not None:
                            raise _size_error(label, size, received, "(more bytes than recorded)")
                        raise _too_large(label, received, "sent")
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
