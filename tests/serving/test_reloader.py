import logging
import time
from types import SimpleNamespace

import pytest

from serving.reloader import IndexWatcher
from serving.state import VersionMismatch
from core import artifacts


def fake_state(version):
    return SimpleNamespace(version=version, index=SimpleNamespace(factory="Flat", ntotal=3))


class Harness:
    def __init__(self, root, bad=(), flaky=()):
        self.root = root
        self.served = fake_state("v1")
        self.bad, self.flaky = set(bad), dict.fromkeys(flaky, 1)
        self.loads = []
        self.watcher = IndexWatcher(root, lambda: self.served.version, self.load, self.swap, interval_s=0.01)

    def load(self, version):
        self.loads.append(version)
        if version in self.bad:
            raise VersionMismatch(f"{version} was built from model m2")
        if self.flaky.get(version):
            self.flaky[version] -= 1
            raise OSError(f"{version}: index.faiss vanished")
        return fake_state(version)

    def swap(self, state):
        self.served = state

    def publish(self, version):
        artifacts.atomic_write_text(self.root / artifacts.CURRENT, version + "\n")


def test_unchanged_swapped_refused_failed(tmp_path, caplog):
    h = Harness(tmp_path, bad={"v3"}, flaky={"v4"})
    assert h.watcher.poll_once() == "unchanged"  # nothing published yet
    h.publish("v1")
    assert h.watcher.poll_once() == "unchanged" and h.loads == []
    h.publish("v2")
    assert h.watcher.poll_once() == "swapped" and h.served.version == "v2" and h.watcher.reloads == 1
    with caplog.at_level(logging.ERROR, logger="serving.reloader"):
        h.publish("v3")
        assert h.watcher.poll_once() == "refused"
    assert h.served.version == "v2" and "not serving index v3, still serving v2" in caplog.text
    assert "v3" in h.watcher.refused and "model m2" in h.watcher.last_error
    assert h.watcher.poll_once() == "refused" and h.loads.count("v3") == 1  # refused once and for all
    h.publish("v4")
    assert h.watcher.poll_once() == "failed" and h.served.version == "v2"
    assert "could not load index v4" in h.watcher.last_error and "vanished" in h.watcher.last_error
    assert h.watcher.poll_once() == "swapped" and h.served.version == "v4"  # retried at the next poll
    assert h.watcher.last_error is None and h.watcher.reloads == 2


def test_the_thread_polls_until_stopped(tmp_path):
    h = Harness(tmp_path)
    h.watcher.start()
    try:
        h.publish("v2")
        deadline = time.monotonic() + 10
        while h.served.version != "v2" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert h.served.version == "v2"
    finally:
        h.watcher.stop()
    h.publish("v5")
    time.sleep(0.1)
    assert h.served.version == "v2"  # stopped: no more polls


def test_interval_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="interval_s must be > 0"):
        IndexWatcher(tmp_path, lambda: "v", lambda v: None, lambda s: None, 0)
