"""Serving a sharded index (issue #16): every shard is searched and the top k merged; the answers equal the
single index's, known users and raw features alike, exclusions included, also after a hot swap to it."""
import time

import numpy as np

from serving.config import ServingConfig
from serving.requests import TopKRequest
from serving.service import TopKService
from tests.serving.conftest import copy_run

T = 1_700_000_000


def publish_sharded_copy(run, num_shards: int, factory: str = "Flat") -> str:
    from core.lifecycle import VersionedRoot, current_dir, new_version
    from indexing.sharded_index import ShardedItemIndex, publish_sharded
    from indexing.spec import IndexSpec
    from indexing.vectors import read_vectors

    ids, vectors, manifest = read_vectors(current_dir(run.vectors))
    index = ShardedItemIndex.build(vectors, ids, IndexSpec(factory=factory, recall_queries=50),
                                   manifest["model_version"], num_shards)
    version = new_version(VersionedRoot(run.index))
    publish_sharded(run.index, index, version, keep=10)
    return version


def requests_for(users, items):
    out = []
    for i, uid in enumerate(users):
        out.append(TopKRequest(k=[5, 60, 200][i % 3], exclude_seen=i % 2 == 0, user_id=uid, timestamp=T))
    for i in range(6):
        out.append(TopKRequest(k=[10, 150][i % 2], exclude_seen=True, user_id=f"new-{i}",
                               features={"age": 20.0 + i, "country": f"c{i}", "taste_hint": None},
                               history=tuple(items[i * 7:i * 7 + 5]), timestamp=T))
    return out


def test_a_sharded_index_answers_exactly_like_the_single_index_and_hot_swaps_in(tmp_path):
    from recdata.loading import load_split

    run = copy_run(tmp_path)
    dataset, _ = load_split(run.data)
    requests = requests_for(dataset.users["user_id"].tolist()[:12], dataset.items["item_id"].tolist())
    svc = TopKService.open(run.root, ServingConfig(reload_interval_s=0.05))
    try:
        single_version = svc.state.version
        single = [svc.topk(r) for r in requests]
        sharded_version = publish_sharded_copy(run, num_shards=3)
        deadline = time.monotonic() + 60
        while svc.state.version != sharded_version and time.monotonic() < deadline:
            time.sleep(0.02)
        assert svc.state.version == sharded_version != single_version
        assert type(svc.state.index).__name__ == "ShardedItemIndex" and svc.state.index.num_shards == 3
        sharded = [svc.topk(r) for r in requests]
        index = svc.state.index
        info = svc.version_info()
        assert info["index_count"] == 200 and info["index_version"] == sharded_version
    finally:
        svc.close()
    for request, a, b in zip(requests, single, sharded):
        ids_a, ids_b = [x["item_id"] for x in a["items"]], [x["item_id"] for x in b["items"]]
        assert ids_a == ids_b, request
        np.testing.assert_allclose([x["score"] for x in a["items"]], [x["score"] for x in b["items"]], atol=1e-5)
        assert b["index_version"] == sharded_version
    # the merge is exercised: the top 5 answers draw on every shard, not on one
    shard_of = {item: i for i, (start, stop) in enumerate(index.bounds) for item in index.item_ids[start:stop]}
    assert {shard_of[x["item_id"]] for answer in sharded for x in answer["items"][:5]} == {0, 1, 2}


def test_a_service_starts_on_a_sharded_index(tmp_path):
    run = copy_run(tmp_path)
    version = publish_sharded_copy(run, num_shards=4)
    svc = TopKService.open(run.root, ServingConfig(reload_interval_s=None))
    try:
        assert svc.state.version == version and svc.state.index.num_shards == 4
        ready, body = svc.readiness()
        assert ready and body["index_version"] == version
        answer = svc.topk(TopKRequest(k=7, exclude_seen=True, user_id="never-seen"))
        assert len(answer["items"]) == 7
    finally:
        svc.close()
