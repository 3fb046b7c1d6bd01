"""Issue #15's trained-tower index tables end to end, in one resumable command (``make bench-peers``).

    PYTHONPATH=. python -m bench.peers_chain --data /work/bench-data/peers            # 1M model, 1M + 10M tables
    PYTHONPATH=. python -m bench.peers_chain --data /work/bench-data/peers --sizes big # the 10M table only
    PYTHONPATH=. python -m bench.peers_chain --data /tmp/pc --scale smoke              # the same chain in ~3 min

The tables need vectors that do not survive a machine restart (/work/bench-data), and rebuilding them by hand
took several sessions. This runs every step in order, each a subprocess whose own output marks it done, so a
killed chain restarts where it stopped:

  1. ``twotower train`` of the synthetic model (``bench/peers_1m.yaml``: 1M items, 200k users, hashed ids, so
     unseen items get trained id rows) → ``<data>/run``                        done = run/model/manifest.json
  2. ``bench.tower_vectors`` → ``<data>/v-small`` (the run's catalogue) and ``<data>/v-big`` (the run's items
     + synthetic items through the trained item tower, ``--big`` in all)        done = info.json
  3. the ScaNN venv (``--scann-venv``; ScaNN breaks ``import tensorflow_recommenders``, so never the project's
     venv): ``python -m venv`` + ``pip install scann==1.4.2``                 done = its python runs ``import scann``
  4. ``bench.bench_index_peers`` at each size: each family built alone (``--only``, cached under
     ``<data>/peers``), then one timing run of every family (``--per-family``: one index in memory at a time)
                                                                              done = peers-<size>.json
  5. ``bench.bench_compressed`` at each size: the 48 B and 88 B entries of ``auto``  done = compressed-<size>.log

Each step's command, wall time and load average before/after go to ``<data>/chain.jsonl``; stdout/stderr of
each step to ``<data>/logs/<step>.log``. Scales: ``full`` (1M model; 1M and 10M tables; hnswlib M=12/efC=40 at
10M as session 6 chose for this machine) and ``smoke`` (20k items, 200k big: checks the chain, not numbers).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCALES = {
    # name: (synthetic overrides for peers_1m.yaml, small size label, big size, per-size peer options)
    "full": ({}, 10_000_000, {
        "small": ["--hnsw-ms", "32", "--ef-construction", "100", "--efs", "100,200,400,800,1600",
                  "--scann-leaves", "2048", "--nprobes", "16,24,32,48,64,96,128,192,256"],
        "big": ["--hnsw-ms", "12", "--ef-construction", "40", "--efs", "100,200,400,800,1600,3200",
                "--scann-leaves", "4096", "--scann-search", "8,16,32,64,128,256", "--scann-reorder", "200,400,1000",
                "--nprobes", "1,2,3,4,5,6,8,10,12,16,24,32,48,64"]}),
    "smoke": ({"data.synthetic.num_items": "20000", "data.synthetic.num_users": "4000",
               "data.synthetic.num_interactions": "80000", "train.tower.id_hash_bins": "40000",
               "train.epochs": "1"}, 200_000, {
        "small": ["--hnsw-ms", "8", "--ef-construction", "40", "--efs", "50,100,200", "--scann-leaves", "64",
                  "--scann-search", "4,8,16", "--nprobes", "2,4,8,16,32"],
        "big": ["--hnsw-ms", "8", "--ef-construction", "40", "--efs", "50,100,200", "--scann-leaves", "256",
                "--scann-search", "4,8,16", "--nprobes", "2,4,8,16,32"]}),
}
COMPRESSED = {"small": ["QProj53,IVF4096,SQ6", "IVF4096,PQ32x4fs,Refine(SQ8)"],
              "big": ["QProj53,IVF16384,SQ6", "IVF16384,PQ32x4fs,Refine(SQ8)"]}
SMOKE_COMPRESSED = ["QProj53,IVF64,SQ6"]


def load_average() -> list[float]:
    return [round(v, 2) for v in os.getloadavg()]


class Chain:
    def __init__(self, data: Path, python: str):
        self.data, self.python = data, python
        (data / "logs").mkdir(parents=True, exist_ok=True)

    def step(self, name: str, cmd: list[str], done: Path | None) -> None:
        if done is not None and done.exists():
            print(f"[chain] {name}: done ({done})", flush=True)
            return
        log = self.data / "logs" / f"{name}.log"
        print(f"[chain] {name}: {' '.join(cmd)}  (log {log})", flush=True)
        before, t0 = load_average(), time.time()
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with log.open("a") as out:
            rc = subprocess.call(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        record = {"step": name, "cmd": cmd, "rc": rc, "wall_s": round(time.time() - t0, 1),
                  "load_before": before, "load_after": load_average(), "finished": time.strftime("%FT%TZ", time.gmtime())}
        with (self.data / "chain.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")
        if rc != 0:
            raise SystemExit(f"[chain] step {name!r} failed with exit {rc}; its output is in {log}. Fix the cause "
                             f"and run the same command again: finished steps are skipped.")
        if done is not None and not done.exists():
            raise SystemExit(f"[chain] step {name!r} exited 0 but did not write {done}; see {log}")
        print(f"[chain] {name}: {record['wall_s']} s, load {before} -> {record['load_after']}", flush=True)


def scann_ready(python: Path) -> bool:
    return python.exists() and subprocess.call([str(python), "-c", "import scann"], stdout=subprocess.DEVNULL,
                                               stderr=subprocess.DEVNULL) == 0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default="/work/bench-data/peers", help="where every artifact of the chain goes")
    p.add_argument("--scale", choices=sorted(SCALES), default="full")
    p.add_argument("--scann-venv", default="/work/scann-venv")
    p.add_argument("--skip-scann", action="store_true", help="time FAISS and hnswlib only")
    p.add_argument("--sizes", default="small,big", help="which tables: small, big or both")
    args = p.parse_args(argv)
    sizes = [s for s in args.sizes.split(",") if s]
    if not sizes or set(sizes) - {"small", "big"}:
        raise SystemExit(f"--sizes takes small and/or big (comma-separated), got {args.sizes!r}")

    data = Path(args.data).resolve()
    chain = Chain(data, sys.executable)
    overrides, big, peer_opts = SCALES[args.scale]
    run = data / "run"
    sets = [a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]
    chain.step("train", [sys.executable, "-m", "twotower", "train", "--config", str(ROOT / "bench" / "peers_1m.yaml"),
                         "--run", str(run), *sets], run / "model" / "manifest.json")
    vecs = {"small": data / "v-small", "big": data / "v-big"}
    if "small" in sizes:
        chain.step("vectors-small", [sys.executable, "-m", "bench.tower_vectors", "--run", str(run), "--out",
                                     str(vecs["small"])], vecs["small"] / "info.json")
    if "big" in sizes:
        chain.step("vectors-big", [sys.executable, "-m", "bench.tower_vectors", "--run", str(run), "--out",
                                   str(vecs["big"]), "--items", str(big)], vecs["big"] / "info.json")

    scann_python = Path(args.scann_venv) / "bin" / "python"
    families = ["default", "hnswlib"]
    if not args.skip_scann:
        if not scann_ready(scann_python):
            chain.step("scann-venv", ["bash", "-c", f"{sys.executable} -m venv {args.scann_venv} && "
                                      f"{scann_python} -m pip install -q scann==1.4.2"], None)
            if not scann_ready(scann_python):
                raise SystemExit(f"[chain] {scann_python} cannot import scann after the install; see "
                                 f"{data / 'logs' / 'scann-venv.log'}, or pass --skip-scann")
        families.append("scann")

    for size in sizes:
        v = vecs[size]
        common = [sys.executable, "-m", "bench.bench_index_peers", "--vectors", str(v / "items.npy"),
                  "--query-vectors", str(v / "queries.npy"), "--tune-vectors", str(v / "tune_queries.npy"),
                  "--queries", "2000", "--cache", str(data / "peers"), "--scann-python", str(scann_python),
                  *peer_opts[size]]
        for family in families:
            # a family's build is cached by bench_index_peers itself; a rerun of a finished build only loads it
            chain.step(f"build-{size}-{family}", [*common, "--only", family], None)
        out = data / f"peers-{size}.json"
        chain.step(f"time-{size}", [*common, "--skip", ",".join(f for f in ("tuned", "ivf-flat", "ivf-hnsw",
                   "ivf-flat-2x", "ivf-n", "faiss-hnsw", "scann") if f not in families),
                   "--per-family", "--json", str(out)], out)
        factories = SMOKE_COMPRESSED if args.scale == "smoke" else COMPRESSED[size]
        log = data / f"compressed-{size}.log"
        bench = shlex.join([sys.executable, "-m", "bench.bench_compressed", "--vectors", str(v / "items.npy"),
                            "--query-vectors", str(v / "queries.npy"), "--tune-vectors", str(v / "tune_queries.npy"),
                            "--queries", "2000", *factories])
        part = shlex.quote(f"{log}.part")
        # the table is written to .part and renamed when complete, so a killed step is redone, not taken as done
        chain.step(f"compressed-{size}", ["bash", "-c", f"{bench} > {part} && mv {part} {shlex.quote(str(log))}"], log)
    print(f"[chain] all steps done; tables: {data}/peers-*.json, {data}/compressed-*.log; steps: {data}/chain.jsonl")


if __name__ == "__main__":
    main()
