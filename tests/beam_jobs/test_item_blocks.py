"""Column-wise block validation vs the row-at-a-time reference (RowValidator.clean + batch_features)."""
import math

import numpy as np
import pyarrow as pa
import pytest

from beam_jobs.beam_env import beam, pipeline_options
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from beam_jobs.handler import ItemBatch, batch_features
from beam_jobs.item_blocks import BlockValidator, ValidateItemBlocks, pad_lists
from beam_jobs.item_rows import DEAD_LETTER, BadRow, RowValidator
from beam_jobs.item_source import ItemBlock
from recdata.schema import FeatureSpec

FEATURES = (FeatureSpec("genre", "categorical"), FeatureSpec("price", "numeric"),
            FeatureSpec("tags", "multi_categorical"), FeatureSpec("title", "text"))
V = RowValidator(FEATURES)


def reference(table: pa.Table, start: int, duplicates: dict):
    """What the row path gives: (positions, features of the good rows, [(row in block, reason)])."""
    good, positions, bad = [], [], []
    for i, row in enumerate(table.to_pylist()):
        try:
            if start + i in duplicates:
                raise BadRow(f"duplicate item id: the same id is at row {duplicates[start + i]} "
                             "(the first occurrence is kept)")
            good.append(V.clean(row))
            positions.append(start + i)
        except BadRow as exc:
            bad.append((i, str(exc)))
    return positions, (batch_features(good, FEATURES) if good else None), bad


def assert_same_as_rows(table: pa.Table, start: int = 0, duplicates: dict | None = None):
    duplicates = duplicates or {}
    batch, bad = BlockValidator(V, duplicates).split(table, start)
    positions, expected, expected_bad = reference(table, start, duplicates)
    assert bad == expected_bad
    if expected is None:
        assert batch is None
        return
    assert isinstance(batch, ItemBatch) and batch.positions.dtype == np.int64
    assert batch.positions.tolist() == positions and batch.item_ids.tolist() == expected["item_id"].tolist()
    assert set(batch.features) == set(expected)
    for name, want in expected.items():
        got = batch.features[name]
        assert got.dtype == want.dtype and got.shape == want.shape, (name, got.shape, want.shape)
        if want.dtype == object:
            assert got.tolist() == want.tolist(), name
        else:
            np.testing.assert_array_equal(got, want)  # NaN == NaN here


def typed_table():
    """Every column in its natural Arrow type, with nulls, infinities and bad ids."""
    return pa.table({
        "item_id": ["a", None, "b c", "dé", "e\u00a0", "f\u3000g", "x" * 257, "y" * 256],  # NBSP, ideographic space
        "genre": ["rock", None, "pop", "jazz", None, "", "folk", "soul"],
        "price": [1.5, None, 2.0, float("nan"), float("inf"), 3.0, 4.0, -float("inf")],
        "tags": [["t1", "t2"], None, [], ["t3", None], ["a", "b", "c", "d"], None, ["z"], []],
        "title": ["t", "u", None, "w", "x", "y", "z", "q"],
    })


def test_typed_columns_match_the_row_path_including_nulls_infinities_and_bad_ids():
    table = typed_table()
    assert_same_as_rows(table)
    assert_same_as_rows(table, start=100, duplicates={103: 7, 105: 0})


def test_slices_with_an_offset_match_the_row_path():
    """The reader hands out zero-copy slices; list offsets must honour them."""
    table = typed_table()
    for lo in range(len(table)):
        for size in (1, 3, len(table) - lo):
            assert_same_as_rows(table.slice(lo, size), start=lo)


def test_columns_of_other_types_go_value_by_value_with_the_same_verdicts():
    table = pa.table({
        "item_id": pa.array([1, 2, None], pa.int64()),  # not strings at all
        "genre": ["a", "b", "c"], "price": [1.0, 2.0, 3.0], "tags": [["x"], [], ["y"]], "title": ["t"] * 3})
    assert_same_as_rows(table)
    table = pa.table({
        "item_id": ["a", "b", "c", "d"],
        "genre": pa.array([1984, None, 7, 0], pa.int64()),       # ints in a categorical -> "1984"
        "price": ["2.5", "cheap", None, "inf"],                  # strings in a numeric column
        "tags": ["a|b", None, "c", "d"],                          # a string where a list belongs
        "title": pa.array([True, False, None, True]),
    })
    assert_same_as_rows(table)
    table = pa.table({
        "item_id": ["a", "b", "c"],
        "genre": pa.array(["x", "y", None]).dictionary_encode(),  # pandas categoricals arrive like this
        "price": pa.array([1, None, 3], pa.int32()), "tags": pa.array([[1, 2], None, [3]], pa.list_(pa.int64())),
        "title": pa.array(["p", "q", "r"], pa.large_string())})
    assert_same_as_rows(table)
    assert_same_as_rows(pa.table({"item_id": ["a"], "genre": [True], "price": [True], "tags": [[["n"]]],
                                  "title": [[1]]}))


def test_a_missing_feature_column_dead_letters_every_row_but_the_first_reason_wins():
    table = pa.table({"item_id": ["a", "b c"], "genre": ["x", "y"], "price": [1.0, 2.0], "tags": [[], []]})
    batch, bad = BlockValidator(V).split(table, 0)
    assert batch is None
    assert [r.split(":")[0] for _, r in bad] == ["missing feature 'title'", "unknown item id format"]
    assert_same_as_rows(table)


def test_random_tables_match_the_row_path():
    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(1, 40))
        ids = [None if rng.random() < 0.05 else f"i{int(v)}" if rng.random() > 0.05 else "a b"
               for v in rng.integers(0, 1000, n)]
        table = pa.table({
            "item_id": ids,
            "genre": [None if rng.random() < 0.2 else f"g{int(v)}" for v in rng.integers(0, 5, n)],
            "price": [None if r < 0.1 else math.inf if r > 0.97 else float(r) for r in rng.random(n)],
            "tags": [None if rng.random() < 0.1 else [None if rng.random() < 0.1 else f"t{int(v)}"
                                                     for v in rng.integers(0, 9, int(k))]
                     for k in rng.integers(0, 6, n)],
            "title": [f"w{int(v)} w{int(v) + 1}" for v in rng.integers(0, 50, n)],
        })
        lo = int(rng.integers(0, n))
        assert_same_as_rows(table.slice(lo), start=lo, duplicates={lo: 0} if trial % 3 == 0 else {})


def test_pad_lists():
    out = pad_lists(np.array([2, 0, 1]), np.array(["a", "b", "c"], dtype=object))
    assert out.tolist() == [["a", "b"], ["", ""], ["c", ""]]
    assert pad_lists(np.array([0, 0]), np.array([], dtype=object)).tolist() == [[""], [""]]


def test_validate_dofn_emits_one_batch_per_block_and_a_record_per_bad_row():
    good = {"item_id": "i1", "genre": "g", "price": 1.0, "tags": ["a"], "title": "t"}
    block_a = ItemBlock("a.parquet", 0, pa.Table.from_pylist(
        [good, {**good, "item_id": "i2", "tags": None, "price": math.inf}, {**good, "item_id": "i3"}]))
    block_b = ItemBlock("b.parquet", 3, pa.Table.from_pylist([good]))  # repeats row 0's id
    with BeamTestPipeline(runner="DirectRunner", options=pipeline_options([])) as p:
        out = (p | beam.Create([block_a, block_b])
               | beam.ParDo(ValidateItemBlocks(V, duplicates={3: 0})).with_outputs(DEAD_LETTER, main="valid"))
        assert_that(out.valid | beam.Map(lambda b: (b.positions.tolist(), b.item_ids.tolist())),
                    equal_to([([0, 2], ["i1", "i3"])]), label="good")
        assert_that(out[DEAD_LETTER] | beam.Map(lambda r: (r["row"], r["source"], r["item_id"],
                                                            r["reason"].split(":")[0])),
                    equal_to([(1, "a.parquet", "i2", "malformed value"),
                              (3, "b.parquet", "i1", "duplicate item id")]), label="dead")
