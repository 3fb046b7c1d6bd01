"""Serving latency under open-loop load, the old server next to the new one in one run (issues #16, #13).

    flock /work/bench.lock nice -n 5 .venv/bin/python -m bench.bench_serving --run /tmp/sbench/train \
        --workdir /tmp/sbench --json /tmp/sbench/issue16.json                          # the issue-16 table
    .venv/bin/python -m bench.bench_serving --workdir /tmp/sb --n 100000 --rates 100 --duration 5 --servers new

Setup. ``--run`` is a finished run; without it one is trained with ``--make-run-config`` (demo: MovieLens-100K,
1682 items) into WORKDIR/train, items embedded in-process. A bench run directory links that run's model/ and
data/, and gets a synthetic ``--n``-item index published under its own index/: the run's real item vectors
(rows 0..1681, their real ids) plus ``n - 1682`` synthetic normalised clustered vectors
(``indexing.synthetic.clustered_vectors``, ids "syn-<i>"), built with ``IndexSpec()`` (factory "auto":
IVF4096,Flat for 1M x 64, default nprobe). Its manifest carries the run's model version, which is what lets
the service start with the real query tower; the synthetic rows are not embeddings of anything. Built once,
reused.

Servers. "old" = the whole source tree at ``--old-rev`` (git 4b07bcf: the standard library's
ThreadingHTTPServer, before issues #13/#16 and the lifecycle rework), extracted into WORKDIR/old-<rev>-tree;
it cannot read today's artifacts, so it gets its own run WORKDIR/old-<rev>-run: the same model/ and data/
(links) and the same FAISS index file, re-published by the old code in its own formats (~15 s, reused).
"new" = this tree (uvicorn + httptools + uvloop); "new-wN" = this tree with ``--set workers=N``
(N processes on one port; rates only; its mean batch is not reported, server CPU sums the workers). Each runs as its own process (``python -m serving``
with its own tree on PYTHONPATH, OMP_WAIT_POLICY=PASSIVE) on 127.0.0.1 with the same ``--set`` options;
one process per server for all scenarios, polling index/current every second; the rebuild and poison
scenarios publish with the server's own code into its own run.

Load. This process sends requests OPEN-LOOP: request i is due at t0 + i / rate whatever happened to earlier
ones, each on an idle keep-alive connection (a new one when all are busy, at most ``--max-connections``),
and its latency runs from its due time to the last byte of the answer (no coordinated omission). The
client runs on uvloop with pre-serialised bodies and raw HTTP/1.1 on asyncio streams; its own CPU (cores,
user + system of this process) is reported next to the server's CPU per request. Mix:
``--raw-share`` raw-feature requests (features + 10 random real items as history), the rest known users;
k=``--k``, exclude_seen true. Scenarios: "rates" (each of ``--rates``), "rebuild" (100 req/s for 40 s while
the publish half of a rebuild runs twice in another process: load the current index, save it as a new
version with sha256s, flip ``current``; the servers poll every 1 s), "poison" (issue #13's load test: 100
req/s from 16 connections for ``--poison-duration`` s while one more client sends 10 poison req/s (2**63
timestamps, 100k-deep JSON, 5000-digit ints, bad fields) and the index is published twice; every valid
request must succeed).
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
import uvloop  # noqa: E402

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


# ----------------------------------------------------------------------------------- server process
# Run by the OLD tree's Python (its own indexing/ and core/): wrap the new run's published FAISS file (the
# same trained IVF lists, so both servers search the same index) in the old ItemIndex and publish it with
# the old indexing.store into the old run's index/ (the old manifest and ``current`` formats).
_OLD_PUBLISH = """
import dataclasses, json, sys
from pathlib import Path
import faiss, pyarrow.parquet as pq
from core.strict import from_dict
from indexing.item_index import ItemIndex
from indexing.spec import IndexSpec
from indexing.store import publish_index
src, root, version = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
m = json.loads((src / "manifest.json").read_text())
known = {f.name for f in dataclasses.fields(IndexSpec)}
spec = from_dict(IndexSpec, {k: v for k, v in m["spec"].items() if k in known}, "spec")
cpu = faiss.read_index(str(src / "index.faiss"))
ids = pq.read_table(src / "item_ids.parquet").column("item_id").to_numpy(zero_copy_only=False).astype(object)
index = ItemIndex(cpu, ids, spec, m["model_version"], m["factory"], m["recall"], search_params=m["search_params"],
                  tuning=m.get("tuning"))
publish_index(root, index, version, keep=3)
"""


class Peer:
    """One server under test: its source tree (``serving`` and everything it imports) and its run directory."""

    def __init__(self, label: str, tree: Path, run: Path, options: tuple[str, ...] = ()):
        self.label, self.tree, self.run, self.options = label, tree, run, list(options)

    def env(self) -> dict:
        return {**os.environ, "PYTHONPATH": str(self.tree), "OMP_WAIT_POLICY": "PASSIVE"}


def old_peer(workdir: Path, rev: str, new_run: Path) -> Peer:
    """The whole source tree at git revision ``rev`` (the ThreadingHTTPServer service, before issues #13/#16
    and the lifecycle rework), extracted into ``workdir/old-<rev>-tree``, with its own run directory
    ``workdir/old-<rev>-run``: the same model/ and data/ (links) and the same FAISS index as ``new_run``,
    published by the old code in the old formats (``_OLD_PUBLISH``). It cannot read today's artifacts, so
    it gets its own; built once (~10 s for 1M items), reused while the new run's index is unchanged."""
    from core import artifacts
    from core import lifecycle

    tree = workdir / f"old-{rev}-tree"
    if not (tree / "serving" / "app.py").exists():
        staging = workdir / f".old-{rev}-tree.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(staging)], input=archive, check=True)
        staging.rename(tree)
    run = workdir / f"old-{rev}-run"
    run.mkdir(parents=True, exist_ok=True)
    for name in ("model", "data"):
        link = run / name
        if not link.exists():
            link.symlink_to((new_run / name).resolve(), target_is_directory=True)
    source_version = lifecycle.current_version(new_run / "index")
    source = new_run / "index" / source_version
    wanted = artifacts.read_manifest(source)
    stamp = run / "index" / "SOURCE"  # which new index the old one was made from
    if not (stamp.exists() and stamp.read_text() == f"{wanted['model_version']} {wanted['count']}"):
        t0 = time.perf_counter()
        shutil.rmtree(run / "index", ignore_errors=True)
        (run / "index").mkdir()
        peer = Peer("old", tree, run)
        subprocess.run([sys.executable, "-c", _OLD_PUBLISH, str(source), str(run / "index"),
                        time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())], check=True, env=peer.env(), cwd=tree)
        stamp.write_text(f"{wanted['model_version']} {wanted['count']}")
        print(f"# old run {run}: index {source_version} re-published by the code at {rev} in "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    return Peer("old", tree, run)


class Server:
    def __init__(self, peer: Peer, options: list[str], reload_s: float | None = None):
        cmd = [sys.executable, "-m", "serving", "--run", str(peer.run), "--host", HOST, "--port", "0",
               "--set", f"reload_interval_s={'null' if reload_s is None else reload_s}"]
        for opt in options:
            cmd += ["--set", opt]
        self.proc = subprocess.Popen(cmd, cwd=peer.tree, env=peer.env(), stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        self.url = None
        workers = [int(o.split("=", 1)[1]) for o in options if o.startswith("workers=")]
        ready, deadline = 0, time.monotonic() + 600
        while ready < (workers[-1] if workers else 1) and time.monotonic() < deadline:  # every worker ready
            line = self.proc.stderr.readline()
            if not line:
                raise RuntimeError("server exited:\n" + "".join(self.log))
            self.log.append(line)
            match = re.search(r"listening on http://([\d.]+):(\d+)", line)
            if match:
                ready += 1
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

    def rss_mb(self) -> float:
        """Resident memory of the server process and its children (workers), MB (Linux /proc)."""
        total = 0.0
        for pid in [self.proc.pid, *self._children()]:
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
            except OSError:
                continue
        return total

    def cpu_seconds(self) -> float:
        """user + system CPU seconds the server process and its children (``workers`` > 1) have used so far
        (Linux /proc)."""
        total = 0.0
        for pid in [self.proc.pid, *self._children()]:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return total

    def _children(self) -> list[int]:
        try:
            return [int(x) for x in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()]
        except OSError:
            return []

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
    clock = time.perf_counter  # uvloop's loop.time() has millisecond resolution
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
                latencies[i] = clock() - due
                idle.append(conn)
            except (OSError, asyncio.IncompleteReadError, ValueError, AttributeError):
                statuses[i] = -1
                if conn is not None:
                    conn[1].close()

    start = clock() + 0.05
    tasks = []
    for i in range(count):
        due = start + i / rate
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    wall = clock() - start
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


POISON = [  # issue 13's hostile-but-fair client: each must get a 4xx and hurt no one else
    b'{"user_id": "1", "k": 10, "timestamp": 9223372036854775808}',
    b'{"history": ["1"], "history_timestamps": [18446744073709551616], "k": 10}',
    b'{"features": {}, "history": ["1"], "k": 10, "timestamp": -1}',
    b"[" * 100_000 + b"]" * 100_000,
    b'{"user_id": "1", "k": ' + b"9" * 5000 + b"}",
    b'{"user_id": "1", "k": 0}',
    b'{"user_id": "1", "k": 10, "shoe_size": 44}',
    b"{not json",
]


async def poison_loop(port: int, rate: float, duration: float) -> dict:
    """One client sending ``POISON`` bodies round-robin at ``rate`` req/s on its own connections."""
    count = int(rate * duration)
    statuses = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    conn = None
    for i in range(count):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        try:
            if conn is None:
                conn = await asyncio.open_connection(HOST, port)
            statuses.append(await _exchange(*conn, POISON[i % len(POISON)]))
        except (OSError, asyncio.IncompleteReadError, ValueError, AttributeError):
            statuses.append(-1)
        if conn is not None:  # the server may close after an error: reconnect for the next one
            conn[1].close()
            conn = None
    codes: dict = {}
    for st in statuses:
        codes[st] = codes.get(st, 0) + 1
    return {"sent": count, "statuses": codes}


def publish_copy(peer: Peer, tag: str) -> float:
    """The publish half of a rebuild, in its own process with the peer's own code: load the current index
    (sha256-verified), save it as a new version (write + sha256 + manifest), flip ``current``. Returns s."""
    code = ("import sys, time; from indexing.store import load_current, publish_index; "
            "idx = load_current(sys.argv[1]); "
            "publish_index(sys.argv[1], idx, time.strftime('%Y%m%dT%H%M%SZ', time.gmtime()) + '-' + sys.argv[2], keep=3)")
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(peer.run / "index"), tag], check=True, env=peer.env(),
                   cwd=peer.tree)
    return time.perf_counter() - t0


async def with_publishes(peer: Peer, job, duration: float, publishes: int, tag: str) -> tuple:
    """Run ``job`` (a coroutine) while ``publishes`` new index versions are published, evenly spread."""
    async def publisher():
        times = []
        for j in range(publishes):
            await asyncio.sleep(duration / (publishes + 1) if j == 0 else 1.0)
            times.append(await asyncio.to_thread(publish_copy, peer, f"{tag}{j}"))
        return times
    return await asyncio.gather(job, publisher())


def row_line(r: dict) -> str:
    return (f"| {r['server']} | {r['scenario']} | {r['rate']:.0f} | {r['achieved']:.1f} | {r['ok']} | {r['errors']} | "
            f"{r['p50']:.2f} | {r['p90']:.2f} | {r['p99']:.2f} | {r['max']:.1f} | {r.get('mean_batch', float('nan')):.2f} "
            f"| {r.get('cpu_ms_per_request', float('nan')):.2f} | {r.get('client_cores', float('nan')):.2f} "
            f"| {r.get('load', float('nan')):.1f} |")


def measure(server: Server, label: str, scenario: str, coro_factory) -> tuple[dict, object]:
    before, cpu_before = server.get("/healthz"), server.cpu_seconds()
    client_before, wall_before = time.process_time(), time.perf_counter()
    result = uvloop.run(coro_factory())
    client_cores = (time.process_time() - client_before) / (time.perf_counter() - wall_before)
    row, extra = (result, None) if isinstance(result, dict) else (result[0], result[1])
    after, cpu_after = server.get("/healthz"), server.cpu_seconds()
    batches = after["batches"] - before["batches"]
    row.update(server=label, scenario=scenario, load=os.getloadavg()[0],
               mean_batch=((after["requests"] - before["requests"]) / max(batches, 1)
                           if after.get("worker") is None else float("nan")),  # /healthz = one worker of several
               cpu_ms_per_request=1000 * (cpu_after - cpu_before) / max(row["ok"], 1), client_cores=client_cores)
    print(f"  {label:<4} {scenario:<22} {row['rate']:>5.0f} req/s: achieved {row['achieved']:.1f}, ok {row['ok']}, "
          f"errors {row['errors']}, p50 {row['p50']:.2f} ms, p90 {row['p90']:.2f}, p99 {row['p99']:.2f}, max "
          f"{row['max']:.1f}, mean batch {row['mean_batch']:.2f}, CPU {row['cpu_ms_per_request']:.2f} ms/req, "
          f"client {row['client_cores']:.2f} cores, load {row['load']:.1f}{'' if extra is None else f', {extra}'}", flush=True)
    return row, extra


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, default=None, help="a finished run (model, data, vectors/current); default: "
                                                          "train one with --make-run-config into WORKDIR/train")
    p.add_argument("--make-run-config", default="demo", help="config for the run trained when --run is not given")
    p.add_argument("--workdir", type=Path, default=Path("/tmp/serving-bench"), help="bench run + index (reused)")
    p.add_argument("--n", type=int, default=1_000_000, help="items in the index")
    p.add_argument("--rates", default="100,300,1000", help="request rates (req/s), comma-separated")
    p.add_argument("--duration", type=float, default=15.0, help="seconds per rate (bounded: <= 120)")
    p.add_argument("--scenarios", default="rates,rebuild,poison",
                   help="rates: each rate; rebuild: 100 req/s while an index is published twice; poison: the "
                        "issue-13 load test (100 req/s from 16 connections for --poison-duration s, one poison "
                        "client, two publishes)")
    p.add_argument("--servers", default="old,new,new-w2",
                   help="old = the tree at --old-rev (ThreadingHTTPServer), new = this tree, new-wN = this tree with "
                        "--set workers=N (N processes on one port; only the rates scenario)")
    p.add_argument("--old-rev", default="4b07bcf", help="git revision of the old serving/ package")
    p.add_argument("--poison-duration", type=float, default=60.0)
    p.add_argument("--rebuild-duration", type=float, default=40.0, help="seconds of the rebuild scenario")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--max-connections", type=int, default=256, help="client connection pool size")
    p.add_argument("--raw-share", type=float, default=0.2, help="share of raw-feature requests")
    p.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                   help="ServingConfig for both servers, e.g. --set max_wait_ms=2")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    p.add_argument("--clean", action="store_true", help="delete --workdir first (rebuild the index)")
    args = p.parse_args(argv)
    if not all(0 < d <= 120 for d in (args.duration, args.poison_duration, args.rebuild_duration)):
        p.error("--duration, --poison-duration and --rebuild-duration must be in (0, 120] seconds")
    rates = [float(r) for r in args.rates.split(",") if r]
    scenarios = [x for x in args.scenarios.split(",") if x]
    if args.clean and args.workdir.exists():
        shutil.rmtree(args.workdir)

    source = args.run or make_run(args.workdir / "train", args.make_run_config, [])
    run = prepare_run(source, args.workdir, args.n, args.seed)
    bodies = request_bodies(run, 5000, args.raw_share, args.k, args.seed)
    print(f"# {os.cpu_count()} cpus, load average {os.getloadavg()[0]:.1f} at start; k={args.k}, "
          f"{args.raw_share:.0%} raw-feature requests, {args.duration:g} s per rate, open loop", flush=True)

    peers = {"new": Peer("new", ROOT, run)}
    labels = [x for x in args.servers.split(",") if x]
    for label in labels:
        match = re.fullmatch(r"new-w([1-9]\d*)", label)
        if match:
            peers[label] = Peer(label, ROOT, run, (f"workers={match.group(1)}",))
        elif label not in ("old", "new"):
            p.error(f"--servers takes old, new and new-wN (N workers), got {label!r}")
    if "old" in labels:
        peers["old"] = old_peer(args.workdir, args.old_rev, run)
    rows, notes = [], []
    for label in labels:
        peer = peers[label]
        # one server process per peer for all scenarios; it polls index/current every second (the rebuild
        # and poison scenarios publish; polling a small file costs nothing measurable at the rates)
        server = Server(peer, args.options + peer.options, reload_s=1.0)
        multi = label.startswith("new-w")
        try:
            info = server.get("/version")
            print(f"# {label} server ({peer.tree}): index {info['index_factory']}, {info['index_count']} items, "
                  f"params {info['search_params']}, model {info['model_version']}, RSS {server.rss_mb():.0f} MB",
                  flush=True)
            uvloop.run(open_loop(server.port, bodies, 50, 2.0, args.max_connections))  # warm-up
            if "rates" in scenarios:
                for rate in rates:
                    rows.append(measure(server, label, "rate", lambda: open_loop(
                        server.port, bodies, rate, args.duration, args.max_connections))[0])
            if "rebuild" in scenarios and not multi:
                first = server.get("/version")["index_version"]
                duration = args.rebuild_duration
                row, times = measure(server, label, "100 req/s + 2 publishes", lambda: with_publishes(
                    peer, open_loop(server.port, bodies, 100, duration, args.max_connections), duration, 2,
                    f"{label}-rebuild-"))
                time.sleep(3)
                now = server.get("/version")["index_version"]
                notes.append(f"{label} rebuild: publishes took {', '.join(f'{t:.0f} s' for t in times)}; served "
                             f"{first} -> {now}; reloads {server.get('/version').get('reloads')}; server RSS "
                             f"{server.rss_mb():.0f} MB after")
                rows.append(row)
            if "poison" in scenarios and not multi:
                d = args.poison_duration

                async def load_test():
                    (valid, poison), times = await with_publishes(
                        peer, asyncio.gather(open_loop(server.port, bodies, 100, d, 16), poison_loop(server.port, 10, d)),
                        d, 2, f"{label}-poison-")
                    return valid, {"poison": poison, "publish_s": [round(t) for t in times]}

                row, extra = measure(server, label, "issue-13 load test", load_test)
                notes.append(f"{label} load test: {row['errors']} failed of {row['sent']} valid requests; poison "
                             f"answers by status {extra['poison']['statuses']}; publishes {extra['publish_s']} s; "
                             f"index now {server.get('/version')['index_version']}; server RSS "
                             f"{server.rss_mb():.0f} MB after")
                rows.append(row)
        except Exception as exc:  # noqa: BLE001 - report the peer's failure with its log, go on with the next
            notes.append(f"{label} server failed: {type(exc).__name__}: {exc}; its log ends: "
                         + " | ".join(line.strip() for line in server.log[-5:]))
            print("#", notes[-1], flush=True)
        finally:
            server.stop()
    print(f"# load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| server | scenario | rate req/s | achieved | ok | errors | p50 ms | p90 ms | p99 ms | max ms | mean batch "
          "| server CPU ms/req | client cores | load avg |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(row_line(r))
    for r in rows:
        twin = [o for o in rows if o["server"] == "old" and o["scenario"] == r["scenario"] and o["rate"] == r["rate"]]
        if r["server"] != "old" and twin:
            print(f"ratio old/{r['server']} {r['scenario']} {r['rate']:.0f} req/s: p50 {twin[0]['p50'] / r['p50']:.2f}x, p99 "
                  f"{twin[0]['p99'] / r['p99']:.2f}x")
    for note in notes:
        print("#", note)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "notes": notes}, indent=2))


if __name__ == "__main__":
    main()
