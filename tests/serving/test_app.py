"""The HTTP service end to end on a tiny real run: answers, every 4xx path, /version, live index reloads."""
import http.client
import json
import random
import socket
import threading
import time

import numpy as np
import pytest

from serving.app import make_config, start
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
