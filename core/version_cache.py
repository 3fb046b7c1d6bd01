"""Read artifacts that live on object storage through a local cache, verified by sha256 before use.

FAISS, TensorFlow and Parquet readers want local files; object stores have none. So a reader (``twotower
serve``, ``twotower eval``, a Beam worker loading the item tower) first copies an artifact directory into a
local cache and only then loads it:

    <cache>/<root-hash>/<version>/<files...>        every file the artifact's manifest lists
    <cache>/<root-hash>/<version>/manifest.json     written LAST, after every file matched its sha256 and size

``<root-hash>`` = the first 16 hex digits of sha256(url of the versioned root), so two roots never share a
cache directory; ``<version>`` is the artifact's version name (index/vectors) or, for an unversioned
directory such as ``model/``, the first 16 hex digits of its manifest's sha256 (a re-export gets a new
entry). A cache entry with a manifest is complete and verified; a truncated or altered object is refused
with a ``ValueError`` naming the URL, the sizes or digests, and nothing is left in the cache. The loader
still runs its own ``verify_manifest`` on the cached copy (so a cache damaged on disk is refused too).

Local roots are not copied: ``CachedRoot("runs/demo/index").fetch(v)`` is ``runs/demo/index/v``.

    root = CachedRoot("s3://bucket/runs/demo/index")
    version = root.current_version()            # reads the small ``current`` object (one GET)
    directory = root.fetch(version)              # local Path, verified; load it with indexing.store.load_index
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from core import artifacts
from core.lifecycle import CURRENT, VersionedRoot
from core.storage import Storage, check_key, join_url, open_storage, scheme_of

CACHE_ENV = "TWOTOWER_CACHE"
_CHUNK = 1 << 20


def is_url(location: str | os.PathLike) -> bool:
    """True for ``s3://...`` / ``gs://...`` (anything with a scheme other than ``file``)."""
    return scheme_of(location) != "file"


def default_cache_dir() -> Path:
    """``$TWOTOWER_CACHE/artifacts`` (default ``~/.cache/twotower/artifacts``)."""
    base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "twotower")
    return Path(base) / "artifacts"


def root_hash(url: str) -> str:
    return hashlib.sha256(str(url).rstrip("/").encode("utf-8")).hexdigest()[:16]


def fetch_verified(storage: Storage, prefix: str, dest: str | os.PathLike) -> tuple[Path, dict]:
    """Copy the artifact directory ``prefix`` of ``storage`` (its ``manifest.json`` and every file the
    manifest lists) to the local directory ``dest``, checking each file's size and sha256 while it streams.

    Returns ``(dest, manifest)``. ``dest`` appears only complete (staged next to it, moved into place with
    one rename; its manifest is written last); when it already holds this very manifest nothing is read
    but the manifest. Raises ``FileNotFoundError`` when the manifest is missing (an unfinished version),
    ``ValueError`` when a file is missing, truncated or altered (nothing is cached then).
    """
    prefix = prefix.strip("/")
    manifest_key = f"{prefix}/{artifacts.MANIFEST}" if prefix else artifacts.MANIFEST
    where = join_url(storage.url, prefix)
    try:
        raw = storage.read_bytes(manifest_key)
    except FileNotFoundError:
        raise FileNotFoundError(f"{join_url(where, artifacts.MANIFEST)} is missing: {where} is not a finished "
                                "artifact (never completed, or written by an interrupted job); rebuild it or "
                                "roll back") from None
    try:
        manifest = json.loads(raw)
        files = manifest["files"]
        if not isinstance(files, dict):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{join_url(where, artifacts.MANIFEST)} is not a readable manifest (no 'files' mapping); "
                         "the artifact is damaged, rebuild it or roll back") from None
    dest = Path(dest)
    if _holds(dest, raw):
        return dest, manifest
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".partial-{dest.name}-", dir=dest.parent))
    try:
        for rel, meta in sorted(files.items()):
            check_key(rel)
            _download(storage, f"{prefix}/{rel}" if prefix else rel, staging / rel, meta, join_url(where, rel))
        artifacts.atomic_write_bytes(staging / artifacts.MANIFEST, raw)  # last: the entry is complete
        if dest.exists() and not _holds(dest, raw):
            shutil.rmtree(dest)  # an unfinished or different entry
        try:
            os.replace(staging, dest)
        except OSError:
            if not _holds(dest, raw):  # another reader did not just finish the same entry
                raise
        artifacts.fsync_dir(dest.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest, manifest


def _holds(dest: Path, raw: bytes) -> bool:
    cached = dest / artifacts.MANIFEST
    return cached.is_file() and cached.read_bytes() == raw


def _download(storage: Storage, key: str, path: Path, meta: dict, url: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    try:
        source = storage.open_read(key)
    except FileNotFoundError:
        raise ValueError(f"{url}: listed in the manifest but missing; the artifact is incomplete, rebuild it or "
                         "roll back") from None
    with source, open(path, "wb") as out:
        while block := source.read(_CHUNK):
            digest.update(block)
            size += len(block)
            out.write(block)
    if size != meta.get("bytes"):
        raise ValueError(f"{url}: {size} bytes, the manifest says {meta.get('bytes')}; the object is truncated or "
                         "was modified after publishing, so it was not loaded. Rebuild it or roll back")
    if digest.hexdigest() != meta.get("sha256"):
        raise ValueError(f"{url}: sha256 {digest.hexdigest()[:12]}… does not match the manifest "
                         f"{str(meta.get('sha256'))[:12]}…; the object is corrupt or was modified after publishing, "
                         "so it was not loaded. Rebuild it or roll back")


class CachedRoot:
    """A versioned artifact root (``<root>/<version>/`` + ``<root>/current``) at a URL or a local path,
    read through the local cache (local roots are read in place)."""

    def __init__(self, url: str | os.PathLike, cache_dir: str | os.PathLike | None = None):
        self.remote = is_url(url)
        self.url = str(url).rstrip("/") if self.remote else str(url)
        if self.remote:
            self.storage = open_storage(self.url)
            self.local_root = Path(cache_dir or default_cache_dir()) / root_hash(self.url)
        else:
            self.storage = None
            self.local_root = Path(url)

    def __repr__(self) -> str:
        return f"CachedRoot({self.url!r})"

    def current_version(self) -> str | None:
        """The version ``current`` names (one small read), or None when nothing is published."""
        return VersionedRoot(self.storage if self.remote else self.local_root).current()

    def read_manifest(self, version: str) -> dict:
        """The manifest of ``version`` (one small read; nothing is downloaded or verified)."""
        if not self.remote:
            return artifacts.read_manifest(self.local_root / version)
        key = f"{version}/{artifacts.MANIFEST}"
        try:
            return json.loads(self.storage.read_bytes(key))
        except FileNotFoundError:
            raise FileNotFoundError(f"{join_url(self.url, key)} is missing: {join_url(self.url, version)} is not a "
                                    "finished version; publish one or roll back") from None

    def fingerprint(self, version: str) -> tuple:
        """What changes when ``version``'s files change: (name, size, mtime) of local files, or the object keys
        and the manifest's bytes on object storage (one listing, one small read)."""
        if not self.remote:
            root = self.local_root / version
            out = []
            for dirpath, _, files in os.walk(root):
                for name in files:
                    try:
                        st = os.stat(os.path.join(dirpath, name))
                    except OSError:
                        continue
                    out.append((os.path.relpath(os.path.join(dirpath, name), root), st.st_size, st.st_mtime_ns))
            return tuple(sorted(out))
        try:
            manifest = hashlib.sha256(self.storage.read_bytes(f"{version}/{artifacts.MANIFEST}")).hexdigest()
        except FileNotFoundError:
            manifest = None
        return (manifest, tuple(self.storage.list(version)))

    def fetch(self, version: str) -> Path:
        """The local directory of ``version``, downloaded and verified first when the root is remote."""
        if not version or "/" in version or version.startswith("."):
            raise ValueError(f"version must be a plain version name, got {version!r}")
        if not self.remote:
            return self.local_root / version
        return fetch_verified(self.storage, version, self.local_root / version)[0]

    def fetch_current(self) -> Path:
        version = self.current_version()
        if version is None:
            raise FileNotFoundError(f"{join_url(self.url, CURRENT)} does not exist: nothing has been "
                                    f"published under {self.url} yet")
        return self.fetch(version)

    def prune_cache(self, keep: set[str]) -> list[str]:
        """Remove cached versions other than ``keep`` (remote roots only; their objects stay on the store)."""
        if not self.remote or not self.local_root.is_dir():
            return []
        removed = []
        for p in sorted(self.local_root.iterdir()):
            if p.is_dir() and not p.name.startswith(".") and p.name not in keep:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
        return removed


def cached_directory(url: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local, verified copy of the unversioned artifact directory ``url`` (e.g. ``<run>/model``), keyed by
    the sha256 of its manifest; a local path is returned as it is."""
    if not is_url(url):
        return Path(url)
    url = str(url).rstrip("/")
    storage = open_storage(url)
    try:
        raw = storage.read_bytes(artifacts.MANIFEST)
    except FileNotFoundError:
        raise FileNotFoundError(f"{join_url(url, artifacts.MANIFEST)} is missing: {url} is not a finished "
                                "artifact; write it first (e.g. `twotower train --run ...`)") from None
    key = hashlib.sha256(raw).hexdigest()[:16]
    return fetch_verified(storage, "", Path(cache_dir or default_cache_dir()) / root_hash(url) / key)[0]


def cached_file(url: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A local copy of one small unversioned object (e.g. ``<run>/config.yaml``), keyed by its content's
    sha256; a local path is returned as it is. ``FileNotFoundError`` naming the URL when it is absent."""
    if not is_url(url):
        return Path(url)
    url = str(url).rstrip("/")
    parent, name = url.rsplit("/", 1)
    data = open_storage(parent).read_bytes(name)
    path = Path(cache_dir or default_cache_dir()) / root_hash(url) / hashlib.sha256(data).hexdigest()[:16] / name
    if not path.is_file():
        artifacts.atomic_write_bytes(path, data)
    return path
