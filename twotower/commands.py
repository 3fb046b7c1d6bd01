"""What each ``twotower`` subcommand does (argument parsing lives in ``twotower.cli``)."""
from __future__ import annotations

import sys
import time
from pathlib import Path

from twotower import pipeline
from twotower import DEFAULT_CONFIG
from twotower.config import RunConfig, load_config
from core.rundir import RunDir


def _say(msg: str) -> None:
    print(msg, flush=True)


def resolve_config(args, run: RunDir | None) -> RunConfig:
    """--config, else the run's saved config.yaml, else the shipped demo config; then --set overrides."""
    path = getattr(args, "config", None)
    if path is None:
        path = run.config if run is not None and run.config.is_file() else DEFAULT_CONFIG
        if run is not None and run.remote and path == run.config:
            from core.version_cache import cached_file
            path = cached_file(str(path))  # a run on object storage: its config.yaml read from a local copy
    return load_config(path, getattr(args, "overrides", []))


def cmd_data(args, extra) -> int:
    if args.data_command == "fetch":
        from recdata.loading import DataConfig, resolve_cache_dir
        from recdata.movielens import fetch_movielens_100k

        cache = args.cache_dir or resolve_cache_dir(DataConfig())
        path = fetch_movielens_100k(cache)
        _say(f"MovieLens-100K is in {path}")
        return 0
    cfg = resolve_config(args, RunDir(args.run) if args.run else None)
    from recdata.loading import load_dataset, make_split
    from recdata.splits import summarize
    from twotower.pipeline import head_mask

    dataset = load_dataset(cfg.data)
    split = make_split(dataset, cfg.data)
    s = summarize(split, dataset.items["item_id"], head_mask(split, dataset, cfg))
    _say(f"dataset {dataset.name}: {dataset.num_users} users, {dataset.num_items} items, "
         f"{len(dataset.interactions)} interactions{_duplicates(dataset)}")
    _say(f"  item features: {[f'{f.name}:{f.kind}' for f in dataset.item_features]}")
    _say(f"  user features: {[f'{f.name}:{f.kind}' for f in dataset.user_features]}")
    for key, value in s.items():
        _say(f"  {key}: {value}")
    return 0


def _duplicates(dataset) -> str:
    count = dataset.extra.get("duplicate_rows", 0)
    return f" ({count} exact duplicate row(s), kept)" if count else ""


def cmd_train(args, extra) -> int:
    from twotower.train_run import train_run

    run = RunDir(args.run)
    cfg = resolve_config(args, run)
    summary = train_run(cfg, run, overwrite=args.overwrite, say=_say)
    resumed = f" (resumed after epoch {summary['resumed_from_epoch']})" if summary.get("resumed_from_epoch") else ""
    _say(f"trained {summary['epochs']} epochs{resumed} in {summary['train_seconds']} s "
         f"({summary['examples_per_second']} examples/s); model version {summary['model_version']} → {run.model}")
    return 0


def _beam_args(args, extra) -> list[str]:
    return ["--runner", args.runner, *extra]


def cmd_embed(args, extra) -> int:
    from beam_jobs.embed_items import EmbedConfig, run_embed

    result = run_embed(EmbedConfig(run=str(args.run)), _beam_args(args, extra))
    _say(f"embedded {result.count} items (dim {result.dim}, model {result.model_version}) → {result.directory}"
         + (f"; {result.dead_letter_count} bad rows in {result.dead_letter_path}" if result.dead_letter_count else ""))
    return 0


def cmd_rebuild(args, extra) -> int:
    run = RunDir(args.run)
    cfg = resolve_config(args, run)
    result = pipeline.stage_rebuild(cfg, run, _beam_args(args, extra), shards=args.shards)
    _say(_rebuild_line(result))
    return 0


def _rebuild_line(result) -> str:
    recall = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in result.recall.items())
    return (f"published index {result.version}: {result.count} items, {result.factory}, dim {result.dim}, "
            f"model {result.model_version}; {recall} → {result.index_dir}")


def cmd_rollback(args, extra) -> int:
    from indexing.store import rollback_index  # no Beam: rollback only flips pointers

    run = RunDir(args.run)
    model = run.model_version() if run.model_version_file.is_file() else None
    version = rollback_index(run.index, args.to, vectors_root=run.vectors, model_version=model,
                             model_source=f"the run's model {run.model}")
    _say(f"{run.index}/current → {version}")
    return 0


def cmd_index(args, extra) -> int:
    run = RunDir(args.run)
    cfg = resolve_config(args, run)
    published = pipeline.stage_index(cfg, run)
    _say(f"published index → {published}")
    return 0


def cmd_eval(args, extra) -> int:
    run = RunDir(args.run)
    cfg = resolve_config(args, run)
    results = pipeline.stage_eval(cfg, run, baselines=not args.no_baselines)
    _print_results(results, run)
    return 0


SUMMARY_SLICES = (("overall", "overall/all"), ("head", "popularity/head"), ("tail", "popularity/tail"))


def summary_table(results) -> str:
    """Recall@K overall / head / tail, one row per run and retrieval path, with case counts."""
    first = results[0]
    ks = first.config.ks
    header = ["run", "path"] + [f"{name} R@{k}" for name, _ in SUMMARY_SLICES for k in ks]
    rows = []
    for r in results:
        for source in ("exact", "index"):
            if source not in r.sources or (source == "index" and r is not first):
                continue
            label = "index" if source == "index" else ("exact" if "index" in r.sources else "-")
            rows.append([r.name, label] + [f"{r.value(f'recall@{k}', key, source):.3f}"
                                           for _, key in SUMMARY_SLICES for k in ks])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * (len(header) - 2)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def baseline_notes(results) -> list[str]:
    """One line per baseline whose setting was chosen on validation (EASE's lambda), for the printed table."""
    lines = []
    for r in results:
        meta = r.info.get("metadata", {})
        if meta.get("baseline") == "ease":
            grid = ", ".join(f"{x:g}" for x in meta["lambda_grid"])
            if "validation" in meta:
                best = dict((float(k), v) for k, v in meta["validation"])[meta["l2"]]
                lines.append(f"\n{r.name}: lambda = {meta['l2']:g}, the best {meta['tuned_on']} = {best:.3f} over "
                             f"the grid [{grid}]" + (f"; {meta['warning']}" if meta.get("warning") else ""))
            else:
                lines.append(f"\n{r.name}: lambda = {meta['l2']:g} ({meta['tuned_on']})")
    return lines


def _print_results(results, run: RunDir) -> None:
    _say("\nRecall by popularity slice (full ranking over all items, the user's train+valid items excluded;")
    _say(f"head = top {results[0].config.head_share:.0%} of items by training count). "
         "CIs and more metrics/slices are in the report.\n")
    _say(summary_table(results))
    for line in baseline_notes(results):
        _say(line)
    skipped = results[0].info.get("metadata", {}).get("index_skipped")
    if skipped:
        _say(f"\nindex: not evaluated: {skipped}")
    _say(f"\nreport: {run.eval / 'report.md'}")


def cmd_compare(args, extra) -> int:
    from eval.compare import compare
    from eval.report import comparison_markdown, plot_comparison
    from eval.result import EvalResult
    from core.artifacts import atomic_write_text

    a = _load_result(args.run_a)
    b = _load_result(args.run_b)
    table = compare(a, b, source=args.source)
    out = args.out or Path(args.run_b) / "eval" / "compare"
    out.mkdir(parents=True, exist_ok=True)
    md = comparison_markdown(table)
    atomic_write_text(out / "compare.md", md)
    recalls = [m for m in table["metric"].unique() if m.startswith("recall@")]
    table.to_json(out / "compare.json", orient="records", indent=2)
    metric = next((m for m in table["metric"].unique() if m.startswith("recall@")), table["metric"].iloc[0])
    plot_comparison(table, out / f"compare_{metric.replace('@', '_at_')}.png", metric)
    _say(comparison_markdown(table, metrics=recalls, families=("overall", "popularity")))
    _say(f"\nall metrics and slices: {out / 'compare.md'}")
    return 0


def _load_result(path: Path):
    from eval.result import EvalResult

    path = Path(path)
    cfg_name = None
    run = RunDir(path)
    if run.config.is_file():
        cfg_name = load_config(run.config).name
        path = run.eval / cfg_name
    if not path.is_dir():
        raise FileNotFoundError(f"no evaluation at {path}; run `twotower eval {run.root}` first")
    return EvalResult.load(path)


def cmd_demo(args, extra) -> int:
    cfg = load_config(args.config, args.overrides)
    run = RunDir(args.run or Path("runs") / cfg.name)
    t0 = time.perf_counter()
    pipeline.init_run(cfg, run)
    _say(f"[1/4] data: {cfg.data.source} → {run.data}")
    dataset, split = pipeline.stage_data(cfg, run)
    _say(f"      {dataset.num_users} users, {dataset.num_items} items; train {len(split.train)}, "
         f"valid {len(split.valid)}, test {len(split.test)} interactions{_duplicates(dataset)}")
    _say("[2/4] train the towers")
    summary = pipeline.stage_train(cfg, run, dataset, split)
    _say(f"      {summary['epochs']} epochs, {summary['examples_per_second']} examples/s; "
         f"model version {summary['model_version']}")
    _say("[3/4] rebuild: Beam (DirectRunner) embeds every item, builds, validates and publishes the index")
    result = pipeline.stage_rebuild(cfg, run, ["--runner", "DirectRunner"])
    _say("      " + _rebuild_line(result))
    _say("[4/4] evaluate: exact and index retrieval by popularity slice, next to the baselines")
    results = pipeline.stage_eval(cfg, run)
    _print_results(results, run)
    _say(f"\ndemo finished in {time.perf_counter() - t0:.0f} s; everything is under {run.root}")
    return 0


def cmd_scaling(args, extra) -> int:
    from twotower.studies.scaling.__main__ import main as scaling_main

    argv = ["--grid", str(args.grid), "--out", str(args.out)]
    argv += ["--no-resume"] if args.no_resume else []
    argv += ["--report-only"] if args.report_only else []
    return scaling_main(argv)


def cmd_study(args, extra) -> int:
    from twotower.studies.ssl.__main__ import run as run_ssl

    return {"ssl": run_ssl}[args.study](args)


def cmd_serve(args, extra) -> int:
    from serving.__main__ import run

    return run(args)


COMMANDS = {
    "data": cmd_data, "train": cmd_train, "embed": cmd_embed, "rebuild": cmd_rebuild, "rollback": cmd_rollback,
    "index": cmd_index, "eval": cmd_eval, "compare": cmd_compare, "scaling": cmd_scaling, "study": cmd_study, "serve": cmd_serve, "demo": cmd_demo,
}


def dispatch(args, extra) -> int:
    return COMMANDS[args.command](args, extra)
