"""core.version_cache: artifacts on S3 (SeaweedFS) / GCS (fake-gcs-server) copied to a local cache,
verified by sha256 before anything loads them."""
from __future__ import annotations

import json

import pytest

from core import artifacts
from core.storage import open_storage
from core.lifecycle import VersionedRoot
from core.version_cache import CachedRoot, cached_directory, fetch_verified, root_hash


def make_artifact(tmp_path, name="v1", payload=b"index bytes " * 1000):
    """A local finished artifact directory (files + manifest written last)."""
    d = tmp_path / "src" / name
    (d / "sub").mkdir(parents=True)
    (d / "index.faiss").write_bytes(payload)
    (d / "sub" / "ids.parquet").write_bytes(b"ids-" + name.encode())
    artifacts.write_manifest(d, {"kind": "item_index", "version": name})
    return d


def upload(storage, local_dir, prefix):
    for p in sorted(local_dir.rglob("*")):
        if p.is_file():
            storage.write_bytes(f"{prefix}/{p.relative_to(local_dir).as_posix()}" if prefix else
                                p.relative_to(local_dir).as_posix(), p.read_bytes())


@pytest.fixture(params=["s3", "gcs"])
def remote_url(request):
    return request.getfixturevalue("s3_url" if request.param == "s3" else "gcs_url")


def test_fetch_downloads_every_listed_file_verified_and_reuses_the_cache(remote_url, tmp_path):
    src = make_artifact(tmp_path)
    store = open_storage(remote_url)
    upload(store, src, "v1")
    store.write_bytes("current", b"v1\n")
    root = CachedRoot(remote_url, tmp_path / "cache")
    assert root.current_version() == "v1"
    local = root.fetch("v1")
    assert local == tmp_path / "cache" / root_hash(remote_url) / "v1"
    assert (local / "index.faiss").read_bytes() == (src / "index.faiss").read_bytes()
    assert (local / "sub" / "ids.parquet").read_bytes() == b"ids-v1"
    assert artifacts.verify_manifest(local)["version"] == "v1"
    # a second fetch reads only the manifest: the data objects are not needed any more
    store.delete("v1/index.faiss")
    assert root.fetch("v1") == local and (local / "index.faiss").is_file()
    assert [p.name for p in local.parent.iterdir()] == ["v1"]  # no staging left behind


def test_a_truncated_object_is_refused_before_loading_and_nothing_is_cached(remote_url, tmp_path):
    src = make_artifact(tmp_path)
    store = open_storage(remote_url)
    upload(store, src, "v1")
    data = (src / "index.faiss").read_bytes()
    store.write_bytes("v1/index.faiss", data[: len(data) // 2])
    root = CachedRoot(remote_url, tmp_path / "cache")
    with pytest.raises(ValueError, match=r"index\.faiss: 6000 bytes, the manifest says 12000; the object is "
                                         r"truncated.*not loaded"):
        root.fetch("v1")
    assert not root.local_root.exists() or list(root.local_root.iterdir()) == []


def test_an_altered_object_of_the_same_size_is_refused_by_sha256(s3_url, tmp_path):
    src = make_artifact(tmp_path)
    store = open_storage(s3_url)
    upload(store, src, "v1")
    data = bytearray((src / "index.faiss").read_bytes())
    data[100] ^= 1
    store.write_bytes("v1/index.faiss", bytes(data))
    with pytest.raises(ValueError, match=r"index\.faiss: sha256 .* does not match the manifest"):
        CachedRoot(s3_url, tmp_path / "cache").fetch("v1")


def test_a_cache_entry_from_an_earlier_refused_or_different_manifest_is_replaced(s3_url, tmp_path):
    store = open_storage(s3_url)
    upload(store, make_artifact(tmp_path, payload=b"a" * 10), "v1")
    root = CachedRoot(s3_url, tmp_path / "cache")
    first = root.fetch("v1")
    assert (first / "index.faiss").read_bytes() == b"a" * 10
    upload(store, make_artifact(tmp_path / "again", payload=b"b" * 20), "v1")  # a rewritten version
    assert (root.fetch("v1") / "index.faiss").read_bytes() == b"b" * 20


def test_missing_manifest_missing_file_and_bad_keys_are_clear_errors(s3_url, tmp_path):
    store = open_storage(s3_url)
    store.write_bytes("v1/index.faiss", b"x")  # a version whose manifest never landed
    root = CachedRoot(s3_url, tmp_path / "cache")
    with pytest.raises(FileNotFoundError, match=r"v1/manifest\.json is missing: .* not a finished artifact"):
        root.fetch("v1")
    store.write_bytes("v2/manifest.json", json.dumps({"files": {"gone.bin": {"sha256": "0" * 64, "bytes": 1}}}).encode())
    with pytest.raises(ValueError, match=r"v2/gone\.bin: listed in the manifest but missing"):
        root.fetch("v2")
    store.write_bytes("v3/manifest.json", json.dumps({"files": {"../x": {"sha256": "0" * 64, "bytes": 1}}}).encode())
    with pytest.raises(ValueError, match=r"must be relative and must not contain '\.\.'"):
        root.fetch("v3")
    store.write_bytes("v4/manifest.json", b"not json")
    with pytest.raises(ValueError, match=r"not a readable manifest"):
        root.fetch("v4")
    with pytest.raises(ValueError, match=r"plain version name"):
        root.fetch("../v1")
    assert root.current_version() is None
    with pytest.raises(FileNotFoundError, match=r"current does not exist: nothing has been published"):
        root.fetch_current()


def test_the_pointer_is_read_by_the_lifecycle_first_line_version_then_a_writer_line():
    from core.lifecycle import parse_pointer, pointer_bytes

    assert parse_pointer(b"v7\n") == "v7" and parse_pointer(pointer_bytes("v7")) == "v7"
    assert parse_pointer(b"") is None


def test_local_roots_are_read_in_place(tmp_path):
    src = make_artifact(tmp_path)
    VersionedRoot(src.parent).publish("v1")
    root = CachedRoot(src.parent, tmp_path / "cache")
    assert root.current_version() == "v1" and root.fetch_current() == src
    assert not (tmp_path / "cache").exists()
    assert cached_directory(src) == src


def test_cached_directory_is_keyed_by_the_manifest_so_a_re_export_gets_a_new_entry(s3_url, tmp_path):
    store = open_storage(s3_url)
    upload(store, make_artifact(tmp_path, payload=b"m1"), "model")
    first = cached_directory(f"{s3_url}/model", tmp_path / "cache")
    assert (first / "index.faiss").read_bytes() == b"m1"
    upload(store, make_artifact(tmp_path / "again", payload=b"m2"), "model")
    second = cached_directory(f"{s3_url}/model", tmp_path / "cache")
    assert second != first and (second / "index.faiss").read_bytes() == b"m2"
    assert second.parent == first.parent == tmp_path / "cache" / root_hash(f"{s3_url}/model")


def test_fetch_verified_of_a_whole_prefix(s3_url, tmp_path):
    store = open_storage(s3_url)
    upload(store, make_artifact(tmp_path), "")
    local, manifest = fetch_verified(store, "", tmp_path / "copy")
    assert manifest["version"] == "v1" and artifacts.verify_manifest(local)["version"] == "v1"
