"""Outside data is validated at the edge, item by item (issue 8 item 6).

Hostile Daily Papers items (``javascript:``/``data:`` links, ``upvotes: 10**400``, negative
counts) are served by a real HTTP server on 127.0.0.1; each bad item is dropped with a warning
naming it and the rest of the day is sent. Papers stored by an older version are validated
again on load. ``digest papers --date D --refetch`` replaces a stored day on purpose.
"""

from __future__ import annotations

import copy
import email
import email.policy
import json
import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest

from digest.core import Digest
from digest.errors import SourceError
from digest.models import Edition, Paper, is_http_url, paper_problems
from digest.sources import HfSource, HttpOptions
from digest.state import open_state
from digest.subscribers import Subscriber
from tests.conftest import FIXTURES, MakeStore
from tests.factories import make_workdir, outbox_settings, run_cli
from tests.httpserver import LocalHTTPServer

API = "/api/daily_papers"
DAY = date(2026, 8, 20)
NOW = datetime(2026, 8, 21, 9, 0, tzinfo=UTC)
CAPTURE = FIXTURES / "hf-daily-papers" / "2026-08-20.json"


def capture() -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = json.loads(CAPTURE.read_text(encoding="utf-8"))
    return items


def hostile_day() -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The real day with five items made hostile; returns the items and {id: what is bad}."""
    items = copy.deepcopy(capture())
    bad = {
        0: ("projectPage", "javascript:alert(document.cookie)"),
        1: ("githubRepo", "data:text/html,<script>alert(1)</script>"),
        2: ("upvotes", 10**400),
        3: ("upvotes", -5),
        4: ("githubStars", 10**12),
    }
    expected: dict[str, str] = {}
    for index, (field, value) in bad.items():
        items[index]["paper"][field] = value
        expected[items[index]["paper"]["id"]] = f"paper.{field}"
    items[5]["thumbnail"] = "java\tscript:alert(1)"
    expected[items[5]["paper"]["id"]] = "thumbnail"
    return items, expected


@pytest.fixture
def server() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer() as srv:
        yield srv


# -- the rules ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://github.com/org/repo", True),
        ("http://example.org/project", True),
        ("HTTPS://EXAMPLE.ORG", True),
        ("javascript:alert(1)", False),
        ("JavaScript:alert(1)", False),
        ("data:text/html,x", False),
        ("vbscript:x", False),
        ("file:///etc/passwd", False),
        ("java\tscript:alert(1)", False),
        ("\x01javascript:alert(1)", False),
        ("https://exa mple.org", False),
        ("//example.org/x", False),
        ("/relative/path", False),
        ("https:\\\\example.org", False),
        ("https://example.org:99999/", False),
        ("https://" + "a" * 3000 + ".org", False),
    ],
)
def test_links_are_http_urls_only(url: str, ok: bool) -> None:
    assert is_http_url(url) is ok


def test_counts_are_range_checked() -> None:
    assert paper_problems(Paper("2608.00001", "t", upvotes=10**9, github_stars=0)) == []
    (problem,) = paper_problems(Paper("2608.00001", "t", upvotes=10**400))
    assert problem[0] == "upvotes" and "a number of 401 digits" in problem[1]
    assert paper_problems(Paper("2608.00001", "t", comments=-1))[0][0] == "comments"


# -- at the source ----------------------------------------------------------------------------


async def test_bad_items_are_dropped_with_a_warning_naming_each(
    server: LocalHTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    items, expected = hostile_day()
    server.add(API, json.dumps(items))
    source = HfSource(server.url(API), options=HttpOptions(retries=0))

    with caplog.at_level(logging.WARNING, logger="digest.sources.hf"):
        papers = await source.fetch(DAY)

    assert len(papers) == len(items) - len(expected)
    assert not {p.arxiv_id for p in papers} & set(expected)
    warnings = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert len(warnings) == len(expected)
    for arxiv_id, field in expected.items():
        (line,) = [w for w in warnings if f"({arxiv_id})" in w]
        assert f"'{field}'" in line and "\n" not in line and len(line) < 400
    for paper in papers:
        assert paper_problems(paper) == []


async def test_a_day_with_only_bad_items_is_a_source_error(server: LocalHTTPServer) -> None:
    items = copy.deepcopy(capture()[:2])
    for item in items:
        item["paper"]["projectPage"] = "javascript:alert(1)"
    server.add(API, json.dumps(items))

    with pytest.raises(SourceError, match=r"item 0 .*'paper.projectPage' is not an http\(s\) URL"):
        await HfSource(server.url(API), options=HttpOptions(retries=0)).fetch(DAY)


async def test_the_rest_of_a_hostile_day_is_sent_and_no_bad_link_reaches_the_email(
    server: LocalHTTPServer, tmp_path: Path
) -> None:
    items, expected = hostile_day()
    server.add(API, json.dumps(items))
    settings = outbox_settings(
        tmp_path,
        sources="hf",
        hf_api_url=server.url(API),
        http_retries=0,
        sender="Papers <papers@example.org>",
    )
    with Digest(settings, now=lambda: NOW) as digest:
        summary = await digest.send(
            Edition.daily(DAY), [Subscriber(email="ada@example.org", max_papers=50)]
        )

    assert summary.sent == 1 and summary.failed == 0, summary
    (path,) = (tmp_path / "outbox" / "new").iterdir()
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    html = msg.get_body(("html",)).get_content()  # type: ignore[union-attr]
    text = msg.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    for needle in ("javascript:", "data:text/html", "script>alert"):
        assert needle not in html and needle not in text
    for arxiv_id in expected:
        assert arxiv_id not in html
    kept = [it["paper"]["id"] for it in items if it["paper"]["id"] not in expected]
    assert all(arxiv_id in html for arxiv_id in kept)


# -- stored days, validated again ----------------------------------------------------------


def test_stored_papers_that_are_now_invalid_are_dropped_on_load(
    make_store: MakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    good = Paper("2608.00001", "A good paper", upvotes=3, github_repo="https://github.com/a/b")
    evil = Paper("2608.00002", "Evil", project_page="javascript:alert(1)")
    huge = Paper("2608.00003", "Huge", upvotes=10**400)
    with make_store() as store:
        store.save_papers(DAY, "hf", [good, evil, huge])  # as a version that checked less
        with caplog.at_level(logging.WARNING):
            loaded = store.load_papers(DAY, "hf")

    assert loaded == [good]
    messages = [r.getMessage() for r in caplog.records]
    assert any("'2608.00002'" in m and "project_page" in m for m in messages)
    assert any("'2608.00003'" in m and "upvotes" in m for m in messages)


async def test_a_stored_invalid_day_no_longer_stops_the_send(
    tmp_path: Path, state_url: str
) -> None:
    papers_dir = tmp_path / "papers"
    papers_dir.mkdir()
    spec = f"file:{papers_dir}"
    settings = outbox_settings(
        tmp_path, sources=spec, sender="Papers <papers@example.org>", state_url=state_url
    )
    good = Paper("2608.00001", "A good paper", upvotes=3, daily_date=DAY)
    huge = Paper("2608.00003", "Huge", upvotes=10**400, daily_date=DAY)
    with open_state(state_url) as store:
        store.save_papers(DAY, spec, [huge, good])

    with Digest(settings, now=lambda: NOW) as digest:
        summary = await digest.send(Edition.daily(DAY), [Subscriber(email="ada@example.org")])

    assert summary.sent == 1 and not summary.errors, summary


# -- digest papers --date D [--refetch] --------------------------------------------------------


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The captured day (:data:`CAPTURE`, the file of ``DAY``) and one subscriber."""
    return make_workdir(tmp_path, monkeypatch, papers=CAPTURE)


def test_papers_refetch_replaces_a_stored_day_on_purpose(workdir: Path, state_env: str) -> None:
    first = capture()
    code, output = run_cli("papers", "--date", str(DAY))
    assert code == 0, output
    assert f"{len(first)} papers, fetched, stored" in output
    assert first[0]["paper"]["id"] in output

    # The source changes its mind (e.g. a bad day was fixed upstream): the stored copy wins...
    changed = first[:3]
    changed[0] = copy.deepcopy(changed[0])
    changed[0]["paper"]["title"] = "A corrected title"
    (workdir / "papers" / f"{DAY}.json").write_text(json.dumps(changed))
    code, output = run_cli("papers", "--date", str(DAY))
    assert code == 0 and f"{len(first)} papers, stored" in output
    assert "A corrected title" not in output

    # ...until it is replaced on purpose.
    code, output = run_cli("papers", "--date", str(DAY), "--refetch")
    assert code == 0, output
    assert "3 papers, fetched, stored" in output and "A corrected title" in output
    code, output = run_cli("papers", "--date", str(DAY))
    assert "3 papers, stored" in output and "A corrected title" in output
    with open_state(state_env) as store:
        stored = store.load_papers(DAY, f"file:{workdir / 'papers'}")
    assert stored is not None and stored[0].title == "A corrected title"


def test_papers_refetch_keeps_the_stored_day_when_the_source_fails(workdir: Path) -> None:
    code, output = run_cli("papers", "--date", str(DAY))
    assert code == 0
    (workdir / "papers" / f"{DAY}.json").write_text("[{")  # broken upstream now

    code, output = run_cli("papers", "--date", str(DAY), "--refetch")

    assert code == 1
    assert "error:" in output and "invalid JSON" in output and "Traceback" not in output
    code, output = run_cli("papers", "--date", str(DAY))
    assert code == 0 and f"{len(capture())} papers, stored" in output
