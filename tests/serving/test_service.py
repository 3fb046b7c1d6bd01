"""TopKService on a tiny real run, against the slow reference (tests/serving_fixtures.Reference)."""
import dataclasses
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from serving.config import ServingConfig
from serving.requests import RequestError, TopKRequest
from serving.service import TopKService
from tests.serving.conftest import Reference, copy_run, publish_index, tiny_run
from core import artifacts
from core import lifecycle

T = 1_700_000_000


@pytest.fixture(scope="module")
def service():
    svc = TopKService.open(tiny_run().root, ServingConfig(reload_interval_s=None, max_wait_ms=5.0))
    yield svc
    svc.close()


@pytest.fixture(scope="module")
def reference():
    return Reference(tiny_run())


def user_ids(reference, n):
    return reference.dataset.users["user_id"].tolist()[:n]


def ids_and_scores(response):
    return [x["item_id"] for x in response["items"]], np.array([x["score"] for x in response["items"]])


def test_known_users_match_the_reference(service, reference):
    for uid in user_ids(reference, 5):
        got = service.topk(TopKRequest(k=10, exclude_seen=True, user_id=uid, timestamp=T))
        want_ids, want_scores = reference.known(uid, 10, T)
        ids, scores = ids_and_scores(got)
        assert ids == want_ids
        np.testing.assert_allclose(scores, want_scores, rtol=0, atol=1e-5)
        assert got["known_user"] is True and got["model_version"] == tiny_run().model_version()
        assert got["index_version"] == lifecycle.current_version(tiny_run().index)


def test_exclude_seen_is_honoured(service, reference):
    uid = user_ids(reference, 1)[0]
    inter = reference.dataset.interactions
    seen = set(inter.loc[inter["user_id"] == uid, "item_id"])
    excluded, _ = ids_and_scores(service.topk(TopKRequest(k=200, exclude_seen=True, user_id=uid, timestamp=T)))
    everything, _ = ids_and_scores(service.topk(TopKRequest(k=200, exclude_seen=False, user_id=uid, timestamp=T)))
    assert len(everything) == 200 and seen <= set(everything)
    assert not seen & set(excluded) and len(excluded) == 200 - len(seen)
    assert everything[:10] == reference.known(uid, 10, T, exclude_seen=False)[0]


def test_raw_features_match_the_reference_and_exclude_the_history(service, reference):
    items = reference.dataset.items["item_id"].tolist()
    features = {"age": 33.0, "country": "c3"}
    history = [items[3], items[10], items[7]]
    req = TopKRequest(k=20, exclude_seen=True, user_id="someone-new", features={**features, "taste_hint": None},
                      history=tuple(history), timestamp=T)
    ids, scores = ids_and_scores(service.topk(req))
    want_ids, want_scores = reference.raw("someone-new", features, history, 20, T)
    assert ids == want_ids and not set(history) & set(ids)
    np.testing.assert_allclose(scores, want_scores, atol=1e-5)


def test_unknown_users_and_items_still_get_results(service, reference):
    unknown = service.topk(TopKRequest(k=7, exclude_seen=True, user_id="never-seen"))
    assert len(unknown["items"]) == 7 and unknown["known_user"] is False
    raw = service.topk(TopKRequest(k=7, exclude_seen=True, features={"age": None, "country": "atlantis",
                                                                     "taste_hint": "zzz"},
                                   history=("no-such-item", "nor-this")))
    assert len(raw["items"]) == 7
    assert all(np.isfinite(x["score"]) for x in unknown["items"] + raw["items"])


def test_k_above_the_catalogue_returns_what_is_left(service, reference):
    uid = user_ids(reference, 1)[0]
    got = service.topk(TopKRequest(k=500, exclude_seen=False, user_id=uid))
    assert len(got["items"]) == 200 and len({x["item_id"] for x in got["items"]}) == 200


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(service, reference):
    uids = user_ids(reference, 40)
    sequential = {u: ids_and_scores(service.topk(TopKRequest(k=5, exclude_seen=True, user_id=u, timestamp=T)))
                  for u in uids}
    batches_before = service.batcher.batches
    barrier = threading.Barrier(16)
    threads = set()

    def ask(u):  # 16 callers at once, each blocking on its own answer (issue 19: they used to run in turn)
        threads.add(threading.current_thread().name)
        try:
            barrier.wait(30)
        except threading.BrokenBarrierError:
            pass  # the last 8 of 40 requests have no 15 partners left
        return service.topk(TopKRequest(k=5, exclude_seen=True, user_id=u, timestamp=T))

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, uids))
    assert len(threads) == 16
    assert service.batcher.batches - batches_before < len(uids)  # answered in fewer batches than requests
    for u, answer in zip(uids, answers):
        ids, scores = ids_and_scores(answer)
        np.testing.assert_allclose(scores, sequential[u][1], atol=1e-5)
        assert set(ids) == set(sequential[u][0])


def test_version_info_and_health(service):
    info = service.version_info()
    assert info["model_version"] == tiny_run().model_version()
    assert info["index_factory"] == "Flat" and info["index_count"] == 200 and info["index_dim"] == 16
    assert info["known_users"] == 300 and info["max_history"] == 20
    health = service.health()
    assert health["status"] == "ok" and health["requests"] >= 1


def test_refuses_to_start_on_a_version_mismatch(tmp_path):
    run = copy_run(tmp_path)
    publish_index(run, model_version="another-model-v9")
    with pytest.raises(ValueError, match=rf"was made by model version 'another-model-v9' but the query tower .* is "
                                         rf"model version '{run.model_version()}'.*twotower rebuild --run {run.root}"):
        TopKService.open(run.root, ServingConfig(reload_interval_s=None))


def test_missing_index_is_a_clear_error(tmp_path):
    run = copy_run(tmp_path)
    (run.index / lifecycle.CURRENT).unlink()
    with pytest.raises(FileNotFoundError, match=r"no index is published .* `twotower rebuild --run"):
        TopKService.open(run.root)


def test_swap_serves_the_new_index_and_refuses_another_model(tmp_path):
    run = copy_run(tmp_path)
    svc = TopKService.open(run.root, ServingConfig(reload_interval_s=0.05))
    try:
        old = svc.state.version
        new = publish_index(run, perturb=0.5, seed=3)
        deadline = time.monotonic() + 30
        while svc.state.version != new and time.monotonic() < deadline:
            time.sleep(0.02)
        assert svc.state.version == new != old
        answer = svc.topk(TopKRequest(k=5, exclude_seen=True, user_id="never-seen", timestamp=T))
        assert answer["index_version"] == new
        want = Reference(run).raw("never-seen", {}, [], 5, T)[0]
        assert [x["item_id"] for x in answer["items"]] == want
        bad = publish_index(run, model_version="another-model", seed=4)
        while bad not in svc.watcher.refused and time.monotonic() < deadline:
            time.sleep(0.02)
        assert svc.state.version == new and bad in svc.version_info()["refused_index_versions"]
        assert "another-model" in svc.version_info()["last_reload_error"]
        # issue 13 item 4: degraded while the newest published index is refused, and no absolute paths out
        health = svc.health()
        assert health["status"] == "degraded" and health["index_version"] == new
        assert health["reason"].startswith(f"the newest published index {bad} is refused: the index <run>/index/"
                                           f"{bad} was made by model version 'another-model'")
        assert health["reason"].endswith(f"still serving index {new}")
        for answer in (health, svc.version_info()):
            text = json.dumps(answer)
            assert str(run.root) not in text and str(tmp_path) not in text and "/tmp/" not in text, text
        with pytest.raises(ValueError, match="was made by model version 'another-model'"):
            svc.swap(dataclasses.replace(svc.state, version=bad, index=_with_model(svc.state.index, "another-model")))
    finally:
        svc.close()
    with pytest.raises(RequestError, match="shutting down"):
        svc.submit(TopKRequest(k=1, exclude_seen=True, user_id="x"))


class GatedEncoder:
    """Wraps a service's encoder: ``entered`` is set when a batch reaches the tower, which then waits for
    ``gate`` (so a test can hold the one running batch)."""

    def __init__(self, encoder):
        self.encoder, self.entered, self.gate = encoder, threading.Event(), threading.Event()

    def __call__(self, features):
        self.entered.set()
        assert self.gate.wait(30)
        return self.encoder(features)


@pytest.fixture
def held_service():
    svc = TopKService.open(tiny_run().root, ServingConfig(reload_interval_s=None, max_queue=1, inline_lone=False,
                                                          request_timeout_s=0.3))
    svc.encoder = GatedEncoder(svc.encoder)
    yield svc
    svc.encoder.gate.set()
    svc.close()


def test_a_full_queue_is_a_503_saying_so(held_service):
    # issue 19: 503 on a full queue had no test
    running = held_service.submit(TopKRequest(k=3, exclude_seen=True, user_id="a"))
    assert held_service.encoder.entered.wait(30)  # the batcher is busy with it
    queued = held_service.submit(TopKRequest(k=3, exclude_seen=True, user_id="b"))
    with pytest.raises(RequestError, match=r"overloaded: 1 requests are already waiting \(max_queue=1\); retry "
                                           r"later") as err:
        held_service.submit(TopKRequest(k=3, exclude_seen=True, user_id="c"))
    assert err.value.status == 503
    held_service.encoder.gate.set()
    assert len(running.result(30)["items"]) == 3 and len(queued.result(30)["items"]) == 3


def test_a_request_not_answered_in_time_is_a_503_saying_so(held_service):
    # issue 19: 503 on a request timeout had no test
    with pytest.raises(RequestError, match=r"no answer within 0.3 s \(request_timeout_s\); the service is "
                                           r"overloaded or stuck") as err:
        held_service.topk(TopKRequest(k=3, exclude_seen=True, user_id="a"))
    assert err.value.status == 503 and held_service.encoder.entered.is_set()
    held_service.encoder.gate.set()
    assert len(held_service.topk(TopKRequest(k=2, exclude_seen=True, user_id="a"))["items"]) == 2


def test_a_poisoned_batch_fails_only_the_poisoned_request(monkeypatch):
    # issue 13 item 1: one request failing inside the shared batch failed every request of that batch
    from serving import service as service_module

    real = service_module.batch_inputs

    def fragile(queries, specs, max_history):
        if any(q.user_id == "poison" for q in queries):
            raise OverflowError("Python int too large to convert to C long")
        return real(queries, specs, max_history)

    monkeypatch.setattr(service_module, "batch_inputs", fragile)
    svc = TopKService.open(tiny_run().root, ServingConfig(reload_interval_s=None, inline_lone=False))
    svc.encoder = GatedEncoder(svc.encoder)
    try:
        first = svc.submit(TopKRequest(k=3, exclude_seen=True, user_id="warm"))
        assert svc.encoder.entered.wait(30)  # held: the next three queue up and form one batch
        batch = [svc.submit(TopKRequest(k=3, exclude_seen=True, user_id=u)) for u in ("u1", "poison", "u2")]
        svc.encoder.gate.set()
        assert len(first.result(30)["items"]) == 3
        assert [len(batch[i].result(30)["items"]) for i in (0, 2)] == [3, 3]
        with pytest.raises(OverflowError, match="too large"):
            batch[1].result(30)
        assert svc.batcher.retried_batches == 1
    finally:
        svc.encoder.gate.set()
        svc.close()


def _with_model(index, model_version):
    from indexing.item_index import ItemIndex

    return ItemIndex(index.faiss_index, index.item_ids, index.spec, model_version, index.factory)


def upload_run(local_root, url):
    """Every file of a local run directory as objects under ``url`` (what a run on S3 looks like)."""
    from core.storage import open_storage

    store = open_storage(url)
    for p in sorted(local_root.rglob("*")):
        if p.is_file() and ".lock" not in p.name:
            store.write_bytes(p.relative_to(local_root).as_posix(), p.read_bytes())
    return store


def test_a_run_on_s3_is_served_from_the_verified_cache_and_hot_reloads_from_the_pointer(tmp_path, s3_url,
                                                                                       monkeypatch):
    monkeypatch.setenv("TWOTOWER_CACHE", str(tmp_path / "cache"))
    run = copy_run(tmp_path)
    store = upload_run(run.root, s3_url)
    first = lifecycle.current_version(run.index)
    svc = TopKService.open(s3_url, ServingConfig(reload_interval_s=0.05))
    try:
        assert svc.state.version == first and svc.run.remote
        answer = svc.topk(TopKRequest(k=5, exclude_seen=True, user_id="never-seen", timestamp=T))
        assert [x["item_id"] for x in answer["items"]] == Reference(run).raw("never-seen", {}, [], 5, T)[0]
        assert not list(tmp_path.joinpath("cache").rglob("*.lock"))
        # a new version whose index object is truncated: refused by sha256 before loading, the old one serves on
        new = publish_index(run, perturb=0.5, seed=3)
        upload_run(run.index / new, f"{s3_url}/index/{new}")
        blob = store.read_bytes(f"index/{new}/index.faiss")
        store.write_bytes(f"index/{new}/index.faiss", blob[: len(blob) // 2])
        store.write_bytes("index/current", f"{new}\n".encode())
        deadline = time.monotonic() + 60
        while svc.watcher.last_error is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert svc.state.version == first
        assert f"index/{new}/index.faiss: {len(blob) // 2} bytes, the manifest says {len(blob)}; the object is " \
               "truncated" in svc.watcher.last_error
        assert svc.health()["status"] == "degraded"
        # the object repaired: the watcher sees the objects change, downloads, verifies and swaps
        store.write_bytes(f"index/{new}/index.faiss", blob)
        svc.watcher.failed[new]["next_try"] = 0  # skip the back-off (the repaired object has the same key)
        while svc.state.version != new and time.monotonic() < deadline:
            time.sleep(0.02)
        assert svc.state.version == new
        answer = svc.topk(TopKRequest(k=5, exclude_seen=True, user_id="never-seen", timestamp=T))
        assert answer["index_version"] == new
        assert [x["item_id"] for x in answer["items"]] == Reference(run).raw("never-seen", {}, [], 5, T)[0]
        cached = {p.name for p in svc.index_source.local_root.iterdir() if not p.name.startswith(".")}
        assert cached == {first, new}
        text = json.dumps([svc.health(), svc.version_info()])
        assert str(tmp_path) not in text, text
    finally:
        svc.close()


def test_with_frozen_gc_a_swapped_out_index_is_still_freed(tmp_path):
    """``freeze_long_lived`` (what ``serve`` turns on) keeps full collections off the request path; the
    index a swap replaces must still be freed (by reference counting: frozen objects are never collected
    as cycles), or every publish would leak one index."""
    import gc
    import weakref

    run = copy_run(tmp_path)
    svc = TopKService.open(run.root, ServingConfig(reload_interval_s=None))
    try:
        svc.freeze_long_lived()
        assert gc.get_freeze_count() > 0
        first = weakref.ref(svc.state.index)
        second = svc.load_version(publish_index(run, perturb=0.5, seed=3))
        svc.swap(second)
        del second
        svc.topk(TopKRequest(k=5, exclude_seen=True, user_id="never-seen", timestamp=T))
        assert first() is None, "the swapped-out index is still alive (a reference cycle kept it)"
    finally:
        svc.close()
        gc.unfreeze()  # the rest of the test process collects as usual
