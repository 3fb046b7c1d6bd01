"""``python -m twotower.studies.ssl --grid configs/ssl_movielens.yaml --out runs/ssl [--no-resume] [--report-only]``"""
from __future__ import annotations

import argparse
import sys


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="python -m twotower.studies.ssl")
    parser.description = ("SSL study: train every (dataset, supervision fraction, variant, seed) point of the grid "
                          "(resumable), then report the paired gain of each variant per slice with intervals.")
    parser.add_argument("--grid", required=True, help="grid YAML (see configs/ssl_movielens.yaml)")
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
    try:
        return run(args)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        print(f"python -m twotower.studies.ssl: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
