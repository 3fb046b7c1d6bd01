"""Where artifacts live: a few object-store primitives that a local directory, S3 or GCS all provide.

The artifact lifecycle (``core.lifecycle``) is written once on top of this interface; a backend is one
more implementation of it, never a second lifecycle. Keys are ``/``-separated paths relative to the
backend's root URL (``runs/demo/index/current``); they never start with ``/`` and never contain ``..``.

    open_storage("runs/demo")                  LocalStorage (a POSIX directory)
    open_storage("s3://bucket/prefix")         an S3-compatible store (registered by its module)

Conditional writes are the only coordination primitive: ``read_versioned`` returns the content with an
opaque token (an S3 ETag, a GCS generation, a local content hash), and ``write_if`` replaces the object
only while it still carries that token (``expected=None``: only while it does not exist). Pointers
(``current``) and job leases are built from these two calls, so two writers can never both win.
"""
from __future__ import annotations

import abc
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO, Callable

_BACKENDS: dict[str, Callable[[str], "Storage"]] = {}


class PreconditionFailed(Exception):
    """Internal signal of a backend: a conditional write lost (callers see ``write_if`` return False)."""


class Storage(abc.ABC):
    """The primitives every backend provides. ``url`` is the root every key is relative to."""

    url: str

    @abc.abstractmethod
    def read_bytes(self, key: str) -> bytes:
        """The whole object; ``FileNotFoundError`` naming the URL when it does not exist."""

    @abc.abstractmethod
    def write_bytes(self, key: str, data: bytes) -> None:
        """Write a whole object; readers see the old object or the new one, never a part."""

    @abc.abstractmethod
    def open_read(self, key: str) -> BinaryIO:
        """A readable, seekable binary stream (for Parquet and FAISS files too large to hold twice)."""

    @abc.abstractmethod
    def open_write(self, key: str) -> AbstractContextManager[BinaryIO]:
        """A writable stream; the object appears (atomically) when the ``with`` block exits cleanly and
        not at all when it raises."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        ...

    @abc.abstractmethod
    def size(self, key: str) -> int:
        """Bytes of an object; ``FileNotFoundError`` when absent."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> list[str]:
        """Every object key under ``prefix`` (recursive), sorted."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object (no error when absent)."""

    def delete_prefix(self, prefix: str) -> None:
        """Remove every object under ``prefix``."""
        for key in self.list(prefix):
            self.delete(key)

    @abc.abstractmethod
    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """``(content, token)`` of a small object, or ``None`` when it does not exist."""

    @abc.abstractmethod
    def write_if(self, key: str, data: bytes, expected: str | None) -> bool:
        """Conditional write: replace ``key`` only if it still carries ``expected`` (from ``read_versioned``);
        with ``expected=None`` create it only if it does not exist. Returns False (writes nothing) when the
        condition does not hold. Atomic against every other ``write_if`` on the same key."""

    def local_path(self, key: str = "") -> Path | None:
        """The POSIX path of ``key`` for backends that have one (FAISS and TensorFlow can then read it in
        place); ``None`` on object stores, where callers download to a local cache first."""
        return None

    def child(self, prefix: str) -> "Storage":
        """A storage rooted at ``prefix`` below this one."""
        return open_storage(join_url(self.url, prefix))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def upload_directory(local: str | Path, storage: Storage, prefix: str = "", *,
                     last: tuple[str, ...] = ("manifest.json",), block: int = 8 << 20) -> list[str]:
    """Copy every file under the local directory ``local`` to ``<prefix>/<relative path>`` of ``storage``,
    each streamed as one whole object; files whose name is in ``last`` (a directory's manifest) go after every
    other file, and each object's size is checked against the file before them. Returns the keys in upload order.

    A copy that dies part-way leaves the files before it, never a ``last`` file whose listed files are missing."""
    local = Path(local)
    if not local.is_dir():
        raise NotADirectoryError(f"{local} is not a directory; nothing to upload to {join_url(storage.url, prefix)}")
    def order(p: Path):  # plain files first; then manifests, a nested directory's before its parent's
        rel = p.relative_to(local)
        return (1, -len(rel.parts), rel.as_posix()) if p.name in last else (0, 0, rel.as_posix())

    files = sorted((p for p in local.rglob("*") if p.is_file()), key=order)
    done: list[tuple[str, Path]] = []
    for path in files:
        rel = path.relative_to(local).as_posix()
        key = f"{prefix.strip('/')}/{rel}" if prefix.strip("/") else rel
        if path.name in last:  # a manifest: everything below its directory is uploaded, with the right size
            for earlier, p in done:
                if p.name not in last and p.is_relative_to(path.parent):
                    got, want = storage.size(earlier), p.stat().st_size
                    if got != want:
                        raise OSError(f"{join_url(storage.url, earlier)}: {got} bytes on the store, {want} in {p}; "
                                      "the upload was damaged, run it again")
        with open(path, "rb") as src, storage.open_write(key) as dst:
            while chunk := src.read(block):
                dst.write(chunk)
        done.append((key, path))
    return [key for key, _ in done]


def join_url(url: str, *keys: str) -> str:
    parts = [url.rstrip("/")] + [k.strip("/") for k in keys if k and k.strip("/")]
    return "/".join(parts)


def check_key(key: str) -> str:
    if key.startswith("/") or any(part in ("..",) for part in key.split("/")):
        raise ValueError(f"storage key {key!r} must be relative and must not contain '..'; "
                         "pass a path below the storage root")
    return key


def register_backend(scheme: str, factory: Callable[[str], Storage]) -> None:
    """Make ``open_storage("<scheme>://...")`` build ``factory(url)``."""
    _BACKENDS[scheme] = factory


def scheme_of(url: str | Path) -> str:
    url = str(url)
    return url.split("://", 1)[0] if "://" in url else "file"


def open_storage(url: str | Path) -> Storage:
    """The backend for ``url``: ``s3://`` / ``gs://`` (when their module is importable) or a local path."""
    scheme = scheme_of(url)
    if scheme not in _BACKENDS:
        _load_builtin(scheme)
    if scheme not in _BACKENDS:
        raise ValueError(f"no storage backend for {str(url)!r} (scheme {scheme!r}); supported: "
                         f"{sorted(set(_BACKENDS) | {'file', 's3', 'gs'})}")
    return _BACKENDS[scheme](str(url))


def _load_builtin(scheme: str) -> None:
    """Import the module that registers a built-in backend (kept lazy: boto3 only when s3:// is used)."""
    import importlib

    module = {"file": "core.storage_local", "s3": "core.storage_s3", "gs": "core.storage_gcs"}.get(scheme)
    if module is None:
        return
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name == module:
            return
        raise ValueError(f"the {scheme}:// backend needs {exc.name!r}, which is not installed; install the "
                         f"pinned requirements (make venv)") from exc
