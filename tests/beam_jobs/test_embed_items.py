"""The embed job end to end (DirectRunner) and its transforms under TestPipeline."""
import dataclasses
import json

import numpy as np
import pyarrow as pa
import pytest

from beam_jobs.beam_env import beam, pipeline_options
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that

from beam_jobs.embed_items import (EMBED_STEPS, BadVectors, DeadLetterShareExceeded, EmbedConfig, EmbedItems,
                                   GroupIntoShards, main, run_embed)
from beam_jobs.handler import ItemBatchHandler, batch_features, open_item_tower
from beam_jobs.item_source import ItemBlock
from beam_jobs.item_rows import DEAD_LETTER, RowValidator
from beam_jobs.testing import cached_hashing_item_tower, synthetic_items
from core.lifecycle import InjectedCrash
from indexing.vectors import read_vectors
from core import artifacts
from core import lifecycle

DIRECT = ["--runner", "DirectRunner"]
TOL = 1e-6


@pytest.fixture(scope="module")
def model_dir():
    return cached_hashing_item_tower(dim=16)


@pytest.fixture(scope="module")
def tower(model_dir):
    return open_item_tower(model_dir / "item_tower")


def embed_directly(tower, rows):
    return tower(batch_features(rows, tower.features))


def make_run(tmp_path, model_dir, n=400, bad_ids=(), **frames):
    """A run dir: model/ (symlink), data/items.parquet (+ extra files); rows in bad_ids get a bad id."""
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    (run / "model").symlink_to(model_dir, target_is_directory=True)
    items = synthetic_items(n, seed=1)
    for i in bad_ids:
        items.loc[i, "item_id"] = f"bad id {i}"
    items.to_parquet(run / "data" / "items.parquet", row_group_size=150)
    for name, frame in frames.items():
        frame.to_parquet(run / "data" / f"{name}.parquet")
    return run, items


def test_embed_writes_the_contract_artifact_in_source_order_with_the_towers_vectors(tmp_path, model_dir, tower):
    extra = synthetic_items(3, seed=2, id_prefix="z")
    extra["tags"] = ["a|b", "c", "d"]  # strings where lists belong: malformed in every row of this file
    run, items = make_run(tmp_path, model_dir, bad_ids=(5,), zz_malformed=extra)
    cfg = EmbedConfig(run=str(run), items=str(run / "data"), num_shards=3, batch_size=64, rows_per_read=100,
                      max_dead_letter_share=0.05)
    result = run_embed(cfg, DIRECT)

    ids, vectors, manifest = read_vectors(result.directory)
    good = items.drop(index=5)
    assert ids.tolist() == good["item_id"].tolist()  # catalogue order = source order minus bad rows
    direct = embed_directly(tower, good.to_dict("records"))
    np.testing.assert_allclose(vectors, direct, atol=TOL, rtol=0)
    assert (manifest["kind"], manifest["count"], manifest["dim"], manifest["model_version"]) == \
           ("item_vectors", 399, 16, "hash-v1")
    assert manifest["shards"] == [f"part-0000{i}-of-00003.parquet" for i in range(3)]
    assert lifecycle.current_version(run / "vectors") == result.version
    assert (result.source_rows, result.dead_letter_count) == (403, 4)
    dead = [json.loads(line) for line in result.dead_letter_path.read_text().splitlines()]
    assert [(d["row"], d["reason"].split(":")[0]) for d in dead] == \
           [(5, "unknown item id format"), (400, "malformed value"), (401, "malformed value"),
            (402, "malformed value")]  # merged from the workers' files in row order
    assert {k: manifest[k] for k in ("source_rows", "dead_letter_count", "dead_letter_reasons", "dead_letter_file",
                                     "batch_size")} == \
           {"source_rows": 403, "dead_letter_count": 4, "batch_size": 64,
            "dead_letter_reasons": {"malformed value": 3, "unknown item id format": 1},
            "dead_letter_file": f"dead_letter/{result.version}.jsonl"}
    assert result.dead_letter_path.parent == run / "vectors" / "dead_letter"

    # Re-running on the same inputs and model gives bit-identical vectors (the reader fixes the batches),
    # here through the module's CLI entry point.
    assert main(["--run", str(run), "--items", str(run / "data"), "--num-shards", "3", "--batch-size", "64",
                 "--rows-per-read", "100", "--max-dead-letter-share", "0.05", "--version", "again",
                 "--runner", "DirectRunner"]) == 0
    ids2, vectors2, _ = read_vectors(run / "vectors" / "again")
    assert ids2.tolist() == ids.tolist() and np.array_equal(vectors2, vectors)
    assert lifecycle.current_version(run / "vectors") == "again"


def test_too_many_bad_rows_fail_the_job_and_publish_nothing(tmp_path, model_dir):
    run, _ = make_run(tmp_path, model_dir, n=100, bad_ids=range(0, 30, 3))
    first = run_embed(EmbedConfig(run=str(run), max_dead_letter_share=0.2), DIRECT)
    with pytest.raises(DeadLetterShareExceeded) as info:
        run_embed(EmbedConfig(run=str(run), max_dead_letter_share=0.05, version="v2"), DIRECT)
    message = str(info.value)
    assert "10 of 100 item rows (10.00%) failed validation, above max_dead_letter_share=0.05" in message
    assert "unknown item id format (10)" in message and "nothing was published" in message
    dead_file = run / "vectors" / "dead_letter" / "v2.jsonl"
    assert str(dead_file) in message and len(dead_file.read_text().splitlines()) == 10
    assert lifecycle.list_versions(run / "vectors") == [first.version]
    assert lifecycle.current_version(run / "vectors") == first.version
    assert not (run / "vectors" / ".staging").exists() and not (run / "vectors" / "v2").exists()


def test_a_share_exactly_at_the_limit_passes_and_one_more_row_fails(tmp_path, model_dir):
    run, items = make_run(tmp_path, model_dir, n=100, bad_ids=range(0, 50, 10))  # 5 of 100 = 0.05 exactly
    result = run_embed(EmbedConfig(run=str(run), max_dead_letter_share=0.05, version="v1"), DIRECT)
    assert (result.count, result.source_rows, result.dead_letter_count) == (95, 100, 5)
    manifest = artifacts.read_manifest(result.directory)
    assert (manifest["count"], manifest["source_rows"], manifest["dead_letter_count"]) == (95, 100, 5)
    ids, _, _ = read_vectors(result.directory)
    assert ids.tolist() == items.drop(index=range(0, 50, 10))["item_id"].tolist()
    assert [json.loads(line)["row"] for line in result.dead_letter_path.read_text().splitlines()] == \
        [0, 10, 20, 30, 40]
    run2, _ = make_run(tmp_path / "six", model_dir, n=100, bad_ids=range(0, 60, 10))  # 6 of 100 > 0.05
    with pytest.raises(DeadLetterShareExceeded, match=r"6 of 100 item rows \(6.00%\) failed validation"):
        run_embed(EmbedConfig(run=str(run2), max_dead_letter_share=0.05), DIRECT)


def test_every_row_dead_lettered_fails_even_when_the_share_allows_it(tmp_path, model_dir):
    run, _ = make_run(tmp_path, model_dir, n=30, bad_ids=range(30))
    with pytest.raises(ValueError, match=r"no item could be embedded: all 30 rows of .* were dead-lettered "
                                         r"\(see .*dead_letter.*\.jsonl\); nothing was published"):
        run_embed(EmbedConfig(run=str(run), max_dead_letter_share=1.0, version="v1"), DIRECT)
    assert lifecycle.list_versions(run / "vectors") == [] and lifecycle.current_version(run / "vectors") is None
    dead = (run / "vectors" / "dead_letter" / "v1.jsonl").read_text().splitlines()
    assert [json.loads(line)["row"] for line in dead] == list(range(30))  # each row once, kept for inspection
    assert not [p for p in (run / "vectors").iterdir() if p.name.startswith(".staging")]


def test_a_retried_bundle_s_dead_letters_are_counted_once(tmp_path, model_dir, monkeypatch):
    """A bundle retried after its dead-letter file was written leaves a second file with the same records
    (here: every bundle writes its file twice). The merged file, the count and the manifest hold each row once."""
    import beam_jobs.embed_items as embed_module

    original = embed_module.WriteDeadLetters.finish_bundle

    def write_twice(self):
        lines = list(self._lines)
        original(self)
        self._lines = lines
        original(self)

    monkeypatch.setattr(embed_module.WriteDeadLetters, "finish_bundle", write_twice)
    run, _ = make_run(tmp_path, model_dir, n=100, bad_ids=(3, 50, 97))
    result = run_embed(EmbedConfig(run=str(run), max_dead_letter_share=0.05, version="v1"), DIRECT)
    assert (result.count, result.dead_letter_count) == (97, 3)
    manifest = artifacts.read_manifest(result.directory)
    assert (manifest["dead_letter_count"], manifest["dead_letter_reasons"]) == (3, {"unknown item id format": 3})
    assert [json.loads(line)["row"] for line in result.dead_letter_path.read_text().splitlines()] == [3, 50, 97]


def test_collect_dead_letters_merges_deduplicates_sorts_and_clears_staging(tmp_path):
    from beam_jobs.embed_items import _collect_dead_letters

    staging, root = tmp_path / "staging", tmp_path / "root"
    staging.mkdir()

    def rec(row, reason):
        return json.dumps({"row": row, "item_id": f"i{row}", "reason": reason, "source": "s", "values": ""})

    first = [rec(7, "malformed value: x"), rec(2, "unknown item id format: y")]
    (staging / f"{DEAD_LETTER}-a.jsonl").write_text("\n".join(first) + "\n")
    (staging / f"{DEAD_LETTER}-b.jsonl").write_text("\n".join(first) + "\n")  # the retry's copy
    (staging / f"{DEAD_LETTER}-c.jsonl").write_text(rec(4, "malformed value: z") + "\n\n")
    (staging / "part-00000-of-00001.parquet").write_bytes(b"shard")  # not a dead-letter file: left alone
    from core.storage import open_storage

    key, count, reasons = _collect_dead_letters(open_storage(staging), open_storage(root), "v7")
    assert key == "dead_letter/v7.jsonl" and count == 3
    path = root / key
    assert reasons == {"malformed value": 2, "unknown item id format": 1}
    assert [json.loads(line)["row"] for line in path.read_text().splitlines()] == [2, 4, 7]
    assert sorted(p.name for p in staging.iterdir()) == ["part-00000-of-00001.parquet"]
    assert _collect_dead_letters(open_storage(staging), open_storage(root), "v8") == (None, 0, {})  # no file
    assert not (root / "dead_letter" / "v8.jsonl").exists()


def test_pruning_removes_the_dead_letters_of_pruned_versions_only(tmp_path, model_dir):
    run, _ = make_run(tmp_path, model_dir, n=40, bad_ids=(1,))
    for v in ("v1", "v2", "v3", "v4"):
        run_embed(EmbedConfig(run=str(run), max_dead_letter_share=0.05, version=v, keep_versions=2), DIRECT)
    vectors = run / "vectors"
    assert lifecycle.list_versions(vectors) == ["v3", "v4"] and lifecycle.current_version(vectors) == "v4"
    assert sorted(p.name for p in (vectors / "dead_letter").iterdir()) == ["v3.jsonl", "v4.jsonl"]
    # a failed run's dead letters (no version published) newer than every kept version stay for inspection
    (run / "data" / "items.parquet").unlink()
    make_run(tmp_path / "worse", model_dir, n=40, bad_ids=range(10))[0].joinpath("data", "items.parquet").rename(
        run / "data" / "items.parquet")
    with pytest.raises(DeadLetterShareExceeded):
        run_embed(EmbedConfig(run=str(run), max_dead_letter_share=0.05, version="v5", keep_versions=2), DIRECT)
    run_embed(EmbedConfig(run=str(run), max_dead_letter_share=0.5, version="v6", keep_versions=2), DIRECT)
    assert lifecycle.list_versions(vectors) == ["v4", "v6"]
    assert sorted(p.name for p in (vectors / "dead_letter").iterdir()) == ["v4.jsonl", "v5.jsonl", "v6.jsonl"]


def test_a_tower_that_emits_nan_fails_and_publishes_nothing(tmp_path):
    nan_model = cached_hashing_item_tower(dim=16, nan_item_ids=("item7",))
    run, _ = make_run(tmp_path, nan_model, n=50)
    with pytest.raises(BadVectors, match=r"NaN/inf or all-zero vectors for 1 item\(s\)") as info:
        run_embed(EmbedConfig(run=str(run), max_dead_letter_share=1.0), DIRECT)
    assert "nothing was published" in str(info.value)
    assert lifecycle.list_versions(run / "vectors") == [] and lifecycle.current_version(run / "vectors") is None
    dead = json.loads((run / "vectors" / "dead_letter").glob("*.jsonl").__next__().read_text())
    assert dead["item_id"] == "item7" and dead["reason"].startswith("bad vector")


def test_a_crash_after_any_step_leaves_current_and_the_next_run_cleans_up(tmp_path, model_dir):
    run, _ = make_run(tmp_path, model_dir, n=60)
    vectors = run / "vectors"
    run_embed(EmbedConfig(run=str(run), version="v0"), DIRECT)
    for step in EMBED_STEPS:
        with pytest.raises(InjectedCrash, match=f"after step '{step}'"):
            run_embed(EmbedConfig(run=str(run), version=f"crash-{step}"), DIRECT, crash_at=step)
        assert lifecycle.current_version(vectors) == "v0"
        # Before the manifest a crash leaves an unfinished version (no manifest, a .staging marker; the next
        # job removes it), which no reader takes for a version; after it the version is finished, never current.
        # (the next job leaves an "abandoned" tombstone in its place, so the name is never handed out again).
        markers = {p.name: json.loads(p.read_text()) for p in (vectors / ".staging").iterdir()} \
            if (vectors / ".staging").exists() else {}
        live = sorted(name for name, marker in markers.items() if marker.get("state") != "abandoned")
        assert live == ([] if step == "manifest" else [f"crash-{step}"])
        if step == "manifest":  # this job took the lease after the "pipeline" crash and removed its files
            assert markers["crash-pipeline"]["state"] == "abandoned" and not (vectors / "crash-pipeline").exists()
        assert (vectors / f"crash-{step}" / "manifest.json").exists() == (step == "manifest")
    assert lifecycle.list_versions(vectors) == ["crash-manifest", "v0"]
    run_embed(EmbedConfig(run=str(run), version="v1"), DIRECT)
    assert lifecycle.current_version(vectors) == "v1"
    assert not (vectors / "crash-pipeline").exists()  # the killed job's unfinished version was removed
    assert [p.name for p in (vectors / ".staging").iterdir()] == ["crash-pipeline"]  # its tombstone: name stays taken


def test_embed_transforms_under_test_pipeline(model_dir, tower):
    items = synthetic_items(40, seed=4)
    rows = items.to_dict("records")
    table = pa.Table.from_pandas(items, preserve_index=False)
    blocks = [ItemBlock("src", lo, table.slice(lo, 16)) for lo in range(0, 40, 16)]
    blocks.append(ItemBlock("src", 40, pa.Table.from_pylist([{**rows[0], "item_id": ""}], schema=table.schema)))
    handler = ItemBatchHandler(model_dir / "item_tower", "hash-v1")
    validator = RowValidator(tower.features)
    direct = embed_directly(tower, rows)

    def check_shards(shards):
        assert sorted(s for s, _ in shards) == [0, 1, 2]
        for shard, piece in shards:
            assert piece.positions.tolist() == [p for p in range(41) if p * 3 // 41 == shard and p < 40]
            assert piece.item_ids.to_pylist() == [rows[p]["item_id"] for p in piece.positions]
            np.testing.assert_allclose(piece.vectors, direct[piece.positions], atol=TOL, rtol=0)

    with BeamTestPipeline(runner="DirectRunner", options=pipeline_options([])) as p:
        out = p | beam.Create(blocks) | EmbedItems(handler, validator)
        assert_that(out["embedded"] | GroupIntoShards(num_rows=41, num_shards=3), check_shards,
                    label="shards")
        assert_that(out[DEAD_LETTER] | beam.Map(lambda r: r["row"]), lambda got: list(got) == [40] or
                    pytest.fail(f"dead letters {list(got)}"), label="dead")


def test_configuration_errors_are_clear(tmp_path, model_dir):
    with pytest.raises(ValueError, match=r"max_dead_letter_share must be in \[0, 1\]"):
        EmbedConfig(run="r", max_dead_letter_share=1.5)
    with pytest.raises(ValueError, match="needs run=<run directory>"):
        run_embed(EmbedConfig(), DIRECT)
    run, items = make_run(tmp_path, model_dir, n=10)
    items.drop(columns=["genre"]).to_parquet(run / "data" / "items.parquet")
    with pytest.raises(ValueError, match=r"no file has the column\(s\) \['genre'\] that the item tower takes"):
        run_embed(EmbedConfig(run=str(run)), DIRECT)
    with pytest.raises(ValueError, match="not a step of this job"):
        run_embed(EmbedConfig(run=str(run)), DIRECT, crash_at="nope")
    assert dataclasses.replace(EmbedConfig(run="r")).resolved().items == "r/data/items.parquet"


def test_vector_pieces_concatenate_in_position_order_and_round_trip_through_their_coder():
    from beam_jobs.embed_items import VectorPiece, VectorPieceCoder

    def piece(positions):
        positions = np.array(positions, dtype=np.int64)
        return VectorPiece(positions, pa.array([f"i{p}" for p in positions]),
                           np.repeat(positions[:, None], 3, axis=1).astype(np.float32))

    merged = VectorPiece.concat_sorted([piece([7, 8]), piece([2, 3]), piece([5])])
    assert merged.positions.tolist() == [2, 3, 5, 7, 8]
    assert merged.item_ids.to_pylist() == ["i2", "i3", "i5", "i7", "i8"]
    assert merged.vectors[:, 0].tolist() == [2, 3, 5, 7, 8]
    coder = beam.coders.registry.get_coder(VectorPiece)
    assert isinstance(coder, VectorPieceCoder)
    back = coder.decode(coder.encode(merged))
    assert back.item_ids.equals(merged.item_ids) and np.array_equal(back.vectors, merged.vectors)
    assert coder.estimate_size(merged) == 5 * 8 + merged.item_ids.nbytes + 5 * 3 * 4


def test_pruning_keeps_the_newest_versions_and_dead_letters_in_version_order_not_text_order(tmp_path):
    # issue 19: as text "v10" < "v9", so the old pruning kept v9 and deleted v10's dead letters
    from beam_jobs.embed_items import prune_versions

    root = lifecycle.VersionedRoot(tmp_path)
    for v in ("v8", "v9", "v10", "v11"):
        stage = root.stage(v)
        stage.storage.write_bytes("x", v.encode())
        stage.write_manifest({})
        root.finish(stage)
        (tmp_path / "dead_letter").mkdir(exist_ok=True)
        (tmp_path / "dead_letter" / f"{v}.jsonl").write_text("{}\n")
    root.publish("v11")
    assert prune_versions(root, keep=2) == ["v8", "v9"]
    assert root.versions() == ["v10", "v11"]
    assert sorted(p.name for p in (tmp_path / "dead_letter").iterdir()) == ["v10.jsonl", "v11.jsonl"]
