"""The one place Apache Beam is imported from in ``beam_jobs``, plus runner options.

Beam logs two harmless warnings through the *root* logger that users cannot act on:
  * on import: "apitools not found, and bigquery client libraries are not available ..." (we use no
    BigQuery IO); with no handler configured that call also installs a stderr handler on the root
    logger as a side effect;
  * every time RunInference loads a model: "Resource module is not available for current platform,
    memory usage cannot be fetched." (Beam 2.77 imports ``resource`` together with a module that
    needs torch; without torch it wrongly concludes ``resource`` is missing).
A filter on the root logger drops exactly those two messages (nothing else), and the import below
keeps the root logger's handlers as it found them.

``pipeline_options`` turns CLI-style pipeline arguments into ``PipelineOptions`` and always names
a runner (``DirectRunner`` when none is given): Beam's built-in default may try to download a
runner binary. Everything runner-specific lives in those options, never inside transforms, so the
same job runs on Flink, Spark or Dataflow by changing arguments only.
"""
from __future__ import annotations

import logging
import sys
from typing import Sequence

_BEAM_NOISE = ("apitools not found", "Resource module is not available")


class _DropBeamNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_BEAM_NOISE)


def _install_noise_filter() -> None:
    root = logging.getLogger()
    if not any(isinstance(f, _DropBeamNoise) for f in root.filters):
        root.addFilter(_DropBeamNoise())


def _quiet_import_beam():
    _install_noise_filter()
    if "apache_beam" in sys.modules:
        import apache_beam
        return apache_beam
    root = logging.getLogger()
    # A NullHandler keeps logging.warning() from calling basicConfig() on a handler-less root.
    placeholder = logging.NullHandler() if not root.handlers else None
    if placeholder is not None:
        root.addHandler(placeholder)
    try:
        import apache_beam
    finally:
        if placeholder is not None:
            root.removeHandler(placeholder)
    return apache_beam


beam = _quiet_import_beam()

from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402

DEFAULT_RUNNER = "DirectRunner"


# Defaults applied unless the args set them: worker processes (multi_processing, portable runners)
# log at INFO otherwise, a screenful of gRPC set-up lines per worker.
DEFAULT_OPTIONS = {"default_sdk_harness_log_level": "WARNING"}


def pipeline_options(pipeline_args: Sequence[str] | None = None, **overrides) -> PipelineOptions:
    """``PipelineOptions`` from CLI-style args (e.g. ``["--runner", "FlinkRunner", ...]``).

    Adds ``--runner DirectRunner`` when no runner is named. ``overrides`` are keyword options
    (e.g. ``direct_num_workers=2``) applied, like ``DEFAULT_OPTIONS``, only when the args do not
    already set them.
    """
    args = list(pipeline_args or [])
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args = ["--runner", DEFAULT_RUNNER, *args]
    options = PipelineOptions(args)
    given = options.get_all_options(drop_default=True)
    extra = {k: v for k, v in {**DEFAULT_OPTIONS, **overrides}.items() if k not in given}
    if extra:
        options = PipelineOptions(args, **extra)
    return options


def runner_name(options: PipelineOptions) -> str:
    """The runner named in ``options`` (e.g. "DirectRunner")."""
    runner = options.get_all_options()["runner"]
    return runner if isinstance(runner, str) else type(runner).__name__


__all__ = ["beam", "PipelineOptions", "pipeline_options", "runner_name", "DEFAULT_RUNNER"]
