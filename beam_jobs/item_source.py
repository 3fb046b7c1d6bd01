"""Where the item rows come from: Parquet files planned into read units with catalogue positions.

The driver reads only Parquet footers (and the ``item_id`` column, to find duplicate ids) and
cuts the input into ``ReadUnit``s of at most ``rows_per_unit`` rows. Each unit knows the global
position of its first row, so every item keeps its POSITION in the source (files in sorted path
order, then row order) however the runner schedules the reads. That position decides the item's
row in the vectors artifact, which is how a re-run reproduces the same catalogue order.

URLs (``s3://``, ``gs://``) are listed and read through ``core.storage`` (``Storage.list`` for matching,
``Storage.open_read`` — ranged reads pinned to one object version — for footers and row groups), the
same interface every other artifact uses; tested against SeaweedFS and fake-gcs-server.
"""
from __future__ import annotations

import glob as _glob
import os
import re
import pickle
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from beam_jobs.beam_env import beam

from core.storage import join_url, open_storage, scheme_of
from recdata.schema import FeatureSpec

DEFAULT_ROWS_PER_UNIT = 65_536


@dataclass(frozen=True)
class ReadUnit:
    """Rows ``[offset, offset + num_rows)`` of row group ``row_group`` of ``path``; first row = ``start``."""

    path: str
    row_group: int
    offset: int
    num_rows: int
    start: int


@dataclass(frozen=True)
class ItemSource:
    """The planned input: read units, total rows, the columns every file has, duplicate positions."""

    paths: tuple[str, ...]
    units: tuple[ReadUnit, ...]
    num_rows: int
    columns: tuple[str, ...]           # every column present in at least one file
    duplicates: dict[int, int]         # position of a repeated id -> position of its first occurrence


def match_parquet(spec: str) -> list[str]:
    """Parquet files named by ``spec``: a file, a directory (its ``*.parquet``) or a glob; sorted."""
    spec = str(spec)
    if scheme_of(spec) != "file":
        paths = _match_url(spec)
    else:
        if os.path.isdir(spec):
            spec = os.path.join(spec, "*.parquet")
        paths = _glob.glob(spec)
    paths = sorted(p for p in paths if not os.path.basename(p).startswith((".", "_")))
    if not paths:
        raise FileNotFoundError(
            f"no Parquet files match {spec!r}; pass --items <file, directory or glob of .parquet files> "
            "(default: <run>/data/items.parquet)"
        )
    return paths


def _match_url(spec: str) -> list[str]:
    """URLs of the objects ``spec`` names: one object, a "directory" (its ``*.parquet`` objects, not
    recursive) or a glob matched against whole URLs as ``glob`` does: ``*`` and ``?`` stay within one
    ``/`` segment, ``**`` crosses them, ``[...]`` is a character set."""
    spec = spec.rstrip("/")
    scheme, rest = spec.split("://", 1)
    glob_at = min((rest.find(c) for c in "*?[" if c in rest), default=-1)
    if glob_at >= 0:
        base = rest[:glob_at].rsplit("/", 1)[0] if "/" in rest[:glob_at] else rest[:glob_at]
        base_url = f"{scheme}://{base}"
        pattern = _glob_regex(spec)
        return [join_url(base_url, key) for key in open_storage(base_url).list()
                if pattern.fullmatch(join_url(base_url, key))]
    parent, name = _split_url(spec)
    if name and open_storage(parent).exists(name):
        return [spec]
    return [join_url(spec, key) for key in open_storage(spec).list() if "/" not in key and key.endswith(".parquet")]


def _glob_regex(spec: str) -> "re.Pattern":
    out, i = [], 0
    while i < len(spec):
        if spec.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif spec.startswith("**", i):
            out.append(".*")
            i += 2
        elif spec[i] == "*":
            out.append("[^/]*")
            i += 1
        elif spec[i] == "?":
            out.append("[^/]")
            i += 1
        elif spec[i] == "[" and "]" in spec[i + 2:]:
            j = spec.index("]", i + 2)
            body = spec[i + 1:j]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            i = j + 1
        else:
            out.append(re.escape(spec[i]))
            i += 1
    return re.compile("".join(out))


def _split_url(url: str) -> tuple[str, str]:
    """(parent URL, last key segment)."""
    scheme, rest = url.rstrip("/").split("://", 1)
    if "/" not in rest:
        return url, ""
    parent, name = rest.rsplit("/", 1)
    return f"{scheme}://{parent}", name


def _parquet_file(path: str) -> pq.ParquetFile:
    if scheme_of(path) == "file":
        return pq.ParquetFile(path)
    parent, name = _split_url(path)
    return pq.ParquetFile(open_storage(parent).open_read(name))  # seekable; footer and row groups by range


def plan_item_source(spec: str, rows_per_unit: int = DEFAULT_ROWS_PER_UNIT) -> ItemSource:
    """Plan the reads of the Parquet files named by ``spec`` (see ``match_parquet``)."""
    if rows_per_unit < 1:
        raise ValueError(f"rows_per_unit must be >= 1, got {rows_per_unit}")
    paths = match_parquet(spec)
    units: list[ReadUnit] = []
    start = 0
    columns: dict[str, None] = {}
    id_chunks = []
    for path in paths:
        pf = _parquet_file(path)
        names = tuple(pf.schema_arrow.names)
        columns.update(dict.fromkeys(names))
        if "item_id" not in names:
            raise ValueError(f"{path} has no 'item_id' column (columns: {list(names)}); the items table "
                             "needs one string id per item (recdata schema)")
        for rg in range(pf.num_row_groups):
            n = pf.metadata.row_group(rg).num_rows
            for offset in range(0, n, rows_per_unit):
                size = min(rows_per_unit, n - offset)
                units.append(ReadUnit(path, rg, offset, size, start))
                start += size
        id_chunks.append(pf.read(columns=["item_id"]).column("item_id").cast(pa.string()))
    if start == 0:
        raise ValueError(f"{spec}: the items table is empty (0 rows in {len(paths)} file(s))")
    return ItemSource(tuple(paths), tuple(units), start, tuple(columns),
                      find_duplicates(pa.chunked_array([c for ch in id_chunks for c in ch.chunks],
                                                       type=pa.string())))


def find_duplicates(item_ids: pa.ChunkedArray | Sequence[str]) -> dict[int, int]:
    """``{position: first position}`` for every repeat of an id (nulls ignored); {} when ids are unique."""
    ids = item_ids if isinstance(item_ids, (pa.Array, pa.ChunkedArray)) else pa.array(item_ids, pa.string())
    counts = pc.value_counts(ids)
    repeated = counts.field("values").filter(pc.greater(counts.field("counts"), 1))
    repeated = repeated.drop_null()
    if len(repeated) == 0:
        return {}
    positions = np.flatnonzero(pc.is_in(ids, value_set=repeated).to_numpy(zero_copy_only=False))
    values = np.asarray(ids.take(pa.array(positions)).to_pylist(), dtype=object)
    first: dict[str, int] = {}
    out: dict[int, int] = {}
    for pos, value in zip(positions.tolist(), values.tolist()):
        if value in first:
            out[pos] = first[value]
        else:
            first[value] = pos
    return out


@dataclass(frozen=True, eq=False)
class ItemBlock:
    """Rows ``start .. start + table.num_rows - 1`` of the catalogue, read from ``source``: an Arrow table
    of the ``item_id`` and feature columns the file has (missing columns are simply absent)."""

    source: str
    start: int
    table: pa.Table


class ItemBlockCoder(beam.coders.Coder):
    """Beam coder for ``ItemBlock``: the table slice as an Arrow IPC stream (only the slice's rows, not the
    row group it views). ``estimate_size`` reads Arrow's byte count instead of encoding: Beam measures
    the size of sampled elements, and a pickled slice would drag its whole row group along."""

    def encode(self, block: ItemBlock) -> bytes:
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, block.table.schema) as writer:
            writer.write_table(block.table)
        return pickle.dumps((block.source, block.start, sink.getvalue().to_pybytes()), pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes) -> ItemBlock:
        source, start, stream = pickle.loads(encoded)
        return ItemBlock(source, start, pa.ipc.open_stream(stream).read_all())

    def estimate_size(self, block: ItemBlock) -> int:
        return block.table.nbytes + len(block.source) + 16

    def is_deterministic(self) -> bool:
        return False

    def to_type_hint(self):
        return ItemBlock


beam.coders.registry.register_coder(ItemBlock, ItemBlockCoder)


@beam.typehints.with_output_types(ItemBlock)
class ReadItemBlocks(beam.DoFn):
    """``ReadUnit`` -> ``ItemBlock``s of up to ``block_rows`` consecutive rows (zero-copy slices), reading
    only ``item_id`` and the ``features`` columns.

    Blocks are contiguous positions, so the same input always gives the same blocks (and so the same
    model batches). The last row group read is cached per worker: the units of one large row group
    cost one decode when they land on the same worker.
    """

    def __init__(self, features: Sequence[FeatureSpec], block_rows: int):
        if block_rows < 1:
            raise ValueError(f"block_rows must be >= 1, got {block_rows}")
        self._columns = ("item_id", *(f.name for f in features))
        self._block_rows = block_rows
        self._cached: tuple[tuple[str, int], pa.Table] | None = None

    def _row_group(self, path: str, row_group: int) -> pa.Table:
        key = (path, row_group)
        if self._cached is None or self._cached[0] != key:
            pf = _parquet_file(path)
            present = [c for c in self._columns if c in pf.schema_arrow.names]
            self._cached = (key, pf.read_row_group(row_group, columns=present))
        return self._cached[1]

    def process(self, unit: ReadUnit) -> Iterator[ItemBlock]:
        table = self._row_group(unit.path, unit.row_group)
        for offset in range(0, unit.num_rows, self._block_rows):
            size = min(self._block_rows, unit.num_rows - offset)
            yield ItemBlock(unit.path, unit.start + offset, table.slice(unit.offset + offset, size))
