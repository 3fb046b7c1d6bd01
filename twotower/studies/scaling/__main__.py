"""``python -m twotower.studies.scaling --grid configs/scaling_default.yaml --out runs/scaling [--no-resume] [--report-only]``"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m twotower.studies.scaling",
        description="Scaling-law study of the CLUE user encoder: run the grid's points (resumable), fit "
                    "L(C), L(N), L(D) and write report.md with plots into --out.")
    parser.add_argument("--grid", required=True, help="grid YAML (see configs/scaling_default.yaml)")
    parser.add_argument("--out", required=True, help="output directory (points/, report.md, plots)")
    parser.add_argument("--no-resume", action="store_true", help="rerun points that already finished")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: fit and report from the points already finished")
    args = parser.parse_args(argv)
    from twotower.studies.scaling.sweep import run_sweep, write_sweep_report

    try:
        if args.report_only:
            outcome = write_sweep_report(args.grid, args.out)
        else:
            outcome = run_sweep(args.grid, args.out, resume=not args.no_resume)
    except (FileNotFoundError, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 1 if outcome.failures else 0


if __name__ == "__main__":
    sys.exit(main())
