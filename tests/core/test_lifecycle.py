"""The one publish lifecycle (core.lifecycle) on a local directory: lease, names, stage, manifest last,
conditional flip, prune, rollback with the model guard, crash hooks. The same lifecycle runs on S3 in
tests/core/test_lifecycle_s3.py."""
import datetime as dt
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys

import pytest

from core import lifecycle as L
from core.errors import OperationFailed
from core.guard import ModelVersionMismatch


def finished(root, version, payload=b"x", **fields):
    vr = root if isinstance(root, L.VersionedRoot) else L.VersionedRoot(root)
    stage = vr.stage(version)
    stage.storage.write_bytes("data.bin", payload)
    stage.storage.write_bytes("sub/more.bin", payload * 2)
    stage.write_manifest({"model_version": "m1", **fields})
    vr.finish(stage)
    return vr


# -- version names ----------------------------------------------------------------------------


def test_version_sort_key_orders_numbers_as_numbers_and_sequenced_names_by_creation():
    assert L.sorted_versions(["v10", "v9", "v1"]) == ["v1", "v9", "v10"]
    assert L.sorted_versions(["20260102T030405Z-10", "20260102T030405Z-2", "20260102T030405Z"]) == \
        ["20260102T030405Z", "20260102T030405Z-2", "20260102T030405Z-10"]
    assert L.sorted_versions(["000010-20250101T000000Z", "000009-20270101T000000Z", "v99"]) == \
        ["v99", "000009-20270101T000000Z", "000010-20250101T000000Z"]  # sequence wins over the clock
    assert L.sorted_versions(["crash-promote", "v0", "a10b", "a9c"]) == ["a9c", "a10b", "crash-promote", "v0"]


def test_new_version_is_one_more_than_any_sequence_seen_in_every_root(tmp_path):
    now = dt.datetime(2026, 12, 5, 4, 30, 0, tzinfo=dt.timezone.utc)
    a, b = L.VersionedRoot(tmp_path / "a"), L.VersionedRoot(tmp_path / "b")
    assert L.new_version(a, b, now=now) == "000001-20261205T043000Z"
    finished(a, "000001-20261205T043000Z")
    b.stage("000007-20261205T040000Z")  # an unfinished (staged) version counts too: its name is taken
    assert L.new_version(a, b, now=now) == "000008-20261205T043000Z"
    assert L.new_version(a, now=now) == "000002-20261205T043000Z"
    for name in ("", ".hidden", "a/b", "current", " v1", ".lease"):
        with pytest.raises(ValueError, match="is not usable"):
            L.check_version_name(name)


def test_crash_point_fires_only_at_the_named_step():
    L.crash_point("train", None)
    L.crash_point("train", "add")
    with pytest.raises(L.InjectedCrash, match="after step 'add'"):
        L.crash_point("add", "add")
    with pytest.raises(ValueError, match=r"not a step of this job; steps: \['a', 'b'\]"):
        L.check_crash_at("c", ("a", "b"))


# -- stage, manifest, publish -------------------------------------------------------------------


def test_manifest_is_written_last_with_sha256_counts_and_model(tmp_path):
    vr = L.VersionedRoot(tmp_path)
    stage = vr.stage("v1")
    stage.storage.write_bytes("a.bin", b"hello")
    assert vr.versions() == [] and not stage.finished()  # no manifest: not a version yet
    with pytest.raises(ValueError, match="refusing to finish an unfinished version"):
        vr.finish(stage)
    with pytest.raises(FileNotFoundError, match="is not a finished version"):
        vr.publish("v1")
    manifest = stage.write_manifest({"model_version": "m1", "count": 5})
    vr.finish(stage)
    assert manifest["files"] == {"a.bin": {"sha256": "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824",
                                           "bytes": 5}}
    assert (manifest["file_count"], manifest["count"], manifest["model_version"], manifest["version"]) == \
        (1, 5, "m1", "v1")
    assert dt.datetime.strptime(manifest["created"], "%Y-%m-%dT%H:%M:%SZ")
    assert vr.verify("v1") == manifest and vr.versions() == ["v1"]
    with pytest.raises(FileExistsError, match="versions are immutable"):
        vr.stage("v1")
    assert not (tmp_path / ".staging").exists()  # the marker went with finish


def test_publish_flips_current_with_unique_pointer_content(tmp_path):
    vr = finished(tmp_path, "v1")
    vr.publish("v1")
    first = (tmp_path / "current").read_bytes()
    vr.publish("v1")
    second = (tmp_path / "current").read_bytes()
    assert first.splitlines()[0] == second.splitlines()[0] == b"v1" and first != second  # no ABA via same bytes
    assert L.current_version(tmp_path) == "v1" and L.current_dir(tmp_path) == tmp_path / "v1"
    (tmp_path / "current").write_text("v1\n")  # a pointer from before the lifecycle still reads
    assert vr.current() == "v1"


def test_a_publisher_that_lost_the_race_is_refused_and_current_is_kept(tmp_path):
    vr = L.VersionedRoot(tmp_path)
    finished(vr, "v0")
    vr.publish("v0")
    a, b = L.VersionedRoot(tmp_path), L.VersionedRoot(tmp_path)
    sa, sb = a.stage("v1"), b.stage("v2")  # both start from current = v0
    for st, root in ((sa, a), (sb, b)):
        st.storage.write_bytes("x", st.version.encode())
        st.write_manifest({})
        root.finish(st)
    a.publish("v1")
    with pytest.raises(OperationFailed, match=r"changed by another publisher \(it now names 'v1'\) while 'v2'"):
        b.publish("v2")
    assert vr.current() == "v1"


def test_prune_keeps_the_newest_by_version_order_and_never_current_or_protected(tmp_path):
    vr = L.VersionedRoot(tmp_path)
    for v in ("v9", "v10", "v11", "v2"):
        finished(vr, v)
    vr.publish("v2")
    assert vr.versions() == ["v2", "v9", "v10", "v11"]
    assert vr.prune(keep=1, protect={"v9"}) == ["v10"]  # v2 is current, v9 protected, v11 newest
    assert vr.versions() == ["v2", "v9", "v11"] and not (tmp_path / "v10").exists()
    with pytest.raises(ValueError, match="keep must be >= 1"):
        vr.prune(0)


# -- rollback ----------------------------------------------------------------------------------


def test_rollback_flips_to_the_previous_or_a_named_version_in_version_order(tmp_path):
    vr = L.VersionedRoot(tmp_path)
    for v in ("v9", "v10", "v11"):  # as text, v10 < v11 < v9: rollback from v10 said "nothing older"
        finished(vr, v)
    vr.publish("v10")
    assert vr.rollback() == "v9" and vr.current() == "v9"
    with pytest.raises(ValueError, match="nothing older to roll back to"):
        vr.rollback()
    assert vr.rollback("v11") == "v11"
    assert vr.rollback() == "v10"
    with pytest.raises(ValueError, match=r"no finished version 'v8'; finished versions: \['v9', 'v10', 'v11'\]"):
        vr.rollback("v8")
    for v in ("x-2", "x-10"):
        finished(vr, v)
    vr.publish("x-10")
    assert vr.rollback() == "x-2"


def test_rollback_refuses_a_corrupt_target_and_another_models_version(tmp_path):
    vr = L.VersionedRoot(tmp_path)
    finished(vr, "v1")
    finished(vr, "v2", model_version="m2")
    finished(vr, "v3", model_version="m2")
    vr.publish("v3")
    with pytest.raises(ModelVersionMismatch) as info:
        vr.rollback("v1", model_version="m2", model_source="the run's model runs/x/model")
    message = str(info.value)
    for part in (f"{tmp_path}/v1 was made by model version 'm1'", "the run's model runs/x/model is model version "
                 "'m2'", "Roll back to a version built by this model, or rebuild from it"):
        assert part in message
    assert vr.current() == "v3"
    (tmp_path / "v2" / "data.bin").write_bytes(b"y")
    with pytest.raises(ValueError, match="sha256"):
        vr.rollback(model_version="m2")
    (tmp_path / "v2" / "data.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="size 0 bytes, manifest says 1; the file is truncated"):
        vr.rollback()
    assert vr.current() == "v3"


# -- the lease ---------------------------------------------------------------------------------


def _try_lock(root, queue):
    try:
        with L.VersionedRoot(root).lock("job B"):
            queue.put("acquired")
    except OperationFailed as exc:
        queue.put(f"{type(exc).__name__}: {exc}")


def _hold_and_die(root):
    lease = L.Lease(L.VersionedRoot(root), "the killed job", 3600).acquire()
    os._exit(0)  # killed: no release


def test_lease_is_exclusive_across_processes_says_who_holds_it_and_is_released(tmp_path):
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    with L.VersionedRoot(tmp_path).lock("job A"):
        proc = ctx.Process(target=_try_lock, args=(tmp_path, queue))
        proc.start()
        proc.join(60)
        message = queue.get(timeout=5)
    assert message.startswith(f"LockHeld: {tmp_path} is locked by job A (host {socket.gethostname()}, pid "
                               f"{os.getpid()}) since ")
    assert "wait for it to finish and run job B again" in message and "\n" not in message
    proc = ctx.Process(target=_try_lock, args=(tmp_path, queue))
    proc.start()
    proc.join(60)
    assert queue.get(timeout=5) == "acquired"


def test_a_dead_holders_lease_on_this_host_is_taken_over(tmp_path):
    proc = mp.get_context("fork").Process(target=_hold_and_die, args=(tmp_path,))
    proc.start()
    proc.join(60)
    held = json.loads((tmp_path / ".lease").read_text())
    assert held["job"] == "the killed job" and not held["released"]
    with L.VersionedRoot(tmp_path).lock("the next job") as lease:
        assert lease.record["job"] == "the next job"


def test_a_dead_holders_lease_whose_pid_was_reused_is_taken_over_and_a_live_holders_is_not(tmp_path):
    # a killed job's pid given to another process on this host used to block the next job until the 6 h expiry
    import subprocess
    import sys

    proc = mp.get_context("fork").Process(target=_hold_and_die, args=(tmp_path,))
    proc.start()
    proc.join(60)
    held = json.loads((tmp_path / ".lease").read_text())
    assert held["process"] and held["pid"] == proc.pid  # the holder recorded who it was
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # alive, with its own pid
    try:
        storage = L.VersionedRoot(tmp_path).storage
        live = L.process_identity(other.pid)
        assert live is not None and live != held["process"]
        # the lease names a live pid that is a live holder: it is respected
        storage.write_bytes(L.LEASE, json.dumps({**held, "pid": other.pid, "process": live}).encode())
        with pytest.raises(L.LockHeld, match=f"locked by the killed job \\(host .*, pid {other.pid}\\)"):
            with L.VersionedRoot(tmp_path).lock("the next job"):
                pass
        # the same live pid, but the lease was written by another process (the dead holder): the pid was reused
        storage.write_bytes(L.LEASE, json.dumps({**held, "pid": other.pid}).encode())
        with L.VersionedRoot(tmp_path).lock("the next job") as lease:
            assert lease.record["job"] == "the next job"
            assert lease.record["process"] == L.process_identity(os.getpid())
    finally:
        other.kill()
        other.wait()


def test_process_identity_tells_processes_apart_and_is_stable():
    import subprocess
    import sys

    mine = L.process_identity(os.getpid())
    assert mine is not None and mine == L.process_identity(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert L.process_identity(child.pid) not in (None, mine)
    finally:
        child.kill()
        child.wait()
    assert L.process_identity(child.pid) is None  # reaped: no such process


def test_an_expired_lease_of_another_host_is_taken_over_and_a_live_one_is_not(tmp_path):
    storage = L.VersionedRoot(tmp_path).storage
    other = {"job": "nightly rebuild", "host": "another-host", "pid": 1, "started": 0, "started_utc": "then",
             "released": False, "nonce": "n", "holder": "h"}
    storage.write_bytes(L.LEASE, json.dumps({**other, "expires": 10 ** 10}).encode())
    with pytest.raises(L.LockHeld, match="locked by nightly rebuild \\(host another-host, pid 1\\) since then"):
        with L.VersionedRoot(tmp_path).lock("twotower index"):
            pass
    storage.write_bytes(L.LEASE, json.dumps({**other, "expires": 1.0}).encode())
    with L.VersionedRoot(tmp_path).lock("twotower index"):
        pass


def test_renew_extends_and_a_lost_lease_is_refused(tmp_path):
    vr = L.VersionedRoot(tmp_path)
    lease = L.Lease(vr, "job A", 60).acquire()
    before = lease.record["expires"]
    lease.renew()
    assert lease.record["expires"] >= before
    vr.storage.write_bytes(L.LEASE, b"{}")  # someone else's lease now
    with pytest.raises(OperationFailed, match="lost its lease"):
        lease.renew()


def test_lock_removes_unfinished_versions_and_scratch_of_killed_jobs(tmp_path):
    vr = L.VersionedRoot(tmp_path)
    finished(vr, "v1")
    half = vr.stage("v2")
    half.storage.write_bytes("part.bin", b"half")
    vr.scratch("v2").write_bytes("shard-0.faiss", b"blob")
    (tmp_path / "dead_letter").mkdir()
    (tmp_path / "dead_letter" / "v2.jsonl").write_text("{}\n")
    with vr.lock("next job"):
        pass
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["dead_letter", "v1"]
    assert vr.versions() == ["v1"] and not (tmp_path / ".scratch").exists()
    # the abandoned name stays taken (a zombie worker of the killed job cannot write into a new "v2")
    assert json.loads((tmp_path / ".staging" / "v2").read_text())["state"] == "abandoned"
    with pytest.raises(FileExistsError, match="abandoned by a killed job"):
        vr.stage("v2")
    seq = L.VersionedRoot(tmp_path / "seq")
    dead = seq.stage("000005-20261205T000000Z")
    dead.storage.write_bytes("part", b"half")
    with seq.lock("next"):
        pass
    assert L.new_version(seq).startswith("000006-")
    finished(seq, "000006-20261205T010000Z")
    seq.publish("000006-20261205T010000Z")
    seq.prune(keep=1)  # the tombstone is older than every kept version: no longer needed
    assert not (tmp_path / "seq" / ".staging").exists()


def test_rollback_through_the_cli_does_not_import_beam(tmp_path):
    code = (
        "import sys\n"
        "from core import lifecycle as L\n"
        "from twotower.cli import main\n"
        f"root = L.VersionedRoot({str(tmp_path / 'run' / 'index')!r})\n"
        "for v in ('v1', 'v2'):\n"
        "    s = root.stage(v); s.storage.write_bytes('x', v.encode()); s.write_manifest({'model_version': 'm'})\n"
        "    root.finish(s)\n"
        "root.publish('v2')\n"
        f"rc = main(['rollback', '--run', {str(tmp_path / 'run')!r}])\n"
        "assert rc == 0 and root.current() == 'v1', rc\n"
        "print('beam imported' if 'apache_beam' in sys.modules else 'no beam')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "no beam"
