"""``LocalStorage``: the storage interface (``core.storage``) on a POSIX directory.

    open_storage("runs/demo")            keys are paths below the directory
    open_storage("file:///abs/runs/demo")

Whole-object writes go to a hidden temporary sibling, are fsynced and renamed over the key
(``os.replace``), so a reader sees the old object or the new one. ``open_write`` streams into such a
sibling and renames it only when the ``with`` block exits cleanly; a stream that raises leaves nothing.

Conditional writes (``write_if``) hold an exclusive ``fcntl.flock`` on the object's directory while
they compare the token and replace the object, so they are atomic against every other ``write_if`` in
that directory, from any thread or process on this machine (and on a shared filesystem whose locks
work). The lock is the directory itself, not a lock file, so two storages rooted at different levels
(``runs/demo`` and ``runs/demo/index``) take the same lock, nothing is left behind, and readers never
need write access (a server may read a read-only mount).

The token of ``read_versioned`` is ``<inode>-<ctime ns>-<sha256 of the content>``: every write is a fresh
file renamed into place, so rewriting the same bytes gives a new inode/ctime and a new token (no ABA
through identical bytes, unlike an S3 ETag; the lifecycle also puts a unique write id into every
pointer and lease, so it is ABA-safe on every backend). Temporaries (names starting ``.storage-``) are
never listed as objects, and a directory left empty by ``delete`` is removed, as a prefix with no
objects does not exist on an object store.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator

from core.artifacts import _file_mode, fsync_dir
from core.storage import Storage, check_key, register_backend

INTERNAL = ".storage-"
TMP_PREFIX = INTERNAL + "tmp."


class LocalStorage(Storage):
    """A directory as an object store (see the module docstring)."""

    def __init__(self, url: str | os.PathLike):
        text = os.fspath(url)
        if text.startswith("file://"):
            text = text[len("file://"):]
        self.root = Path(text).absolute()
        self.url = str(self.root)

    def __reduce__(self):
        return (LocalStorage, (self.url,))

    # -- paths ---------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        check_key(key)
        key = key.strip("/")
        if not key:
            raise ValueError(f"an empty key names no object under {self.url}; pass a key below the storage root")
        if any(part.startswith(INTERNAL) for part in key.split("/")):
            raise ValueError(f"storage key {key!r} uses the reserved prefix {INTERNAL!r}; choose another name")
        return self.root / key

    def _missing(self, key: str) -> FileNotFoundError:
        return FileNotFoundError(f"{self.url.rstrip('/')}/{key} does not exist")

    def local_path(self, key: str = "") -> Path:
        return self.root / check_key(key).strip("/") if key.strip("/") else self.root

    # -- whole objects -------------------------------------------------------------------------

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise self._missing(key) from None

    def write_bytes(self, key: str, data: bytes) -> None:
        with self.open_write(key) as out:
            out.write(data)

    def open_read(self, key: str) -> BinaryIO:
        path = self._path(key)
        if not path.is_file():
            raise self._missing(key)
        try:
            return open(path, "rb")
        except FileNotFoundError:
            raise self._missing(key) from None

    @contextmanager
    def open_write(self, key: str) -> Iterator[BinaryIO]:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{path.name}.", dir=path.parent)
        try:
            os.fchmod(fd, _file_mode())
            with os.fdopen(fd, "wb") as fh:
                yield fh
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise
        fsync_dir(path.parent)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise self._missing(key)
        return path.stat().st_size

    def list(self, prefix: str = "") -> list[str]:
        check_key(prefix)
        prefix = prefix.strip("/")
        base = self.root / prefix if prefix else self.root
        if not base.is_dir():
            return []
        out = []
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(INTERNAL)]
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for name in filenames:
                if not name.startswith(INTERNAL):
                    out.append(name if rel == "." else f"{rel}/{name}")
        return sorted(out)

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        self._remove_empty_parents(path.parent)

    def delete_prefix(self, prefix: str) -> None:
        check_key(prefix)
        prefix = prefix.strip("/")
        if not prefix:
            for key in self.list():
                self.delete(key)
            return
        base = self.root / prefix
        if base.is_dir():
            shutil.rmtree(base, ignore_errors=True)
            self._remove_empty_parents(base.parent)

    def _remove_empty_parents(self, directory: Path) -> None:
        """Like an object store, a prefix with no objects left does not exist."""
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:
                return
            directory = directory.parent

    # -- conditional writes --------------------------------------------------------------------

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        path = self._path(key)
        for _ in range(100):  # replaced between open and the check below: read again
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
                    st = os.fstat(fh.fileno())
                now = os.stat(path)
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                return None
            if now.st_ino == st.st_ino:
                return data, f"{st.st_ino:x}-{st.st_ctime_ns:x}-{hashlib.sha256(data).hexdigest()}"
        raise OSError(f"{self.url}/{key} kept changing while it was read; retry")

    @contextmanager
    def _directory_lock(self, directory: Path) -> Iterator[None]:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    break
                except OSError as exc:
                    if exc.errno != errno.EINTR:
                        raise
            yield
        finally:
            os.close(fd)  # closing drops the flock

    def write_if(self, key: str, data: bytes, expected: str | None) -> bool:
        path = self._path(key)
        for _ in range(10):
            try:
                with self._directory_lock(path.parent):
                    now = self.read_versioned(key)
                    if expected is None:
                        if now is not None:
                            return False
                    elif now is None or now[1] != expected:
                        return False
                    self.write_bytes(key, data)
                    return True
            except FileNotFoundError:
                continue  # the directory was removed (emptied by a delete) while we locked it: again
        raise OSError(f"{self.url}/{key}: its directory kept disappearing during a conditional write; retry")


register_backend("file", LocalStorage)
