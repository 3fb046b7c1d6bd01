"""``MicroBatcher``: concurrent callers submit one item each; one worker thread answers them in batches.

    batcher = MicroBatcher(process, max_batch=64, max_wait_s=0.001, max_queue=4096)
    future = batcher.submit(item)        # from any thread; concurrent.futures.Future
    result = future.result(timeout=10)

The worker blocks for the first item, then takes whatever else is already queued (up to ``max_batch``)
and, while the batch is still short, waits at most ``max_wait_s`` after the first item for more. Under
load, requests pile up while a batch runs, so batches fill without waiting; when idle, a lone request
waits at most ``max_wait_s``.

``process(items) -> results`` runs on the worker thread with the batch in submission order and returns
one result per item; a result that is an ``Exception`` instance fails just that item's future. If
``process`` raises, every future of the batch fails with that exception. Futures cancelled before their
batch starts are skipped. ``submit`` raises ``QueueFull`` when ``max_queue`` items are waiting and
``BatcherClosed`` after ``close()``; ``close()`` answers what is queued, then stops the worker.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Sequence

log = logging.getLogger(__name__)


class QueueFull(RuntimeError):
    """Too many items are waiting; the caller should back off (HTTP 503)."""


class BatcherClosed(RuntimeError):
    """The batcher is shutting down."""


class MicroBatcher:
    def __init__(self, process: Callable[[list], Sequence[Any]], max_batch: int, max_wait_s: float,
                 max_queue: int, name: str = "micro-batcher"):
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError(f"need max_batch >= 1, max_queue >= 1, max_wait_s >= 0; got {max_batch}, "
                             f"{max_queue}, {max_wait_s}")
        self._process = process
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_s)
        self.max_queue = int(max_queue)
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.batches = 0          # batches processed
        self.items = 0            # items answered (including failed ones)
        self.largest_batch = 0
        self._worker = threading.Thread(target=self._run, name=name, daemon=True)
        self._worker.start()

    def submit(self, item) -> Future:
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise BatcherClosed("the service is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"{len(self._queue)} requests are already waiting (max_queue={self.max_queue}); "
                                "retry later")
            self._queue.append((item, future))
            self._cond.notify()
        return future

    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting items, answer the queued ones, join the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join(timeout)

    def _take_batch(self) -> list | None:
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            deadline = time.monotonic() + self.max_wait_s
            while len(self._queue) < self.max_batch and not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            take = min(self.max_batch, len(self._queue))
            return [self._queue.popleft() for _ in range(take)]

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            live = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]
            if not live:
                continue
            try:
                results = self._process([item for item, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(live)} items")
            except BaseException as exc:  # noqa: BLE001 - every waiter must hear about it
                log.exception("batch of %d failed", len(live))
                results = [exc] * len(live)
            for (_, fut), result in zip(live, results):
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)
            self.batches += 1
            self.items += len(live)
            self.largest_batch = max(self.largest_batch, len(live))
