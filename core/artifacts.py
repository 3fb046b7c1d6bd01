"""Atomic files, checksums and manifests of a local artifact directory.

Every artifact the project writes (SavedModels, vectors, indices, metrics) goes through these
helpers: write to a temporary name in the same directory, fsync, then ``os.replace``; a directory's
``manifest.json`` (sha256 + size of every file) is written last, and a directory without it is
unfinished. Versioned roots (stage → manifest last → flip ``current`` → prune → rollback, the job
lease) are ``core.lifecycle``. Only the standard library is used, so every layer may import this.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

MANIFEST = "manifest.json"


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _file_mode() -> int:
    """The mode a plain ``open(path, "w")`` would give (0666 less the umask); mkstemp uses 0600."""
    return 0o666 & ~_umask()


def fsync_dir(path: str | os.PathLike) -> None:
    """fsync a directory so a rename inside it survives a crash (no-op where unsupported)."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary sibling and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _file_mode())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    # numpy scalars/arrays without importing numpy here
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_digests(directory: str | os.PathLike, exclude: Iterable[str] = (MANIFEST,)) -> dict[str, dict]:
    """``{relative path: {"sha256", "bytes"}}`` for every file under ``directory``."""
    directory = Path(directory)
    skip = set(exclude)
    out = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file():
            rel = p.relative_to(directory).as_posix()
            if rel in skip:
                continue
            out[rel] = {"sha256": sha256_file(p), "bytes": p.stat().st_size}
    return out


def write_manifest(directory: str | os.PathLike, fields: dict[str, Any]) -> dict:
    """Write ``manifest.json`` last: ``fields`` plus sha256/size of every file in ``directory``."""
    manifest = dict(fields)
    manifest["files"] = file_digests(directory)
    atomic_write_json(Path(directory) / MANIFEST, manifest)
    return manifest


def read_manifest(directory: str | os.PathLike) -> dict:
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: {directory} is not a finished artifact "
            "(it was never completed, or was written by an interrupted job); rebuild it"
        )
    with open(path) as fh:
        return json.load(fh)


def verify_manifest(directory: str | os.PathLike) -> dict:
    """Check every file listed in the manifest exists with the recorded size and sha256.

    Returns the manifest; raises ``ValueError`` naming the first file that does not match.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    for rel, meta in manifest.get("files", {}).items():
        p = directory / rel
        if not p.is_file():
            raise ValueError(f"{p}: listed in the manifest but missing; the artifact is incomplete, rebuild it")
        size = p.stat().st_size
        if size != meta["bytes"]:
            raise ValueError(
                f"{p}: size {size} bytes, manifest says {meta['bytes']}; the file is truncated or "
                "was modified after publishing; rebuild it or roll back"
            )
        digest = sha256_file(p)
        if digest != meta["sha256"]:
            raise ValueError(
                f"{p}: sha256 {digest[:12]}… does not match the manifest {meta['sha256'][:12]}…; the file is "
                "corrupt or was modified after publishing; rebuild it or roll back"
            )
    return manifest
