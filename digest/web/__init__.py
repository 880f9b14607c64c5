"""``digest serve``: the subscriber's side on the web (Starlette app served by uvicorn).

* :func:`create_app` (:mod:`digest.web.app`): the ASGI application.
* :func:`serve`: run it until SIGTERM/SIGINT (``digest serve``).
* :func:`serve_until`: run it inside another event loop until an event is set (``digest run``
  with DIGEST_HTTP_PORT).

The business logic lives in :mod:`digest.web.service`; HTTP hardening in
:mod:`digest.web.security`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Generator
from typing import TYPE_CHECKING

import uvicorn
from starlette.applications import Starlette

from digest.settings import Settings
from digest.web.app import WebApp, create_app
from digest.web.connections import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_REQUEST_TIMEOUT_S,
    protocol_options,
)

if TYPE_CHECKING:
    from digest.metrics import Metrics

__all__ = [
    "WebApp",
    "create_app",
    "serve",
    "serve_app_until",
    "serve_metrics_until",
    "serve_until",
    "server",
    "server_config",
]

log = logging.getLogger("digest.web")


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host (the daemon)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def server(
    settings: Settings,
    *,
    host: str | None = None,
    port: int | None = None,
    embedded: bool = False,
    metrics: Metrics | None = None,
) -> uvicorn.Server:
    """A configured uvicorn server for the app.

    Configured by :func:`server_config`. uvicorn's access log is off (its lines would carry
    the tokens in the paths); the app logs one redacted line per request instead.
    ``X-Forwarded-For`` is trusted from the addresses in uvicorn's FORWARDED_ALLOW_IPS
    (default 127.0.0.1: a reverse proxy on the same host).

    Args:
        settings: the settings (DIGEST_HTTP_HOST / DIGEST_HTTP_PORT are the defaults).
        host: address to listen on.
        port: TCP port.
        embedded: do not install signal handlers (the caller stops it via ``should_exit``).
        metrics: the process's metrics (``digest run``: shared with the daemon); default the
            app's own.

    Raises:
        ConfigError: DIGEST_SECRET_KEY is not set.
        StateError: the state file cannot be opened.
    """
    from digest.settings import DEFAULT_HTTP_PORT

    config = server_config(
        create_app(settings, metrics=metrics),
        host=host or settings.http_host,
        port=port or settings.http_port or DEFAULT_HTTP_PORT,
    )
    return _EmbeddedServer(config) if embedded else uvicorn.Server(config)


def server_config(
    app: Starlette,
    *,
    host: str,
    port: int,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT_S,
) -> uvicorn.Config:
    """The uvicorn configuration of ``digest serve`` for ``app``.

    No access log (the app logs one redacted line per request), no ``Server`` header, the
    h11 protocol with a request deadline and a connection cap
    (:mod:`digest.web.connections`), kept-alive connections closed after
    :data:`~digest.web.connections.KEEP_ALIVE_TIMEOUT_S` idle seconds.

    Args:
        app: the ASGI app (:func:`create_app`).
        host: address to listen on.
        port: TCP port.
        max_connections: open connections at most (lowered to half of ``RLIMIT_NOFILE``).
        request_timeout: seconds a client has to send a whole request.
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        proxy_headers=True,
        server_header=False,
        lifespan="on",
        **protocol_options(max_connections=max_connections, request_timeout=request_timeout),
    )


def serve(settings: Settings, *, host: str | None = None, port: int | None = None) -> None:
    """Serve the app until SIGTERM/SIGINT (``digest serve``), then return normally.

    On the signal, requests in flight finish and pending subscribers-file writes are done.
    """
    srv = server(settings, host=host, port=port, embedded=True)
    log.info("serving on http://%s:%d", srv.config.host, srv.config.port)

    async def main() -> None:
        loop = asyncio.get_running_loop()

        def stop() -> None:
            srv.should_exit = True

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        await srv.serve()

    asyncio.run(main())


async def serve_until(
    settings: Settings, stop: asyncio.Event, *, metrics: Metrics | None = None
) -> None:
    """Serve the app on DIGEST_HTTP_HOST:DIGEST_HTTP_PORT until ``stop`` is set.

    Args:
        settings: the settings.
        stop: set it to stop serving (requests in flight finish).
        metrics: the process's metrics, shared with the daemon (``digest run``).
    """
    srv = server(settings, embedded=True, metrics=metrics)
    log.info("serving the web app on http://%s:%d", srv.config.host, srv.config.port)
    await _serve_until(srv, stop)


async def serve_app_until(
    app: Starlette, host: str, port: int, stop: asyncio.Event, *, what: str = "the app"
) -> None:
    """Serve ``app`` (configured by :func:`server_config`) on ``host:port`` until ``stop``;
    ``what`` names it in the log line."""
    srv = _EmbeddedServer(server_config(app, host=host, port=port))
    log.info("serving %s on http://%s:%d", what, host, port)
    await _serve_until(srv, stop)


async def serve_metrics_until(settings: Settings, metrics: Metrics, stop: asyncio.Event) -> None:
    """Serve ``/metrics`` alone (:func:`~digest.metrics.metrics_route`) on
    DIGEST_METRICS_HOST:DIGEST_METRICS_PORT until ``stop`` is set (``digest run``)."""
    from digest.metrics import metrics_route
    from digest.web.security import SecurityMiddleware

    app = Starlette(routes=[metrics_route(metrics, settings)])
    app.router.redirect_slashes = False
    app.add_middleware(SecurityMiddleware)
    assert settings.metrics_port is not None
    host, port = settings.metrics_host, settings.metrics_port
    await serve_app_until(app, host, port, stop, what="the metrics")


async def _serve_until(srv: uvicorn.Server, stop: asyncio.Event) -> None:
    task = asyncio.create_task(srv.serve())
    waiter = asyncio.create_task(stop.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    srv.should_exit = True
    waiter.cancel()
    await task
