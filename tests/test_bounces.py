"""Bounces and complaints: real DSNs/ARF, matching, the Maildir and IMAP intake, VERP, hostility.

The fixtures in tests/fixtures/bounces/ are real captured bounces (see its README.md).
"""

from __future__ import annotations

import email
import email.policy
import logging
import shutil
import ssl
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import trustme

from digest.bounces.dsn import MAX_ORIGINAL_IDS, ReportKind, parse_bounce
from digest.bounces.intake import (
    ImapLocation,
    MaildirBox,
    matcher_for,
    process_mailbox,
    run_intake,
)
from digest.bounces.policy import BouncePolicy
from digest.bounces.verp import parse_verp, verp_address
from digest.core import Digest
from digest.errors import ConfigError
from digest.message import make_message_id
from digest.models import Edition
from digest.settings import Settings, load_settings
from digest.state import StateBackend
from digest.tokens import TokenSigner
from tests.conftest import FIXTURES, MakeStore
from tests.factories import ARF_ID, ARF_RCPT, readdress
from tests.smtpserver import SMTPTestServer

BOUNCES = FIXTURES / "bounces"
NOW = datetime(2026, 8, 21, 9, 0, tzinfo=UTC)
EDITION = "2026-08-20"
MAX = 2_000_000
SECRET = "bounce-test-secret-0123456789-abcdef"

# (file, kind, recipient, hard/soft/complaint, status, original Message-ID)
REAL = [
    ("amazonses-hard-5.0.0.eml", "dsn", "shironeko@example.co.jp", "hard", "5.0.0",
     "<000001321defbd2a-788e31c8-2be1-422f-a8d4-cf7765cc9ed7-000000@email.amazonses.com>"),
    ("arf-abuse.eml", "arf", "this-local-part-does-not-exist-on-yahoo@yahoo.com", "complaint",
     None, "<000000000000000000000000.smtp@example.com>"),
    ("exim-hard.eml", "heuristic", "kijitora@example.jp", "hard", None,
     "<hogeuoiuadogalhg.dg9i09@example.jp>"),
    ("gmail-hard.eml", "heuristic", "shironeko@example.jp", "hard", None,
     "<106A231A-B504-44EF-9BF2-8A382AB84E80@gmail.com>"),
    ("gmail-soft.eml", "heuristic", "kijitora@example.jp", "soft", None,
     "<A4D6026C-0699-460F-9F86-C2A5CB4BE6CE@gmail.com>"),
    ("office365-hard-5.1.1.eml", "dsn", "kijitora@cr3.neko.nyaan.jp", "hard", "5.1.1",
     "<SLXP216MB0381A4F513CF42F0FCDA0E2FA9250@SLXP216MB0381.KORP216.PROD.OUTLOOK.COM>"),
    ("postfix-hard-5.1.1.eml", "dsn", "kijitora@example.co.jp", "hard", "5.1.1",
     "<A8F82EDD-E518-4F5C-8C70-BC4EFF24AB9F@example.ne.jp>"),
    ("postfix-soft-4.1.1.eml", "dsn", "kijitora@example.org", "soft", "4.1.1",
     "<FFFFFFFF.0000000@example.co.jp>"),
    ("yahoo-hard.eml", "heuristic", "userunknown@cubicroot.jp", "hard", None,
     "<B96398F2-F84C-40B0-95A6-DE91474072E4@yahoo.com>"),
    ("yahoo-soft-4.7.0.eml", "dsn", "kijitora@y.example.ca", "soft", "4.7.0",
     "<9UK8P757b8z3ZQM@u1.em.example.jp>"),
]  # fmt: skip


@pytest.fixture
def store(make_store: MakeStore) -> StateBackend:
    """A fresh state of each backend (SQLite, PostgreSQL) at ``NOW``."""
    return make_store(now=lambda: NOW)


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "subscribers": tmp_path / "subscribers.yaml",
        "state_path": tmp_path / "state.sqlite3",
        "outbox": tmp_path / "outbox",
        "sources": "file:papers",
    }
    values.update(overrides)
    return load_settings(env_file=None, **values)


def maildir(path: Path) -> Path:
    for sub in ("new", "cur", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def drop(box: Path, name: str, data: bytes) -> Path:
    target = box / "new" / name
    target.write_bytes(data)
    return target


def sent(store: StateBackend, address: str, message_id: str, edition: str = EDITION) -> None:
    assert store.claim(address, edition, message_id)
    store.mark_sent(address, edition, "250 OK")


def folder(box: Path, name: str) -> list[str]:
    cur = box / f".{name}" / "cur"
    return sorted(p.name.split(":")[0] for p in cur.iterdir()) if cur.exists() else []


def process(store: StateBackend, box: Path, tmp_path: Path, **overrides: Any) -> Any:
    known = overrides.pop("known", ())
    s = settings(tmp_path, **overrides)
    return process_mailbox(
        store,
        MaildirBox(box, max_bytes=s.bounce_max_bytes),
        policy=BouncePolicy.from_settings(s),
        matcher=matcher_for(s, known),
        max_bytes=s.bounce_max_bytes,
        now=NOW,
    )


# -- parsing real bounces ---------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind", "recipient", "bounce", "status", "original"), REAL)
def test_real_bounce_gives_recipient_hard_or_soft_and_original_message_id(
    name: str, kind: str, recipient: str, bounce: str, status: str | None, original: str
) -> None:
    parsed = parse_bounce((BOUNCES / name).read_bytes(), max_bytes=MAX)
    assert parsed.kind == kind
    first = parsed.recipients[0]
    assert (first.address, first.kind, first.status) == (recipient, bounce, status)
    assert parsed.original_message_ids[0] == original


@pytest.mark.parametrize(("name", "kind", "recipient", "bounce", "status", "original"), REAL)
def test_real_bounce_matches_its_delivery_and_applies_the_policy(
    name: str,
    kind: str,
    recipient: str,
    bounce: str,
    status: str | None,
    original: str,
    store: StateBackend,
    tmp_path: Path,
) -> None:
    sent(store, recipient, original)
    sent(store, "other@example.org", "<other@test>")
    box = maildir(tmp_path / "bounces")
    drop(box, "1.msg", (BOUNCES / name).read_bytes())
    report = process(store, box, tmp_path)
    [event] = store.bounce_events()
    assert (event.address, event.kind, event.edition, event.message_id) == (
        recipient,
        bounce,
        EDITION,
        original,
    )
    assert "matched by Message-ID" in event.evidence
    suppression = store.suppression(recipient)
    if bounce == "soft":  # one soft bounce: score 1 of 5, still mailed
        assert suppression is None
        score = store.bounce_score(recipient)
        assert score is not None and score.soft == 1
    else:
        assert suppression is not None
        assert suppression.reason == ("complained" if bounce == "complaint" else "bounced")
        assert suppression.actor == "bounces"
        assert report.suppressed == [recipient]
    assert store.suppression("other@example.org") is None
    assert folder(box, "Processed") == ["1.msg"]
    assert list((box / "new").iterdir()) == []


def test_delay_notice_is_ignored_and_nothing_is_recorded(
    store: StateBackend, tmp_path: Path
) -> None:
    data = (BOUNCES / "postfix-hard-5.1.1.eml").read_bytes()
    delayed = data.replace(b"Action: failed", b"Action: delayed").replace(b"5.1.1", b"4.4.7")
    sent(store, "kijitora@example.co.jp", "<A8F82EDD-E518-4F5C-8C70-BC4EFF24AB9F@example.ne.jp>")
    box = maildir(tmp_path / "bounces")
    drop(box, "delay.msg", delayed)
    report = process(store, box, tmp_path)
    assert (report.ignored, report.bounces) == (1, 0)
    assert store.bounce_events() == [] and store.suppressions() == {}
    assert folder(box, "Processed") == ["delay.msg"]


def test_an_address_mailed_recently_is_no_match_without_our_message_id(
    store: StateBackend, tmp_path: Path
) -> None:
    # The DSN's original Message-ID is not ours, though we did mail the address an hour ago:
    # anyone can write that DSN, so it is kept aside (main matched it "by address").
    sent(store, "kijitora@example.co.jp", "<ours@test>")
    box = maildir(tmp_path / "bounces")
    drop(box, "1.msg", (BOUNCES / "postfix-hard-5.1.1.eml").read_bytes())
    report = process(store, box, tmp_path)
    assert store.bounce_events() == [] and store.suppressions() == {}
    assert folder(box, "Unrecognised") == ["1.msg"]
    [why] = report.unrecognised
    assert "no Message-ID of ours" in why and "kijitora@example.co.jp" in why


def test_the_same_message_twice_counts_once(store: StateBackend, tmp_path: Path) -> None:
    sent(store, "kijitora@example.org", "<FFFFFFFF.0000000@example.co.jp>")
    box = maildir(tmp_path / "bounces")
    data = (BOUNCES / "postfix-soft-4.1.1.eml").read_bytes()
    drop(box, "1.msg", data)
    first = process(store, box, tmp_path)
    drop(box, "again.msg", data)  # the same bytes delivered again (or restored by hand)
    second = process(store, box, tmp_path)
    assert (first.bounces, second.bounces, second.already) == (1, 0, 1)
    assert len(store.bounce_events()) == 1
    assert folder(box, "Processed") == ["1.msg", "again.msg"]


# -- hostile and malformed messages --------------------------------------------------------------


def _dsn(recipient: str, original_id: str | None, *, extra: bytes = b"") -> bytes:
    """A Postfix-like DSN; ``original_id=None`` leaves out the returned headers."""
    headers = (
        b"--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        b"Message-ID: " + original_id.encode() + b"\r\nSubject: papers\r\n\r\n"
        if original_id
        else b""
    )
    return (
        b"From: MAILER-DAEMON@mx.example.net\r\n"
        b"To: papers@example.org\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\n"
        b"Message-ID: <dsn-1@mx.example.net>\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        b"--B\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        b"--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.net\r\n\r\n"
        b"Final-Recipient: rfc822; " + recipient.encode() + b"\r\n"
        b"Action: failed\r\nStatus: 5.1.1\r\n"
        b"Diagnostic-Code: smtp; 550 5.1.1 user unknown\r\n\r\n" + headers + extra + b"--B--\r\n"
    )


HOSTILE = {
    "forged-dsn": _dsn("never-mailed@example.org", "<not-ours@example.net>"),
    "huge": _dsn(
        "ada@example.org",
        "<ada-msg@test>",
        extra=b"--B\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n" + b"QUFB" * 19 * 40_000 + b"\r\n",
    ),
    "broken-mime": (
        b"From: MAILER-DAEMON@x\r\nMessage-ID: <b@x>\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="\r\n\r\n'
        b"--\r\n\x00\xff\xfe garbage Final-Recipient: rfc822; ada@example.org\r\n"
    ),
    "no-boundary": (
        b"From: MAILER-DAEMON@x\r\nContent-Type: multipart/report; report-type=delivery-status\r\n"
        b"\r\nAction: failed\r\nStatus: 5.1.1\r\nFinal-Recipient: rfc822; ada@example.org\r\n"
    ),
    "garbage-recipient": _dsn("<script>alert(1)</script>", "<nothing@x>"),
    "deep-nesting": (
        b"From: x@y\r\nMIME-Version: 1.0\r\n"
        + b"".join(
            f'Content-Type: multipart/mixed; boundary="b{i}"\r\n\r\n--b{i}\r\n'.encode()
            for i in range(600)
        )
        + b"Content-Type: text/plain\r\n\r\nhi\r\n"
    ),
    "empty": b"",
    "not-a-bounce": b"From: ada@example.org\r\nSubject: thanks!\r\n\r\nLoved the papers.\r\n",
}


def test_hostile_messages_are_kept_aside_with_a_log_line_and_suppress_nothing(
    store: StateBackend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sent(store, "ada@example.org", "<ada-msg@test>")
    box = maildir(tmp_path / "bounces")
    for name, data in HOSTILE.items():
        drop(box, name, data)
    assert len(HOSTILE["huge"]) > 3_000_000
    with caplog.at_level(logging.WARNING, logger="digest.bounces"):
        report = process(store, box, tmp_path)
    assert report.errors == []
    assert (report.bounces, report.complaints, report.suppressed) == (0, 0, [])
    assert store.suppressions() == {} and store.bounce_events() == []
    assert folder(box, "Unrecognised") == sorted(HOSTILE)
    assert list((box / "new").iterdir()) == []
    lines = {r.getMessage() for r in caplog.records}
    for name in HOSTILE:
        assert any(f"new/{name}: kept aside" in line for line in lines), name
    huge = next(line for line in lines if "new/huge:" in line)
    assert "too large" in huge
    forged = next(line for line in lines if "new/forged-dsn:" in line)
    assert "no Message-ID of ours" in forged and "never-mailed@example.org" in forged


def test_a_message_the_mailbox_cannot_move_stays_and_the_others_go_on(
    store: StateBackend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent(store, "kijitora@example.co.jp", "<A8F82EDD-E518-4F5C-8C70-BC4EFF24AB9F@example.ne.jp>")
    sent(store, "kijitora@example.org", "<FFFFFFFF.0000000@example.co.jp>")
    box = maildir(tmp_path / "bounces")
    drop(box, "1.msg", (BOUNCES / "postfix-hard-5.1.1.eml").read_bytes())
    drop(box, "2.msg", (BOUNCES / "postfix-soft-4.1.1.eml").read_bytes())
    real_move = MaildirBox.move

    def flaky(self: MaildirBox, item: Any, name: str) -> None:
        if item.name == "new/1.msg":
            raise OSError("disk full")
        real_move(self, item, name)

    monkeypatch.setattr(MaildirBox, "move", flaky)
    report = process(store, box, tmp_path)
    assert report.errors == ["new/1.msg: disk full"] and report.bounces == 2
    monkeypatch.setattr(MaildirBox, "move", real_move)
    again = process(store, box, tmp_path)  # committed already: only moved now
    assert (again.already, again.bounces) == (1, 0)
    assert len(store.bounce_events()) == 2


# -- VERP -------------------------------------------------------------------------------------


def test_verp_address_round_trip_and_forgery() -> None:
    signer = TokenSigner(SECRET)
    address = verp_address("bounces@papers.example.org", signer, "Ada@Example.org", "2026-08-20")
    local = address.split("@")[0]
    assert local.startswith("bounces+") and len(local) <= 64
    known = ["grace@example.org", "ada@example.org"]
    base = "bounces@papers.example.org"
    match = parse_verp(address.upper(), base, signer, known, now=NOW)  # case mangled in transit
    assert match is not None and (match.subscriber, match.edition) == (
        "ada@example.org",
        "2026-08-20",
    )
    weekly = verp_address(base, signer, "ada@example.org", "2026-W34")
    assert parse_verp(weekly, base, signer, known, now=NOW).edition == "2026-W34"  # type: ignore[union-attr]
    tampered = address.replace("+", "+a", 1)
    assert parse_verp(tampered, base, signer, known, now=NOW) is None
    other_key = TokenSigner("another-secret-key-0123456789")
    assert parse_verp(address, base, other_key, known, now=NOW) is None
    assert parse_verp(address, base, signer, ["grace@example.org"], now=NOW) is None


async def test_verp_send_then_a_mangled_bounce_is_attributed(tmp_path: Path) -> None:
    (tmp_path / "papers").mkdir()
    shutil.copy(FIXTURES / "hf-daily-papers" / "2026-08-20.json", tmp_path / "papers")
    (tmp_path / "subscribers.yaml").write_text(
        "subscribers:\n  - email: ada@example.org\n  - email: grace@example.org\n"
    )
    box = maildir(tmp_path / "bounces")
    with SMTPTestServer() as server:
        s = settings(
            tmp_path,
            sources=f"file:{tmp_path / 'papers'}",
            sender="Papers <papers@example.org>",
            envelope_from="bounces@example.org",
            verp=True,
            secret_key=SECRET,
            smtp_host="127.0.0.1",
            smtp_port=server.port,
            smtp_security="none",
            bounce_maildir=box,
        )
        with Digest(s, now=lambda: NOW) as digest:
            subs = digest.load_subscribers().subscribers
            summary = await digest.send(Edition.daily(date(2026, 8, 20)), subs)
            assert summary.sent == 2
            envelopes = {m.rcpt_tos[0]: m.mail_from for m in server.messages}
            assert envelopes["ada@example.org"] != envelopes["grace@example.org"]
            assert all(e.startswith("bounces+") for e in envelopes.values())
            # A DSN naming a forwarding address, with the original message stripped: only
            # the VERP address it was sent to ties it to ada's delivery.
            dsn = _dsn("ada.lovelace@forwarded.example.net", "<stripped@x>")
            drop(
                box,
                "dsn.msg",
                dsn.replace(
                    b"To: papers@example.org", b"To: " + envelopes["ada@example.org"].encode()
                ),
            )
            # A mangled notice (no DSN, no known format) to grace's VERP address: soft.
            drop(
                box,
                "mangled.msg",
                b"To: " + envelopes["grace@example.org"].encode() + b"\r\nSubject: oops\r\n\r\n"
                b"Sorry, we could not do anything with your message.\r\n",
            )
            report = run_intake(s, digest.store, known=[x.email for x in subs], now=NOW)
            assert report is not None
            events = {e.address: e for e in digest.store.bounce_events()}
            assert events["ada@example.org"].kind == "hard"
            assert "matched by VERP" in events["ada@example.org"].evidence
            assert events["ada@example.org"].edition == "2026-08-20"
            assert events["grace@example.org"].kind == "soft"
            assert report.suppressed == ["ada@example.org"]
            assert digest.store.suppression("grace@example.org") is None


# -- forgery: only proof of our message counts (issue #26) ----------------------------------------

SENDER = "Papers <papers@example.org>"
ENVELOPE = "bounces@example.org"
MODES = {
    "verp-off": {"sender": SENDER, "envelope_from": ENVELOPE},
    "verp-on": {"sender": SENDER, "envelope_from": ENVELOPE, "verp": True, "secret_key": SECRET},
}
POSTFIX_RCPT = "kijitora@example.co.jp"
POSTFIX_ID = "<A8F82EDD-E518-4F5C-8C70-BC4EFF24AB9F@example.ne.jp>"
GMAIL_RCPT = "shironeko@example.jp"
GMAIL_ID = "<106A231A-B504-44EF-9BF2-8A382AB84E80@gmail.com>"


def forgeries(address: str, guess: str) -> dict[str, bytes]:
    """What an outsider can send to the bounce mailbox about ``address``, a subscriber we
    mailed: they never saw our message, so they quote none of our Message-IDs (or ``guess``,
    one in our format that we never sent) and know no VERP token."""
    fake_verp = f"bounces+{'a' * 42}@example.org".encode()
    return {
        "dsn": _dsn(address, None),
        "dsn-guessed-id": _dsn(address, guess),
        "dsn-fake-verp": _dsn(address, None).replace(
            b"To: papers@example.org", b"To: " + fake_verp
        ),
        "arf": readdress("arf-abuse.eml", {ARF_RCPT: address}),
        "arf-guessed-id": readdress("arf-abuse.eml", {ARF_RCPT: address, ARF_ID: guess}),
        "gmail": readdress("gmail-hard.eml", {GMAIL_RCPT: address}),
    }


@pytest.mark.parametrize("mode", MODES)
def test_forged_bounces_suppress_nobody_and_genuine_ones_still_count(
    mode: str, store: StateBackend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = settings(tmp_path, **MODES[mode])
    people = [f"{n}@example.org" for n in ("ada", "bob", "cy", "dee", "eve", "fay")]
    ids = {p: make_message_id(s, p, EDITION) for p in people}
    for p in people:
        sent(store, p, ids[p])
    box = maildir(tmp_path / "bounces")
    forged = {
        f"{kind}-{p}": data
        for p in people[:3]
        for kind, data in forgeries(p, make_message_id(s, p, EDITION)).items()
    }
    for name, data in forged.items():
        drop(box, name, data)
    # Genuine: the real Postfix DSN and Yahoo complaint about dee's and eve's messages.
    drop(
        box,
        "genuine-dsn",
        readdress("postfix-hard-5.1.1.eml", {POSTFIX_RCPT: people[3], POSTFIX_ID: ids[people[3]]}),
    )
    drop(
        box,
        "genuine-arf",
        readdress("arf-abuse.eml", {ARF_RCPT: people[4], ARF_ID: ids[people[4]]}),
    )
    expected = {people[3]: "bounced", people[4]: "complained"}
    genuine = ["genuine-arf", "genuine-dsn"]
    if mode == "verp-on":  # Gmail's text bounce, original stripped, to fay's VERP address
        to = verp_address(ENVELOPE, TokenSigner(SECRET), people[5], EDITION)
        drop(box, "genuine-verp", readdress("gmail-hard.eml", {GMAIL_ID: "<gone@x>"}, to=to))
        expected[people[5]] = "bounced"
        genuine.append("genuine-verp")
    with caplog.at_level(logging.WARNING, logger="digest.bounces"):
        report = process(store, box, tmp_path, **MODES[mode], known=people)
    assert {a: x.reason for a, x in store.suppressions().items()} == expected
    assert sorted(e.address for e in store.bounce_events()) == sorted(expected)
    assert folder(box, "Unrecognised") == sorted(forged)
    assert folder(box, "Processed") == genuine
    assert sorted(report.suppressed) == sorted(expected) and report.errors == []
    lines = [r.getMessage() for r in caplog.records]
    for name in forged:
        [line] = [x for x in lines if f"new/{name}:" in x]
        assert "kept aside" in line and "no Message-ID of ours" in line, line


def test_our_message_id_counts_only_for_the_subscriber_it_was_sent_to(
    store: StateBackend, tmp_path: Path
) -> None:
    s = settings(tmp_path, **MODES["verp-off"])
    ada = make_message_id(s, "ada@example.org", EDITION)
    sent(store, "ada@example.org", ada)
    sent(store, "bob@example.org", make_message_id(s, "bob@example.org", EDITION))
    box = maildir(tmp_path / "bounces")
    # Whoever holds ada's message cannot use its Message-ID against bob...
    drop(
        box,
        "other",
        readdress("postfix-hard-5.1.1.eml", {POSTFIX_RCPT: "bob@example.org", POSTFIX_ID: ada}),
    )
    # ...and a DSN about an address ada forwards to is about that address, not ada (without
    # VERP; with VERP, the VERP address names ada's delivery: see the VERP test above).
    forward = "ada.lovelace@forwarded.example.net"
    drop(
        box,
        "forward",
        readdress("postfix-hard-5.1.1.eml", {POSTFIX_RCPT: forward, POSTFIX_ID: ada}),
    )
    report = process(store, box, tmp_path, **MODES["verp-off"])
    assert store.suppressions() == {} and store.bounce_events() == []
    assert folder(box, "Unrecognised") == ["forward", "other"]
    why = dict(line.split(": ", 1) for line in report.unrecognised)
    assert "bob@example.org" in why["new/other"] and "ada@example.org" in why["new/other"]
    assert forward in why["new/forward"] and "sent to ada@example.org" in why["new/forward"]


def test_a_complaint_counts_with_our_message_id_alone_and_never_without(
    store: StateBackend, tmp_path: Path
) -> None:
    s = settings(tmp_path, **MODES["verp-off"])
    people = ["ada@example.org", "bob@example.org", "cy@example.org"]
    ids = {p: make_message_id(s, p, EDITION) for p in people}
    for p in people:
        sent(store, p, ids[p])
    box = maildir(tmp_path / "bounces")
    redacted = readdress(
        "arf-abuse.eml",
        {
            f"Original-Rcpt-To: {ARF_RCPT}\n": "",
            f"To: {ARF_RCPT}": "To: redacted",
            ARF_ID: ids[people[0]],
        },
    )
    drop(box, "redacted", redacted)  # a feedback loop that hides the recipient
    masked = readdress(
        "arf-abuse.eml", {ARF_RCPT: "xxxxxxxxxxxx@yahoo.com", ARF_ID: ids[people[1]]}
    )
    drop(box, "masked", masked)  # one that masks it
    forged = readdress("arf-abuse.eml", {ARF_RCPT: people[2]})
    drop(box, "forged", forged)  # names cy, quotes no Message-ID of ours
    report = process(store, box, tmp_path, **MODES["verp-off"])
    assert {a: x.reason for a, x in store.suppressions().items()} == {
        people[0]: "complained",
        people[1]: "complained",
    }
    events = {e.address: e for e in store.bounce_events()}
    assert "matched by Message-ID" in events[people[1]].evidence
    assert "xxxxxxxxxxxx@yahoo.com" in events[people[1]].evidence
    assert folder(box, "Unrecognised") == ["forged"] and report.complaints == 2


@pytest.mark.parametrize("mode", MODES)
def test_a_flood_of_forgeries_against_300_subscribers_suppresses_none(
    mode: str, store: StateBackend, tmp_path: Path
) -> None:
    # The report: 5,000 forged messages suppressed 298 of 300 subscribers, VERP on or off.
    s = settings(tmp_path, **MODES[mode])
    people = [f"reader{i:03d}@example.org" for i in range(300)]
    for p in people:
        sent(store, p, make_message_id(s, p, EDITION))
    box = maildir(tmp_path / "bounces")
    count = 0
    for i, p in enumerate(people):
        for kind, data in forgeries(p, make_message_id(s, p, EDITION)).items():
            drop(box, f"{i:03d}-{kind}", data)
            count += 1
    assert count == 1_800
    report = process(store, box, tmp_path, **MODES[mode], known=people)
    assert (report.messages, len(report.unrecognised)) == (count, count)
    assert (report.bounces, report.complaints, report.suppressed) == (0, 0, [])
    assert store.suppressions() == {} and store.bounce_events() == []


def test_a_message_quoting_30000_message_ids_costs_20_lookups(
    store: StateBackend, tmp_path: Path
) -> None:
    # Each quoted Message-ID is a state lookup; main kept all 30,000 (after a quadratic
    # de-duplication: 4.5 s to parse this one message).
    guess = "<2026-08-20.{:024x}@example.org>".format
    quoted = "".join(f"Message-ID: {guess(i)}\r\n" for i in range(30_000)).encode()
    data = readdress("gmail-hard.eml", {GMAIL_RCPT: "ada@example.org"}) + quoted
    assert len(data) < MAX
    parsed = parse_bounce(data, max_bytes=MAX)
    assert parsed.original_message_ids[:2] == (GMAIL_ID, guess(0))
    assert len(parsed.original_message_ids) == MAX_ORIGINAL_IDS
    sent(store, "ada@example.org", guess(29_999))  # the last one quoted
    box = maildir(tmp_path / "bounces")
    drop(box, "ids", data)
    report = process(store, box, tmp_path)
    assert store.suppressions() == {} and folder(box, "Unrecognised") == ["ids"]
    assert "no Message-ID of ours" in report.unrecognised[0]


def test_flufl_bounce_noise_is_demoted_and_our_one_line_stays(
    store: StateBackend, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # No From header: flufl.bounce's Yale detector raises IndexError and flufl logs it with
    # a traceback at ERROR before re-raising it to us.
    box = maildir(tmp_path / "bounces")
    drop(box, "junk", b"Subject: hello\r\n\r\nnothing to see\r\n")
    with caplog.at_level(logging.INFO):
        report = process(store, box, tmp_path)
    assert folder(box, "Unrecognised") == ["junk"] and len(report.unrecognised) == 1
    loud = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert [(r.name, r.levelname) for r in loud] == [("digest.bounces.intake", "WARNING")]
    assert "new/junk: kept aside" in loud[0].getMessage() and loud[0].exc_info is None
    caplog.clear()
    with caplog.at_level(logging.DEBUG):  # -vv / --debug still shows flufl's traceback
        parse_bounce(b"Subject: again\r\n\r\nnothing\r\n", max_bytes=MAX)
    flufl = [r for r in caplog.records if r.name == "flufl.bounce" and r.exc_info]
    assert flufl and all(r.levelno == logging.DEBUG for r in flufl)


# -- IMAP (a real Dovecot) ----------------------------------------------------------------------


@pytest.fixture
def dovecot(leaf: trustme.LeafCert) -> Iterator[Any]:
    from tests.imapserver import DOVECOT, DovecotServer

    if not DOVECOT.exists():
        pytest.skip("dovecot is not installed (.ci/run installs dovecot-imapd)")
    with DovecotServer(leaf) as server:
        yield server


def _imap(server: Any, ca: trustme.CA) -> Any:
    from imapclient import IMAPClient

    from tests.imapserver import PASSWORD, USER

    context = ssl.create_default_context()
    ca.configure_trust(context)
    client = IMAPClient("127.0.0.1", port=server.port, ssl=True, ssl_context=context, timeout=10)
    client.login(USER, PASSWORD)
    return client


def test_imap_mailbox_on_dovecot_is_processed_once_and_sorted(
    dovecot: Any, ca: trustme.CA, ca_file: Path, store: StateBackend, tmp_path: Path
) -> None:
    from tests.imapserver import PASSWORD, USER

    sent(store, "kijitora@example.co.jp", "<A8F82EDD-E518-4F5C-8C70-BC4EFF24AB9F@example.ne.jp>")
    sent(
        store,
        "this-local-part-does-not-exist-on-yahoo@yahoo.com",
        "<000000000000000000000000.smtp@example.com>",
    )
    client = _imap(dovecot, ca)
    for name in ("postfix-hard-5.1.1.eml", "arf-abuse.eml"):
        client.append("INBOX", (BOUNCES / name).read_bytes())
    client.append("INBOX", HOSTILE["forged-dsn"])
    big = _dsn("kijitora@example.co.jp", "<A8F82EDD-E518-4F5C-8C70-BC4EFF24AB9F@example.ne.jp>")
    client.append("INBOX", big + b"x" * 120_000)  # over the limit below: never fetched
    s = settings(
        tmp_path,
        bounce_imap_url=f"imaps://{USER}@127.0.0.1:{dovecot.port}/INBOX",
        bounce_imap_password=PASSWORD,
        bounce_imap_ca_file=ca_file,
        bounce_max_bytes=100_000,
    )
    report = run_intake(s, store, known=[], now=NOW)
    assert report is not None
    assert (report.messages, report.bounces, report.complaints) == (4, 1, 1)
    assert len(report.unrecognised) == 2
    assert any("too large (1" in line and "limit 100,000" in line for line in report.unrecognised)
    assert {a: x.reason for a, x in store.suppressions().items()} == {
        "kijitora@example.co.jp": "bounced",
        "this-local-part-does-not-exist-on-yahoo@yahoo.com": "complained",
    }
    for mailbox, count in (("INBOX", 0), ("Processed", 2), ("Unrecognised", 2)):
        client.select_folder(mailbox)
        assert len(client.search(["NOT", "DELETED"])) == count, mailbox
    again = run_intake(s, store, known=[], now=NOW)
    assert again is not None and again.messages == 0
    assert len(store.bounce_events()) == 2
    client.logout()


def test_forgeries_in_the_imap_mailbox_on_dovecot_suppress_nobody(
    dovecot: Any, ca: trustme.CA, ca_file: Path, store: StateBackend, tmp_path: Path
) -> None:
    from tests.imapserver import PASSWORD, USER

    s = settings(
        tmp_path,
        **MODES["verp-on"],
        bounce_imap_url=f"imaps://{USER}@127.0.0.1:{dovecot.port}/INBOX",
        bounce_imap_password=PASSWORD,
        bounce_imap_ca_file=ca_file,
    )
    people = ["ada@example.org", "bob@example.org"]
    for p in people:
        sent(store, p, make_message_id(s, p, EDITION))
    client = _imap(dovecot, ca)
    forged = forgeries(people[0], make_message_id(s, people[0], EDITION))
    for data in forged.values():
        client.append("INBOX", data)
    # Genuine: Exim's text bounce, original stripped, to bob's VERP address.
    to = verp_address(ENVELOPE, TokenSigner(SECRET), people[1], EDITION)
    exim = readdress("exim-hard.eml", {"<hogeuoiuadogalhg.dg9i09@example.jp>": "<gone@x>"}, to=to)
    client.append("INBOX", exim)
    report = run_intake(s, store, known=people, now=NOW)
    assert report is not None and report.errors == []
    assert {a: x.reason for a, x in store.suppressions().items()} == {people[1]: "bounced"}
    [event] = store.bounce_events()
    assert event.address == people[1] and "matched by VERP" in event.evidence
    assert len(report.unrecognised) == len(forged)
    for mailbox, count in (("INBOX", 0), ("Processed", 1), ("Unrecognised", len(forged))):
        client.select_folder(mailbox)
        assert len(client.search(["NOT", "DELETED"])) == count, mailbox
    client.logout()


def test_imap_wrong_password_and_plain_imap_are_one_line_errors(
    dovecot: Any, ca_file: Path, store: StateBackend, tmp_path: Path
) -> None:
    from tests.imapserver import USER

    s = settings(
        tmp_path,
        bounce_imap_url=f"imaps://{USER}@127.0.0.1:{dovecot.port}/INBOX",
        bounce_imap_password="wrong-password-here",
        bounce_imap_ca_file=ca_file,
    )
    with pytest.raises(ConfigError) as info:
        run_intake(s, store, known=[], now=NOW)
    assert "wrong-password-here" not in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="imaps://"):
        ImapLocation.parse(f"imap://{USER}@127.0.0.1/INBOX")
    with pytest.raises(ConfigError, match="DIGEST_BOUNCE_IMAP_PASSWORD"):
        ImapLocation.parse(f"imaps://{USER}:pw@127.0.0.1/INBOX")


def test_soft_bounces_from_real_mail_suppress_on_the_fifth_day(
    store: StateBackend, tmp_path: Path
) -> None:
    original = "<FFFFFFFF.0000000@example.co.jp>"
    sent(store, "kijitora@example.org", original)
    data = (BOUNCES / "postfix-soft-4.1.1.eml").read_bytes()
    box = maildir(tmp_path / "bounces")
    s = settings(tmp_path)
    for day in range(5):
        # A different message each day (the bytes differ), same original delivery.
        drop(box, f"{day}.msg", data + f"\n\nday {day}\n".encode())
        drop(box, f"{day}b.msg", data + f"\n\nday {day} again\n".encode())
        report = process_mailbox(
            store,
            MaildirBox(box, max_bytes=MAX),
            policy=BouncePolicy.from_settings(s),
            matcher=matcher_for(s, ()),
            max_bytes=MAX,
            now=NOW + timedelta(days=day),
        )
        assert report.bounces == 2
        expect_suppressed = day == 4
        assert (store.suppression("kijitora@example.org") is not None) == expect_suppressed
    score = store.bounce_score("kijitora@example.org")
    assert score is not None and score.soft == 5
    assert sum(e.scored for e in store.bounce_events()) == 5  # two a day, one counted


def test_parse_never_raises_on_random_bytes() -> None:
    import random

    rng = random.Random(7)
    base = (BOUNCES / "office365-hard-5.1.1.eml").read_bytes()
    for _ in range(200):
        data = bytearray(base)
        for _ in range(rng.randint(1, 50)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        cut = bytes(data[: rng.randrange(len(data))])
        parsed = parse_bounce(cut, max_bytes=MAX)
        assert parsed.kind in set(ReportKind)
    msg = email.message_from_bytes(base, policy=email.policy.compat32)
    assert msg is not None
