"""`DynamicBatcher`: concurrent requests' images joined into one model run, behind a bounded queue."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np


class Overloaded(RuntimeError):
    """The queue holds as many images as it may; the request is refused rather than queued."""


class DynamicBatcher:
    """Runs ``run`` on the images of several requests at once, in one worker thread.

    A batch closes when it holds ``max_batch`` images or ``max_latency_ms`` after its first request arrived.
    At most ``max_queued`` images wait; a request beyond that raises `Overloaded` at once, so memory stays
    bounded however many clients send.

    Args:
        run: maps a ``(N, ...)`` batch to ``(N, ...)`` results (called in a worker thread, one batch at a time).
        max_batch: images per run.
        max_latency_ms: how long a batch waits for more requests.
        max_queued: images that may wait.

    Example:
        >>> batcher = DynamicBatcher(predictor.logits, max_batch=32, max_latency_ms=5, max_queued=256)
        >>> logits = await batcher.submit(images)
    """

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], max_batch: int, max_latency_ms: float, max_queued: int):
        self.run = run
        self.max_batch = max_batch
        self.max_latency = max_latency_ms / 1000
        self.max_queued = max_queued
        self._queued = 0
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, images: np.ndarray) -> np.ndarray:
        """``run``'s results on ``images``, computed in a batch with other requests' images.

        Raises:
            Overloaded: when ``images`` would take the queue past ``max_queued`` images.
        """
        if self._queued + len(images) > self.max_queued:
            raise Overloaded(
                f"the server is overloaded: {self._queued} images are queued, at most {self.max_queued}; retry later."
            )
        if self._worker is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.create_task(self._work())
        future = asyncio.get_running_loop().create_future()
        self._queued += len(images)
        self._queue.put_nowait((images, future))
        return await future

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            requests = [await self._queue.get()]
            count = len(requests[0][0])
            deadline = loop.time() + self.max_latency
            while count < self.max_batch:
                try:
                    request = await asyncio.wait_for(self._queue.get(), max(0.0, deadline - loop.time()))
                except TimeoutError:
                    break
                requests.append(request)
                count += len(request[0])
            await self._run(requests, loop)

    async def _run(self, requests: list, loop: asyncio.AbstractEventLoop) -> None:
        sizes = [len(images) for images, _ in requests]
        try:
            results = await loop.run_in_executor(None, self.run, np.concatenate([images for images, _ in requests]))
        except Exception as error:  # every waiting request learns of it; the worker goes on
            for _, future in requests:
                if not future.done():
                    future.set_exception(error)
        else:
            for (_, future), part in zip(requests, np.split(results, np.cumsum(sizes)[:-1])):
                if not future.done():
                    future.set_result(part)
        finally:
            self._queued -= sum(sizes)
