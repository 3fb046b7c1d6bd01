"""``python -m twotower.studies.ssl --grid ssl_movielens --out runs/ssl [--no-resume] [--report-only]``"""
from __future__ import annotations

import argparse
import sys

from core.cli import ArgumentParser, run_main

PROG = "python -m twotower.studies.ssl"


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or ArgumentParser(prog=PROG)
    parser.description = ("SSL study: train every (dataset, supervision fraction, variant, seed) point of the grid "
                          "(resumable), then report the paired gain of each variant per slice with intervals.")
    parser.add_argument("--grid", required=True, help="grid YAML, or a shipped one by name: ssl_movielens, "
                        "ssl_synthetic")
    parser.add_argument("--out", required=True, help="output directory (points/, report.md, gains.json, PNG)")
    parser.add_argument("--no-resume", action="store_true", help="rerun points that already finished")
    parser.add_argument("--report-only", action="store_true", help="train nothing: report from finished points")
    return parser


def run(args) -> int:
    from twotower.studies.ssl.sweep import run_study

    outcome = run_study(args.grid, args.out, resume=not args.no_resume, report_only=args.report_only)
    return 1 if outcome.failures else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main(PROG, run, args)


if __name__ == "__main__":
    sys.exit(main())
