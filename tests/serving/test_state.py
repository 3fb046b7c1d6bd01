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
