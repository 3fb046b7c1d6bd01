"""Read planning: positions across files/row groups/units, duplicates, and the reader's blocks."""
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from beam_jobs.item_source import ReadItemBlocks, find_duplicates, match_parquet, plan_item_source
from recdata.schema import FeatureSpec


def write(path, ids, row_group_size=None, **cols):
    pq.write_table(pa.table({"item_id": ids, **cols}), path, row_group_size=row_group_size)


@pytest.fixture
def two_files(tmp_path):
    write(tmp_path / "b.parquet", [f"b{i}" for i in range(7)], row_group_size=3, x=list(range(7)))
    write(tmp_path / "a.parquet", [f"a{i}" for i in range(5)], x=list(range(5)), extra=["e"] * 5)
    (tmp_path / "_SUCCESS").write_text("")
    return tmp_path


def read_all(source, block_rows, features=(FeatureSpec("x", "numeric"),)):
    reader = ReadItemBlocks(features, block_rows)
    blocks = [b for unit in source.units for b in reader.process(unit)]
    return blocks, [(b.start + i, row) for b in blocks for i, row in enumerate(b.table.to_pylist())]


def test_positions_follow_sorted_files_then_row_order_for_any_unit_and_block_size(two_files):
    expected = [f"a{i}" for i in range(5)] + [f"b{i}" for i in range(7)]
    for rows_per_unit in (1, 2, 3, 100):
        source = plan_item_source(str(two_files), rows_per_unit=rows_per_unit)
        assert source.num_rows == 12 and [p.rsplit("/", 1)[1] for p in source.paths] == ["a.parquet", "b.parquet"]
        assert [u.start for u in source.units] == sorted(u.start for u in source.units)
        assert max(u.num_rows for u in source.units) <= rows_per_unit
        for block_rows in (1, 2, 1000):
            blocks, rows = read_all(source, block_rows)
            assert [pos for pos, _ in rows] == list(range(12))
            assert [r["item_id"] for _, r in rows] == expected
            assert all(b.table.num_rows <= block_rows for b in blocks)
            assert [b.source.rsplit("/", 1)[1] for b in blocks] == sorted(b.source.rsplit("/", 1)[1] for b in blocks)
    assert set(source.columns) == {"item_id", "x", "extra"}


def test_blocks_hold_only_the_id_and_feature_columns_the_file_has(two_files):
    source = plan_item_source(str(two_files))
    blocks, rows = read_all(source, 10, features=(FeatureSpec("extra", "categorical"),))
    assert [b.table.column_names for b in blocks] == [["item_id", "extra"]] + [["item_id"]] * 3  # b: 3 row groups
    assert "extra" in rows[0][1] and "extra" not in rows[-1][1]


def test_duplicates_map_each_repeat_to_its_first_position(tmp_path):
    write(tmp_path / "a.parquet", ["x", "y", "x", None, None])
    write(tmp_path / "b.parquet", ["y", "z", "x"])
    source = plan_item_source(str(tmp_path))
    assert source.duplicates == {2: 0, 5: 1, 7: 0}
    assert find_duplicates(["u", "v"]) == {}


def test_input_errors_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Parquet files match"):
        match_parquet(str(tmp_path / "nothing*.parquet"))
    pq.write_table(pa.table({"id": ["a"]}), tmp_path / "noid.parquet")
    with pytest.raises(ValueError, match="has no 'item_id' column"):
        plan_item_source(str(tmp_path / "noid.parquet"))
    write(tmp_path / "empty.parquet", pa.array([], pa.string()))
    with pytest.raises(ValueError, match="the items table is empty"):
        plan_item_source(str(tmp_path / "empty.parquet"))
    with pytest.raises(ValueError, match="rows_per_unit must be >= 1"):
        plan_item_source(str(tmp_path / "empty.parquet"), rows_per_unit=0)
    with pytest.raises(ValueError, match="block_rows must be >= 1"):
        ReadItemBlocks((), 0)


def test_block_coder_encodes_only_the_slice_and_estimates_without_encoding():
    from beam_jobs.beam_env import beam
    from beam_jobs.item_source import ItemBlock, ItemBlockCoder

    table = pa.table({"item_id": [f"i{i}" for i in range(10_000)], "x": list(range(10_000))})
    block = ItemBlock("f.parquet", 5000, table.slice(5000, 100))
    coder = beam.coders.registry.get_coder(ItemBlock)
    assert isinstance(coder, ItemBlockCoder)
    encoded = coder.encode(block)
    back = coder.decode(encoded)
    assert (back.source, back.start) == ("f.parquet", 5000) and back.table.equals(block.table)
    assert len(encoded) < table.nbytes / 20  # the slice, not the whole row group it views
    assert coder.estimate_size(block) == block.table.nbytes + len("f.parquet") + 16


@pytest.mark.parametrize("backend", ["s3", "gcs"])
def test_items_on_object_storage_plan_and_read_like_the_local_files(two_files, backend, request):
    from core.storage import open_storage

    url = request.getfixturevalue("s3_url" if backend == "s3" else "gcs_url")
    store = open_storage(url)
    for name in ("a.parquet", "b.parquet", "_SUCCESS"):
        store.write_bytes(f"items/{name}", (two_files / name).read_bytes())
    store.write_bytes("items/nested/c.parquet", (two_files / "a.parquet").read_bytes())  # not in the directory
    local = plan_item_source(str(two_files), rows_per_unit=2)
    for spec in (f"{url}/items", f"{url}/items/", f"{url}/items/*.parquet"):
        remote = plan_item_source(spec, rows_per_unit=2)
        assert remote.paths == (f"{url}/items/a.parquet", f"{url}/items/b.parquet")
        assert [(u.row_group, u.offset, u.num_rows, u.start) for u in remote.units] == \
            [(u.row_group, u.offset, u.num_rows, u.start) for u in local.units]
        assert remote.columns == local.columns
        assert read_all(remote, 3)[1] == read_all(local, 3)[1]
    assert match_parquet(f"{url}/items/b.parquet") == [f"{url}/items/b.parquet"]
    assert match_parquet(f"{url}/items/**/c.parquet") == [f"{url}/items/nested/c.parquet"]
    with pytest.raises(FileNotFoundError, match=r"no Parquet files match '.*/nothing'"):
        match_parquet(f"{url}/nothing")
