"""A download that drips (a byte now and then, so no single read stalls) ends at the minimum transfer rate, and a
download of recorded size gets the deadline that size takes at that rate, each naming the limit and how to raise it."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time

import pytest

from mfef_keras.zoo.download import total_deadline
from tests.helpers import subprocess_env


@contextlib.contextmanager
def _dripping_server(interval_s: float):
    """An HTTP server on 127.0.0.1 whose endless body comes one byte every ``interval_s`` seconds; yields its URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        connection, _ = listener.accept()
        with connection, contextlib.suppress(OSError):
            connection.recv(65536)
            connection.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/gzip\r\n\r\n")
            while not stop.wait(interval_s):
                connection.sendall(b"\0")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/drip.tar.gz#sha256={'0' * 64}"
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=5)


def test_zoo_pull_from_a_dripping_server_ends_at_the_minimum_rate(tmp_path):
    # A byte every 0.2 s never trips the 10 s stall timeout; 2 s windows judge the rate quickly.
    env = subprocess_env(MFEF_ZOO_CACHE=str(tmp_path / "cache"), MFEF_ZOO_RATE_WINDOW="2")
    started = time.monotonic()
    with _dripping_server(0.2) as url:
        command = [sys.executable, "-m", "mfef_keras.cli", "zoo", "pull", url]
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    assert time.monotonic() - started < 30
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert "bytes/s over the last 2 s, under $MFEF_ZOO_MIN_RATE=1000 bytes/s" in errors[0]
    assert "Lower $MFEF_ZOO_MIN_RATE (or raise $MFEF_ZOO_RATE_WINDOW)" in errors[0]
    assert sorted(p.name for p in (tmp_path / "cache" / "drip").iterdir()) == [".lock"]


def test_the_deadline_follows_the_recorded_size_unless_set(monkeypatch):
    monkeypatch.delenv("MFEF_ZOO_DEADLINE", raising=False)
    assert total_deadline(None)[0] == 3600
    # 50 kB at 1000 bytes/s, plus one 30 s window in which the rate is judged.
    allowed, why = total_deadline(50_000)
    assert allowed == 80 and "its 50000-byte size takes at $MFEF_ZOO_MIN_RATE=1000 bytes/s" in why
    assert total_deadline(10 << 30)[0] == 3600
    monkeypatch.setenv("MFEF_ZOO_DEADLINE", "7")
    assert total_deadline(50_000) == (7, "$MFEF_ZOO_DEADLINE=7 s")


@pytest.mark.parametrize("variable", ["MFEF_ZOO_MIN_RATE", "MFEF_ZOO_RATE_WINDOW"])
def test_a_bad_rate_setting_is_named(monkeypatch, variable):
    monkeypatch.setenv(variable, "0")
    monkeypatch.delenv("MFEF_ZOO_DEADLINE", raising=False)
    with pytest.raises(ValueError, match=rf"\${variable} must be a positive number of .*got '0'"):
        total_deadline(1000)
