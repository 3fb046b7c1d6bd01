"""``ServingMetrics``: the service's Prometheus metrics (``prometheus-client``), served at ``GET /metrics``.

Each service owns its own ``CollectorRegistry`` (several services may live in one process: tests, benchmarks).

    twotower_http_requests_total{path,method,status}    requests answered, by route and status
    twotower_request_duration_seconds{path}            time from the request's arrival to its answer
    twotower_queue_wait_seconds                         a /topk request's wait for its micro-batch to start
    twotower_tower_seconds / twotower_search_seconds    one query-tower call / one index search, per batch
    twotower_batch_size                                 requests per micro-batch
    twotower_batch_retries_total                        batches that failed and were retried request by request
    twotower_serving_info{model_version,index_version}  1 for the versions being served
    twotower_index_reloads_total{outcome}               swapped / refused / failed reload attempts
    twotower_worker_info{worker,pid}                    1 for the process that answered (``--set workers=N``)
    twotower_queue_depth, twotower_open_connections     current values, read when scraped
    twotower_connections_refused_total                  connections turned away at max_connections

Values that other objects already count (reloads, queue depth) are read at scrape time by a collector, so
they cannot drift from what ``/healthz`` and ``/version`` report.
"""
from __future__ import annotations

import os
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class ServingMetrics:
    """Metrics of one service. ``snapshot`` () -> dict with model_version, index_version, reloads, refused,
    failed, queued, open_connections, refused_connections (read at every scrape)."""

    def __init__(self, snapshot: Callable[[], dict] | None = None):
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("twotower_http_requests", "HTTP requests answered, by route, method and status",
                                ("path", "method", "status"), registry=self.registry)
        self.request_seconds = Histogram("twotower_request_duration_seconds",
                                         "Time from a request's arrival to its answer", ("path",),
                                         buckets=LATENCY_BUCKETS, registry=self.registry)
        self.queue_wait = Histogram("twotower_queue_wait_seconds", "A /topk request's wait for its micro-batch",
                                    buckets=LATENCY_BUCKETS, registry=self.registry)
        self.tower_seconds = Histogram("twotower_tower_seconds", "One query-tower call (one micro-batch)",
                                       buckets=LATENCY_BUCKETS, registry=self.registry)
        self.search_seconds = Histogram("twotower_search_seconds", "One index search (one micro-batch)",
                                        buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("twotower_batch_size", "Requests per micro-batch", buckets=BATCH_BUCKETS,
                                    registry=self.registry)
        self._snapshot = snapshot
        if snapshot is not None:
            self.registry.register(_Snapshot(snapshot))

    def observe_request(self, path: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(path, method, str(status)).inc()
        self.request_seconds.labels(path).observe(seconds)

    def observe_batch(self, size: int, queue_waits, tower_s: float, search_s: float) -> None:
        self.batch_size.observe(size)
        for wait in queue_waits:
            self.queue_wait.observe(wait)
        self.tower_seconds.observe(tower_s)
        self.search_seconds.observe(search_s)

    def exposition(self) -> bytes:
        """The Prometheus text exposition format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)


class _Snapshot:
    """Scrape-time values from the service (see ``ServingMetrics``)."""

    def __init__(self, snapshot: Callable[[], dict]):
        self._snapshot = snapshot

    def describe(self):
        return []  # collected lazily; nothing to check at registration

    def collect(self):
        s = self._snapshot()
        info = GaugeMetricFamily("twotower_serving_info", "The model and index versions being served (value 1)",
                                 labels=("model_version", "index_version"))
        info.add_metric((s["model_version"], s["index_version"]), 1.0)
        yield info
        worker = GaugeMetricFamily("twotower_worker_info", "The serving process that answered this scrape (value 1; "
                                   "worker is \"\" without --set workers)", labels=("worker", "pid"))
        worker.add_metric(("" if s.get("worker") is None else str(s["worker"]), str(os.getpid())), 1.0)
        yield worker
        reloads = CounterMetricFamily("twotower_index_reloads", "Index reload attempts by outcome",
                                      labels=("outcome",))
        for outcome in ("swapped", "refused", "failed"):
            reloads.add_metric((outcome,), float(s.get(outcome, 0)))
        yield reloads
        retries = CounterMetricFamily("twotower_batch_retries", "Micro-batches that failed and were retried "
                                                                 "request by request")
        retries.add_metric((), float(s.get("retried_batches", 0)))
        yield retries
        yield GaugeMetricFamily("twotower_queue_depth", "Requests waiting for a micro-batch", value=s["queued"])
        yield GaugeMetricFamily("twotower_open_connections", "Open HTTP connections",
                                value=s.get("open_connections", 0))
        refused = CounterMetricFamily("twotower_connections_refused", "Connections turned away at max_connections")
        refused.add_metric((), float(s.get("refused_connections", 0)))
        yield refused
