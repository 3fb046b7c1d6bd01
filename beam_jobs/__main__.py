"""``python -m beam_jobs {embed,rebuild,rollback} ...``: the Beam jobs without the ``twotower`` CLI.

    python -m beam_jobs embed   --run runs/x [--items ...] --runner DirectRunner
    python -m beam_jobs rebuild --run runs/x [--set index.factory=IVF1024,Flat] --runner DirectRunner \\
                                [--direct_running_mode multi_processing --direct_num_workers 2]
    python -m beam_jobs rollback --run runs/x [--to VERSION]

Flags a job does not know are Beam pipeline options (``--runner FlinkRunner --flink_master ...``).
Exit status: 0 done, 1 the job failed (message on stderr; nothing was published).
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from core.rundir import RunDir


def rollback_main(argv: Sequence[str]) -> int:
    from beam_jobs.rebuild_index import rollback

    parser = argparse.ArgumentParser(prog="python -m beam_jobs rollback",
                                     description="Flip <run>/index/current (and vectors/current) back.")
    parser.add_argument("--run", required=True)
    parser.add_argument("--to", default=None, help="version to publish (default: the one before current)")
    args = parser.parse_args(argv)
    run = RunDir(args.run)
    try:
        version = rollback(run.index, args.to, vectors_root=run.vectors)
    except (ValueError, FileNotFoundError) as exc:
        print(f"rollback failed: {exc}", file=sys.stderr)
        return 1
    print(f"{run.index}/current -> {version}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    jobs = ("embed", "rebuild", "rollback")
    if not argv or argv[0] not in jobs:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    job, rest = argv[0], argv[1:]
    if job == "embed":
        from beam_jobs.embed_items import main as embed_main
        return embed_main(rest)
    if job == "rebuild":
        from beam_jobs.rebuild_index import main as rebuild_main
        return rebuild_main(rest)
    return rollback_main(rest)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main())
