"""``ServingConfig``: how the top-k HTTP service batches, validates and reloads.

Built with ``core.strict.from_dict`` (unknown keys rejected), e.g. from ``serve(run, **options)`` or
``python -m serving --set max_batch=32``.

    max_batch           requests answered by one query-tower call + one index search (the micro-batch)
    max_wait_ms         how long the batcher holds an incomplete batch open for more requests (ms). The
                        default 0 batches adaptively: a batch is whatever queued while the previous one
                        ran (up to max_batch), so a lone request never waits and batches grow with load;
                        a positive wait trades latency for fuller batches (and timed waits oversleep on
                        a busy machine)
    max_queue           requests waiting for a batch before new ones get 503 (back-pressure)
    max_k               largest k a request may ask for
    max_history_items   longest "history" list a raw-feature request may send
    max_body_bytes      request bodies above this get 413
    inline_lone         with max_wait_ms = 0, a request that finds the service idle runs its batch of one on
                        its own thread (no hand-off to the batcher thread and back); False = always hand off
    request_timeout_s   a request not answered within this gets 503
    max_connections     open HTTP connections at most; one more is answered 503 (JSON) and closed
    idle_timeout_s      a keep-alive connection idle this long after an answer is closed
    read_timeout_s      a request (head and body) must arrive within this after the connection opened or the
                        previous answer was sent; else 408 (JSON) and the connection is closed
    drain_timeout_s     on shutdown, how long in-flight requests may take to finish before the server exits
    reload_interval_s   how often the watcher polls ``<run>/index/current`` (s); None = never reload
    nprobe, ef_search   serving-time search effort for IVF / HNSW indices (None = as built)
    workers             serving processes sharing the port (``serve``; see ``serving.app._serve_workers``);
                        each loads its own tower and index
    search_threads      FAISS (OpenMP) threads of a serving process (``serve`` sets it; None = FAISS's default,
                        one per core). 1 by default: a micro-batch is 1..64 queries, ~0.15 ms each on the 1M
                        IVF4096,Flat bench index, and a second thread competes with the event loop and the
                        tower for the same cores (on the loaded 2-core machine: batch of 16 2.6 ms with one
                        thread, 5.5 ms with two; 64: 13 vs 16 ms)
    default_exclude_seen  exclude_seen when a request does not say
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServingConfig:
    max_batch: int = 64
    max_wait_ms: float = 0.0
    max_queue: int = 4096
    max_k: int = 1000
    max_history_items: int = 10_000
    max_body_bytes: int = 1 << 20
    inline_lone: bool = True
    request_timeout_s: float = 10.0
    max_connections: int = 1024
    idle_timeout_s: float = 60.0
    read_timeout_s: float = 30.0
    drain_timeout_s: float = 30.0
    reload_interval_s: float | None = 5.0
    nprobe: int | None = None
    ef_search: int | None = None
    search_threads: int | None = 1
    workers: int = 1
    default_exclude_seen: bool = True

    def __post_init__(self):
        for name in ("max_batch", "max_queue", "max_k", "max_history_items", "max_body_bytes", "max_connections",
                     "workers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ServingConfig.{name} must be a positive int, got {value!r}")
        if self.search_threads is not None and (isinstance(self.search_threads, bool)
                                                or not isinstance(self.search_threads, int) or self.search_threads < 1):
            raise ValueError(f"ServingConfig.search_threads must be a positive int or None (= one per core), got "
                             f"{self.search_threads!r}")
        for name in ("nprobe", "ef_search"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"ServingConfig.{name} must be a positive int or None (= as built), got {value!r}")
        if not _number(self.max_wait_ms) or self.max_wait_ms < 0:
            raise ValueError(f"ServingConfig.max_wait_ms must be a number >= 0, got {self.max_wait_ms!r}")
        for name in ("request_timeout_s", "idle_timeout_s", "read_timeout_s", "drain_timeout_s"):
            value = getattr(self, name)
            if not _number(value) or value <= 0:
                raise ValueError(f"ServingConfig.{name} must be a number > 0 (seconds), got {value!r}")
        if self.reload_interval_s is not None and (not _number(self.reload_interval_s)
                                                   or self.reload_interval_s <= 0):
            raise ValueError(f"ServingConfig.reload_interval_s must be a number > 0 (seconds) or None to never "
                             f"reload, got {self.reload_interval_s!r}")

    def index_overrides(self) -> dict:
        """``spec_overrides`` for ``indexing.store.load_index``: the search effort set here, if any."""
        return {name: getattr(self, name) for name in ("nprobe", "ef_search") if getattr(self, name) is not None}


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
