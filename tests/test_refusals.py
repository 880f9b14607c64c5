"""Configuration refusals: weak secret keys, foreign SQLite files, --debug exit codes, validate.

Issue 8 item 7. Every case is one clear line and exit 2 (bad input), and nothing is changed.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from digest.errors import StateError
from digest.settings import EXAMPLE_SECRET_KEY, MIN_SECRET_KEY_CHARS
from digest.state import StateStore, state_lock
from digest.state.sqlite import APPLICATION_ID
from tests.conftest import PROJECT
from tests.factories import make_workdir, run_cli

DAY = "2026-08-20"
RUN_TIMEOUT_S = 60
"""Bound on `digest run` refusing to start, seconds (it exits at once)."""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Example papers, one subscriber, Maildir delivery, a good key."""
    return make_workdir(
        tmp_path, monkeypatch, unsubscribe_url="https://example.org/unsubscribe?token={token}"
    )


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


# -- DIGEST_SECRET_KEY ------------------------------------------------------------------------


def test_the_env_example_placeholder_is_the_one_refused() -> None:
    example = (PROJECT / ".env.example").read_text(encoding="utf-8")
    assert f"DIGEST_SECRET_KEY={EXAMPLE_SECRET_KEY}\n" in example
    assert len(EXAMPLE_SECRET_KEY) >= MIN_SECRET_KEY_CHARS  # so length alone would not catch it


@pytest.mark.parametrize(
    ("variable", "key", "why"),
    [
        ("DIGEST_SECRET_KEY", EXAMPLE_SECRET_KEY, "placeholder from .env.example"),
        ("DIGEST_SECRET_KEY", "x" * (MIN_SECRET_KEY_CHARS - 1), "31 characters long"),
        ("DIGEST_SECRET_KEY", "hunter2", "7 characters long"),
        ("DIGEST_SECRET_KEY_PREVIOUS", "old-and-short", "13 characters long"),
        ("DIGEST_SECRET_KEY", " " * 40, "is only white space"),
        ("DIGEST_SECRET_KEY", "a" * MIN_SECRET_KEY_CHARS, "is one character repeated"),
        (
            "DIGEST_SECRET_KEY",
            "abcabcabcabcabcabcabcabcabcabcabcabc",
            "only 3 different characters",
        ),
        ("DIGEST_SECRET_KEY_PREVIOUS", "0123456789abcdef" * 2, "repeats a pattern of 16"),
    ],
)
@pytest.mark.parametrize("command", [["validate", "--offline"], ["send", "--date", DAY], ["run"]])
def test_weak_secret_key_is_refused_by_validate_and_every_signing_command(
    workdir: Path,
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    key: str,
    why: str,
    command: list[str],
) -> None:
    monkeypatch.setenv(variable, key)

    if command == ["run"]:  # the daemon: in a process, so a regression cannot hang the suite
        done = subprocess.run(
            [sys.executable, "-m", "digest", *command],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )
        code, output = done.returncode, done.stdout + done.stderr
    else:
        code, output = run_cli(*command)

    assert code == 2, output
    lines = error_lines(output)
    assert len(lines) == 1 and f" {variable}: " in lines[0], output
    assert why in lines[0] and "secrets.token_urlsafe" in lines[0]
    assert key not in output and "Traceback" not in output
    assert not (workdir / "outbox").exists()
    assert not (workdir / "digest-state.sqlite3").exists()


@pytest.mark.parametrize("digits", [4300, 5000])
def test_a_huge_integer_in_the_subscribers_file_is_one_line_naming_its_line(
    workdir: Path, digits: int
) -> None:
    # 4,300 digits is Python's limit for int(str): one past it, the YAML readers raised.
    (workdir / "subscribers.yaml").write_text(
        f"subscribers:\n  - email: ada@example.org\n    max_papers: {'9' * digits}\n"
    )
    for command in (["validate", "--offline"], ["send", "--date", DAY]):
        code, output = run_cli(*command)
        assert code == 2, output[-500:]
        [line] = error_lines(output)
        assert line.startswith(
            "error: subscribers.yaml:3: subscribers[0].max_papers: must be a whole number "
            "from 1 to 1,000, got '999"
        ), line
        assert len(line) < 200 and "Traceback" not in output
    assert not (workdir / "outbox").exists()


def test_a_key_of_32_characters_is_accepted(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = "Zq3-vR8_kL2pW9xN4mB7tY1cF6hJ0sDe"  # as secrets.token_urlsafe makes them
    assert len(key) == MIN_SECRET_KEY_CHARS
    monkeypatch.setenv("DIGEST_SECRET_KEY", key)
    code, output = run_cli("send", "--date", DAY)
    assert code == 0, output
    assert "sent 1" in output


# -- --debug keeps the exit code --------------------------------------------------------------


def test_debug_shows_the_traceback_and_keeps_exit_code_2(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIGEST_SMTP_PORT", "not-a-port")
    code, plain = run_cli("send", "--date", DAY)
    assert code == 2 and "Traceback" not in plain

    code, output = run_cli("--debug", "send", "--date", DAY)

    assert code == 2, output
    assert "Traceback (most recent call last)" in output and "ConfigError" in output
    assert error_lines(output) == error_lines(plain)


def test_debug_keeps_exit_code_3_of_a_locked_state_file(workdir: Path) -> None:
    with state_lock(workdir / "digest-state.sqlite3", purpose="test"):
        code, output = run_cli("--debug", "send", "--date", DAY)
    assert code == 3, output
    assert "Traceback (most recent call last)" in output and "StateLockedError" in output


# -- validate with invalid settings -----------------------------------------------------------


def test_validate_with_invalid_settings_checks_the_configured_subscribers_file(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / "lists").mkdir()
    configured = workdir / "lists" / "team.yaml"
    configured.write_text("subscribers:\n  - email: not-an-address\n")
    monkeypatch.setenv("DIGEST_SUBSCRIBERS", str(configured))
    monkeypatch.setenv("DIGEST_SMTP_PORT", "99999")  # invalid: the settings do not load

    code, output = run_cli("validate", "--offline")

    assert code == 2
    assert "DIGEST_SMTP_PORT" in output
    assert "team.yaml" in output and "not-an-address" in output
    # The default ./subscribers.yaml (valid, one subscriber) is not what was checked.
    assert not any("subscribers.yaml" in line for line in error_lines(output))


def test_validate_with_invalid_settings_reads_subscribers_path_from_env_file(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (workdir / "team.yaml").write_text("subscribers: 42\n")
    (workdir / "custom.env").write_text("DIGEST_SUBSCRIBERS=team.yaml\nDIGEST_SMTP_PORT=0\n")

    code, output = run_cli("--env-file", str(workdir / "custom.env"), "validate", "--offline")

    assert code == 2
    assert "DIGEST_SMTP_PORT" in output and "team.yaml" in output


# -- the state file belongs to digest (PRAGMA application_id) ---------------------------------


def make_foreign(path: Path, application_id: int = 0) -> bytes:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT)")
    db.execute("INSERT INTO users (email) VALUES ('someone@example.org')")
    if application_id:
        db.execute(f"PRAGMA application_id = {application_id}")
    db.commit()
    db.close()
    return path.read_bytes()


@pytest.mark.parametrize("application_id", [0, 0x0F055112])  # none; Fossil's
def test_another_programs_sqlite_file_is_refused_and_left_unchanged(
    tmp_path: Path, application_id: int
) -> None:
    path = tmp_path / "app.db"
    before = make_foreign(path, application_id)

    with pytest.raises(StateError) as info:
        StateStore(path)

    message = str(info.value)
    assert "another program's SQLite database" in message and "DIGEST_STATE_PATH" in message
    assert "\n" not in message
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]  # no -wal/-shm either
    db = sqlite3.connect(path)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"users"}
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    db.close()


def test_cli_refuses_a_foreign_state_file_with_one_line(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = workdir / "other.sqlite3"
    before = make_foreign(path)
    monkeypatch.setenv("DIGEST_STATE_PATH", str(path))

    code, output = run_cli("send", "--date", DAY)

    assert code == 1, output  # as for any unusable state file
    assert len(error_lines(output)) == 1 and "another program's" in output
    assert "Traceback" not in output
    assert path.read_bytes() == before


def test_new_state_file_carries_the_application_id(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    with StateStore(path):
        pass
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    db.close()


def test_digest_file_from_before_the_application_id_still_opens_and_gets_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.sqlite3"
    with StateStore(path) as store:
        assert store.claim("ada@example.org", DAY, "<m1@example.org>")
        store.mark_sent("ada@example.org", DAY, "250 OK")
    db = sqlite3.connect(path)
    db.execute("PRAGMA application_id = 0")  # as every file written before this change
    db.commit()
    db.close()

    with StateStore(path) as store:
        assert [r.status for r in store.list()] == ["sent"]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
    db.close()


def test_empty_sqlite_file_becomes_a_state_file(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    sqlite3.connect(path).close()  # 0 bytes
    with StateStore(path) as store:
        assert store.list() == []
