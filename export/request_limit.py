"""`RequestBodyLimit`: an ASGI middleware that refuses a request body over a size with 413, before the app reads it.

Plain ASGI and the standard library (no Starlette, KServe or orjson import: the default install runs its tests).
`mfef serve` puts it in front of the FastAPI app KServe builds, so the size of what a client sends no longer decides
how much memory the server takes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MIB = 1 << 20
# The default limit's floor: encoded images are not tied to the model's size (a photo is resized to it), and 16 MiB
# is what the server took for them before the body had a limit.
MIN_DEFAULT_MIB = 16
# Request bytes allowed per pixel value of --max-batch images: a float32 written as JSON text by a V2 client
# ("-1.2345678901234567e-05, ") takes up to 25, a binary tensor 1 or 4; the rest is headroom for the JSON header.
BYTES_PER_VALUE = 32


def default_max_request_bytes(max_batch: int, image_shape: tuple[int, ...]) -> int:
    """The larger of 16 MiB and 32 bytes per pixel value of ``max_batch`` images of ``image_shape``.

    Example:
        >>> default_max_request_bytes(32, (32, 32, 1)) == 16 * MIB
        True
    """
    return max(MIN_DEFAULT_MIB * MIB, BYTES_PER_VALUE * max_batch * math.prod(image_shape))


class RequestBodyLimit:
    """Refuses with 413 every HTTP request whose body is over ``max_bytes``; others reach ``app`` unchanged.

    A ``Content-Length`` over the limit is refused before any of the body is read. A body without one (chunked) is
    read until it passes the limit, then refused; the rest is never read. Either way the response closes the
    connection, since the unread body is still on it, and the server goes on with other connections. A body within
    the limit is read here and handed to ``app`` whole, which is what KServe's endpoints do with it anyway.

    Args:
        app: the ASGI application behind it.
        max_bytes: the largest body accepted.
        setting: how the limit was set, named in the 413 message (e.g. ``"--max-request-mb 16"``).

    Example:
        >>> app.add_middleware(RequestBodyLimit, max_bytes=16 * MIB, setting="--max-request-mb 16")
    """

    def __init__(self, app: ASGIApp, max_bytes: int, setting: str):
        self.app = app
        self.max_bytes = max_bytes
        self.setting = setting

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send, f"a body of {declared:,} bytes (Content-Length)")
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left before its body ended: no one to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send, f"a body of at least {size:,} bytes (read no further)")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            # The body once, as one message; later calls wait on the connection as before (disconnect detection).
            nonlocal delivered
            if delivered:
                return await receive()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, what: str) -> None:
        # KServe's error shape ({"error": ...}), which V2 clients such as tritonclient show to their callers.
        message = f"too large a request: {what}, at most {self.max_bytes:,} bytes ({self.setting})."
        content = json.dumps({"error": message}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(content)).encode()),
            # The unread body follows on this connection: it cannot carry another request.
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": content})


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:  # the HTTP parser refuses these first; if one gets here, counting still bounds it
                return None
    return None
