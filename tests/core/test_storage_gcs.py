"""What is particular to ``core.storage_gcs`` (the shared contract is in test_storage_contract.py and runs
against the GCS emulator too): preconditions enforced by the server, generation tokens, a replaced
object mid-read, pickling, and clear errors."""
from __future__ import annotations

import pickle

import pytest

from core.storage import open_storage
from core.storage_gcs import GCSStorage, parse_gs_url


def test_the_emulator_enforces_if_generation_match(gcs_url):
    """Raw google-cloud-storage calls, no backend code: write_if's guarantees come from the server."""
    from google.api_core import exceptions as gex

    storage = GCSStorage(gcs_url)
    blob = storage.client.bucket(storage.bucket_name).blob(f"{storage.prefix}/raw")
    blob.upload_from_string(b"1", if_generation_match=0)
    first = blob.generation
    with pytest.raises(gex.PreconditionFailed):
        storage.client.bucket(storage.bucket_name).blob(blob.name).upload_from_string(b"2", if_generation_match=0)
    blob.upload_from_string(b"3", if_generation_match=first)
    with pytest.raises(gex.PreconditionFailed):
        storage.client.bucket(storage.bucket_name).blob(blob.name).upload_from_string(b"4", if_generation_match=first)
    assert storage.read_bytes("raw") == b"3"


def test_tokens_are_generations_and_never_repeat_for_identical_bytes(gcs_url):
    storage = open_storage(gcs_url)
    assert isinstance(storage, GCSStorage) and storage.url == gcs_url
    assert storage.write_if("current", b"v1", None)
    _, first = storage.read_versioned("current")
    assert storage.write_if("current", b"v2", first)
    _, second = storage.read_versioned("current")
    assert storage.write_if("current", b"v1", second)  # back to the same bytes ...
    _, third = storage.read_versioned("current")
    assert first.isdigit() and len({first, second, third}) == 3  # ... but a new token: no ABA
    assert not storage.write_if("current", b"stale", first)


def test_an_object_replaced_while_being_read_is_refused_not_mixed(gcs_url):
    storage = GCSStorage(gcs_url, chunk_size=256 * 1024)
    storage.write_bytes("blob", b"a" * (600 * 1024))
    with storage.open_read("blob") as f:
        assert f.read(10) == b"a" * 10
        storage.write_bytes("blob", b"b" * (600 * 1024))
        with pytest.raises(OSError, match="was replaced or deleted while being read"):
            f.read()


def test_a_storage_pickles_without_its_client_and_works_after(gcs_url):
    storage = GCSStorage(gcs_url, chunk_size=512 * 1024)
    storage.write_bytes("k", b"v")
    clone = pickle.loads(pickle.dumps(storage))
    assert clone.url == storage.url and clone.chunk_size == storage.chunk_size and clone._client is None
    assert clone.read_bytes("k") == b"v"


@pytest.mark.parametrize("url, message", [("gs://", "names no bucket"), ("s3://b/p", "is not a GCS URL"),
                                          ("gs://b/a/../c", "must not contain '..'")])
def test_bad_urls_are_refused(url, message):
    with pytest.raises(ValueError, match=message):
        parse_gs_url(url)


def test_bad_arguments_are_refused(gcs_url):
    with pytest.raises(ValueError, match="multiple of 256 KiB"):
        GCSStorage(gcs_url, chunk_size=1000)
    with pytest.raises(TypeError, match="expected must be None .create. or the generation string"):
        GCSStorage(gcs_url).write_if("k", b"v", "etag-like")
