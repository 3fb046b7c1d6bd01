"""Housekeeping for a versioned artifact root (``vectors/`` or ``index/``) while a job writes to it.

The layout, atomic writes, manifests, ``current`` pointer and pruning are ``core.artifacts``;
this module adds what a *job* needs around them:

* ``JobLock``: one writer per root at a time (``fcntl.flock`` on ``root/.lock``; the kernel drops
  it when the process dies, so a killed job never leaves a stale lock).
* ``clean_staging``: under the lock, leftover ``.staging-*`` directories are from killed runs
  (never finished: a staging dir becomes a version only by ``promote``), so they are removed.
* ``new_version``: a fresh, sortable version name (UTC time, suffixed if taken).
* ``crash_point`` / ``InjectedCrash``: the test hook that kills a job after a named step, like
  ``crash_at`` in FAISS ``contrib/big_batch_search.py``.
* ``rollback``: flip ``current`` back to an earlier finished version.
"""
from __future__ import annotations

import datetime as _dt
import errno
import fcntl
import os
import shutil
from pathlib import Path

from core import artifacts
from core.errors import OperationFailed

LOCK = ".lock"
STAGING_PREFIX = ".staging-"


class InjectedCrash(RuntimeError):
    """Raised by ``crash_point`` when a test asked the job to die after a step."""


def crash_point(step: str, crash_at: str | None) -> None:
    if crash_at == step:
        raise InjectedCrash(f"injected crash after step {step!r} (crash_at={crash_at!r})")


def check_crash_at(crash_at: str | None, steps: tuple[str, ...]) -> None:
    if crash_at is not None and crash_at not in steps:
        raise ValueError(f"crash_at={crash_at!r} is not a step of this job; steps: {list(steps)}")


class JobLock:
    """Exclusive, non-blocking lock on ``root`` for the duration of a ``with`` block."""

    def __init__(self, root: str | os.PathLike, job: str):
        self.root = Path(root)
        self.job = job
        self._fd: int | None = None

    def __enter__(self) -> "JobLock":
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / LOCK
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise OperationFailed(
                    f"{path} is locked: another job is writing to {self.root} right now; wait for it to "
                    f"finish (a killed job releases the lock automatically) and run {self.job} again"
                ) from None
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def clean_staging(root: str | os.PathLike) -> list[str]:
    """Remove leftover staging directories of killed runs (call while holding ``JobLock``)."""
    root = Path(root)
    removed = []
    if root.is_dir():
        for p in sorted(root.iterdir()):
            if p.is_dir() and p.name.startswith(STAGING_PREFIX):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
    return removed


def new_version(*roots: str | os.PathLike, now: _dt.datetime | None = None) -> str:
    """``YYYYMMDDTHHMMSSZ`` (UTC), with ``-1``, ``-2``... appended if any root already has it."""
    base = (now or _dt.datetime.now(_dt.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    name, i = base, 0
    while any((Path(r) / name).exists() for r in roots):
        i += 1
        name = f"{base}-{i}"
    return name


def check_version_name(version: str) -> str:
    if not version or version.startswith(".") or "/" in version or version in (artifacts.CURRENT, LOCK):
        raise ValueError(f"version name {version!r} is not usable: it must be non-empty, not start with '.', "
                         f"contain no '/', and not be {artifacts.CURRENT!r}")
    return version


def rollback(root: str | os.PathLike, to_version: str | None = None) -> str:
    """Point ``root/current`` at ``to_version`` (default: the finished version before the current one).

    The target's manifest is verified (sha256 of every file) before the flip. Returns the version now
    current. Raises ``ValueError`` when there is nothing to roll back to or the target is unusable.
    """
    root = Path(root)
    versions = artifacts.list_versions(root)
    current = artifacts.current_version(root)
    if to_version is None:
        if current not in versions:
            raise ValueError(f"{root}: current version {current!r} is not a finished version "
                             f"(finished: {versions}); pass to_version=<one of them>")
        i = versions.index(current)
        if i == 0:
            raise ValueError(f"{root}: {current!r} is the oldest version kept (versions: {versions}); "
                             "there is nothing older to roll back to")
        to_version = versions[i - 1]
    elif to_version not in versions:
        raise ValueError(f"{root}: no finished version {to_version!r}; finished versions: {versions}")
    artifacts.verify_manifest(root / to_version)
    artifacts.publish(root, to_version)
    return to_version
