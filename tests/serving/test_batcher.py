import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from serving.batcher import BatcherClosed, MicroBatcher, QueueFull


class Recorder:
    """A batch function that records its batches; ``entered`` is set as soon as a batch starts (the barrier
    tests wait on, instead of sleeping), ``gate`` (if given) holds every batch until it is set."""

    def __init__(self, delay=0.0, gate: threading.Event | None = None):
        self.batches = []
        self.delay = delay
        self.gate = gate
        self.entered = threading.Event()

    def __call__(self, items):
        self.entered.set()
        if self.gate is not None:
            self.gate.wait(5)
        self.batches.append(list(items))
        time.sleep(self.delay)
        return [item * 10 for item in items]


@pytest.mark.parametrize("max_wait_s", [0.0, 0.002])
def test_every_caller_gets_its_own_answer_and_batches_respect_max_batch(max_wait_s):
    rec = Recorder(delay=0.005)
    batcher = MicroBatcher(rec, max_batch=8, max_wait_s=max_wait_s, max_queue=1000)
    with ThreadPoolExecutor(32) as pool:
        results = list(pool.map(lambda i: batcher.submit(i).result(5), range(400)))
    batcher.close()
    assert results == [i * 10 for i in range(400)]
    assert sum(len(b) for b in rec.batches) == 400
    assert max(len(b) for b in rec.batches) <= 8
    assert len(rec.batches) < 400  # concurrent callers were batched
    assert batcher.items == 400 and batcher.batches == len(rec.batches) and batcher.largest_batch <= 8


def test_requests_queued_while_a_batch_runs_form_the_next_batch_in_order():
    gate = threading.Event()
    rec = Recorder(gate=gate)
    batcher = MicroBatcher(rec, max_batch=4, max_wait_s=0.0, max_queue=100, inline_lone=False)
    first = batcher.submit(0)
    assert rec.entered.wait(5)  # the worker holds [0] and waits at the gate
    rest = [batcher.submit(i) for i in range(1, 7)]
    gate.set()
    assert [f.result(5) for f in [first, *rest]] == [0, 10, 20, 30, 40, 50, 60]
    batcher.close()
    assert rec.batches == [[0], [1, 2, 3, 4], [5, 6]]


def test_a_lone_item_runs_on_the_callers_thread_and_items_meanwhile_go_to_the_worker():
    gate, entered = threading.Event(), threading.Event()
    threads = []

    def process(items):
        threads.append((threading.current_thread().name, list(items)))
        if items == [0]:
            entered.set()
            gate.wait(5)
        return [i * 10 for i in items]

    batcher = MicroBatcher(process, max_batch=8, max_wait_s=0.0, max_queue=100, name="the-worker")
    assert batcher.inline_lone
    lone: list = []
    caller = threading.Thread(target=lambda: lone.append(batcher.submit(0)), name="caller")
    caller.start()
    assert entered.wait(5)  # the caller is now running [0] itself, held at the gate
    queued = [batcher.submit(i) for i in (1, 2, 3)]
    assert batcher.queued() == 3
    gate.set()
    caller.join(5)
    assert lone[0].result(5) == 0 and [f.result(5) for f in queued] == [10, 20, 30]
    batcher.close()
    assert threads == [("caller", [0]), ("the-worker", [1, 2, 3])]
    assert batcher.inline_batches == 1 and batcher.batches == 2
    waiting = MicroBatcher(process, 8, 0.001, 10)
    assert not waiting.inline_lone  # a positive wait always batches on the worker
    waiting.close()


def test_a_lone_request_waits_at_most_max_wait():
    batcher = MicroBatcher(Recorder(), max_batch=64, max_wait_s=0.05, max_queue=10)
    start = time.perf_counter()
    assert batcher.submit(1).result(5) == 10
    assert time.perf_counter() - start < 2.0  # generous: shared CI machine
    batcher.close()


def test_per_item_and_per_batch_failures():
    def process(items):
        if 99 in items:
            raise RuntimeError("tower exploded")
        return [ValueError(f"bad {i}") if i < 0 else i for i in items]

    batcher = MicroBatcher(process, max_batch=1, max_wait_s=0.0, max_queue=10)
    assert batcher.submit(3).result(5) == 3
    with pytest.raises(ValueError, match="bad -1"):
        batcher.submit(-1).result(5)
    with pytest.raises(RuntimeError, match="tower exploded"):
        batcher.submit(99).result(5)
    assert batcher.submit(4).result(5) == 4  # the worker survived
    batcher.close()


def test_a_failing_batch_is_retried_item_by_item_so_only_the_bad_item_fails():
    # issue 13 item 1: one poisonous request used to fail every request of its batch
    gate, entered = threading.Event(), threading.Event()
    calls = []

    def process(items):
        calls.append(list(items))
        if items == [0]:
            entered.set()
            gate.wait(5)
        if any(i < 0 for i in items):
            raise OverflowError(f"poison in {items}")
        return [i * 10 for i in items]

    batcher = MicroBatcher(process, max_batch=8, max_wait_s=0.0, max_queue=100, inline_lone=False)
    first = batcher.submit(0)
    assert entered.wait(5)  # the worker is inside batch [0], held at the gate
    futures = [batcher.submit(i) for i in (1, 2, -3, 4)]
    gate.set()
    assert first.result(5) == 0
    assert [f.result(5) for f in futures[:2] + futures[3:]] == [10, 20, 40]
    with pytest.raises(OverflowError, match=r"poison in \[-3\]"):
        futures[2].result(5)
    batcher.close()
    assert calls == [[0], [1, 2, -3, 4], [1], [2], [-3], [4]]
    assert batcher.retried_batches == 1 and batcher.items == 5


def test_wrong_result_count_fails_the_batch():
    batcher = MicroBatcher(lambda items: [], max_batch=1, max_wait_s=0.0, max_queue=10)
    with pytest.raises(RuntimeError, match="returned 0 results for 1 items"):
        batcher.submit(1).result(5)
    batcher.close()


def test_queue_full_cancelled_and_close():
    gate = threading.Event()
    rec = Recorder(gate=gate)
    batcher = MicroBatcher(rec, max_batch=1, max_wait_s=0.0, max_queue=2, inline_lone=False)
    busy = batcher.submit(0)
    assert rec.entered.wait(5)  # [0] is being processed; the queue is empty again
    queued = [batcher.submit(1), batcher.submit(2)]
    with pytest.raises(QueueFull, match=r"2 requests are already waiting \(max_queue=2\)"):
        batcher.submit(3)
    assert queued[0].cancel()  # cancelled before its batch: never processed
    gate.set()
    batcher.close()
    assert busy.result(5) == 0 and queued[1].result(5) == 20
    assert [b for b in rec.batches] == [[0], [2]]
    with pytest.raises(BatcherClosed):
        batcher.submit(4)


def test_bad_settings():
    with pytest.raises(ValueError, match="need max_batch >= 1"):
        MicroBatcher(Recorder(), 0, 0.0, 1)
