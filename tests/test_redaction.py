"""Secrets in URLs never show (issue #26): DIGEST_STATE_URL's password, as userinfo or as
``?password=`` / ``sslpassword=``, in what ``validate``, ``send`` and ``serve`` print or log,
against a real PostgreSQL (tests/pgserver.py) and against one that cannot be reached."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from digest.redact import redact_text
from digest.state import redact_url
from tests.factories import EXAMPLE_DAYS, make_workdir, run_cli
from tests.pgserver import PostgresServer
from tests.webserver import free_port, wait_healthy

DAY = "2026-08-20"
PASSWORD = "pg-Secret-4711"
SSL_PASSWORD = "ssl-Secret-0815"
SECRETS = (PASSWORD, SSL_PASSWORD, "4711", "0815")
"""Neither the passwords nor a recognizable piece of them may be printed."""
UNREACHABLE = [
    f"postgresql://digest:{PASSWORD}@127.0.0.1:1/digest",
    f"postgresql://digest@127.0.0.1:1/digest?password={PASSWORD}&sslpassword={SSL_PASSWORD}",
    # libpq quotes a malformed part of the URL in its error message:
    f"postgresql://digest:%zz{PASSWORD}@127.0.0.1:1/digest",
    f"postgresql://digest@127.0.0.1:1/digest?sslpassword={SSL_PASSWORD}&password=%zz{PASSWORD}",
    # ... and splits the userinfo at the first '@' (urllib at the last):
    f"postgresql://digest:{SSL_PASSWORD}@{PASSWORD}@127.0.0.1:1/digest",
]
SERVE_STOP_TIMEOUT_S = 60


def reachable(pg_server: PostgresServer) -> list[str]:
    """Two fresh schemas of the test server (trusted: a password is carried, not checked),
    the password as userinfo in one URL and as query parameters in the other."""
    userinfo, query = pg_server.fresh_url(), pg_server.fresh_url()
    return [
        userinfo.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@", 1),
        f"{query}&password={PASSWORD}&sslpassword={SSL_PASSWORD}",
    ]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example papers, one subscriber, Maildir delivery; DIGEST_STATE_URL set per test."""
    return make_workdir(
        tmp_path,
        monkeypatch,
        papers=None,
        sources=f"file:{EXAMPLE_DAYS}",
        public_url="https://papers.example.org",
    )


def assert_no_secret(output: str) -> None:
    for secret in SECRETS:
        assert secret not in output, output


def serve(workdir: Path, url: str) -> tuple[int | None, str]:
    """``digest -v serve`` as a process: started (or failed), then stopped by SIGTERM;
    returns its exit code and stderr."""
    port = free_port()
    env = {**os.environ, "DIGEST_STATE_URL": url, "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "digest", "-v", "serve", "--port", str(port)]
    proc = subprocess.Popen(
        command, cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        with contextlib.suppress(AssertionError):  # it exited: the state is unreachable
            wait_healthy(f"http://127.0.0.1:{port}", proc)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=SERVE_STOP_TIMEOUT_S)
    return proc.returncode, stderr


@pytest.mark.parametrize("url", UNREACHABLE)
def test_an_unreachable_state_url_is_shown_without_its_password(
    workdir: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIGEST_STATE_URL", url)
    validate = run_cli("validate", "--offline")
    send = run_cli("-v", "send", "--date", DAY)
    served = serve(workdir, url)
    for code, output in (validate, send, served):
        assert code == 1, output
        assert "cannot reach the state database postgresql://digest" in output, output
        assert "Traceback" not in output
        assert_no_secret(output)
    debug = run_cli("--debug", "send", "--date", DAY)  # with the traceback: still no password
    assert debug[0] == 1 and "Traceback" in debug[1]
    assert_no_secret(debug[1])


def test_a_reachable_state_url_is_shown_without_its_password(
    workdir: Path, pg_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for url in reachable(pg_server):
        monkeypatch.setenv("DIGEST_STATE_URL", url)
        code, validate = run_cli("validate", "--offline")
        assert code == 0, validate
        assert "state postgresql://postgres:***@" in validate or "password=***" in validate
        code, send = run_cli("-v", "send", "--date", DAY)
        assert code == 0 and "sent 1" in send, send
        assert "on the shared state postgresql://postgres" in send  # the -v line names it
        code, served = serve(workdir, url)
        assert code == 0, served
        for output in (validate, send, served):
            assert_no_secret(output)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (
            "postgresql://u:pw@db.example.org:5432/papers",
            "postgresql://u:***@db.example.org:5432/papers",
        ),
        ("postgresql://u:p%40ss@h/d", "postgresql://u:***@h/d"),
        ("postgresql://u:p@ss@h/d", "postgresql://u:***@h/d"),
        ("postgresql://u:pa/ss@h/d?sslmode=require", "postgresql://u:***@h/d?sslmode=require"),
        (
            "postgresql://u@h/d?sslmode=verify-full&password=pw&sslpassword=k&application_name=x",
            "postgresql://u@h/d?sslmode=verify-full&password=***&sslpassword=***&application_name=x",
        ),
        (
            "postgresql://u@h/d?PASSWORD=pw;passfile=/p",
            "postgresql://u@h/d?PASSWORD=***;passfile=***",
        ),
        (
            "imaps://bounces@imap.example.org/INBOX?token=t",
            "imaps://bounces@imap.example.org/INBOX?token=***",
        ),
        ("host=h password=pw dbname=d", "host=h password=*** dbname=d"),
        (
            "postgresql://postgres@/digest?host=%2Ftmp%2Fpg",
            "postgresql://postgres@/digest?host=%2Ftmp%2Fpg",
        ),
        ("sqlite:///var/lib/digest/state.sqlite3", "sqlite:///var/lib/digest/state.sqlite3"),
    ],
)
def test_redact_url_masks_every_secret_and_keeps_the_rest(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_redact_text_masks_what_a_driver_quotes() -> None:
    url = "postgresql://u:ab%zzcd-long@h/d?sslpassword=k3y-Secret"
    message = 'invalid percent-encoded token: "ab%zzcd-long"; sslpassword k3y-Secret; host h'
    assert (
        redact_text(message, url) == 'invalid percent-encoded token: "***"; sslpassword ***; host h'
    )
    split = "postgresql://u:first@second-part@h/d"  # libpq: password 'first', host 'second-...'
    assert redact_text("failed to resolve host 'second-part@h'", split) == (
        "failed to resolve host '***@h'"
    )


def test_a_url_inside_text_loses_its_password_too() -> None:
    """A feed spec (``feed:https://user:pw@…``) and a message quoting URLs: every userinfo
    password is masked, not only that of a URL at the start of the text."""
    assert redact_url("feed:https://user:pw-4711@feeds.example.org/a.xml?token=abc") == (
        "feed:https://user:***@feeds.example.org/a.xml?token=***"
    )
    assert redact_url("from postgresql://a:s3cret@h/db to postgresql://b:0ther@k/db") == (
        "from postgresql://a:***@h/db to postgresql://b:***@k/db"
    )
