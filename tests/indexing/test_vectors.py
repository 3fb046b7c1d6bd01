"""Item-vectors artifact: write → read round trip, schema, and refusal of bad artifacts."""
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.guard import ModelVersionMismatch
from indexing.vectors import finalize_vectors, read_vectors, shard_name, write_shard, write_vectors
from core import artifacts


def sample(n=103, d=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    return [f"item-{i:04d}" for i in range(n)], x / np.linalg.norm(x, axis=1, keepdims=True)


def test_round_trip_keeps_order_values_and_manifest(tmp_path):
    ids, x = sample()
    manifest = write_vectors(tmp_path / "v1", ids, x, "model-3", num_shards=4)
    got_ids, got_x, got_manifest = read_vectors(tmp_path / "v1")
    assert got_ids.tolist() == ids and got_ids.dtype == object
    np.testing.assert_array_equal(got_x, x)
    assert got_x.dtype == np.float32 and got_x.flags.c_contiguous
    assert got_manifest == manifest
    assert {k: manifest[k] for k in ("kind", "version", "model_version", "count", "dim")} == {
        "kind": "item_vectors", "version": "v1", "model_version": "model-3", "count": 103, "dim": 12}
    assert manifest["shards"] == [shard_name(i, 4) for i in range(4)] == ["part-00000-of-00004.parquet",
                                                                            "part-00001-of-00004.parquet",
                                                                            "part-00002-of-00004.parquet",
                                                                            "part-00003-of-00004.parquet"]
    table = pq.read_table(tmp_path / "v1" / manifest["shards"][1])
    assert table.schema.field("vector").type == pa.list_(pa.float32())
    assert table.schema.field("item_id").type == pa.string()
    assert set(table.column("model_version").to_pylist()) == {"model-3"}
    assert table.column("item_id")[0].as_py() == "item-0026"  # contiguous shards, catalogue order


def test_more_shards_than_items_writes_empty_shards(tmp_path):
    ids, x = sample(n=3)
    write_vectors(tmp_path / "v", ids, x, "m", num_shards=5)
    got_ids, got_x, manifest = read_vectors(tmp_path / "v")
    assert got_ids.tolist() == ids and len(manifest["shards"]) == 5
    np.testing.assert_array_equal(got_x, x)  # the vectors read back are the ones written, row for row
    assert got_x.dtype == np.float32 and manifest["count"] == 3 and manifest["dim"] == 12


def test_distributed_write_then_finalize(tmp_path):
    ids, x = sample(n=10)
    for i, (lo, hi) in reversed(list(enumerate([(0, 4), (4, 10)]))):  # workers finish in any order
        write_shard(tmp_path / "v", i, 2, ids[lo:hi], x[lo:hi], "m")
    finalize_vectors(tmp_path / "v", "m", version="2024-06-01")
    got_ids, got_x, manifest = read_vectors(tmp_path / "v")
    assert got_ids.tolist() == ids and manifest["version"] == "2024-06-01"
    np.testing.assert_array_equal(got_x, x)  # shard 1 written first still reads back in catalogue order
    assert got_x.dtype == np.float32 and manifest["count"] == 10 and manifest["dim"] == 12


def test_flipped_byte_and_truncation_are_refused(tmp_path):
    ids, x = sample()
    manifest = write_vectors(tmp_path / "v", ids, x, "m", num_shards=2)
    path = tmp_path / "v" / manifest["shards"][0]
    blob = bytearray(path.read_bytes())
    blob[100] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="part-00000-of-00002.parquet: sha256"):
        read_vectors(tmp_path / "v")
    path.write_bytes(bytes(blob[:-10]))
    with pytest.raises(ValueError, match="part-00000-of-00002.parquet: size"):
        read_vectors(tmp_path / "v")


def test_writer_validation(tmp_path):
    ids, x = sample(n=5)
    bad = x.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"NaN or inf in 1 of 5 rows \(first rows: \[3\]\)"):
        write_vectors(tmp_path / "a", ids, bad, "m")
    with pytest.raises(ValueError, match="item_ids must be unique"):
        write_vectors(tmp_path / "a", ids[:4] + ids[:1], x, "m")
    with pytest.raises(ValueError, match="model_version must be a non-empty str"):
        write_vectors(tmp_path / "a", ids, x, "")
    write_vectors(tmp_path / "b", ids, x, "m")
    with pytest.raises(FileExistsError, match="immutable"):
        write_vectors(tmp_path / "b", ids, x, "m")


def _hand_written(directory, columns, model_version="m"):
    """A shard written around the writer's checks, plus a valid manifest, to test the reader."""
    directory.mkdir()
    buffer = io.BytesIO()
    pq.write_table(pa.table(columns), buffer)
    (directory / shard_name(0, 1)).write_bytes(buffer.getvalue())
    artifacts.write_manifest(directory, {"kind": "item_vectors", "version": "v", "model_version": model_version,
                                         "count": len(columns["item_id"]), "dim": 2,
                                         "shards": [shard_name(0, 1)]})


def test_reader_refuses_nan_ragged_and_mixed_model_versions(tmp_path):
    vec = pa.list_(pa.float32())
    _hand_written(tmp_path / "nan", {"item_id": ["a", "b"], "vector": pa.array([[1, 0], [np.nan, 1]], vec),
                                     "model_version": ["m", "m"]})
    with pytest.raises(ValueError, match="1 vectors contain NaN/inf, first is item 'b'"):
        read_vectors(tmp_path / "nan")
    _hand_written(tmp_path / "ragged", {"item_id": ["a", "b"], "vector": pa.array([[1, 0], [1, 0, 0]], vec),
                                        "model_version": ["m", "m"]})
    with pytest.raises(ValueError, match=r"different lengths \(2 in row 0, 3 in row 1, item 'b'\)"):
        read_vectors(tmp_path / "ragged")
    _hand_written(tmp_path / "mixed", {"item_id": ["a", "b"], "vector": pa.array([[1, 0], [0, 1]], vec),
                                       "model_version": ["m", "other"]})
    with pytest.raises(ModelVersionMismatch, match=r"shard .*part-00000-of-00001.parquet was made by model version "
                                                   r"'m and other' but the vectors manifest is model version 'm'"):
        read_vectors(tmp_path / "mixed")
    _hand_written(tmp_path / "cols", {"item_id": ["a"], "embedding": pa.array([[1, 0]], vec)})
    with pytest.raises(ValueError, match=r"missing column\(s\) \['model_version', 'vector'\]"):
        read_vectors(tmp_path / "cols")


def test_finalize_refuses_incomplete_or_mixed_shard_sets(tmp_path):
    ids, x = sample(n=6)
    write_shard(tmp_path / "v", 0, 3, ids[:2], x[:2], "m")
    write_shard(tmp_path / "v", 2, 3, ids[4:], x[4:], "m")
    with pytest.raises(ValueError, match="not one complete set"):
        finalize_vectors(tmp_path / "v", "m")
    write_shard(tmp_path / "v", 1, 3, ids[:2], x[:2], "m")  # same items as shard 0
    with pytest.raises(ValueError, match="item ids repeat across shards"):
        finalize_vectors(tmp_path / "v", "m")
    with pytest.raises(ValueError, match="holds no part"):
        (tmp_path / "empty").mkdir()
        finalize_vectors(tmp_path / "empty", "m")


def test_finalize_records_extra_fields_and_refuses_a_count_other_than_expected(tmp_path):
    ids, x = sample(n=10)
    for i, (lo, hi) in enumerate([(0, 4), (4, 10)]):
        write_shard(tmp_path / "v", i, 2, ids[lo:hi], x[lo:hi], "m")
    with pytest.raises(ValueError, match="the shards hold 10 vectors but 11 were expected"):
        finalize_vectors(tmp_path / "v", "m", expected_count=11)
    assert not (tmp_path / "v" / artifacts.MANIFEST).exists()  # nothing half-finished looks finished
    with pytest.raises(ValueError, match=r"extra_manifest may not set \['count', 'kind'\]"):
        finalize_vectors(tmp_path / "v", "m", extra_manifest={"count": 3, "kind": "x", "ok": 1})
    extra = {"source_rows": 12, "dead_letter_count": 2, "dead_letter_reasons": {"missing item id": 2}}
    manifest = finalize_vectors(tmp_path / "v", "m", expected_count=10, extra_manifest=extra)
    _, _, read_back = read_vectors(tmp_path / "v")
    assert read_back == manifest and {k: read_back[k] for k in extra} == extra
    assert (read_back["count"], read_back["kind"]) == (10, "item_vectors")


# ------------------------------------------------------------------ on object storage (S3 / GCS servers)

@pytest.fixture(params=["s3", "gcs"])
def remote_dir(request):
    return request.getfixturevalue("s3_url" if request.param == "s3" else "gcs_url") + "/v1"


def test_vectors_on_object_storage_are_the_same_bytes_and_manifest_as_on_disk(remote_dir, tmp_path):
    ids, x = sample()
    local = write_vectors(tmp_path / "v1", ids, x, "model-3", num_shards=3)
    remote = write_vectors(remote_dir, ids, x, "model-3", num_shards=3)
    assert remote == local  # same fields, same sha256 and size of every shard
    got_ids, got_x, got_manifest = read_vectors(remote_dir)
    assert got_ids.tolist() == ids and got_manifest == local
    np.testing.assert_array_equal(got_x, x)
    from core.storage import open_storage
    assert open_storage(remote_dir).list() == sorted([*local["files"], "manifest.json"])


def test_shards_written_by_workers_then_finalized_on_object_storage(s3_url, tmp_path):
    from core.storage import open_storage
    ids, x = sample(50)
    url = s3_url + "/staging"
    write_shard(url, 1, 2, ids[25:], x[25:], "m")
    with pytest.raises(ValueError, match=r"shards \['part-00001-of-00002.parquet'\] are not one complete set"):
        finalize_vectors(url, "m", "v9")
    write_shard(url, 0, 2, ids[:25], x[:25], "m")
    with pytest.raises(ValueError, match=r"the shards hold 50 vectors but 49 were expected"):
        finalize_vectors(url, "m", "v9", expected_count=49)
    assert not open_storage(url).exists("manifest.json")
    manifest = finalize_vectors(url, "m", "v9", expected_count=50)
    assert manifest["version"] == "v9" and manifest["count"] == 50
    assert read_vectors(url)[1].shape == (50, 12)


def test_a_truncated_or_altered_shard_on_object_storage_is_refused_before_parsing(s3_url):
    from core.storage import open_storage
    ids, x = sample()
    url = s3_url + "/v1"
    write_vectors(url, ids, x, "m", num_shards=2)
    store = open_storage(url)
    name = shard_name(1, 2)
    good = store.read_bytes(name)
    store.write_bytes(name, good[:-10])
    with pytest.raises(ValueError, match=rf"{name}: size {len(good) - 10} bytes, manifest says {len(good)}; the "
                                         r"object is truncated"):
        read_vectors(url)
    altered = bytearray(good)
    altered[len(good) // 2] ^= 0xFF
    store.write_bytes(name, bytes(altered))
    with pytest.raises(ValueError, match=rf"{name}: sha256 .* does not match the manifest"):
        read_vectors(url)
    store.delete(name)
    with pytest.raises(ValueError, match=rf"{name}: listed in the manifest but missing"):
        read_vectors(url)
    with pytest.raises(FileNotFoundError, match=r"manifest.json is missing: .* not a finished artifact"):
        read_vectors(s3_url + "/nothing")
