"""Atomic files, checksums, manifests and the ``current`` pointer of a versioned directory.

Every artifact the project writes (SavedModels, vectors, indices, metrics) goes through these
helpers: write to a temporary name in the same directory, fsync, then ``os.replace``. A
versioned artifact root looks like::

    root/
      <version>/ ... files ...  manifest.json   (manifest written last)
      current                                  (text file holding the published version name)

A directory without ``manifest.json`` is unfinished and is never treated as a version.
Only the standard library is used, so every layer (including ``indexing/``) may import this.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

MANIFEST = "manifest.json"
CURRENT = "current"


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


def staging_dir(root: str | os.PathLike, version: str) -> Path:
    """A fresh hidden staging directory inside ``root`` for building ``version``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{version}-", dir=root))
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp gives 0700; readers (Beam workers, servers) need the usual mode
    return staging


def promote(staging: str | os.PathLike, root: str | os.PathLike, version: str) -> Path:
    """Move a finished staging dir (with manifest) to ``root/version`` atomically."""
    staging, root = Path(staging), Path(root)
    if not (staging / MANIFEST).is_file():
        raise ValueError(f"{staging} has no {MANIFEST}; refusing to promote an unfinished artifact")
    final = root / version
    if final.exists():
        raise FileExistsError(f"{final} already exists; versions are immutable, choose a new version name")
    for p in staging.rglob("*"):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    os.replace(staging, final)
    fsync_dir(root)
    return final


def publish(root: str | os.PathLike, version: str) -> None:
    """Flip ``root/current`` to ``version`` (which must hold a manifest) with ``os.replace``."""
    root = Path(root)
    read_manifest(root / version)
    atomic_write_text(root / CURRENT, version + "\n")


def current_version(root: str | os.PathLike) -> str | None:
    path = Path(root) / CURRENT
    if not path.is_file():
        return None
    return path.read_text().strip() or None


def current_dir(root: str | os.PathLike) -> Path:
    version = current_version(root)
    if version is None:
        raise FileNotFoundError(
            f"{Path(root) / CURRENT} does not exist: nothing has been published under {root} yet"
        )
    return Path(root) / version


def list_versions(root: str | os.PathLike) -> list[str]:
    """Finished versions (directories holding a manifest), oldest first by name."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and (p / MANIFEST).is_file())


def prune(root: str | os.PathLike, keep: int) -> list[str]:
    """Delete finished versions beyond the newest ``keep`` (never the current one); returns their names."""
    root = Path(root)
    cur = current_version(root)
    versions = list_versions(root)
    removed = []
    for v in versions[: max(0, len(versions) - keep)]:
        if v != cur:
            shutil.rmtree(root / v)
            removed.append(v)
    return removed
