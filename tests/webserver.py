"""A real uvicorn server on loopback serving :func:`digest.web.create_app`, on a thread; what
its tests read back: the mail it sent (a Maildir), the subscriber list (either home)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from digest.settings import Settings
from digest.state import open_state
from digest.subscribers import Subscriber
from digest.subscribers.home import StateHome, open_home
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


def eventually(check: Callable[[], bool], timeout: float = 30.0) -> None:
    """Wait (bounded) for ``check()``: the YAML follows an unsubscribe by a background write.

    Args:
        check: polled every 50 ms until it returns true.
        timeout: seconds before the test fails.
    """
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def start_digest(
    env: Mapping[str, str], cwd: Path, port: int, command: str = "serve"
) -> subprocess.Popen[str]:
    """``python -m digest serve --port PORT`` (or ``run``, with ``DIGEST_HTTP_PORT``) in
    ``cwd`` with ``env`` (and PATH), answering ``/healthz``; its stderr is piped."""
    args = ["serve", "--port", str(port)] if command == "serve" else ["run"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "digest", *args],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env, "DIGEST_HTTP_PORT": str(port)},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_healthy(f"http://127.0.0.1:{port}", proc)
    return proc


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


def mail_link(msg: EmailMessage, prefix: str) -> str:
    """The first link of ``msg``'s plain-text part that starts with ``prefix`` (a public URL and
    a path), up to the end of its token."""
    body = msg.get_body(("plain",))
    assert body is not None
    found = re.search(re.escape(prefix) + r"/[A-Za-z0-9_-]+", body.get_content())
    assert found, body.get_content()
    return found.group(0)


def seed_list(settings: Settings, text: str) -> None:
    """Make ``text`` the subscriber list of ``settings``: the file written, or (with
    ``DIGEST_SUBSCRIBERS=state``) imported into the state."""
    if settings.subscribers_in_state:
        with open_state(settings.effective_state_url) as store:
            StateHome(store).import_list(text.encode(), Path("seed.yaml"))
    else:
        Path(settings.subscribers).write_text(text, encoding="utf-8")


def listed(settings: Settings, address: str) -> Subscriber | None:
    """``address`` as the list holds it: in the file once the web app's writes landed
    (:func:`wait_written`), or in the state."""
    wait_written(settings)
    with open_state(settings.effective_state_url) as store:
        return open_home(settings, store).get(address)


def exported(settings: Settings) -> str:
    """The list's text (the file, or the state's export), once the web app's writes landed."""
    wait_written(settings)
    with open_state(settings.effective_state_url) as store:
        return open_home(settings, store).export()
