"""A real HTTP server on 127.0.0.1 for tests: serves recorded files, counts and records requests.

Usage::

    with LocalHTTPServer() as server:
        server.add("/api/daily_papers?date=2024-05-29", file=FIXTURES / "....json")
        server.add("/feed.xml", file=..., etag='"v1"')      # honours If-None-Match → 304
        server.add("/boom", status=500)                       # always 500
        server.add("/flaky", file=..., fail_first=[503, 503])  # 503 twice, then 200
        server.add("/busy", file=..., fail_first=[429], retry_after="2")  # 429 + Retry-After
        server.add("/slow", body=..., trickle_s=1.0)         # one body byte per second
        server.add("/huge", size=300 * 2**20)                 # 300 MB generated, streamed
        server.add("/huge2", size=..., declare_length=False)  # ... without Content-Length
        url = server.url("/api/daily_papers")
        ...
        assert server.count("/boom") == 3
        assert server.requests[0].headers["user-agent"].startswith("digest/")

:meth:`LocalHTTPServer.bytes_sent` tells how much of a body went out before the client hung up.

Routes are matched on path and query exactly (``/p?date=2024-05-29``); a route registered
without a query matches its path with any query. Anything else is a 404. Each handled request
is appended to :attr:`LocalHTTPServer.requests` with its headers (lower-case names) and the
status it got. The server runs in a thread (``ThreadingHTTPServer``) on an ephemeral port.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

JSON = "application/json; charset=utf-8"
ATOM = "application/atom+xml; charset=utf-8"
RSS = "application/rss+xml; charset=utf-8"
POLL_INTERVAL_S = 0.01
"""How often the serving thread checks for shutdown, seconds (keeps teardown fast)."""


@dataclass
class Route:
    """What the server answers on one path (+ query).

    Attributes:
        body: the response body for a 200.
        status: the status returned (after ``fail_first`` is used up).
        content_type: the ``Content-Type`` header.
        etag: sent as ``ETag``; a request with a matching ``If-None-Match`` gets a 304.
        last_modified: sent as ``Last-Modified``; an equal ``If-Modified-Since`` gets a 304.
        headers: extra response headers.
        fail_first: statuses returned by the first requests, one each, before ``status``.
        delay_s: seconds to wait before answering (for timeout tests).
        retry_after: sent as ``Retry-After`` with the ``fail_first`` answers.
        trickle_s: seconds between the body's bytes (one byte at a time; headers at once).
        size: serve a generated body of this many bytes instead of ``body`` (JSON-looking
            filler, written in chunks, never held in memory whole).
        declare_length: send ``Content-Length`` (else the body ends when the connection
            closes, as HTTP/1.0 allows).
    """

    body: bytes = b""
    status: int = 200
    content_type: str = JSON
    etag: str | None = None
    last_modified: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    fail_first: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    retry_after: str | None = None
    trickle_s: float = 0.0
    size: int | None = None
    declare_length: bool = True


GENERATED_CHUNK = b'{"paper": {"id": "0000.00000", "title": "filler"}}, ' * 1024
"""What a generated body (:attr:`Route.size`) repeats: about 50 KiB per write."""


@dataclass(frozen=True)
class RecordedRequest:
    """One request the server handled.

    Attributes:
        method: ``GET``, ``HEAD``...
        target: path and query as sent, e.g. ``/api/daily_papers?date=2024-05-29``.
        headers: request headers, names lower-cased.
        status: the status code answered.
    """

    method: str
    target: str
    headers: dict[str, str]
    status: int

    @property
    def path(self) -> str:
        """The path without the query."""
        return urlsplit(self.target).path


class LocalHTTPServer:
    """A threaded HTTP/1.0 server on ``127.0.0.1`` with an ephemeral port; a context manager."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[RecordedRequest] = []
        self._sent: dict[str, int] = {}
        self._lock = threading.Lock()
        self._httpd = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------
    def start(self) -> LocalHTTPServer:
        """Start serving in a background thread."""
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": POLL_INTERVAL_S}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> LocalHTTPServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- configuration -----------------------------------------------------------------------
    @property
    def port(self) -> int:
        """The ephemeral TCP port."""
        return int(self._httpd.server_address[1])

    def url(self, target: str = "/") -> str:
        """The absolute URL of ``target`` (path and optional query) on this server."""
        return f"http://127.0.0.1:{self.port}{target}"

    def add(
        self,
        target: str,
        body: bytes | str = b"",
        *,
        file: Path | None = None,
        status: int = 200,
        content_type: str = JSON,
        etag: str | None = None,
        last_modified: str | None = None,
        headers: dict[str, str] | None = None,
        fail_first: Sequence[int] = (),
        delay_s: float = 0.0,
        retry_after: str | None = None,
        trickle_s: float = 0.0,
        size: int | None = None,
        declare_length: bool = True,
    ) -> Route:
        """Serve ``body`` (or the bytes of ``file``) at ``target`` (path, optionally ``?query``).

        Returns:
            The route; change its fields to change later answers.
        """
        data = file.read_bytes() if file is not None else body
        route = Route(
            body=data.encode() if isinstance(data, str) else data,
            status=status,
            content_type=content_type,
            etag=etag,
            last_modified=last_modified,
            headers=dict(headers or {}),
            fail_first=list(fail_first),
            delay_s=delay_s,
            retry_after=retry_after,
            trickle_s=trickle_s,
            size=size,
            declare_length=declare_length,
        )
        with self._lock:
            self.routes[target] = route
        return route

    def add_directory(
        self, path: str, directory: Path, *, param: str = "date", pattern: str = "*.json"
    ) -> list[str]:
        """Serve every file of ``directory`` at ``{path}?{param}={file stem}``.

        E.g. ``add_directory("/api/daily_papers", FIXTURES / "hf-daily-papers")`` serves
        ``2024-05-29.json`` at ``/api/daily_papers?date=2024-05-29``.

        Returns:
            The targets added, sorted.
        """
        targets = []
        for file in sorted(directory.glob(pattern)):
            target = f"{path}?{param}={file.stem}"
            self.add(target, file=file)
            targets.append(target)
        return targets

    # --- inspection --------------------------------------------------------------------------
    def count(self, target: str | None = None) -> int:
        """Requests handled for ``target``: exact path+query, or any query if it has none."""
        with self._lock:
            requests = list(self.requests)
        if target is None:
            return len(requests)
        if "?" in target:
            return sum(1 for r in requests if r.target == target)
        return sum(1 for r in requests if r.path == target)

    def requests_for(self, target: str) -> list[RecordedRequest]:
        """The recorded requests whose path (and query, if given) match ``target``."""
        with self._lock:
            requests = list(self.requests)
        if "?" in target:
            return [r for r in requests if r.target == target]
        return [r for r in requests if r.path == target]

    def bytes_sent(self, target: str) -> int:
        """Body bytes written for ``target`` (exact path+query as requested), all requests."""
        with self._lock:
            return self._sent.get(target, 0)

    # --- serving -----------------------------------------------------------------------------
    def _count_sent(self, target: str, n: int) -> None:
        with self._lock:
            self._sent[target] = self._sent.get(target, 0) + n

    def _find(self, target: str) -> Route | None:
        with self._lock:
            return self.routes.get(target) or self.routes.get(urlsplit(target).path)

    def _record(
        self, method: str, target: str, headers: Iterable[tuple[str, str]], status: int
    ) -> None:
        request = RecordedRequest(method, target, {k.lower(): v for k, v in headers}, status)
        with self._lock:
            self.requests.append(request)

    def _answer(self, target: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        route = self._find(target)
        if route is None:
            return 404, {"Content-Type": JSON}, b'{"error": "Not Found"}'
        if route.delay_s:
            time.sleep(route.delay_s)
        with self._lock:
            failing = bool(route.fail_first)
            status = route.fail_first.pop(0) if route.fail_first else route.status
        out = {"Content-Type": route.content_type, **route.headers}
        if failing and route.retry_after is not None:
            out["Retry-After"] = route.retry_after
        if route.etag:
            out["ETag"] = route.etag
        if route.last_modified:
            out["Last-Modified"] = route.last_modified
        if status != 200:
            return status, out, route.body if status < 400 else b'{"error": "simulated"}'
        inm = headers.get("if-none-match")
        if route.etag and inm and (inm.strip() == "*" or route.etag in _etags(inm)):
            return 304, out, b""
        ims = headers.get("if-modified-since")
        if route.last_modified and ims == route.last_modified and not inm:
            return 304, out, b""
        return 200, out, route.body

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, out, body = server._answer(self.path, headers)
                server._record(self.command, self.path, self.headers.items(), status)
                route = server._find(self.path)
                generated = route.size if route and status == 200 else None
                length = generated if generated is not None else len(body)
                self.send_response(status)
                for name, value in out.items():
                    self.send_header(name, value)
                if status != 304 and (route is None or route.declare_length):
                    self.send_header("Content-Length", str(length))
                self.end_headers()
                if status == 304:
                    return
                if generated is not None:
                    self._write_generated(generated)
                elif route is not None and route.trickle_s and status == 200:
                    for i in range(len(body)):
                        self._write(body[i : i + 1])
                        time.sleep(route.trickle_s)
                else:
                    self._write(body)

            def _write(self, data: bytes) -> None:
                self.wfile.write(data)
                self.wfile.flush()
                server._count_sent(self.path, len(data))

            def _write_generated(self, size: int) -> None:
                self._write(b"[")
                left = size - 2
                while left > 0:
                    chunk = GENERATED_CHUNK[:left]
                    self._write(chunk)
                    left -= len(chunk)
                self._write(b"]")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep test output clean

        return Handler


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore clients that hung up (a timed-out test client), report anything else."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _etags(header: str) -> list[str]:
    return [tag.strip() for tag in header.split(",") if tag.strip()]


def closed_port() -> int:
    """A local TCP port with nothing listening (connections are refused)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
