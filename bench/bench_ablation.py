"""Ablation of the two-tower model, graded by the eval suite through the real pipeline stages.

Variants (cumulative, each adds one part to the previous; "rfm" and "cfm" both build on "mns"):

  ids        query tower = user id only
  features   + user features + a bag of the history items (shared item-id table)
  sequence   user features + the Transformer over the history (replaces the bag and the user id)
  clue       + CLUE contrastive pretraining of the sequence encoder
  logq       + logQ sampling-bias correction (streaming frequency estimator)
  mns        + mixed negative sampling (B′ uniform corpus negatives)
  rfm        mns + random-feature-masking SSL
  cfm        mns + correlated-feature-masking SSL

Every (variant, seed) is a run directory made by ``twotower.pipeline``: ``stage_data`` (split),
``stage_train`` (train + export SavedModels), the item vectors embedded in-process from the
exported item tower (``indexing.vectors.write_vectors`` + publish) and ``stage_eval`` (exact
full ranking, training items excluded, head = top ``eval.head_share`` by training count), so the
numbers are the eval suite's. Throughput is the median training examples/s over epochs after the
first (``TrainResult.examples_per_second``). The SSL question is answered per seed with
``eval.compare`` (paired bootstrap over test users): rfm/cfm − mns.

Results are appended to ``<out>/runs.jsonl`` as each run finishes; a rerun skips the runs already
there (so an interrupted study resumes), and ``--report`` only prints the tables. Usage::

    .venv/bin/python -m bench.bench_ablation --data movielens --seeds 0 1 2 --out /tmp/ablation-ml
    .venv/bin/python -m bench.bench_ablation --data long-tail --seeds 0 --out /tmp/ablation-lt
    .venv/bin/python -m bench.bench_ablation --out /tmp/ablation-ml --report
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

# every switch set explicitly, so the variant does not depend on the base config's choices
_PLAIN = {"encoder": "features", "clue": "off", "logq": "off", "mns": 0, "ssl": "off"}
_PARTS = {
    "ids": {"encoder": "ids"},
    "features": {},
    "sequence": {"encoder": "sequence"},
    "clue": {"encoder": "sequence", "clue": "pretrain"},
    "logq": {"encoder": "sequence", "clue": "pretrain", "logq": "streaming"},
    "mns": {"encoder": "sequence", "clue": "pretrain", "logq": "streaming", "mns": 256},
    "rfm": {"encoder": "sequence", "clue": "pretrain", "logq": "streaming", "mns": 256, "ssl": "rfm"},
    "cfm": {"encoder": "sequence", "clue": "pretrain", "logq": "streaming", "mns": 256, "ssl": "cfm"},
}


def variant_overrides(name: str) -> list[str]:
    """--set overrides of one variant (clue off first: clue needs a history encoder)."""
    v = {**_PLAIN, **_PARTS[name]}
    return ["train.clue=off", f"train.tower.user_encoder={v['encoder']}", f"train.clue={v['clue']}",
            f"train.loss.logq={v['logq']}", f"train.loss.mns_negatives={v['mns']}", f"train.ssl.mode={v['ssl']}"]


VARIANTS = {name: variant_overrides(name) for name in _PARTS}
SSL_BASE = "mns"  # the same model without SSL

DATA = {
    "movielens": ["data.source=movielens-100k"],
    "long-tail": ["data.source=synthetic", "data.synthetic.flavour=long-tail", "data.synthetic.num_users=3000",
                  "data.synthetic.num_items=2000", "data.synthetic.num_interactions=60000"],
}
KS = (10, 50, 100)
SLICES = {"overall": "overall/all", "head": "popularity/head", "tail": "popularity/tail"}


def run_one(config: str, overrides: list[str], run_root: Path, baselines: bool = False) -> dict:
    """data → train → vectors → eval for one run directory; returns its row for runs.jsonl."""
    from indexing.vectors import write_vectors
    from towers.export import load_tower
    from towers.inputs import item_features_batch
    from core import lifecycle
    from twotower import pipeline
    from twotower.config import load_config
    from core.rundir import RunDir

    cfg = load_config(config, overrides)
    run = RunDir(run_root)
    pipeline.init_run(cfg, run)
    dataset, split = pipeline.stage_data(cfg, run)
    t0 = time.perf_counter()
    summary = pipeline.stage_train(cfg, run, dataset, split)
    train_seconds = time.perf_counter() - t0
    item_tower = load_tower(run.item_tower)
    vectors = item_tower(item_features_batch(dataset.items, dataset.item_features))
    version = "v1"
    write_vectors(run.vectors / version, dataset.items["item_id"].to_numpy(dtype=object), vectors,
                  item_tower.model_version)
    lifecycle.VersionedRoot(run.vectors).publish(version)
    results = pipeline.stage_eval(cfg, run, baselines=baselines)
    model = results[0]
    metrics = {f"{name}_R@{k}": model.value(f"recall@{k}", key) for name, key in SLICES.items() for k in KS}
    baselines = {r.name: {f"{name}_R@{k}": r.value(f"recall@{k}", key) for name, key in SLICES.items() for k in KS}
                 for r in results[1:]}
    history = summary.get("history", {})
    return {"metrics": metrics, "baselines": baselines, "examples_per_second": summary["examples_per_second"],
            "epochs": summary["epochs"], "train_seconds": round(train_seconds, 1),
            "val_recall@10": history.get("val_recall@10", []), "eval_dir": str(run.eval / model.name)}


def load_rows(out: Path) -> list[dict]:
    path = out / "runs.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def mean_std(values, digits: int = 3) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.{digits}f}" if len(v) == 1 else f"{v.mean():.{digits}f}±{v.std(ddof=1):.{digits}f}"


def report(out: Path) -> str:
    rows = load_rows(out)
    if not rows:
        return f"no runs in {out}/runs.jsonl"
    lines = []
    cols = [f"{s}_R@{k}" for s in SLICES for k in KS]
    lines.append("| variant | seeds | " + " | ".join(cols) + " | examples/s | epochs |")
    lines.append("|" + "---|" * (len(cols) + 4))
    by_variant = {}
    for r in rows:
        by_variant.setdefault(r["variant"], []).append(r)
    for name in [v for v in VARIANTS if v in by_variant]:
        runs = by_variant[name]
        cells = [mean_std([r["metrics"][c] for r in runs]) for c in cols]
        eps = mean_std([r["examples_per_second"] for r in runs], 0)
        lines.append(f"| {name} | {','.join(str(r['seed']) for r in runs)} | " + " | ".join(cells)
                     + f" | {eps} | {mean_std([r['epochs'] for r in runs], 0)} |")
    for base, values in next((r["baselines"] for r in rows if r["baselines"]), {}).items():
        lines.append(f"| baseline:{base} | - | " + " | ".join(f"{values[c]:.3f}" for c in cols) + " | | |")
    lines.append("")
    # SSL overhead and the paired bootstrap, per seed where both runs exist
    from eval.compare import compare
    base_runs = {r["seed"]: r for r in by_variant.get(SSL_BASE, [])}
    for ssl in ("rfm", "cfm"):
        for r in by_variant.get(ssl, []):
            b = base_runs.get(r["seed"])
            if b is None:
                continue
            ratio = b["examples_per_second"] / r["examples_per_second"]
            table = compare(r["eval_dir"], b["eval_dir"], metrics=[f"recall@{k}" for k in KS])
            tail = table[(table["family"] == "popularity") & (table["slice"] == "tail")]
            overall = table[table["family"] == "overall"]
            parts = [f"tail R@{m.split('@')[1]} {x.diff:+.4f} [{x.lo:+.4f}, {x.hi:+.4f}]"
                     for x in tail.itertuples() for m in [x.metric]]
            parts_all = [f"overall R@{x.metric.split('@')[1]} {x.diff:+.4f} [{x.lo:+.4f}, {x.hi:+.4f}]"
                         for x in overall.itertuples()]
            lines.append(f"{ssl} - {SSL_BASE} seed {r['seed']}: step-time overhead {ratio:.2f}x; "
                         + "; ".join(parts + parts_all))
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", choices=sorted(DATA), default="movielens")
    parser.add_argument("--config", default="full", help="base run config (the variants override it)")
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    parser.add_argument("--set", dest="extra", action="append", default=[], help="extra override, e.g. train.epochs=5")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--report", action="store_true", help="only print the tables of finished runs")
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        done = {(r["variant"], r["seed"]) for r in load_rows(args.out)}
        for seed in args.seeds:  # seed-major: a cut-short study still has every variant once
            for variant in args.variants:
                if (variant, seed) in done:
                    continue
                overrides = DATA[args.data] + VARIANTS[variant] + [f"train.seed={seed}", "train.verbose=0"] \
                    + args.extra
                start = time.perf_counter()
                first = not done and seed == args.seeds[0] and variant == args.variants[0]
                row = run_one(args.config, overrides, args.out / f"{variant}-s{seed}", baselines=first)
                row.update(variant=variant, seed=seed, data=args.data, overrides=overrides,
                           wall_seconds=round(time.perf_counter() - start, 1))
                with open(args.out / "runs.jsonl", "a") as f:
                    f.write(json.dumps(row) + "\n")
                m = row["metrics"]
                print(f"{variant} seed {seed}: R@10 {m['overall_R@10']:.3f} R@100 {m['overall_R@100']:.3f} "
                      f"tail R@100 {m['tail_R@100']:.3f}  {row['examples_per_second']:.0f} ex/s  "
                      f"{row['wall_seconds']:.0f}s", flush=True)
    print(report(args.out))


if __name__ == "__main__":
    main()
