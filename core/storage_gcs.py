"""``GCSStorage``: the storage interface (``core.storage``) on Google Cloud Storage, via google-cloud-storage.

    open_storage("gs://bucket/prefix")        every key is an object under ``prefix/`` in ``bucket``

Credentials and project come from Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``,
``gcloud auth application-default login``, a workload's service account). ``STORAGE_EMULATOR_HOST``
points the client at an emulator (fake-gcs-server in the tests) with anonymous credentials.

Coordination uses GCS preconditions: the token of ``read_versioned`` is the object's *generation*
(a number GCS assigns to every write, never reused for a key, so unlike an S3 ETag it cannot
repeat when identical bytes are written again); ``write_if(key, data, None)`` uploads with
``ifGenerationMatch=0`` (create only if absent) and ``write_if(key, data, gen)`` with
``ifGenerationMatch=gen``; the server refuses a lost race with 412, and ``write_if`` returns False.

Big objects stream: ``open_read`` is a seekable buffered reader over ranged downloads of the generation
seen at open (a replaced object raises instead of mixing versions); ``open_write`` is a resumable upload sent chunk by chunk that
GCS makes visible only when it is finalized on a clean exit of the ``with`` block (on an exception it
is never finalized, so nothing appears). A ``GCSStorage`` pickles without its client.
"""
from __future__ import annotations

import io
import os
import threading
from contextlib import contextmanager
from typing import BinaryIO, Iterator

from core.storage import Storage, check_key, join_url, register_backend

CHUNK_SIZE = 8 * 1024 * 1024       # resumable upload chunk and read chunk (a multiple of 256 KiB)
VERSIONED_READ_ATTEMPTS = 5        # read_versioned retries when the object changes between metadata and body


def parse_gs_url(url: str) -> tuple[str, str]:
    """``gs://bucket/some/prefix`` -> ``("bucket", "some/prefix")``; ValueError naming the URL otherwise."""
    if not url.startswith("gs://"):
        raise ValueError(f"{url!r} is not a GCS URL; write gs://<bucket>/<prefix>")
    bucket, _, prefix = url[len("gs://"):].partition("/")
    if not bucket or bucket in (".", ".."):
        raise ValueError(f"{url!r} names no bucket; write gs://<bucket>/<prefix>")
    prefix = prefix.strip("/")
    if prefix:
        check_key(prefix)
    return bucket, prefix


def _make_client():
    from google.cloud import storage

    return storage.Client()


class GCSStorage(Storage):
    """Objects under ``gs://bucket/prefix``. ``client``: a ``google.cloud.storage.Client`` to share
    (default: one per process, from the environment)."""

    def __init__(self, url: str, client=None, chunk_size: int = CHUNK_SIZE):
        self.bucket_name, self.prefix = parse_gs_url(str(url))
        self.url = f"gs://{self.bucket_name}" + (f"/{self.prefix}" if self.prefix else "")
        if chunk_size <= 0 or chunk_size % (256 * 1024):
            raise ValueError(f"chunk_size={chunk_size} must be a positive multiple of 256 KiB (GCS resumable "
                             "uploads require it); e.g. 8388608")
        self.chunk_size = chunk_size
        self._client = client
        self._client_pid = os.getpid() if client is not None else None
        self._lock = threading.Lock()

    @property
    def client(self):
        if self._client is None or self._client_pid != os.getpid():
            with self._lock:
                if self._client is None or self._client_pid != os.getpid():
                    self._client = _make_client()
                    self._client_pid = os.getpid()
        return self._client

    def __getstate__(self):
        return {"url": self.url, "chunk_size": self.chunk_size}

    def __setstate__(self, state):
        self.__init__(state["url"], chunk_size=state["chunk_size"])

    def _name(self, key: str) -> str:
        check_key(key)
        if not key or key.endswith("/"):
            raise ValueError(f"{join_url(self.url, key)!r} names no object (empty key or trailing '/'); pass an "
                             "object key like 'index/current'")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _blob(self, key: str):
        return self.client.bucket(self.bucket_name).blob(self._name(key), chunk_size=self.chunk_size)

    def _missing(self, key: str) -> FileNotFoundError:
        return FileNotFoundError(f"{join_url(self.url, key)}: no such object")

    def _fail(self, exc, key: str, doing: str) -> OSError:
        from google.api_core import exceptions as gex

        if isinstance(exc, gex.Forbidden) or isinstance(exc, gex.Unauthorized):
            return PermissionError(f"{join_url(self.url, key)}: {doing} was refused ({exc.code}); check the "
                                   "credentials (GOOGLE_APPLICATION_CREDENTIALS) and the bucket's IAM")
        return OSError(f"{join_url(self.url, key)}: {doing} failed ({exc})")

    def read_bytes(self, key: str) -> bytes:
        from google.api_core import exceptions as gex

        try:
            return self._blob(key).download_as_bytes()
        except gex.RequestRangeNotSatisfiable:
            return self._empty_or_raise(key)
        except gex.NotFound:
            raise self._missing(key) from None
        except gex.GoogleAPICallError as exc:
            raise self._fail(exc, key, "reading") from exc

    def _empty_or_raise(self, key: str) -> bytes:
        """fake-gcs-server answers a download of an empty object with 416; real GCS with 200 and no bytes."""
        blob = self._get(key)
        if blob is None:
            raise self._missing(key)
        if blob.size == 0:
            return b""
        raise OSError(f"{join_url(self.url, key)}: the server refused the download (416) of a "
                      f"{blob.size}-byte object")

    def write_bytes(self, key: str, data: bytes) -> None:
        from google.api_core import exceptions as gex

        try:
            self._blob(key).upload_from_string(bytes(data))
        except gex.GoogleAPICallError as exc:
            raise self._fail(exc, key, "writing") from exc

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        from google.api_core import exceptions as gex

        for _ in range(VERSIONED_READ_ATTEMPTS):
            blob = self.client.bucket(self.bucket_name).get_blob(self._name(key))
            if blob is None:
                return None
            if blob.size == 0:  # the emulator answers 416 to a download of an empty object
                return b"", str(blob.generation)
            try:
                return blob.download_as_bytes(if_generation_match=blob.generation), str(blob.generation)
            except (gex.PreconditionFailed, gex.NotFound):
                continue  # replaced or deleted in between: look again
            except gex.GoogleAPICallError as exc:
                raise self._fail(exc, key, "reading") from exc
        raise OSError(f"{join_url(self.url, key)} changed {VERSIONED_READ_ATTEMPTS} times while being read; "
                      "is something rewriting it in a loop?")

    def write_if(self, key: str, data: bytes, expected: str | None) -> bool:
        from google.api_core import exceptions as gex

        if expected is None:
            generation = 0
        else:
            try:
                generation = int(expected)
            except (TypeError, ValueError):
                raise TypeError(f"write_if({join_url(self.url, key)!r}): expected must be None (create) or the "
                                f"generation string read_versioned returned, got {expected!r}") from None
        try:
            self._blob(key).upload_from_string(bytes(data), if_generation_match=generation)
            return True
        except (gex.PreconditionFailed, gex.NotFound):
            return False
        except gex.GoogleAPICallError as exc:
            raise self._fail(exc, key, "conditional writing") from exc

    def _get(self, key: str):
        return self.client.bucket(self.bucket_name).get_blob(self._name(key))

    def exists(self, key: str) -> bool:
        return self._get(key) is not None

    def size(self, key: str) -> int:
        blob = self._get(key)
        if blob is None:
            raise self._missing(key)
        return int(blob.size)

    def list(self, prefix: str = "") -> list[str]:
        """Keys equal to ``prefix`` or below ``prefix/``; every key when ``prefix`` is empty."""
        prefix = check_key(prefix).strip("/")
        base = f"{self.prefix}/" if self.prefix else ""
        keys = []
        from google.api_core import exceptions as gex

        try:
            for blob in self.client.list_blobs(self.bucket_name, prefix=base + prefix):
                key = blob.name[len(base):]
                if not prefix or key == prefix or key.startswith(prefix + "/"):
                    keys.append(key)
        except gex.NotFound:  # an empty prefix lists nothing; only a missing bucket is 404
            raise FileNotFoundError(f"{join_url(self.url, prefix)}: bucket {self.bucket_name!r} does not exist; "
                                    "create it or fix the URL") from None
        except gex.GoogleAPICallError as exc:
            raise self._fail(exc, prefix, "listing") from exc
        return sorted(keys)

    def delete(self, key: str) -> None:
        from google.api_core import exceptions as gex

        try:
            self._blob(key).delete()
        except gex.NotFound:
            pass

    def child(self, prefix: str) -> "GCSStorage":
        return GCSStorage(join_url(self.url, check_key(prefix)), client=self._client, chunk_size=self.chunk_size)

    def open_read(self, key: str) -> BinaryIO:
        blob = self._get(key)
        if blob is None:
            raise self._missing(key)
        raw = _PinnedReader(self, key, int(blob.size), int(blob.generation))
        return io.BufferedReader(raw, buffer_size=self.chunk_size)

    @contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        writer = self._blob(key).open("wb", chunk_size=self.chunk_size, ignore_flush=True)
        try:
            yield writer
        except BaseException:
            writer.terminate()  # cancels the resumable upload (a plain close would finalize it)
            raise
        writer.close()          # finalizes the upload: the object appears whole


class _PinnedReader(io.RawIOBase):
    """Seekable raw stream over ranged downloads of one generation, so a replaced object raises instead of
    mixing two versions."""

    def __init__(self, storage: "GCSStorage", key: str, size: int, generation: int):
        super().__init__()
        self._storage, self._key, self._size, self._generation = storage, key, size, generation
        # ``generation=`` pins the read: GCS (and the emulator) answer 404 once that generation is gone;
        # the emulator ignores ifGenerationMatch on reads, so that is not relied on
        self._blob = storage.client.bucket(storage.bucket_name).blob(storage._name(key), generation=generation)
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
            raise ValueError(f"{join_url(self._storage.url, self._key)}: seek to {base + offset} (< 0)")
        self._pos = base + offset
        return self._pos

    def readall(self) -> bytes:
        """The rest of the object in CHUNK_SIZE-sized requests (io's default would fetch 8 KiB per request)."""
        chunks = []
        while self._pos < self._size:
            buffer = bytearray(min(CHUNK_SIZE, self._size - self._pos))
            n = self.readinto(buffer)
            chunks.append(bytes(buffer[:n]))
        return b"".join(chunks)

    def readinto(self, buffer) -> int:
        from google.api_core import exceptions as gex

        if self._pos >= self._size:
            return 0
        view = memoryview(buffer).cast("B")
        end = min(self._size, self._pos + len(view)) - 1
        try:
            data = self._blob.download_as_bytes(start=self._pos, end=end, checksum=None)
        except (gex.PreconditionFailed, gex.NotFound):
            raise OSError(f"{join_url(self._storage.url, self._key)} was replaced or deleted while being read "
                          f"(generation {self._generation} at open); read it again") from None
        except gex.GoogleAPICallError as exc:
            raise self._storage._fail(exc, self._key, "reading") from exc
        if len(data) != end - self._pos + 1:
            raise OSError(f"{join_url(self._storage.url, self._key)}: asked for bytes {self._pos}-{end}, got "
                          f"{len(data)} bytes; the object changed while being read")
        view[:len(data)] = data
        self._pos += len(data)
        return len(data)


register_backend("gs", GCSStorage)

__all__ = ["GCSStorage", "parse_gs_url"]
