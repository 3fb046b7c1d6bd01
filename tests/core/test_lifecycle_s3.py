"""The one publish lifecycle (core.lifecycle) on object storage: a real S3 server (SeaweedFS, the ``s3_server``
fixture) and a GCS emulator (fake-gcs-server, ``gcs_server``). Same ``VersionedRoot`` as on a local directory
(tests/core/test_lifecycle.py); only the ``Storage`` differs. Object stores have no rename and no flock: the
manifest is the commit, ``current`` and the lease move only by conditional writes.

Covered here (issue 14's list): publish, rollback (with the model guard), racing publishers (exactly one
wins), racing lease takers (exactly one holds it), a crash between manifest and pointer (the pointer still
names a whole version), a truncated object (refused by sha256), pointer content unique per write (no ABA
through S3's MD5 ETags), an expired lease taken over, and a lease lost to another job refused on renew.
"""
from __future__ import annotations

import json
import threading

import pytest

from core import lifecycle as L
from core.errors import OperationFailed
from core.guard import ModelVersionMismatch
from core.storage import open_storage

BACKENDS = ["s3", "gcs"]


@pytest.fixture(params=BACKENDS)
def url(request) -> str:
    return request.getfixturevalue("s3_url" if request.param == "s3" else "gcs_url")


def write_version(vr: L.VersionedRoot, version: str, payload: bytes = b"vectors", model: str = "m1") -> dict:
    stage = vr.stage(version)
    stage.storage.write_bytes("part-00000-of-00002.bin", payload)
    stage.storage.write_bytes("part-00001-of-00002.bin", payload[::-1] + b"!")
    manifest = stage.write_manifest({"model_version": model, "count": 2})
    vr.finish(stage)
    return manifest


def race(n: int, attempt) -> list:
    """Run ``attempt(i)`` in ``n`` threads released together; their results (or exceptions) in thread order."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i):
        barrier.wait()
        try:
            results[i] = attempt(i)
        except Exception as exc:  # noqa: BLE001 - the race's losers are expected to raise
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


def test_publish_is_seen_by_a_fresh_reader_and_verifies(url):
    vr = L.VersionedRoot(url)
    assert vr.current() is None and vr.versions() == []
    with vr.lock("embed"):
        v1 = L.new_version(vr)
        manifest = write_version(vr, v1)
        vr.publish(v1)
    reader = L.VersionedRoot(open_storage(url))  # another process would build exactly this
    assert reader.current() == v1 and reader.versions() == [v1]
    assert reader.verify(v1) == manifest
    assert manifest["file_count"] == 2 and manifest["files"]["part-00000-of-00002.bin"]["bytes"] == 7
    assert not reader.storage.exists(L.LEASE) or json.loads(reader.storage.read_bytes(L.LEASE))["released"]


def test_pointer_content_is_unique_per_write_so_etags_never_repeat(url):
    vr = L.VersionedRoot(url)
    write_version(vr, "v1")
    tokens, contents = [], []
    for _ in range(3):
        vr.publish("v1")
        data, token = vr.storage.read_versioned(L.CURRENT)
        tokens.append(token)
        contents.append(data)
    assert len(set(tokens)) == 3 and len(set(contents)) == 3  # an S3 ETag is the MD5: same bytes, same token
    assert all(L.parse_pointer(c) == "v1" for c in contents)


def test_rollback_follows_creation_order_and_refuses_another_model(url):
    vr = L.VersionedRoot(url)
    for v in ("v9", "v10"):
        write_version(vr, v)
    write_version(vr, "v11", model="m2")
    vr.publish("v10")
    assert vr.rollback() == "v9"  # as text "v10" < "v9": rollback from v10 used to say "nothing older"
    vr.publish("v11")
    with pytest.raises(ModelVersionMismatch, match=r"was made by model version 'm1' but the run's model is "
                                                   r"model version 'm2'"):
        vr.rollback(model_version="m2", model_source="the run's model")
    assert vr.current() == "v11"
    assert vr.rollback("v9", model_version="m1") == "v9"


def test_racing_publishers_exactly_one_wins(url):
    vr = L.VersionedRoot(url)
    write_version(vr, "v0")
    vr.publish("v0")
    n = 6
    roots = [L.VersionedRoot(url) for _ in range(n)]
    stages = []
    for i, root in enumerate(roots):  # every publisher starts from current = v0 ...
        stage = root.stage(f"candidate-{i}")
        stage.storage.write_bytes("data.bin", f"built by {i}".encode())
        stage.write_manifest({"model_version": "m1"})
        root.finish(stage)
        stages.append(stage)
    results = race(n, lambda i: roots[i].publish(f"candidate-{i}"))  # ... and all flip at once
    winners = [i for i, r in enumerate(results) if not isinstance(r, Exception)]
    assert len(winners) == 1, results
    losers = [r for r in results if isinstance(r, Exception)]
    assert all(isinstance(r, OperationFailed) and "changed by another publisher" in str(r) for r in losers)
    assert vr.current() == f"candidate-{winners[0]}"
    vr.verify(vr.current())


def test_racing_lease_takers_exactly_one_holds_it(url):
    vr = L.VersionedRoot(url)
    n = 8
    leases = race(n, lambda i: L.Lease(L.VersionedRoot(url), f"job {i}", 600).acquire())
    held = [x for x in leases if isinstance(x, L.Lease)]
    refused = [x for x in leases if isinstance(x, Exception)]
    assert len(held) == 1 and len(refused) == n - 1, leases
    assert all(isinstance(r, L.LockHeld) and f"is locked by {held[0].job}" in str(r) for r in refused)
    held[0].release()
    with vr.lock("after the race"):
        pass


def test_a_crash_between_manifest_and_pointer_leaves_current_whole(url):
    vr = L.VersionedRoot(url)
    with vr.lock("rebuild"):
        write_version(vr, "000001-20261205T010000Z")
        vr.publish("000001-20261205T010000Z")
    # the next job writes every file and the manifest, then dies before the pointer flip
    crashed = L.VersionedRoot(url)
    lease = L.Lease(crashed, "rebuild that dies", 600).acquire()
    write_version(crashed, "000002-20261205T020000Z", payload=b"newer")
    with pytest.raises(L.InjectedCrash):
        L.crash_point("manifest", "manifest")
    # and one more died before its manifest
    half = crashed.stage("000003-20261205T030000Z")
    half.storage.write_bytes("part-00000-of-00002.bin", b"half")
    del lease  # the process is gone; its lease is never released (only its expiry lets the next job in)
    reader = L.VersionedRoot(url)
    assert reader.current() == "000001-20261205T010000Z"
    reader.verify(reader.current())  # what readers see is a whole version
    assert reader.versions() == ["000001-20261205T010000Z", "000002-20261205T020000Z"]  # 3 has no manifest
    # the dead job's lease expires; the next job takes it over, cleans the unfinished version, publishes
    data, token = reader.storage.read_versioned(L.LEASE)
    expired = {**json.loads(data), "host": "a-dead-host", "expires": 1.0}
    assert reader.storage.write_if(L.LEASE, json.dumps(expired).encode(), token)
    with reader.lock("next rebuild"):
        assert reader.storage.list("000003-20261205T030000Z") == []
        new = L.new_version(reader)
        assert L.sorted_versions([new, *reader.versions()])[-1] == new  # sorts after every finished version
        reader.publish("000002-20261205T020000Z")
    assert reader.current() == "000002-20261205T020000Z"


def test_a_truncated_object_is_refused_by_sha256_and_current_is_kept(url):
    vr = L.VersionedRoot(url)
    write_version(vr, "v1", payload=b"0123456789" * 100)
    write_version(vr, "v2")
    vr.publish("v2")
    key = "v1/part-00000-of-00002.bin"
    vr.storage.write_bytes(key, vr.storage.read_bytes(key)[:-10])  # truncated in the bucket
    with pytest.raises(ValueError, match=r"part-00000-of-00002.bin: size 990 bytes, manifest says 1000; the file "
                                         r"is truncated"):
        vr.rollback()
    assert vr.current() == "v2"
    vr.storage.write_bytes(key, b"9" + b"0123456789"[1:] + b"0123456789" * 99)  # same size, one byte flipped
    with pytest.raises(ValueError, match="sha256 .* does not match the manifest"):
        vr.verify("v1")


def test_an_expired_lease_is_taken_over_and_a_lost_lease_is_refused_on_renew(url):
    vr = L.VersionedRoot(url)
    other = {"job": "nightly rebuild", "host": "another-host", "pid": 1, "started": 0, "started_utc": "then",
             "released": False, "nonce": "n", "holder": "h"}
    assert vr.storage.write_if(L.LEASE, json.dumps({**other, "expires": 10 ** 10}).encode(), None)
    with pytest.raises(L.LockHeld, match=r"locked by nightly rebuild \(host another-host, pid 1\) since then"):
        with vr.lock("twotower index"):
            pass
    _, token = vr.storage.read_versioned(L.LEASE)
    assert vr.storage.write_if(L.LEASE, json.dumps({**other, "expires": 1.0}).encode(), token)
    lease = L.Lease(vr, "twotower index", 600).acquire()
    assert json.loads(vr.storage.read_bytes(L.LEASE))["job"] == "twotower index"
    lease.renew()
    _, token = vr.storage.read_versioned(L.LEASE)
    assert vr.storage.write_if(L.LEASE, json.dumps({**other, "expires": 10 ** 10}).encode(), token)  # taken
    with pytest.raises(OperationFailed, match="lost its lease"):
        lease.renew()
