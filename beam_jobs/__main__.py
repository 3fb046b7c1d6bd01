"""``python -m beam_jobs {embed,rebuild,rollback} ...``: the Beam jobs without the ``twotower`` CLI.

    python -m beam_jobs embed   --run runs/x [--items ...] --runner DirectRunner
    python -m beam_jobs rebuild --run runs/x [--set index.factory=IVF1024,Flat] --runner DirectRunner \\
                                [--direct_running_mode multi_processing --direct_num_workers 2]
    python -m beam_jobs rollback --run runs/x [--to VERSION]

Flags a job does not know are Beam pipeline options (``--runner FlinkRunner --flink_master ...``).
Exit status (``core.cli``): 0 done; 2 refused with one line on stderr (bad flag or config, missing input,
validation failed; nothing was published); 1 a bug (traceback); 130 interrupted.
"""
from __future__ import annotations

import logging
import sys
from typing import Sequence

from core.cli import ArgumentParser, run_main
from core.rundir import RunDir

PROG = "python -m beam_jobs"


def rollback_main(argv: Sequence[str]) -> int:
    parser = ArgumentParser(prog=f"{PROG} rollback", description="Flip <run>/index/current (and vectors/current) back.")
    parser.add_argument("--run", required=True)
    parser.add_argument("--to", default=None, help="version to publish (default: the one before current)")
    args = parser.parse_args(argv)
    return run_main(f"{PROG} rollback", _rollback, args)


def _rollback(args) -> int:
    from indexing.store import rollback_index

    run = RunDir(args.run)
    model = run.model_version() if run.model_version_file.is_file() else None
    version = rollback_index(run.index, args.to, vectors_root=run.vectors, model_version=model,
                             model_source=f"the run's model {run.model}")
    print(f"{run.index}/current -> {version}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    jobs = ("embed", "rebuild", "rollback")
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0
    if not argv:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    if argv[0] not in jobs:
        print(f"{PROG}: error: unknown job {argv[0]!r}; choose one of {', '.join(jobs)} (see {PROG} --help)",
              file=sys.stderr)
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
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # not its "no AVX512 build" lines at INFO
    sys.exit(main())
