"""``IndexWatcher``: pick up a newly published index without dropping requests.

A daemon thread polls ``<run>/index/current`` every ``interval_s``. When it names a version other than the
one served, the watcher loads and verifies it in the background (``load(version) -> IndexState``, which
checks sha256s and the model version), then hands it to ``swap(state)``; the service replaces its state
between batches, so in-flight batches finish on the old index. A version that belongs to another model
(``VersionMismatch``) is refused once and for all (versions are immutable) and logged; any other failure
(a half-pruned directory, a corrupt file) is logged and retried only when the version's files change
(their names, sizes and mtimes) or after a back-off (``retry_s``, doubling per failure up to
``max_retry_s``), so a corrupt 1M-item index is not re-read and re-hashed on every poll. The old index
keeps serving in all cases; ``problem()`` says why the newest published version is not served.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

from serving.state import IndexState, VersionMismatch
from core.version_cache import CachedRoot

log = logging.getLogger(__name__)


class IndexWatcher:
    """Polls ``index_root/current``; see the module docstring.

    served     () -> the index version being served now
    load       (version) -> IndexState, raising VersionMismatch / other errors
    swap       (IndexState) -> None, makes it the served state
    """

    def __init__(self, index_root: "str | Path | CachedRoot", served: Callable[[], str], load: Callable[[str], IndexState],
                 swap: Callable[[IndexState], None], interval_s: float, retry_s: float | None = None,
                 max_retry_s: float = 600.0):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.retry_s = float(interval_s if retry_s is None else retry_s)
        self.max_retry_s = float(max_retry_s)
        # a local root or one on object storage (``core.version_cache.CachedRoot``: ``current`` is one small GET)
        self.source = index_root if isinstance(index_root, CachedRoot) else CachedRoot(index_root)
        self.index_root = self.source.url
        self.interval_s = float(interval_s)
        self._served = served
        self._load = load
        self._swap = swap
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one poll at a time (the thread, or a test calling poll_once)
        self.refused: dict[str, str] = {}
        self.failed: dict[str, dict] = {}  # version -> {"error", "fingerprint", "attempts", "next_try"}
        self.last_error: str | None = None
        self.loads = 0  # load attempts (each verifies every file's sha256)
        self.load_failures = 0  # attempts that failed for another reason than a model mismatch
        self.reloads = 0
        self._thread: threading.Thread | None = None

    def start(self) -> "IndexWatcher":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="index-watcher", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the watcher must outlive any one bad poll
                log.exception("index watcher poll failed")

    def poll_once(self) -> str:
        """Check ``current`` once; returns what happened: "unchanged", "swapped", "refused" or "failed"."""
        with self._lock:
            version = self.source.current_version()
            if version is None or version == self._served():
                return "unchanged"
            if version in self.refused:
                return "refused"
            fingerprint = self._fingerprint(version)
            failed = self.failed.get(version)
            if failed is not None and failed["fingerprint"] == fingerprint and time.monotonic() < failed["next_try"]:
                return "failed"  # same files, back-off not over: do not re-read and re-hash them
            started = time.perf_counter()
            self.loads += 1
            try:
                state = self._load(version)
            except VersionMismatch as exc:
                self.refused[version] = str(exc)
                self.failed.pop(version, None)
                self.last_error = f"refused index {version}: {exc}"
                log.error("not serving index %s, still serving %s: %s", version, self._served(), exc)
                return "refused"
            except Exception as exc:  # noqa: BLE001 - keep serving the old index, retry later
                self.load_failures += 1
                attempts = 1 if failed is None else failed["attempts"] + 1
                wait = min(self.retry_s * 2 ** (attempts - 1), self.max_retry_s)
                self.last_error = f"could not load index {version}: {type(exc).__name__}: {exc}"
                self.failed[version] = {"error": self.last_error, "fingerprint": fingerprint, "attempts": attempts,
                                        "next_try": time.monotonic() + wait}
                log.error("could not load index %s (retrying when its files change or in %.0f s), still serving "
                          "%s: %s", version, wait, self._served(), exc)
                return "failed"
            old = self._served()
            self._swap(state)
            self.reloads += 1
            self.last_error = None
            self.failed.pop(version, None)
            log.info("now serving index %s (was %s): %s, %d items, loaded in %.1f s", version, old,
                     state.index.factory, state.index.ntotal, time.perf_counter() - started)
            return "swapped"

    def _fingerprint(self, version: str) -> tuple:
        """What a retry needs to differ: the version's files (local) or objects and manifest (object storage)."""
        return self.source.fingerprint(version)

    def problem(self) -> str | None:
        """Why the newest published version is not the one served (refused / failed to load), or None."""
        version = self.source.current_version()
        if version is None or version == self._served():
            return None
        if version in self.refused:
            return f"the newest published index {version} is refused: {self.refused[version]}"
        if version in self.failed:
            return f"the newest published index {version} failed to load: {self.failed[version]['error']}"
        return None
