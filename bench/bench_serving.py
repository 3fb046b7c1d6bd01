"""Serving latency under open-loop load: the HTTP top-k service over a 1M-item index, at fixed request rates.

    .venv/bin/python -m bench.bench_serving --run /tmp/serve_run            # the reported configuration
    .venv/bin/python -m bench.bench_serving --run /tmp/serve_run --rates 100 --duration 5 --n 100000

Setup. ``--run`` is a finished run (e.g. ``twotower demo``: MovieLens-100K, 1682 items). A bench run
directory (``--workdir``) links that run's model/ and data/, and gets a synthetic ``--n``-item index
published under its own index/: the run's real item vectors (rows 0..1681, their real ids) plus
``n - 1682`` synthetic normalised clustered vectors (``indexing.synthetic.clustered_vectors``, ids
"syn-<i>"), built with ``IndexSpec()`` (factory "auto": IVF4096,Flat for 1M x 64, default nprobe). Its
manifest carries the run's model version, which is what lets the service start with the real query tower;
the synthetic rows are not embeddings of anything. The index is built once and reused.

Load. The service runs as its own process (``python -m serving``, OMP_WAIT_POLICY=PASSIVE), bound to
127.0.0.1. This process sends requests OPEN-LOOP: request i is due at t0 + i / rate whatever happened to
earlier ones, each on an idle keep-alive connection (a new one when all are busy), and its latency is
measured from its due time to the last byte of the answer (so queueing in the client counts too: no
coordinated omission). At most ``--max-connections`` (256) are open, like a client pool; a due request
that finds all of them busy waits for one, and the wait is part of its latency. Mix: ``--raw-share`` raw-feature requests (random features + 10 random real
items as history), the rest known MovieLens users; k=``--k``, exclude_seen true.

Baselines in the same run: "bare" = the query tower + index search called directly, one request at a
time, in-process (no HTTP, no batching: the floor a request can cost); and the same server with
micro-batching off (max_batch=1). Ratios: p50 / bare p50.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before faiss loads libgomp (see bench_index)

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


# ----------------------------------------------------------------------------------- bench run + index
def make_run(root: Path, config: str, overrides: list[str]) -> Path:
    """Train a run for the bench when none is given: data -> train -> embed items (in-process, no Beam) ->
    vectors/current. The tests' tiny-run recipe (tests/serving/conftest.py) on a real config."""
    from core import artifacts, lifecycle
    from core.rundir import RunDir
    from indexing.vectors import write_vectors
    from recdata.loading import load_split
    from towers.export import load_tower
    from towers.inputs import item_features_batch
    from twotower import pipeline
    from twotower.config import load_config

    run = RunDir(root)
    if lifecycle.current_version(run.vectors) is not None:
        print(f"# reusing the trained run {root}", flush=True)
        return root
    t0 = time.perf_counter()
    cfg = load_config(config, overrides)
    pipeline.init_run(cfg, run)
    dataset, split = pipeline.stage_data(cfg, run)
    pipeline.stage_train(cfg, run, dataset, split)
    dataset, _ = load_split(run.data)
    tower = load_tower(run.item_tower)
    features = item_features_batch(dataset.items, dataset.item_features)
    write_vectors(run.vectors / "v1", features["item_id"], tower(features), tower.model_version, num_shards=1)
    lifecycle.VersionedRoot(run.vectors).publish("v1")
    print(f"# trained {config} {' '.join(overrides)} into {root} in {time.perf_counter() - t0:.0f} s", flush=True)
    return root


def prepare_run(source: Path, workdir: Path, n: int, seed: int) -> Path:
    """workdir/run: links to source's model/ and data/, plus a published n-item index of the same model."""
    from core import artifacts
    from core import lifecycle
    from core.rundir import RunDir

    src = RunDir(source)
    run = RunDir(workdir / "run")
    run.root.mkdir(parents=True, exist_ok=True)
    for name in ("model", "data"):
        link = run.root / name
        if link.is_symlink() and link.resolve() != (src.root / name).resolve():
            link.unlink()
        if not link.exists():
            link.symlink_to((src.root / name).resolve(), target_is_directory=True)
    model_version = src.model_version()
    current = lifecycle.current_version(run.index)
    if current:
        manifest = artifacts.read_manifest(run.index / current)
        if manifest["model_version"] == model_version and manifest["count"] == n:
            print(f"# reusing index {run.index / current}: {manifest['factory']}, {n} items", flush=True)
            return run.root
    build_index(src, run, n, seed, model_version)
    return run.root


def build_index(src, run, n: int, seed: int, model_version: str) -> None:
    from indexing.item_index import ItemIndex
    from indexing.spec import IndexSpec
    from indexing.store import publish_index
    from indexing.synthetic import clustered_vectors
    from indexing.vectors import read_vectors
    from core import artifacts
    from core import lifecycle

    real_ids, real_vectors, _ = read_vectors(lifecycle.current_dir(src.vectors))
    if n <= len(real_ids):
        raise ValueError(f"--n {n} must exceed the run's {len(real_ids)} real items")
    t0 = time.perf_counter()
    synthetic, _ = clustered_vectors(n - len(real_ids), real_vectors.shape[1], seed=seed)
    vectors = np.concatenate([real_vectors, synthetic])
    del synthetic
    ids = np.concatenate([np.asarray(real_ids, dtype=object),
                          np.array([f"syn-{i}" for i in range(n - len(real_ids))], dtype=object)])
    index = ItemIndex.build(vectors, ids, IndexSpec(), model_version)
    version = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    publish_index(run.index, index, version, keep=1)
    print(f"# built {index.factory} over {n} items in {time.perf_counter() - t0:.0f} s "
          f"(recall@{index.recall['k']} {index.recall['recall']:.3f} on item self-queries); model version "
          f"{model_version} stamped from {src.root}", flush=True)


# ----------------------------------------------------------------------------------- request mix
def request_bodies(run: Path, count: int, raw_share: float, k: int, seed: int) -> list[bytes]:
    from recdata.loading import load_split

    dataset, _ = load_split(run / "data")
    rng = random.Random(seed)
    users = dataset.users["user_id"].tolist()
    items = dataset.items["item_id"].tolist()
    specs = dataset.user_features
    examples = dataset.users.sample(n=min(200, len(users)), random_state=seed)
    bodies = []
    for _ in range(count):
        if rng.random() < raw_share:
            row = examples.iloc[rng.randrange(len(examples))]
            features = {}
            for s in specs:
                v = row[s.name]
                if s.kind == "numeric":
                    features[s.name] = None if v != v else float(v)
                elif s.kind == "multi_categorical":
                    features[s.name] = list(v) if v is not None else None
                else:
                    features[s.name] = None if v is None or v != v else str(v)
            body = {"features": features, "history": rng.sample(items, 10), "k": k, "exclude_seen": True}
        else:
            body = {"user_id": rng.choice(users), "k": k, "exclude_seen": True}
        bodies.append(json.dumps(body).encode())
    return bodies


# ----------------------------------------------------------------------------------- bare baseline
def bare_latency(run: Path, bodies: list[bytes], count: int) -> np.ndarray:
    """Seconds per request of tower + index search called directly (in-process, one at a time)."""
    from serving.config import ServingConfig
    from serving.requests import decode_json, parse_topk
    from serving.service import TopKService
    from serving.tower_inputs import batch_inputs

    service = TopKService.open(run, ServingConfig(reload_interval_s=None))
    try:
        times = []
        for body in bodies[:count]:
            request = parse_topk(decode_json(body), service.user_specs, max_k=1000, max_history_items=10_000)
            start = time.perf_counter()
            pending = service.resolve(request)
            vectors = service.encoder(batch_inputs([pending.inputs], service.user_specs, service.users.max_history))
            service.state.index.search(vectors, request.k, [service._exclusions(pending, service.state)])
            times.append(time.perf_counter() - start)
        return np.array(times[10:])  # the first calls warm caches
    finally:
        service.close()


# ----------------------------------------------------------------------------------- server process
class Server:
    def __init__(self, run: Path, options: list[str]):
        cmd = [sys.executable, "-m", "serving", "--run", str(run), "--host", HOST, "--port", "0",
               "--set", "reload_interval_s=null"]
        for opt in options:
            cmd += ["--set", opt]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_WAIT_POLICY": "PASSIVE"}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        self.url = None
        deadline = time.monotonic() + 600
        while self.url is None and time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("server exited:\n" + "".join(self.log))
            self.log.append(line)
            match = re.search(r"listening on http://([\d.]+):(\d+)", line)
            if match:
                self.port = int(match.group(2))
                self.url = f"http://{HOST}:{self.port}"
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stderr:
            self.log.append(line)

    def get(self, path: str) -> dict:
        import urllib.request

        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def cpu_seconds(self) -> float:
        """user + system CPU seconds the server process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ----------------------------------------------------------------------------------- open-loop client
async def _exchange(reader, writer, body: bytes) -> int:
    writer.write(b"POST /topk HTTP/1.1\r\nHost: " + HOST.encode() + b"\r\nContent-Type: application/json\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
    payload = await reader.readexactly(length)
    if status == 200 and not payload.startswith(b'{"items"'):
        return -1
    return status


async def open_loop(port: int, bodies: list[bytes], rate: float, duration: float, max_connections: int) -> dict:
    """Send rate * duration requests at fixed due times; latency = answer time - due time.

    At most ``max_connections`` requests are in flight (a client pool); a due request waits for a free
    connection, and that wait counts in its latency.
    """
    count = int(rate * duration)
    slots = asyncio.Semaphore(max_connections)
    idle: list = []
    latencies = np.full(count, np.nan)
    statuses = np.zeros(count, dtype=np.int64)
    loop = asyncio.get_running_loop()
    connections = 0

    async def one(i: int, due: float):
        nonlocal connections
        async with slots:
            conn = idle.pop() if idle else None
            try:
                if conn is None:
                    conn = await asyncio.open_connection(HOST, port)
                    connections += 1
                statuses[i] = await _exchange(*conn, bodies[i % len(bodies)])
                latencies[i] = loop.time() - due
                idle.append(conn)
            except (OSError, asyncio.IncompleteReadError, ValueError, AttributeError):
                statuses[i] = -1
                if conn is not None:
                    conn[1].close()

    start = loop.time() + 0.05
    tasks = []
    for i in range(count):
        due = start + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    wall = loop.time() - start
    for _, writer in idle:
        writer.close()
    ok = statuses == 200
    lat = latencies[ok] * 1000
    return {"rate": rate, "sent": count, "ok": int(ok.sum()), "errors": int((~ok).sum()),
            "achieved": count / wall, "connections": connections,
            "p50": float(np.percentile(lat, 50)) if len(lat) else float("nan"),
            "p90": float(np.percentile(lat, 90)) if len(lat) else float("nan"),
            "p99": float(np.percentile(lat, 99)) if len(lat) else float("nan"),
            "max": float(lat.max()) if len(lat) else float("nan")}


def run_rates(server: Server, bodies, rates, duration, label, max_connections) -> list[dict]:
    rows = []
    asyncio.run(open_loop(server.port, bodies, 50, 2.0, max_connections))  # warm-up, not reported
    for rate in rates:
        before, cpu_before = server.get("/healthz"), server.cpu_seconds()
        row = asyncio.run(open_loop(server.port, bodies, rate, duration, max_connections))
        after, cpu_after = server.get("/healthz"), server.cpu_seconds()
        batches = after["batches"] - before["batches"]
        row.update(server=label, mean_batch=(after["requests"] - before["requests"]) / max(batches, 1),
                   largest_batch=after["largest_batch"],
                   cpu_ms_per_request=1000 * (cpu_after - cpu_before) / max(row["ok"], 1))
        rows.append(row)
        print(f"  {label:<14} {rate:>6.0f} req/s: achieved {row['achieved']:.1f}, ok {row['ok']}, errors "
              f"{row['errors']}, p50 {row['p50']:.2f} ms, p90 {row['p90']:.2f}, p99 {row['p99']:.2f}, "
              f"max {row['max']:.1f}, mean batch {row['mean_batch']:.2f}, server CPU {row['cpu_ms_per_request']:.2f} ms/request, "
              f"connections {row['connections']}",
              flush=True)
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="a finished run (model, data, vectors/current)")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/serving-bench"), help="bench run + index (reused)")
    p.add_argument("--n", type=int, default=1_000_000, help="items in the index")
    p.add_argument("--rates", default="50,100,200", help="request rates (req/s), comma-separated")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per rate (bounded: <= 120)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--max-connections", type=int, default=256, help="client connection pool size")
    p.add_argument("--raw-share", type=float, default=0.2, help="share of raw-feature requests")
    p.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="ServingConfig for the batched server, e.g. --set max_wait_ms=2")
    p.add_argument("--no-unbatched", action="store_true", help="skip the max_batch=1 comparison server")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    p.add_argument("--clean", action="store_true", help="delete --workdir first (rebuild the index)")
    args = p.parse_args(argv)
    if not 0 < args.duration <= 120:
        p.error("--duration must be in (0, 120] seconds")
    rates = [float(r) for r in args.rates.split(",") if r]
    if args.clean and args.workdir.exists():
        shutil.rmtree(args.workdir)

    run = prepare_run(args.run, args.workdir, args.n, args.seed)
    bodies = request_bodies(run, 5000, args.raw_share, args.k, args.seed)
    print(f"# {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f} at start; k={args.k}, "
          f"{args.raw_share:.0%} raw-feature requests, {args.duration:g} s per rate, open loop", flush=True)

    bare = bare_latency(run, bodies, 300) * 1000
    bare_p50 = float(np.percentile(bare, 50))
    print(f"  bare (in-process tower + search, one at a time): p50 {bare_p50:.2f} ms, "
          f"p99 {np.percentile(bare, 99):.2f} ms over {len(bare)} requests", flush=True)

    rows = []
    configs = [("batched", args.options)] + ([] if args.no_unbatched else [("max_batch=1", ["max_batch=1"])])
    for label, options in configs:
        server = Server(run, options)
        try:
            info = server.get("/version")
            print(f"# server {label}: index {info['index_factory']}, {info['index_count']} items, "
                  f"params {info['search_params']}, model {info['model_version']}", flush=True)
            rows += run_rates(server, bodies, rates, args.duration, label, args.max_connections)
        finally:
            server.stop()
    print(f"# load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| server | rate req/s | achieved | ok | errors | p50 ms | p90 ms | p99 ms | max ms | p50 / bare p50 | mean batch "
          "| server CPU ms/req |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['server']} | {r['rate']:.0f} | {r['achieved']:.1f} | {r['ok']} | {r['errors']} | {r['p50']:.2f} | "
              f"{r['p90']:.2f} | {r['p99']:.2f} | {r['max']:.1f} | {r['p50'] / bare_p50:.2f} | {r['mean_batch']:.2f} "
              f"| {r['cpu_ms_per_request']:.2f} |")
    print(f"\nbare p50 {bare_p50:.2f} ms (tower + index search in-process, no HTTP, no batching)")
    if args.json:
        args.json.write_text(json.dumps({"bare_ms": bare.tolist(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
