"""Connection limits of ``digest serve``'s HTTP server: a request deadline and a connection cap.

uvicorn closes a keep-alive connection that stays idle between requests
(``timeout_keep_alive``), but it has no deadline for *reading* a request: a client that sends
half a request head, or announces a body and never sends it, holds a connection and its file
descriptor for as long as it likes. A few thousand such clients (slowloris) exhaust the
process's file descriptors, and then nothing is answered, not even ``/healthz``. uvicorn's
``limit_concurrency`` does not help: it only answers 503 to complete requests once the limit
of open connections is reached, the health check included, and it never closes the idle ones.

:func:`guarded_h11_protocol` makes uvicorn's h11 protocol class (``uvicorn.Config(http=...)``)
with two limits:

* **request deadline**: a request (head and body) must arrive within ``request_timeout``
  seconds of the connection opening, or of the previous response on a kept-alive connection;
  otherwise the connection is closed. The time the application takes to answer does not count.
* **connection cap**: at most ``max_connections`` connections are open. A new connection above
  the cap closes the connection that has been waiting longest for its request (a slow client
  loses its place, a new client is served); if every other connection has a request in
  progress, the new one is closed instead.

The cap is also kept under half of the process's file descriptor limit (``RLIMIT_NOFILE``,
:func:`connection_cap`), so the state store, the SMTP connections and the log files always have
descriptors left.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger("digest.web")

DEFAULT_MAX_CONNECTIONS = 500
"""Open connections at most (then also at most half of ``RLIMIT_NOFILE``)."""
DEFAULT_REQUEST_TIMEOUT_S = 10.0
"""Seconds a client has to send a whole request (head and body, at most 16 KiB here)."""
KEEP_ALIVE_TIMEOUT_S = 5
"""Seconds an idle kept-alive connection stays open between requests (uvicorn's option)."""
MIN_BACKLOG = 64
MAX_BACKLOG = 2048
"""Bounds of the listen backlog (:func:`accept_backlog`; uvicorn's default is 2048)."""
SHED_LOG_INTERVAL_S = 60.0
"""At most one warning per this many seconds about connections closed at the cap."""
_READING = (h11.IDLE, h11.SEND_BODY)
"""h11 states of the client's side while its request has not fully arrived."""


def connection_cap(max_connections: int = DEFAULT_MAX_CONNECTIONS) -> int:
    """``max_connections``, lowered to half the soft file descriptor limit if that is less.

    Args:
        max_connections: the wanted cap (≥ 1).

    Returns:
        The cap to use (≥ 1). Where ``RLIMIT_NOFILE`` does not exist (Windows), unchanged.
    """
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Unix
        return max_connections
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, soft // 2))


def guarded_h11_protocol(*, max_connections: int, request_timeout: float) -> type[asyncio.Protocol]:
    """An h11 protocol class for ``uvicorn.Config(http=...)`` with a request deadline and a cap.

    Each call makes a class of its own, with its own record of waiting connections: use one
    per server.

    Args:
        max_connections: open connections at most (see :func:`connection_cap`).
        request_timeout: seconds to receive a whole request, from the connection's start or
            the end of the previous response.

    Returns:
        A subclass of uvicorn's ``H11Protocol``.
    """
    waiting: OrderedDict[GuardedH11Protocol, None] = OrderedDict()
    """Connections whose request has not fully arrived, the longest waiting first."""
    shed = {"count": 0, "logged_at": float("-inf")}

    class GuardedH11Protocol(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._track()
            if len(self.connections) > max_connections:
                victim = next((p for p in waiting if p is not self), self)
                victim._close()
                self._report_shed()

        def _report_shed(self) -> None:
            """One warning a minute at most, with the count since the last one."""
            shed["count"] += 1
            now = self.loop.time()
            if now - shed["logged_at"] >= SHED_LOG_INTERVAL_S:
                log.warning(
                    "connection cap (%d) reached: closed %d connection(s) still waiting for "
                    "their request",
                    max_connections,
                    shed["count"],
                )
                shed["count"], shed["logged_at"] = 0, now

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._track()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._track()

        def connection_lost(self, exc: Exception | None) -> None:
            self._stop_waiting()
            super().connection_lost(exc)

        def _track(self) -> None:
            """Start the deadline when a request is due, stop it once the request is in."""
            reading = self.conn.their_state in _READING and not self.transport.is_closing()
            if reading and self._deadline is None:
                self._deadline = self.loop.call_later(request_timeout, self._close)
                waiting[self] = None
            elif not reading:
                self._stop_waiting()

        def _stop_waiting(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            waiting.pop(self, None)

        def _close(self) -> None:
            self._stop_waiting()
            if not self.transport.is_closing():
                self.transport.close()

    return GuardedH11Protocol


def protocol_options(
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
) -> dict[str, Any]:
    """The ``uvicorn.Config`` options of these limits: ``http`` and ``timeout_keep_alive``.

    Args:
        max_connections: the wanted cap, lowered by :func:`connection_cap`.
        request_timeout: seconds to receive a whole request.
    """
    cap = connection_cap(max_connections)
    return {
        "http": guarded_h11_protocol(max_connections=cap, request_timeout=request_timeout),
        "timeout_keep_alive": KEEP_ALIVE_TIMEOUT_S,
        "backlog": accept_backlog(cap),
    }


def accept_backlog(cap: int) -> int:
    """The listen backlog for a connection cap: also how many connections asyncio accepts in
    one go, before the protocol can close any (so at most about ``cap + 2 × backlog``
    descriptors are in use at once).

    A quarter of the cap, between :data:`MIN_BACKLOG` and :data:`MAX_BACKLOG`.
    """
    return max(MIN_BACKLOG, min(MAX_BACKLOG, cap // 4))
