"""``IndexWatcher``: pick up a newly published index without dropping requests.

A daemon thread polls ``<run>/index/current`` every ``interval_s``. When it names a version other than the
one served, the watcher loads and verifies it in the background (``load(version) -> IndexState``, which
checks sha256s and the model version), then hands it to ``swap(state)``; the service replaces its state
between batches, so in-flight batches finish on the old index. A version that belongs to another model
(``VersionMismatch``) is refused once and for all (versions are immutable) and logged; any other failure
(a half-pruned directory, a corrupt file) is logged and retried at the next poll. The old index keeps
serving in both cases.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

from serving.state import IndexState, VersionMismatch
from core import artifacts

log = logging.getLogger(__name__)


class IndexWatcher:
    """Polls ``index_root/current``; see the module docstring.

    served     () -> the index version being served now
    load       (version) -> IndexState, raising VersionMismatch / other errors
    swap       (IndexState) -> None, makes it the served state
    """

    def __init__(self, index_root: str | Path, served: Callable[[], str], load: Callable[[str], IndexState],
                 swap: Callable[[IndexState], None], interval_s: float):
        if interval_s <= 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.index_root = Path(index_root)
        self.interval_s = float(interval_s)
        self._served = served
        self._load = load
        self._swap = swap
        self._stop = threading.Event()
        self._lock = threading.Lock()  # one poll at a time (the thread, or a test calling poll_once)
        self.refused: dict[str, str] = {}
        self.last_error: str | None = None
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
            version = artifacts.current_version(self.index_root)
            if version is None or version == self._served():
                return "unchanged"
            if version in self.refused:
                return "refused"
            started = time.perf_counter()
            try:
                state = self._load(version)
            except VersionMismatch as exc:
                self.refused[version] = str(exc)
                self.last_error = f"refused index {version}: {exc}"
                log.error("not serving index %s, still serving %s: %s", version, self._served(), exc)
                return "refused"
            except Exception as exc:  # noqa: BLE001 - keep serving the old index, retry next poll
                self.last_error = f"could not load index {version}: {type(exc).__name__}: {exc}"
                log.error("could not load index %s (will retry), still serving %s: %s", version, self._served(), exc)
                return "failed"
            old = self._served()
            self._swap(state)
            self.reloads += 1
            self.last_error = None
            log.info("now serving index %s (was %s): %s, %d items, loaded in %.1f s", version, old,
                     state.index.factory, state.index.ntotal, time.perf_counter() - started)
            return "swapped"
