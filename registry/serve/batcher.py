"""Dynamic batching: images from concurrent requests are encoded together, in one call of at most `max_batch`
images, started as soon as a batch is full or `max_wait_ms` after its first image arrived.

The queue is bounded by images (`max_queue`) and by their total cost (`max_cost`: the service counts pixels, so a
queue of large photos is bounded in bytes too; a request alone in an empty queue is always taken): `submit` refuses
a request whose images do not all fit with `QueueFull` (the service answers 503 with Retry-After) and holds nothing
of it, so memory stays bounded however many clients call. The encode calls run in the batcher's own worker threads,
never in the caller's (the service's event loop keeps answering while a batch encodes).
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Deque, List, Optional, Sequence

import numpy as np


class QueueFull(RuntimeError):
    """The batcher holds `max_queue` images already: try again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class _Item:
    image: Any
    future: Future
    queued_at: float
    cost: int


@dataclass(frozen=True)
class Encoded:
    """One image's descriptor, how long it waited in the queue and how long its batch took to encode (seconds)."""

    descriptor: np.ndarray
    queue_s: float
    encode_s: float
    batch_size: int


class Batcher:
    """`submit(images)` -> one Future per image, resolved with an `Encoded` (or the encode call's exception).

    `encode(images) -> np.ndarray [n, dim]` is called with batches of 1..max_batch images in `threads` worker
    threads; `on_batch(size, seconds)` (optional) is told each batch's size and encode time."""

    def __init__(self, encode: Callable[[List[Any]], np.ndarray], max_batch: int = 16, max_wait_ms: float = 5.0,
                 max_queue: int = 64, threads: int = 1, max_cost: Optional[int] = None,
                 on_batch: Optional[Callable[[int, float], None]] = None) -> None:
        for name, value, low in (("max_batch", max_batch, 1), ("max_queue", max_queue, 1), ("threads", threads, 1)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be a whole number >= {low}, got {value!r}")
        if not 0 <= float(max_wait_ms) <= 10_000:
            raise ValueError(f"max_wait_ms must be in 0..10000 milliseconds, got {max_wait_ms!r}")
        self.encode, self.on_batch = encode, on_batch
        self.max_batch, self.max_wait, self.max_queue = max_batch, float(max_wait_ms) / 1000.0, max_queue
        self.max_cost = max_cost
        self._cost = 0  # of the images in the queue
        self._queue: Deque[_Item] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._busy = 0  # images being encoded now
        self._recent_batch_s = 0.05  # the last batch's encode time: the Retry-After estimate
        self._workers = [threading.Thread(target=self._run, name=f"vpr-batcher-{i}", daemon=True)
                         for i in range(threads)]
        for worker in self._workers:
            worker.start()

    def depth(self) -> int:
        """Images waiting in the queue now (not counting those being encoded)."""
        with self._cond:
            return len(self._queue)

    def submit(self, images: Sequence[Any], costs: Optional[Sequence[int]] = None) -> List[Future]:
        """Queue these images together (all or none): QueueFull when they do not fit in `max_queue` images or in
        `max_cost` (`costs`: one per image)."""
        if not images:
            return []
        costs = [0] * len(images) if costs is None else [int(c) for c in costs]
        now = time.monotonic()
        with self._cond:
            if self._closed:
                raise RuntimeError("the batcher is closed")
            if len(self._queue) + len(images) > self.max_queue:
                raise QueueFull(
                    f"the server is busy: {len(self._queue)} images are queued for encoding and at most "
                    f"{self.max_queue} may wait (--queue); retry after the Retry-After seconds", self._retry_after())
            if self.max_cost is not None and self._queue and self._cost + sum(costs) > self.max_cost:
                raise QueueFull(
                    f"the server is busy: the queued images hold {self._cost:,} pixels and at most "
                    f"{self.max_cost:,} may wait (--queue-pixels); retry after the Retry-After seconds",
                    self._retry_after())
            items = [_Item(image, Future(), now, cost) for image, cost in zip(images, costs)]
            self._queue.extend(items)
            self._cost += sum(costs)
            self._cond.notify_all()
        return [item.future for item in items]

    def _retry_after(self) -> int:
        batches_ahead = (len(self._queue) + self._busy) / self.max_batch + 1
        return max(1, int(batches_ahead * self._recent_batch_s / len(self._workers) + 0.999))

    def _take_batch(self) -> Optional[List[_Item]]:
        """The next batch: waits for a first image, then up to max_wait for the batch to fill; None once closed."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if not self._queue:
                return None
            deadline = self._queue[0].queued_at + self.max_wait
            while len(self._queue) < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            self._busy += len(batch)
            self._cost -= sum(item.cost for item in batch)
            return batch

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            try:
                self._encode(batch)
            finally:
                with self._cond:
                    self._busy -= len(batch)

    def _encode(self, batch: List[_Item]) -> None:
        live = [item for item in batch if item.future.set_running_or_notify_cancel()]
        if not live:
            return
        started = time.monotonic()
        try:
            descriptors = np.asarray(self.encode([item.image for item in live]))
            if len(descriptors) != len(live):
                raise RuntimeError(f"the encoder gave {len(descriptors)} descriptors for {len(live)} images")
        except Exception as err:  # the callers get the encoder's exception; the worker keeps serving
            for item in live:
                item.future.set_exception(err)
            return
        seconds = time.monotonic() - started
        self._recent_batch_s = seconds
        if self.on_batch is not None:
            self.on_batch(len(live), seconds)
        for item, descriptor in zip(live, descriptors):
            item.future.set_result(Encoded(descriptor, started - item.queued_at, seconds, len(live)))

    def close(self, timeout: float = 10.0) -> None:
        """Encode what is queued, then stop the worker threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for worker in self._workers:
            worker.join(timeout)
