"""What is particular to ``core.storage_s3`` (the shared contract is in test_storage_contract.py and runs
against S3 too): the server really enforces conditional writes, multipart uploads, an object replaced
mid-read, pickling for Beam workers, configuration from the environment, and clear errors."""
from __future__ import annotations

import pickle

import pytest
from botocore.exceptions import ClientError

from core.storage import open_storage
from core.storage_s3 import DEFAULT_PART_SIZE, S3Storage, parse_s3_url

PART = 5 * 1024 * 1024


def status_of(call) -> int:
    with pytest.raises(ClientError) as info:
        call()
    return info.value.response["ResponseMetadata"]["HTTPStatusCode"]


def test_the_server_enforces_if_none_match_and_if_match(s3_server):
    """SeaweedFS itself (raw boto3, no backend code) refuses a create over an existing object and a
    replace with a stale ETag with 412, so write_if's guarantees come from the server."""
    client, bucket = s3_server.client(), s3_server.bucket
    first = client.put_object(Bucket=bucket, Key="raw/p", Body=b"1", IfNoneMatch="*")["ETag"]
    assert status_of(lambda: client.put_object(Bucket=bucket, Key="raw/p", Body=b"2", IfNoneMatch="*")) == 412
    second = client.put_object(Bucket=bucket, Key="raw/p", Body=b"3", IfMatch=first)["ETag"]
    assert status_of(lambda: client.put_object(Bucket=bucket, Key="raw/p", Body=b"4", IfMatch=first)) == 412
    assert client.get_object(Bucket=bucket, Key="raw/p")["Body"].read() == b"3" and second != first


def test_open_storage_picks_the_s3_backend_from_the_environment(s3_url, s3_server):
    storage = open_storage(s3_url + "/")
    assert isinstance(storage, S3Storage) and storage.url == s3_url
    assert storage.client.meta.endpoint_url == s3_server.endpoint
    storage.write_bytes("x", b"1")
    assert s3_server.client().get_object(Bucket=s3_server.bucket, Key=f"{storage.prefix}/x")["Body"].read() == b"1"


def test_prefixes_are_isolated(s3_url):
    a, b = S3Storage(s3_url + "/a"), S3Storage(s3_url + "/ab")
    a.write_bytes("k", b"a")
    b.write_bytes("k", b"b")
    assert a.list() == ["k"] and b.list() == ["k"] and a.read_bytes("k") == b"a"
    a.delete_prefix("")
    assert a.list() == [] and b.read_bytes("k") == b"b"


def test_big_writes_are_multipart_and_small_ones_a_single_put(s3_url, s3_server):
    storage = S3Storage(s3_url, part_size=PART)
    with storage.open_write("small") as out:
        out.write(b"x" * 1000)
    with storage.open_write("big") as out:
        out.write(b"y" * (2 * PART + 1))
    storage.write_bytes("big2", b"z" * (PART + 1))
    client = s3_server.client()
    etag = lambda key: client.head_object(Bucket=storage.bucket, Key=f"{storage.prefix}/{key}")["ETag"]
    assert "-" not in etag("small")
    assert etag("big").strip('"').endswith("-3") and etag("big2").strip('"').endswith("-2")  # parts in the ETag
    assert storage.read_bytes("big") == b"y" * (2 * PART + 1)


def test_an_aborted_stream_leaves_no_pending_multipart_upload(s3_url, s3_server):
    storage = S3Storage(s3_url, part_size=PART)
    with pytest.raises(KeyboardInterrupt):
        with storage.open_write("half") as out:
            out.write(b"q" * (PART + 10))
            raise KeyboardInterrupt
    uploads = s3_server.client().list_multipart_uploads(Bucket=storage.bucket, Prefix=storage.prefix)
    assert uploads.get("Uploads", []) == [] and not storage.exists("half")


def test_an_object_replaced_while_being_read_is_refused_not_mixed(s3_url):
    storage = S3Storage(s3_url)
    storage.write_bytes("blob", b"a" * 100)
    with storage.open_read("blob") as f:
        storage.write_bytes("blob", b"b" * 100)
        with pytest.raises(OSError, match="was replaced or deleted while being read"):
            f.read()


def test_a_storage_pickles_without_its_client_and_works_after(s3_url):
    storage = S3Storage(s3_url, part_size=6 * 1024 * 1024)
    storage.write_bytes("k", b"v")
    clone = pickle.loads(pickle.dumps(storage))
    assert clone.url == storage.url and clone.part_size == storage.part_size and clone._client is None
    assert clone.read_bytes("k") == b"v"


def test_wrong_credentials_and_a_missing_bucket_are_explained(s3_url, s3_server, monkeypatch):
    bucket, _ = parse_s3_url(s3_url)
    with pytest.raises(FileNotFoundError, match=r"bucket 'no-such-bucket' does not exist at http://127\.0\.0\.1"):
        S3Storage("s3://no-such-bucket/p").read_bytes("k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(PermissionError, match="check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"):
        S3Storage(s3_url).write_bytes("k", b"v")


@pytest.mark.parametrize("url, message", [
    ("s3://", "names no bucket"), ("s3:///prefix", "names no bucket"), ("gs://b/p", "is not an S3 URL"),
    ("s3://b/a/../c", "must not contain '..'")])
def test_bad_urls_are_refused(url, message):
    with pytest.raises(ValueError, match=message):
        S3Storage(url)


def test_bad_arguments_are_refused(s3_url):
    with pytest.raises(ValueError, match="below S3's 5 MiB minimum part size"):
        S3Storage(s3_url, part_size=1024)
    storage = S3Storage(s3_url)
    with pytest.raises(TypeError, match="expected must be None .create. or the ETag string"):
        storage.write_if("k", b"v", "")
    with pytest.raises(ValueError, match="names no object"):
        storage.write_bytes("dir/", b"v")
    assert S3Storage(s3_url).part_size == DEFAULT_PART_SIZE


def test_etags_repeat_for_identical_bytes_so_pointers_need_unique_content(s3_url):
    """The ABA hazard the lifecycle must design around (docs/notes/storage.md): an S3 token is the
    content's MD5, so a stale writer holding the token of "v1" wins again once "v1" is written back."""
    storage = S3Storage(s3_url)
    storage.write_if("current", b"v1", None)
    _, first = storage.read_versioned("current")
    storage.write_if("current", b"v2", first)
    _, second = storage.read_versioned("current")
    storage.write_if("current", b"v1", second)
    assert storage.read_versioned("current")[1] == first
    assert storage.write_if("current", b"stale writer", first) is True
