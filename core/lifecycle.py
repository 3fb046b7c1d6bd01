"""The one publish lifecycle of a versioned artifact root (``vectors/``, ``index/``), on any ``Storage``.

    root/
      <version>/ ... files ...  manifest.json   a finished version: its manifest (sha256 per file) was written last
      current                                   the published version (first line) + a unique writer line
      .lease                                    the job lease (JSON: holder, started, expires) while a job runs
      .staging/<version>                        marker: <version>/ is being written (removed when finished)
      .scratch/<name>/...                       a job's working files (removed when it ends or by the next job)

    lock (lease) → stage a version → write its files → manifest last → flip ``current`` → prune → (rollback)

Everything is built from the storage primitives (``core.storage``): a version is finished exactly when
``<version>/manifest.json`` exists (object stores have no rename, so there is no promote step: the
manifest *is* the commit); ``current`` and the lease are replaced only with ``write_if`` against the
token that was read, so two writers can never both win, and their content is unique per write (a
random writer id), so a token can never come back (ABA) even on S3, where an ETag is the MD5 of the
bytes. A conditional write that reports a loss is read back: when the object holds this writer's
unique content the write did land (its response was lost and the SDK retried).

Version names: ``new_version`` gives ``000042-20261205T043000Z``, a zero-padded sequence (one more than
any version or staged name in the given roots) and the UTC time, so names sort by creation.
``version_sort_key`` orders those names by sequence and every other (legacy or hand-given) name
naturally, numbers as numbers (``v9 < v10``, ``x-2 < x-10``), all before the sequenced ones; prune and
rollback use that order.

The lease: ``VersionedRoot.lock(job)`` creates ``.lease`` with ``write_if(key, data, None)``; a lease
that expired (default after 6 h, renewed by ``Lease.renew``), was released, or belongs to a dead
process on this host (its pid gone, or reused by a process with another start time: the lease records
``process_identity``) is taken over with ``write_if`` against its token. Otherwise ``LockHeld`` says
who holds it since when and what to do.

``crash_point(step, crash_at)`` raises ``InjectedCrash`` after a named step (tests kill jobs there).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
import socket
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from core.artifacts import _json_default
from core.errors import OperationFailed
from core.guard import require_same_model
from core.storage import Storage, open_storage

MANIFEST = "manifest.json"
CURRENT = "current"
LEASE = ".lease"
STAGING = ".staging"
SCRATCH = ".scratch"
DEFAULT_LEASE_SECONDS = 6 * 3600
_SEQUENCED = re.compile(r"^(\d{6,})-(\d{8}T\d{6}Z)$")
_RESERVED = {CURRENT, LEASE, STAGING, SCRATCH, MANIFEST}


class LockHeld(OperationFailed):
    """Another job holds the lease of a versioned root."""


class InjectedCrash(RuntimeError):
    """Raised by ``crash_point`` when a test asked the job to die after a step."""


def crash_point(step: str, crash_at: str | None) -> None:
    if crash_at == step:
        raise InjectedCrash(f"injected crash after step {step!r} (crash_at={crash_at!r})")


def check_crash_at(crash_at: str | None, steps: tuple[str, ...]) -> None:
    if crash_at is not None and crash_at not in steps:
        raise ValueError(f"crash_at={crash_at!r} is not a step of this job; steps: {list(steps)}")


# --------------------------------------------------------------------------------------------
# Version names


def check_version_name(version: str) -> str:
    if (not isinstance(version, str) or not version or version.startswith(".") or "/" in version
            or version in _RESERVED or version.strip() != version or "\n" in version):
        raise ValueError(f"version name {version!r} is not usable: it must be non-empty, not start with '.', "
                         f"contain no '/' or whitespace at its ends, and not be one of {sorted(_RESERVED)}")
    return version


def version_sort_key(version: str) -> tuple:
    """Creation order: sequenced names (``000042-<time>``) by sequence, after every other name; other names
    naturally, digit runs as numbers (``v9`` < ``v10``, ``x-2`` < ``x-10``, ``2026…Z`` < ``2026…Z-1``)."""
    m = _SEQUENCED.match(version)
    if m:
        return (1, int(m.group(1)), m.group(2))
    parts = tuple((0, int(chunk), "") if chunk.isdigit() else (1, 0, chunk)
                  for chunk in re.findall(r"\d+|\D+", version))
    return (0, parts, version)


def sequence_of(version: str) -> int | None:
    m = _SEQUENCED.match(version)
    return int(m.group(1)) if m else None


def sorted_versions(versions: Iterable[str]) -> list[str]:
    return sorted(versions, key=version_sort_key)


def new_version(*roots: "VersionedRoot", now: _dt.datetime | None = None) -> str:
    """``<sequence>-<UTC time>``: the sequence is one more than any sequenced name (finished or staged) in
    ``roots``, so a new version always sorts after every version these roots have seen."""
    taken = 0
    for root in roots:
        for name in root.all_names():
            seq = sequence_of(name)
            if seq is not None:
                taken = max(taken, seq)
    stamp = (now or _dt.datetime.now(_dt.timezone.utc)).astimezone(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{taken + 1:06d}-{stamp}"


# --------------------------------------------------------------------------------------------
# The lease


def _now() -> float:
    return time.time()


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def process_identity(pid: int) -> str | None:
    """What tells this process apart from a later one that gets the same pid on this host:
    ``"<boot id>:<start time in clock ticks since boot>"`` (Linux ``/proc``), else ``"psutil:<create time>"``,
    else None (then only the pid's liveness is checked). A lease records it for its holder, so a holder
    that died and whose pid was reused by another process is seen as dead (not only after the expiry)."""
    try:
        with open(f"/proc/{int(pid)}/stat", "rb") as fh:
            stat = fh.read().decode("ascii", "replace")
        with open("/proc/sys/kernel/random/boot_id") as fh:
            boot = fh.read().strip()
        # the command name (field 2) may hold spaces and parentheses: count fields after the last ')'
        return f"{boot}:{stat.rsplit(')', 1)[1].split()[19]}"
    except (OSError, IndexError, ValueError):
        pass
    try:
        import psutil

        return f"psutil:{psutil.Process(int(pid)).create_time():.3f}"
    except Exception:  # psutil missing, no such process, access denied: fall back to the pid alone
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


class Lease:
    """A held lease (returned by ``VersionedRoot.lock``); ``renew()`` extends it, ``release()`` ends it."""

    def __init__(self, root: "VersionedRoot", job: str, seconds: float):
        self.root = root
        self.job = job
        self.seconds = float(seconds)
        self.nonce = uuid.uuid4().hex
        self.token: str | None = None
        self.record: dict = {}

    def _content(self, *, released: bool = False) -> bytes:
        now = _now()
        started = self.record.get("started", now)
        self.record = {"job": self.job, "host": socket.gethostname(), "pid": os.getpid(),
                       "process": process_identity(os.getpid()), "started": started,
                       "started_utc": _iso(started), "expires": 0.0 if released else now + self.seconds,
                       "released": released, "nonce": uuid.uuid4().hex, "holder": self.nonce}
        return json.dumps(self.record, sort_keys=True).encode()

    def _write(self, data: bytes, expected: str | None) -> bool:
        storage = self.root.storage
        if storage.write_if(LEASE, data, expected):
            got = storage.read_versioned(LEASE)
            self.token = got[1] if got and got[0] == data else None
            return self.token is not None
        got = storage.read_versioned(LEASE)  # a lost response: did the write land after all?
        if got is not None and got[0] == data:
            self.token = got[1]
            return True
        return False

    def acquire(self) -> "Lease":
        storage = self.root.storage
        for _ in range(20):
            if self._write(self._content(), None):
                return self
            got = storage.read_versioned(LEASE)
            if got is None:
                continue  # released and deleted between our two calls: try to create again
            data, token = got
            try:
                held = json.loads(data)
            except ValueError:
                held = {}
            if self._stale(held):
                self.record = {}
                if self._write(self._content(), token):
                    return self
                continue  # another job took it over first: look again
            raise LockHeld(self._held_message(held))
        raise LockHeld(f"{self.root.url}: the lease {LEASE} changed 20 times while {self.job} tried to take it; "
                       "another job is starting there now, wait for it and run again")

    @staticmethod
    def _stale(held: dict) -> bool:
        if not held or held.get("released") or float(held.get("expires", 0)) < _now():
            return True
        if held.get("host") == socket.gethostname():
            try:
                pid = int(held.get("pid"))
            except (TypeError, ValueError):
                return True
            if not _pid_alive(pid):
                return True
            recorded = held.get("process")  # absent in leases written before it was recorded
            now = process_identity(pid) if recorded else None
            return now is not None and now != recorded  # the pid now belongs to another process: holder is dead
        return False

    def _held_message(self, held: dict) -> str:
        return (f"{self.root.url} is locked by {held.get('job', 'another job')} (host {held.get('host')}, pid "
                f"{held.get('pid')}) since {held.get('started_utc')}, lease until {_iso(float(held.get('expires', 0)))}: "
                f"it is writing there now; wait for it to finish and run {self.job} again (a killed job's lease is "
                f"taken over at once on its own host, elsewhere when it expires)")

    def renew(self) -> None:
        """Extend the lease by ``seconds`` from now; ``OperationFailed`` when another job took it over."""
        if self.token is None:
            raise OperationFailed(f"{self.root.url}: the lease of {self.job} is not held")
        if not self._write(self._content(), self.token):
            raise OperationFailed(f"{self.root.url}: {self.job} lost its lease {LEASE} (it expired and another job "
                                  "took it over); stop and run the job again")

    def release(self) -> None:
        if self.token is not None:
            self._write(self._content(released=True), self.token)
            self.token = None

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


# --------------------------------------------------------------------------------------------
# Manifests over a storage


def digests(storage: Storage, prefix: str, exclude: Iterable[str] = (MANIFEST,)) -> dict[str, dict]:
    """``{relative key: {"sha256", "bytes"}}`` of every object under ``prefix``, streamed."""
    skip = set(exclude)
    out = {}
    base = prefix.strip("/") + "/"
    for key in storage.list(prefix):
        rel = key[len(base):]
        if rel in skip:
            continue
        h, n = hashlib.sha256(), 0
        with storage.open_read(key) as fh:
            while block := fh.read(1 << 20):
                h.update(block)
                n += len(block)
        out[rel] = {"sha256": h.hexdigest(), "bytes": n}
    return out


class Stage:
    """A version being written: ``storage`` (rooted at ``<root>/<version>``), ``path`` (its local directory, or
    None on object stores). Finish it with ``write_manifest`` (or let the writer write ``manifest.json`` last)."""

    def __init__(self, root: "VersionedRoot", version: str):
        self.root = root
        self.version = version
        self.storage = root.storage.child(version)
        self.path = root.storage.local_path(version) if root.storage.local_path() is not None else None
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)

    def write_manifest(self, fields: dict[str, Any]) -> dict:
        """Write ``manifest.json`` last: ``fields`` + version, created, file_count, sha256/bytes per file."""
        manifest = dict(fields)
        manifest.setdefault("version", self.version)
        manifest.setdefault("created", _iso(_now()))
        files = digests(self.root.storage, self.version)
        manifest["files"] = files
        manifest["file_count"] = len(files)
        self.storage.write_bytes(MANIFEST, (json.dumps(manifest, indent=2, sort_keys=True, default=_json_default)
                                            + "\n").encode())
        return manifest

    def finished(self) -> bool:
        return self.storage.exists(MANIFEST)

    def abandon(self) -> None:
        """Remove what was written (a failed job); the marker goes too."""
        self.root.storage.delete_prefix(self.version)
        self.root.storage.delete(f"{STAGING}/{self.version}")


# --------------------------------------------------------------------------------------------
# The versioned root


class VersionedRoot:
    """A versioned artifact root on ``storage`` (a ``Storage``, a URL or a local path)."""

    def __init__(self, storage: Storage | str | os.PathLike):
        self.storage = storage if isinstance(storage, Storage) else open_storage(storage)
        self._seen_token: str | None | bool = False  # token of `current` when the stage began (False: not read)

    @property
    def url(self) -> str:
        return self.storage.url

    def __repr__(self) -> str:
        return f"VersionedRoot({self.storage!r})"

    # -- reading ---------------------------------------------------------------------------------

    def current(self) -> str | None:
        """The published version, or None."""
        got = self.storage.read_versioned(CURRENT)
        return parse_pointer(got[0]) if got is not None else None

    def current_or_raise(self) -> str:
        version = self.current()
        if version is None:
            raise FileNotFoundError(f"{self.url}/{CURRENT} does not exist: nothing has been published under "
                                    f"{self.url} yet")
        return version

    def all_names(self) -> set[str]:
        """Every top-level name that is or was becoming a version (finished or staged)."""
        names = set()
        for key in self.storage.list():
            head, _, rest = key.partition("/")
            if head == STAGING and rest:
                names.add(rest)
            elif rest and not head.startswith("."):
                names.add(head)
        return names

    def versions(self) -> list[str]:
        """Finished versions (holding a manifest), oldest first by ``version_sort_key``."""
        found = [k[: -len(MANIFEST) - 1] for k in self.storage.list() if k.count("/") == 1
                 and k.endswith("/" + MANIFEST) and not k.startswith(".")]
        return sorted_versions(found)

    def manifest(self, version: str) -> dict:
        try:
            return json.loads(self.storage.read_bytes(f"{check_version_name(version)}/{MANIFEST}"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{self.url}/{version}/{MANIFEST} is missing: {version} is not a finished "
                                    "version (never completed, or written by an interrupted job)") from None

    def verify(self, version: str) -> dict:
        """Every file of the manifest present with its size and sha256; returns the manifest, else ValueError."""
        manifest = self.manifest(version)
        for rel, meta in manifest.get("files", {}).items():
            key = f"{version}/{rel}"
            if not self.storage.exists(key):
                raise ValueError(f"{self.url}/{key}: listed in the manifest but missing; the version is incomplete, "
                                 "rebuild it")
            h, n = hashlib.sha256(), 0
            with self.storage.open_read(key) as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
                    n += len(block)
            if n != meta["bytes"]:
                raise ValueError(f"{self.url}/{key}: size {n} bytes, manifest says {meta['bytes']}; the file is "
                                 "truncated or was modified after publishing; rebuild it or roll back")
            if h.hexdigest() != meta["sha256"]:
                raise ValueError(f"{self.url}/{key}: sha256 {h.hexdigest()[:12]}… does not match the manifest "
                                 f"{meta['sha256'][:12]}…; the file is corrupt or was modified after publishing; "
                                 "rebuild it or roll back")
        return manifest

    def local_dir(self, version: str) -> Path | None:
        base = self.storage.local_path()
        return None if base is None else self.storage.local_path(version)

    # -- writing ---------------------------------------------------------------------------------

    @contextmanager
    def lock(self, job: str, seconds: float = DEFAULT_LEASE_SECONDS) -> Iterator[Lease]:
        """Hold the job lease for a ``with`` block; raises ``LockHeld`` when another live job holds it.
        Work left by killed jobs (unfinished stages, scratch files) is removed once the lease is held."""
        lease = Lease(self, job, seconds).acquire()
        try:
            self.clean()
            yield lease
        finally:
            lease.release()

    def clean(self) -> list[str]:
        """Remove unfinished stages and scratch space of killed jobs (call while holding the lease)."""
        removed = []
        for key in self.storage.list(STAGING):
            version = key[len(STAGING) + 1:]
            if self.storage.exists(f"{version}/{MANIFEST}"):
                self.storage.delete(key)  # finished; only its marker was left
                continue
            if self.storage.list(version):
                self.storage.delete_prefix(version)
                removed.append(version)
            # the marker stays as a tombstone: the name (and its sequence number) is never handed out again,
            # so a zombie worker of the dead job cannot write into a new version of the same name
            if json.loads(self.storage.read_bytes(key) or b"{}").get("state") != "abandoned":
                self.storage.write_bytes(key, json.dumps({"state": "abandoned", "at": _iso(_now())}).encode())
        self.storage.delete_prefix(SCRATCH)
        return removed

    def stage(self, version: str) -> Stage:
        """Start writing ``version`` (which must be new); remembers ``current`` to flip from it later."""
        check_version_name(version)
        if self.storage.list(version) or self.storage.exists(f"{STAGING}/{version}"):
            raise FileExistsError(f"{self.url}/{version} already exists (or was abandoned by a killed job); versions "
                                  "are immutable, choose a new name")
        got = self.storage.read_versioned(CURRENT)
        self._seen_token = got[1] if got is not None else None
        self.storage.write_bytes(f"{STAGING}/{version}", json.dumps({"state": "writing", "started": _iso(_now())}).encode())
        return Stage(self, version)

    def scratch(self, name: str) -> Storage:
        """A job's working space ``.scratch/<name>/`` (removed by the next job's ``clean``)."""
        return self.storage.child(f"{SCRATCH}/{check_version_name(name)}")

    def drop_scratch(self, name: str) -> None:
        """Remove ``.scratch/<name>/`` (a job's working space, when the job ends)."""
        self.storage.delete_prefix(f"{SCRATCH}/{check_version_name(name)}")

    def finish(self, stage: Stage) -> None:
        """The stage's manifest exists: drop its staging marker (the version is finished)."""
        if not stage.finished():
            raise ValueError(f"{stage.storage.url} has no {MANIFEST}; refusing to finish an unfinished version")
        self.storage.delete(f"{STAGING}/{stage.version}")

    def publish(self, version: str, *, expected: str | None | bool = False) -> None:
        """Flip ``current`` to ``version`` (finished) with a conditional write.

        expected: the token of ``current`` this publisher based its work on (default: what ``stage`` saw, or
        the token read now). ``OperationFailed`` when another publisher flipped it in between.
        """
        self.manifest(version)
        if expected is False:
            expected = self._seen_token
        if expected is False:
            got = self.storage.read_versioned(CURRENT)
            expected = got[1] if got is not None else None
        data = pointer_bytes(version)
        if not self.storage.write_if(CURRENT, data, expected):
            got = self.storage.read_versioned(CURRENT)
            if got is None or got[0] != data:
                now = parse_pointer(got[0]) if got is not None else None
                raise OperationFailed(
                    f"{self.url}/{CURRENT} was changed by another publisher (it now names {now!r}) while "
                    f"{version!r} was being published; {version!r} is finished but not current. Run the job "
                    f"again, or roll back to it explicitly")
        self._seen_token = False

    def prune(self, keep: int, protect: Iterable[str] = ()) -> list[str]:
        """Delete finished versions beyond the newest ``keep`` (by creation order); never the current one or
        ``protect``. Returns the removed names, oldest first."""
        if keep < 1:
            raise ValueError(f"keep must be >= 1 (the published version is always kept), got {keep}")
        current = self.current()
        versions = self.versions()
        keepers = set(versions[-keep:]) | {current} | set(protect)
        removed = []
        for v in versions:
            if v not in keepers:
                self.storage.delete(f"{v}/{MANIFEST}")  # unfinished first: a half-deleted version is never read
                self.storage.delete_prefix(v)
                removed.append(v)
        kept = self.versions()
        if kept:  # tombstones of abandoned versions older than every kept one are no longer needed
            oldest = version_sort_key(kept[0])
            for key in self.storage.list(STAGING):
                name = key[len(STAGING) + 1:]
                if version_sort_key(name) < oldest and not self.storage.list(name):
                    if json.loads(self.storage.read_bytes(key) or b"{}").get("state") == "abandoned":
                        self.storage.delete(key)
        return removed

    def previous(self, version: str | None = None) -> str:
        versions = self.versions()
        current = version or self.current()
        if current not in versions:
            raise ValueError(f"{self.url}: current version {current!r} is not a finished version "
                             f"(finished: {versions}); pass the version to roll back to")
        i = versions.index(current)
        if i == 0:
            raise ValueError(f"{self.url}: {current!r} is the oldest version kept (versions: {versions}); "
                             "there is nothing older to roll back to")
        return versions[i - 1]

    def rollback(self, to_version: str | None = None, *, model_version: str | None = None,
                 model_source: str = "the run's model") -> str:
        """Point ``current`` at ``to_version`` (default: the finished version before the current one).

        The target is verified (sha256 of every file) first; with ``model_version``, a target built by another
        model is refused (``core.guard.ModelVersionMismatch``). Returns the version now current.
        """
        if to_version is None:
            to_version = self.previous()
        elif to_version not in self.versions():
            raise ValueError(f"{self.url}: no finished version {to_version!r}; finished versions: {self.versions()}")
        manifest = self.verify(to_version)
        if model_version is not None:
            require_same_model(model_version, str(manifest.get("model_version")), expected_from=model_source,
                               found_from=f"{self.url}/{to_version}",
                               fix="roll back to a version built by this model, or rebuild from it")
        self.publish(to_version, expected=False)
        return to_version


def pointer_bytes(version: str) -> bytes:
    """Content of ``current``: the version on the first line, then a line unique to this write."""
    check_version_name(version)
    return (f"{version}\nwritten {_iso(_now())} by {socket.gethostname()} pid {os.getpid()} "
            f"id {uuid.uuid4().hex}\n").encode()


def parse_pointer(data: bytes) -> str | None:
    """The version a ``current`` object names (its first line), or None when it is empty."""
    text = data.decode("utf-8", errors="replace").strip()
    return text.splitlines()[0].strip() if text else None


# --------------------------------------------------------------------------------------------
# Path helpers for local readers


def current_version(root: str | os.PathLike | Storage) -> str | None:
    """The version ``root/current`` names (None when nothing is published)."""
    return VersionedRoot(root).current()


def current_dir(root: str | os.PathLike) -> Path:
    """The local directory of the published version; ``FileNotFoundError`` when nothing is published."""
    vr = VersionedRoot(root)
    version = vr.current_or_raise()
    return Path(vr.storage.local_path(version))


def list_versions(root: str | os.PathLike | Storage) -> list[str]:
    """Finished versions, oldest first (``version_sort_key``)."""
    return VersionedRoot(root).versions()
