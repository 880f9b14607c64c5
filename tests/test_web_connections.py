"""`digest serve` under idle and half-sent connections (slowloris): real uvicorn on loopback."""

from __future__ import annotations

import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from digest.settings import Settings
from tests.conftest import PROJECT
from tests.factories import SECRET_KEY, make_settings
from tests.webserver import free_port, running_app, wait_healthy

HALF_SENT = b"GET /healthz HTTP/1.1\r\nHost: papers.example.org\r\nX-Slow: "
"""A request head that never ends (no empty line)."""
FD_LIMIT = 512
"""The server process's RLIMIT_NOFILE in the flood test: fewer than the idle connections."""
IDLE_CONNECTIONS = 800


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    shutil.copy(PROJECT / "subscribers.example.yaml", tmp_path / "subscribers.yaml")
    return make_settings(
        subscribers=tmp_path / "subscribers.yaml",
        state_path=tmp_path / "state.sqlite3",
        outbox=tmp_path / "outbox",
        secret_key=SECRET_KEY,
    )


@contextmanager
def idle_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections to 127.0.0.1:``port`` that each sent half a request head."""
    with ExitStack() as stack:
        socks = []
        for _ in range(count):
            s = stack.enter_context(socket.create_connection(("127.0.0.1", port), timeout=5))
            s.sendall(HALF_SENT)
            socks.append(s)
        yield socks


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """True if the server closes ``sock`` (EOF or reset) within ``within`` seconds."""
    sock.settimeout(within)
    try:
        while sock.recv(4096):
            pass
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True
    return True


def _limit_fds() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def test_a_flood_of_half_sent_requests_never_starves_healthz(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "digest", "serve", "--port", str(port)],
        env={
            "PATH": "/usr/bin:/bin",
            "DIGEST_SUBSCRIBERS": str(settings.subscribers),
            "DIGEST_STATE_PATH": str(settings.state_path),
            "DIGEST_SECRET_KEY": SECRET_KEY,
        },
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_limit_fds,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        with idle_connections(port, IDLE_CONNECTIONS) as socks:
            started = time.monotonic()
            answer = httpx.get(base + "/healthz", timeout=10.0)
            assert answer.status_code == 200 and answer.text == "ok\n"
            assert time.monotonic() - started < 5.0
            # The oldest idle connections were closed to make room; the server never ran out.
            assert closed_by_server(socks[0], within=5.0)
            assert psutil.Process(proc.pid).num_fds() < FD_LIMIT
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert "Too many open files" not in stderr and "Traceback" not in stderr


def test_a_request_must_arrive_within_the_read_timeout(settings: Settings) -> None:
    limits = {"request_timeout": 0.5}
    with running_app(settings, limits=limits) as base:
        port = int(base.rsplit(":", 1)[1])
        with idle_connections(port, 1) as [head]:
            assert closed_by_server(head, within=5.0)
        # A slow body: the head is complete, the 100 announced bytes never all come.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as body:
            body.sendall(
                b"POST /subscribe HTTP/1.1\r\nHost: x\r\nContent-Type: "
                b"application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nemail="
            )
            assert closed_by_server(body, within=5.0)
        # Keep-alive: one full request, then half of the next one.
        with socket.create_connection(("127.0.0.1", port), timeout=5) as kept:
            kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert kept.recv(4096).startswith(b"HTTP/1.1 200")
            kept.sendall(HALF_SENT)
            assert closed_by_server(kept, within=5.0)
        assert httpx.get(base + "/healthz").status_code == 200


def test_at_the_cap_the_oldest_waiting_connection_makes_room(settings: Settings) -> None:
    limits = {"max_connections": 10, "request_timeout": 60.0}
    with running_app(settings, limits=limits) as base:
        port = int(base.rsplit(":", 1)[1])
        with idle_connections(port, 30) as socks:
            with httpx.Client() as client:
                for _ in range(3):
                    assert client.get(base + "/healthz", timeout=5.0).status_code == 200
            assert all(closed_by_server(s, within=5.0) for s in socks[:20])
            assert not any(closed_by_server(s, within=0.2) for s in socks[-5:])
