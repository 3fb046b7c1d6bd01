"""Trained-tower vectors and query-tower queries for the index benchmarks (issue 15), cached as .npy files.

    python -m bench.tower_vectors --run RUN --out DIR                          # the run's own catalogue
    python -m bench.tower_vectors --run RUN --out DIR --items 10000000         # a larger catalogue, same tower

Writes into DIR:
  items.npy         float32 (n, d) item-tower vectors. Without --items: the run's catalogue (its data/items
                    table). With --items N: the run's catalogue followed by N - (its size) new items drawn by
                    ``recdata.synthetic`` with the run's synthetic config, in chunks of --chunk items (chunk c:
                    seed --item-seed * 1000 + c, ids prefixed "x{c}-" so they are unique), all embedded by the
                    run's trained item tower. This needs a tower whose inputs generalise to unseen items: ids hashed
                    (``train.tower.id_hash_bins`` > 0, so every id has a trained row, shared by collision) plus
                    the item features; with an exact id vocabulary every unseen item would fall into the OOV
                    bucket and only its features would tell items apart.
  queries.npy       float32 (m, d) query-tower vectors of up to --queries *test* users, built exactly as eval
                    builds its queries (``towers.inputs.eval_queries``, per user, history = train + valid).
  tune_queries.npy  float32 query-tower vectors of up to --tune-queries *validation* users, built as the rebuild
                    builds its query set (``beam_jobs.query_set``: valid split in the role of the held-out events),
                    for index builds to tune on (disjoint role from the benchmark queries).
  info.json         what was written, sizes, seconds.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np


def _sample_users(frame, size: int, seed) -> "object":
    users = np.unique(frame["user_id"].to_numpy())
    if len(users) > size:
        users = np.random.default_rng(seed).choice(users, size=size, replace=False)
        frame = frame[frame["user_id"].isin(set(users.tolist()))]
    return frame


def query_vectors(dataset, split, tower, max_history: int, part: str, size: int, seed) -> np.ndarray:
    """Query-tower vectors of up to ``size`` users of split ``part`` ("test" or "valid"), as eval builds them."""
    from towers.inputs import eval_queries

    held = _sample_users(getattr(split, part), size, seed)
    if part == "test":
        view = SimpleNamespace(train=split.train, valid=split.valid, test=held)
    else:  # as beam_jobs.query_set: the valid split in the role of the held-out events, train as history
        view = SimpleNamespace(train=split.train, valid=None, test=held)
    queries = eval_queries(dataset, view, max_history, per="user")
    return np.asarray(tower(queries.features), dtype=np.float32)


def item_vectors(items_df, item_specs, tower, chunk: int = 200_000) -> np.ndarray:
    from towers.inputs import item_features_batch

    out = [tower(item_features_batch(items_df.iloc[s:s + chunk], item_specs))
           for s in range(0, len(items_df), chunk)]
    return np.ascontiguousarray(np.concatenate(out), dtype=np.float32)


def main(argv=None) -> None:
    from core import artifacts
    from core.rundir import RunDir
    from recdata.loading import load_split
    from towers.export import load_tower
    from twotower.config import load_config

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--items", type=int, default=0, help="embed a synthetic catalogue of this many items instead")
    p.add_argument("--item-seed", type=int, default=1)
    p.add_argument("--chunk", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--tune-queries", type=int, default=2_000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = RunDir(args.run)
    t0 = time.perf_counter()
    dataset, split = load_split(run.data)
    model = Path(str(run.model))
    max_history = int(artifacts.read_manifest(model)["max_history"])
    query_tower = load_tower(model / run.query_tower.name)
    item_tower = load_tower(model / run.item_tower.name)
    info = {"run": str(run.root), "seconds": {}}

    start = time.perf_counter()
    q = query_vectors(dataset, split, query_tower, max_history, "test", args.queries, [args.seed, 1])
    tq = query_vectors(dataset, split, query_tower, max_history, "valid", args.tune_queries, [args.seed, 2])
    np.save(out / "queries.npy", q)
    np.save(out / "tune_queries.npy", tq)
    info["seconds"]["queries"] = round(time.perf_counter() - start, 1)
    info.update(queries=list(q.shape), tune_queries=list(tq.shape),
                query_source="query tower, test users (eval_queries per user); tune: valid users")

    start = time.perf_counter()
    if args.items:
        from recdata.synthetic import generate

        cfg = load_config(run.root / "config.yaml")
        if cfg.data.source != "synthetic":
            raise ValueError(f"--items needs a run trained on synthetic data, {args.run} has data.source="
                             f"{cfg.data.source!r}")
        if cfg.train.tower.id_hash_bins <= 0:
            raise ValueError(f"--items embeds unseen items: the run's item tower must hash ids "
                             f"(train.tower.id_hash_bins > 0), got {cfg.train.tower.id_hash_bins}")
        parts = [item_vectors(dataset.items, dataset.item_features, item_tower)]
        extra, c = args.items - len(dataset.items), 0
        while extra > 0:
            size = min(args.chunk, extra)
            synth = replace(cfg.data.synthetic, num_items=size, num_users=1, num_interactions=3, min_history=3,
                            seed=args.item_seed * 1000 + c)
            catalogue = generate(synth)
            items_df = catalogue.items.assign(item_id=[f"x{c}-{i}" for i in catalogue.items["item_id"]])
            parts.append(item_vectors(items_df, catalogue.item_features, item_tower))
            print(f"chunk {c}: {size} items ({time.perf_counter() - start:.0f}s)", flush=True)
            extra, c = extra - size, c + 1
        x = np.concatenate(parts)
        del parts
        info["catalogue"] = (f"the run's {len(dataset.items)} items + {args.items - len(dataset.items)} new "
                             f"recdata.synthetic items (run's config, chunks of {args.chunk}, seeds "
                             f"{args.item_seed} * 1000 + chunk)")
    else:
        x = item_vectors(dataset.items, dataset.item_features, item_tower)
        info["catalogue"] = "the run's items"
    np.save(out / "items.npy", x)
    info["seconds"]["items"] = round(time.perf_counter() - start, 1)
    info["items"] = list(x.shape)
    info["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    (out / "info.json").write_text(json.dumps(info, indent=2))
    print(json.dumps(info))


if __name__ == "__main__":
    main()
