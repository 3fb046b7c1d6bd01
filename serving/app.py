"""The HTTP front of ``TopKService``: JSON over HTTP/1.1 (keep-alive) on the standard library's threaded server.

    POST /topk      {"user_id": "196", "k": 10}  or raw features (see ``serving.requests``)
                    200 {"items": [{"item_id", "score"}, ...], "model_version", "index_version", "known_user"}
    GET  /healthz   200 {"status": "ok", ...counters}
    GET  /version   200 {"model_version", "index_version", "index_factory", "index_count", ...}

Errors are JSON {"error": message} with 400 (bad JSON / fields / types), 404 (unknown path), 405 (wrong
method), 411 (no Content-Length), 413 (body above max_body_bytes), 503 (queue full, timeout, shutting
down), 500 (a bug: logged with its traceback).

``serve(run_dir, host, port, **options)`` runs until SIGINT/SIGTERM; ``start(service, host, port)`` runs a
server on a background thread (port 0 = any free port) and returns a ``RunningServer`` for tests and
benchmarks. Why the standard library: no ASGI stack is installed in this environment; each connection gets
a thread that parses and validates its requests, and all model work happens on the one batcher thread, so
the server's own cost is the HTTP parsing (see bench/bench_serving.py for the latency it reaches).
"""
from __future__ import annotations

import errno
import json
import logging
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from serving.config import ServingConfig
from serving.requests import RequestError, decode_json, parse_topk
from serving.service import TopKService
from core.strict import from_dict

log = logging.getLogger(__name__)

ROUTES = {"/topk": "POST", "/healthz": "GET", "/version": "GET"}
DRAIN_LIMIT_BYTES = 16 << 20  # bodies above max_body_bytes but below this are read and dropped before the 413


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"      # keep-alive; every response carries Content-Length
    disable_nagle_algorithm = True     # header and body writes go out at once (no 40 ms delayed-ACK stalls)
    server_version = "twotower-serving"
    timeout = 120                      # idle keep-alive connections are closed after this many seconds
    server: "_Server"

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        service = self.server.service
        try:
            if path == "/healthz":
                self._send_json(200, service.health())
            elif path == "/version":
                self._send_json(200, service.version_info())
            else:
                self._route_error(path, "GET")
        except Exception as exc:  # noqa: BLE001 - answer, log, keep the connection thread alive
            log.exception("GET %s failed", path)
            self._send_json(500, {"error": f"internal error: {type(exc).__name__}: {exc}"})

    def do_POST(self):
        path = self.path.split("?", 1)[0]
        try:
            body = self._read_body()
            if path != "/topk":
                self._route_error(path, "POST")
                return
            cfg = self.server.service.config
            request = parse_topk(decode_json(body), self.server.service.user_specs, max_k=cfg.max_k,
                                 max_history_items=cfg.max_history_items,
                                 default_exclude_seen=cfg.default_exclude_seen)
            self._send_json(200, self.server.service.topk(request))
        except RequestError as exc:
            self._send_json(exc.status, {"error": exc.message})
        except Exception as exc:  # noqa: BLE001 - answer, log, keep the connection thread alive
            log.exception("POST %s failed", path)
            self._send_json(500, {"error": f"internal error: {type(exc).__name__}: {exc}"})

    def do_PUT(self):
        self._other_method("PUT")

    def do_DELETE(self):
        self._other_method("DELETE")

    def do_PATCH(self):
        self._other_method("PATCH")

    def _other_method(self, method: str) -> None:
        self.close_connection = True  # a body we did not read may follow
        self._route_error(self.path.split("?", 1)[0], method)

    def _route_error(self, path: str, method: str) -> None:
        allowed = ROUTES.get(path)
        if allowed is None:
            self._send_json(404, {"error": f"no such path {path!r}; the service answers "
                                           f"{', '.join(f'{m} {p}' for p, m in ROUTES.items())}"})
        else:
            self._send_json(405, {"error": f"{method} is not allowed on {path}; use {allowed} {path}"},
                            {"Allow": allowed})

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self.close_connection = True
            raise RequestError(411, "chunked bodies are not accepted; send the JSON with a Content-Length header")
        raw = self.headers.get("Content-Length")
        if raw is None:
            self.close_connection = True
            raise RequestError(411, "missing Content-Length header; send the JSON body with its length")
        try:
            length = int(raw)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise RequestError(400, f"Content-Length must be a non-negative int, got {raw!r}") from None
        limit = self.server.service.config.max_body_bytes
        if length > limit:
            # Read and drop a moderately large body so the client sees the 413 (closing a socket with unread
            # data resets the connection, and the client may lose the answer); close after a huge one.
            if length <= DRAIN_LIMIT_BYTES:
                self._discard(length)
            else:
                self.close_connection = True
            raise RequestError(413, f"body of {length} bytes is larger than the {limit} allowed (max_body_bytes)")
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            raise RequestError(400, f"body ended after {len(body)} of the {length} bytes Content-Length announced")
        return body

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(length, 1 << 16))
            if not chunk:
                self.close_connection = True
                return
            length -= len(chunk)

    def _send_json(self, status: int, obj: dict, headers: dict | None = None) -> None:
        body = json.dumps(obj).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024  # listen backlog: bursts of new connections must not be dropped

    def __init__(self, address, service: TopKService | None):
        self.service = service
        super().__init__(address, _Handler)


def bind(host: str, port: int) -> "_Server":
    """A server listening on ``host:port`` (no service yet): done BEFORE the model is loaded, so a busy port
    fails in one line at once. Raises ``OperationFailed`` when the address cannot be bound."""
    from core.errors import OperationFailed

    try:
        return _Server((host, port), None)
    except OSError as exc:
        reason = "the port is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise OperationFailed(f"cannot listen on {host}:{port}: {reason}; stop the process using it or pass "
                              f"another --port (0 = any free port)") from None


class RunningServer:
    """A server answering on a background thread. ``url`` e.g. "http://127.0.0.1:8080"; ``close()`` stops the
    server, then the service (queued requests are answered first)."""

    def __init__(self, server: _Server, service: TopKService):
        self._server = server
        self.service = service
        self.host, self.port = server.server_address[:2]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="http-server", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
        self.service.close()

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start(service: TopKService, host: str = "127.0.0.1", port: int = 0, server: "_Server | None" = None
          ) -> RunningServer:
    """Serve ``service`` over HTTP on a background thread (``port=0``: any free port, see ``.port``);
    ``server`` = a socket already bound by ``bind`` (then host and port are ignored)."""
    server = server or bind(host, port)
    server.service = service
    return RunningServer(server, service)


def make_config(options: dict | None) -> ServingConfig:
    """``ServingConfig`` from keyword options (unknown keys rejected with the allowed ones listed)."""
    return from_dict(ServingConfig, dict(options or {}), "serving")


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8080, **options) -> int:
    """Load the run, serve it on ``host:port`` until SIGINT / SIGTERM; returns 0.

    ``options`` are ``ServingConfig`` fields (e.g. max_batch=32, reload_interval_s=10). Raises ValueError
    when the index was built from another model version than the query tower (the message says how to fix
    it), FileNotFoundError when the run lacks a model, data or a published index.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = make_config(options)
    server = bind(host, port)  # a busy port fails here, in one line, before ~20 s of model loading
    try:
        service = TopKService.open(run_dir, config)
    except BaseException:
        server.server_close()
        raise
    running = start(service, server=server)
    stop = threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    log.info("listening on %s (POST /topk, GET /healthz, GET /version)", running.url)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        log.info("shutting down")
        running.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
