"""An operator's first hour: validate, preview, history, help and error lines (issue 14)."""

from __future__ import annotations

import email
import email.policy
import io
import json
import re
import socket
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from rich.console import Console

from digest import __version__, cli
from digest.cli import SendProgress, history_detail
from digest.core import Digest
from digest.delivery import OutgoingMessage
from digest.delivery.engine import send_all
from digest.message import unsubscribe_url_for
from digest.models import Edition
from digest.settings import load_settings
from digest.state import open_state
from digest.subscribers import Subscriber
from tests.conftest import MakeStore
from tests.factories import (
    Sleeps,
    build,
    make_workdir,
    papers_from_fixture,
    run_cli,
    smtp_settings,
    stream,
)
from tests.faultrelay import BUSY, FaultRelay
from tests.httpserver import LocalHTTPServer
from tests.smtpserver import RcptFault, SMTPTestServer

DAY = "2026-08-20"
SECRET = "a-real-secret-key-for-tests-0123456789abcdef"
SUBSCRIBERS = """\
defaults:
  max_papers: 5
subscribers:
  - email: ada@example.org
    name: Ada Lovelace
    keywords: [robot*, embodied]
  - email: grace@example.org
    keywords: [video, diffusion]
    only_matching: true
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Settings an operator would really use: their own domain, the bundled example days."""
    return make_workdir(
        tmp_path,
        monkeypatch,
        subscribers_yaml=SUBSCRIBERS,
        sender="Daily Papers <papers@mylab.org>",
        unsubscribe_url="https://papers.mylab.org/u?token={token}",
        secret_key=SECRET,
    )


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


# --- --version and --help -------------------------------------------------------------------


def test_version_prints_the_version_and_exits_0() -> None:
    code, output = run_cli("--version")
    assert code == 0
    assert output.strip() == f"digest {__version__}"


@pytest.mark.parametrize("command", [[], ["send"], ["preview"], ["history"], ["validate"]])
def test_help_shows_no_type_for_flags_and_a_metavar_for_values(command: list[str]) -> None:
    code, output = run_cli(*command, "--help")
    assert code == 0, output
    assert "<bool>" not in output and "<str>" not in output and "<list[str]>" not in output
    if command == ["send"]:
        assert re.search(r"--date\s+DATE", output)
        assert re.search(r"--subscriber\s+EMAIL", output)
        assert re.search(r"--dry-run\s+--no-dry-run\s+Rank", output)
    if not command:
        assert re.search(r"--debug\s+Show tracebacks", output)


# --- history ---------------------------------------------------------------------------------


def test_history_with_an_unknown_status_is_an_error_listing_the_valid_ones(workdir: Path) -> None:
    code, output = run_cli("history", "--status", "delivered")
    assert code == 2
    assert "--status 'delivered'" in output
    assert "owed, sending, sent, failed, unknown, skipped" in output
    assert "Traceback" not in output


def test_history_detail_shows_the_reply_code_once(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with SMTPTestServer(rcpt_faults={"grace@example.org": RcptFault(550)}) as server:
        monkeypatch.setenv("DIGEST_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("DIGEST_SMTP_PORT", str(server.port))
        monkeypatch.setenv("DIGEST_SMTP_SECURITY", "none")
        code, output = run_cli("send", "--date", DAY)
        assert code == 0, output  # a hard bounce, suppressed: handled, not a failed run
    code, output = run_cli("history", "--status", "failed")
    assert code == 0, output
    assert "550 5.1.1 No such user here" in output
    assert "550 550" not in output


def test_history_detail_adds_a_code_only_when_the_reply_lacks_it() -> None:
    assert history_detail(None, 550, "550 5.1.1 No such user", sent=False) == (
        "550 5.1.1 No such user"
    )
    assert history_detail(None, 451, "try later", sent=False) == "451 try later"
    assert history_detail(None, None, "connection lost", sent=False) == "connection lost"
    assert history_detail("OK queued", 250, "451 earlier", sent=True) == "OK queued"


# --- error lines say things once --------------------------------------------------------------


def test_every_source_failing_is_one_line_naming_the_source_once(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, state_env: str
) -> None:
    missing = workdir / "nowhere"
    monkeypatch.setenv("DIGEST_SOURCES", f"file:{missing}")
    code, output = run_cli("send", "--date", DAY)
    assert code == 1
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].count(f"file:{missing}") == 1, lines[0]
    assert lines[0].count("every source failed") == 1
    assert "WARNING" not in output
    with open_state(state_env) as store:
        assert store.list() == []


def test_a_failed_source_among_several_is_reported_once(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = workdir / "nowhere"
    monkeypatch.setenv("DIGEST_SOURCES", f"file:{workdir / 'papers'},file:{missing}")
    code, output = run_cli("send", "--date", DAY)
    assert code == 0 or code == 1
    assert output.count(f"file:{missing}") == 1, output
    assert "source source" not in output


# --- preview ---------------------------------------------------------------------------------


def test_preview_summary_counts_the_papers_the_email_holds(workdir: Path) -> None:
    code, output = run_cli("preview", "--date", DAY, "--subscriber", "ada@example.org")
    assert code == 0, output
    html = (workdir / "preview" / f"{DAY}-ada@example.org.html").read_text()
    cards = html.count('class="title"')
    assert cards == 5
    assert "5 of 15 papers" in output, output


def test_source_flag_wins_over_the_subscribers_own_sources_for_preview(
    workdir: Path,
) -> None:
    unreachable = f"feed:http://127.0.0.1:{closed_port()}/rss"
    (workdir / "subscribers.yaml").write_text(SUBSCRIBERS + f'    sources: ["{unreachable}"]\n')
    code, output = run_cli("preview", "--date", DAY, "--subscriber", "grace@example.org")
    assert code == 1  # the subscriber's own (unreachable) source is used without --source
    code, output = run_cli(
        "preview",
        "--date",
        DAY,
        "--subscriber",
        "grace@example.org",
        "--source",
        f"file:{workdir / 'papers'}",
    )
    assert code == 0, output
    assert "warning" not in output


def test_example_subscribers_file_says_sources_replace_digest_sources() -> None:
    text = (Path(__file__).parent.parent / "subscribers.example.yaml").read_text()
    assert "only papers from these DIGEST_SOURCES" not in text
    assert "INSTEAD of DIGEST_SOURCES" in text or "INSTEAD\n" in text


# --- validate ---------------------------------------------------------------------------------


def test_validate_warns_about_each_placeholder_with_what_to_put_instead(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # (An unsubscribe URL at a placeholder domain is an error: tests/test_first_hour.py.)
    monkeypatch.setenv("DIGEST_FROM", "Daily Papers <papers@example.org>")
    monkeypatch.setenv("DIGEST_UNSUBSCRIBE_MAILTO", "unsubscribe@example.org")
    code, output = run_cli("validate", "--offline")
    assert code == 0, output
    warnings = [line for line in output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 2, output
    assert any("DIGEST_FROM: papers@example.org" in w and "your own domain" in w for w in warnings)
    assert any("DIGEST_UNSUBSCRIBE_MAILTO: unsubscribe@example.org" in w for w in warnings)
    assert "ok: settings valid" in output


def test_validate_warns_about_the_default_localhost_sender(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DIGEST_FROM")
    code, output = run_cli("validate", "--offline")
    assert code == 0
    assert "warning: DIGEST_FROM: digest@localhost" in output


def test_validate_with_real_values_prints_no_warning(workdir: Path) -> None:
    code, output = run_cli("validate", "--offline")
    assert code == 0, output
    assert "warning" not in output
    assert "ok: settings valid, 2 subscribers" in output


def test_validate_runs_the_known_sources_check_as_a_warning(workdir: Path) -> None:
    (workdir / "subscribers.yaml").write_text(SUBSCRIBERS + "    sources: [hf]\n")
    code, output = run_cli("validate", "--offline")
    assert code == 0, output
    line = next(line for line in output.splitlines() if line.startswith("warning:"))
    assert "subscribers.yaml:10: subscribers[1].sources[0]" in line
    assert "'hf' is not a configured source" in line
    assert "instead of DIGEST_SOURCES" in line


def test_validate_says_each_source_is_reachable(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LocalHTTPServer() as server:
        server.add("/api/daily_papers", body=b"[]")  # yesterday's (a real date) is empty
        monkeypatch.setenv("DIGEST_HF_API_URL", server.url("/api/daily_papers"))
        monkeypatch.setenv("DIGEST_SOURCES", f"hf,file:{workdir / 'papers'}")
        code, output = run_cli("validate")
        assert code == 0, output
        assert server.count("/api/daily_papers") == 1
    assert re.search(r"^source hf: reachable \(0 papers on \d{4}-\d\d-\d\d", output, re.M)
    assert f"source file:{workdir / 'papers'}: reachable" in output


def test_validate_reports_an_unreachable_source_and_exits_1(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"http://127.0.0.1:{closed_port()}/api/daily_papers"
    monkeypatch.setenv("DIGEST_HF_API_URL", url)
    monkeypatch.setenv("DIGEST_SOURCES", f"hf,file:{workdir / 'papers'}")
    code, output = run_cli("validate")
    assert code == 1, output
    assert re.search(r"error: source hf: NOT reachable: GET http://127\.0\.0\.1:\d+/", output)
    assert f"source file:{workdir / 'papers'}: reachable" in output
    assert "Traceback" not in output


def test_validate_offline_fetches_nothing(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with LocalHTTPServer() as server:
        server.add("/api/daily_papers", body=b"[]")
        monkeypatch.setenv("DIGEST_HF_API_URL", server.url("/api/daily_papers"))
        monkeypatch.setenv("DIGEST_SOURCES", "hf")
        code, output = run_cli("validate", "--offline")
        assert code == 0, output
        assert server.count("/api/daily_papers") == 0
    assert "reachable" not in output


# --- test send: send --to ADDRESS [--as EMAIL] ------------------------------------------------


@pytest.fixture
def relay(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SMTPTestServer]:
    with SMTPTestServer() as server:
        monkeypatch.setenv("DIGEST_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("DIGEST_SMTP_PORT", str(server.port))
        monkeypatch.setenv("DIGEST_SMTP_SECURITY", "none")
        yield server


def test_test_send_goes_to_the_address_as_the_subscriber_and_is_not_their_edition(
    relay: SMTPTestServer, workdir: Path, state_env: str
) -> None:
    code, output = run_cli(
        "send", "--to", "me@mydomain.org", "--as", "ada@example.org", "--date", DAY
    )
    assert code == 0, output
    assert f"test edition {DAY} as ada@example.org: sent to me@mydomain.org" in output
    assert f"in history as test:{DAY}:ada@example.org" in output
    assert [m.rcpt_tos for m in relay.messages] == [["me@mydomain.org"]]
    msg = email.message_from_bytes(relay.messages[0].data, policy=email.policy.default)
    assert msg["Subject"].startswith("[Test] Daily Papers · Aug 20: ")
    assert msg["To"] == "me@mydomain.org"
    assert "ada" not in msg["Message-ID"]  # no subscriber's address in a Message-ID
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "<strong>ada@example.org</strong> is subscribed" in html  # rendered as Ada
    assert "your keywords: robot*, embodied" in html
    # Its unsubscribe links are the test address's: clicking them cannot unsubscribe Ada.
    settings = load_settings(env_file=None)
    own = unsubscribe_url_for(settings, "me@mydomain.org")
    assert own is not None and f"<{own}>" in msg["List-Unsubscribe"]
    assert unsubscribe_url_for(settings, "ada@example.org") not in relay.messages[0].data.decode()

    with open_state(state_env) as store:
        rows = store.list()
    assert [(r.subscriber, r.edition, r.status) for r in rows] == [
        ("me@mydomain.org", f"test:{DAY}:ada@example.org", "sent")
    ]
    code, output = run_cli("history")
    assert f"test:{DAY}:ada@example.org" in output and "me@mydomain.org" in output
    # Ada's real edition is still owed: the next send delivers it.
    code, output = run_cli("send", "--date", DAY)
    assert code == 0, output
    assert "sent 2, skipped 0" in output
    assert sorted(m.rcpt_tos[0] for m in relay.messages[1:]) == [
        "ada@example.org",
        "grace@example.org",
    ]


def test_test_send_can_be_repeated_and_defaults_to_the_unpersonalized_edition(
    relay: SMTPTestServer, workdir: Path, state_env: str
) -> None:
    for _ in range(2):
        code, output = run_cli("send", "--to", "Me@MyDomain.org", "--date", DAY)
        assert code == 0, output
        assert "(unpersonalized): sent to me@mydomain.org" in output
    assert len(relay.messages) == 2
    msg = email.message_from_bytes(relay.messages[1].data, policy=email.policy.default)
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "you follow no keywords" in html
    with open_state(state_env) as store:
        rows = store.list()
    assert [(r.subscriber, r.edition, r.status) for r in rows] == [
        ("me@mydomain.org", f"test:{DAY}", "sent")
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--as", "ada@example.org"], "--as needs --to"),
        (["--to", "me@mydomain.org", "--resend"], "cannot be combined with --resend"),
        (["--to", "me@mydomain.org", "--subscriber", "ada@example.org"], "with --subscriber"),
        (["--to", "not an address"], "--to 'not an address': not an email address"),
        (["--to", "me@mydomain.org", "--as", "nobody@example.org"], "--as nobody@example.org"),
    ],
)
def test_test_send_refuses_bad_flags_with_one_line(
    relay: SMTPTestServer, workdir: Path, args: list[str], message: str
) -> None:
    code, output = run_cli("send", "--date", DAY, *args)
    assert code == 2, output
    assert message in output
    assert "Traceback" not in output
    assert relay.messages == []


# --- the progress line: retries, back-off, rate, ETA -------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def outgoing(email: str) -> OutgoingMessage:
    return OutgoingMessage(email, DAY, "<id@x>", "papers@mylab.org", (email,), b"")


def test_progress_status_says_what_it_waits_for_then_the_rate_and_eta() -> None:
    clock = Clock()
    state = SendProgress(10, 5, clock=clock)
    assert state.status() == ""
    state.result("a@x.org", "sent")
    clock.t += 1.0
    state.retry(outgoing("b@x.org"), 1, 4.0, "451 4.2.1 Mailbox temporarily unavailable")
    status = state.status()
    assert "back-off: attempt 2 of 5 for b@x.org in 4 s after 451 4.2.1 Mailbox" in status
    assert "1 retry" in status
    assert "msg/s" not in status  # too early for a rate
    clock.t += 3.0
    assert "in 1 s after" in state.status()  # the countdown moves
    state.retry(outgoing("c@x.org"), 2, 8.0, "421 4.7.0 Try again later")
    assert "for b@x.org (+1 more) in 1 s" in state.status()
    state.result("b@x.org", "sent")
    for i in range(3):
        state.result(f"d{i}@x.org", "sent")
    status = state.status()
    assert "for c@x.org in 8 s after 421 4.7.0" in status and "2 retries" in status
    assert "1.2 msg/s · ETA 0:04" in status  # 5 done in 4 s: 5 left take 4 s


async def test_send_reports_each_back_off_before_it_waits(tmp_path: Path) -> None:
    retries: list[tuple[str, int, float, str]] = []
    with SMTPTestServer(rcpt_faults={"grace@example.org": RcptFault(451, times=2)}) as server:
        settings = smtp_settings(server, state_path=tmp_path / "s.sqlite3", smtp_max_attempts=4)
        papers = papers_from_fixture(f"{DAY}.json")
        with Digest(settings) as d:
            subs = [Subscriber(email="ada@example.org"), Subscriber(email="grace@example.org")]
            d.store.save_papers(date.fromisoformat(DAY), settings.source_specs[0], papers)
            summary = await d.send(
                Edition.daily(date.fromisoformat(DAY)),
                subs,
                on_retry=lambda m, a, delay, r: retries.append((m.subscriber, a, delay, r)),
            )
    assert summary.sent == 2, summary
    assert [(e, a) for e, a, _, _ in retries] == [
        ("grace@example.org", 1),
        ("grace@example.org", 2),
    ]
    assert all(r.startswith("451 4.2.1") and delay >= 0 for _, _, delay, r in retries)


def test_the_bar_shows_retries_and_back_off_on_a_terminal(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    screen = io.StringIO()
    monkeypatch.setattr(cli, "err", Console(file=screen, force_terminal=True, width=240))
    monkeypatch.setenv("DIGEST_SMTP_RETRY_BASE", "1.5")
    with SMTPTestServer(rcpt_faults={"grace@example.org": RcptFault(451, times=1)}) as server:
        monkeypatch.setenv("DIGEST_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("DIGEST_SMTP_PORT", str(server.port))
        monkeypatch.setenv("DIGEST_SMTP_SECURITY", "none")
        code, output = run_cli("send", "--date", DAY)
    assert code == 0, output + screen.getvalue()
    shown = screen.getvalue()
    assert "back-off: attempt 2 of 5 for grace@example.org" in shown, shown
    assert "after 451 4.2.1 Mailbox temporarily unavailable" in shown
    assert "1 retry" in shown


def test_a_test_send_to_a_subscriber_is_not_their_last_edition(
    relay: SMTPTestServer, workdir: Path
) -> None:
    code, output = run_cli(
        "send", "--to", "ada@example.org", "--as", "ada@example.org", "--date", DAY
    )
    assert code == 0, output
    code, output = run_cli("subscribers", "--json")
    assert code == 0, output
    rows = {r["email"]: r for r in json.loads(output)}
    assert rows["ada@example.org"]["last_sent"] is None
    code, output = run_cli("send", "--date", DAY)
    assert code == 0 and "sent 2, skipped 0" in output, output
    code, output = run_cli("subscribers", "--json")
    rows = {r["email"]: r for r in json.loads(output)}
    assert rows["ada@example.org"]["last_sent"] == DAY


async def test_the_pools_back_off_on_a_relay_refusing_connections_is_reported(
    make_store: MakeStore,
) -> None:
    waits: list[tuple[OutgoingMessage | None, int, float, str]] = []
    batch = [build(f"user{i:02d}@example.org") for i in range(6)]
    with (
        make_store() as store,
        FaultRelay() as relay,
    ):
        relay.connect_reply_for = lambda n: BUSY if n <= 3 else None
        settings = smtp_settings(
            relay, smtp_concurrency=2, smtp_max_attempts=5, smtp_connect_attempts_per_minute=6
        )
        summary = await send_all(
            stream(batch),
            store=store,
            settings=settings,
            sleep=Sleeps(),
            on_retry=lambda m, a, d, r: waits.append((m, a, d, r)),
        )
    assert summary.sent == 6
    pool = [w for w in waits if w[0] is None]
    assert pool and all(r == BUSY and d >= 10 for _, _, d, r in pool), waits
    clock = Clock()
    state = SendProgress(6, 5, clock=clock)
    state.retry(None, pool[0][1], 10.0, BUSY)
    assert (
        "back-off: the relay refuses connections; connection attempt 2 of 5 in 10 s after 421"
        in state.status()
    )
    state.result("user00@example.org", "sent")
    assert "refuses" not in state.status()
