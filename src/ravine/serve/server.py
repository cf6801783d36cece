"""The playground's HTTP server: the standard library's ThreadingHTTPServer, JSON and NDJSON.

It binds and serves the page before the playground is loaded (:meth:`PlaygroundServer.load`:
matplotlib, ``ravine.viz``): the page shows at once and its API requests wait, bounded, for the
load. Its optimizers are built without importing torch._dynamo (:mod:`ravine.optim.lazy_dynamo`).

One thread per request is plenty on loopback for one person's page; what keeps it responsive is
:class:`~ravine.serve.playground.Playground`'s single computation slot, where a page's stale
requests are dropped instead of queued. Every request is bounded (body size, socket timeout,
slot wait), static files come from the package (nothing from a CDN), and the page's Content
Security Policy lets it talk to this server only.
"""

from __future__ import annotations

import gc
import json
import re
import socket
import sys
import threading
import time
import traceback
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from ravine.serve.errors import MAX_CLIENT_CHARS, BusyError, PlaygroundError
from ravine.serve.startcache import Answer, StartCache, parse_key, request_key, stream_answer
from ravine.serve.workers import Workers

if TYPE_CHECKING:
    from ravine.serve.playground import Playground

#: Largest request body accepted (a page state is a few hundred bytes).
MAX_BODY = 64 * 1024
#: Seconds a connection may sit idle mid-request before it is closed.
SOCKET_TIMEOUT = 30.0
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
_STATIC_NAME = re.compile(r"^[a-z0-9_\-]+\.[a-z]+$")
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
#: Where the page looks for bench reports when none is given: ``ravine report``'s and
#: ``ravine demo``'s default output, under the folder ``ravine serve`` runs in.
FOUND_REPORTS = ("bench-report/report.html", "out/demo/bench-report/report.html")
#: How long an API request waits for the playground to load (imports, first optimizer).
LOAD_SECONDS = 120.0
#: The largest bench report served (``ravine report`` writes one self-contained HTML page).
MAX_REPORT_BYTES = 64 * 1024 * 1024
#: A report is shown, never run: its own inline styles and data: images, no script at all.
REPORT_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
    "frame-ancestors 'none'"
)
#: The header of an answer replayed from the start cache (:mod:`ravine.serve.startcache`).
REPLAYED = {"X_Ravine_Start_Cache": "replayed"}
#: The JSON routes answered from the playground (``/api/links`` and ``/api/export`` aside).
API_ROUTES = (
    "/api/optimizers",
    "/api/surfaces",
    "/api/contours",
    "/api/state",
    "/api/inspect",
    "/api/stats",
)
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


def static_file(name: str) -> bytes | None:
    """A file of the page shipped in ``ravine/serve/static`` (None if there is no such file)."""
    if not _STATIC_NAME.match(name):
        return None
    entry = resources.files("ravine.serve").joinpath("static", name)
    return entry.read_bytes() if entry.is_file() else None


def _hostname(header: str) -> str:
    """The host of a Host header, without the port (``[::1]:8000`` -> ``::1``)."""
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Handler(BaseHTTPRequestHandler):
    """Routes: the page and its files, ``/api/*`` as JSON, ``/api/trajectories`` as NDJSON."""

    server: PlaygroundServer
    timeout = SOCKET_TIMEOUT
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: a stream's headers, paths and last line are separate small writes, and with
    # Nagle's algorithm each waits for the page's (delayed, up to 40 ms) ACK of the one before.
    disable_nagle_algorithm = True
    server_version = "ravine-serve"

    # -- plumbing ------------------------------------------------------------------------------

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write(f"ravine serve: {self.address_string()} {format % args}\n")

    def _headers(
        self, status: int, content_type: str, length: int | None, csp: str = CSP, **extra: str
    ) -> None:
        """The status line and headers (``extra``: more, ``_`` for ``-`` in their names); the
        caller ends them."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", csp)
        self.send_header("Referrer-Policy", "no-referrer")
        for key, value in extra.items():
            self.send_header(key.replace("_", "-"), value)

    def _send(
        self, status: int, body: bytes, content_type: str, csp: str = CSP, **extra: str
    ) -> None:
        self._headers(status, content_type, len(body), csp, **extra)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload: Any, status: int = HTTPStatus.OK, **extra: str) -> None:
        body = json.dumps(payload, allow_nan=False).encode()
        self._send(status, body, "application/json", **extra)

    def _error(self, status: int, message: str) -> None:
        # A refused POST's body may be unread: it must not be taken for the next request on
        # this connection (send_header closes it after the answer).
        extra = {"Connection": "close"} if self.command == "POST" else {}
        self._json({"error": message}, status, **extra)

    def _host_allowed(self) -> bool:
        """On loopback, only loopback names: a page elsewhere cannot reach this server through
        a DNS name rebound to 127.0.0.1."""
        if not self.server.loopback_only:
            return True
        return _hostname(self.headers.get("Host", "")) in LOOPBACK_HOSTS

    def _body(self) -> dict[str, Any]:
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            raise PlaygroundError("Content-Length is not a number") from None
        if not 0 <= length <= MAX_BODY:
            raise PlaygroundError(f"request body of {length} bytes; expected at most {MAX_BODY}")
        raw = self.rfile.read(length) if length else b"{}"
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise PlaygroundError("request body is not JSON") from None
        if not isinstance(payload, dict):
            raise PlaygroundError("request body: expected a JSON object")
        return payload

    # -- dispatch ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _dispatch(self, method: str) -> None:
        if not self._host_allowed():
            self._error(HTTPStatus.FORBIDDEN, "Host is not a loopback name")
            return
        url = urlsplit(self.path)
        query = dict(parse_qsl(url.query, keep_blank_values=True))
        try:
            if method == "POST" and url.path == "/api/trajectories":
                self._trajectories(self._body())
            elif method == "GET":
                self._get(url.path, query)
            else:
                self._error(HTTPStatus.METHOD_NOT_ALLOWED, f"{method} {url.path} is not served")
        except (PlaygroundError, ValueError) as err:
            self._error(HTTPStatus.BAD_REQUEST, str(err))
        except BusyError as err:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, str(err))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the page moved on (a newer request aborted this one)
        except Exception as err:  # the page shows the message, stderr the trace
            traceback.print_exc(file=sys.stderr)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(err).__name__}: {err}")

    def _get(self, path: str, query: Mapping[str, str]) -> None:
        if path in ("/", "/index.html"):
            path = "/static/index.html"
        if path.startswith("/static/"):
            data = static_file(path[len("/static/") :])
            if data is None:
                self._error(HTTPStatus.NOT_FOUND, f"{path} is not a file of the page")
                return
            suffix = path[path.rindex(".") :]
            self._send(HTTPStatus.OK, data, STATIC_TYPES.get(suffix, "application/octet-stream"))
            return
        if path == "/report" or path.startswith("/report/"):
            data = self.server.report_bytes(path[len("/report/") :] or "0")
            if data is None:
                self._error(
                    HTTPStatus.NOT_FOUND,
                    f"{path}: no such bench report (start with --report PATH, or run ravine "
                    f"serve where {' or '.join(FOUND_REPORTS)} is)",
                )
                return
            self._send(HTTPStatus.OK, data, "text/html; charset=utf-8", csp=REPORT_CSP)
            return
        if path == "/api/links":
            self._json(self.server.links())
            return
        if path == "/api/export":
            data, content_type, name = self.server.playground.export(query)
            self._send(
                HTTPStatus.OK,
                data,
                content_type,
                Content_Disposition=f'attachment; filename="{name}"',
            )
            return
        if path not in API_ROUTES:
            self._error(HTTPStatus.NOT_FOUND, f"{path} is not served")
            return
        key = request_key(path, query)
        kept = self.server.replay(key)
        if kept is not None:
            self._send(HTTPStatus.OK, kept[0].encode(), "application/json", **REPLAYED)
            return
        body = json.dumps(self.server.api(path, query), allow_nan=False)
        self._send(HTTPStatus.OK, body.encode(), "application/json")
        self.server.capture(key, (body,))

    def _trajectories(self, body: Mapping[str, Any]) -> None:
        client = body.get("client")
        if client is not None and (not isinstance(client, str) or len(client) > MAX_CLIENT_CHARS):
            raise PlaygroundError(
                f"client: expected a string of at most {MAX_CLIENT_CHARS} characters"
            )
        seq = body.get("seq", 0)
        if isinstance(seq, bool) or not isinstance(seq, int):
            raise PlaygroundError(f"seq={seq!r}: expected an integer")
        key = request_key("/api/trajectories", body)
        kept = self.server.replay(key)
        if kept is not None:
            began = time.perf_counter()

            def done() -> Iterator[dict[str, Any]]:
                ms = round(1000 * (time.perf_counter() - began), 2)
                yield {**json.loads(kept[-1]), "replayed": True, "server_ms": ms}

            self._stream(kept[:-1], done(), **REPLAYED)
            return
        lines = self.server.playground.stream(body, client=client, seq=seq)
        sent: list[dict[str, Any]] = []
        try:
            # The first line is computed before the headers go out, so a bad request is a plain
            # 400 with ravine's message rather than an error inside a 200 stream.
            first = next(lines)
            self._stream([first], _tee(lines, sent))
        finally:
            lines.close()  # a page that went away frees the computation slot at once
        answer = stream_answer([first, *sent])
        if answer is not None:
            self.server.capture(key, answer)

    def _stream(
        self,
        head: Iterable[dict[str, Any] | str],
        rest: Iterable[dict[str, Any] | str],
        **extra: str,
    ) -> None:
        """NDJSON, chunked: ``head``'s lines, then ``rest``'s as they come (a line is a payload,
        or JSON text sent as it is)."""
        self._headers(
            HTTPStatus.OK, "application/x-ndjson", None, Transfer_Encoding="chunked", **extra
        )
        self.end_headers()

        def chunk(payload: dict[str, Any] | str) -> None:
            text = payload if isinstance(payload, str) else json.dumps(payload, allow_nan=False)
            data = text.encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        try:
            for payload in head:
                chunk(payload)
            for payload in rest:
                chunk(payload)
        except (ValueError, BusyError) as err:
            chunk({"error": str(err)})
        except (BrokenPipeError, ConnectionResetError):
            raise
        except Exception as err:  # headers are out: report inside the stream
            traceback.print_exc(file=sys.stderr)
            chunk({"error": f"{type(err).__name__}: {err}"})
        self.wfile.write(b"0\r\n\r\n")


class PlaygroundServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer holding the :class:`Playground` its handlers answer from.

    Without a ``playground`` the server makes its own in :meth:`load` (``warm_up`` calls it in
    the background); until then ``playground`` waits for it, at most :data:`LOAD_SECONDS`.
    """

    daemon_threads = True
    # A restarted `ravine serve` can take its port back at once.
    allow_reuse_address = True
    # Connections waiting to be accepted (socketserver's default is 5): a page's burst of
    # requests (its start, a drag) overflowed 5 and had connections reset under load.
    request_queue_size = 64

    def __init__(
        self,
        address: tuple[str, int],
        playground: Playground | None = None,
        *,
        verbose: bool = False,
        workers: int = 0,
        report: Path | Sequence[Path] | None = None,
        start_cache: StartCache | None = None,
    ) -> None:
        self._playground = playground
        self.start_cache = start_cache
        self._warming = False
        self._workers = workers
        self._loaded = threading.Event()
        self._load_lock = threading.Lock()
        self._load_error: BaseException | None = None
        if playground is not None:
            self._loaded.set()
        given = [] if report is None else [report] if isinstance(report, Path) else list(report)
        self.reports: list[Path] = given
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)
        self.verbose = verbose
        self.loopback_only = address[0] in LOOPBACK_HOSTS

    # -- the playground, loaded once ------------------------------------------------------------

    def load(self) -> Playground:
        """Import the playground and make it (once; every later call returns it)."""
        with self._load_lock:
            if self._playground is None and self._load_error is None:
                try:
                    with _collector_paused():
                        self._playground = _make_playground(self._workers)
                        # The modules just imported (torch's, numpy's: about 170,000 objects)
                        # live as long as the server: moved out of the collector's view, a
                        # collection no longer scans them. The first full one used to fall
                        # inside the first picture (60-70 ms of it) and later ones inside
                        # interactive requests. Frozen before the collector is back on: else
                        # they all sit in its youngest generation, and the first allocation
                        # after scans them (80-90 ms).
                        gc.freeze()
                except BaseException as err:
                    self._load_error = err
                    raise
                finally:
                    self._loaded.set()
            if self._playground is None:
                raise RuntimeError(f"the playground failed to load: {self._load_error!r}")
            return self._playground

    @property
    def playground(self) -> Playground:
        if not self._loaded.is_set() and self._load_lock.acquire(blocking=False):
            # No load in progress (a server used without warm_up): load here.
            self._load_lock.release()
            return self.load()
        if not self._loaded.wait(LOAD_SECONDS):
            raise BusyError(f"the playground took more than {LOAD_SECONDS:g} s to start")
        return self.load()

    # -- answers -------------------------------------------------------------------------------

    def api(self, path: str, query: Mapping[str, str]) -> Any:
        """The payload of the JSON route ``path`` (one of :data:`API_ROUTES`)."""
        pg = self.playground  # loads it first: ravine.optim.lazy_dynamo, then torch
        from ravine.serve.playground import optimizer_controls, palette

        if path == "/api/optimizers":
            return {"optimizers": optimizer_controls(), "palette": palette()}
        if path == "/api/surfaces":
            return {"surfaces": self.surface_list()}
        if path == "/api/contours":
            return pg.contour(query)
        if path == "/api/state":
            return pg.state(query)
        if path == "/api/inspect":
            return pg.inspect(query)
        if path == "/api/stats":
            return {**pg.stats, "workers": pg.workers.n, "workers_ready": pg.workers.ready}
        raise ValueError(f"{path} is not a JSON route")

    def answer(self, key: str) -> Answer | None:
        """The answer to a request of the start cache, computed now (its checks)."""
        route, params = parse_key(key)
        if route == "/api/trajectories":
            return stream_answer(self.playground.stream(params))
        return (json.dumps(self.api(route, params), allow_nan=False),)

    def replay(self, key: str) -> Answer | None:
        """The start cache's answer to ``key`` while the playground loads (None: compute it)."""
        if self.start_cache is None or not self._warming or self._loaded.is_set():
            return None
        return self.start_cache.answer(key)

    def capture(self, key: str, answer: Answer) -> None:
        """An answer given, for the start cache (which keeps the first of each route)."""
        if self.start_cache is not None and self._warming:
            self.start_cache.capture(key, answer)

    def server_close(self) -> None:
        super().server_close()
        if self._playground is not None:
            self._playground.workers.close()

    # -- bench reports ---------------------------------------------------------------------------

    @property
    def report(self) -> Path | None:
        """The first bench report the page links (None: none given or found)."""
        found = self.found_reports()
        return found[0] if found else None

    def found_reports(self) -> list[Path]:
        """The reports given (``--report``), else those ``ravine report`` and ``ravine demo``
        write by default under the working folder (:data:`FOUND_REPORTS`), looked for now."""
        if self.reports:
            return self.reports
        return [Path(p) for p in FOUND_REPORTS if Path(p).is_file()]

    def links(self) -> dict[str, Any]:
        """What the page's header links to: the bench reports (``report``: the first)."""
        found = self.found_reports()
        return {
            "report": "/report" if found else None,
            "reports": [{"href": f"/report/{i}", "name": str(p)} for i, p in enumerate(found)],
        }

    def report_bytes(self, index: str = "0") -> bytes | None:
        """Bench report ``index``'s HTML, read now (a report written again shows at once)."""
        found = self.found_reports()
        if not index.isdigit() or int(index) >= len(found):
            return None
        return check_report(found[int(index)]).read_bytes()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else str(host)
        return f"http://{shown}:{port}/"

    @staticmethod
    def surface_list() -> list[dict[str, Any]]:
        from ravine import surfaces
        from ravine.serve.playground import surface_info

        return [surface_info(surfaces.get(n), n) for n in surfaces.names()]

    def warm_up(self) -> threading.Thread:
        """Load the playground and compute the default picture in the background, so the
        first page load does not pay for them; then start the worker processes."""

        def work() -> None:
            try:
                if self.start_cache is not None:
                    self.start_cache.open()
                playground = self.load()
                playground.warm_up()
                if self.start_cache is not None:
                    self.start_cache.verify(self.answer)
                # After the first picture: spawning workers competes with it for the cores.
                playground.workers.start()
            except Exception:  # a failed warm-up only costs the first page time
                traceback.print_exc(file=sys.stderr)

        self._warming = True
        thread = threading.Thread(target=work, name="ravine-serve-warm-up", daemon=True)
        thread.start()
        return thread


def _tee(lines: Iterable[dict[str, Any]], into: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """``lines``, each also put in ``into`` as it passes."""
    for line in lines:
        into.append(line)
        yield line


def _make_playground(workers: int) -> Playground:
    """Import the playground (torch, ravine.viz) and make it."""
    # The server never compiles unless a page asks for impl=compiled: its optimizers need not
    # import torch._dynamo (1.5 s of the first picture); see ravine.optim.lazy_dynamo. Called
    # under the load lock, so no request of this server can import dynamo before the hook is in
    # place; not in make_server, whose caller would then wait for torch (1-2 s) before it can
    # print the address.
    from ravine.optim import lazy_dynamo

    lazy_dynamo.defer()
    from ravine.serve.playground import Playground

    return Playground(workers=Workers(workers))


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off for the block (as it was before, after it).

    Importing torch allocates about 170,000 long-lived objects, and each full collection the
    allocations trigger scans all those made so far: with the collector off, `import torch` took
    1.18-1.22 s instead of 1.30-1.32 s here, on the way to the first picture. The block makes
    no garbage cycles worth collecting early (the other threads meanwhile serve static files
    or wait for the load).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def check_report(path: str | Path) -> Path:
    """``path`` if it is an HTML file of a sensible size (``ravine report`` writes one)."""
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm") or not path.is_file():
        raise ValueError(f"report={str(path)!r}: expected an HTML file written by ravine report")
    size = path.stat().st_size
    if size > MAX_REPORT_BYTES:
        raise ValueError(
            f"report={str(path)!r} is {size} bytes; expected at most {MAX_REPORT_BYTES}"
        )
    return path


def make_server(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    verbose: bool = False,
    workers: int = 0,
    report: str | Path | Sequence[str | Path] | None = None,
    start_cache: str | Path | None = None,
) -> PlaygroundServer:
    """A playground server bound to ``host:port`` (port 0: a free one; see ``server.url``),
    computing in ``workers`` processes besides its own (0: in its own only), and linking the
    bench report(s) ``report`` (HTML files from ``ravine report``; None: those found in the
    working folder, :data:`FOUND_REPORTS`) from the page at ``/report/N``.

    The playground itself loads on first use, or in the background after ``warm_up()``; while
    it does, the first requests are answered from the start cache file ``start_cache`` (None:
    none; :mod:`ravine.serve.startcache`, ``ravine serve``'s default)."""
    if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
        raise ValueError(f"port={port!r}: expected an integer from 0 to 65535 (0: a free port)")
    Workers(workers)  # checked before anything is bound
    given = [report] if isinstance(report, (str, Path)) else list(report or ())
    checked = [check_report(r) for r in given] or None
    cache = None if start_cache is None else StartCache(Path(start_cache))
    return PlaygroundServer(
        (host, port), verbose=verbose, workers=workers, report=checked, start_cache=cache
    )


@contextmanager
def running(
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    verbose: bool = False,
    workers: int = 0,
    report: str | Path | Sequence[str | Path] | None = None,
) -> Iterator[PlaygroundServer]:
    """A playground server answering from a background thread for the ``with`` block (tests,
    benchmarks, notebooks); shut down and closed after it."""
    server = make_server(host, port, verbose=verbose, workers=workers, report=report)
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
    )
    thread.start()
    server.load().workers.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
