"""``python -m serving --run RUN [--host 127.0.0.1] [--port 8080] [--set max_batch=32 ...]``.

``add_arguments(parser)`` / ``run(args)`` let ``twotower serve`` reuse the same flags.
"""
from __future__ import annotations

import argparse
import os
import sys

from core.cli import ArgumentParser, run_main


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, help="run directory (model/, data/, index/current): a path, "
                        "or s3://bucket/prefix / gs://bucket/prefix (read through a sha256-verified local cache)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 = any free port)")
    parser.add_argument("--set", dest="options", action="append", default=[], metavar="KEY=VALUE",
                        help="a ServingConfig field, e.g. --set max_batch=32 --set reload_interval_s=10 (repeatable)")


def parse_options(pairs: list[str]) -> dict:
    """["max_batch=32", "reload_interval_s=null"] → {"max_batch": 32, "reload_interval_s": None} (YAML values)."""
    from core.strict import parse_overrides

    return dict(parse_overrides(pairs))


def run(args: argparse.Namespace) -> int:
    # FAISS's OpenMP threads spin while waiting by default; on a shared machine that steals the cores the
    # tower and the HTTP threads need (see bench/bench_index.py). Only takes effect before faiss is imported
    # (it is not, on the `python -m serving` and `twotower serve` paths).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from serving.app import serve

    return serve(args.run, args.host, args.port, **parse_options(args.options))


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m serving", description="Serve top-k items of a run over HTTP")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_main("python -m serving", run, args)


if __name__ == "__main__":
    sys.exit(main())
