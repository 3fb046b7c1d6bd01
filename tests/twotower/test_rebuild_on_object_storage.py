"""Issue #14's "done when": a run on S3 (SeaweedFS), rebuilt by `twotower rebuild` on a real Dask cluster
(beam_jobs.dask_runner.DaskRunner: a scheduler and two worker processes), then served by `twotower serve`
(its own process) from the published version, read through the sha256-verified local cache."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core import lifecycle
from core.storage import open_storage
from twotower.cli import main

PROJECT = Path(__file__).resolve().parents[2]
ITEMS = 2000
TINY = [
    "name=tiny", "data.source=synthetic",
    "data.synthetic.num_users=400", f"data.synthetic.num_items={ITEMS}", "data.synthetic.num_interactions=8000",
    "train.epochs=1", "train.batch_size=512", "train.verbose=0", "train.tensorboard=false",
    "train.monitor_recall_k=0", "train.keep_checkpoints=0",
    "train.tower.output_dim=16", "train.tower.id_embedding_dim=16", "train.tower.feature_embedding_dim=8",
    "train.tower.hidden_units=[32]", "train.tower.max_history=20",
    "index.factory=IVF16,Flat", "index.nprobe=16", "index.recall_queries=200",
]


def _sets(pairs):
    return [arg for p in pairs for arg in ("--set", p)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, body: dict | None = None, timeout: float = 10.0) -> dict:
    data = None if body is None else json.dumps(body).encode()
    with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=timeout) as response:
        return json.loads(response.read())


def _executed_per_worker(cluster) -> dict:
    from distributed import Client

    with Client(cluster.address, timeout=10) as client:
        return client.run(lambda dask_worker: dask_worker.state.executed_count)


@pytest.mark.slow
def test_rebuild_of_a_run_on_s3_on_the_dask_cluster_is_served_from_the_published_version(
        s3_server, dask_cluster, s3_url, tmp_path, monkeypatch):
    monkeypatch.setenv("TWOTOWER_CACHE", str(tmp_path / "cache"))
    local = tmp_path / "local"
    assert main(["train", "--config", "demo", "--run", str(local), *_sets(TINY)]) == 0
    store = open_storage(s3_url)
    for p in sorted(local.rglob("*")):  # the trained run (config, data, model) as objects: no shared disk
        rel = p.relative_to(local).as_posix()
        if p.is_file() and rel.split("/")[0] in ("config.yaml", "data", "model"):
            store.write_bytes(rel, p.read_bytes())

    before = _executed_per_worker(dask_cluster)
    assert main(["rebuild", "--run", s3_url, *dask_cluster.pipeline_args()]) == 0
    after = _executed_per_worker(dask_cluster)
    assert len(after) == 2 and all(after[w] > before.get(w, 0) for w in after), (before, after)  # both did work
    version = lifecycle.parse_pointer(store.read_bytes("index/current"))
    manifest = json.loads(store.read_bytes(f"index/{version}/manifest.json"))
    assert manifest["count"] == ITEMS and "DaskRunner" in manifest["runner"]
    assert lifecycle.parse_pointer(store.read_bytes("vectors/current")) == manifest["vectors_version"]
    assert not list(local.glob("index")) and not list(local.glob("vectors"))  # nothing was written locally

    # the same run rebuilt on DirectRunner from local files gives the same index, byte for byte
    assert main(["rebuild", "--run", str(local), "--runner", "DirectRunner"]) == 0
    local_version = lifecycle.current_version(local / "index")
    assert store.read_bytes(f"index/{version}/index.faiss") == (local / "index" / local_version / "index.faiss").read_bytes()

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(PROJECT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "TWOTOWER_CACHE": str(tmp_path / "serve-cache")}
    server = subprocess.Popen([sys.executable, "-m", "twotower", "serve", "--run", s3_url, "--port", str(port),
                               "--set", "reload_interval_s=0.5"], cwd=PROJECT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                health = _get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                if health.get("status") == "ok":
                    break
            except OSError:
                pass
            assert server.poll() is None, server.stdout.read().decode(errors="replace")[-3000:]
            assert time.monotonic() < deadline, "twotower serve did not become healthy in 240 s"
            time.sleep(0.5)
        answer = _get(f"http://127.0.0.1:{port}/topk", {"user_id": "nobody", "k": 10})
        assert answer["index_version"] == version and len(answer["items"]) == 10
        assert _get(f"http://127.0.0.1:{port}/version")["index_version"] == version
        cached = tmp_path / "serve-cache" / "artifacts"
        assert list(cached.rglob(f"{version}/index.faiss"))  # loaded from the verified local copy
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
