"""`digest serve`: a real uvicorn server on loopback, driven with httpx."""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from digest.message import unsubscribe_url_for
from digest.settings import Settings
from digest.state import COPY_TABLES, open_state
from digest.subscribers import load_subscribers
from digest.tokens import CONFIRM_TTL, Purpose, TokenSigner
from digest.web.service import client_key, mailbox_key
from tests.conftest import FIXTURES
from tests.factories import (
    HOSTILE_NAMES,
    INJECTING_NAME,
    PUBLIC,
    SECRET_KEY,
    FakeClock,
    active,
    make_settings,
    messages,
    send_edition,
)
from tests.webserver import csrf_of, eventually, running_app, wait_healthy, wait_written

NEW_KEY = "the-new-key-0123456789-abcdefghijkl"
# What Gmail sends for RFC 8058 one-click: a POST, form-encoded, no cookie, no Referer.
GMAIL_HEADERS = {
    "Content-Type": "application/x-www-form-urlencoded",
    "User-Agent": "Mozilla/5.0 (compatible; Google-Unsubscribe)",
}
GMAIL_BODY = "List-Unsubscribe=One-Click"


@pytest.fixture
def settings(env: dict[str, Any]) -> Settings:
    return make_settings(**env)


@pytest.fixture
def base(settings: Settings) -> Iterator[str]:
    with running_app(settings) as url:
        yield url


def local(url: str, base: str) -> str:
    """An email link (DIGEST_PUBLIC_URL) pointed at the test server."""
    assert url.startswith(PUBLIC), url
    return base + url[len(PUBLIC) :]


def unsubscribe_link(settings: Settings, address: str, base: str) -> str:
    url = unsubscribe_url_for(settings, address)
    assert url is not None
    return local(url, base)


def snapshot(settings: Settings) -> tuple[bytes, str]:
    """The YAML bytes and a digest of every row of the state."""
    with open_state(settings.effective_state_url) as store:
        rows = [store.export_rows(table) for table in COPY_TABLES]
    return settings.subscribers.read_bytes(), hashlib.sha256(repr(rows).encode()).hexdigest()


def state_rows(settings: Settings) -> tuple[Any, ...]:
    with open_state(settings.effective_state_url) as store:
        return (
            sorted(store.suppressions()),
            [(e.action, e.subscriber) for e in store.events()],
        )


def link_in(msg: EmailMessage, path: str) -> str:
    body = msg.get_body(("plain",))
    assert body is not None
    found = re.search(re.escape(PUBLIC) + re.escape(path) + r"/[A-Za-z0-9_-]+", body.get_content())
    assert found, body.get_content()
    return found.group(0)


# -- unsubscribe ---------------------------------------------------------------------------------


async def test_one_click_post_as_gmail_sends_it_unsubscribes_and_send_skips(
    settings: Settings, base: str
) -> None:
    url = unsubscribe_link(settings, "ada@example.org", base)
    assert "ada" not in url
    with httpx.Client() as client:
        r = client.post(url, content=GMAIL_BODY, headers=GMAIL_HEADERS)
    assert r.status_code == 200 and "location" not in r.headers
    assert "set-cookie" not in r.headers
    eventually(lambda: active(settings, "ada@example.org") is False)
    subs = load_subscribers(settings.subscribers)
    assert subs.get("ada@example.org").active is False  # type: ignore[union-attr]
    assert subs.get("bob@example.org").active is True  # type: ignore[union-attr]
    text = settings.subscribers.read_text()
    assert "# The PI." in text and "# her interests" in text and "# keep it short" in text
    assert state_rows(settings) == (["ada@example.org"], [("unsubscribe", "ada@example.org")])
    # Repeating it is harmless.
    before = settings.subscribers.read_bytes()
    with httpx.Client() as client:
        again = client.post(url, content=GMAIL_BODY, headers=GMAIL_HEADERS)
    assert again.status_code == 200
    assert settings.subscribers.read_bytes() == before
    assert state_rows(settings)[1] == [("unsubscribe", "ada@example.org")]
    # The next send skips her, even after someone sets active: true again by hand.
    settings.subscribers.write_text(
        settings.subscribers.read_text().replace("active: false", "active: true")
    )
    rows = await send_edition(settings)
    assert rows["ada@example.org"] == ("skipped", "unsubscribed")
    assert rows["bob@example.org"][0] == "sent"


async def test_get_shows_a_masked_address_and_changes_nothing(
    settings: Settings, base: str
) -> None:
    url = unsubscribe_link(settings, "ada@example.org", base)
    before = snapshot(settings)
    with httpx.Client() as client:
        for _ in range(3):  # link scanners fetch links, sometimes more than once
            page = client.get(url)
            assert page.status_code == 200
            client.head(url)
    assert snapshot(settings) == before
    assert "a***@e***.org" in page.text and "ada@example.org" not in page.text
    assert re.search(r'<form method="post" action="/u/[A-Za-z0-9_-]+">', page.text)
    assert page.text.count("<button") == 1
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "script" not in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"


async def test_the_pages_button_unsubscribes_and_offers_resubscribe(
    settings: Settings, base: str
) -> None:
    url = unsubscribe_link(settings, "bob@example.org", base)
    with httpx.Client() as client:
        page = client.get(url)
        done = client.post(url, data={"csrf": csrf_of(page)})
        assert done.status_code == 200 and "unsubscribed" in done.text
        eventually(lambda: active(settings, "bob@example.org") is False)
        resub = re.search(r'action="(/u/[^"]+/resubscribe)"', done.text)
        assert resub is not None
        back = client.post(base + resub.group(1), data={"csrf": csrf_of(done)})
        assert back.status_code == 200 and "subscribed" in back.text
        eventually(lambda: settings.outbox.exists() and len(messages(settings)) == 1)
    wait_written(settings)
    assert load_subscribers(settings.subscribers).get("bob@example.org").active is True  # type: ignore[union-attr]
    assert state_rows(settings) == (
        [],
        [("unsubscribe", "bob@example.org"), ("resubscribe", "bob@example.org")],
    )
    [welcome] = messages(settings)  # a resubscribe is welcomed too, once
    assert welcome["Subject"] == "Welcome to Daily Papers" and "bob@" in welcome["To"]


def _forged_tokens(settings: Settings) -> dict[str, tuple[str, str]]:
    signer = TokenSigner(SECRET_KEY)
    other_key = TokenSigner("another-secret-key-0123456789-abcdefghij")
    good = signer.make(Purpose.UNSUBSCRIBE, "ada@example.org")
    expired_confirm = signer.make(
        Purpose.CONFIRM,
        "ada@example.org",
        data="0" * 16,
        expires=datetime.now(UTC) - timedelta(seconds=1),
    )
    flipped = good[:-3] + ("A" if good[-3] != "A" else "B") + good[-2:]
    return {
        "forged (other key)": ("/u/", other_key.make(Purpose.UNSUBSCRIBE, "ada@example.org")),
        "tampered": ("/u/", flipped),
        "address not on the list": ("/u/", signer.make(Purpose.UNSUBSCRIBE, "eve@example.org")),
        "wrong purpose (preferences at /u)": (
            "/u/",
            signer.make(Purpose.PREFERENCES, "ada@example.org"),
        ),
        "wrong purpose (unsubscribe at /preferences)": ("/preferences/", good),
        "wrong purpose (unsubscribe at /confirm)": ("/confirm/", good),
        "expired confirm": ("/confirm/", expired_confirm),
        "malformed": ("/u/", "not-a-token!"),
        "empty-ish": ("/u/", "A"),
        "old base64 form with the address": ("/u/", "YWRhQGV4YW1wbGUub3Jn" + "A" * 43),
    }


async def test_bad_tokens_get_4xx_and_change_nothing(settings: Settings, base: str) -> None:
    before = snapshot(settings)
    with httpx.Client() as client:
        for label, (path, token) in _forged_tokens(settings).items():
            url = f"{base}{path}{token}"
            got = client.get(url)
            assert 400 <= got.status_code < 500, label
            assert "Nothing was changed" in got.text
            one_click = client.post(url, content=GMAIL_BODY, headers=GMAIL_HEADERS)
            assert 400 <= one_click.status_code < 500, label
            form = client.post(url, data={"csrf": "x", "max_papers": "1"})
            assert 400 <= form.status_code < 500, label
    assert snapshot(settings) == before
    expired = _forged_tokens(settings)["expired confirm"][1]
    with httpx.Client() as client:
        assert client.get(f"{base}/confirm/{expired}").status_code == 410


async def test_a_rotated_key_still_accepts_old_links(env: dict[str, Any]) -> None:
    old = make_settings(**env)
    url = unsubscribe_url_for(old, "ada@example.org")
    assert url is not None
    rotated = make_settings(**{**env, "secret_key": NEW_KEY, "secret_key_previous": SECRET_KEY})
    with running_app(rotated) as base, httpx.Client() as client:
        r = client.post(local(url, base), content=GMAIL_BODY, headers=GMAIL_HEADERS)
        assert r.status_code == 200
        eventually(lambda: active(rotated, "ada@example.org") is False)
    without = make_settings(**{**env, "secret_key": NEW_KEY})
    with running_app(without) as base, httpx.Client() as client:
        assert client.get(local(url, base)).status_code == 403


# -- preferences ---------------------------------------------------------------------------------


async def test_preferences_errors_next_to_fields_then_saved_into_the_yaml(
    settings: Settings, base: str
) -> None:
    signer = TokenSigner(SECRET_KEY)
    url = f"{base}/preferences/{signer.make(Purpose.PREFERENCES, 'ada@example.org')}"
    with httpx.Client() as client:
        page = client.get(url)
        assert page.status_code == 200
        assert 'value="agent*, reinforcement learning"' in page.text or (
            ">agent*, reinforcement learning<" in page.text
        )
        before = snapshot(settings)
        bad = {
            "csrf": csrf_of(page),
            "name": "Ada",
            "keywords": "agent*, *",
            "exclude": "",
            "frequency": "hourly",
            "weekday": "monday",
            "send_at": "25:99",
            "timezone": "Mars/Olympus_Mons",
            "max_papers": "0",
        }
        r = client.post(url, data=bad)
        assert r.status_code == 422
        assert snapshot(settings) == before
        for field in ("keywords", "frequency", "send_at", "timezone", "max_papers"):
            assert re.search(rf'id="{field}".*?class="error" id="{field}-error"', r.text, re.S), (
                field
            )
        assert 'value="Mars/Olympus_Mons"' in r.text  # what was typed stays in the form
        good = {
            **bad,
            "csrf": csrf_of(r),
            "keywords": "world model, agent*",
            "exclude": "survey",
            "frequency": "weekly",
            "weekday": "friday",
            "send_at": "08:15",
            "timezone": "Europe/Paris",
            "max_papers": "3",
        }
        saved = client.post(url, data=good)
        assert saved.status_code == 200 and "Saved." in saved.text
    wait_written(settings)
    ada = load_subscribers(settings.subscribers).get("ada@example.org")
    assert ada is not None
    assert ada.keywords == ("world model", "agent*") and ada.exclude == ("survey",)
    assert (ada.frequency, ada.weekday, ada.timezone, ada.max_papers) == (
        "weekly",
        "friday",
        "Europe/Paris",
        3,
    )
    assert ada.send_at.strftime("%H:%M") == "08:15"
    text = settings.subscribers.read_text()
    assert "# The PI." in text and "# a student" in text and "\n\n  - email: bob" in text
    assert state_rows(settings)[1] == [("preferences", "ada@example.org")]


# -- sign-up ---------------------------------------------------------------------------------------


def _sign_up(client: httpx.Client, base: str, address: str, **fields: str) -> httpx.Response:
    page = client.get(base + "/")
    assert page.status_code == 200
    return client.post(
        base + "/subscribe", data={"csrf": csrf_of(page), "email": address, **fields}
    )


async def test_sign_up_double_opt_in_then_the_next_edition_goes_to_the_new_subscriber(
    settings: Settings, base: str
) -> None:
    with httpx.Client() as client:
        r = _sign_up(client, base, "Grace@Example.org", name="Grace", keywords="diffusion, video")
        assert r.status_code == 200 and "Check your inbox" in r.text
        assert load_subscribers(settings.subscribers).get("grace@example.org") is None
        [mail] = messages(settings)
        assert mail["To"] == "grace@example.org"
        link = local(link_in(mail, "/confirm"), base)
        page = client.get(link)
        assert page.status_code == 200 and "Confirm subscription" in page.text
        assert load_subscribers(settings.subscribers).get("grace@example.org") is None
        done = client.post(link, data={"csrf": csrf_of(page)})
        assert done.status_code == 200 and "You're subscribed" in done.text
    wait_written(settings)
    grace = load_subscribers(settings.subscribers).get("grace@example.org")
    assert grace is not None and grace.name == "Grace" and grace.keywords == ("diffusion", "video")
    assert "# The PI." in settings.subscribers.read_text()
    rows = await send_edition(settings)
    assert rows["grace@example.org"][0] == "sent"
    got = [m for m in messages(settings) if m["To"] and "grace@example.org" in m["To"]]
    assert any(m["Subject"].startswith("Daily Papers") for m in got)


async def test_sign_up_never_reveals_whether_the_address_is_subscribed(
    settings: Settings, base: str
) -> None:
    with httpx.Client() as client:
        known = _sign_up(client, base, "ada@example.org")
        new = _sign_up(client, base, "amy@example.org")
    assert known.status_code == new.status_code == 200
    assert known.text == new.text  # both mask to a***@e***.org
    assert load_subscribers(settings.subscribers).get("ada@example.org").active  # type: ignore[union-attr]
    subjects = {m["To"]: m["Subject"] for m in messages(settings)}
    assert subjects == {
        "ada@example.org": "You are already subscribed to Daily Papers",
        "amy@example.org": "Confirm your subscription to Daily Papers",
    }


async def test_confirmed_opt_in_lifts_an_unsubscribe(settings: Settings, base: str) -> None:
    with httpx.Client() as client:
        client.post(
            unsubscribe_link(settings, "ada@example.org", base),
            content=GMAIL_BODY,
            headers=GMAIL_HEADERS,
        )
        _sign_up(client, base, "ada@example.org")
        [mail] = messages(settings)
        link = local(link_in(mail, "/confirm"), base)
        client.post(link, data={"csrf": csrf_of(client.get(link))})
    wait_written(settings)
    rows = await send_edition(settings)
    assert rows["ada@example.org"][0] == "sent"
    assert load_subscribers(settings.subscribers).get("ada@example.org").active  # type: ignore[union-attr]


async def test_sign_up_rate_limits_per_target_and_per_client(env: dict[str, Any]) -> None:
    settings = make_settings(**env, signup_per_address_day=2, signup_per_client_hour=4)
    with running_app(settings) as base, httpx.Client() as client:
        answers = [_sign_up(client, base, "victim@example.org") for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 200]
        assert len(messages(settings)) == 2  # the third got no mail; the answer is the same
        assert answers[2].text == answers[0].text
        assert _sign_up(client, base, "other@example.org").status_code == 200
        refused = _sign_up(client, base, "third@example.org")
        assert refused.status_code == 429
        assert len(messages(settings)) == 3


async def test_sign_up_can_be_turned_off(env: dict[str, Any]) -> None:
    settings = make_settings(**env, signup=False)
    with running_app(settings) as base, httpx.Client() as client:
        assert 'action="/subscribe"' not in client.get(base + "/").text
        assert client.post(base + "/subscribe", data={"email": "a@example.org"}).status_code == 404


# -- hostile input -------------------------------------------------------------------------------


HOSTILE = [
    "<script>alert(1)</script>@example.org",
    "ada@example.org\r\nBcc: everyone@example.org",
    "a" * 300 + "@example.org",
    "",
    "ada@example.org, bob@example.org",
]


async def test_hostile_sign_up_inputs_are_refused_or_escaped(
    settings: Settings, base: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    before = snapshot(settings)[0]
    with httpx.Client() as client:
        for value in HOSTILE:
            r = _sign_up(client, base, value)
            assert r.status_code == 422, value
            assert "<script>" not in r.text
            assert "enter a valid email address" in r.text
        xss = _sign_up(
            client, base, "x@example.org", name="<img src=x onerror=alert(1)>", keywords="</li>"
        )
        assert "<img src=x" not in xss.text
        nobody = client.post(base + "/subscribe", data={"email": "y@example.org"})
        assert nobody.status_code == 403  # no CSRF field/cookie
        huge = client.post(
            base + "/subscribe",
            content=b"email=" + b"a" * 100_000,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        assert huge.status_code == 413
        json_body = client.post(base + "/subscribe", json={"email": "z@example.org"})
        assert json_body.status_code == 415
        many = client.post(base + "/subscribe", data={f"f{i}": "x" for i in range(200)})
        assert many.status_code == 400
        redirect = client.get(base + "/?next=https://evil.example/")
        assert "location" not in redirect.headers and "evil.example" not in redirect.text
    assert snapshot(settings)[0] == before
    # Only the valid sign-up (its odd name is plain text, escaped wherever it is shown).
    assert [m["To"] for m in messages(settings)] == ["x@example.org"]


PREFERENCES_FORM = {
    "name": "Bob",
    "keywords": "",
    "exclude": "",
    "frequency": "daily",
    "weekday": "monday",
    "send_at": "07:00",
    "timezone": "UTC",
    "max_papers": "5",
}
"""A valid preferences form (without its CSRF field)."""


@pytest.mark.parametrize("name", HOSTILE_NAMES)
async def test_a_name_that_would_write_headers_is_refused_by_both_forms(
    settings: Settings, base: str, name: str
) -> None:
    before = snapshot(settings)
    url = (
        f"{base}/preferences/{TokenSigner(SECRET_KEY).make(Purpose.PREFERENCES, 'ada@example.org')}"
    )
    with httpx.Client() as client:
        signup = _sign_up(client, base, "eve@example.org", name=name)
        page = client.get(url)
        form = {**PREFERENCES_FORM, "csrf": csrf_of(page), "name": name}
        preferences = client.post(url, data=form)
    for answer in (signup, preferences):
        assert answer.status_code == 422
        # The name field's own message, next to it.
        assert re.search(
            r'id="name".*?<span class="error"[^>]*>must not contain', answer.text, re.S
        )
    assert snapshot(settings) == before  # no sign-up recorded, the YAML untouched
    assert not settings.outbox.exists()  # no confirmation mail


async def test_a_sign_up_recorded_with_a_name_now_refused_confirms_without_it(
    settings: Settings, base: str
) -> None:
    # Recorded before names were checked (a state file from an older version).
    expires = datetime.now(UTC) + CONFIRM_TTL
    with open_state(settings.effective_state_url) as store:
        store.add_signup(
            "0123abcd",
            "eve@example.org",
            name=INJECTING_NAME,
            keywords=["agent*"],
            client="203.0.113.9",
            expires_at=expires,
        )
    token = TokenSigner(SECRET_KEY).make(
        Purpose.CONFIRM, "eve@example.org", data="0123abcd", expires=expires
    )
    with httpx.Client() as client:
        page = client.get(f"{base}/confirm/{token}")
        done = client.post(f"{base}/confirm/{token}", data={"csrf": csrf_of(page)})
    assert done.status_code == 200 and "You're subscribed" in done.text
    wait_written(settings)
    eve = load_subscribers(settings.subscribers).get("eve@example.org")
    assert eve is not None and eve.name is None and eve.keywords == ("agent*",)


async def test_an_address_holding_an_encoded_word_is_refused(settings: Settings, base: str) -> None:
    # Valid RFC 5322 atext, but a header parser decodes it (to a line break, here).
    with httpx.Client() as client:
        r = _sign_up(client, base, "=?utf-8?q?a=0D=0AX-Injected=3A_yes?=@example.org")
    assert r.status_code == 422
    assert re.search(r'<span class="error" id="email-error">[^<]*must not contain', r.text)
    assert not settings.outbox.exists()


@pytest.mark.parametrize("value", ["9" * 4300, "9" * 5000, "1001", "0", "1e9", "٣"])
async def test_max_papers_is_a_bounded_whole_number_in_the_preferences_form(
    settings: Settings, base: str, value: str
) -> None:
    before = snapshot(settings)
    url = (
        f"{base}/preferences/{TokenSigner(SECRET_KEY).make(Purpose.PREFERENCES, 'bob@example.org')}"
    )
    with httpx.Client() as client:
        page = client.get(url)
        r = client.post(url, data={**PREFERENCES_FORM, "csrf": csrf_of(page), "max_papers": value})
    assert r.status_code == 422
    message = re.search(r'id="max_papers-error">([^<]*)<', r.text)
    assert message is not None and message[1].startswith(
        "must be a whole number from 1 to 1,000, got "
    ), r.text
    assert len(message[1]) < 100
    assert snapshot(settings) == before


async def test_hostile_preferences_inputs(settings: Settings, base: str) -> None:
    url = (
        f"{base}/preferences/{TokenSigner(SECRET_KEY).make(Purpose.PREFERENCES, 'bob@example.org')}"
    )
    before = snapshot(settings)
    with httpx.Client() as client:
        page = client.get(url)
        base_form = {**PREFERENCES_FORM, "csrf": csrf_of(page)}
        cases = [
            {"name": "Bob\r\nBcc: x@example.org"},
            {"name": "x" * 500},
            {"keywords": ", ".join(f"k{i}" for i in range(80))},
            {"max_papers": "1e9"},
            {"max_papers": "-1"},
            {"timezone": "../../etc/passwd"},
            {"send_at": "07:00; DROP TABLE"},
            {"weekday": "<b>"},
            {"frequency": "<b>weekly</b>"},
        ]
        for case in cases:
            r = client.post(url, data={**base_form, **case})
            assert r.status_code == 422, case
            assert "<b>" not in r.text
        no_csrf = client.post(url, data={**base_form, "csrf": "0" * 64})
        assert no_csrf.status_code == 403
    assert snapshot(settings) == before


async def test_logs_carry_no_token_and_no_full_address(
    settings: Settings, base: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = unsubscribe_link(settings, "ada@example.org", base)
    token = url.rsplit("/", 1)[1]
    with httpx.Client() as client:
        client.get(url)
        client.post(url, content=GMAIL_BODY, headers=GMAIL_HEADERS)
        _sign_up(client, base, "newbie@example.org")
    server_side = [r for r in caplog.records if r.name.startswith(("digest", "uvicorn"))]
    text = "\n".join(r.getMessage() for r in server_side)
    assert "unsubscribe a***@e***.org" in text and "POST /u/…" in text
    assert token not in text
    assert "ada@example.org" not in text and "newbie@example.org" not in text
    assert SECRET_KEY not in text


# -- archive ---------------------------------------------------------------------------------------


async def test_archive_index_edition_and_atom_feed(settings: Settings, base: str) -> None:
    with httpx.Client() as client:
        assert "No edition has been sent yet" in client.get(base + "/archive").text
        await send_edition(settings)
        index = client.get(base + "/archive")
        assert index.status_code == 200 and 'href="/archive/2026-08-20"' in index.text
        edition = client.get(base + "/archive/2026-08-20")
        assert edition.status_code == 200 and "<html" in edition.text
        assert "ada@example.org" not in edition.text  # the unpersonalized edition
        assert "script-src" not in edition.headers["content-security-policy"]
        feed = client.get(base + "/archive.atom")
        assert feed.headers["content-type"].startswith("application/atom+xml")
        assert f"<id>{PUBLIC}/archive/2026-08-20</id>" in feed.text
        assert "<title>Daily Papers · " in feed.text
        for bad in ("2026-08-21", "2026-13-40", "..%2F..%2Fetc%2Fpasswd", "<script>"):
            assert client.get(base + "/archive/" + bad).status_code == 404


def test_cli_serve_needs_a_secret_key(tmp_path: Path) -> None:
    import subprocess
    import sys

    shutil.copy(FIXTURES.parent.parent / "subscribers.example.yaml", tmp_path / "s.yaml")
    proc = subprocess.run(
        [sys.executable, "-m", "digest", "serve", "--port", "1"],
        env={
            "PATH": "/usr/bin:/bin",
            "DIGEST_SUBSCRIBERS": str(tmp_path / "s.yaml"),
            "DIGEST_STATE_PATH": str(tmp_path / "s.sqlite3"),
        },
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "DIGEST_SECRET_KEY" in proc.stderr and "Traceback" not in proc.stderr


# -- the email's links -------------------------------------------------------------------------


async def test_the_emails_greeting_footer_links_and_postal_address(
    env: dict[str, Any],
) -> None:
    settings = make_settings(**env, postal_address="Lab of Papers, 1 Main St, Springfield")
    await send_edition(settings)
    [mail] = [m for m in messages(settings) if "ada@example.org" in str(m["To"])]
    html = mail.get_body(("html",))
    text = mail.get_body(("plain",))
    assert html is not None and text is not None
    html_s, text_s = html.get_content(), text.get_content()
    assert "Hi Ada," in html_s and "Hi Ada," in text_s
    assert "Lab of Papers, 1 Main St, Springfield" in html_s
    assert "Lab of Papers, 1 Main St, Springfield" in text_s
    links = dict(
        re.findall(r'href="(https://papers\.example\.org/[^"]+)"[^>]*>([A-Za-z ]+)</a>', html_s)
    )
    by_label = {label: url for url, label in links.items()}
    assert set(by_label) >= {"Manage preferences", "View in browser", "Unsubscribe"}
    assert "ada" not in by_label["Manage preferences"] + by_label["Unsubscribe"]
    assert by_label["View in browser"] == f"{PUBLIC}/archive/2026-08-20"
    assert re.search(r"<(https://papers\.example\.org/u/[^>]+)>", mail["List-Unsubscribe"])
    with running_app(settings) as base, httpx.Client() as client:
        prefs = client.get(local(by_label["Manage preferences"], base))
        assert prefs.status_code == 200 and "Your preferences" in prefs.text
        assert client.get(local(by_label["View in browser"], base)).status_code == 200
        unsub = client.get(local(by_label["Unsubscribe"], base))
        assert unsub.status_code == 200 and "a***@e***.org" in unsub.text
        assert "Lab of Papers" in unsub.text


@pytest.mark.parametrize("command", [["serve", "--port", "{port}"], ["run"]])
def test_digest_serve_and_digest_run_serve_the_app_and_drain_at_sigterm(
    env: dict[str, Any], tmp_path: Path, command: list[str]
) -> None:
    import signal
    import subprocess
    import sys

    from tests.webserver import free_port

    port = free_port()
    variables = {
        "PATH": "/usr/bin:/bin",
        "DIGEST_SUBSCRIBERS": str(env["subscribers"]),
        "DIGEST_STATE_URL": env["state_url"],
        "DIGEST_OUTBOX": str(env["outbox"]),
        "DIGEST_SOURCES": env["sources"],
        "DIGEST_SECRET_KEY": SECRET_KEY,
        "DIGEST_PUBLIC_URL": PUBLIC,
        "DIGEST_TICK_SECONDS": "3600",
    }
    if command == ["run"]:
        variables["DIGEST_HTTP_PORT"] = str(port)
    args = [a.replace("{port}", str(port)) for a in command]
    proc = subprocess.Popen(
        [sys.executable, "-m", "digest", *args],
        env=variables,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(base, proc)
        url = unsubscribe_url_for(make_settings(**env), "bob@example.org")
        assert url is not None
        r = httpx.post(local(url, base), content=GMAIL_BODY, headers=GMAIL_HEADERS, timeout=30)
        assert r.status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=90)
    assert proc.returncode == 0, stderr
    # Written before the process exited (the background write is drained at shutdown).
    assert active(make_settings(**env), "bob@example.org") is False
    assert "/u/…" in stderr and url.rsplit("/", 1)[1] not in stderr


# -- who may change a subscription (issue 26) ---------------------------------------------------


def _suppress(settings: Settings, address: str, reason: str, actor: str) -> None:
    with open_state(settings.effective_state_url) as store:
        store.suppress(address, reason, evidence="set by the test", actor=actor)


def _suppression_of(settings: Settings, address: str) -> tuple[str, bool] | None:
    with open_state(settings.effective_state_url) as store:
        history = store.suppression_history(address)
    return (history[-1].reason, history[-1].active) if history else None


@pytest.mark.parametrize(
    ("reason", "actor"),
    [("bounced", "bounces"), ("complained", "bounces"), ("manual", "cli:operator")],
)
async def test_the_unsubscribe_link_never_lifts_a_suppression_the_subscriber_did_not_make(
    settings: Settings, base: str, reason: str, actor: str
) -> None:
    _suppress(settings, "ada@example.org", reason, actor)
    url = unsubscribe_link(settings, "ada@example.org", base)
    before = snapshot(settings)[0], state_rows(settings)
    with httpx.Client() as client:
        page = client.get(url)
        # Whoever holds the link posts the undo directly, as the page after unsubscribing would.
        refused = client.post(url + "/resubscribe", data={"csrf": csrf_of(page)})
        assert refused.status_code == 409, refused.text
        assert "Nothing was changed" in refused.text and "sign up again" in refused.text
        assert (snapshot(settings)[0], state_rows(settings)) == before
        assert _suppression_of(settings, "ada@example.org") == (reason, True)
        rows = await send_edition(settings)
        assert rows["ada@example.org"] == ("skipped", reason)
        # The page after unsubscribing does not offer the undo for such an address.
        done = client.post(url, data={"csrf": csrf_of(page)})
        assert done.status_code == 200 and "/resubscribe" not in done.text
    assert _suppression_of(settings, "ada@example.org") == (reason, True)


async def test_the_undo_works_only_shortly_after_the_unsubscribe(env: dict[str, Any]) -> None:
    settings = make_settings(**env)
    clock = FakeClock(datetime.now(UTC))
    with running_app(settings, now=clock) as base, httpx.Client() as client:
        url = unsubscribe_link(settings, "ada@example.org", base)
        page = client.get(url)
        done = client.post(url, data={"csrf": csrf_of(page)})
        assert done.status_code == 200 and "/resubscribe" in done.text
        eventually(lambda: active(settings, "ada@example.org") is False)
        # Months later, someone holding an old email (forwarded, or the header's link)...
        clock.at += timedelta(days=90)
        late = client.post(url + "/resubscribe", data={"csrf": csrf_of(done)})
        assert late.status_code == 409 and "Nothing was changed" in late.text
    assert active(settings, "ada@example.org") is False
    assert _suppression_of(settings, "ada@example.org") == ("unsubscribed", True)
    assert state_rows(settings)[1] == [("unsubscribe", "ada@example.org")]


async def test_a_new_sign_up_never_lifts_the_operators_suppression(
    settings: Settings, base: str
) -> None:
    with httpx.Client() as client:
        # A confirmation link mailed before the operator's decision...
        _sign_up(client, base, "grace@example.org")
        [mail] = messages(settings)
        link = local(link_in(mail, "/confirm"), base)
        page = client.get(link)
        _suppress(settings, "grace@example.org", "manual", "cli:operator")
        yaml_before = settings.subscribers.read_bytes()
        refused = client.post(link, data={"csrf": csrf_of(page)})
        assert refused.status_code == 409 and "Nothing was changed" in refused.text
        assert settings.subscribers.read_bytes() == yaml_before
        # ...and a sign-up after it: the same answer as for any address, and no mail at all.
        again = _sign_up(client, base, "grace@example.org")
        assert again.status_code == 200 and "Check your inbox" in again.text
    assert len(messages(settings)) == 1
    assert load_subscribers(settings.subscribers).get("grace@example.org") is None
    assert _suppression_of(settings, "grace@example.org") == ("manual", True)


async def test_a_confirmed_sign_up_lifts_a_bounce(settings: Settings, base: str) -> None:
    _suppress(settings, "ada@example.org", "bounced", "bounces")
    with httpx.Client() as client:
        _sign_up(client, base, "ada@example.org")
        [mail] = messages(settings)
        link = local(link_in(mail, "/confirm"), base)
        done = client.post(link, data={"csrf": csrf_of(client.get(link))})
        assert done.status_code == 200 and "You're subscribed" in done.text
    assert _suppression_of(settings, "ada@example.org") == ("bounced", False)
    rows = await send_edition(settings)
    assert rows["ada@example.org"][0] == "sent"


async def test_the_unsubscribe_link_leads_to_no_preferences_link(
    settings: Settings, base: str
) -> None:
    url = unsubscribe_link(settings, "bob@example.org", base)
    with httpx.Client() as client:
        page = client.get(url)
        done = client.post(url, data={"csrf": csrf_of(page)})
        back = client.post(url + "/resubscribe", data={"csrf": csrf_of(done)})
    assert done.status_code == back.status_code == 200
    for answer in (page, done, back):
        assert "/preferences/" not in answer.text
    assert "Manage preferences" in done.text  # where to find it: the link in any edition


async def test_a_confirm_link_works_once(settings: Settings, base: str) -> None:
    with httpx.Client() as client:
        _sign_up(client, base, "grace@example.org")
        _sign_up(client, base, "grace@example.org")
        first, second = (local(link_in(m, "/confirm"), base) for m in messages(settings))
        page = client.get(second)
        assert client.post(second, data={"csrf": csrf_of(page)}).status_code == 200
        client.post(
            unsubscribe_link(settings, "grace@example.org", base),
            content=GMAIL_BODY,
            headers=GMAIL_HEADERS,
        )
        eventually(lambda: active(settings, "grace@example.org") is False)
        before = snapshot(settings)[0], state_rows(settings)
        for link in (second, first):  # the used one, and one older than the unsubscribe
            assert client.get(link).status_code == 410
            replay = client.post(link, data={"csrf": csrf_of(page)})
            assert replay.status_code == 410 and "Nothing was changed" in replay.text
    assert (snapshot(settings)[0], state_rows(settings)) == before
    assert active(settings, "grace@example.org") is False
    assert _suppression_of(settings, "grace@example.org") == ("unsubscribed", True)


def _sign_up_from(client: httpx.Client, base: str, address: str, ip: str) -> httpx.Response:
    """A sign-up as the reverse proxy on loopback forwards it from ``ip``."""
    page = client.get(base + "/", headers={"X-Forwarded-For": ip})
    return client.post(
        base + "/subscribe",
        data={"csrf": csrf_of(page), "email": address},
        headers={"X-Forwarded-For": ip},
    )


async def test_sign_ups_from_one_ipv6_64_count_as_one_client(env: dict[str, Any]) -> None:
    settings = make_settings(**env, signup_per_client_hour=4)
    with running_app(settings) as base, httpx.Client() as client:
        answers = [
            _sign_up_from(client, base, f"user{i}@example.org", f"2001:db8:1:2::{i:x}")
            for i in range(1, 11)
        ]
        assert [a.status_code for a in answers] == [200] * 4 + [429] * 6
        assert _sign_up_from(client, base, "u@example.org", "2001:db8:1:3::1").status_code == 200
        assert _sign_up_from(client, base, "v@example.org", "192.0.2.1").status_code == 200
        # Hostile or odd client values are a client like any other, never a crash.
        for odd in ("garbage", "::ffff:192.0.2.1", "fe80::1%eth0", "[2001:db8::1]"):
            assert _sign_up_from(client, base, f"w{len(odd)}@example.org", odd).status_code == 200
    assert len(messages(settings)) == 4 + 1 + 1 + 4


@pytest.mark.parametrize(
    "variants",
    [
        [
            "victim@example.org",
            "victim+1@example.org",
            "Victim+news@example.org",
            "victim+@example.org",
        ],
        ["j.doe@gmail.com", "jdoe@googlemail.com", "J.D.O.E+x@gmail.com", "jd.oe@gmail.com"],
    ],
)
async def test_tagged_and_dotted_spellings_of_one_mailbox_share_its_limit(
    env: dict[str, Any], variants: list[str]
) -> None:
    settings = make_settings(**env, signup_per_address_day=2, signup_per_client_hour=100)
    with running_app(settings) as base, httpx.Client() as client:
        answers = [_sign_up(client, base, v) for v in variants * 3]
    assert {a.status_code for a in answers} == {200}
    assert len(messages(settings)) == 2


async def test_feedback_links_are_cut_from_the_log_and_not_cached(
    settings: Settings, base: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    token = TokenSigner(SECRET_KEY).make(
        Purpose.FEEDBACK, "ada@example.org", data="like 2406.10001"
    )
    with httpx.Client() as client:
        page = client.get(f"{base}/f/{token}")
    assert page.status_code == 200
    assert page.headers.get("cache-control") == "no-store"
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("digest"))
    assert "GET /f/… 200" in text and token not in text


async def test_the_request_line_is_logged_before_the_answer_ends(
    settings: Settings, base: str, caplog: pytest.LogCaptureFixture
) -> None:
    class SlowHandler(logging.Handler):
        """A log destination that takes its time (a full disk, a slow syslog)."""

        def __init__(self) -> None:
            super().__init__(logging.INFO)
            self.lines: list[str] = []

        def emit(self, record: logging.LogRecord) -> None:
            time.sleep(0.3)
            self.lines.append(record.getMessage())

    caplog.set_level(logging.INFO, logger="digest.web")
    handler = SlowHandler()
    logger = logging.getLogger("digest.web")
    logger.addHandler(handler)
    try:
        with httpx.Client() as client:
            for path in ("/healthz", "/archive"):
                assert client.get(base + path).status_code == 200
                assert handler.lines and handler.lines[-1].startswith(f"GET {path} 200"), path
    finally:
        logger.removeHandler(handler)


async def test_a_trailing_slash_is_not_found_never_a_redirect(
    settings: Settings, base: str
) -> None:
    token = TokenSigner(SECRET_KEY).make(Purpose.UNSUBSCRIBE, "ada@example.org")
    with httpx.Client() as client:
        for path in ("/archive/", f"/u/{token}/", "/healthz/"):
            got = client.get(base + path, headers={"Host": "evil.example"})
            assert got.status_code == 404, path
            assert "location" not in got.headers and "evil.example" not in got.text


async def test_a_chunked_body_over_the_limit_gets_413(settings: Settings, base: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b"email=x%40example.org&name="
        for _ in range(20):
            yield b"a" * 1024

    url = unsubscribe_link(settings, "ada@example.org", base)
    before = snapshot(settings)
    with httpx.Client() as client:
        for target in (base + "/subscribe", url):
            got = client.post(
                target,
                content=chunks(),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            assert got.status_code == 413, target
    assert snapshot(settings) == before


async def test_each_link_has_one_spelling(settings: Settings, base: str) -> None:
    token = TokenSigner(SECRET_KEY).make(Purpose.UNSUBSCRIBE, "ada@example.org")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(token[-1])
    # 26 bytes in 35 characters: the last character carries 2 bits that are not data.
    others = [token[:-1] + alphabet[last ^ spare] for spare in (1, 2, 3)]
    before = snapshot(settings)
    with httpx.Client() as client:
        assert client.get(f"{base}/u/{token}").status_code == 200
        for other in others:
            assert client.get(f"{base}/u/{other}").status_code == 400, other
            one_click = client.post(f"{base}/u/{other}", content=GMAIL_BODY, headers=GMAIL_HEADERS)
            assert one_click.status_code == 400
    assert snapshot(settings) == before


@pytest.mark.parametrize(
    ("client", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::1", "2001:db8:1:2::/64"),
        ("[2001:db8:1:2::1]", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1%eth0", "fe80::/64"),
        ("-", "-"),
        ("", ""),
        ("not an address\r\n", "not an address\r\n"),
    ],
)
def test_client_key(client: str, key: str) -> None:
    assert client_key(client) == key


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("ada@example.org", "ada@example.org"),
        ("ada+news+x@example.org", "ada@example.org"),
        ("+x@example.org", "+x@example.org"),
        ("a.d.a@example.org", "a.d.a@example.org"),
        ("a.d.a+x@googlemail.com", "ada@gmail.com"),
        ("...@gmail.com", "...@gmail.com"),
        ('"a+b"@example.org', '"a+b"@example.org'),
        ("no-at-sign", "no-at-sign"),
        ("josé+x@xn--bcher-kva.de", "josé@xn--bcher-kva.de"),
    ],
)
def test_mailbox_key(address: str, key: str) -> None:
    assert mailbox_key(address) == key
