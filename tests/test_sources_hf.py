"""The ``hf`` and ``file:`` sources against real Daily Papers captures, and build_source(s).

HTTP tests run a real server on 127.0.0.1 (``tests/httpserver.py``) serving the captures in
``tests/fixtures/hf-daily-papers*/``; nothing touches the internet.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest

from digest.errors import ConfigError, SourceError
from digest.models import Paper
from digest.settings import load_settings
from digest.sources import (
    FeedSource,
    FileSource,
    HfSource,
    HttpOptions,
    Source,
    build_source,
    build_sources,
)
from tests.conftest import FIXTURES
from tests.httpserver import LocalHTTPServer, closed_port

HF_DIR = FIXTURES / "hf-daily-papers"
MALFORMED_DIR = FIXTURES / "hf-daily-papers-malformed"
API = "/api/daily_papers"
FAST = HttpOptions(timeout_s=5.0, retries=2, retry_base_s=0.0)


@pytest.fixture
def server() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer() as srv:
        srv.add_directory(API, HF_DIR)
        yield srv


def hf(server: LocalHTTPServer, options: HttpOptions = FAST) -> HfSource:
    return HfSource(server.url(API), options=options)


def by_id(papers: list[Paper]) -> dict[str, Paper]:
    return {p.arxiv_id: p for p in papers}


# --- hf: real captures -----------------------------------------------------------------------


async def test_2026_08_20_first_paper_has_every_enrichment_field(server: LocalHTTPServer) -> None:
    papers = await hf(server).fetch(date(2026, 8, 20))

    first = papers[0]
    assert first.arxiv_id == "2608.16590"
    assert first.title.startswith("Zetta ζ: An Efficient Closed-Loop Embodied Harness")
    assert first.upvotes == 92
    assert first.comments == 1
    assert first.github_stars == 152
    assert first.github_repo == "https://github.com/air-embodied-brain/Zetta-Embodiment"
    assert first.project_page == "https://air-embodied-brain.github.io/zetta/"
    assert first.ai_summary is not None
    assert first.ai_summary.startswith("Zetta is a closed-loop embodied harness")
    assert "Z-Infra" in first.ai_keywords
    assert first.authors[:3] == ("Xin Ding", "Liang Mi", "Mingzhe Huang")
    assert len(first.authors) == 15
    assert first.abstract.startswith("Embodied agents are increasingly used")
    assert first.published_at == datetime(2026, 8, 17, tzinfo=UTC)
    assert first.daily_date == date(2026, 8, 20)
    assert first.thumbnail == (
        "https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/2608.16590.png"
    )
    assert first.source == "hf"
    assert first.upvotes is not None and first.announce_type is None


async def test_request_carries_the_date_and_our_user_agent(server: LocalHTTPServer) -> None:
    await hf(server).fetch(date(2026, 8, 20))

    (request,) = server.requests
    assert request.target == f"{API}?date=2026-08-20"
    assert request.headers["user-agent"].startswith("digest/")


@pytest.mark.parametrize(
    ("day", "count", "first_id", "last_id"),
    [
        (date(2024, 5, 29), 8, "2405.18407", "2405.18424"),
        (date(2024, 11, 13), 7, "2411.07184", "2411.06307"),
        (date(2025, 5, 29), 36, "2505.22617", "2505.18149"),
        (date(2026, 7, 27), 14, "2607.22529", "2607.12756"),
        (date(2026, 8, 20), 15, "2608.16590", "2608.14229"),
    ],
)
async def test_every_capture_parses_in_api_order(
    server: LocalHTTPServer, day: date, count: int, first_id: str, last_id: str
) -> None:
    papers = await hf(server).fetch(day)

    assert len(papers) == count
    assert (papers[0].arxiv_id, papers[-1].arxiv_id) == (first_id, last_id)
    assert all(p.daily_date == day and p.upvotes is not None for p in papers)
    assert all("\n" not in p.title and "\n" not in p.abstract for p in papers)
    assert all(p.published_at is not None and p.published_at.tzinfo is UTC for p in papers)


async def test_2024_capture_without_enrichment_fields_works(server: LocalHTTPServer) -> None:
    papers = by_id(await hf(server).fetch(date(2024, 5, 29)))

    pcm = papers["2405.18407"]
    assert pcm.title == "Phased Consistency Model"
    assert pcm.upvotes == 18
    assert pcm.comments == 5
    assert pcm.ai_summary is None
    assert pcm.ai_keywords == ()
    assert pcm.github_repo is None and pcm.github_stars is None and pcm.project_page is None
    # 2024-05 items had `mediaUrl`, later ones `thumbnail`.
    assert pcm.thumbnail == (
        "https://cdn-thumbnails.huggingface.co/social-thumbnails/papers/2405.18407.png"
    )
    assert pcm.published_at == datetime(2024, 5, 28, 17, 47, 19, tzinfo=UTC)
    assert pcm.abstract.startswith(
        "The consistency model (CM) has recently made significant progress in accelerating"
    )
    # paper.title wraps lines ("Language\n  Models"): collapsed to single spaces.
    assert papers["2405.18386"].title == (
        "Instruct-MusicGen: Unlocking Text-to-Music Editing for Music Language Models via "
        "Instruction Tuning"
    )


async def test_2025_capture_ai_fields_and_2026_zero_stars(server: LocalHTTPServer) -> None:
    may = by_id(await hf(server).fetch(date(2025, 5, 29)))
    july = by_id(await hf(server).fetch(date(2026, 7, 27)))

    entropy = may["2505.22617"]
    assert entropy.ai_keywords[:2] == ("policy entropy", "reinforcement learning")
    assert entropy.github_stars is None
    assert entropy.upvotes == 44
    skill = july["2607.22529"]
    assert skill.github_stars == 0  # present and zero, not missing
    assert skill.comments == 0
    assert skill.github_repo == "https://github.com/Qwen-Applications/skill-self-play"
    assert skill.ai_summary is None


async def test_daily_date_comes_from_submitted_on_daily_at(server: LocalHTTPServer) -> None:
    item = json.loads((HF_DIR / "2026-08-20.json").read_text())[0]
    item["paper"]["submittedOnDailyAt"] = "2026-08-19T23:59:00.000Z"
    server.add(f"{API}?date=2026-08-20", json.dumps([item]))

    (paper,) = await hf(server).fetch(date(2026, 8, 20))

    assert paper.daily_date == date(2026, 8, 19)


async def test_optional_fields_of_the_wrong_type_are_ignored(server: LocalHTTPServer) -> None:
    item = {
        "paper": {"id": "2401.00001v2", "title": "T", "githubStars": "many", "upvotes": True},
        "numComments": None,
    }
    server.add(f"{API}?date=2024-01-01", json.dumps([item]))

    (paper,) = await hf(server).fetch(date(2024, 1, 1))

    assert paper.arxiv_id == "2401.00001"
    assert paper.github_stars is None and paper.comments is None
    assert paper.upvotes == 0
    assert paper.authors == () and paper.abstract == ""


async def test_empty_day_is_an_empty_list(server: LocalHTTPServer) -> None:
    server.add(f"{API}?date=2026-08-22", "[]")

    assert await hf(server).fetch(date(2026, 8, 22)) == []


# --- hf: HTTP failures -----------------------------------------------------------------------


async def test_500_is_retried_then_source_error(server: LocalHTTPServer) -> None:
    target = f"{API}?date=2026-08-21"
    server.add(target, status=500)

    with pytest.raises(SourceError) as info:
        await hf(server).fetch(date(2026, 8, 21))

    assert server.count(target) == 3  # 1 + FAST.retries
    message = str(info.value)
    assert message.startswith("source hf: GET http://127.0.0.1:")
    assert "date=2026-08-21" in message
    assert "failed after 3 attempts: HTTP 500" in message
    assert info.value.source == "hf"
    assert isinstance(info.value.__cause__, Exception)


async def test_503_then_success_is_retried_transparently(server: LocalHTTPServer) -> None:
    target = f"{API}?date=2026-08-20"
    server.routes[target].fail_first = [503]

    papers = await hf(server).fetch(date(2026, 8, 20))

    assert len(papers) == 15
    assert [r.status for r in server.requests] == [503, 200]


async def test_404_fails_at_once_without_retry(server: LocalHTTPServer) -> None:
    with pytest.raises(SourceError, match=r"HTTP 404 Not Found \(not retried\)") as info:
        await hf(server).fetch(date(2030, 1, 1))

    assert server.count(API) == 1
    assert '{"error": "Not Found"}' in str(info.value)  # the server's explanation is kept


async def test_connection_refused_is_a_source_error() -> None:
    source = HfSource(f"http://127.0.0.1:{closed_port()}/api", options=FAST)

    with pytest.raises(SourceError, match=r"failed after 3 attempts: ConnectError"):
        await source.fetch(date(2026, 8, 20))


async def test_timeout_is_a_source_error(server: LocalHTTPServer) -> None:
    server.add(f"{API}?date=2026-08-23", "[]", delay_s=1.0)
    options = HttpOptions(timeout_s=0.1, retries=0, retry_base_s=0.0)

    with pytest.raises(SourceError, match=r"failed after 1 attempt: ReadTimeout"):
        await hf(server, options).fetch(date(2026, 8, 23))


# --- hf: malformed data ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["2024-12-11", "2024-12-17"])
async def test_python_repr_capture_is_a_clear_source_error(
    server: LocalHTTPServer, name: str
) -> None:
    server.add(f"{API}?date={name}", file=MALFORMED_DIR / f"{name}.json")

    with pytest.raises(SourceError) as info:
        await hf(server).fetch(date.fromisoformat(name))

    message = str(info.value)
    assert "\n" not in message
    assert f"{API}?date={name}: item 0 is a string, not an object" in message
    assert "Python repr() output, re-export it as JSON" in message


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (
            '{"error": "Invalid date"}',
            "expected a JSON list of papers, got an object (the server said: Invalid date)",
        ),
        ("42", "expected a JSON list of papers, got a number"),
        ("[1]", "item 0 is a number, not an object"),
        ('[{"paper": {"id": "2401.00001"}}]', "item 0 (2401.00001) has no title ('paper.title')"),
        ('[{"paper": "2401.00001"}]', "item 0 has a 'paper' that is a string, not an object"),
        ('[{"paper": ', "invalid JSON at line 1 column 12: Expecting value"),
        ("", "empty response, expected a JSON list of papers"),
    ],
)
async def test_malformed_responses(server: LocalHTTPServer, body: str, problem: str) -> None:
    server.add(f"{API}?date=2024-01-02", body)

    with pytest.raises(SourceError) as info:
        await hf(server).fetch(date(2024, 1, 2))

    assert str(info.value).endswith(f"{API}?date=2024-01-02: {problem}")


async def test_invalid_json_chains_the_decode_error(server: LocalHTTPServer) -> None:
    server.add(f"{API}?date=2024-01-02", "[{")

    with pytest.raises(SourceError) as info:
        await hf(server).fetch(date(2024, 1, 2))

    assert isinstance(info.value.__cause__, json.JSONDecodeError)


# --- file: ----------------------------------------------------------------------------------


async def test_file_source_directory_reads_the_day_file() -> None:
    source = FileSource(HF_DIR)

    papers = await source.fetch(date(2026, 8, 20))

    assert papers[0].arxiv_id == "2608.16590" and papers[0].github_stars == 152
    assert {p.source for p in papers} == {f"file:{HF_DIR}"}


async def test_file_source_directory_missing_day_is_an_empty_day() -> None:
    assert await FileSource(HF_DIR).fetch(date(2026, 8, 22)) == []


async def test_file_source_single_file_serves_any_day(tmp_path: Path) -> None:
    file = tmp_path / "capture.json"
    shutil.copy(HF_DIR / "2024-11-13.json", file)
    source = FileSource(file)

    papers = await source.fetch(date(2024, 11, 14))

    assert [p.arxiv_id for p in papers][:2] == ["2411.07184", "2411.07975"]
    # 2024 captures have no submittedOnDailyAt: the requested day is used.
    assert {p.daily_date for p in papers} == {date(2024, 11, 14)}


async def test_file_source_same_parse_as_hf(server: LocalHTTPServer) -> None:
    over_http = await hf(server).fetch(date(2025, 5, 29))
    from_file = await FileSource(HF_DIR, name="hf").fetch(date(2025, 5, 29))

    assert from_file == over_http


async def test_file_source_malformed_names_the_file() -> None:
    source = FileSource(MALFORMED_DIR)

    with pytest.raises(SourceError) as info:
        await source.fetch(date(2024, 12, 11))

    assert str(info.value) == (
        f"source file:{MALFORMED_DIR}: {MALFORMED_DIR / '2024-12-11.json'}: item 0 is a string, "
        "not an object: the file looks like Python repr() output, re-export it as JSON; "
        "none of the 26 items is usable"
    )


async def test_file_source_missing_path(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file or directory"):
        await FileSource(tmp_path / "nope").fetch(date(2026, 8, 20))


# --- build_source(s) ---------------------------------------------------------------------------


async def test_build_source_hf_uses_settings(server: LocalHTTPServer) -> None:
    settings = load_settings(
        env_file=None, hf_api_url=server.url(API), http_retries=0, http_timeout=2.0
    )
    async with httpx.AsyncClient() as client:
        source = build_source("hf", settings, client=client)
        server.add(f"{API}?date=2026-08-21", status=502)

        papers = await source.fetch(date(2026, 8, 20))
        with pytest.raises(SourceError, match="after 1 attempt: HTTP 502"):
            await source.fetch(date(2026, 8, 21))

        assert not client.is_closed  # a shared client belongs to the caller
    assert isinstance(source, HfSource) and isinstance(source, Source)
    assert source.name == "hf" and len(papers) == 15
    assert server.count(f"{API}?date=2026-08-21") == 1


def test_build_sources_from_specs(tmp_path: Path) -> None:
    settings = load_settings(env_file=None)
    specs = ["hf", f"file:{HF_DIR}", "feed:https://rss.arxiv.org/rss/cs.LG#types=new+cross", "hf"]

    sources = build_sources(specs, settings)

    assert [s.name for s in sources] == specs[:3]
    assert [type(s) for s in sources] == [HfSource, FileSource, FeedSource]
    feed = sources[2]
    assert isinstance(feed, FeedSource)
    assert feed.url == "https://rss.arxiv.org/rss/cs.LG"
    assert feed.types == frozenset({"new", "cross"})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("arxiv", "unknown source 'arxiv'"),
        ("file:", "missing path after 'file:'"),
        ("feed:", "missing URL or path after 'feed:'"),
        ("feed:https://x/rss#types=news", "unknown announcement type 'news'"),
        ("feed:https://x/rss#limit=3", "unknown option 'limit'"),
    ],
)
def test_build_source_rejects_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_source(spec, load_settings(env_file=None))


def test_build_sources_reports_every_bad_spec() -> None:
    with pytest.raises(ConfigError) as info:
        build_sources(["hf", "arxiv", "rss:x"], load_settings(env_file=None))

    assert len(info.value.problems) == 2
