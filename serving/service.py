"""``TopKService``: the query tower + the run's current index + known users, answering top-k in micro-batches.

    service = TopKService.open("runs/demo", ServingConfig())   # refuses an index of another model version
    service.topk(TopKRequest(k=10, exclude_seen=True, user_id="196"))
      -> {"items": [{"item_id": "50", "score": 0.61}, ...], "model_version": ..., "index_version": ...,
          "known_user": True}
    service.close()

What it loads from the run directory (``core.rundir.RunDir``):
  model/query_tower   the SavedModel (``towers.export.load_tower``); its version is THE model version
  model/manifest.json max_history (how many recent items a query carries)
  data/               users + train/valid/test interactions (``serving.users.KnownUsers``)
  index/current       the published index (``serving.state.load_state``), refused when built from
                      another model version
The run may be on object storage (``--run s3://bucket/runs/x``, ``gs://...``): model/ and data/ are then
copied into the local cache and index versions are downloaded there when published
(``core.version_cache``: every file's sha256 checked before anything loads it); the watcher polls the
small ``index/current`` object.

Requests are resolved to tower inputs on the caller's thread, then queued; one worker thread
(``serving.batcher.MicroBatcher``) takes up to ``max_batch`` of them, runs ONE query-tower call and ONE
index search for all of them (k = the largest k asked, exclusions per request, narrow first:
``serving.search``), and answers each.
``IndexWatcher`` swaps in newly published index versions between batches (``reload_interval_s``); while a
new version loads, both are in memory (plan for twice the index size).
Timestamps left out of a request are the time the request arrives (seconds).
"""
from __future__ import annotations

import gc
import logging
import os
import re
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import faiss
import numpy as np

from serving.batcher import BatcherClosed, MicroBatcher, QueueFull
from serving.config import ServingConfig
from serving.metrics import ServingMetrics
from serving.query_encoder import QueryEncoder
from serving.reloader import IndexWatcher
from serving.requests import RequestError, TopKRequest
from serving.search import search_excluding
from serving.state import IndexState, check_versions, load_state
from serving.tower_inputs import QueryInputs, batch_inputs, feature_value
from serving.users import KnownUsers
from core import artifacts
from core import lifecycle
from core.rundir import RunDir
from core.version_cache import CachedRoot, cached_directory

log = logging.getLogger(__name__)

_NO_ROWS = np.zeros(0, dtype=np.int64)
# an absolute POSIX path of at least two components (not preceded by a word character, "<" or ">")
_ABSOLUTE_PATH = re.compile(r"(?<![\w<>.])/(?:[^\s'\"/]+/)+([^\s'\"/,;:)]*)")


class _Pending:
    """A request resolved on the caller's thread: its tower inputs and what to exclude."""

    __slots__ = ("request", "inputs", "known_row", "known_user", "queued_at")

    def __init__(self, request: TopKRequest, inputs: QueryInputs, known_row: int | None, known_user: bool):
        self.queued_at = 0.0
        self.request = request
        self.inputs = inputs
        self.known_row = known_row
        self.known_user = known_user


class TopKService:
    """See the module docstring. Thread-safe: ``submit`` / ``topk`` from any number of threads."""

    def __init__(self, run_dir: str | Path, tower, users: KnownUsers, state: IndexState,
                 config: ServingConfig | None = None, index_source: CachedRoot | None = None):
        self.run = RunDir(run_dir)
        self.index_source = index_source or CachedRoot(str(self.run.index))
        self.config = config or ServingConfig()
        self.tower = tower
        self.encoder = QueryEncoder(tower)
        self.users = users
        self.user_specs = tuple(tower.features)
        self._state = state
        self._state_lock = threading.Lock()
        self.started_at = time.time()
        self._empty_features = {s.name: feature_value(None, s.kind) for s in self.user_specs}
        self.connection_stats = lambda: {}  # the HTTP front sets this: open / refused connection counts
        self.freeze_gc = False  # serve() sets this: see freeze_long_lived
        self.worker: int | None = None  # serve() with workers > 1: this process's worker number
        self.metrics = ServingMetrics(self._metrics_snapshot)
        self._warm_up()
        self.batcher = MicroBatcher(self._process, self.config.max_batch, self.config.max_wait_ms / 1000.0,
                                    self.config.max_queue, name="topk-batcher", inline_lone=self.config.inline_lone)
        self.watcher: IndexWatcher | None = None
        if self.config.reload_interval_s is not None:
            self.watcher = IndexWatcher(self.index_source, lambda: self.state.version, self.load_version, self.swap,
                                        self.config.reload_interval_s).start()

    # ------------------------------------------------------------------ construction
    @classmethod
    def open(cls, run_dir: str | Path, config: ServingConfig | None = None) -> "TopKService":
        """Load the run's query tower, known users and current index; refuse mismatched versions."""
        from towers.export import load_tower

        config = config or ServingConfig()
        run = RunDir(run_dir)
        run.require(run.query_tower, f"train the towers first (`twotower train --run {run.root}`)")
        source = CachedRoot(str(run.index))
        version = source.current_version()
        if version is None:
            raise FileNotFoundError(f"{run.index / lifecycle.CURRENT} does not exist: no index is published for "
                                    f"{run.root}; build one with `twotower rebuild --run {run.root}`")
        model = cached_directory(str(run.model))  # a run on object storage: a verified local copy
        tower = load_tower(model / run.query_tower.name)
        # the cheap check first: refuse a mismatched index before reading data or the index itself
        check_versions(tower.model_version, run.index / version,
                       str(source.read_manifest(version).get("model_version")), run.root)
        max_history = int(artifacts.read_manifest(model)["max_history"])
        run.require(run.data / artifacts.MANIFEST, f"the run has no saved data split; run `twotower train "
                                                   f"--run {run.root}`")
        users = KnownUsers.from_run_data(cached_directory(str(run.data)), max_history)
        source.fetch(version)
        state = load_state(source.local_root, version, tower.model_version, tower.output_dim, users, run.root,
                           config.index_overrides())
        log.info("serving model %s with index %s (%s, %d items); %d known users", tower.model_version, version,
                 state.index.factory, state.index.ntotal, len(users))
        return cls(run.root, tower, users, state, config, index_source=source)

    def load_version(self, version: str) -> IndexState:
        """Download (object storage) and verify ``index/<version>``, then load it for this tower (what the
        watcher calls). Cached versions other than this one and the served one are dropped afterwards."""
        self.index_source.fetch(version)
        state = load_state(self.index_source.local_root, version, self.tower.model_version, self.tower.output_dim,
                           self.users, self.run.root, self.config.index_overrides(), previous=self.state)
        self.index_source.prune_cache(keep={version, self.state.version})
        return state

    def _warm_up(self) -> None:
        """One tower call + one search, so the first request does not pay for graph and table set-up."""
        query = QueryInputs("", dict(self._empty_features), (), _NO_ROWS, int(time.time()))
        vectors = self.encoder(batch_inputs([query], self.user_specs, self.users.max_history))
        self._state.index.search(vectors, 1)

    # ------------------------------------------------------------------ state
    @property
    def state(self) -> IndexState:
        return self._state

    @property
    def model_version(self) -> str:
        return self.tower.model_version

    def swap(self, state: IndexState) -> None:
        """Serve ``state`` from the next batch on (the running batch keeps the one it started with)."""
        check_versions(self.tower.model_version, self.run.index / state.version, state.model_version, self.run.root)
        with self._state_lock:
            self._state = state
        if self.freeze_gc:
            gc.freeze()

    def freeze_long_lived(self) -> None:
        """Move every object alive now (the tower, the data, the index state: ~350k container objects) out of
        the cyclic collector's generations (``gc.freeze``), and do the same after every index swap.
        Measured on the 1M-item bench run: one full (gen-2) collection over them takes 0.15-0.6 s, and
        the per-request garbage triggers one every few thousand requests, which stalls every request in
        flight (a p99 of hundreds of ms at 1,000 req/s). Frozen objects are still freed by reference
        counting (a swapped-out index goes as before); only reference cycles among them are never
        collected. Process-wide, so only ``serve()`` (a serving process) turns it on, not tests."""
        self.freeze_gc = True
        gc.freeze()

    # ------------------------------------------------------------------ requests
    def resolve(self, request: TopKRequest) -> _Pending:
        """Tower inputs for ``request``: from the data for a known user, else from the request itself."""
        now = int(time.time())
        timestamp = request.timestamp if request.timestamp is not None else now
        if request.is_raw:
            history_ts = (np.asarray(request.history_timestamps, dtype=np.int64) if request.history_timestamps
                          is not None else np.zeros(len(request.history), dtype=np.int64))
            features = {s.name: feature_value(request.features.get(s.name), s.kind) for s in self.user_specs}
            inputs = QueryInputs(request.user_id or "", features, request.history, history_ts, timestamp)
            return _Pending(request, inputs, None, False)
        row = self.users.row_of(request.user_id)
        if row is None:  # unknown user: OOV id, no features, no history
            inputs = QueryInputs(request.user_id, dict(self._empty_features), (), _NO_ROWS, timestamp)
            return _Pending(request, inputs, None, False)
        items, item_ts = self.users.history_of(row)
        inputs = QueryInputs(request.user_id, self.users.features_of(row), items, item_ts, timestamp)
        return _Pending(request, inputs, row, True)

    def submit(self, request: TopKRequest, allow_inline: bool = True) -> Future:
        """Queue ``request``; the future's result is the response dict. Raises RequestError(503) when full.
        ``allow_inline=False``: never answer on the caller's thread (see ``MicroBatcher.submit``)."""
        pending = self.resolve(request)
        pending.queued_at = time.perf_counter()
        try:
            return self.batcher.submit(pending, allow_inline)
        except QueueFull as exc:
            raise RequestError(503, f"overloaded: {exc}") from None
        except BatcherClosed as exc:
            raise RequestError(503, str(exc)) from None

    def topk(self, request: TopKRequest, timeout: float | None = None) -> dict:
        """Blocking ``submit``: the response dict, or RequestError(503) after ``timeout`` seconds."""
        timeout = self.config.request_timeout_s if timeout is None else timeout
        future = self.submit(request)
        try:
            return future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise RequestError(503, f"no answer within {timeout:g} s (request_timeout_s); the service is "
                                    "overloaded or stuck, retry later") from None

    def _process(self, batch: list[_Pending]) -> list[dict]:
        state = self._state  # one state for the whole batch: a swap lands between batches
        started = time.perf_counter()
        inputs = batch_inputs([p.inputs for p in batch], self.user_specs, self.users.max_history)
        vectors = self.encoder(inputs)
        encoded = time.perf_counter()
        exclude = [self._exclusions(p, state) for p in batch]
        k = max(p.request.k for p in batch)
        scores, rows = search_excluding(state.index, vectors, k, exclude)
        self.metrics.observe_batch(len(batch), [started - p.queued_at for p in batch if p.queued_at],
                                   encoded - started, time.perf_counter() - encoded)
        ids = state.index.item_ids
        out = []
        for i, p in enumerate(batch):
            r, s = rows[i, :p.request.k], scores[i, :p.request.k]
            found = r >= 0
            out.append({"items": [{"item_id": item, "score": score}
                                  for item, score in zip(ids[r[found]].tolist(), s[found].tolist())],
                        "model_version": self.tower.model_version, "index_version": state.version,
                        "known_user": p.known_user})
        return out

    def _exclusions(self, pending: _Pending, state: IndexState) -> np.ndarray:
        if not pending.request.exclude_seen:
            return _NO_ROWS
        if pending.known_row is not None:
            return state.seen_rows_of_user(pending.known_row)
        return state.rows_of_items(pending.request.history)

    # ------------------------------------------------------------------ reporting / shutdown
    def version_info(self) -> dict:
        state = self._state
        info = {"model_version": self.tower.model_version, "index_version": state.version,
                "index_factory": state.index.factory, "index_count": state.index.ntotal,
                "index_dim": state.index.dim, "search_params": state.index.search_params,
                "index_recall": state.index.recall, "known_users": len(self.users),
                "max_history": self.users.max_history, "search_threads": faiss.omp_get_max_threads(),
                "reloads": 0, "refused_index_versions": [],
                "last_reload_error": None}
        if self.watcher is not None:
            info.update(reloads=self.watcher.reloads, refused_index_versions=sorted(self.watcher.refused),
                        last_reload_error=self.public(self.watcher.last_error))
        return info

    def public(self, text: str | None) -> str | None:
        """``text`` without absolute paths (for answers to clients): paths under the run directory become
        ``<run>/...``, any other absolute path just its last component (``.../name``)."""
        if text is None:
            return None
        for root in sorted({str(self.run.root), str(self.run.root.resolve())}, key=len, reverse=True):
            text = text.replace(root, "<run>")
        return _ABSOLUTE_PATH.sub(lambda m: ".../" + m.group(1), text)

    def problem(self) -> str | None:
        """Why the newest published index is not served (refused or failed to load), paths removed; or None."""
        if self.watcher is None:
            return None
        problem = self.watcher.problem()
        if problem is None:
            return None
        return self.public(f"{problem}; still serving index {self._state.version}")

    def health(self) -> dict:
        """Liveness: "ok", or "degraded" with ``reason`` while the newest published index is refused or
        fails to load (the service still answers from the version it serves)."""
        problem = self.problem()
        health = {"status": "ok" if problem is None else "degraded"}
        if problem is not None:
            health["reason"] = problem
        return {**health, "model_version": self.tower.model_version, "index_version": self._state.version,
                "uptime_s": round(time.time() - self.started_at, 1), "queued": self.batcher.queued(),
                "batches": self.batcher.batches, "inline_batches": self.batcher.inline_batches,
                "requests": self.batcher.items,
                "largest_batch": self.batcher.largest_batch, "worker": self.worker, "pid": os.getpid()}

    def readiness(self) -> tuple[bool, dict]:
        """(ready, body) for ``GET /readyz``: the model and an index are loaded, their model versions agree,
        and the service is not shutting down."""
        state = self._state
        body = {"model_version": self.tower.model_version, "index_version": state.version,
                "index_model_version": state.model_version}
        if self.batcher.closed:
            return False, {"error": "not ready: the service is shutting down", **body}
        if state.model_version != self.tower.model_version:
            return False, {"error": f"not ready: index {state.version} belongs to model {state.model_version!r}, "
                                    f"the query tower is {self.tower.model_version!r}", **body}
        return True, {"status": "ready", **body}

    def _metrics_snapshot(self) -> dict:
        w = self.watcher
        return {"model_version": self.tower.model_version, "index_version": self._state.version,
                "swapped": w.reloads if w else 0, "refused": len(w.refused) if w else 0,
                "failed": w.load_failures if w else 0, "queued": self.batcher.queued(),
                "retried_batches": self.batcher.retried_batches, "worker": self.worker, **self.connection_stats()}

    def close(self) -> None:
        """Stop the watcher, answer what is queued, stop the batcher."""
        if self.watcher is not None:
            self.watcher.stop()
        self.batcher.close()

