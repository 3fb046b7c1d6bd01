"""The HTTP service end to end on a tiny real run: answers, every 4xx path, /version, live index reloads,
JSON errors for malformed HTTP, the connection cap and timeouts, /metrics scraped and parsed, graceful shutdown."""
import http.client
import json
import random
import re
import socket
import threading
import time
import urllib.request

import numpy as np
import pytest

from serving.app import make_config, start
from serving.requests import RequestError, TopKRequest
from serving.service import TopKService
from tests.serving.conftest import Reference, copy_run, publish_index
from core import artifacts
from core import lifecycle

T = 1_700_000_000


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return copy_run(tmp_path_factory.mktemp("app"))


@pytest.fixture(scope="module")
def server(run):
    service = TopKService.open(run.root, make_config({"reload_interval_s": 0.05, "max_body_bytes": 2000,
                                                      "max_k": 300, "max_wait_ms": 2.0}))
    with start(service, "127.0.0.1", 0) as running:
        yield running


class Client:
    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, method, path, body=None):
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
        self.conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = self.conn.getresponse()
        return response.status, json.loads(response.read()), response

    def close(self):
        self.conn.close()


@pytest.fixture
def client(server):
    c = Client(server.port)
    yield c
    c.close()


def raw_exchange(port, data: bytes) -> tuple[int, dict]:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(data)
        chunks = b""
        while b"\r\n\r\n" not in chunks:
            chunks += sock.recv(65536)
        head, _, body = chunks.partition(b"\r\n\r\n")
        length = int([line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")][0])
        while len(body) < length:
            body += sock.recv(65536)
        return int(head.split()[1]), json.loads(body)


def test_topk_over_http_equals_direct_tower_and_index_search(server, client, run):
    reference = Reference(run)
    for uid in reference.dataset.users["user_id"].tolist()[:4]:
        status, got, _ = client.call("POST", "/topk", {"user_id": uid, "k": 10, "timestamp": T})
        assert status == 200
        want_ids, want_scores = reference.known(uid, 10, T)
        assert [x["item_id"] for x in got["items"]] == want_ids
        np.testing.assert_allclose([x["score"] for x in got["items"]], want_scores, atol=1e-5)
        assert got["model_version"] == run.model_version() and got["known_user"] is True
    items = reference.dataset.items["item_id"].tolist()
    body = {"user_id": "new-user", "features": {"age": 41, "country": "c1"}, "history": [items[0], items[5]],
            "timestamp": T, "k": 15, "exclude_seen": True}
    status, got, _ = client.call("POST", "/topk", body)
    want_ids, _ = reference.raw("new-user", {"age": 41.0, "country": "c1"}, [items[0], items[5]], 15, T)
    assert status == 200 and [x["item_id"] for x in got["items"]] == want_ids


def test_unknown_user_and_items_get_results_and_exclude_seen_is_honoured(client, run):
    status, got, _ = client.call("POST", "/topk", {"user_id": "nobody-knows-me", "k": 5})
    assert status == 200 and len(got["items"]) == 5 and got["known_user"] is False
    status, got, _ = client.call("POST", "/topk", {"history": ["not-an-item", 12345], "k": 5})
    assert status == 200 and len(got["items"]) == 5
    reference = Reference(run)
    uid = reference.dataset.users["user_id"].iloc[7]
    inter = reference.dataset.interactions
    seen = set(inter.loc[inter["user_id"] == uid, "item_id"])
    _, with_seen, _ = client.call("POST", "/topk", {"user_id": uid, "k": 200, "exclude_seen": False})
    _, without, _ = client.call("POST", "/topk", {"user_id": uid, "k": 200})  # exclude_seen defaults to true
    assert seen <= {x["item_id"] for x in with_seen["items"]}
    assert not seen & {x["item_id"] for x in without["items"]} and len(without["items"]) == 200 - len(seen)


def test_version_and_health(client, run):
    status, info, _ = client.call("GET", "/version")
    assert status == 200
    assert info["model_version"] == run.model_version()
    assert info["index_version"] == lifecycle.current_version(run.index)
    assert info["index_factory"] == "Flat" and info["index_count"] == 200
    status, health, _ = client.call("GET", "/healthz")
    assert status == 200 and health["status"] == "ok"


@pytest.mark.parametrize("body, status, message", [
    (b"{\"user_id\": \"1\", \"k\": ", 400, "body is not valid JSON"),
    (b"", 400, "empty body"),
    ({"user_id": "1"}, 400, "missing k"),
    ({"user_id": "1", "k": -3}, 400, "k must be a positive int, got int -3"),
    ({"user_id": "1", "k": "ten"}, 400, "k must be a positive int, got string 'ten'"),
    ({"user_id": "1", "k": 301}, 400, r"k=301 is above the largest allowed k \(300"),
    ({"features": {"shoe_size": 44}, "k": 3}, 400, r"unknown feature name\(s\) \['shoe_size'\]"),
    ({"features": {"age": "old"}, "k": 3}, 400, r"features.age \(numeric\) must be a number or null"),
    ({"history": "i1 i2", "k": 3}, 400, "history must be a list of item ids"),
    ({"history": [1.5], "k": 3}, 400, r"history\[0\] must be a non-empty string or an int id, got float"),
    ({"user_id": "1", "k": 3, "exclude_seen": 1}, 400, "exclude_seen must be true or false"),
    ({"user": "1", "k": 3}, 400, r"unknown field\(s\) \['user'\]"),
    (b"x" * 3000, 413, "body of 3000 bytes is larger than the 2000 allowed"),
])
def test_malformed_requests_get_a_4xx_saying_what_was_wrong(client, body, status, message):
    got_status, got, response = client.call("POST", "/topk", body)
    assert got_status == status and set(got) == {"error"}
    assert __import__("re").search(message, got["error"]), got["error"]
    assert response.getheader("Content-Type") == "application/json"
    ok_status, _, _ = client.call("POST", "/topk", {"user_id": "1", "k": 1})  # the connection is still usable
    assert ok_status == 200


def test_paths_methods_and_framing(server, client):
    status, got, _ = client.call("GET", "/nope")
    assert status == 404 and "no such path '/nope'" in got["error"] and "POST /topk" in got["error"]
    status, got, response = client.call("GET", "/topk")
    assert status == 405 and "use POST /topk" in got["error"] and response.getheader("Allow") == "POST"
    status, got, _ = client.call("POST", "/version", {})
    assert status == 405 and "use GET /version" in got["error"]
    status, got = raw_exchange(server.port, b"POST /topk HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 411 and "missing Content-Length" in got["error"]
    status, got = raw_exchange(server.port, b"POST /topk HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                                            b"2\r\n{}\r\n0\r\n\r\n")
    assert status == 411 and "chunked bodies are not accepted" in got["error"]
    status, got = raw_exchange(server.port, b"POST /topk HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n{}")
    assert status == 413 and "larger than the 2000 allowed" in got["error"]


def test_new_index_is_picked_up_under_load_with_zero_failed_requests(server, run):
    users = Reference(run).dataset.users["user_id"].tolist()
    old = server.service.state.version
    stop = threading.Event()
    seen: list[list[tuple[int, str]]] = [[] for _ in range(3)]
    errors: list[str] = []

    def hammer(slot):
        client = Client(server.port)
        rng = random.Random(slot)
        try:
            while not stop.is_set():
                status, body, _ = client.call("POST", "/topk", {"user_id": rng.choice(users), "k": 10})
                seen[slot].append((status, body.get("index_version", body.get("error"))))
        except Exception as exc:  # noqa: BLE001 - any client failure fails the test
            errors.append(repr(exc))
        finally:
            client.close()

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.3)
        new = publish_index(run, perturb=0.3, seed=11)            # publish + flip current while requests fly
        deadline = time.monotonic() + 60
        # the watcher polls `current`: let it load `new` before flipping again, or it may never see it
        while server.service.state.version != new and time.monotonic() < deadline:
            time.sleep(0.05)
        refused = publish_index(run, model_version="not-this-model", seed=12)  # then one of another model
        while refused not in server.service.watcher.refused and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors
    answers = [a for s in seen for a in s]
    assert answers and all(status == 200 for status, _ in answers), [a for a in answers if a[0] != 200][:3]
    versions = {v for _, v in answers}
    assert versions == {old, new}  # both served, the refused one never
    for s in seen:  # each client switched once, from old to new, and never went back
        order = [v for _, v in s]
        assert order == sorted(order, key=lambda v: v == new)
    status_info = server.service.version_info()
    assert status_info["index_version"] == new and status_info["reloads"] >= 1
    assert refused in status_info["refused_index_versions"]
    assert "not-this-model" in status_info["last_reload_error"]


# ------------------------------------------------------------------ issue 13 item 2: every error is JSON
def raw_bytes(port, data: bytes, wait_for_close=True, timeout=30) -> bytes:
    """Send ``data``, read until the server closes the connection (or ``timeout``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        out = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return out
            out += chunk
            if not wait_for_close and b"\r\n\r\n" in out:
                return out


def status_and_json(response: bytes) -> tuple[int, dict, bytes]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    return int(head.split()[1]), json.loads(body) if body else {}, head


@pytest.mark.parametrize("request_bytes, status, message", [
    (b"OPTIONS /topk HTTP/1.1\r\nHost: x\r\n\r\n", 405, r"OPTIONS is not allowed on /topk; use POST /topk"),
    (b"GARBAGE\r\n\r\n", 400, r"malformed HTTP request: Invalid method encountered; send an HTTP/1.1 request"),
    (b"GET /healthz HTTP/9.9\r\n\r\n", 400, r"malformed HTTP request: Invalid HTTP version"),
    (b"POST /topk HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nContent-Length: 30\r\n\r\n{\"k\": 1}",
     400, r"malformed HTTP request: Duplicate Content-Length"),
    (b"POST /topk HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}",
     400, r"malformed HTTP request: Transfer-Encoding can't be present with Content-Length"),
])
def test_odd_methods_garbage_and_smuggling_attempts_get_json_errors(server, request_bytes, status, message):
    got_status, got, _ = status_and_json(raw_bytes(server.port, request_bytes))
    assert got_status == status and re.search(message, got["error"]), got


def test_head_gets_a_json_405_head_with_allow(server):
    head = raw_bytes(server.port, b"HEAD /topk HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status, body, head = status_and_json(head)
    assert status == 405 and b"allow: POST" in head and body == {}  # HEAD answers carry no body


def test_readyz_metrics_and_openapi_routes(server, client, run):
    status, ready, _ = client.call("GET", "/readyz")
    assert status == 200 and ready["status"] == "ready" and ready["model_version"] == run.model_version()
    assert ready["index_model_version"] == ready["model_version"]
    status, doc, _ = client.call("GET", "/openapi.json")
    assert status == 200 and set(doc["paths"]) == {"/topk", "/healthz", "/readyz", "/version", "/metrics",
                                                    "/openapi.json"}


# ------------------------------------------------------------------ issue 16: Prometheus metrics, scraped
def scrape(port) -> dict:
    """{(name, frozenset(labels.items())): value} from GET /metrics, parsed as the exposition format."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as r:
        assert r.headers["Content-Type"].startswith("text/plain; version=")
        text = r.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_requests_by_status_and_time_every_stage(server, client, run):
    before = scrape(server.port)
    ok, bad = 7, 3
    for i in range(ok):
        assert client.call("POST", "/topk", {"user_id": f"u{i}", "k": 2})[0] == 200
    for _ in range(bad):
        assert client.call("POST", "/topk", {"user_id": "u1", "k": 0})[0] == 400
    after = scrape(server.port)

    def delta(name, **labels):
        key = (name, frozenset(labels.items()))
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta("twotower_http_requests_total", path="/topk", method="POST", status="200") == ok
    assert delta("twotower_http_requests_total", path="/topk", method="POST", status="400") == bad
    assert delta("twotower_request_duration_seconds_count", path="/topk") == ok + bad
    assert delta("twotower_request_duration_seconds_sum", path="/topk") > 0
    assert delta("twotower_queue_wait_seconds_count") == ok  # only requests that reached a batch
    batches = delta("twotower_batch_size_count")
    assert 1 <= batches <= ok and delta("twotower_batch_size_sum") == ok
    assert delta("twotower_tower_seconds_count") == batches == delta("twotower_search_seconds_count")
    assert delta("twotower_tower_seconds_sum") > 0 and delta("twotower_search_seconds_sum") > 0
    info = [labels for (name, labels), value in after.items() if name == "twotower_serving_info" and value == 1]
    assert info == [frozenset({"model_version": run.model_version(),
                               "index_version": server.service.state.version}.items())]
    for outcome in ("swapped", "refused", "failed"):
        assert ("twotower_index_reloads_total", frozenset({"outcome": outcome}.items())) in after
    assert after[("twotower_open_connections", frozenset())] >= 1  # at least the client's keep-alive one


# ------------------------------------------------------------------ issue 13 item 3: connection cap, timeouts
@pytest.fixture(scope="module")
def fresh_run(tmp_path_factory):
    """A copy nobody publishes into (the reload test leaves ``run`` on a refused index)."""
    return copy_run(tmp_path_factory.mktemp("fresh"))


@pytest.fixture(scope="module")
def tight_server(fresh_run):
    service = TopKService.open(fresh_run.root, make_config({"reload_interval_s": None, "max_connections": 3,
                                                      "read_timeout_s": 1.0, "idle_timeout_s": 1.0}))
    with start(service, "127.0.0.1", 0) as running:
        yield running


def test_connections_above_the_cap_get_a_json_503_and_are_closed(tight_server):
    held = [socket.create_connection(("127.0.0.1", tight_server.port), timeout=30) for _ in range(3)]
    try:
        time.sleep(0.2)  # the server has accepted them
        status, got, _ = status_and_json(raw_bytes(tight_server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
        assert status == 503 and got["error"] == ("too many open connections: 3 are open (max_connections=3); "
                                                  "retry later, and reuse keep-alive connections")
        assert tight_server.service.connection_stats()["refused_connections"] >= 1
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + 10
    while tight_server.service.connection_stats()["open_connections"] and time.monotonic() < deadline:
        time.sleep(0.05)
    status, got, _ = status_and_json(raw_bytes(tight_server.port, b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n"))
    assert status == 200  # room again once they closed


def test_a_slow_request_gets_a_408_and_an_idle_connection_is_closed(tight_server):
    started = time.monotonic()
    status, got, _ = status_and_json(raw_bytes(tight_server.port, b"POST /topk HTTP/1.1\r\nHost: x\r\nConte"))
    assert status == 408 and got["error"] == ("the request did not arrive within 1 s (read_timeout_s); send the "
                                              "whole head and body at once")
    assert raw_bytes(tight_server.port, b"") == b""  # nothing sent: closed after read_timeout_s, no answer
    with socket.create_connection(("127.0.0.1", tight_server.port), timeout=30) as sock:  # idle after an answer
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        out = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            out += chunk
    assert out.startswith(b"HTTP/1.1 200") and time.monotonic() - started < 20


# ------------------------------------------------------------------ issue 16: graceful shutdown
def test_graceful_shutdown_stops_accepting_answers_in_flight_requests_then_exits(fresh_run):
    from tests.serving.test_service import GatedEncoder

    service = TopKService.open(fresh_run.root, make_config({"reload_interval_s": None, "drain_timeout_s": 30}))
    service.encoder = GatedEncoder(service.encoder)
    running = start(service, "127.0.0.1", 0)
    answers = []
    in_flight = threading.Thread(target=lambda: answers.append(
        Client(running.port).call("POST", "/topk", {"user_id": "u1", "k": 4})))
    in_flight.start()
    try:
        assert service.encoder.entered.wait(30)  # the request is inside its batch, held
        stopper = threading.Thread(target=running.shutdown)
        stopper.start()
        deadline = time.monotonic() + 30
        refused = False
        while not refused and time.monotonic() < deadline:  # the listener closes at once
            try:
                socket.create_connection(("127.0.0.1", running.port), timeout=1).close()
                time.sleep(0.05)
            except OSError:
                refused = True
        assert refused, "the server still accepts connections while shutting down"
        assert stopper.is_alive() and not answers  # still draining: the held request is not answered yet
        service.encoder.gate.set()
        in_flight.join(30)
        stopper.join(30)
        assert not stopper.is_alive()
        status, body, _ = answers[0]
        assert status == 200 and len(body["items"]) == 4  # answered, not dropped
    finally:
        service.encoder.gate.set()
        running.close()
    with pytest.raises(RequestError, match="shutting down"):
        service.submit(TopKRequest(k=1, exclude_seen=True, user_id="x"))


def test_json_bodies_fall_back_to_the_standard_library_for_what_orjson_refuses():
    from serving.app import _json_bytes

    assert json.loads(_json_bytes({"items": [{"item_id": "50", "score": np.float32(0.5)}], "k": 3})) == \
        {"items": [{"item_id": "50", "score": 0.5}], "k": 3}
    assert json.loads(_json_bytes({"big": 2 ** 70})) == {"big": 2 ** 70}  # above 64 bits: orjson refuses
