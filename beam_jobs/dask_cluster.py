"""A local ``dask.distributed`` cluster as separate OS processes, for the Beam DaskRunner.

    with DaskCluster(workers=2) as cluster:     # `dask scheduler` + 2 x `dask worker`, on 127.0.0.1
        run_rebuild(cfg, ["--runner", "apache_beam.runners.dask.dask_runner.DaskRunner",
                          "--dask_client_address", cluster.address])

The scheduler and each worker are their own process (started with the ``dask`` CLI of this Python,
``--no-nanny`` so a worker is exactly one process), like a real cluster whose machines share nothing
but the network: work reaches a worker only through the scheduler, pickled. The workers import this
project's code, so they run with this checkout on ``PYTHONPATH``. ``stop`` ends every process it
started (SIGTERM, then SIGKILL), workers first.

    python -m beam_jobs.dask_cluster demo [--workers N] [--items N] [--dir D]

builds a tiny run (hashing item tower, synthetic items), rebuilds it on DirectRunner and on a fresh
cluster, and checks the published indexes are byte-identical (``make dask-demo``).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DASK_RUNNER = "beam_jobs.dask_runner.DaskRunner"  # Beam's DaskRunner with its multi-output fix
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class DaskCluster:
    """A scheduler and ``workers`` single-threaded worker processes on ``host``; ``directory``: logs
    and worker scratch space (a temporary directory when None)."""

    def __init__(self, workers: int = 2, host: str = "127.0.0.1", threads_per_worker: int = 1,
                 memory_limit: str = "4GiB", directory: str | Path | None = None, startup_timeout: float = 90.0):
        if workers < 1:
            raise ValueError(f"workers={workers}: a cluster needs at least one worker process")
        self.workers = workers
        self.host = host
        self.threads_per_worker = threads_per_worker
        self.memory_limit = memory_limit
        self.directory = Path(directory) if directory is not None else None
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.processes: list[subprocess.Popen] = []

    @property
    def address(self) -> str:
        """``host:port`` of the scheduler, for ``--dask_client_address``."""
        return f"{self.host}:{self.port}"

    def pipeline_args(self) -> list[str]:
        """Beam options that run a pipeline here. ``--dask_partition_size 1``: every element of a
        ``beam.Create`` (a read unit, a vectors shard) is its own Dask partition, so the work spreads
        over the workers (Beam's default packs up to 128 elements into one partition: one worker)."""
        return ["--runner", DASK_RUNNER, "--dask_client_address", self.address, "--dask_partition_size", "1"]

    def _env(self) -> dict[str, str]:
        path = os.environ.get("PYTHONPATH", "")
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT) + (os.pathsep + path if path else ""),
               "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
        return env

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        with open(self.directory / log_name, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "dask", *args], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=self._env(), cwd=self.directory,
                                    start_new_session=True)
        self.processes.append(proc)
        return proc

    def start(self) -> "DaskCluster":
        if self.directory is None:
            self.directory = Path(tempfile.mkdtemp(prefix="dask-cluster-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = _free_port(self.host)
        try:
            self._spawn(["scheduler", "--host", self.host, "--port", str(self.port), "--no-dashboard",
                         "--no-show"], "scheduler.log")
            for i in range(self.workers):
                self._spawn(["worker", f"tcp://{self.address}", "--host", self.host, "--no-nanny",
                             "--nthreads", str(self.threads_per_worker), "--memory-limit", self.memory_limit,
                             "--no-dashboard", "--name", f"worker-{i}",
                             "--local-directory", str(self.directory / f"worker-{i}")], f"worker-{i}.log")
            self._wait_for_workers()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_workers(self) -> None:
        from distributed import Client

        deadline = time.monotonic() + self.startup_timeout
        client = None
        try:
            while client is None:
                self._check_alive()
                try:
                    client = Client(self.address, timeout=5)
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"no Dask scheduler at {self.address} after {self.startup_timeout:.0f} s; "
                                           f"logs in {self.directory}")
                    time.sleep(0.3)
            while len(client.scheduler_info(n_workers=-1)["workers"]) < self.workers:
                self._check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {len(client.scheduler_info(n_workers=-1)['workers'])} of {self.workers} "
                                       f"Dask workers joined {self.address} in {self.startup_timeout:.0f} s; logs in "
                                       f"{self.directory}")
                time.sleep(0.3)
        finally:
            if client is not None:
                client.close()

    def _check_alive(self) -> None:
        for proc in self.processes:
            if proc.poll() is not None:
                raise RuntimeError(f"a Dask process exited with code {proc.returncode} during start-up "
                                   f"({' '.join(proc.args[2:4])}); logs in {self.directory}")

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.processes[1:]]

    def stop(self) -> None:
        """SIGTERM the workers and wait (SIGKILL after 5 s: a worker holds nothing worth a graceful exit),
        then the same for the scheduler."""
        for group in (self.processes[1:], self.processes[:1]):
            for proc in group:
                if proc.poll() is None:
                    try:
                        os.killpg(proc.pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
            for proc in group:
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=20)
        self.processes = []

    def __enter__(self) -> "DaskCluster":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def demo(argv: list[str] | None = None) -> int:
    """Rebuild a tiny run on DirectRunner and on a local Dask cluster; exit 0 when the indexes match."""
    from core.cli import ArgumentParser, run_main

    parser = ArgumentParser(prog="python -m beam_jobs.dask_cluster demo", description=demo.__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--items", type=int, default=3000)
    parser.add_argument("--dir", default=None, help="where to put the runs (a temporary directory by default)")
    args = parser.parse_args(argv)
    return run_main(parser.prog, _demo, args)  # core.cli: one-line errors (exit 2), tracebacks for bugs


def _demo(args) -> int:
    from beam_jobs.rebuild_index import RebuildConfig, run_rebuild
    from beam_jobs.testing import export_hashing_item_tower, synthetic_items
    from indexing.spec import IndexSpec

    root = Path(args.dir or tempfile.mkdtemp(prefix="dask-demo-"))
    model = root / "model"
    if not (model / "item_tower").is_dir():
        export_hashing_item_tower(model, dim=16)
    spec = IndexSpec(factory="IVF16,Flat", nprobe=8, gpu="never", recall_k=20, recall_queries=200)
    built = {}
    cluster = DaskCluster(workers=args.workers, directory=root / "cluster")
    for name in ("direct", "dask"):
        run = root / name
        (run / "data").mkdir(parents=True, exist_ok=True)
        if not (run / "model").exists():
            (run / "model").symlink_to(model.resolve(), target_is_directory=True)
        synthetic_items(args.items, seed=5).to_parquet(run / "data" / "items.parquet", row_group_size=500)
        cfg = RebuildConfig(run=str(run), index=spec)
        t0 = time.perf_counter()
        if name == "dask":
            with cluster:
                print(f"dask cluster: scheduler {cluster.address}, {args.workers} worker processes "
                      f"{cluster.worker_pids()}", flush=True)
                result = run_rebuild(cfg, cluster.pipeline_args())
        else:
            result = run_rebuild(cfg, ["--runner", "DirectRunner"])
        built[name] = (result.index_dir / "index.faiss").read_bytes()
        print(f"{name}: published {result.version} ({result.count} items) in {time.perf_counter() - t0:.1f} s: "
              f"{result.index_dir}", flush=True)
    same = built["direct"] == built["dask"]
    print("index.faiss byte-identical on DirectRunner and DaskRunner:", same)
    return 0 if same else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "demo":
        sys.exit(demo(sys.argv[2:]))
    print(__doc__)
    sys.exit(2)
