"""A real uvicorn server on loopback serving :func:`digest.web.create_app`, on a thread."""

from __future__ import annotations

import re
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from digest.settings import Settings
from digest.state import open_state
from digest.web import create_app, server_config

START_TIMEOUT_S = 20.0
PROCESS_START_TIMEOUT_S = 30.0
"""Bound on a ``digest serve`` process starting to answer, seconds (imports, state, uvicorn)."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def csrf_of(page: httpx.Response) -> str:
    """The CSRF token of the form on ``page``."""
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert found, page.text
    return found.group(1)


@contextmanager
def running_app(
    settings: Settings,
    *,
    port: int | None = None,
    limits: Mapping[str, Any] | None = None,
    **app_options: Any,
) -> Iterator[str]:
    """Serve the app on 127.0.0.1 while the block runs; yields the base URL.

    The server is configured as ``digest serve`` configures it (:func:`digest.web.server_config`).

    Args:
        settings: the app's settings.
        port: the port (default: a free one).
        limits: connection limits for :func:`~digest.web.server_config` (``max_connections``,
            ``request_timeout``); default: those of ``digest serve``.
        **app_options: passed to :func:`create_app` (``now=``, ``transport=``).
    """
    app = create_app(settings, **app_options)
    port = port or free_port()
    config = server_config(app, host="127.0.0.1", port=port, **(limits or {}))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT_S)
        app.state.web.close()


def wait_healthy(base: str, proc: subprocess.Popen[str]) -> None:
    """Wait (bounded) until ``digest serve`` (or ``run``) at ``base`` answers ``/healthz``."""
    deadline = time.monotonic() + PROCESS_START_TIMEOUT_S
    while True:
        try:
            if httpx.get(base + "/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert proc.poll() is None, "the server exited"
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.1)


def wait_written(settings: Settings, timeout: float = PROCESS_START_TIMEOUT_S) -> None:
    """Wait (bounded) until the web app's changes are in the subscribers file: the state's
    outbox of list changes is empty (its background writer took them all)."""
    deadline = time.monotonic() + timeout
    with open_state(settings.effective_state_url) as store:
        while store.list_changes():
            assert time.monotonic() < deadline, "the subscribers file was not written in time"
            time.sleep(0.02)
