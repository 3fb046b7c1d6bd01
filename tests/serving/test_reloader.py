import logging
import time
from types import SimpleNamespace

import pytest

from serving.reloader import IndexWatcher
from serving.state import VersionMismatch
from core import artifacts
from core import lifecycle


def fake_state(version):
    return SimpleNamespace(version=version, index=SimpleNamespace(factory="Flat", ntotal=3))


class Harness:
    def __init__(self, root, bad=(), flaky=(), retry_s=0.0):
        self.root = root
        self.served = fake_state("v1")
        self.bad, self.flaky = set(bad), dict.fromkeys(flaky, 1)
        self.loads = []
        self.watcher = IndexWatcher(root, lambda: self.served.version, self.load, self.swap, interval_s=0.01,
                                    retry_s=retry_s)

    def load(self, version):
        self.loads.append(version)
        if version in self.bad or version.startswith("corrupt"):
            if version.startswith("corrupt"):
                raise OSError(f"{version}: sha256 of index.faiss does not match the manifest")
            raise VersionMismatch(f"{version} was built from model m2")
        if self.flaky.get(version):
            self.flaky[version] -= 1
            raise OSError(f"{version}: index.faiss vanished")
        return fake_state(version)

    def swap(self, state):
        self.served = state

    def publish(self, version):
        artifacts.atomic_write_text(self.root / lifecycle.CURRENT, version + "\n")


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


def test_a_failed_version_is_not_reloaded_until_its_files_change_or_the_back_off_ends(tmp_path):
    # issue 13 item 4: a refused (corrupt) version was re-read and re-hashed on every poll
    h = Harness(tmp_path, retry_s=3600)
    (tmp_path / "corrupt-v7").mkdir()
    (tmp_path / "corrupt-v7" / "index.faiss").write_bytes(b"x" * 10)
    h.publish("corrupt-v7")
    assert [h.watcher.poll_once() for _ in range(5)] == ["failed"] * 5
    assert h.loads == ["corrupt-v7"] and h.watcher.loads == 1  # hashed once, not five times
    assert h.watcher.problem().startswith("the newest published index corrupt-v7 failed to load: could not load")
    (tmp_path / "corrupt-v7" / "index.faiss").write_bytes(b"y" * 11)  # its files changed: worth another look
    assert h.watcher.poll_once() == "failed" and h.loads == ["corrupt-v7"] * 2
    assert h.watcher.failed["corrupt-v7"]["attempts"] == 2
    h.watcher.failed["corrupt-v7"]["next_try"] = 0.0  # the back-off is over: retried with the same files
    assert h.watcher.poll_once() == "failed" and h.loads == ["corrupt-v7"] * 3
    h.publish("v1")
    assert h.watcher.problem() is None  # current names the served version again


def test_back_off_doubles_up_to_the_cap(tmp_path):
    h = Harness(tmp_path, retry_s=10)
    h.watcher.max_retry_s = 25
    h.publish("corrupt-v8")
    waits = []
    for _ in range(4):
        before = time.monotonic()
        h.watcher.failed.get("corrupt-v8", {})["next_try"] = 0.0
        assert h.watcher.poll_once() == "failed"
        waits.append(round(h.watcher.failed["corrupt-v8"]["next_try"] - before))
    assert waits == [10, 20, 25, 25]


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
