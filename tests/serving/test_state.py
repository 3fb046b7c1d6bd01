import numpy as np
import pytest

from serving.state import VersionMismatch, build_state, check_versions, load_state
from serving.users import KnownUsers
from tests.serving.conftest import copy_run, publish_index, tiny_run
from core import artifacts
from core import lifecycle


@pytest.fixture(scope="module")
def users():
    run = tiny_run()
    return KnownUsers.from_run_data(run.data, 20)


def test_load_state_of_the_current_index(users):
    run = tiny_run()
    version = lifecycle.current_version(run.index)
    state = load_state(run.index, version, run.model_version(), 16, users, run.root)
    assert state.version == version and state.model_version == run.model_version()
    facts = state.describe()
    assert facts["factory"] == "Flat" and facts["count"] == 200 and facts["dim"] == 16
    ids = state.index.item_ids
    assert state.rows_of_items([ids[5], "not-an-item", ids[2], ids[5]]).tolist() == [2, 5]
    assert state.rows_of_items([]).tolist() == []
    row = 0
    seen = set(users.seen_items_of(row).tolist())
    assert sorted(ids[state.seen_rows_of_user(row)].tolist()) == sorted(seen)


def test_an_index_of_another_model_is_refused_naming_both_versions(tmp_path, users):
    run = copy_run(tmp_path)
    version = publish_index(run, model_version="some-other-model")
    with pytest.raises(VersionMismatch, match=r"was made by model version 'some-other-model' but the query tower "
                                              rf".* is model version '{run.model_version()}'.*"
                                              rf"`twotower rebuild --run {run.root}`"):
        load_state(run.index, version, run.model_version(), 16, users, run.root)
    assert issubclass(VersionMismatch, ValueError)


def test_dimension_mismatch_and_check_versions(tmp_path, users):
    run = tiny_run()
    version = lifecycle.current_version(run.index)
    with pytest.raises(VersionMismatch, match="holds 16-d vectors but the query tower emits 32-d"):
        load_state(run.index, version, run.model_version(), 32, users, run.root)
    check_versions("m1", tmp_path, "m1", tmp_path)  # equal: no error


def test_build_state_drops_items_the_index_does_not_hold(users):
    from indexing.item_index import ItemIndex
    from indexing.spec import IndexSpec

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((3, 4)).astype(np.float32)
    index = ItemIndex.build(vectors, np.array(["x", "y", "z"], dtype=object), IndexSpec(factory="Flat"), "m")
    state = build_state(index, "v", users)
    assert state.seen.nnz == 0 and state.seen.num_queries == len(users)


def test_a_new_version_of_the_same_catalogue_reuses_the_lookup_and_seen_rows(tmp_path, users):
    run = copy_run(tmp_path)
    first = load_state(run.index, lifecycle.current_version(run.index), run.model_version(), 16, users, run.root)
    assert first.ids_sha256 == artifacts.read_manifest(run.index / first.version)["files"]["item_ids.parquet"]["sha256"]
    version = publish_index(run, perturb=0.5, seed=3)  # new vectors, the same item ids file
    again = load_state(run.index, version, run.model_version(), 16, users, run.root, previous=first)
    assert again.version == version and again.index is not first.index
    assert again.item_rows is first.item_rows and again.seen is first.seen
    fresh = load_state(run.index, version, run.model_version(), 16, users, run.root)
    assert fresh.item_rows is not first.item_rows and fresh.item_rows.equals(again.item_rows)
    ids = again.index.item_ids
    assert again.rows_of_items([ids[7], ids[3]]).tolist() == fresh.rows_of_items([ids[7], ids[3]]).tolist() == [3, 7]


def test_another_catalogue_gets_its_own_lookup(users):
    from indexing.item_index import ItemIndex
    from indexing.spec import IndexSpec

    vectors = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    a = build_state(ItemIndex.build(vectors, np.array(["x", "y", "z"], dtype=object), IndexSpec(factory="Flat"), "m"),
                    "a", users, ids_sha256="aaa")
    b_index = ItemIndex.build(vectors, np.array(["z", "y", "x"], dtype=object), IndexSpec(factory="Flat"), "m")
    b = build_state(b_index, "b", users, ids_sha256="bbb", previous=a)
    assert b.item_rows is not a.item_rows and b.rows_of_items(["x"]).tolist() == [2]
    assert build_state(b_index, "c", users, ids_sha256=None, previous=a).item_rows is not a.item_rows
