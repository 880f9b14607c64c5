"""The web app and the subscribers YAML: a change never makes the file unreadable, and the file
catches up with the suppression list after a crash.

Real servers: uvicorn on a thread (:func:`tests.webserver.running_app`) for the preferences
form, ``python -m digest serve`` / ``run`` as processes (killed with SIGKILL) for the crash.
"""

from __future__ import annotations

import re
import signal
import subprocess
from pathlib import Path

import filelock
import httpx
import pytest

from digest.message import unsubscribe_url_for
from digest.settings import Settings
from digest.state import StateStore, SuppressionReason
from digest.subscribers import load_subscribers
from digest.subscribers.writeback import SubscribersFile, catch_up_unsubscribes
from digest.tokens import Purpose, TokenSigner
from tests.conftest import FIXTURES
from tests.factories import PUBLIC, SECRET_KEY, outbox_settings, run_cli
from tests.webserver import csrf_of, free_port, running_app, start_digest

ONE_CLICK = {
    "content": "List-Unsubscribe=One-Click",
    "headers": {"Content-Type": "application/x-www-form-urlencoded"},
}
"""An RFC 8058 one-click POST, as a mail client sends it."""
HOSTILE_KEYWORDS = [
    "a?",
    "what?",
    "c#",
    "c++",
    "yes",
    "No",
    "null",
    "1.0",
    "010",
    "2024-01-01",
    "07:30",
    "-x",
    "&anchor",
    "!important",
    "%d",
    "@home",
    "`code`",
    '"quoted"',
    "'single'",
    "[x]",
    "{y}",
    "key: value",
    "a #b",
    "José",
    "李小龙",
    "😀emoji",
]
"""Keywords a preferences form accepts that YAML reads specially (the form splits on commas)."""
N_SUBSCRIBERS = 24


def subscribers_yaml(unsubscribed: frozenset[int] = frozenset()) -> str:
    """A list of :data:`N_SUBSCRIBERS` with comments; those in ``unsubscribed`` as the
    write-back leaves them (an ``active: false`` line under the email, or ``active: true``
    changed to ``false``)."""
    lines = ["# The lab's list.", "defaults:", "  max_papers: 5   # keep it short", ""]
    lines.append("subscribers:")
    for i in range(N_SUBSCRIBERS):
        lines.append(f"  - email: r{i:02}@example.org" + ("   # since 2024" if i % 3 == 0 else ""))
        if i in unsubscribed and i % 2:
            lines.append("    active: false")
        lines += [f"    name: Reader {i}", '    keywords: [agent*, "world model"]']
        if i % 2 == 0:
            lines.append(f"    active: {'false' if i in unsubscribed else 'true'}   # set by hand")
        lines.append("")
    return "\n".join(lines)


WEB_SETTINGS = {
    "sources": f"file:{FIXTURES / 'hf-daily-papers'}",
    "secret_key": SECRET_KEY,
    "public_url": PUBLIC,
    "sender": "Daily Papers <papers@example.org>",
}
"""What ``digest serve`` needs besides the paths."""


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "subscribers.yaml").write_text(subscribers_yaml())
    return outbox_settings(tmp_path, **WEB_SETTINGS)


def variables(settings: Settings) -> dict[str, str]:
    """``settings`` as the environment of a ``digest`` process or command."""
    out = {
        "PATH": "/usr/bin:/bin",
        "DIGEST_TICK_SECONDS": "3600",
        "DIGEST_SUBSCRIBERS": str(settings.subscribers),
        "DIGEST_STATE_PATH": str(settings.state_path),
        "DIGEST_OUTBOX": str(settings.outbox),
    }
    for key, value in WEB_SETTINGS.items():
        out["DIGEST_FROM" if key == "sender" else f"DIGEST_{key.upper()}"] = value
    return out


# -- a web change never makes the file unreadable ----------------------------------------------


@pytest.mark.parametrize("keywords", [["a?", "what?"], HOSTILE_KEYWORDS], ids=["a?", "all"])
async def test_hostile_keywords_saved_from_the_preferences_form_read_back_with_crlf(
    settings: Settings, keywords: list[str]
) -> None:
    # Before: `[a?, what?]` was written plain, and a CRLF anywhere made the file unreadable
    # ("did not find expected ',' or ']'"); `07:30` was written plain too, so that save failed.
    token = TokenSigner(SECRET_KEY).make(Purpose.PREFERENCES, "r01@example.org")
    with running_app(settings) as base, httpx.Client() as client:
        url = f"{base}/preferences/{token}"
        page = client.get(url)
        form = {
            "csrf": csrf_of(page),
            "name": "Reader 1",
            "keywords": ", ".join(keywords),
            "exclude": "a?\nsurvey?",
            "frequency": "daily",
            "weekday": "monday",
            "send_at": "07:00",
            "timezone": "UTC",
            "max_papers": "5",
        }
        saved = client.post(url, data=form)
        errors = re.findall(r'class="error"[^>]*>([^<]+)', saved.text)
        assert saved.status_code == 200 and "Saved." in saved.text, errors
    path = settings.subscribers
    saved_text = path.read_bytes()
    # An operator's editor writes CRLF line breaks and tabs (in a comment, before a comment):
    # each makes the loader read the whole file with ruamel.
    for data in (
        saved_text.replace(b"\n", b"\r\n").replace(b"lab's list.", b"lab's\tlist."),
        saved_text.replace(b"defaults:", b"defaults:\t# a tab"),
    ):
        path.write_bytes(data)
        reader = load_subscribers(path).get("r01@example.org")
        assert reader is not None
        assert reader.keywords == tuple(keywords)
        assert reader.exclude == ("a?", "survey?")
        code, output = run_cli("validate", "--offline", env=variables(settings))
        assert code == 0, output
        assert f"ok: settings valid, {N_SUBSCRIBERS} subscribers" in output
    # The next write (another subscriber's preferences) reads and keeps the CRLF file.
    path.write_bytes(saved_text.replace(b"\n", b"\r\n"))
    assert SubscribersFile(path).update_fields("r02@example.org", {"keywords": ["b?"]})
    assert load_subscribers(path).get("r01@example.org") == reader
    assert load_subscribers(path).get("r02@example.org").keywords == ("b?",)  # type: ignore[union-attr]


# -- the file catches up with the suppression list ----------------------------------------------


def start(settings: Settings, tmp_path: Path, command: str, port: int) -> subprocess.Popen[str]:
    """``python -m digest serve`` (or ``run`` with DIGEST_HTTP_PORT) on ``port``, answering."""
    return start_digest(variables(settings), tmp_path, port, command)


def unsubscribe_and_crash(settings: Settings, tmp_path: Path, who: list[int]) -> None:
    """``digest serve`` while another writer holds the YAML's lock: one-click unsubscribes,
    then SIGKILL. The suppressions are committed; no write-back lands (neither theirs nor the
    catch-up at start)."""
    port = free_port()
    with filelock.FileLock(f"{settings.subscribers}.lock"):
        proc = start(settings, tmp_path, "serve", port)
        try:
            for i in who:
                url = unsubscribe_url_for(settings, f"r{i:02}@example.org")
                assert url is not None
                local = f"http://127.0.0.1:{port}" + url[len(PUBLIC) :]
                assert httpx.post(local, timeout=30, **ONE_CLICK).status_code == 200
        finally:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.parametrize("command", ["serve", "run"])
def test_after_crashes_the_yaml_catches_up_with_every_unsubscribe_at_the_next_start(
    settings: Settings, tmp_path: Path, command: str
) -> None:
    original = settings.subscribers.read_bytes()
    first, second = [1, 2, 5, 8, 9], [3, 12, 13, 20]
    unsubscribe_and_crash(settings, tmp_path, first)
    unsubscribe_and_crash(settings, tmp_path, second)
    assert settings.subscribers.read_bytes() == original  # nothing landed
    with StateStore(settings.state_path) as store:
        assert len(store.suppressions()) == len(first + second)
        # Not for the web app to write: a bounce, an operator's lifted suppression, an address
        # no longer in the file.
        store.suppress("r04@example.org", SuppressionReason.BOUNCED, evidence="550", actor="smtp")
        store.unsuppress("r05@example.org", actor="cli:op")
        store.suppress("gone@example.org", "unsubscribed", evidence="one-click", actor="web")
    port = free_port()
    proc = start(settings, tmp_path, command, port)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 0, stderr
    written = frozenset(first + second) - {5}
    assert settings.subscribers.read_text() == subscribers_yaml(written)  # nothing else changed
    subs = load_subscribers(settings.subscribers)
    assert {s.email for s in subs if not s.active} == {f"r{i:02}@example.org" for i in written}
    assert "active: false written for 8 unsubscribed" in stderr


def test_catching_up_writes_nothing_when_the_file_is_up_to_date(settings: Settings) -> None:
    path = settings.subscribers
    with StateStore(settings.state_path) as store:
        assert catch_up_unsubscribes(SubscribersFile(path), store) == []
        store.suppress("r02@example.org", "unsubscribed", evidence="one-click", actor="web")
        store.suppress("r07@example.org", "complained", evidence="ARF", actor="bounces")
        assert catch_up_unsubscribes(SubscribersFile(path), store) == ["r02@example.org"]
        mtime = path.stat().st_mtime_ns
        assert catch_up_unsubscribes(SubscribersFile(path), store) == []
        assert path.stat().st_mtime_ns == mtime  # not rewritten
    assert path.read_text() == subscribers_yaml(frozenset({2}))
