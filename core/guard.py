"""The model-version guard: artifacts made by different models are never used together.

Vectors, indices and query towers carry the ``model_version`` of the export they came from; query and
item embeddings of two trainings live in different spaces, so mixing them gives meaningless scores.
Every site that combines two artifacts calls ``require_same_model`` and gets one exception type with
one wording: both versions, both artifacts, and the fix.
"""
from __future__ import annotations


class ModelVersionMismatch(ValueError):
    """Two artifacts were made by different model versions (a user-fixable refusal, hence ValueError)."""

    def __init__(self, message: str, expected: str = "", found: str = ""):
        super().__init__(message)
        self.expected = expected
        self.found = found


def require_same_model(expected: str, found: str, *, expected_from: str, found_from: str, fix: str) -> None:
    """Raise ``ModelVersionMismatch`` unless ``found == expected``.

    expected: the model version the caller works with, taken from ``expected_from`` (e.g. "the query tower
    in runs/x/model"); found: the version ``found_from`` (e.g. "the index runs/x/index/v3") was made by;
    fix: what to do (e.g. "rebuild the index from this model (`twotower rebuild --run runs/x`)").
    """
    if found != expected:
        raise ModelVersionMismatch(
            f"{found_from} was made by model version {found!r} but {expected_from} is model version {expected!r}; "
            f"their vectors are not comparable. {fix[:1].upper() + fix[1:]}", expected=expected, found=found)
