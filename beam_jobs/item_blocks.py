"""Column-wise validation: a block of item rows (an Arrow table) -> the item tower's inputs + dead letters.

The reader hands the embed job blocks of ``batch_size`` consecutive rows as Arrow tables
(``item_source.ItemBlock``). ``BlockValidator.split`` checks and converts them a column at a
time and returns an ``ItemBatch`` (the block's good rows, already stacked into the tower's input
arrays) plus one ``(row in block, reason)`` per bad row. Nothing is done per row in Python for
columns whose Arrow type already is the feature's kind (the usual case):

    item_id             string        nulls -> "missing item id"; ids checked against id_pattern
    categorical / text  string        null -> ""
    numeric             int / float   null -> NaN; +-inf -> "malformed value"
    multi_categorical   list<string>  null list -> [], null entry -> "", padded with "" to the
                                      longest list among the block's good rows (at least 1 wide)

A column of any other type (e.g. strings in a numeric column, ints in a categorical one, a
string where a list belongs) goes value by value through the row converters of ``item_rows``, so
every row gets exactly the verdict and the value ``RowValidator.clean`` would give it; a feature
column absent from the block marks every row "missing feature 'x'". A row's reason is the first
failed check in the order of ``RowValidator.clean``: duplicate id, id, then features in order.
The arrays equal ``handler.batch_features`` of the clean rows (tested), so vectors do not
depend on which path a column took.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from beam_jobs.beam_env import beam
from beam_jobs.handler import ItemBatch
from beam_jobs.item_rows import _CONVERT, DEAD_LETTER, DEFAULT_ID_PATTERN, BadRow, RowValidator, dead_letter_record


def _is_string(typ: pa.DataType) -> bool:
    return pa.types.is_string(typ) or pa.types.is_large_string(typ)


def _plain(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """One contiguous array; dictionary-encoded columns decoded to their value type."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    return column


def _strings(column: pa.Array) -> np.ndarray:
    """string column -> object ndarray of str (null -> "")."""
    if column.null_count:
        column = pc.fill_null(column, "")
    return column.to_numpy(zero_copy_only=False)


def _object_array(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def pad_lists(lengths: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Ragged lists (``lengths`` int (m,), ``values`` the concatenated entries) -> object (m, W) padded
    with "" where W = the longest list (at least 1)."""
    m = len(lengths)
    width = max(int(lengths.max(initial=0)), 1)
    out = np.full((m, width), "", dtype=object)
    if len(values):
        starts = np.cumsum(lengths) - lengths
        rows = np.repeat(np.arange(m), lengths)
        out[rows, np.arange(len(values)) - np.repeat(starts, lengths)] = values
    return out


def _by_value(values: list, convert: Callable, name: str) -> tuple[list, dict[int, str]]:
    out, bad = [], {}
    for i, value in enumerate(values):
        try:
            out.append(convert(value, name))
        except BadRow as exc:
            out.append(None)
            bad[i] = str(exc)
    return out, bad


def _string_feature(column: pa.Array, name: str) -> tuple[Callable, dict[int, str]]:
    if _is_string(column.type):
        values = _strings(column)
        return (lambda good: values[good]), {}
    converted, bad = _by_value(column.to_pylist(), _CONVERT["categorical"], name)
    values = _object_array(converted)
    return (lambda good: values[good]), bad


def _numeric_feature(column: pa.Array, name: str) -> tuple[Callable, dict[int, str]]:
    typ = column.type
    if pa.types.is_integer(typ) or pa.types.is_floating(typ):
        numbers = column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)  # null -> NaN
        infinite = np.flatnonzero(np.isinf(numbers))
        bad = {int(i): f"malformed value: numeric feature {name!r} is {float(numbers[i])}; use a finite value "
                       "or NaN (= missing)" for i in infinite}
        return (lambda good: numbers[good].astype(np.float32)), bad
    converted, bad = _by_value(column.to_pylist(), _CONVERT["numeric"], name)
    numbers = np.array([np.nan if v is None else v for v in converted], dtype=np.float64)
    return (lambda good: numbers[good].astype(np.float32)), bad


def _list_feature(column: pa.Array, name: str) -> tuple[Callable, dict[int, str]]:
    typ = column.type
    if (pa.types.is_list(typ) or pa.types.is_large_list(typ)) and _is_string(typ.value_type):
        lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy().astype(np.int64)
        entries = _strings(column.flatten())  # skips null lists, honours the slice offset
        starts = np.cumsum(lengths) - lengths

        def take(good: np.ndarray) -> np.ndarray:
            picked = lengths[good]
            index = np.repeat(starts[good], picked) + (np.arange(picked.sum()) - np.repeat(np.cumsum(picked) - picked,
                                                                                            picked))
            return pad_lists(picked, entries[index])
        return take, {}
    converted, bad = _by_value(column.to_pylist(), _CONVERT["multi_categorical"], name)

    def take_converted(good: np.ndarray) -> np.ndarray:
        lists = [converted[i] for i in good.tolist()]
        lengths = np.fromiter(map(len, lists), dtype=np.int64, count=len(lists))
        return pad_lists(lengths, _object_array([v for lst in lists for v in lst]))
    return take_converted, bad


_FEATURE = {"categorical": _string_feature, "text": _string_feature, "numeric": _numeric_feature,
            "multi_categorical": _list_feature}


@dataclass(frozen=True)
class BlockValidator:
    """Splits Arrow blocks of item rows into an ``ItemBatch`` of good rows and dead-letter reasons."""

    rows: RowValidator
    duplicates: Mapping[int, int] = field(default_factory=dict)  # repeated id's position -> first position

    def split(self, table: pa.Table, start: int) -> tuple[ItemBatch | None, list[tuple[int, str]]]:
        """Rows ``start .. start + len(table) - 1`` -> (ItemBatch of the good rows or None when there is
        none, ``[(row in block, reason), ...]`` sorted by row)."""
        m = table.num_rows
        reasons: dict[int, str] = {}
        if self.duplicates:
            for position in range(start, start + m):
                if position in self.duplicates:
                    reasons[position - start] = (f"duplicate item id: the same id is at row "
                                                 f"{self.duplicates[position]} (the first occurrence is kept)")
        ids = self._ids(table, reasons)
        takers = {}
        for spec in self.rows.features:
            if spec.name not in table.column_names:
                for i in range(m):
                    reasons.setdefault(i, f"missing feature {spec.name!r}")
                continue
            takers[spec.name], bad = _FEATURE[spec.kind](_plain(table.column(spec.name)), spec.name)
            for i, reason in bad.items():
                reasons.setdefault(i, reason)
        bad_rows = sorted(reasons.items())
        if len(bad_rows) == m:
            return None, bad_rows
        good = np.arange(m) if not bad_rows else np.setdiff1d(np.arange(m), [i for i, _ in bad_rows])
        item_ids = ids[good]
        features = {"item_id": item_ids}
        for spec in self.rows.features:
            features[spec.name] = takers[spec.name](good)
        return ItemBatch(good.astype(np.int64) + start, item_ids, features), bad_rows

    def _ids(self, table: pa.Table, reasons: dict[int, str]) -> np.ndarray:
        if "item_id" not in table.column_names:
            for i in range(table.num_rows):
                reasons.setdefault(i, "missing item id")
            return np.full(table.num_rows, None, dtype=object)
        column = _plain(table.column("item_id"))
        if not _is_string(column.type):
            values = _object_array(column.to_pylist())
            to_check = range(len(values))
        else:
            values = column.to_numpy(zero_copy_only=False)
            to_check = range(len(values))
            if self.rows.id_pattern == DEFAULT_ID_PATTERN:
                # Printable ASCII without spaces, 1-256 characters, surely matches the default pattern; only
                # the other ids (nulls, non-ASCII, too long, ...) go through Python's re, which decides.
                plain_ascii = pc.match_substring_regex(column, r"^[\x21-\x7e]{1,256}$").to_numpy(zero_copy_only=False)
                to_check = np.flatnonzero(~plain_ascii.astype(bool, copy=False)).tolist()
        check = self.rows.check_id
        for i in to_check:
            try:
                check(values[i])
            except BadRow as exc:
                reasons.setdefault(i, str(exc))
        return values


@beam.typehints.with_output_types(ItemBatch)
class ValidateItemBlocks(beam.DoFn):
    """``ItemBlock`` -> main: one ``ItemBatch`` of the block's good rows (omitted when none);
    ``DEAD_LETTER``: one record per bad row (``item_rows.dead_letter_record``)."""

    def __init__(self, validator: RowValidator, duplicates: Mapping[int, int] | None = None):
        self._blocks = BlockValidator(validator, dict(duplicates or {}))

    def process(self, block) -> Iterator:
        batch, bad = self._blocks.split(block.table, block.start)
        for i, reason in bad:
            row = block.table.slice(i, 1).to_pylist()[0]
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead_letter_record(block.start + i, row, reason, block.source))
        if batch is not None:
            yield batch
