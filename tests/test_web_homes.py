"""`digest serve` with the list in either home, on SQLite and PostgreSQL (issue 22): the same
end-to-end path; a file written off the request path; two servers on one database."""

from __future__ import annotations

import re
import signal
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

import filelock
import httpx
import pytest

from digest.core import Digest
from digest.message import unsubscribe_url_for
from digest.models import Edition
from digest.settings import Settings
from digest.state import open_state
from digest.tokens import Purpose, TokenSigner
from tests.factories import (
    COMMENTED_SUBSCRIBERS,
    PUBLIC,
    SECRET_KEY,
    make_settings,
    messages,
    settings_env,
)
from tests.webserver import (
    csrf_of,
    eventually,
    exported,
    free_port,
    listed,
    mail_link,
    running_app,
    seed_list,
    start_digest,
    wait_written,
)

LIST = COMMENTED_SUBSCRIBERS
FIRST, NEXT = Edition.daily(date(2026, 8, 20)), Edition.daily(date(2026, 7, 27))
ONE_CLICK = {
    "content": "List-Unsubscribe=One-Click",
    "headers": {"Content-Type": "application/x-www-form-urlencoded"},
}


def app_settings(env: dict[str, Any], home: str) -> Settings:
    """The web app's settings (conftest ``env``) with :data:`LIST` in ``home`` (``file``
    or ``state``)."""
    made = make_settings(**{**env, **({"subscribers": "state"} if home == "state" else {})})
    seed_list(made, LIST)
    return made


@pytest.fixture
def settings(env: dict[str, Any], subscribers_home: str) -> Settings:
    """The app's settings with the list in each home, the state on each backend."""
    return app_settings(env, subscribers_home)


@pytest.fixture
def file_settings(env: dict[str, Any]) -> Settings:
    """The app's settings with the list in its file, the state on each backend."""
    return app_settings(env, "file")


def local(url: str, base: str) -> str:
    assert url.startswith(PUBLIC), url
    return base + url[len(PUBLIC) :]


async def send(settings: Settings, edition: Edition) -> dict[str, str]:
    wait_written(settings)
    with Digest(settings) as digest:
        await digest.send(edition, digest.load_subscribers().subscribers)
        return {r.subscriber: str(r.status) for r in digest.store.list(edition=edition.key)}


async def test_sign_up_confirm_preferences_feedback_unsubscribe_then_the_next_edition_skips(
    settings: Settings,
) -> None:
    with running_app(settings) as base, httpx.Client() as client:
        page = client.get(base + "/")
        form = {"csrf": csrf_of(page), "email": "Grace@Example.org", "name": "Grace"}
        signed = client.post(base + "/subscribe", data={**form, "keywords": "diffusion, video"})
        assert signed.status_code == 200 and "Check your inbox" in signed.text
        assert listed(settings, "grace@example.org") is None
        [mail] = messages(settings)
        confirm = local(mail_link(mail, PUBLIC + "/confirm"), base)
        done = client.post(confirm, data={"csrf": csrf_of(client.get(confirm))})
        assert done.status_code == 200 and "You're subscribed" in done.text
        # Its preferences link works at once (the file's write may not have landed yet).
        prefs = re.search(r'href="([^"]*/preferences/[A-Za-z0-9_-]+)"', done.text)
        assert prefs is not None
        prefs_url = local(prefs.group(1), base)
        page = client.get(prefs_url)
        assert page.status_code == 200 and "diffusion, video" in page.text
        values = _prefs(csrf_of(page), "diffusion, world model", name="Grace H.")
        values |= {"exclude": "survey", "send_at": "06:00", "timezone": "Europe/Paris"}
        saved = client.post(prefs_url, data=values | {"max_papers": "3"})
        assert saved.status_code == 200 and "Saved." in saved.text
        assert 'value="Grace H."' in saved.text  # what was saved, read back
        grace = listed(settings, "grace@example.org")
        assert grace is not None and grace.keywords == ("diffusion", "world model")
        assert (grace.name, grace.max_papers, grace.timezone) == ("Grace H.", 3, "Europe/Paris")

        # The welcome, sent after the answer: once, in the history, never in the archive.
        eventually(lambda: len(messages(settings)) == 2)
        [welcome] = [m for m in messages(settings) if m["Subject"].startswith("Welcome")]
        assert welcome["Subject"] == "Welcome to Daily Papers" and "grace" in welcome["To"]
        assert mail_link(welcome, PUBLIC + "/preferences")
        assert welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

        assert (await send(settings, FIRST))["grace@example.org"] == "sent"
        [digest_mail] = [
            m
            for m in messages(settings)
            if "grace" in m["To"] and not m["Subject"].startswith(("Confirm", "Welcome"))
        ]
        like = local(mail_link(digest_mail, PUBLIC + "/f"), base)
        liked = client.post(like, data={"csrf": csrf_of(client.get(like))})
        assert liked.status_code == 200
        unsubscribe = unsubscribe_url_for(settings, "grace@example.org")
        assert unsubscribe is not None
        assert client.post(local(unsubscribe, base), **ONE_CLICK).status_code == 200  # type: ignore[arg-type]

    rows = await send(settings, NEXT)
    assert rows == {"ada@example.org": "sent", "bob@example.org": "sent"}  # grace: nothing
    grace = listed(settings, "grace@example.org")
    assert grace is not None and grace.active is False
    text = exported(settings)
    assert text.startswith(LIST)  # every other byte of the list as it was
    assert text[len(LIST) :] == (
        "  - email: grace@example.org\n    active: false\n    name: Grace H.\n"
        "    keywords: [diffusion, world model]\n    exclude: [survey]\n"
        '    send_at: "06:00"\n    timezone: Europe/Paris\n    max_papers: 3\n'
    )
    with open_state(settings.effective_state_url) as store:
        actions = [e.action for e in store.events() if "grace" in e.subscriber]
        assert actions == ["signup", "confirm", "preferences", "unsubscribe"]
        assert store.feedback("grace@example.org")["grace@example.org"].likes
        assert store.suppression("grace@example.org").reason == "unsubscribed"  # type: ignore[union-attr]
        assert store.list_changes() == []  # nothing left unwritten
        [row] = [r for r in store.list(subscriber="grace@example.org") if ":" in r.edition]
        assert row.edition.startswith("welcome:") and str(row.status) == "sent"
        assert sorted(key for key, _ in store.sent_editions()) == sorted([FIRST.key, NEXT.key])


def test_a_file_is_written_off_the_request_path_and_keeps_a_hand_edit(
    file_settings: Settings,
) -> None:
    """While another writer holds the file's lock (an editor's save, a slow disk), a save
    answers at once and reads back its values; the file follows once the lock is free, with
    what was edited by hand meanwhile. (Before: the request waited for the lock, 10 s, then
    answered 503.)"""
    settings = file_settings
    path = settings.subscribers
    token = TokenSigner(SECRET_KEY).make(Purpose.PREFERENCES, "bob@example.org")
    with running_app(settings) as base, httpx.Client(timeout=30) as client:
        url = f"{base}/preferences/{token}"
        page = client.get(url)
        form = _prefs(csrf_of(page), "world model", name="Bob")
        form |= {"frequency": "weekly", "weekday": "friday"}
        with filelock.FileLock(f"{path}.lock"):
            started = time.monotonic()
            saved = client.post(url, data=form)
            took = time.monotonic() - started
            assert saved.status_code == 200 and "Saved." in saved.text, saved.text
            assert took < 2.0, took
            assert ">world model<" in saved.text or 'value="world model"' in saved.text
            assert path.read_text() == LIST  # not written yet
            path.write_text(LIST.replace("# The PI.", "# The PI, edited by hand."))
        wait_written(settings)
    text = path.read_text()
    assert "# The PI, edited by hand." in text
    assert text.endswith(
        "  - email: bob@example.org   # a student\n    name: Bob\n    keywords: [world model]\n"
        "    frequency: weekly\n    weekday: friday\n"
    )


@pytest.mark.slow
def test_a_save_that_a_crash_left_unwritten_reaches_the_file_at_the_next_start(
    file_settings: Settings, tmp_path: Path
) -> None:
    """`digest serve` answers a save (committed in the state's outbox), is killed before the
    file could be written (its lock held elsewhere); the next start writes it."""
    settings = file_settings
    env = settings_env(
        {
            "subscribers": settings.subscribers,
            "state_url": settings.effective_state_url,
            "secret_key": SECRET_KEY,
            "public_url": PUBLIC,
            "outbox": settings.outbox,
        }
    )
    token = TokenSigner(SECRET_KEY).make(Purpose.PREFERENCES, "ada@example.org")
    with filelock.FileLock(f"{settings.subscribers}.lock"):
        port = free_port()
        proc = start_digest(env, tmp_path, port)
        try:
            with httpx.Client(timeout=30) as client:
                url = f"http://127.0.0.1:{port}/preferences/{token}"
                page = client.get(url)
                form = _prefs(csrf_of(page), "agent*, tool use")
                assert client.post(url, data=form).status_code == 200
        finally:
            proc.kill()
            proc.communicate(timeout=30)
    assert settings.subscribers.read_text() == LIST
    proc = start_digest(env, tmp_path, free_port())
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 0, stderr
    text = settings.subscribers.read_text()
    before = 'keywords: [agent*, "reinforcement learning"]   # her interests'
    assert text == LIST.replace(
        before, "keywords: [agent*, tool use]" + " " * 19 + "# her interests"
    )


@pytest.mark.parametrize("state_url", ["postgres"], indirect=True)
def test_two_servers_on_one_database_editing_one_subscriber(env: dict[str, Any]) -> None:
    """Two `digest serve` (two hosts) on one PostgreSQL, the list in it, saving the same
    subscriber: the later commit wins, each save is an event, nothing is lost."""
    settings = app_settings(env, "state")
    pg_url = settings.effective_state_url
    token = TokenSigner(SECRET_KEY).make(Purpose.PREFERENCES, "ada@example.org")
    with running_app(settings) as one, running_app(settings) as two:

        def save(base: str, keywords: str, count: int = 1) -> None:
            with httpx.Client(timeout=30) as client:
                for _ in range(count):
                    url = f"{base}/preferences/{token}"
                    page = client.get(url)
                    form = _prefs(csrf_of(page), keywords)
                    assert client.post(url, data=form).status_code == 200

        save(one, "first host")
        save(two, "second host")
        assert listed(settings, "ada@example.org").keywords == ("second host",)  # type: ignore[union-attr]
        threads = [
            threading.Thread(target=save, args=(base, f"host {n}", 10))
            for n, base in enumerate((one, two, one, two))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    with open_state(pg_url) as store:
        events = [e for e in store.events("ada@example.org") if e.action == "preferences"]
        last = events[-1].detail["values"]["keywords"]
    # Each save whose values differed from the row it was made on is an event; the last one
    # committed is the row.
    assert len(events) >= 4
    assert list(listed(settings, "ada@example.org").keywords) == last  # type: ignore[union-attr]
    assert exported(settings).startswith(LIST[: LIST.index("  - email: ada")])


def _prefs(csrf: str, keywords: str, *, name: str = "Ada") -> dict[str, Any]:
    """The preferences form with ``keywords``, the other fields at the subscriber's defaults."""
    return {
        "csrf": csrf,
        "name": name,
        "keywords": keywords,
        "exclude": "",
        "frequency": "daily",
        "weekday": "monday",
        "send_at": "07:00",
        "timezone": "UTC",
        "max_papers": "5",
    }
