"""The storage contract (``core.storage.Storage``), run unchanged against every backend.

Each test takes the ``storage`` fixture, parametrized over the backends: ``local`` (a temporary
directory, ``core.storage_local``), ``s3`` (a fresh prefix on the session's SeaweedFS server) and
``gcs`` (a fresh prefix on the session's fake-gcs-server), see ``tests/conftest.py``. A new backend adds one parameter here and must pass every test.
"""
from __future__ import annotations

import hashlib
import importlib.util
import threading

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.storage import Storage, open_storage

BACKENDS = ["local", "s3", "gcs"]
PART = 5 * 1024 * 1024  # the S3 backend's smallest part size: a 12 MiB object takes 3 parts


@pytest.fixture(params=BACKENDS)
def storage(request, tmp_path) -> Storage:
    if request.param == "local":
        if importlib.util.find_spec("core.storage_local") is None:
            pytest.skip("core/storage_local.py (LocalStorage) is not in this tree yet; it comes with the lifecycle "
                        "work, and then these tests run against it too")
        return open_storage(tmp_path / "root")
    if request.param == "gcs":
        from core.storage_gcs import GCSStorage

        return GCSStorage(request.getfixturevalue("gcs_url"), chunk_size=1024 * 1024)
    from core.storage_s3 import S3Storage

    return S3Storage(request.getfixturevalue("s3_url"), part_size=PART)


def big_payload(n_bytes: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size=n_bytes, dtype=np.uint8).tobytes()


def test_whole_objects_round_trip_and_overwrite(storage):
    storage.write_bytes("a/b/c.bin", b"\x00\x01binary\xff")
    storage.write_bytes("empty", b"")
    assert storage.read_bytes("a/b/c.bin") == b"\x00\x01binary\xff"
    assert storage.read_bytes("empty") == b""
    assert storage.exists("a/b/c.bin") and storage.size("a/b/c.bin") == 9 and storage.size("empty") == 0
    storage.write_bytes("a/b/c.bin", b"new")
    assert storage.read_bytes("a/b/c.bin") == b"new"
    assert not storage.exists("a/b/missing") and not storage.exists("a/b")


def test_list_is_recursive_sorted_and_prefixes_are_directories(storage):
    for key in ["v2/manifest.json", "v1/shard-1", "v1/shard-0", "v10/x", "current", "v1/sub/deep"]:
        storage.write_bytes(key, key.encode())
    assert storage.list() == ["current", "v1/shard-0", "v1/shard-1", "v1/sub/deep", "v10/x", "v2/manifest.json"]
    assert storage.list("v1") == ["v1/shard-0", "v1/shard-1", "v1/sub/deep"]  # not v10/
    assert storage.list("v1/") == storage.list("v1")
    assert storage.list("v1/sub") == ["v1/sub/deep"]
    assert storage.list("nothing-here") == []


def test_delete_and_delete_prefix(storage):
    for key in ["keep/a", "drop/a", "drop/b/c", "dropped-not/a"]:
        storage.write_bytes(key, b"x")
    storage.delete("keep/a")
    storage.delete("keep/a")  # absent: no error
    assert not storage.exists("keep/a")
    storage.delete_prefix("drop")
    assert storage.list() == ["dropped-not/a"]


def test_child_is_rooted_below_its_parent(storage):
    child = storage.child("runs/demo")
    child.write_bytes("index/current", b"v1")
    assert storage.read_bytes("runs/demo/index/current") == b"v1"
    assert child.list() == ["index/current"]
    assert child.url.rstrip("/").endswith("runs/demo")


def test_a_big_object_streams_in_and_out_and_seeks(storage):
    payload = big_payload(2 * PART + PART // 2 + 7)
    with storage.open_write("big/blob.bin") as out:
        for start in range(0, len(payload), 1_000_003):  # odd-sized writes straddle part boundaries
            out.write(payload[start:start + 1_000_003])
    assert storage.size("big/blob.bin") == len(payload)
    with storage.open_read("big/blob.bin") as f:
        assert hashlib.sha256(f.read()).digest() == hashlib.sha256(payload).digest()
        f.seek(PART - 3)
        assert f.read(10) == payload[PART - 3:PART + 7]
        f.seek(-5, 2)
        assert f.read() == payload[-5:]
        assert f.seekable()
    assert storage.read_bytes("big/blob.bin") == payload


def test_parquet_streams_through_open_write_and_open_read(storage):
    rng = np.random.default_rng(1)
    table = pa.table({"item_id": [f"item{i}" for i in range(3000)],
                      "vector": pa.FixedSizeListArray.from_arrays(pa.array(rng.normal(size=3000 * 8), pa.float32()), 8)})
    with storage.open_write("vectors/v1/part-0.parquet") as out:
        pq.write_table(table, out, row_group_size=1000)
    with storage.open_read("vectors/v1/part-0.parquet") as f:
        parquet = pq.ParquetFile(f)
        assert parquet.metadata.num_rows == 3000 and parquet.metadata.num_row_groups == 3
        assert parquet.read_row_group(2).column("item_id").to_pylist() == [f"item{i}" for i in range(2000, 3000)]
    with storage.open_read("vectors/v1/part-0.parquet") as f:
        assert pq.read_table(f).equals(table)


def test_a_stream_that_raises_leaves_nothing_and_keeps_the_old_object(storage):
    storage.write_bytes("obj", b"old")
    for size in (100, 2 * PART + 1):  # one part (single PUT) and a started multipart upload
        with pytest.raises(RuntimeError, match="boom"):
            with storage.open_write("obj") as out:
                out.write(big_payload(size))
                raise RuntimeError("boom")
        with pytest.raises(RuntimeError, match="boom"):
            with storage.open_write("fresh") as out:
                out.write(big_payload(size))
                raise RuntimeError("boom")
    assert storage.read_bytes("obj") == b"old"
    assert not storage.exists("fresh") and storage.list() == ["obj"]


def test_missing_objects_raise_file_not_found_naming_the_url(storage):
    url = storage.url.rstrip("/") + "/no/such/key"
    for call in (lambda: storage.read_bytes("no/such/key"), lambda: storage.open_read("no/such/key"),
                 lambda: storage.size("no/such/key")):
        with pytest.raises(FileNotFoundError) as info:
            call()
        assert url in str(info.value)
    assert storage.read_versioned("no/such/key") is None


@pytest.mark.parametrize("key", ["/abs/key", "a/../b", "../up"])
def test_keys_must_be_relative_without_dotdot(storage, key):
    with pytest.raises(ValueError, match="must be relative and must not contain '..'"):
        storage.write_bytes(key, b"x")
    with pytest.raises(ValueError, match="must be relative and must not contain '..'"):
        storage.read_bytes(key)


def test_conditional_create_and_replace(storage):
    assert storage.read_versioned("index/current") is None
    assert storage.write_if("index/current", b"v1", None) is True
    content, token = storage.read_versioned("index/current")
    assert content == b"v1" and isinstance(token, str) and token
    assert storage.write_if("index/current", b"other", None) is False  # exists: create refused
    assert storage.read_bytes("index/current") == b"v1"

    assert storage.write_if("index/current", b"v2", token) is True
    content2, token2 = storage.read_versioned("index/current")
    assert content2 == b"v2" and token2 != token
    assert storage.write_if("index/current", b"v3-stale", token) is False  # stale token refused
    assert storage.read_bytes("index/current") == b"v2"
    assert storage.write_if("index/current", b"v3", token2) is True
    assert storage.read_bytes("index/current") == b"v3"


def test_replace_of_a_deleted_object_is_refused(storage):
    storage.write_if("lease", b"job-a", None)
    _, token = storage.read_versioned("lease")
    storage.delete("lease")
    assert storage.write_if("lease", b"job-b", token) is False
    assert not storage.exists("lease")


def race(n: int, attempt) -> list:
    """Run ``attempt(i)`` in ``n`` threads released together; their results in thread order."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def run(i):
        barrier.wait()
        results[i] = attempt(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def test_racing_creates_have_exactly_one_winner(storage):
    for round_ in range(3):
        key = f"locks/job-{round_}"
        results = race(12, lambda i: storage.write_if(key, f"owner-{i}".encode(), None))
        assert results.count(True) == 1 and results.count(False) == 11, results
        assert storage.read_bytes(key) == f"owner-{results.index(True)}".encode()


def test_racing_replaces_with_the_same_token_have_exactly_one_winner(storage):
    storage.write_bytes("index/current", b"v0")
    for round_ in range(3):
        _, token = storage.read_versioned("index/current")
        results = race(12, lambda i: storage.write_if("index/current", f"v{round_ + 1}-by-{i}".encode(), token))
        assert results.count(True) == 1, results
        assert storage.read_bytes("index/current") == f"v{round_ + 1}-by-{results.index(True)}".encode()
