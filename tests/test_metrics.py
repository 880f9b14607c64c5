"""Prometheus metrics (issue 24, point 1): ``/metrics`` parsed with prometheus_client's own
parser while a real send (aiosmtpd on loopback), a bounce (a Maildir read by the daemon's
tick) and web requests (uvicorn on loopback) happen; the figures read from the state on
both databases; who may read ``/metrics``; ``digest run`` serving them on two ports."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from digest.core import Digest
from digest.message import unsubscribe_url_for
from digest.metrics import NO_METRICS, Metrics, client_allowed
from digest.models import Edition
from digest.settings import Settings, parse_networks
from digest.state import StateBackend
from digest.subscribers import Subscriber
from tests.conftest import FIXTURES, PROJECT, MakeStore
from tests.factories import (
    MESSAGE_SETTINGS,
    SECRET_KEY,
    FakeClock,
    complaint_about,
    confirm_link,
    drop_mail,
    make_settings,
    metric,
    run_cli,
    running_daemon,
    send_settings,
    use_settings,
)
from tests.smtpserver import RcptFault, SMTPTestServer
from tests.webserver import csrf_of, free_port, running_app

PAPERS = f"file:{FIXTURES / 'hf-daily-papers'}"
EDITION = Edition.daily(date(2026, 8, 20))
PUBLIC = "https://papers.example.org"
T0 = datetime(2026, 8, 21, 9, 0, tzinfo=UTC)


def scrape(metrics: Metrics) -> str:
    return metrics.exposition().decode()


# -- the send path ---------------------------------------------------------------------------


async def test_a_real_send_counts_replies_by_class_and_group_durations_and_hard_bounces(
    tmp_path: Path,
) -> None:
    faults = {"gone@gmail.com": RcptFault(550), "busy@yahoo.com": RcptFault(451, times=1)}
    with SMTPTestServer(rcpt_faults=faults) as relay:
        settings = send_settings(tmp_path, relay, sources=PAPERS)
        metrics = Metrics()
        emails = ["ada@gmail.com", "gone@gmail.com", "busy@yahoo.com", "bob@example.org"]
        with Digest(settings, metrics=metrics) as digest:
            summary = await digest.send(EDITION, [Subscriber(email=e) for e in emails])
        text = scrape(metrics)
    assert (summary.sent, summary.failed, summary.bounced) == (3, 1, 1)

    def replies(klass: str, group: str) -> float | None:
        return metric(text, "digest_smtp_replies_total", **{"class": klass, "domain_group": group})

    assert replies("2xx", "gmail") == 1 and replies("5xx", "gmail") == 1
    assert replies("4xx", "yahoo") == 1 and replies("2xx", "yahoo") == 1  # retried, then sent
    assert replies("2xx", "other") == 1
    assert replies("2xx", "outlook") is None
    assert metric(text, "digest_send_duration_seconds_count") == 5  # one per attempt
    assert (metric(text, "digest_send_duration_seconds_sum") or 0) > 0
    assert metric(text, "digest_bounces_total", kind="hard") == 1


async def test_a_process_that_serves_no_metrics_sends_without_a_registry(tmp_path: Path) -> None:
    with SMTPTestServer() as relay:
        settings = send_settings(tmp_path, relay, sources=PAPERS)
        with Digest(settings) as digest:
            summary = await digest.send(EDITION, [Subscriber(email="ada@example.org")])
    assert summary.sent == 1
    assert digest.metrics is NO_METRICS  # counts nothing (tests/test_imports.py: loads nothing)


# -- the daemon: bounces, what is due, the rates -----------------------------------------------


def one_subscriber(tmp_path: Path, state_url: str, address: str, **extra: Any) -> Settings:
    """A daemon's settings: ``address`` at 07:00 UTC, the recorded papers, a Maildir outbox."""
    subscribers = tmp_path / "subscribers.yaml"
    subscribers.write_text(f'subscribers:\n  - email: {address}\n    send_at: "07:00"\n')
    return make_settings(
        **MESSAGE_SETTINGS,
        sources=PAPERS,
        subscribers=subscribers,
        state_url=state_url,
        outbox=tmp_path / "outbox",
        **extra,
    )


async def test_a_tick_counts_the_bounces_it_reads_and_reports_the_complaint_rate(
    tmp_path: Path, state_url: str
) -> None:
    settings = one_subscriber(
        tmp_path, state_url, "ada@gmail.com", bounce_maildir=tmp_path / "bounces"
    )
    clock = FakeClock(T0)
    metrics = Metrics()
    with running_daemon(settings, clock, metrics) as daemon:
        store = daemon.digest.store
        metrics.watch_state(store, now=clock)
        message_id = "<2026-08-20.0123456789abcdef01234567@example.org>"
        for n in range(9):
            assert store.claim(f"r{n}@gmail.com", "2026-08-20", f"<{n}@x>")
            store.mark_sent(f"r{n}@gmail.com", "2026-08-20", "250 OK")
        assert store.claim("ada@gmail.com", "2026-08-20", message_id)
        store.mark_sent("ada@gmail.com", "2026-08-20", "250 OK")
        drop_mail(settings.bounce_maildir, "arf", complaint_about("ada@gmail.com", message_id))
        report = await daemon.tick()
        text = scrape(metrics)
    assert report.bounces is not None and report.bounces.complaints == 1
    assert metric(text, "digest_bounces_total", kind="complaint") == 1
    assert metric(text, "digest_complaint_rate", domain_group="gmail") == pytest.approx(0.1)
    assert metric(text, "digest_complaint_rate", domain_group="yahoo") == 0
    assert metric(text, "digest_sending_paused", domain_group="gmail") == 1  # 10 % > 0.3 %
    assert metric(text, "digest_suppressions", reason="complained") == 1
    assert metric(text, "digest_due_deliveries") == 0  # ada has 2026-08-20; 08-21 not yet


async def test_a_tick_reports_the_papers_collected_and_when_each_source_answered(
    tmp_path: Path, state_url: str
) -> None:
    settings = one_subscriber(tmp_path, state_url, "ada@example.org")
    clock = FakeClock(T0)  # 2026-08-21 09:00 UTC: the 2026-08-20 edition is due since 07:00
    metrics = Metrics()
    with running_daemon(settings, clock, metrics) as daemon:
        report = await daemon.tick()
        papers = await daemon.digest.papers_for(EDITION)
        text = scrape(metrics)
    assert report.total("sent") == 1
    assert metric(text, "digest_source_last_success_timestamp_seconds", source=PAPERS) == (
        T0.timestamp()
    )
    assert metric(text, "digest_edition_papers") == len(papers.papers) > 0
    assert metric(text, "digest_due_deliveries") == 1  # as the tick found it, before sending
    assert metric(text, "digest_oldest_due_age_seconds") == 2 * 3600


def test_a_secret_in_a_source_spec_never_reaches_a_label() -> None:
    metrics = Metrics()
    metrics.source_fetched("feed:https://reader:hunter2@feeds.example.org/x?token=s3cr3t", T0)
    text = scrape(metrics)
    assert "hunter2" not in text and "s3cr3t" not in text
    assert 'source="feed:https://reader:***@feeds.example.org/x?token=***"' in text


# -- the state's figures, both databases ----------------------------------------------------------


def test_the_state_figures_are_read_at_each_scrape(make_store: MakeStore) -> None:
    clock = FakeClock(T0)
    store = make_store(now=clock)
    metrics = Metrics()
    metrics.watch_state(store, now=clock)
    metrics.watch_state(store, now=clock)  # registered once
    first = scrape(metrics)
    assert metric(first, "digest_state_up") == 1
    assert metric(first, "digest_deliveries", status="owed") == 0
    assert metric(first, "digest_oldest_owed_age_seconds") == 0
    store.mark_deferred("a@example.org", "2026-08-20", "451 4.7.1 later", 451)
    assert store.claim("b@example.org", "2026-08-20", "<b@x>")
    store.mark_sent("b@example.org", "2026-08-20", "250 OK")
    store.suppress("c@example.org", "unsubscribed", evidence="one-click", actor="web")
    store.pause_group("outlook", evidence="test", actor="daemon")
    clock.at += timedelta(hours=2)
    text = scrape(metrics)
    assert metric(text, "digest_deliveries", status="owed") == 1
    assert metric(text, "digest_deliveries", status="sent") == 1
    assert metric(text, "digest_deliveries", status="unknown") == 0
    assert metric(text, "digest_oldest_owed_age_seconds") == 7200
    assert metric(text, "digest_suppressions", reason="unsubscribed") == 1
    assert metric(text, "digest_sending_paused", domain_group="outlook") == 1
    assert metric(text, "digest_sending_paused", domain_group="gmail") == 0


def test_a_state_that_does_not_answer_is_state_up_0_and_the_scrape_goes_on(
    make_store: MakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    store: StateBackend = make_store()
    metrics = Metrics()
    metrics.watch_state(store)
    metrics.send_seconds(0.5)
    store.close()
    with caplog.at_level(logging.WARNING, logger="digest.metrics"):
        text = scrape(metrics)
        scrape(metrics)
    assert metric(text, "digest_state_up") == 0
    assert metric(text, "digest_send_duration_seconds_count") == 1
    assert metric(text, "digest_deliveries", status="sent") is None
    assert len([r for r in caplog.records if "did not answer" in r.getMessage()]) == 1


# -- the web app ---------------------------------------------------------------------------


@pytest.fixture
def web_values(tmp_path: Path, state_url: str) -> dict[str, Any]:
    subscribers = tmp_path / "subscribers.yaml"
    subscribers.write_text("subscribers:\n  - email: ada@example.org\n")
    return {
        "subscribers": subscribers,
        "state_url": state_url,
        "outbox": tmp_path / "outbox",
        "sources": PAPERS,
        "secret_key": SECRET_KEY,
        "public_url": PUBLIC,
        "sender": "Daily Papers <papers@example.org>",
    }


def test_web_requests_sign_ups_and_confirmations_are_counted_by_route_template(
    web_values: dict[str, Any],
) -> None:
    settings = make_settings(**web_values)
    token_url = unsubscribe_url_for(settings, "ada@example.org")
    assert token_url is not None
    token = token_url.rsplit("/", 1)[1]
    with running_app(settings) as base, httpx.Client() as client:
        assert client.get(base + "/u/" + token).status_code == 200
        assert client.get(base + "/u/not-a-token").status_code == 400
        assert client.get(base + "/no/such/" + token).status_code == 404
        assert client.request("PROPFIND", base + "/archive").status_code == 405
        page = client.get(base + "/")
        signed = client.post(
            base + "/subscribe", data={"csrf": csrf_of(page), "email": "grace@example.org"}
        )
        assert signed.status_code == 200
        link = confirm_link(settings, base)
        confirm_page = client.get(link)
        assert client.post(link, data={"csrf": csrf_of(confirm_page)}).status_code == 200
        answer = client.get(base + "/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    assert token not in text and "not-a-token" not in text and "/no/such" not in text

    def requests(route: str, method: str, status: str) -> float | None:
        return metric(
            text, "digest_http_requests_total", route=route, method=method, status=status
        )

    assert requests("/u/{token}", "GET", "200") == 1
    assert requests("/u/{token}", "GET", "400") == 1
    assert requests("unmatched", "GET", "404") == 1
    assert requests("/archive", "other", "405") == 1
    assert requests("/subscribe", "POST", "200") == 1
    assert metric(text, "digest_signups_total") == 1
    assert metric(text, "digest_confirmations_total") == 1
    count = metric(text, "digest_http_request_duration_seconds_count", route="/u/{token}")
    assert count == 2
    assert metric(text, "digest_state_up") == 1


@pytest.mark.parametrize(
    ("allow", "client", "status"),
    [
        ("", None, 200),  # loopback
        ("", "203.0.113.9", 404),
        ("203.0.113.0/24", "203.0.113.9", 200),
        ("203.0.113.0/24, 2001:db8::/32", "2001:db8::7", 200),
        ("203.0.113.0/24", "198.51.100.1", 404),
    ],
)
def test_only_loopback_and_allowed_networks_read_metrics(
    web_values: dict[str, Any], allow: str, client: str | None, status: int
) -> None:
    settings = make_settings(**web_values, metrics_allow=allow)
    # The reverse proxy on loopback forwards the client's address (uvicorn trusts it).
    headers = {"X-Forwarded-For": client} if client else {}
    with running_app(settings) as base:
        answer = httpx.get(base + "/metrics", headers=headers)
    assert answer.status_code == status
    assert ("digest_state_up" in answer.text) is (status == 200)


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),
        ("::ffff:10.1.2.3", True),
        ("10.1.2.3", True),
        ("11.0.0.1", False),
        ("", False),
        (None, False),
        ("localhost", False),  # a name is not an address
        ("/run/digest.sock", False),
        ("127.0.0.1\r\nX-Injected: 1", False),
        ("999.1.1.1", False),
    ],
)
def test_client_allowed(host: str | None, allowed: bool) -> None:
    assert client_allowed(host, parse_networks("10.0.0.0/8")) is allowed


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("example.org", "'example.org' is not an IP address or network"),
        ("10.0.0.1/8", "'10.0.0.1/8' has host bits set: write the network, 10.0.0.0/8"),
        ("10.0.0.0/33", "'10.0.0.0/33' is not an IP address or network"),
        ("0.0.0.0/0; rm -rf /", "is not an IP address or network"),
        ("\x1b[2J" + "a" * 500, "…' is not an IP address or network"),
    ],
)
def test_a_bad_metrics_allow_list_is_one_line_naming_the_setting(
    value: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DIGEST_METRICS_ALLOW", value)
    code, output = run_cli("validate", "--offline")
    assert code == 2, output
    [line] = [x for x in output.splitlines() if "DIGEST_METRICS_ALLOW" in x]
    assert line.startswith("error: DIGEST_METRICS_ALLOW: ") and message in line
    assert "\x1b" not in output and "Traceback" not in output and len(line) < 250


# -- digest run: the web app's port and the metrics port, one registry ----------------------------


def test_digest_run_serves_metrics_on_the_app_port_and_on_the_metrics_port(
    web_values: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    http_port, metrics_port = free_port(), free_port()
    use_settings(monkeypatch, **web_values, http_port=http_port, metrics_port=metrics_port)
    environ = {**os.environ, "PYTHONPATH": str(PROJECT), "DIGEST_TICK_SECONDS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "digest", "run"],
        cwd=tmp_path,
        env=environ,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        app = _until_ticked(f"http://127.0.0.1:{http_port}/metrics", proc)
        alone = _until_ticked(f"http://127.0.0.1:{metrics_port}/metrics", proc)
        outside = httpx.get(
            f"http://127.0.0.1:{metrics_port}/metrics", headers={"X-Forwarded-For": "192.0.2.1"}
        )
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, out.decode(errors="replace")
    for text in (app, alone):  # one registry: the daemon's figures on both ports
        assert metric(text, "digest_due_deliveries") is not None
        assert metric(text, "digest_state_up") == 1
    assert outside.status_code == 404


def _until_ticked(url: str, proc: subprocess.Popen[bytes]) -> str:
    """``url``'s metrics once the daemon's first tick has set what is due (bounded wait)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            answer = httpx.get(url, timeout=2.0)
            if answer.status_code == 200 and "digest_due_deliveries " in answer.text:
                return answer.text
        except httpx.TransportError:
            pass
        assert proc.poll() is None, proc.communicate()[0].decode(errors="replace")
        assert time.monotonic() < deadline, f"{url} never showed a tick"
        time.sleep(0.1)


async def test_a_request_the_app_fails_on_is_logged_and_counted_as_a_500(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.routing import Route

    from digest.web.security import SecurityMiddleware

    async def boom(request: Request) -> None:
        raise RuntimeError("a bug")

    seen: list[tuple[str, str, int]] = []
    app = Starlette(routes=[Route("/boom/{item}", boom)])
    app.add_middleware(
        SecurityMiddleware, on_request=lambda m, route, status, s: seen.append((m, route, status))
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    with caplog.at_level(logging.INFO, logger="digest.web"):
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            assert (await client.get("/boom/42")).status_code == 500
    assert seen == [("GET", "/boom/{item}", 500)]
    assert any(r.getMessage().startswith("GET /boom/42 500 ") for r in caplog.records)
