"""The nightly rebuild end to end (DirectRunner): sharded == single-process, crash safety, validation."""
import json

import numpy as np
import pytest

from beam_jobs.embed_items import BadVectors, EmbedConfig, run_embed
from beam_jobs.rebuild_index import (REBUILD_STEPS, IndexValidationError, RebuildConfig, main, result_summary,
                                     rollback, run_rebuild, validate_index)
from beam_jobs.testing import cached_hashing_item_tower, synthetic_items
from core.lifecycle import InjectedCrash
from core.rundir import RunDir
from indexing import faiss_index as fi
from indexing.item_index import ItemIndex
from indexing.spec import IndexSpec
from indexing.store import load_current
from indexing.vectors import read_vectors
from core import artifacts
from core import lifecycle

DIRECT = ["--runner", "DirectRunner"]
IVF = IndexSpec(factory="IVF16,Flat", nprobe=8, gpu="never", recall_k=20, recall_queries=200)


def make_run(root, model_dir, n=1200):
    run = root / "run"
    (run / "data").mkdir(parents=True)
    (run / "model").symlink_to(model_dir, target_is_directory=True)
    synthetic_items(n, seed=5).to_parquet(run / "data" / "items.parquet", row_group_size=500)
    return run


@pytest.fixture(scope="module")
def model_dir():
    return cached_hashing_item_tower(dim=16)


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory, model_dir):
    """A run whose vectors are embedded (4 shards) and current; tests index them into their own roots."""
    run = make_run(tmp_path_factory.mktemp("embedded"), model_dir)
    run_embed(EmbedConfig(run=str(run), num_shards=4), DIRECT)
    return run


def current(root):
    return lifecycle.current_version(root)


def test_rebuild_publishes_the_same_index_as_a_single_process_build(tmp_path, model_dir):
    run = make_run(tmp_path, model_dir)
    cfg = RebuildConfig(run=str(run), index=IVF, embed=EmbedConfig(num_shards=3), version="v1")
    result = run_rebuild(cfg, DIRECT)

    assert current(run / "index") == current(run / "vectors") == "v1"
    assert (result.count, result.dim, result.factory, result.num_shards) == (1200, 16, "IVF16,Flat", 3)
    assert result.recall["recall"] >= 0.95 and result.recall["k"] == 20
    manifest = json.loads((run / "index" / "v1" / "manifest.json").read_text())
    assert (manifest["vectors_version"], manifest["model_version"], manifest["count"]) == ("v1", "hash-v1", 1200)
    assert manifest["recall"]["recall"] == result.recall["recall"] and manifest["recall_floor"] == 0.95
    vectors_manifest = artifacts.read_manifest(run / "vectors" / "v1")  # the embed step's row accounting
    assert (vectors_manifest["source_rows"], vectors_manifest["dead_letter_count"], vectors_manifest["count"],
            vectors_manifest["dead_letter_file"]) == (1200, 0, 1200, None)

    ids, vectors, _ = read_vectors(run / "vectors" / "v1")
    single = ItemIndex.build(vectors, ids, IVF, "hash-v1")
    served = load_current(run / "index")
    assert served.item_ids.tolist() == ids.tolist()
    assert fi.serialize(served.faiss_index) == fi.serialize(single.faiss_index)
    queries = vectors[::97] + 0.01
    for got, expected in zip(served.search(queries, 10), single.search(queries, 10)):
        np.testing.assert_array_equal(got, expected)

    # Same vectors, same seeds: a second rebuild is byte-identical; rollback flips index and vectors back.
    again = run_rebuild(RebuildConfig(run=str(run), index=IVF, vectors_version="current", version="v2"), DIRECT)
    assert (again.index_dir / "index.faiss").read_bytes() == (result.index_dir / "index.faiss").read_bytes()
    assert current(run / "index") == "v2"
    assert rollback(run / "index", vectors_root=run / "vectors") == "v1"
    assert current(run / "index") == "v1" and current(run / "vectors") == "v1"


def test_rebuild_with_dead_letters_counts_the_catalogue_without_them(tmp_path, model_dir):
    """Embedded in the same run with bad rows: the catalogue the index is checked against is the source rows
    minus the dead letters, and both manifests record that accounting."""
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    (run / "model").symlink_to(model_dir, target_is_directory=True)
    items = synthetic_items(300, seed=6)
    bad = [7, 150, 299]
    for i in bad:
        items.loc[i, "item_id"] = f"bad id {i}"
    items.to_parquet(run / "data" / "items.parquet", row_group_size=100)
    flat = IndexSpec(factory="Flat", gpu="never", recall_k=10, recall_queries=50)
    result = run_rebuild(RebuildConfig(run=str(run), index=flat, embed=EmbedConfig(num_shards=2,
                                       max_dead_letter_share=0.02), version="v1"), DIRECT)
    assert (result.count, result.embed.source_rows, result.embed.dead_letter_count) == (297, 300, 3)
    manifest = json.loads((run / "index" / "v1" / "manifest.json").read_text())
    assert (manifest["count"], manifest["source_rows"], manifest["dead_letter_count"]) == (297, 300, 3)
    assert load_current(run / "index").item_ids.tolist() == items.drop(index=bad)["item_id"].tolist()
    assert current(run / "index") == current(run / "vectors") == "v1"
    assert json.loads(json.dumps(result_summary(result)))["dead_letter_count"] == 3


def test_a_crash_after_any_step_leaves_current_serving_and_the_next_run_finishes(tmp_path, embedded_run):
    index_root = tmp_path / "index"
    cfg = RebuildConfig(run=str(embedded_run), index_root=str(index_root), index=IVF, vectors_version="current")
    run_rebuild(RebuildConfig(**{**cfg.__dict__, "version": "v0"}), DIRECT)
    before = (index_root / "v0" / "index.faiss").read_bytes()
    vectors_before = current(embedded_run / "vectors")
    for step in REBUILD_STEPS:
        # The embed step really embeds (a new vectors version that must not become current); the
        # others reuse the current vectors.
        step_cfg = RebuildConfig(**{**cfg.__dict__, "version": f"crash-{step}",
                                    "vectors_version": "" if step == "embed" else "current"})
        with pytest.raises(InjectedCrash, match=f"after step '{step}'"):
            run_rebuild(step_cfg, DIRECT, crash_at=step)
        assert current(index_root) == "v0" and current(embedded_run / "vectors") == vectors_before
        # up to "stage" nothing is finished; from then on the version is whole but never current
        finished_ = REBUILD_STEPS[REBUILD_STEPS.index("stage"):REBUILD_STEPS.index(step) + 1]
        assert sorted(lifecycle.list_versions(index_root)) == sorted(["v0"] + [f"crash-{s}" for s in finished_])
        assert load_current(index_root).ntotal == 1200
    assert (index_root / "v0" / "index.faiss").read_bytes() == before
    run_rebuild(RebuildConfig(**{**cfg.__dict__, "version": "v1", "keep_versions": 2}), DIRECT)
    assert current(index_root) == "v1" and lifecycle.list_versions(index_root) == ["v0", "v1"][-2:]
    assert not (index_root / ".scratch").exists()
    assert not (index_root / "crash-train").exists()  # the killed jobs' unfinished versions were removed


def test_a_kill_between_the_vectors_flip_and_the_index_flip_keeps_readers_in_step(tmp_path, model_dir):
    # issue 12: the vectors and index pointers of one rebuild move together. The rebuild flips vectors/current
    # first; readers take the vectors through the published index, so a kill in between changes nothing they see.
    run = make_run(tmp_path, model_dir, n=600)
    run_rebuild(RebuildConfig(run=str(run), index=IVF, version="v1"), DIRECT)
    with pytest.raises(InjectedCrash, match="after step 'publish-vectors'"):
        run_rebuild(RebuildConfig(run=str(run), index=IVF, version="v2"), DIRECT, crash_at="publish-vectors")
    assert current(run / "vectors") == "v2" and current(run / "index") == "v1"
    assert RunDir(run).published_vectors() == run / "vectors" / "v1"  # the vectors index v1 was built from
    assert lifecycle.list_versions(run / "index") == ["v1", "v2"]  # v2 finished but not current
    run_rebuild(RebuildConfig(run=str(run), index=IVF, version="v3", keep_versions=1), DIRECT)
    assert current(run / "index") == current(run / "vectors") == "v3"
    assert RunDir(run).published_vectors() == run / "vectors" / "v3"
    assert lifecycle.list_versions(run / "index") == ["v3"] and lifecycle.list_versions(run / "vectors") == ["v3"]


def test_vectors_a_kept_index_names_are_never_pruned(tmp_path):
    from beam_jobs.rebuild_index import vectors_in_use
    from beam_jobs.embed_items import prune_versions

    vectors, index = lifecycle.VersionedRoot(tmp_path / "vectors"), lifecycle.VersionedRoot(tmp_path / "index")
    for v, built_from in (("i1", "a1"), ("i2", "a3")):
        stage = index.stage(v)
        stage.storage.write_bytes("x", b"x")
        stage.write_manifest({"vectors_version": built_from})
        index.finish(stage)
    for v in ("a1", "a2", "a3", "a4"):
        stage = vectors.stage(v)
        stage.storage.write_bytes("x", b"x")
        stage.write_manifest({})
        vectors.finish(stage)
    vectors.publish("a4")
    assert prune_versions(vectors, 1, protect=vectors_in_use(index)) == ["a2"]


def test_a_shard_lost_between_add_and_merge_is_refused(tmp_path, embedded_run, monkeypatch):
    """Row ids 0..k-1 of the remaining shards are still a permutation: only the catalogue count catches it."""
    import beam_jobs.rebuild_index as job

    add = job.add_shards_with_beam
    monkeypatch.setattr(job, "add_shards_with_beam", lambda *a, **k: add(*a, **k)[:-1])
    cfg = RebuildConfig(run=str(embedded_run), index_root=str(tmp_path / "index"), index=IVF,
                        vectors_version="current")
    with pytest.raises(ValueError, match="shards hold 900 vectors but the catalogue has 1200 items"):
        run_rebuild(cfg, DIRECT)
    assert current(tmp_path / "index") is None and lifecycle.list_versions(tmp_path / "index") == []


def test_an_item_tower_that_emits_nan_fails_validation_and_publishes_nothing(tmp_path):
    run = make_run(tmp_path, cached_hashing_item_tower(dim=16, nan_item_ids=("item7",)), n=300)
    with pytest.raises(BadVectors, match=r"NaN/inf or all-zero vectors for 1 item\(s\).*nothing was published"):
        run_rebuild(RebuildConfig(run=str(run), index=IVF), DIRECT)
    assert current(run / "index") is None and lifecycle.list_versions(run / "index") == []
    assert lifecycle.list_versions(run / "vectors") == []


def test_recall_below_the_floor_exits_non_zero_with_a_clear_message(tmp_path, embedded_run, capsys):
    code = main(["--run", str(embedded_run), "--index-root", str(tmp_path / "index"), "--vectors-version", "current",
                 "--recall-floor", "0.999", "--set", "index.factory=IVF16,Flat", "--set", "index.nprobe=1",
                 "--set", "index.gpu=never", "--runner", "DirectRunner"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1  # refused: one line, exit 2 (core.cli)
    assert "index validation failed, nothing was published" in err
    assert "below recall_floor=0.999 (factory IVF16,Flat, search params {'nprobe': 1})" in err
    assert current(tmp_path / "index") is None and lifecycle.list_versions(tmp_path / "index") == []


@pytest.fixture(scope="module")
def small_index():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ids = np.array([f"i{i}" for i in range(300)], dtype=object)
    spec = IndexSpec(factory="Flat", gpu="never", recall_queries=50, recall_k=10)
    manifest = {"count": 300, "dim": 8, "model_version": "m1"}
    return ItemIndex.build(x, ids, spec, "m1"), x, ids, manifest


def test_validate_index_passes_a_good_index_and_lists_every_failed_check(small_index):
    index, x, ids, manifest = small_index
    assert validate_index(index, x, ids, manifest, "m1", 0.95, catalogue_rows=300)["recall"] == 1.0
    bad = x.copy()
    bad[3] = np.nan
    bad[4] = 0
    bad[5] *= 2
    with pytest.raises(IndexValidationError) as info:
        validate_index(index, bad, ids, {**manifest, "count": 299}, "m2", 0.95, catalogue_rows=301)
    message = str(info.value)
    assert message.startswith("index validation failed, nothing was published")
    for part in ("item count: index holds 300, vectors artifact 299, item ids 300, catalogue 301",
                 "1 of 300 vectors contain NaN/inf (e.g. items ['i3'])",
                 "1 of 300 vectors are all zeros (e.g. items ['i4'])",
                 "1 of 300 vectors are not L2-normalised", "model version mismatch: the vectors artifact was made by "
                 "model version 'm1' but the run's model is model version 'm2'"):
        assert part in message
    with pytest.raises(IndexValidationError, match="dimension: index 8, vectors artifact 9"):
        validate_index(index, x, ids, {**manifest, "dim": 9}, None, 0.95)


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match=r"recall_floor must be in \[0, 1\]"):
        RebuildConfig(run="r", recall_floor=2.0)
    with pytest.raises(ValueError, match="needs run=<run directory>"):
        RebuildConfig()
    with pytest.raises(ValueError, match="not a step of this job"):
        run_rebuild(RebuildConfig(run="r"), DIRECT, crash_at="upload")
    assert RebuildConfig(run="r").resolved().index_root == "r/index"


def test_the_add_step_reads_shards_and_writes_blobs_on_object_storage(s3_url):
    import numpy as np

    from beam_jobs.rebuild_index import AddShard, ShardTask, read_shard_vectors, shard_blob_name
    from core.storage import open_storage
    from indexing.sharded import add_shard, train_empty
    from indexing.spec import IndexSpec
    from indexing.vectors import write_vectors

    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    manifest = write_vectors(f"{s3_url}/vectors/v1", [f"i{i}" for i in range(300)], x, "m", num_shards=2)
    shard = f"{s3_url}/vectors/v1/{manifest['shards'][1]}"
    np.testing.assert_array_equal(read_shard_vectors(shard, 8, 150), x[150:])
    with pytest.raises(ValueError, match=r"150 vectors / 1200 floats, expected 151 x 8"):
        read_shard_vectors(shard, 8, 151)
    trained = train_empty(x, IndexSpec(factory="IVF4,Flat", train_size=300), n_items=300)
    assert list(AddShard(f"{s3_url}/work", 8).process(ShardTask(1, shard, 150, 150), trained)) == [1]
    blob = open_storage(f"{s3_url}/work").read_bytes(shard_blob_name(1))
    assert blob == add_shard(trained, x[150:], np.arange(150, 300, dtype=np.int64))
