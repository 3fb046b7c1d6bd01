"""Row validation (the reference the column-wise job path is tested against): every dead-letter reason,
the contract's missing-value conventions."""
import json
import math

import numpy as np
import pytest

from beam_jobs.item_rows import MAX_VALUES_CHARS, BadRow, RowValidator, dead_letter_record
from recdata.schema import FeatureSpec

INPUTS = (FeatureSpec("genre", "categorical"), FeatureSpec("price", "numeric"),
          FeatureSpec("tags", "multi_categorical"))
V = RowValidator(INPUTS)
GOOD = {"item_id": "i1", "genre": "rock", "price": 2.5, "tags": ["a", "b"]}


def bad(**changes):
    row = {**GOOD, **changes}
    return {k: v for k, v in row.items() if v is not _DROP}


_DROP = object()


def test_a_canonical_row_passes_unchanged_and_extra_columns_are_dropped():
    assert V.clean({**GOOD, "unused": 1}) == GOOD


@pytest.mark.parametrize("row, reason", [
    (bad(item_id=_DROP), "missing item id"),
    (bad(item_id=None), "missing item id"),
    (bad(item_id=17), "malformed item id: expected a string, got int 17"),
    (bad(item_id="has space"), "unknown item id format: 'has space' does not match item_id_pattern"),
    (bad(item_id=""), "unknown item id format"),
    (bad(item_id="x" * 257), "unknown item id format"),
    (bad(item_id="tab\there"), "unknown item id format"),
    (bad(genre=_DROP), "missing feature 'genre'"),
    (bad(genre=["rock", "pop"]), "malformed value: feature 'genre' must be one string, got list"),
    (bad(tags="a|b"), "malformed value: feature 'tags' must be a list of strings, got str 'a|b'"),
    (bad(tags=5), "malformed value: feature 'tags' must be a list of strings, got int"),
    (bad(tags=[["nested"]]), "nested list"),
    (bad(price="cheap"), "malformed value: numeric feature 'price' got the string 'cheap'"),
    (bad(price=math.inf), "numeric feature 'price' is inf; use a finite value or NaN"),
    (bad(price=True), "numeric feature 'price' got bool"),
    (bad(price=[1.0]), "numeric feature 'price' got list"),
])
def test_bad_rows_are_refused_with_the_reason(row, reason):
    with pytest.raises(BadRow, match=reason.replace("|", r"\|").replace("(", r"\(").replace("[", r"\[")):
        V.clean(row)


def test_nulls_follow_the_data_contract_like_the_towers_inputs():
    out = V.clean(bad(genre=None, price=None, tags=None))
    assert out["genre"] == "" and math.isnan(out["price"]) and out["tags"] == []
    out = V.clean(bad(genre=float("nan"), tags=["a", None, 3], price=np.float32(1.5)))
    assert out["genre"] == "" and out["tags"] == ["a", "", "3"] and out["price"] == 1.5
    out = V.clean(bad(genre=1984, price="2.5", tags=np.array(["x"], dtype=object)))
    assert out["genre"] == "1984" and out["price"] == 2.5 and out["tags"] == ["x"]
    assert math.isnan(V.clean(bad(price=float("nan")))["price"])


def test_a_custom_id_pattern_and_an_invalid_one():
    numeric_ids = RowValidator(INPUTS, id_pattern=r"\d+")
    assert numeric_ids.clean(bad(item_id="123"))["item_id"] == "123"
    with pytest.raises(BadRow, match="unknown item id format"):
        numeric_ids.clean(bad(item_id="i1"))
    with pytest.raises(ValueError, match="not a valid regular expression"):
        RowValidator(INPUTS, id_pattern="(")


def test_dead_letter_record_is_json_and_truncates_huge_rows():
    rec = dead_letter_record(7, {"item_id": 5, "blob": "x" * 10_000}, "malformed item id", "f.parquet")
    assert rec["row"] == 7 and rec["item_id"] is None and rec["source"] == "f.parquet"
    assert len(rec["values"]) == MAX_VALUES_CHARS
    json.dumps(rec)


def test_check_id_gives_the_same_reason_as_clean():
    for item_id, reason in ((None, "missing item id"), (float("nan"), "missing item id"),
                            (3, "malformed item id: expected a string, got int 3"),
                            ("a b", "unknown item id format: 'a b' does not match")):
        with pytest.raises(BadRow, match=reason):
            V.check_id(item_id)
        with pytest.raises(BadRow, match=reason):
            V.clean(bad(item_id=item_id))
    V.check_id("ok-id")
