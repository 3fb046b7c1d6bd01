"""The HTTP front of ``TopKService``: a raw ASGI app on uvicorn (httptools parser, uvloop event loop).

    POST /topk          {"user_id": "196", "k": 10}  or raw features (see ``serving.requests``)
                        200 {"items": [{"item_id", "score"}, ...], "model_version", "index_version", "known_user"}
    GET  /healthz       liveness: 200 {"status": "ok" | "degraded", "reason" (when degraded), ...counters}
    GET  /readyz        readiness: 200 when the model and an index are loaded and their versions agree, else 503
    GET  /version       200 {"model_version", "index_version", "index_factory", "index_count", ...} (no paths)
    GET  /metrics       Prometheus text exposition (``serving.metrics``)
    GET  /openapi.json  the OpenAPI 3.1 document (``serving.openapi``)

Every error is JSON {"error": message}: 400 (bad JSON / fields / types / ranges, malformed HTTP, two
different Content-Length headers), 404 (unknown path), 405 (wrong method, incl. HEAD and OPTIONS, with
Allow), 408 (request not received within read_timeout_s), 411 (no Content-Length), 413 (body above
max_body_bytes), 503 (queue full, timeout, more than max_connections connections, shutting down), 500 (a
bug: logged with its traceback).

Why this stack (measurements in docs/notes/serving.md): the standard library's ThreadingHTTPServer gave
each connection a thread that parsed HTTP in Python under the GIL; at 300 req/s it used ~1.3 cores and p99
went to ~1 s. Here one event-loop thread parses with httptools (C) on uvloop (libuv), each /topk request
is validated on the loop and handed to the micro-batcher's one worker thread (``allow_inline=False``: the
loop never blocks on the tower), and the answer comes back through an asyncio future. No framework sits
on the hot path: the routes are a dict lookup, so Starlette/FastAPI would add per-request cost and
nothing we use (the OpenAPI document is built from the parser's own field list instead of pydantic models).

Connection handling lives in ``_Protocol`` (a subclass of uvicorn's httptools protocol): the connection
cap (a clear 503, then close), the read timeout (408), JSON bodies for HTTP parse errors. ``uvicorn``'s
own ``timeout_keep_alive`` is the idle timeout; its graceful shutdown stops accepting, lets in-flight
requests finish (up to drain_timeout_s), then the service answers what is queued and stops.

``serve(run_dir, host, port, **options)`` binds the port first (a busy port fails in one line before the
model loads), then runs until SIGINT/SIGTERM. ``start(service, host, port)`` runs a server on a background
thread (port 0 = any free port) and returns a ``RunningServer`` for tests and benchmarks.
"""
from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import httptools
import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from core.strict import from_dict
from serving import openapi
from serving.config import ServingConfig
from serving.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from serving.requests import RequestError, decode_json, parse_topk
from serving.service import TopKService

log = logging.getLogger(__name__)

ROUTES = {"/topk": "POST", "/healthz": "GET", "/readyz": "GET", "/version": "GET", "/metrics": "GET",
          "/openapi.json": "GET"}
_JSON = [(b"content-type", b"application/json")]
_REASONS = {400: b"Bad Request", 408: b"Request Timeout", 503: b"Service Unavailable"}


def _json_bytes(obj) -> bytes:
    """orjson (C; ~10x the standard library on a /topk answer), NumPy scalars included; the standard library
    for anything orjson refuses (e.g. an int above 64 bits), so every answer is still JSON."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        return json.dumps(obj).encode("utf-8")


def raw_json_response(status: int, obj: dict) -> bytes:
    """A complete HTTP/1.1 response with a JSON body that closes the connection (for the protocol level)."""
    body = _json_bytes(obj)
    return (b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % (status, _REASONS.get(status, b"Error"), len(body)) + body)


# ------------------------------------------------------------------------------------------- the ASGI app
class TopKApp:
    """ASGI 3 application over a ``TopKService``."""

    def __init__(self, service: TopKService):
        self.service = service
        self.config = service.config
        self._openapi: bytes | None = None
        self.url: str | None = None  # set by the server; logged at start-up

    async def __call__(self, scope, receive, send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                log.info("listening on %s (%s)", self.url,
                         ", ".join(f"{m} {p}" for p, m in ROUTES.items()))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                log.info("shutting down: no new connections; answering the requests in flight")
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope, receive, send) -> None:
        started = time.perf_counter()
        path, method = scope["path"], scope["method"]
        headers: list = []
        close = False
        try:
            allowed = ROUTES.get(path)
            if allowed is None:
                raise RequestError(404, f"no such path {path!r}; the service answers "
                                        f"{', '.join(f'{m} {p}' for p, m in ROUTES.items())}")
            if method != allowed:
                headers = [(b"allow", allowed.encode())]
                close = method not in ("GET", "HEAD")  # a body we do not read may follow
                raise RequestError(405, f"{method} is not allowed on {path}; use {allowed} {path}")
            if path == "/topk":
                try:
                    body = await self._read_body(scope, receive)
                except RequestError:
                    close = True
                    raise
                status, payload = 200, await self._topk(body)
            elif path == "/healthz":
                status, payload = 200, self.service.health()
            elif path == "/readyz":
                ready, payload = self.service.readiness()
                status = 200 if ready else 503
            elif path == "/version":
                status, payload = 200, self.service.version_info()
            elif path == "/metrics":
                await self._send(send, 200, self.service.metrics.exposition(),
                                 [(b"content-type", METRICS_CONTENT_TYPE.encode())])
                self._observe(path, method, 200, started)
                return
            else:  # /openapi.json
                if self._openapi is None:
                    self._openapi = _json_bytes(openapi.build(self.service.user_specs, self.config,
                                                              self.service.model_version))
                await self._send(send, 200, self._openapi, _JSON)
                self._observe(path, method, 200, started)
                return
        except RequestError as exc:
            status, payload = exc.status, {"error": exc.message}
        except Exception as exc:  # noqa: BLE001 - answer, log, keep serving
            log.exception("%s %s failed", method, path)
            status, payload = 500, {"error": f"internal error: {type(exc).__name__}: {exc}"}
        extra = headers + ([(b"connection", b"close")] if close else [])
        await self._send(send, status, _json_bytes(payload), _JSON + extra)
        self._observe(path if path in ROUTES else "other", method, status, started)

    def _observe(self, path: str, method: str, status: int, started: float) -> None:
        self.service.metrics.observe_request(path, method if method in ("GET", "POST") else "other", status,
                                             time.perf_counter() - started)

    @staticmethod
    async def _send(send, status: int, body: bytes, headers: list) -> None:
        await send({"type": "http.response.start", "status": status,
                    "headers": headers + [(b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def _read_body(self, scope, receive) -> bytes:
        lengths, chunked = [], False
        for name, value in scope["headers"]:
            if name == b"content-length":
                lengths.append(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
        if chunked:
            raise RequestError(411, "chunked bodies are not accepted; send the JSON with a Content-Length header")
        if not lengths:
            raise RequestError(411, "missing Content-Length header; send the JSON body with its length")
        if len(set(lengths)) > 1:  # the parser refuses this first; kept so the rule holds on any server
            raise RequestError(400, f"{len(lengths)} different Content-Length headers "
                                    f"({', '.join(v.decode('latin-1') for v in lengths)}); send exactly one")
        raw = lengths[0].decode("latin-1")
        try:
            length = int(raw)
            if length < 0:
                raise ValueError
        except ValueError:
            raise RequestError(400, f"Content-Length must be a non-negative int, got {raw!r}") from None
        limit = self.config.max_body_bytes
        if length > limit:
            raise RequestError(413, f"body of {length} bytes is larger than the {limit} allowed (max_body_bytes)")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError(400, f"the client went away after {size} of the {length} body bytes")
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _topk(self, body: bytes) -> dict:
        service = self.service
        cfg = self.config
        request = parse_topk(decode_json(body), service.user_specs, max_k=cfg.max_k,
                             max_history_items=cfg.max_history_items, default_exclude_seen=cfg.default_exclude_seen)
        future = service.submit(request, allow_inline=False)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), cfg.request_timeout_s)
        except asyncio.TimeoutError:
            future.cancel()
            raise RequestError(503, f"no answer within {cfg.request_timeout_s:g} s (request_timeout_s); the service "
                                    "is overloaded or stuck, retry later") from None


# ------------------------------------------------------------------------------------------- connections
class _Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol plus: a connection cap (503 JSON), a read timeout (408 JSON), JSON bodies
    for malformed HTTP (400). ``limits`` is set on a per-server subclass (see ``_protocol_class``)."""

    limits: "_Limits"

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._reading = False
        self._read_timer = None
        self._turned_away = False
        if len(self.connections) > self.limits.max_connections:
            # Answer, half-close (FIN after the answer), drop what the client sends meanwhile, close soon after:
            # closing at once with the client's request unread would reset the connection and lose the answer.
            self._turned_away = True
            self.limits.refused += 1
            transport.write(raw_json_response(503, {"error": (
                f"too many open connections: {len(self.connections) - 1} are open (max_connections="
                f"{self.limits.max_connections}); retry later, and reuse keep-alive connections")}))
            if transport.can_write_eof():
                transport.write_eof()
            self.loop.call_later(1.0, transport.close)
            return
        self._arm_read_timer()

    def connection_lost(self, exc) -> None:
        self._cancel_read_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._turned_away:
            return
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            reason = str(exc) or type(exc).__name__
            self.send_400_response(f"malformed HTTP request: {reason}; send an HTTP/1.1 request such as "
                                   "POST /topk with a Content-Length header and a JSON body")

    def send_400_response(self, msg: str) -> None:
        self._cancel_read_timer()
        self.transport.write(raw_json_response(400, {"error": msg}))
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._reading = True

    def on_message_complete(self) -> None:
        self._reading = False
        self._cancel_read_timer()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and not self._reading:
            self._arm_read_timer()

    def _arm_read_timer(self) -> None:
        self._cancel_read_timer()
        self._read_timer = self.loop.call_later(self.limits.read_timeout_s, self._read_timed_out)

    def _cancel_read_timer(self) -> None:
        timer = getattr(self, "_read_timer", None)
        if timer is not None:
            timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete and not self._reading:
            return  # the request arrived and is being answered: not ours to time out
        if self._reading:  # a request started but did not arrive in time
            self.transport.write(raw_json_response(408, {"error": (
                f"the request did not arrive within {self.limits.read_timeout_s:g} s (read_timeout_s); "
                "send the whole head and body at once")}))
        self.transport.close()


class _Limits:
    def __init__(self, config: ServingConfig):
        self.max_connections = config.max_connections
        self.read_timeout_s = config.read_timeout_s
        self.refused = 0


def _protocol_class(limits: _Limits) -> type:
    return type("TopKProtocol", (_Protocol,), {"limits": limits})


# ------------------------------------------------------------------------------------------- servers
def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``: made BEFORE the model is loaded, so a busy port fails in one line
    at once. Raises ``OperationFailed`` when the address cannot be bound."""
    from core.errors import OperationFailed

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # bursts of new connections must not be dropped
    except OSError as exc:
        sock.close()
        reason = "the port is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or str(exc)
        raise OperationFailed(f"cannot listen on {host}:{port}: {reason}; stop the process using it or pass "
                              f"another --port (0 = any free port)") from None
    sock.setblocking(False)
    return sock


def _uvicorn_server(service: TopKService, sock: socket.socket) -> tuple[uvicorn.Server, TopKApp]:
    app = TopKApp(service)
    host, port = sock.getsockname()[:2]
    app.url = f"http://{host}:{port}"
    limits = _Limits(service.config)
    config = uvicorn.Config(app, loop="uvloop", http=_protocol_class(limits), ws="none", lifespan="on",
                            interface="asgi3", log_config=None, access_log=False, proxy_headers=False,
                            server_header=False, date_header=False, backlog=2048,
                            timeout_keep_alive=max(1, round(service.config.idle_timeout_s)),
                            timeout_graceful_shutdown=max(1, round(service.config.drain_timeout_s)))
    server = uvicorn.Server(config)
    connections_ref = server.server_state.connections
    service.connection_stats = lambda: {"open_connections": len(connections_ref),
                                        "refused_connections": limits.refused}
    return server, app


class RunningServer:
    """A server answering on a background thread. ``url`` e.g. "http://127.0.0.1:8080"; ``close()`` shuts
    down gracefully (stop accepting, finish in-flight requests, answer what is queued, stop the service)."""

    def __init__(self, service: TopKService, sock: socket.socket):
        self.service = service
        self.host, self.port = sock.getsockname()[:2]
        self._server, self.app = _uvicorn_server(service, sock)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(sock,), name="http-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            raise RuntimeError(f"the HTTP server did not start: {self._error!r}")

    def _run(self, sock) -> None:
        try:
            self._server.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001 - reported by __init__ / close
            self._error = exc
            log.exception("HTTP server failed")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def shutdown(self, timeout: float | None = None) -> None:
        """Stop the HTTP server gracefully (in-flight requests are answered); the service stays open."""
        self._server.should_exit = True
        self._thread.join(timeout)

    def close(self) -> None:
        self.shutdown()
        self.service.close()

    def __enter__(self) -> "RunningServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start(service: TopKService, host: str = "127.0.0.1", port: int = 0, sock: socket.socket | None = None
          ) -> RunningServer:
    """Serve ``service`` over HTTP on a background thread (``port=0``: any free port, see ``.port``);
    ``sock`` = a socket already bound by ``bind`` (then host and port are ignored)."""
    return RunningServer(service, sock or bind(host, port))


def make_config(options: dict | None) -> ServingConfig:
    """``ServingConfig`` from keyword options (unknown keys rejected with the allowed ones listed)."""
    return from_dict(ServingConfig, dict(options or {}), "serving")


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 8080, **options) -> int:
    """Load the run, serve it on ``host:port`` until SIGINT / SIGTERM (graceful: in-flight requests are
    answered); returns 0.

    ``options`` are ``ServingConfig`` fields (e.g. max_batch=32, reload_interval_s=10). Raises
    ``OperationFailed`` when the port cannot be bound (checked first), ValueError when the index was built
    from another model version than the query tower, FileNotFoundError when the run lacks a model, data or
    a published index. ``workers`` > 1: see ``_serve_workers``.
    """
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = make_config(options)
    sock = bind(host, port)  # a busy port fails here, in one line, before ~20 s of model loading
    if config.workers > 1:
        return _serve_workers(run_dir, sock, config)
    return _serve_one(run_dir, sock, config)


def _serve_one(run_dir, sock: socket.socket, config: ServingConfig, worker: int | None = None) -> int:
    try:
        service = TopKService.open(run_dir, config)
    except BaseException:
        sock.close()
        raise
    service.worker = worker
    service.freeze_long_lived()
    if config.search_threads is not None:
        import faiss

        faiss.omp_set_num_threads(config.search_threads)
    # uvicorn catches SIGINT / SIGTERM, shuts down gracefully, then re-raises the signal under the handlers
    # that were there before: these record it, so a requested stop ends with exit 0 and the service closed.
    received: list[int] = []
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda signum, frame: received.append(signum))
    try:
        server, _ = _uvicorn_server(service, sock)
        server.run(sockets=[sock])
    finally:
        service.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("stopped%s%s", "" if worker is None else f" worker {worker}",
                 f" on signal {received[0]}" if received else "")
    return 0


def _stop_with_parent() -> None:
    """Linux: this process gets SIGTERM when its parent dies (prctl PR_SET_PDEATHSIG), so a worker whose
    supervisor was killed with SIGKILL drains and exits instead of serving on as an orphan."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        if os.getppid() == 1:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the supervisor's SIGTERM is the only way to stop
        pass


def _serve_workers(run_dir, sock: socket.socket, config: ServingConfig) -> int:
    """``config.workers`` processes forked after the port is bound (before TensorFlow is imported), each
    accepting on the same listening socket and owning a whole service: its query tower, index, batcher,
    index watcher (each reloads on its own) and metrics (``/metrics`` and ``/healthz`` describe the worker
    that answered: ``twotower_worker_info{worker,pid}``, "worker" in /healthz). Each worker loads its own
    copy of the index (memory: workers x (tower + index)).

    The parent only supervises: SIGTERM / SIGINT are passed on to every worker as SIGTERM (each drains
    its in-flight requests and exits 0), and the parent returns 0 when all did. Workers run in their own
    process groups, so a terminal's Ctrl-C reaches them once, through the parent. When a worker ends on
    its own (it failed to load, or crashed) the others are stopped too and the exit status is the
    worker's (a supervisor such as systemd restarts the whole service). A worker whose parent dies gets
    SIGTERM (Linux ``PR_SET_PDEATHSIG``) and drains too."""
    from core.cli import one_line

    children: dict[int, int] = {}
    for worker in range(config.workers):
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the parent's stack
            code = 1
            try:
                os.setpgid(0, 0)
                _stop_with_parent()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(sig, signal.SIG_DFL)
                code = _serve_one(run_dir, sock, config, worker)
            except (OSError, ValueError, TypeError, RuntimeError) as exc:
                print(f"python -m serving: error: worker {worker}: {one_line(exc)}", file=sys.stderr, flush=True)
                code = 2
            except BaseException:  # noqa: BLE001 - a worker must never fall back into the parent's code
                log.exception("worker %d failed", worker)
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = worker
    sock.close()
    log.info("%d workers: %s", len(children), ", ".join(f"{w} pid {p}" for p, w in children.items()))
    stopping: list = []

    def stop_all(*_):
        stopping.append(True)
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, stop_all)
    status = 0
    try:
        while children:
            try:
                pid, raw = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            worker = children.pop(pid)
            code = os.waitstatus_to_exitcode(raw)
            if code != 0:
                log.error("worker %d (pid %d) exited with status %d", worker, pid, code)
                status = status or (code if code > 0 else 1)
            if not stopping:
                log.error("worker %d (pid %d) ended on its own; stopping the others", worker, pid)
                stop_all()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status
