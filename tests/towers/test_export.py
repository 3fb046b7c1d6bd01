import os
import shutil
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from tests.towers.conftest import _RUNS, trained_planted
from towers.export import _swap_into_place, export_towers, load_tower
from towers.inputs import eval_queries, item_features_batch
from towers.vocab import load_vocabularies
from core.artifacts import verify_manifest


@lru_cache(maxsize=None)
def exported():
    ds, split, result = trained_planted()
    model_dir = Path(_RUNS.name) / "export" / "model"
    version = export_towers(result.query_tower, result.item_tower, result.vocab, model_dir,
                            extra_manifest={"train_config": {"epochs": result.config.epochs}})
    return ds, split, result, model_dir, version


@lru_cache(maxsize=None)
def loaded():
    model_dir = exported()[3]
    return load_tower(model_dir / "item_tower"), load_tower(model_dir / "query_tower")


def test_saved_towers_match_in_memory_towers():
    ds, split, result, model_dir, version = exported()
    item_tower, query_tower = loaded()
    items = item_features_batch(ds.items, ds.item_features)
    got = item_tower(items, batch_size=50)  # several serving calls, stitched back in order
    assert got.dtype == np.float32 and got.shape == (len(ds.items), 32)
    np.testing.assert_allclose(got, result.item_tower(items).numpy(), atol=1e-5)
    q = eval_queries(ds, split, result.config.tower.max_history).features
    np.testing.assert_allclose(query_tower(q), result.query_tower(q).numpy(), atol=1e-5)
    # a history longer than max_history is cut to the most recent items inside the SavedModel
    long = dict(q, history=np.concatenate([np.full((len(q["history"]), 5), "i0", dtype=object), q["history"]], 1),
                history_timestamps=np.concatenate([np.ones((len(q["history"]), 5), np.int64), q["history_timestamps"]], 1))
    assert (q["history"] != "").all()  # every fixture user has a full max_history history
    np.testing.assert_allclose(query_tower(long), query_tower(q), atol=1e-5)


def test_one_call_path_equals_the_chunked_path_and_the_in_memory_towers():
    """B <= batch_size goes to the signature in one call (no slicing); the result is the same."""
    ds, split, result, model_dir, version = exported()
    item_tower, query_tower = loaded()
    items = item_features_batch(ds.items, ds.item_features)
    q = eval_queries(ds, split, result.config.tower.max_history).features
    for tower, features, in_memory in ((item_tower, items, result.item_tower), (query_tower, q, result.query_tower)):
        n = len(features[tower.feature_names[0]])
        whole = tower(features)  # one call
        chunked = tower(features, batch_size=n // 3)  # 4 calls, the last one short
        np.testing.assert_allclose(whole, chunked, atol=1e-6)
        np.testing.assert_allclose(whole, in_memory(features).numpy(), atol=1e-6)
        assert whole.dtype == np.float32 and whole.shape == (n, tower.output_dim)
        one = {k: v[:1] for k, v in features.items()}
        np.testing.assert_allclose(tower(one), whole[:1], atol=1e-6)
        np.testing.assert_allclose(tower(features, batch_size=n), whole, atol=1e-6)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match=f"batch_size must be a positive integer, got {bad!r}"):
            item_tower(items, batch_size=bad)


def test_both_towers_carry_one_model_version_and_the_manifest_checks_out():
    ds, split, result, model_dir, version = exported()
    item_tower, query_tower = loaded()
    assert item_tower.model_version == query_tower.model_version == version
    assert (model_dir / "model_version").read_text().strip() == version
    assert item_tower.feature_names == ("item_id", "genres", "kind", "year", "title")
    assert query_tower.feature_names == ("user_id", "gender", "age", "history", "history_timestamps", "timestamp")
    manifest = verify_manifest(model_dir)
    assert manifest["model_version"] == version and manifest["output_dim"] == 32
    assert manifest["train_config"] == {"epochs": result.config.epochs}
    assert load_vocabularies(model_dir / "vocab") == result.vocab
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(model_dir).st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700


def test_unknown_ids_and_categories_give_finite_unit_vectors():
    ds, split, result, model_dir, version = exported()
    item_tower, query_tower = loaded()
    items = item_tower({"item_id": np.array(["never-seen", "i0"], object),
                        "genres": np.array([["brand-new-genre", "g1", ""], ["", "", ""]], object),
                        "kind": np.array(["podcast", ""], object), "year": np.array([np.nan, 3000.0], np.float32),
                        "title": np.array(["Zzz qqq", ""], object)})
    queries = query_tower({"user_id": np.array(["new-user", "u1"], object), "gender": np.array(["x", ""], object),
                           "age": np.array([np.nan, -5.0], np.float32),
                           "history": np.array([["never-seen", ""], ["", ""]], object),
                           "history_timestamps": np.zeros((2, 2), np.int64), "timestamp": np.zeros(2, np.int64)})
    for out in (items, queries):
        assert np.isfinite(out).all() and np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert item_tower({k: v[:0] for k, v in item_features_batch(ds.items, ds.item_features).items()}).shape == (0, 32)


def test_bad_inputs_are_reported():
    ds, split, result, model_dir, version = exported()
    item_tower = loaded()[0]
    feats = item_features_batch(ds.items.iloc[:3], ds.item_features)
    with pytest.raises(ValueError, match=r"missing input\(s\) \['title'\], unknown input\(s\) \['titel'\]"):
        item_tower({**{k: v for k, v in feats.items() if k != "title"}, "titel": feats["title"]})
    with pytest.raises(ValueError, match=r"input 'genres' must have rank 2"):
        item_tower({**feats, "genres": feats["genres"][:, 0]})
    with pytest.raises(ValueError, match=r"input 'kind' has 2 rows, 'item_id' has 3"):
        item_tower({**feats, "kind": feats["kind"][:2]})
    with pytest.raises(FileNotFoundError, match="is not an exported tower"):
        load_tower(model_dir / "vocab")


def test_existing_export_is_never_overwritten_silently_and_tampering_is_caught(tmp_path):
    ds, split, result, model_dir, version = exported()
    before = sorted(p.name for p in model_dir.iterdir())
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        export_towers(result.query_tower, result.item_tower, result.vocab, model_dir)
    assert sorted(p.name for p in model_dir.iterdir()) == before
    assert not [p for p in model_dir.parent.iterdir() if p.name.startswith(".")]  # no staging left behind
    copy = tmp_path / "model"
    shutil.copytree(model_dir, copy)
    with open(copy / "vocab" / "item_id.txt", "a") as fh:
        fh.write("extra\n")
    with pytest.raises(ValueError, match="item_id.txt: size"):
        load_tower(copy / "item_tower")
    assert load_tower(copy / "item_tower", verify=False).model_version == version


def test_swap_into_place_replaces_a_previous_directory(tmp_path):
    old, new = tmp_path / "model", tmp_path / "staging"
    old.mkdir()
    (old / "model_version").write_text("v1\n")
    new.mkdir()
    (new / "model_version").write_text("v2\n")
    _swap_into_place(new, old)
    assert (old / "model_version").read_text() == "v2\n" and not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_saved_sequence_tower_matches_in_memory(tmp_path):
    """The Transformer encoder (catalogue lookup, time gaps, shared feature tables) survives export."""
    from tests.towers.conftest import planted
    from towers.config import SequenceConfig, TowerConfig
    from towers.item_tower import ItemTower, make_item_id_embedding
    from towers.query_tower import QueryTower
    from towers.vocab import build_vocabularies

    ds, split = planted()
    cfg = TowerConfig(output_dim=8, id_embedding_dim=8, feature_embedding_dim=4, hidden_units=(8,), max_history=6,
                      user_encoder="sequence", sequence=SequenceConfig(max_length=4, width=8, ff_dim=8, num_heads=2))
    vocab = build_vocabularies(ds, split.train, cfg)
    item_ids = make_item_id_embedding(vocab, cfg)
    item_tower = ItemTower(item_ids, vocab, cfg)
    query_tower = QueryTower(item_ids, vocab, cfg, item_features=item_tower.features,
                             catalogue=item_features_batch(ds.items, ds.item_features))
    q = eval_queries(ds, split, cfg.max_history).features
    q["history"][0, 2] = "never-seen-item"
    expected = query_tower(q).numpy()
    export_towers(query_tower, item_tower, vocab, tmp_path / "model")
    np.testing.assert_allclose(load_tower(tmp_path / "model" / "query_tower")(q, batch_size=100), expected, atol=1e-5)
