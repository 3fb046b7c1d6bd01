"""One error policy for every command-line entry point (``twotower``, ``python -m serving``, ``python -m beam_jobs``...).

    exit 0     done
    exit 2     refused with ONE line on stderr, ``<prog>: error: <message>``: a mistake the user can fix or a
               refusal they can act on — a bad flag or config value (``ConfigError``), a missing file, data the
               loaders refuse, an index that failed validation, another job holding the lock. Everything
               already published is unchanged. ``TWOTOWER_DEBUG=1`` re-raises instead (full traceback).
    exit 1     a bug or an unexpected failure (any other exception): Python's full traceback, never hidden.
    exit 130   interrupted (Ctrl-C), with one line.

What counts as "the user can act on it" is ``USER_ERRORS``: ``ValueError`` (which ``core.strict.ConfigError``,
``core``'s model-version guard and every validation error in the project subclass), the file errors, and
``OperationFailed`` for refusals that are not bad input. ``TypeError``/``AttributeError``/``KeyError`` are
deliberately NOT in it: they are how Python reports bugs, and printing them as one line would hide them.

Entry points build their parser with ``ArgumentParser`` (argparse errors become the same one line, exit 2) and
run their body through ``run_main``:

    def main(argv=None) -> int:
        args = ArgumentParser(prog="python -m thing", ...).parse_args(argv)
        return run_main("python -m thing", do_it, args)
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

from core.errors import OperationFailed

DEBUG_ENV = "TWOTOWER_DEBUG"


USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError,
    OperationFailed,
)


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (multi-line messages are joined with " | ")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " | ".join(lines) or type(exc).__name__


def run_main(prog: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """Call ``fn(*args, **kwargs)`` under the policy above; returns the exit status (``fn``'s int result, or 0)."""
    try:
        result = fn(*args, **kwargs)
    except USER_ERRORS as exc:
        if debug_enabled():
            raise
        print(f"{prog}: error: {one_line(exc)}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        if debug_enabled():
            raise
        print(f"{prog}: interrupted; published versions are unchanged", file=sys.stderr, flush=True)
        return 130
    return int(result or 0)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the policy's error format: one line ``<prog>: error: <message> (see <prog> --help)``, exit 2.

    Sub-parsers made with ``add_subparsers().add_parser`` are of this class too."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
