"""The ``twotower`` command: one subcommand per pipeline stage, plus ``demo`` that runs them all.

    twotower data fetch movielens-100k        download MovieLens-100K (from the recbole wheel) into the cache
    twotower data describe --config C         load + split the configured data and print its shape
    twotower train  --config C --run R        split, train both towers, export SavedModels into R/model (R: a path,
                                              s3:// or gs://; a trained R is refused without --overwrite)
    twotower embed  --run R [beam options]    Beam: item tower over every item → R/vectors/<version>
    twotower index  --run R                   build, check and publish a FAISS index from R/vectors/current
    twotower rebuild --run R [beam options]   the nightly job: embed → train IVF → add shards → merge → validate → publish
    twotower rollback --run R [--to V]        flip R/index/current back to a previous version
    twotower eval R                           recall etc. by popularity slice, exact vs index, with CIs
    twotower compare RUN_A RUN_B              paired bootstrap of the difference per metric and slice
    twotower scaling [--grid G] [--out O]     CLUE scaling-law sweep (resumable), power-law fits, plots, report
    twotower study ssl --grid G --out O       SSL study: supervision sweep x SSL variants, gains per slice (resumable)
    twotower serve --run R [--port 8080]      HTTP: POST /topk, GET /healthz, GET /version; hot index reload
    twotower demo                             fetch MovieLens-100K and run every stage end to end

Heavy libraries (TensorFlow, Beam, FAISS) are imported inside the commands that need them, so
``twotower --help`` is instant. Errors follow ``core.cli``'s policy: a mistake the user can fix is one
line ``twotower <command>: error: ...`` (exit 2; TWOTOWER_DEBUG=1 for the full traceback), a bug is a
traceback (exit 1), Ctrl-C exits 130.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.cli import ArgumentParser, run_main
from core.rundir import as_location
from twotower import CONFIG_DIR, DEMO_CONFIG


def run_location(value: str):
    """``--run``: a local path or an ``s3://`` / ``gs://`` URL (``core.rundir.as_location``); a malformed URL is
    refused with its reason (argparse would only say "invalid value")."""
    try:
        return as_location(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_config(p: argparse.ArgumentParser, run_required: bool = True, run_help: str = "run directory, e.g. runs/demo",
                run_type=Path) -> None:
    p.add_argument("--config", type=Path, default=None,
                   help="YAML run config, or a shipped one by name: demo, full (default: the run's saved "
                        "config.yaml, else demo)")
    p.add_argument("--run", type=run_type, required=run_required, help=run_help)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.epochs=3 (repeatable)")


def _shards(text: str):
    """``--shards``: "auto" or a positive int."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive number of index shards, got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="twotower", description=__doc__.split("\n\n")[0],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="fetch or describe datasets")
    dsub = data.add_subparsers(dest="data_command", required=True)
    fetch = dsub.add_parser("fetch", help="download a dataset into the cache")
    fetch.add_argument("dataset", choices=["movielens-100k"])
    fetch.add_argument("--cache-dir", type=Path, default=None, help="default: $TWOTOWER_CACHE or ~/.cache/twotower")
    describe = dsub.add_parser("describe", help="load and split the configured dataset; print sizes")
    _add_config(describe, run_required=False)

    train = sub.add_parser("train", help="split the data, train the towers, export SavedModels")
    _add_config(train, run_type=run_location,
                run_help="run directory: a path (runs/demo) or an s3:// / gs:// URL (trained in a local staging "
                         "directory, then uploaded, model/manifest.json last)")
    train.add_argument("--overwrite", action="store_true",
                       help="replace the model of a run that is already trained (default: refuse)")

    embed = sub.add_parser("embed", help="Beam job: embed every item with the exported item tower")
    embed.add_argument("--run", type=run_location, required=True, help="run directory: a path or s3:// / gs:// URL")
    embed.add_argument("--runner", default="DirectRunner")

    index = sub.add_parser("index", help="build, check and publish a FAISS index from the current vectors")
    _add_config(index)

    rebuild = sub.add_parser("rebuild", help="the nightly Beam job: embed, build, validate, publish the index")
    rebuild.add_argument("--run", type=run_location, required=True, help="run directory: a path or s3:// / gs:// URL")
    rebuild.add_argument("--runner", default="DirectRunner")
    rebuild.add_argument("--shards", type=_shards, default="auto",
                         help="index shards: auto (one index up to 2M items, else shards of at most 2M built with "
                              "bounded driver memory), 1 (one index) or N")

    rollback = sub.add_parser("rollback", help="flip the run's index/current back to an earlier version")
    rollback.add_argument("--run", type=run_location, required=True, help="run directory: a path or s3:// / gs:// URL")
    rollback.add_argument("--to", default=None, help="version to publish (default: the one before current)")

    ev = sub.add_parser("eval", help="evaluate a run: recall by popularity slice, exact vs index, CIs")
    ev.add_argument("run", type=run_location)
    ev.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ev.add_argument("--no-baselines", action="store_true", help="skip the reference rows (eval.baselines: popularity, random, ALS, BPR by default)")

    cmp_ = sub.add_parser("compare", help="paired bootstrap of metric differences between two evaluated runs")
    cmp_.add_argument("run_a", type=Path)
    cmp_.add_argument("run_b", type=Path)
    cmp_.add_argument("--source", default="exact", help="exact or index rankings (default exact)")
    cmp_.add_argument("--out", type=Path, default=None, help="directory for compare.md/json/png (default RUN_B/eval/compare)")

    scaling = sub.add_parser("scaling", help="CLUE scaling-law sweep: train a grid, fit L(C)=a*C^-b+c, plot, report")
    scaling.add_argument("--grid", type=Path, default=CONFIG_DIR / "scaling_default.yaml",
                         help="grid YAML, or a shipped one by name: scaling_default (default), scaling_movielens")
    scaling.add_argument("--out", type=Path, default=Path("runs/scaling"), help="output directory")
    scaling.add_argument("--no-resume", action="store_true", help="rerun points that already finished")
    scaling.add_argument("--report-only", action="store_true", help="fit and report from finished points only")

    study = sub.add_parser("study", help="resumable studies: ssl (SSL under scarce supervision)")
    ssub = study.add_subparsers(dest="study", required=True, metavar="STUDY")
    from twotower.studies.ssl.__main__ import build_parser as build_ssl_parser

    build_ssl_parser(ssub.add_parser("ssl", help="SSL study: supervision fraction x SSL variant x seed, gains "
                                     "per slice with paired-bootstrap intervals"))

    serve = sub.add_parser("serve", help="HTTP top-k service over the run's query tower and current index")
    from serving.__main__ import add_arguments as add_serving_arguments

    add_serving_arguments(serve)

    demo = sub.add_parser("demo", help="fetch MovieLens-100K and run the whole pipeline end to end")
    demo.add_argument("--config", type=Path, default=DEMO_CONFIG, help="YAML run config or a shipped one: full "
                      "(default: the best model, about 3 min of training on 2 idle cores), demo (the fast one, about "
                      "1 min)")
    demo.add_argument("--run", type=Path, default=None, help="run directory (default runs/<config name>)")
    demo.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in ("embed", "rebuild"):
        parser.error(f"unrecognised arguments: {' '.join(extra)}")
    from twotower import commands

    return run_main(f"twotower {args.command}", commands.dispatch, args, extra)


if __name__ == "__main__":
    sys.exit(main())
