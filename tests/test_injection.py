"""Nobody writes into our signed mail (issue #26): hostile names and paper titles, end to end.

The real CLI sends through a real relay on loopback (aiosmtpd) with DKIM configured; what the
relay received is parsed field by field. A name that decodes to header lines (an RFC 2047
encoded-word) is refused where it enters, with the field's message; a paper title (from the
sources: data too) is written into the Subject as the text it is.
"""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import dkim
import pytest

from digest.message import check_head
from digest.state import StateStore
from tests.conftest import DKIM_DOMAIN, DKIM_SELECTOR, DkimKey
from tests.factories import (
    BODY_WRITING_NAME,
    DIGEST_FIELDS,
    HOSTILE_NAMES,
    INJECTING_NAME,
    MESSAGE_SETTINGS,
    make_workdir,
    run_cli,
    settings_env,
    smtp_values,
)
from tests.smtpserver import SMTPTestServer

DAY = "2026-08-20"
FIELDS = ("DKIM-Signature", *DIGEST_FIELDS)


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The example papers (copied: a test may edit a day); each test writes its subscribers."""
    return make_workdir(tmp_path, monkeypatch, subscribers_yaml=None)


@pytest.fixture
def relay(
    workdir: Path, dkim_key: DkimKey, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SMTPTestServer]:
    """A relay on loopback, and DIGEST_* variables for a DKIM-signed send to it."""
    with SMTPTestServer() as server:
        values = {
            **MESSAGE_SETTINGS,
            **smtp_values(server),
            "sources": f"file:{workdir / 'papers'}",
            "subscribers": workdir / "subscribers.yaml",
            "dkim_selector": DKIM_SELECTOR,
            "dkim_domain": DKIM_DOMAIN,
            "dkim_private_key_path": dkim_key.path,
            "render_workers": 0,
        }
        for name, value in settings_env(values).items():
            monkeypatch.setenv(name, value)
        yield server


def received(server: SMTPTestServer, dkim_key: DkimKey) -> dict[str, EmailMessage]:
    """What the relay accepted, by recipient; each checked: the fields a digest has, in
    order, each line a field or a folded continuation, under a DKIM signature that verifies."""
    out = {}
    for got in server.messages:
        check_head(got.data, FIELDS)
        assert dkim.verify(got.data, dnsfunc=dkim_key.dns)
        msg = email.message_from_bytes(got.data, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        assert [p.get_content_type() for p in msg.iter_parts()] == ["text/plain", "text/html"]
        out[got.rcpt_tos[0]] = msg
    return out


def write_subscribers(workdir: Path, names: list[str]) -> None:
    entries = "".join(
        f"  - email: reader{i}@example.org\n    name: {json.dumps(name)}\n"
        for i, name in enumerate(names)
    )
    (workdir / "subscribers.yaml").write_text(f"subscribers:\n{entries}", encoding="utf-8")


def test_names_that_would_write_headers_are_refused_by_the_subscribers_file(
    relay: SMTPTestServer, workdir: Path
) -> None:
    write_subscribers(workdir, ["Ada Lovelace", *HOSTILE_NAMES])

    code, output = run_cli("send", "--date", DAY)

    assert code == 2, output
    problems = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(problems) == len(HOSTILE_NAMES), output
    for i, line in enumerate(problems, start=1):
        assert f"subscribers.yaml:{2 * i + 3}: subscribers[{i}].name: must not contain" in line
    assert "encoded-word" in problems[0] and "encoded-word" in problems[1]
    assert "bidirectional override" in problems[2]
    assert "line breaks or control characters" in problems[3] and problems[4]
    assert "Traceback" not in output
    assert relay.messages == []  # nothing sent: not even to the valid subscriber


HOSTILE_TITLES = [
    "=?utf-8?q?A=0D=0AX-Injected:_yes?=",
    "=?utf-8?q?A=0D=0A=0D=0AYour_account_is_locked?=",
]
"""Paper titles short enough to be whole in the Subject (it keeps 55 characters of a title)."""


@pytest.mark.parametrize("title", HOSTILE_TITLES)
def test_a_hostile_paper_title_is_subject_text_not_header_lines(
    relay: SMTPTestServer, workdir: Path, dkim_key: DkimKey, title: str
) -> None:
    day = workdir / "papers" / f"{DAY}.json"
    items = json.loads(day.read_text(encoding="utf-8"))
    for item in items:  # whichever paper leads a subscriber's edition, its title is hostile
        item["title"] = item["paper"]["title"] = title
    day.write_text(json.dumps(items), encoding="utf-8")
    write_subscribers(workdir, ["Ada Lovelace", "José Núñez"])

    code, output = run_cli("send", "--date", DAY)

    assert code == 0, output
    messages = received(relay, dkim_key)
    assert sorted(messages) == ["reader0@example.org", "reader1@example.org"]
    for msg in messages.values():
        assert msg["Reply-To"] == "help@example.org"
        assert "X-Injected" not in msg
        # Shown as written (an invisible WORD JOINER keeps "=?" from being decoded again).
        shown = msg["Subject"].replace("\u2060", "")
        assert shown.split(" and ")[0] == f"Daily Papers · Aug 20: {title}", shown
        assert "\r" not in shown and "\n" not in shown
        text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert "Your account is locked" not in text
    assert messages["reader1@example.org"]["To"] == "José Núñez <reader1@example.org>"


def test_a_header_block_that_is_not_the_one_built_fails_that_message_only(
    relay: SMTPTestServer, workdir: Path, dkim_key: DkimKey
) -> None:
    # A Message-ID kept from an earlier attempt (a resend of an `unknown` row reuses it) is
    # the one header value that is neither ours nor checked on entry: a defence in depth.
    write_subscribers(workdir, ["Ada Lovelace", "Bob"])
    with StateStore(workdir / "digest-state.sqlite3") as store:
        assert store.claim("reader0@example.org", DAY, "=?utf-8?q?a=0D=0ABcc:_x@evil.example?=")
        store.mark_unknown("reader0@example.org", DAY, "connection lost after DATA")

    code, output = run_cli("send", "--date", DAY, "--retry-unknown")

    assert code == 1, output
    assert "sent 1, skipped 0, failed 1" in output and "Traceback" not in output
    assert "reader0@example.org: message not built: the Message-ID: field" in output
    assert sorted(received(relay, dkim_key)) == ["reader1@example.org"]
    with StateStore(workdir / "digest-state.sqlite3") as store:
        row = store.get("reader0@example.org", DAY)
    assert row is not None and row.status == "owed"  # not sent; tried again at the next run


def test_the_header_check_refuses_a_block_with_fields_that_were_not_built() -> None:
    from digest.errors import HeaderError

    names = ["From", "To", "Subject"]
    check_head(b"From: a@x.org\r\nTo: A\r\n <b@x.org>\r\nSubject: s\r\n\r\nbody\r\n", names)
    bad = {
        b"From: a@x.org\r\nTo: A\r\nReply-To: x@evil.example\r\nSubject: s\r\n\r\n": "To: field is",
        b"From: a@x.org\r\nTo: A\r\n\r\nYour account\r\nSubject: s\r\n\r\n": "before Subject",
        b"From: a@x.org\r\nTo: A\nX: 1\r\nSubject: s\r\n\r\n": "bare CR or LF",
        b"From: a@x.org\r\n \r\nTo: b@x.org\r\nSubject: s\r\n\r\n": "only white space",
        b"From: a@x.org\r\nTo: b@x.org\r\nSubject: s\r\n": "no empty line",
    }
    for data, why in bad.items():
        with pytest.raises(HeaderError, match=why):
            check_head(data, names)


def test_settings_refuse_a_from_or_reply_to_that_decodes_to_header_lines(
    relay: SMTPTestServer, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_subscribers(workdir, ["Ada"])
    for variable, value in [
        ("DIGEST_FROM", f"{INJECTING_NAME} <papers@example.org>"),
        ("DIGEST_REPLY_TO", f"{BODY_WRITING_NAME} <help@example.org>"),
        ("DIGEST_FROM", "papers@example.org, boss@example.org"),
        ("DIGEST_ENVELOPE_FROM", "bounces@example.org\r\nRCPT TO:<x@evil.example>"),
    ]:
        with monkeypatch.context() as env:
            env.setenv(variable, value)
            code, output = run_cli("send", "--date", DAY)
        assert code == 2, output
        assert f"error: invalid settings: {variable}: " in output, output
    assert relay.messages == []


def test_valid_settings_still_send(relay: SMTPTestServer, workdir: Path, dkim_key: DkimKey) -> None:
    write_subscribers(workdir, ["Ada Lovelace"])
    code, output = run_cli("send", "--date", DAY)
    assert code == 0, output
    [msg] = received(relay, dkim_key).values()
    assert msg["To"] == "Ada Lovelace <reader0@example.org>"
