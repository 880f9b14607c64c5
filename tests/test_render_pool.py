"""Large sends make their messages in worker processes: same messages, same records, no leftovers.

``Digest.render_min_batch`` is lowered so that a dozen subscribers take the process path; the
same subscribers sent in-process are the reference.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import os
from collections.abc import Iterator
from datetime import UTC, date, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import psutil
import pytest

from digest.core import Digest
from digest.models import Edition, RunSummary
from digest.pipeline.workers import RENDER_PROCESSES_MIN_BATCH
from digest.render import PACKAGED_TEMPLATES_DIR, TEXT_TEMPLATE
from digest.settings import Settings
from digest.state import SKIP_NO_PAPERS
from digest.subscribers import Subscriber
from tests.factories import send_settings
from tests.smtpserver import Received, SMTPTestServer

EXAMPLES = Path(__file__).parent.parent / "examples" / "hf-daily-papers"
EDITION = Edition.daily(date(2026, 8, 18))
NOW = datetime(2026, 8, 19, 9, 30, tzinfo=UTC)
BROKEN_NAME = "Broken Template"
"""The subscriber name for which the overriding text template fails."""
MIN_BATCH = 4
WORKERS = 2


def clock() -> datetime:
    return NOW


@pytest.fixture
def templates(tmp_path: Path) -> Path:
    """A text template that fails (UndefinedError → ConfigError) only for BROKEN_NAME."""
    out = tmp_path / "templates"
    out.mkdir()
    packaged = (PACKAGED_TEMPLATES_DIR / TEXT_TEMPLATE).read_text(encoding="utf-8")
    trap = f'{{% if name == "{BROKEN_NAME}" %}}{{{{ no_such_variable.attribute }}}}{{% endif %}}'
    (out / TEXT_TEMPLATE).write_text(trap + packaged, encoding="utf-8")
    return out


@pytest.fixture
def server() -> Iterator[SMTPTestServer]:
    with SMTPTestServer() as srv:
        yield srv


def subscribers() -> list[Subscriber]:
    """Personalized, unpersonalized, only-matching without a match, and one broken render."""
    subs = [
        Subscriber(email="everyone@example.org", name="Everyone", max_papers=30),
        Subscriber(email="agents@example.org", name="Ana", keywords=("agent", "reasoning")),
        Subscriber(email="few@example.org", keywords=("diffusion",), max_papers=3),
        Subscriber(
            email="nothing@example.org", keywords=("zzqx-no-such-topic",), only_matching=True
        ),
        Subscriber(email="broken@example.org", name=BROKEN_NAME),
        Subscriber(email="video@example.org", name="Vid", keywords=("video",), only_matching=True),
        Subscriber(
            email="empty-ok@example.org",
            keywords=("zzqx-no-such-topic",),
            only_matching=True,
            send_empty=True,
        ),
    ]
    subs += [
        Subscriber(email=f"reader{i:02d}@example.org", keywords=(kw,), max_papers=5)
        for i, kw in enumerate(("model", "learning", "language", "vision", "robot", "3d"))
    ]
    return subs


def settings_for(tmp_path: Path, server: SMTPTestServer, templates: Path, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "templates_dir": templates,
        "smtp_max_attempts": 1,
        "render_workers": WORKERS,
    }
    return send_settings(tmp_path, server, sources=f"file:{EXAMPLES}", **{**values, **extra})


def render_workers() -> list[psutil.Process]:
    """This process's live render workers (``spawn`` children)."""
    out = []
    for child in psutil.Process().children(recursive=True):
        try:
            if any("spawn_main" in part for part in child.cmdline()):
                out.append(child)
        except psutil.NoSuchProcess:
            pass
    return out


def leftover_children(before: set[int]) -> list[str]:
    """Children started since ``before`` that still exist, except multiprocessing's resource
    tracker (one per interpreter, started on first use and kept until exit by design)."""
    out = []
    for child in psutil.Process().children(recursive=True):
        if child.pid in before:
            continue
        try:
            cmdline = " ".join(child.cmdline())
            if "resource_tracker" in cmdline:
                continue
            out.append(f"{child.pid} {child.status()} {cmdline}")
        except psutil.NoSuchProcess:
            pass
    return out


def parse(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def content(msg: EmailMessage) -> dict[str, Any]:
    """Everything a reader sees: the headers (except the random Message-ID and MIME boundary)
    and both decoded parts."""
    random = ("message-id", "content-type")
    headers = sorted((k, str(v)) for k, v in msg.items() if k.lower() not in random)
    headers.append(("Content-Type", msg.get_content_type()))
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    return {"headers": headers, "text": text.get_content(), "html": html.get_content()}


def one_each(received: list[Received]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for m in received:
        assert len(m.rcpt_tos) == 1
        assert m.rcpt_tos[0] not in out, f"{m.rcpt_tos[0]} got two messages"
        out[m.rcpt_tos[0]] = m.data
    return out


async def send(
    settings: Settings, subs: list[Subscriber], *, min_batch: int, **kwargs: Any
) -> tuple[RunSummary, dict[str, tuple[str, str | None]], Digest]:
    with Digest(settings, now=clock) as digest:
        digest.render_min_batch = min_batch
        summary = await digest.send(EDITION, subs, **kwargs)
        rows = {  # a sent row's detail is the relay's reply ("queued as N"): left out
            row.subscriber: (str(row.status), None if row.status == "sent" else row.detail)
            for row in digest.store.list(edition=EDITION.key)
        }
    return summary, rows, digest


async def test_processes_make_the_same_messages_as_in_process(
    tmp_path: Path, templates: Path
) -> None:
    subs = subscribers()
    assert MIN_BATCH <= len(subs) < RENDER_PROCESSES_MIN_BATCH
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    seen_workers: list[int] = []

    def on_result(_email: str, _outcome: str) -> None:
        seen_workers.append(len(render_workers()))

    with SMTPTestServer() as pooled_server:
        settings = settings_for(tmp_path / "p", pooled_server, templates)
        (tmp_path / "p").mkdir()
        pooled, pooled_rows, _ = await send(
            settings, subs, min_batch=MIN_BATCH, on_result=on_result
        )
        pooled_mail = one_each(pooled_server.messages)
    assert leftover_children(before) == []
    assert max(seen_workers) >= 1, "the process path was not taken"

    with SMTPTestServer() as here_server:
        settings = settings_for(tmp_path / "h", here_server, templates)
        (tmp_path / "h").mkdir()
        here, here_rows, _ = await send(settings, subs, min_batch=len(subs) + 1)
        here_mail = one_each(here_server.messages)

    # The same outcome for every subscriber.
    assert pooled.sent == here.sent == len(subs) - 2
    assert (pooled.skipped, pooled.failed, pooled.deferred) == (1, 1, 0)
    assert (here.skipped, here.failed, here.deferred) == (1, 1, 0)
    assert pooled.errors == here.errors
    assert len(pooled.errors) == 1 and pooled.errors[0].startswith("broken@example.org: ")
    assert "no_such_variable" in pooled.errors[0]
    assert pooled_rows == here_rows
    assert pooled_rows["nothing@example.org"] == ("skipped", SKIP_NO_PAPERS)
    assert "broken@example.org" not in pooled_rows
    assert {k for k, (status, _) in pooled_rows.items() if status == "sent"} == set(pooled_mail)

    # Every message complete and identical to the in-process one, Message-ID aside.
    assert set(pooled_mail) == set(here_mail)
    ids = set()
    for rcpt, raw in pooled_mail.items():
        msg = parse(raw)
        assert msg["To"].addresses[0].addr_spec == rcpt
        assert msg["Date"].datetime == NOW
        ids.add(str(msg["Message-ID"]))
        assert content(msg) == content(parse(here_mail[rcpt])), rcpt
    assert len(ids) == len(pooled_mail)
    assert pooled_rows["empty-ok@example.org"][0] == "sent"


async def test_stop_ends_a_pooled_send_promptly_and_leaves_no_worker(
    tmp_path: Path, templates: Path, server: SMTPTestServer
) -> None:
    subs = [
        Subscriber(email=f"reader{i:03d}@example.org", keywords=("model",), max_papers=5)
        for i in range(60)
    ]
    settings = settings_for(tmp_path, server, templates, smtp_concurrency=1)
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    stop = asyncio.Event()

    def on_result(_email: str, outcome: str) -> None:
        if outcome == "sent":
            stop.set()

    summary, rows, _ = await send(
        settings, subs, min_batch=MIN_BATCH, stop=stop, on_result=on_result
    )
    assert leftover_children(before) == []
    assert 1 <= summary.sent < len(subs) // 2
    assert summary.failed == summary.deferred == 0
    statuses = sorted(status for status, _ in rows.values())
    # With one connection, at most the one message whose claim was committed with the last
    # mark is left behind: never handed to the transport, it is owed again.
    assert statuses in (["sent"] * summary.sent, ["owed"] + ["sent"] * summary.sent)
    assert len(one_each(server.messages)) == summary.sent


async def test_dry_run_in_processes_records_nothing(tmp_path: Path, templates: Path) -> None:
    with SMTPTestServer() as server:
        settings = settings_for(tmp_path, server, templates)
        summary, rows, _ = await send(settings, subscribers(), min_batch=MIN_BATCH, dry_run=True)
        assert server.messages == []
    assert (summary.sent, summary.skipped, summary.failed) == (len(subscribers()) - 2, 1, 1)
    assert rows == {}


async def test_no_workers_setting_keeps_the_send_in_process(
    tmp_path: Path, templates: Path, server: SMTPTestServer
) -> None:
    settings = settings_for(tmp_path, server, templates, render_workers=0)
    seen: list[int] = []
    summary, _, _ = await send(
        settings,
        subscribers(),
        min_batch=1,
        on_result=lambda _e, _o: seen.append(len(render_workers())),
    )
    assert summary.sent == len(subscribers()) - 2
    assert max(seen) == 0


def test_default_render_workers() -> None:
    # One core stays with the sending process: 1 CPU → 0 (render on a thread), 2 → 1, more → 2.
    expected = {1: 0, 2: 1}.get(os.cpu_count() or 1, 2)
    assert Settings(_env_file=None).effective_render_workers == expected  # type: ignore[call-arg]
    assert Settings(_env_file=None, render_workers=0).effective_render_workers == 0  # type: ignore[call-arg]
