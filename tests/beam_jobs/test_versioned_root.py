"""Job housekeeping on a versioned root: lock, stale staging, version names, crash hook, rollback."""
import datetime as dt
import multiprocessing as mp

import pytest

from beam_jobs.versioned_root import (InjectedCrash, JobLock, check_crash_at, check_version_name,
                                      clean_staging, crash_point, new_version, rollback)
from core import artifacts


def finished(root, version, payload=b"x"):
    stage = artifacts.staging_dir(root, version)
    (stage / "data.bin").write_bytes(payload)
    artifacts.write_manifest(stage, {"version": version})
    return artifacts.promote(stage, root, version)


def _try_lock(root, queue):
    try:
        with JobLock(root, "job B"):
            queue.put("acquired")
    except RuntimeError as exc:
        queue.put(str(exc))


def test_lock_is_exclusive_across_processes_and_released_on_exit(tmp_path):
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    with JobLock(tmp_path, "job A"):
        proc = ctx.Process(target=_try_lock, args=(tmp_path, queue))
        proc.start()
        proc.join(30)
        message = queue.get(timeout=5)
        assert "is locked: another job is writing to" in message and "run job B again" in message
    proc = ctx.Process(target=_try_lock, args=(tmp_path, queue))
    proc.start()
    proc.join(30)
    assert queue.get(timeout=5) == "acquired"


def test_clean_staging_removes_only_unfinished_staging_dirs(tmp_path):
    finished(tmp_path, "v1")
    left = artifacts.staging_dir(tmp_path, "v2")
    (left / "part.bin").write_bytes(b"half")
    (tmp_path / "dead_letter").mkdir()
    assert clean_staging(tmp_path) == [left.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dead_letter", "v1"]
    assert artifacts.list_versions(tmp_path) == ["v1"]


def test_new_version_is_utc_time_and_never_reuses_a_name(tmp_path):
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    assert new_version(tmp_path, now=now) == "20260102T030405Z"
    (tmp_path / "20260102T030405Z").mkdir()
    other = tmp_path / "other"
    (other / "20260102T030405Z-1").mkdir(parents=True)
    assert new_version(tmp_path, other, now=now) == "20260102T030405Z-2"
    for name in ("", ".hidden", "a/b", "current"):
        with pytest.raises(ValueError, match="is not usable"):
            check_version_name(name)


def test_crash_point_fires_only_at_the_named_step():
    crash_point("train", None)
    crash_point("train", "add")
    with pytest.raises(InjectedCrash, match="after step 'add'"):
        crash_point("add", "add")
    with pytest.raises(ValueError, match=r"not a step of this job; steps: \['a', 'b'\]"):
        check_crash_at("c", ("a", "b"))


def test_rollback_flips_to_the_previous_or_a_named_version(tmp_path):
    for v in ("v1", "v2", "v3"):
        finished(tmp_path, v)
    artifacts.publish(tmp_path, "v3")
    assert rollback(tmp_path) == "v2" and artifacts.current_version(tmp_path) == "v2"
    assert rollback(tmp_path) == "v1"
    with pytest.raises(ValueError, match="nothing older to roll back to"):
        rollback(tmp_path)
    assert rollback(tmp_path, "v3") == "v3"
    with pytest.raises(ValueError, match=r"no finished version 'v9'; finished versions: \['v1', 'v2', 'v3'\]"):
        rollback(tmp_path, "v9")


def test_rollback_refuses_a_corrupt_target_and_keeps_current(tmp_path):
    finished(tmp_path, "v1")
    finished(tmp_path, "v2")
    artifacts.publish(tmp_path, "v2")
    (tmp_path / "v1" / "data.bin").write_bytes(b"y")
    with pytest.raises(ValueError, match="sha256"):
        rollback(tmp_path)
    assert artifacts.current_version(tmp_path) == "v2"
