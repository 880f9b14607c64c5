"""Several sources through the facade: merge, one source down, all down, per-subscriber sources.

A real HTTP server on loopback serves the recorded Hugging Face capture and an arXiv RSS feed.
"""

from __future__ import annotations

import email
import email.policy
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from digest.core import Digest
from digest.errors import SourceError
from digest.models import Edition
from digest.subscribers import Subscriber
from tests.conftest import FIXTURES
from tests.factories import outbox_settings
from tests.httpserver import RSS, LocalHTTPServer

DAY = date(2026, 8, 20)
NOW = datetime(2026, 8, 22, 12, 0, tzinfo=UTC)
HF_CAPTURE = FIXTURES / "hf-daily-papers" / "2026-08-20.json"
FEED = FIXTURES / "feeds" / "arxiv-rss2-cs.AI-2026-08-20.xml"
SHARED = {
    "2608.19197"
}  # 2608.18565 is in the feed too, but as a "cross" listing (excluded by default)


@pytest.fixture
def server() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer() as s:
        s.add(f"/api/daily_papers?date={DAY}", file=HF_CAPTURE)
        s.add("/rss/cs.AI", file=FEED, content_type=RSS, etag='"feed-v1"')
        yield s


def make(server: LocalHTTPServer, tmp_path: Path, *, hf_path: str = "/api/daily_papers") -> Digest:
    feed = f"feed:{server.url('/rss/cs.AI')}"
    settings = outbox_settings(
        tmp_path,
        sources=f"hf,{feed}",
        hf_api_url=server.url(hf_path),
        http_retries=0,
        sender="Papers <papers@example.org>",
    )
    return Digest(settings, now=lambda: NOW)


def feed_spec(server: LocalHTTPServer) -> str:
    return f"feed:{server.url('/rss/cs.AI')}"


def hf_ids() -> set[str]:
    return {item["paper"]["id"] for item in json.loads(HF_CAPTURE.read_text())}


def received(tmp_path: Path) -> dict[str, email.message.EmailMessage]:
    out = {}
    for path in (tmp_path / "outbox" / "new").iterdir():
        msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        assert isinstance(msg, email.message.EmailMessage)
        out[msg["To"].addresses[0].addr_spec] = msg
    return out


async def test_hf_and_feed_merge_by_arxiv_id(server: LocalHTTPServer, tmp_path: Path) -> None:
    with make(server, tmp_path) as digest:
        result = await digest.papers_for(Edition.daily(DAY))
    ids = [p.arxiv_id for p in result.papers]
    assert result.complete and result.failed == []
    assert len(ids) == len(set(ids)), "a paper listed by both sources appears once"
    assert hf_ids() <= set(ids)
    feed_only = set(ids) - hf_ids()
    assert feed_only and not (feed_only & SHARED)
    by_id = {p.arxiv_id: p for p in result.papers}
    for shared in SHARED:
        assert by_id[shared].upvotes is not None, "upvotes come from Hugging Face"
        assert "hf" in by_id[shared].source and "feed:" in by_id[shared].source
    assert all(by_id[i].upvotes is None for i in feed_only)


async def test_one_source_down_the_edition_goes_out_with_the_other(
    server: LocalHTTPServer, tmp_path: Path
) -> None:
    server.add("/down", status=500)
    alice = Subscriber(email="alice@example.org", keywords=("self-play",))
    with make(server, tmp_path, hf_path="/down") as digest:
        summary = await digest.send(Edition.daily(DAY), [alice])
    assert summary.sent == 1
    assert any("hf" in line and "500" in line for line in summary.errors)
    body = received(tmp_path)["alice@example.org"].get_body(("plain",)).get_content()
    assert "2608.19197" in body  # from the feed
    assert not (hf_ids() - SHARED) & {w.rsplit("/", 1)[-1] for w in body.split() if "/" in w}


async def test_every_source_down_sends_and_records_nothing(
    server: LocalHTTPServer, tmp_path: Path
) -> None:
    server.add("/down", status=500)
    server.add("/rss/cs.AI", status=503)
    alice = Subscriber(email="alice@example.org")
    with make(server, tmp_path, hf_path="/down") as digest:
        with pytest.raises(SourceError, match="every source failed"):
            await digest.send(Edition.daily(DAY), [alice])
        assert digest.store.list() == []
    assert not (tmp_path / "outbox").exists()


async def test_a_subscriber_restricted_to_the_feed_gets_only_feed_papers(
    server: LocalHTTPServer, tmp_path: Path
) -> None:
    everyone = Subscriber(email="all@example.org", max_papers=30)
    robo = Subscriber(email="feed@example.org", max_papers=30, sources=(feed_spec(server),))
    with make(server, tmp_path) as digest:
        summary = await digest.send(Edition.daily(DAY), [everyone, robo])
    assert summary.sent == 2
    got = received(tmp_path)
    feed_text = got["feed@example.org"].get_body(("plain",)).get_content()
    all_text = got["all@example.org"].get_body(("plain",)).get_content()
    hf_only = hf_ids() - SHARED
    assert not any(f"papers/{i}" in feed_text for i in hf_only)
    assert all(f"papers/{i}" in feed_text for i in SHARED)
    assert sum(f"papers/{i}" in all_text for i in hf_only) >= 10


async def test_feed_validators_persist_in_the_state_file_for_conditional_get(
    server: LocalHTTPServer, tmp_path: Path
) -> None:
    with make(server, tmp_path) as digest:
        await digest.papers_for(Edition.daily(DAY), sources=[feed_spec(server)])
    # A new process (new Digest) asks for another day: the feed is revalidated, not refetched.
    with make(server, tmp_path) as digest:
        result = await digest.papers_for(
            Edition.daily(date(2026, 8, 21)), sources=[feed_spec(server)]
        )
    assert result.complete
    feed_requests = server.requests_for("/rss/cs.AI")
    assert [r.status for r in feed_requests] == [200, 304]
    assert feed_requests[1].headers.get("if-none-match") == '"feed-v1"'


async def test_an_edition_lists_a_paper_once_when_its_copies_carry_different_days(
    server: LocalHTTPServer, tmp_path: Path
) -> None:
    # arXiv announced 2608.20011 on Aug 20 (the feed); Hugging Face lists it on Aug 21.
    item = json.loads(HF_CAPTURE.read_text())[0]
    item["paper"].update(id="2608.20011", upvotes=7, submittedOnDailyAt="2026-08-21T00:00:00Z")
    item["paper"]["title"] = item["title"] = "A paper Hugging Face lists a day after arXiv"
    server.add("/api/daily_papers?date=2026-08-21", body=json.dumps([item]).encode())
    week = Edition(key="2026-W34", days=(DAY, date(2026, 8, 21)), frequency="weekly")
    with make(server, tmp_path) as digest:
        result = await digest.papers_for(week)
    ids = [p.arxiv_id for p in result.papers]
    assert len(ids) == len(set(ids))
    (paper,) = [p for p in result.papers if p.arxiv_id == "2608.20011"]
    assert paper.upvotes == 7, "the Hugging Face copy wins"
    assert "hf" in paper.source and "feed:" in paper.source
