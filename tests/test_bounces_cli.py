"""`digest bounces`, `subscribers`, `suppress`, `unsuppress`, `history`: the commands, a crash
between parsing and the move, and the end-to-end scenario of the bounces issue."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from digest.state import open_state
from tests.conftest import FIXTURES, PROJECT
from tests.factories import make_workdir, run_cli
from tests.smtpserver import RcptFault, SMTPTestServer

BOUNCES = FIXTURES / "bounces"
DAY = "2026-08-20"
NEXT = "2026-08-21"
SUBSCRIBERS = """\
subscribers:
  - email: ada@example.org
    keywords: [robot*, agents]
  - email: bob@example.org
  - email: cy@example.org
  - email: dee@example.org
  - email: eve@example.org
  - email: fay@example.org
    active: false
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, state_env: str) -> Path:
    """Papers, subscribers and a bounce Maildir; the state is each backend's (``state_env``)."""
    for sub in ("new", "cur", "tmp"):
        (tmp_path / "bounces" / sub).mkdir(parents=True)
    return make_workdir(
        tmp_path,
        monkeypatch,
        subscribers_yaml=SUBSCRIBERS,
        secret_key="bounces-cli-secret-0123456789-abcdef",
        bounce_maildir=tmp_path / "bounces",
        subscribers=tmp_path / "subscribers.yaml",
    )


def dsn_for(recipient: str, message_id: str) -> bytes:
    return (
        "From: MAILER-DAEMON@mx.example.net\r\nTo: papers@example.org\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nThe mail system: user unknown\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <x>: Recipient address rejected\r\n\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {message_id}\r\nSubject: papers\r\n\r\n--B--\r\n"
    ).encode()


def test_end_to_end_550s_and_a_dsn_are_suppressed_and_the_next_edition_skips_them(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, state_env: str
) -> None:
    faults = {"bob@example.org": RcptFault(550), "cy@example.org": RcptFault(550)}
    with SMTPTestServer(rcpt_faults=faults) as server:
        monkeypatch.setenv("DIGEST_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("DIGEST_SMTP_PORT", str(server.port))
        monkeypatch.setenv("DIGEST_SMTP_SECURITY", "none")
        code, output = run_cli("send", "--date", DAY)
        assert code == 0, output  # the two 550s are suppressed hard bounces: handled
        assert "sent 3, skipped 0, failed 2 (2 hard bounces, suppressed)" in output
        first = {m.rcpt_tos[0]: m for m in server.messages}
        assert sorted(first) == ["ada@example.org", "dee@example.org", "eve@example.org"]
        # Later, dee's server bounces the accepted message: a DSN in the bounce Maildir.
        with open_state(state_env) as store:
            row = store.get("dee@example.org", DAY)
        assert row is not None and row.message_id is not None
        (workdir / "bounces" / "new" / "1.dsn").write_bytes(
            dsn_for("dee@example.org", row.message_id)
        )
        code, output = run_cli("bounces")
        assert code == 0, output
        assert "1 bounces" in output and "suppressed dee@example.org" in output
        assert list((workdir / "bounces" / ".Processed" / "cur").iterdir())
        code, output = run_cli("send", "--date", NEXT)
        assert code == 0, output
        assert "sent 2, skipped 3, failed 0" in output
        second = [m.rcpt_tos[0] for m in server.messages[len(first) :]]
        assert sorted(second) == ["ada@example.org", "eve@example.org"]
    code, output = run_cli("history", "--date", NEXT)
    assert output.count("skipped") == 3 and "bounced" in output
    code, output = run_cli("subscribers")
    assert code == 0, output
    lines = {
        next(w for w in line.split() if "@example.org" in w): line
        for line in output.splitlines()
        if "@example.org" in line
    }
    assert "bounced" in lines["bob@example.org"] and "550 5.1.1" in lines["bob@example.org"]
    assert "bounced" in lines["cy@example.org"] and "smtp" in lines["cy@example.org"]
    assert "bounced" in lines["dee@example.org"] and "Message-ID" in lines["dee@example.org"]
    assert "active" in lines["ada@example.org"] and NEXT in lines["ada@example.org"]
    assert "paused" in lines["fay@example.org"]
    code, output = run_cli("subscribers", "--json", "--status", "bounced")
    rows = json.loads(output)
    assert sorted(r["email"] for r in rows) == [
        "bob@example.org",
        "cy@example.org",
        "dee@example.org",
    ]
    dee = next(r for r in rows if r["email"] == "dee@example.org")
    assert dee["hard_bounces"] == 1 and dee["last_sent"] == DAY and dee["next_due"] is None
    assert "(bounces, " in dee["why"] and "5.1.1" in dee["why"]
    bob = next(r for r in rows if r["email"] == "bob@example.org")
    assert "(smtp, " in bob["why"] and bob["last_sent"] is None
    # history shows the bounce next to the delivery it is about
    code, output = run_cli("history", "--subscriber", "dee@example.org")
    assert "bounce (hard)" in output and "5.1.1" in output


def test_suppress_and_unsuppress_are_recorded_with_who_and_when(
    workdir: Path, state_env: str
) -> None:
    code, output = run_cli("suppress", "Ada@Example.org", "--note", "asked by phone")
    assert code == 0 and "suppressed ada@example.org (manual)" in output
    code, output = run_cli("suppress", "ada@example.org", "--reason", "bounced")
    assert code == 0 and "already suppressed (manual" in output
    code, output = run_cli("subscribers", "--json", "--status", "suppressed")
    [row] = json.loads(output)
    assert row["email"] == "ada@example.org" and "asked by phone" in row["why"]
    code, output = run_cli("send", "--date", DAY)
    assert code == 0 and "skipped 1" in output
    code, output = run_cli("unsuppress", "ada@example.org")
    assert code == 0 and "lifted" in output
    with open_state(state_env) as store:
        [entry] = store.suppression_history("ada@example.org")
    assert entry.lifted_at is not None and entry.lifted_by and entry.lifted_by.startswith("cli:")
    assert entry.actor.startswith("cli:") and entry.evidence == "asked by phone"
    code, output = run_cli("unsuppress", "ada@example.org")
    assert code == 2 and "not on the suppression list" in output
    code, output = run_cli("suppress", "ada@example.org", "--reason", "tired")
    assert code == 2 and "--reason 'tired'" in output
    code, output = run_cli("subscribers", "--status", "gone")
    assert code == 2 and "active, paused" in output


def test_bounces_without_a_mailbox_is_a_one_line_error(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DIGEST_BOUNCE_MAILDIR")
    code, output = run_cli("bounces")
    assert code == 2 and "DIGEST_BOUNCE_MAILDIR" in output and "Traceback" not in output
    monkeypatch.setenv("DIGEST_BOUNCE_MAILDIR", str(workdir / "nope"))
    code, output = run_cli("bounces")
    assert code == 2 and "is not a Maildir" in output


# -- crash between parsing and the move ------------------------------------------------------------

CRASHER = textwrap.dedent(
    """
    import os, signal, sys
    import digest.bounces.intake as intake
    from digest.state.store import Store

    point, nth = sys.argv[1], int(sys.argv[2])
    seen = [0]

    def die_on(n):
        seen[0] += 1
        if seen[0] == n:
            os.kill(os.getpid(), signal.SIGKILL)

    if point == "before-commit":  # parsed and matched, nothing committed yet
        real = Store.record_bounces
        def record(self, *a, **k):
            die_on(nth)
            return real(self, *a, **k)
        Store.record_bounces = record
    else:  # committed, not yet moved
        real_move = intake.MaildirBox.move
        def move(self, *a, **k):
            die_on(nth)
            return real_move(self, *a, **k)
        intake.MaildirBox.move = move
    from digest.cli import main
    sys.argv = ["digest", "bounces"]
    main()
    """
)


@pytest.mark.parametrize("point", ["before-commit", "before-move"])
def test_killed_between_parsing_and_the_move_then_restart_counts_each_message_once(
    workdir: Path, point: str, state_env: str
) -> None:
    names = ["postfix-hard-5.1.1.eml", "postfix-soft-4.1.1.eml", "gmail-hard.eml", "arf-abuse.eml"]
    originals = {
        "kijitora@example.co.jp": "<A8F82EDD-E518-4F5C-8C70-BC4EFF24AB9F@example.ne.jp>",
        "kijitora@example.org": "<FFFFFFFF.0000000@example.co.jp>",
        "shironeko@example.jp": "<106A231A-B504-44EF-9BF2-8A382AB84E80@gmail.com>",
        "this-local-part-does-not-exist-on-yahoo@yahoo.com": (
            "<000000000000000000000000.smtp@example.com>"
        ),
    }
    with open_state(state_env) as store:
        for address, mid in originals.items():
            assert store.claim(address, DAY, mid)
            store.mark_sent(address, DAY, "250 OK")
    for i, name in enumerate(names):
        shutil.copy(BOUNCES / name, workdir / "bounces" / "new" / f"{i}.msg")
    env = {k: v for k, v in os.environ.items()}
    env["PYTHONPATH"] = str(PROJECT)
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHER, point, "3"],
        env=env,
        cwd=workdir,
        capture_output=True,
        timeout=120,
    )
    assert crashed.returncode == -9, crashed.stderr.decode()
    restarted = subprocess.run(
        [sys.executable, "-m", "digest", "bounces"],
        env=env,
        cwd=workdir,
        capture_output=True,
        timeout=120,
    )
    assert restarted.returncode == 0, restarted.stderr.decode()
    with open_state(state_env) as store:
        events = store.bounce_events()
        suppressed = store.suppressions()
    assert sorted(e.address for e in events) == sorted(originals)  # each exactly once
    assert set(suppressed) == set(originals) - {"kijitora@example.org"}  # soft: score 1
    processed = sorted(
        p.name.split(":")[0] for p in (workdir / "bounces" / ".Processed" / "cur").iterdir()
    )
    assert processed == ["0.msg", "1.msg", "2.msg", "3.msg"]
    assert list((workdir / "bounces" / "new").iterdir()) == []
    if point == "before-move":
        assert b"1 already processed" in restarted.stdout


def test_subscribers_last_sent_ignores_test_sends(workdir: Path) -> None:
    code, output = run_cli("send", "--to", "ada@example.org", "--date", DAY)
    assert code == 0, output
    code, output = run_cli("subscribers", "--json")
    rows = {r["email"]: r for r in json.loads(output)}
    assert rows["ada@example.org"]["last_sent"] is None
    code, output = run_cli("send", "--date", DAY, "--subscriber", "ada@example.org")
    assert code == 0, output
    code, output = run_cli("subscribers", "--json", "--frequency", "daily")
    rows = {r["email"]: r for r in json.loads(output)}
    assert rows["ada@example.org"]["last_sent"] == DAY
    assert rows["ada@example.org"]["keywords"] == ["robot*", "agents"]
    assert "fay@example.org" in rows and rows["fay@example.org"]["status"] == "paused"
