"""Synthetic data generation at scale vs the bare popularity draw, in the same run.

    .venv/bin/python -m bench.bench_synthetic                               # 1M items, 10M events
    .venv/bin/python -m bench.bench_synthetic --items 100000 --interactions 1000000   # a quicker look

Each measurement runs in its own child process (so peak RSS is its own), one after the other:

  baseline   numpy ``Generator.choice(num_items, num_interactions, p=zipf)`` plus uniform user draws:
             the least work any generator of this size must do (no tastes, no features, no ids)
  generate   ``recdata.synthetic.generate`` (tastes, repeat redraws, feature groups, tags, timestamps,
             str ids), then ``Dataset.validate()`` timed separately

Prints wall and CPU seconds (the machine may be shared: CPU time is the steadier number), peak RSS
(ru_maxrss) and generate / baseline.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time


def _child(kind: str, args) -> dict:
    import numpy as np
    import pandas as pd

    from recdata.synthetic import SyntheticConfig, generate

    rss_start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"kind": kind}
    c0 = time.process_time()
    if kind == "baseline":
        t0 = time.perf_counter()
        rng = np.random.default_rng(args.seed)
        p = np.arange(1, args.items + 1, dtype=np.float64) ** -args.exponent
        items = rng.choice(args.items, size=args.interactions, p=p / p.sum())
        users = rng.integers(0, args.users, args.interactions)
        df = pd.DataFrame({"user": users, "item": items})
        out["seconds"] = time.perf_counter() - t0
        out["cpu_seconds"] = time.process_time() - c0
        out["rows"] = len(df)
    else:
        cfg = SyntheticConfig(num_users=args.users, num_items=args.items, num_interactions=args.interactions,
                              popularity_exponent=args.exponent, flavour=args.flavour, seed=args.seed)
        t0 = time.perf_counter()
        ds = generate(cfg)
        out["seconds"] = time.perf_counter() - t0
        out["cpu_seconds"] = time.process_time() - c0
        t0 = time.perf_counter()
        ds.validate()
        out["validate_seconds"] = time.perf_counter() - t0
        out["rows"] = len(ds.interactions)
        out["dropped_repeats"] = ds.extra["dropped_repeats"]
        out["interactions_mb"] = ds.interactions.memory_usage(deep=True).sum() / 1e6
        out["items_mb"] = ds.items.memory_usage(deep=True).sum() / 1e6
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: KiB
    out["import_rss_mb"] = rss_start / 1024
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--users", type=int, default=500_000)
    ap.add_argument("--items", type=int, default=1_000_000)
    ap.add_argument("--interactions", type=int, default=10_000_000)
    ap.add_argument("--exponent", type=float, default=1.0)
    ap.add_argument("--flavour", default="standard", choices=["standard", "long-tail"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--child", choices=["baseline", "generate"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args)))
        return

    import numpy as np
    import pandas as pd
    print(f"# bench_synthetic  python {platform.python_version()}  numpy {np.__version__}  pandas {pd.__version__}  "
          f"cores {os.cpu_count()}  load avg {os.getloadavg()[0]:.1f}")
    print(f"config: {args.users:,} users, {args.items:,} items, {args.interactions:,} interactions, "
          f"exponent {args.exponent}, flavour {args.flavour}")
    results = {}
    for kind in ("baseline", "generate"):
        cmd = [sys.executable, "-m", "bench.bench_synthetic", "--child", kind, "--users", str(args.users),
               "--items", str(args.items), "--interactions", str(args.interactions), "--exponent",
               str(args.exponent), "--flavour", args.flavour, "--seed", str(args.seed)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"{kind} failed:\n{proc.stderr}")
        results[kind] = r = json.loads(proc.stdout.strip().splitlines()[-1])
        extra = ""
        if kind == "generate":
            extra = (f"  validate {r['validate_seconds']:.1f} s  rows {r['rows']:,} (dropped repeats "
                     f"{r['dropped_repeats']})  frames: interactions {r['interactions_mb']:.0f} MB, "
                     f"items {r['items_mb']:.0f} MB")
        print(f"{kind:9s} {r['seconds']:6.1f} s wall ({r['cpu_seconds']:.1f} s CPU)  peak RSS {r['peak_rss_mb']:6.0f} MB "
              f"(after imports {r['import_rss_mb']:.0f} MB){extra}")
    ratio = results["generate"]["seconds"] / results["baseline"]["seconds"]
    print(f"generate / baseline = {ratio:.2f}x time, "
          f"{results['generate']['peak_rss_mb'] / results['baseline']['peak_rss_mb']:.2f}x peak RSS")


if __name__ == "__main__":
    main()
