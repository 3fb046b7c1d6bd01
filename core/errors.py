"""``OperationFailed``: a refusal the user can act on that is not bad input (a lock another job holds, a
download that failed, ``gpu='always'`` on a machine without a GPU).

Bad input is a ``ValueError`` (``core.strict.ConfigError`` for config). Both are printed by every entry point
as one line with exit 2 (``core.cli``); anything else is treated as a bug and shows its traceback.
"""
from __future__ import annotations


class OperationFailed(RuntimeError):
    """Expected failure with a message that says what to do; subclasses ``RuntimeError`` so existing
    ``except RuntimeError`` handlers keep working."""
