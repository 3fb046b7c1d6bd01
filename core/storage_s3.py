"""``S3Storage``: the storage interface (``core.storage``) on an S3-compatible object store, via boto3.

    open_storage("s3://bucket/prefix")        every key is an object under ``prefix/`` in ``bucket``

Endpoint, region and credentials come from the standard AWS configuration, read by boto3 itself:
``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` (an S3-compatible server such as SeaweedFS or MinIO),
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` / ``AWS_SESSION_TOKEN``, ``AWS_PROFILE``,
``AWS_REGION`` / ``AWS_DEFAULT_REGION`` (``us-east-1`` when none is set). With a custom endpoint,
buckets are addressed by path (``http://host/bucket/key``), which every S3-compatible server accepts.

Coordination uses S3 conditional writes (PutObject, 2024): ``write_if(key, data, None)`` sends
``If-None-Match: *`` (create only if absent) and ``write_if(key, data, etag)`` sends ``If-Match: <etag>``
(replace only if unchanged). The server refuses a lost race with 412 PreconditionFailed (or 409
ConditionalRequestConflict while another conditional write is in flight, or 404 for If-Match on a
missing object); all three make ``write_if`` return False. The token of ``read_versioned`` is the ETag.
An ETag is the content's MD5 for single-part objects, so rewriting identical bytes gives back an old
token: pointer and lease objects should carry something unique per write (a writer id, a time).

Big objects stream: ``open_read`` is a seekable buffered reader over ranged GETs (each GET carries
``If-Match`` with the ETag seen at open, so an object replaced mid-read raises instead of mixing two
versions); ``open_write`` buffers one part (8 MiB, doubling every 1000 parts, so no size limit) and
uploads parts as they fill (multipart upload), completing the upload when the ``with`` block exits
cleanly and aborting it when it raises, so the object appears whole or not at all. Memory stays
at about one part per open stream, whatever the object's size.

A ``S3Storage`` pickles without its client (Beam ships DoFns holding one to workers); each process
creates its own client on first use.
"""
from __future__ import annotations

import io
import os
import threading
from contextlib import contextmanager
from typing import BinaryIO, Iterator

from core.storage import Storage, check_key, join_url, register_backend

DEFAULT_PART_SIZE = 8 * 1024 * 1024   # multipart part size (S3's minimum is 5 MiB for all but the last part)
PARTS_PER_DOUBLING = 1000             # part size doubles every this many parts (S3 allows 10,000 parts)
READ_BUFFER = 8 * 1024 * 1024         # bytes fetched per ranged GET by open_read
DELETE_BATCH = 1000                   # DeleteObjects takes at most 1000 keys


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``; ValueError naming the URL otherwise."""
    if not url.startswith("s3://"):
        raise ValueError(f"{url!r} is not an S3 URL; write s3://<bucket>/<prefix>")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not bucket or "/" in bucket or bucket in (".", ".."):
        raise ValueError(f"{url!r} names no bucket; write s3://<bucket>/<prefix>")
    prefix = prefix.strip("/")
    if prefix:
        check_key(prefix)
    return bucket, prefix


def _make_client():
    """A boto3 S3 client configured from the standard AWS environment (see the module docstring)."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    custom_endpoint = bool(os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"))
    config = Config(retries={"max_attempts": 5, "mode": "standard"},
                    s3={"addressing_style": "path" if custom_endpoint else "auto"},
                    max_pool_connections=32)
    region = session.region_name or "us-east-1"
    return session.client("s3", region_name=region, config=config)


def _error_code(exc) -> tuple[str, int]:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def _is_missing(exc) -> bool:
    code, status = _error_code(exc)
    return code in ("NoSuchKey", "404", "NotFound") or (status == 404 and code != "NoSuchBucket")


def _lost_condition(exc) -> bool:
    code, status = _error_code(exc)
    return status in (409, 412) or code in ("PreconditionFailed", "ConditionalRequestConflict")


class S3Storage(Storage):
    """Objects under ``s3://bucket/prefix``. ``client``: a boto3 S3 client to share (default: one per
    process, from the environment); ``part_size``: bytes per multipart part of ``open_write``."""

    def __init__(self, url: str, client=None, part_size: int = DEFAULT_PART_SIZE):
        self.bucket, self.prefix = parse_s3_url(str(url))
        self.url = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        if part_size < 5 * 1024 * 1024:
            raise ValueError(f"part_size={part_size} is below S3's 5 MiB minimum part size; pass at least "
                             f"{5 * 1024 * 1024}")
        self.part_size = part_size
        self._client = client
        self._client_pid = os.getpid() if client is not None else None
        self._lock = threading.Lock()

    # -- plumbing -------------------------------------------------------------------------------

    @property
    def client(self):
        if self._client is None or self._client_pid != os.getpid():  # boto3 clients must not cross a fork
            with self._lock:
                if self._client is None or self._client_pid != os.getpid():
                    self._client = _make_client()
                    self._client_pid = os.getpid()
        return self._client

    def __getstate__(self):
        return {"url": self.url, "part_size": self.part_size}

    def __setstate__(self, state):
        self.__init__(state["url"], part_size=state["part_size"])

    def _object_key(self, key: str) -> str:
        check_key(key)
        if not key or key.endswith("/"):
            raise ValueError(f"{self._url(key)!r} names no object (empty key or trailing '/'); pass an object key "
                             "like 'index/current'")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _url(self, key: str) -> str:
        return join_url(self.url, key)

    def _fail(self, exc, key: str, doing: str) -> OSError:
        """A ClientError -> an OSError naming the URL and what to check."""
        code, status = _error_code(exc)
        if code == "NoSuchBucket":
            return FileNotFoundError(f"{self._url(key)}: bucket {self.bucket!r} does not exist at "
                                     f"{self.client.meta.endpoint_url}; create it or fix the URL")
        if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return PermissionError(f"{self._url(key)}: {doing} was refused ({code}); check AWS_ACCESS_KEY_ID / "
                                   "AWS_SECRET_ACCESS_KEY and the bucket policy")
        return OSError(f"{self._url(key)}: {doing} failed ({code or status}: {exc})")

    def _missing(self, key: str) -> FileNotFoundError:
        return FileNotFoundError(f"{self._url(key)}: no such object")

    # -- whole objects --------------------------------------------------------------------------

    def read_bytes(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        obj = self._object_key(key)
        try:
            return self.client.get_object(Bucket=self.bucket, Key=obj)["Body"].read()
        except ClientError as exc:
            if _is_missing(exc):
                raise self._missing(key) from None
            raise self._fail(exc, key, "reading") from exc

    def write_bytes(self, key: str, data: bytes) -> None:
        from botocore.exceptions import ClientError

        obj = self._object_key(key)
        if len(data) > self.part_size:
            with self.open_write(key) as out:
                out.write(data)
            return
        try:
            self.client.put_object(Bucket=self.bucket, Key=obj, Body=bytes(data))
        except ClientError as exc:
            raise self._fail(exc, key, "writing") from exc

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        from botocore.exceptions import ClientError

        obj = self._object_key(key)
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=obj)
            return response["Body"].read(), response["ETag"]
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise self._fail(exc, key, "reading") from exc

    def write_if(self, key: str, data: bytes, expected: str | None) -> bool:
        from botocore.exceptions import ClientError

        obj = self._object_key(key)
        if expected is not None and not (isinstance(expected, str) and expected):
            raise TypeError(f"write_if({self._url(key)!r}): expected must be None (create) or the ETag string "
                            f"read_versioned returned, got {expected!r}")
        condition = {"IfNoneMatch": "*"} if expected is None else {"IfMatch": expected}
        try:
            self.client.put_object(Bucket=self.bucket, Key=obj, Body=bytes(data), **condition)
            return True
        except ClientError as exc:
            if _lost_condition(exc) or (expected is not None and _is_missing(exc)):
                return False
            raise self._fail(exc, key, "conditional writing") from exc

    # -- metadata and listing -------------------------------------------------------------------

    def _head(self, key: str) -> dict | None:
        from botocore.exceptions import ClientError

        obj = self._object_key(key)
        try:
            return self.client.head_object(Bucket=self.bucket, Key=obj)
        except ClientError as exc:
            if _is_missing(exc):
                return None
            raise self._fail(exc, key, "looking up") from exc

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise self._missing(key)
        return int(head["ContentLength"])

    def list(self, prefix: str = "") -> list[str]:
        """Keys equal to ``prefix`` or below ``prefix/`` (``prefix`` is a directory-like path, so ``runs/a``
        does not list ``runs/ab``); every key when ``prefix`` is empty."""
        from botocore.exceptions import ClientError

        prefix = check_key(prefix).strip("/")
        base = f"{self.prefix}/" if self.prefix else ""
        wanted = base + prefix
        paginator = self.client.get_paginator("list_objects_v2")
        keys = []
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=wanted):
                for item in page.get("Contents", ()):
                    key = item["Key"][len(base):]
                    if not prefix or key == prefix or key.startswith(prefix + "/"):
                        keys.append(key)
        except ClientError as exc:
            raise self._fail(exc, prefix, "listing") from exc
        return sorted(keys)

    def delete(self, key: str) -> None:
        from botocore.exceptions import ClientError

        obj = self._object_key(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=obj)
        except ClientError as exc:
            if not _is_missing(exc):
                raise self._fail(exc, key, "deleting") from exc

    def delete_prefix(self, prefix: str) -> None:
        from botocore.exceptions import ClientError

        keys = self.list(prefix)
        for start in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": self._object_key(k)} for k in keys[start:start + DELETE_BATCH]]
            try:
                response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            except ClientError as exc:
                raise self._fail(exc, prefix, "deleting") from exc
            errors = [e for e in response.get("Errors", ()) if e.get("Code") != "NoSuchKey"]
            if errors:
                raise OSError(f"{self._url(prefix)}: could not delete {len(errors)} object(s), e.g. "
                              f"{errors[0].get('Key')!r}: {errors[0].get('Code')} {errors[0].get('Message')}")

    def child(self, prefix: str) -> "S3Storage":
        return S3Storage(join_url(self.url, check_key(prefix)), client=self._client, part_size=self.part_size)

    # -- streams --------------------------------------------------------------------------------

    def open_read(self, key: str) -> BinaryIO:
        head = self._head(key)
        if head is None:
            raise self._missing(key)
        raw = _RangedReader(self, key, int(head["ContentLength"]), head["ETag"])
        return io.BufferedReader(raw, buffer_size=READ_BUFFER)

    @contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        writer = _MultipartWriter(self, key)
        try:
            yield writer
        except BaseException:
            writer.abort()
            raise
        writer.finish()


class _RangedReader(io.RawIOBase):
    """Seekable raw stream over ranged GETs of one object version (``If-Match`` its ETag)."""

    def __init__(self, storage: S3Storage, key: str, size: int, etag: str):
        super().__init__()
        self._storage, self._key, self._size, self._etag = storage, key, size, etag
        self._obj = storage._object_key(key)
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        if base + offset < 0:
            raise ValueError(f"{self._storage._url(self._key)}: seek to {base + offset} (< 0)")
        self._pos = base + offset
        return self._pos

    def readall(self) -> bytes:
        """The rest of the object in READ_BUFFER-sized requests (io's default would fetch 8 KiB per request)."""
        chunks = []
        while self._pos < self._size:
            buffer = bytearray(min(READ_BUFFER, self._size - self._pos))
            n = self.readinto(buffer)
            chunks.append(bytes(buffer[:n]))
        return b"".join(chunks)

    def readinto(self, buffer) -> int:
        from botocore.exceptions import ClientError

        if self._pos >= self._size:
            return 0
        view = memoryview(buffer).cast("B")
        end = min(self._size, self._pos + len(view)) - 1
        try:
            body = self._storage.client.get_object(Bucket=self._storage.bucket, Key=self._obj, IfMatch=self._etag,
                                                   Range=f"bytes={self._pos}-{end}")["Body"]
            data = body.read()
        except ClientError as exc:
            if _lost_condition(exc) or _is_missing(exc):
                raise OSError(f"{self._storage._url(self._key)} was replaced or deleted while being read (ETag "
                              f"{self._etag} at open); read it again") from None
            raise self._storage._fail(exc, self._key, "reading") from exc
        if len(data) != end - self._pos + 1:
            raise OSError(f"{self._storage._url(self._key)}: asked for bytes {self._pos}-{end}, got {len(data)} "
                          "bytes; the object changed while being read")
        view[:len(data)] = data
        self._pos += len(data)
        return len(data)


class _MultipartWriter(io.RawIOBase):
    """Buffers one part; a part that fills is uploaded at once (the multipart upload starts with the
    first full part). ``finish``: one PutObject when everything fit in one part, else the last part and
    CompleteMultipartUpload. ``abort``: AbortMultipartUpload (nothing appears)."""

    def __init__(self, storage: S3Storage, key: str):
        super().__init__()
        self._storage, self._key = storage, key
        self._obj = storage._object_key(key)
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict] = []
        self._part_size = storage.part_size
        self._written = 0
        self._done = False

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._written

    def write(self, data) -> int:
        if self._done:
            raise ValueError(f"{self._storage._url(self._key)}: write after the stream was finished")
        view = memoryview(data).cast("B")
        self._buffer += view
        self._written += len(view)
        while len(self._buffer) >= self._part_size:
            part = bytes(self._buffer[:self._part_size])
            del self._buffer[:self._part_size]
            self._upload_part(part)
        return len(view)

    def _upload_part(self, part: bytes) -> None:
        from botocore.exceptions import ClientError

        client = self._storage.client
        try:
            if self._upload_id is None:
                self._upload_id = client.create_multipart_upload(Bucket=self._storage.bucket,
                                                                 Key=self._obj)["UploadId"]
            number = len(self._parts) + 1
            response = client.upload_part(Bucket=self._storage.bucket, Key=self._obj, UploadId=self._upload_id,
                                          PartNumber=number, Body=part)
        except ClientError as exc:
            raise self._storage._fail(exc, self._key, "uploading a part") from exc
        self._parts.append({"PartNumber": number, "ETag": response["ETag"]})
        if len(self._parts) % PARTS_PER_DOUBLING == 0:
            self._part_size *= 2

    def finish(self) -> None:
        from botocore.exceptions import ClientError

        if self._done:
            return
        client = self._storage.client
        try:
            if self._upload_id is None:
                client.put_object(Bucket=self._storage.bucket, Key=self._obj, Body=bytes(self._buffer))
            else:
                if self._buffer or not self._parts:
                    self._upload_part(bytes(self._buffer))
                client.complete_multipart_upload(Bucket=self._storage.bucket, Key=self._obj,
                                                 UploadId=self._upload_id, MultipartUpload={"Parts": self._parts})
        except BaseException as exc:
            self.abort()
            if isinstance(exc, ClientError):
                raise self._storage._fail(exc, self._key, "completing the upload") from exc
            raise
        self._buffer = bytearray()
        self._done = True

    def abort(self) -> None:
        self._done = True
        self._buffer = bytearray()
        if self._upload_id is not None:
            try:
                self._storage.client.abort_multipart_upload(Bucket=self._storage.bucket, Key=self._obj,
                                                            UploadId=self._upload_id)
            except Exception:  # best effort: a bucket lifecycle rule reaps abandoned uploads
                pass
            self._upload_id = None

    def close(self) -> None:
        # Closing a stream does not publish it: only a clean exit of ``open_write``'s block does.
        super().close()


register_backend("s3", S3Storage)

__all__ = ["S3Storage", "parse_s3_url"]
