"""``python -m twotower.studies.scaling --grid scaling_default --out runs/scaling [--no-resume] [--report-only]``"""
from __future__ import annotations

import sys

from core.cli import ArgumentParser, run_main

PROG = "python -m twotower.studies.scaling"


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog=PROG,
        description="Scaling-law study of the CLUE user encoder: run the grid's points (resumable), fit "
                    "L(C), L(N), L(D) and write report.md with plots into --out.")
    parser.add_argument("--grid", required=True, help="grid YAML, or a shipped one by name: scaling_default, scaling_movielens")
    parser.add_argument("--out", required=True, help="output directory (points/, report.md, plots)")
    parser.add_argument("--no-resume", action="store_true", help="rerun points that already finished")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: fit and report from the points already finished")
    args = parser.parse_args(argv)
    return run_main(PROG, _run, args)


def _run(args) -> int:
    from twotower.studies.scaling.sweep import run_sweep, write_sweep_report

    if args.report_only:
        outcome = write_sweep_report(args.grid, args.out)
    else:
        outcome = run_sweep(args.grid, args.out, resume=not args.no_resume)
    return 1 if outcome.failures else 0


if __name__ == "__main__":
    sys.exit(main())
