"""End to end through the CLI: real example data, a real SMTP server on loopback, real state."""

from __future__ import annotations

import email
import email.policy
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import trustme

from digest.state import open_state
from digest.tokens import Purpose, TokenSigner
from tests.conftest import FIXTURES
from tests.factories import make_workdir, run_cli
from tests.smtpserver import RcptFault, SMTPTestServer

DAY = "2026-08-20"
SECRET = "test-secret-key-0123456789-abcdefghijkl"
PASSWORD = "s3cr3t-Pa55"
SUBSCRIBERS = """\
defaults:
  max_papers: 5
subscribers:
  - email: ada@example.org
    name: Ada Lovelace
    keywords: [robot*, embodied]
  - email: grace@example.org
    name: Grace
    keywords: [video, diffusion]
    only_matching: true
  - email: alan@example.org
  - email: off@example.org
    active: false
"""
DAILY_ACTIVE = ["ada@example.org", "alan@example.org", "grace@example.org"]


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory with the bundled example days and a small subscribers file."""
    return make_workdir(
        tmp_path,
        monkeypatch,
        subscribers_yaml=SUBSCRIBERS,
        unsubscribe_url="https://lists.mylab.org/unsubscribe?token={token}",
        unsubscribe_mailto="unsubscribe@example.org",
        secret_key=SECRET,
    )


@pytest.fixture
def smtp(
    leaf: trustme.LeafCert, ca_file: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[SMTPTestServer]:
    """STARTTLS + AUTH relay on loopback, with the digest settings pointing at it."""
    with SMTPTestServer(
        security="starttls",
        cert=leaf,
        user="papers",
        password=PASSWORD,
    ) as server:
        monkeypatch.setenv("DIGEST_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("DIGEST_SMTP_PORT", str(server.port))
        monkeypatch.setenv("DIGEST_SMTP_SECURITY", "starttls")
        monkeypatch.setenv("DIGEST_SMTP_USERNAME", "papers")
        monkeypatch.setenv("DIGEST_SMTP_PASSWORD", PASSWORD)
        monkeypatch.setenv("DIGEST_SMTP_CA_FILE", str(ca_file))
        yield server


def raw_header_lines(data: bytes) -> list[str]:
    head = data.split(b"\r\n\r\n", 1)[0].decode("ascii")
    return head.split("\r\n")


def test_send_over_starttls_and_auth_delivers_complete_messages_once(
    smtp: SMTPTestServer, workdir: Path, state_env: str
) -> None:
    code, output = run_cli("send", "--date", DAY)
    assert code == 0, output
    assert f"edition {DAY}: sent 3, skipped 0, failed 0" in output
    assert PASSWORD not in output

    received = smtp.messages
    assert sorted(r.rcpt_tos[0] for r in received) == DAILY_ACTIVE
    assert all(r.tls and r.auth_user == "papers" for r in received)
    assert all(r.mail_from == "papers@example.org" for r in received)

    with open_state(state_env) as store:
        rows = {r.subscriber: r for r in store.list(edition=DAY)}
    for r in received:
        to = r.rcpt_tos[0]
        msg = email.message_from_bytes(r.data, policy=email.policy.default)
        assert msg["From"] == "Daily Papers <papers@example.org>"
        assert to in msg["To"]
        assert msg["Subject"].startswith("Daily Papers · Aug 20: ")
        assert msg["Date"] is not None and msg["Date"].datetime.tzinfo is not None
        assert msg["Message-ID"] == rows[to].message_id
        assert rows[to].status == "sent"
        assert msg["Auto-Submitted"] == "auto-generated"
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        assert msg.get_content_type() == "multipart/alternative"
        parts = [p.get_content_type() for p in msg.iter_parts()]
        assert parts == ["text/plain", "text/html"]
        # List-Unsubscribe: HTTPS with a token signed for this subscriber, and mailto.
        urls = re.findall(r"<([^>]+)>", msg["List-Unsubscribe"])
        https = [u for u in urls if u.startswith("https://lists.mylab.org/unsubscribe?token=")]
        assert len(https) == 1 and any(u.startswith("mailto:unsubscribe@") for u in urls)
        token = https[0].split("token=", 1)[1]
        claims = TokenSigner(SECRET).verify(Purpose.UNSUBSCRIBE, token, now=datetime.now(UTC))
        assert TokenSigner(SECRET).is_for(claims, to)
        # On the wire: one unfolded line, no RFC 2047 encoded-words in ASCII headers.
        lines = raw_header_lines(r.data)
        unsub = [ln for ln in lines if ln.lower().startswith("list-unsubscribe:")]
        assert len(unsub) == 1 and "=?" not in unsub[0] and len(unsub[0]) > 78
        assert all(len(ln) <= 998 for ln in lines)
        text = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        assert https[0] in html and "unsubscribe" in text.lower()
        assert len(r.data) < 100_000

    code, output = run_cli("send", "--date", DAY)
    assert code == 0, output
    assert "sent 0, skipped 3" in output
    assert len(smtp.messages) == 3


def test_permanent_failure_for_one_subscriber_does_not_stop_the_others(
    ca: trustme.CA, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SMTPTestServer(rcpt_faults={"grace@example.org": RcptFault(550)}) as server:
        monkeypatch.setenv("DIGEST_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("DIGEST_SMTP_PORT", str(server.port))
        monkeypatch.setenv("DIGEST_SMTP_SECURITY", "none")
        code, output = run_cli("send", "--date", DAY)
        # A 550 is a hard bounce: the address is suppressed, which handles it (exit 0).
        assert code == 0, output
        assert "sent 2, skipped 0, failed 1 (1 hard bounce, suppressed)" in output
        assert "grace@example.org" in output and "550" in output
        assert sorted(m.rcpt_tos[0] for m in server.messages) == [
            "ada@example.org",
            "alan@example.org",
        ]
        code, output = run_cli("history", "--date", DAY, "--status", "failed")
        assert "grace@example.org" in output and "550" in output
        # A permanent failure is not retried automatically.
        code, output = run_cli("send", "--date", DAY)
        assert code == 0 and "sent 0, skipped 3" in output
        assert len(server.messages) == 2


def test_wrong_smtp_password_stops_the_run_with_one_line_and_no_secret(
    smtp: SMTPTestServer, monkeypatch: pytest.MonkeyPatch, workdir: Path, state_env: str
) -> None:
    monkeypatch.setenv("DIGEST_SMTP_PASSWORD", "wrong-password-xyz")
    code, output = run_cli("send", "--date", DAY)
    assert code == 2
    assert "Traceback" not in output and "wrong-password-xyz" not in output
    assert "error:" in output
    assert smtp.messages == []
    with open_state(state_env) as store:
        assert all(r.status == "owed" for r in store.list(edition=DAY))


def test_without_smtp_host_messages_go_to_the_maildir_outbox(workdir: Path) -> None:
    code, output = run_cli("send", "--date", DAY)
    assert code == 0, output
    assert "Maildir outbox" in output
    files = sorted((workdir / "outbox" / "new").iterdir())
    assert len(files) == 3
    tos = sorted(
        email.message_from_bytes(f.read_bytes(), policy=email.policy.default)["To"]
        .addresses[0]
        .addr_spec
        for f in files
    )
    assert tos == DAILY_ACTIVE
    code, output = run_cli("send", "--date", DAY, "--subscriber", "ada@example.org", "--resend")
    assert code == 0 and "sent 1" in output
    assert len(list((workdir / "outbox" / "new").iterdir())) == 4


def test_dry_run_sends_and_records_nothing(workdir: Path) -> None:
    code, output = run_cli("send", "--date", DAY, "--dry-run")
    assert code == 0 and "would send 3" in output
    assert not (workdir / "outbox").exists()
    code, output = run_cli("history")
    assert "0 rows" in output


def test_preview_renders_the_stored_papers_and_records_no_delivery(workdir: Path) -> None:
    code, output = run_cli("preview", "--date", DAY, "--subscriber", "ada@example.org")
    assert code == 0, output
    path = workdir / "preview" / f"{DAY}-ada@example.org.html"
    assert f"wrote {Path('preview') / path.name}" in output
    html = path.read_text()
    assert "https://huggingface.co/papers/" in html and "<style" in html
    code, text = run_cli("preview", "--date", DAY, "--format", "text", "--out", "-")
    assert code == 0 and "https://huggingface.co/papers/" in text
    code, output = run_cli("preview", "--date", DAY, "--format", "eml", "--out", "x.eml")
    msg = email.message_from_bytes((workdir / "x.eml").read_bytes(), policy=email.policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    # The papers were stored: removing the source files does not change the preview.
    shutil.rmtree(workdir / "papers")
    code, again = run_cli("preview", "--date", DAY, "--format", "text", "--out", "-")
    assert code == 0 and again == text
    code, output = run_cli("history")
    assert "0 rows" in output


def test_subscribers_file_errors_name_file_line_and_field(workdir: Path) -> None:
    (workdir / "subscribers.yaml").write_text(
        "subscribers:\n  - email: ada@example.org\n    keywrds: [x]\n  - email: not-an-email\n"
    )
    code, output = run_cli("send", "--date", DAY)
    assert code == 2
    assert "Traceback" not in output
    assert re.search(r"subscribers\.yaml:3: .*keywrds", output)
    assert re.search(r"subscribers\.yaml:4: .*email", output)
    code, output = run_cli("validate")
    assert code == 2 and "subscribers.yaml:3" in output


def test_validate_accepts_good_settings(workdir: Path) -> None:
    code, output = run_cli("validate")
    assert code == 0, output
    assert "4 subscribers" in output


def test_bad_settings_are_one_line_each(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DIGEST_SMTP_PORT", "not-a-port")
    code, output = run_cli("send", "--date", DAY)
    assert code == 2 and "DIGEST_SMTP_PORT" in output and "Traceback" not in output


def test_malformed_source_is_a_clear_error_and_nothing_is_recorded(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = FIXTURES / "hf-daily-papers-malformed" / "2024-12-11.json"
    monkeypatch.setenv("DIGEST_SOURCES", f"file:{bad}")
    code, output = run_cli("send", "--date", "2024-12-11")
    assert code == 1
    assert "Traceback" not in output and "2024-12-11.json" in output
    code, output = run_cli("history")
    assert "0 rows" in output


def test_bad_date_is_rejected(workdir: Path) -> None:
    code, output = run_cli("send", "--date", "yesterday")
    assert code == 2 and "YYYY-MM-DD" in output


def test_weekend_without_papers_is_recorded_skipped(workdir: Path) -> None:
    # 2026-08-22 is a Saturday; Daily Papers lists nothing on weekends.
    code, output = run_cli("send", "--date", "2026-08-22")
    assert code == 0, output
    assert "sent 0, skipped 3" in output
    assert not (workdir / "outbox").exists()
    code, output = run_cli("history", "--status", "skipped")
    assert output.count("no papers") == 3


def test_weekday_without_papers_waits_and_records_nothing(workdir: Path) -> None:
    # 2026-08-24 is a Monday with no capture: an outage or not yet published, never "no papers".
    code, output = run_cli("send", "--date", "2026-08-24")
    assert code == 1
    assert "deferred 3" in output and "listed no papers for a weekday" in output
    code, output = run_cli("history")
    assert "0 rows" in output
    # Once the day's list shows up, the edition goes out normally.
    shutil.copy(workdir / "papers" / f"{DAY}.json", workdir / "papers" / "2026-08-24.json")
    code, output = run_cli("send", "--date", "2026-08-24")
    assert code == 0 and "sent 3" in output
