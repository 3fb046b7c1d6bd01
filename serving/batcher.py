"""``MicroBatcher``: concurrent callers submit one item each; their items are answered in batches.

    batcher = MicroBatcher(process, max_batch=64, max_wait_s=0.0, max_queue=4096)
    future = batcher.submit(item)        # from any thread; concurrent.futures.Future
    result = future.result(timeout=10)

One batch runs at a time. A worker thread takes up to ``max_batch`` queued items per batch and, while
the batch is still short, waits at most ``max_wait_s`` after taking the first for more. Under load,
items pile up while a batch runs, so batches fill without waiting.

``inline_lone=True`` (the default, used only when ``max_wait_s == 0``): a caller whose item finds the
batcher idle and the queue otherwise empty runs that batch of one itself, on its own thread, instead of
handing it to the worker and waiting to be woken: two thread hand-offs fewer per request when the service
is not busy (each hand-off costs a scheduler wake-up, milliseconds on a loaded machine). Items that
arrive meanwhile queue for the worker as usual.

``process(items) -> results`` gets the batch in submission order and returns one result per item; a
result that is an ``Exception`` instance fails just that item's future. If ``process`` raises on a batch of
several items, each item is retried alone (``retried_batches`` counts these), so only the items that fail
on their own get the exception: one bad request never fails the others in its batch. Futures cancelled before their batch starts are skipped.
``submit`` raises ``QueueFull`` when ``max_queue`` items are waiting and ``BatcherClosed`` after
``close()``; ``close()`` answers what is queued, then stops the worker.
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
                 max_queue: int, name: str = "micro-batcher", inline_lone: bool = True):
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError(f"need max_batch >= 1, max_queue >= 1, max_wait_s >= 0; got {max_batch}, "
                             f"{max_queue}, {max_wait_s}")
        self._process = process
        self.max_batch = int(max_batch)
        self.max_wait_s = float(max_wait_s)
        self.max_queue = int(max_queue)
        self.inline_lone = bool(inline_lone) and self.max_wait_s == 0
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._busy = False        # a batch is running (on the worker or inline on a caller)
        self._closed = False
        self.batches = 0          # batches processed
        self.items = 0            # items answered (including failed ones)
        self.inline_batches = 0   # of which run on the caller's thread
        self.largest_batch = 0
        self.retried_batches = 0  # batches that raised and were retried item by item
        self._worker = threading.Thread(target=self._run, name=name, daemon=True)
        self._worker.start()

    def submit(self, item, allow_inline: bool = True) -> Future:
        """Queue ``item``; ``allow_inline=False`` never runs the batch on the caller's thread (an event loop
        must not block on the tower)."""
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise BatcherClosed("the service is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFull(f"{len(self._queue)} requests are already waiting (max_queue={self.max_queue}); "
                                "retry later")
            if allow_inline and self.inline_lone and not self._busy and not self._queue:
                self._busy = True
                batch = [(item, future)]
            else:
                self._queue.append((item, future))
                if not self._busy:
                    self._cond.notify()
                return future
        self.inline_batches += 1
        self._finish(batch)
        return future

    @property
    def closed(self) -> bool:
        return self._closed

    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting items, answer the queued ones, join the worker."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join(timeout)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue or self._busy:
                    if self._closed and not self._queue:
                        return
                    self._cond.wait()
                self._busy = True
                deadline = time.monotonic() + self.max_wait_s
                while len(self._queue) < self.max_batch and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
                take = min(self.max_batch, len(self._queue))
                batch = [self._queue.popleft() for _ in range(take)]
            self._finish(batch)

    def _finish(self, batch: list) -> None:
        """Run one batch (the caller holds ``_busy``), then release the batcher for the next."""
        try:
            self._execute(batch)
        finally:
            with self._cond:
                self._busy = False
                if self._queue or self._closed:
                    self._cond.notify()

    def _execute(self, batch: list) -> None:
        live = [(item, fut) for item, fut in batch if fut.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            results = self._call([item for item, _ in live])
        except Exception as exc:  # noqa: BLE001 - isolate the culprit(s): retry each item alone
            if len(live) == 1:
                log.exception("batch of 1 failed")
                results = [exc]
            else:
                log.warning("batch of %d failed (%s: %s); retrying its items one by one", len(live),
                            type(exc).__name__, exc)
                self.retried_batches += 1
                results = []
                for item, _ in live:
                    try:
                        results.append(self._call([item])[0])
                    except Exception as alone:  # noqa: BLE001 - this item's own failure
                        log.exception("item failed alone")
                        results.append(alone)
        except BaseException as exc:  # noqa: BLE001 - every waiter must hear about it
            results = [exc] * len(live)
        for (_, fut), result in zip(live, results):
            if isinstance(result, BaseException):
                fut.set_exception(result)
            else:
                fut.set_result(result)
        self.batches += 1
        self.items += len(live)
        self.largest_batch = max(self.largest_batch, len(live))

    def _call(self, items: list) -> Sequence[Any]:
        results = self._process(items)
        if len(results) != len(items):
            raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
        return results
