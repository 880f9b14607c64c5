"""The ``feed:`` source against real arXiv captures (RSS service Atom, export API old and new
link layouts, empty result) and hand-written RSS 2.0 / RSS 1.0 feeds in arXiv's shapes.

HTTP tests run a real server on 127.0.0.1 (``tests/httpserver.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from digest.errors import ConfigError, SourceError
from digest.models import Paper
from digest.sources import FeedSource, HttpOptions
from digest.sources._text import normalize_arxiv_id
from digest.sources.feed import (
    DEFAULT_ANNOUNCE_TYPES,
    MemoryFeedCache,
    parse_feed_spec,
    split_authors,
)
from tests.conftest import FIXTURES
from tests.httpserver import ATOM, RSS, LocalHTTPServer

FEEDS = FIXTURES / "feeds"
RSS_ATOM = FEEDS / "arxiv-rss-cs.AI-2025-08-20.atom.xml"
API_2025_08 = FEEDS / "arxiv-api-query-2025-08.xml"
API_2025_11 = FEEDS / "arxiv-api-query-2025-11.xml"
API_EMPTY = FEEDS / "arxiv-api-query-empty.xml"
RSS2 = FEEDS / "arxiv-rss2-cs.AI-2026-08-20.xml"
RSS1 = FEEDS / "arxiv-rss1-cs.LG-2024-01-04.rdf"
FAST = HttpOptions(timeout_s=5.0, retries=1, retry_base_s=0.0)
ALL: frozenset[str] | None = None


@pytest.fixture
def server() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer() as srv:
        yield srv


def ids(papers: list[Paper]) -> list[str]:
    return [p.arxiv_id for p in papers]


def by_id(papers: list[Paper]) -> dict[str, Paper]:
    return {p.arxiv_id: p for p in papers}


# --- arXiv RSS service (Atom) ----------------------------------------------------------------


async def test_rss_service_default_keeps_new_announcements_only() -> None:
    source = FeedSource(str(RSS_ATOM))

    papers = await source.fetch(date(2025, 8, 20))

    assert ids(papers) == ["2508.14001", "2508.14002"]
    nas = papers[0]
    assert nas.title == "Neural Architecture Search for Efficient Transformers"
    assert nas.abstract == (
        "We propose a neural architecture search method for efficient transformers."
    )
    assert nas.authors == ("Alice Smith", "Bob Jones")
    assert nas.announce_type == "new"
    assert nas.upvotes is None and nas.comments is None
    assert nas.daily_date == date(2025, 8, 20)
    # published 2025-08-20T00:00:00-04:00 (the announcement, midnight US Eastern).
    assert nas.published_at == datetime(2025, 8, 20, 4, tzinfo=UTC)
    assert nas.abs_url == "https://arxiv.org/abs/2508.14001"
    assert nas.pdf_url is None
    assert nas.arxiv_pdf_url == "https://arxiv.org/pdf/2508.14001"
    assert nas.source == f"feed:{RSS_ATOM}"


async def test_rss_service_all_types_ids_authors_and_prefix() -> None:
    source = FeedSource(str(RSS_ATOM), types=ALL)

    papers = by_id(await source.fetch(date(2025, 8, 20)))

    assert list(papers) == [
        "2508.13426",
        "2508.13428",
        "2508.13429",
        "2508.13434",
        "2508.13435",
        "2508.14001",
        "2508.14002",
    ]
    align = papers["2508.13426"]
    assert align.announce_type == "cross"
    assert align.authors == ("Chunhua Liu", "Kabir Manandhar Shrestha", "Sukai Huang")
    assert align.abstract.startswith("As large language models (LLMs) increasingly mediate")
    assert "Announce Type" not in align.abstract and "arXiv:" not in align.abstract
    assert papers["2508.13434"].authors == (
        "Yunfeng Ge",
        "Ming Jin",
        "Yiji Zhao",
        "Hongyan Li",
        "Bo Du",
        "Chang Xu",
        "Shirui Pan",
    )
    assert papers["2508.13429"].authors == ("Paulo André Lima de Castro",)  # TeX \'e
    assert papers["2508.13435"].authors == ("Some Author",)


async def test_rss_service_other_day_is_empty() -> None:
    source = FeedSource(str(RSS_ATOM), types=ALL)

    assert await source.fetch(date(2025, 8, 19)) == []
    assert await source.fetch(date(2025, 8, 21)) == []


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        (frozenset({"new"}), ["2508.14001", "2508.14002"]),
        (
            frozenset({"cross"}),
            ["2508.13426", "2508.13428", "2508.13429", "2508.13434", "2508.13435"],
        ),
        (frozenset({"replace"}), []),
    ],
)
async def test_announce_type_filter(types: frozenset[str], expected: list[str]) -> None:
    papers = await FeedSource(str(RSS_ATOM), types=types).fetch(date(2025, 8, 20))

    assert ids(papers) == expected


# --- arXiv export API: two link layouts --------------------------------------------------------


@pytest.mark.parametrize(
    ("capture", "arxiv_id", "day", "abs_url", "pdf_url"),
    [
        # 2025-08: <link rel="alternate" type="text/html"> + <link title="pdf" rel="related">
        (
            API_2025_08,
            "astro-ph/9904306",
            date(1999, 4, 22),
            "https://arxiv.org/abs/astro-ph/9904306v1",
            "https://arxiv.org/pdf/astro-ph/9904306v1",
        ),
        (
            API_2025_08,
            "1706.01836",
            date(2017, 6, 6),
            "https://arxiv.org/abs/1706.01836v2",
            "https://arxiv.org/pdf/1706.01836v2",
        ),
        # 2025-11: two bare <link href> (feedparser calls both rel=alternate text/html).
        (
            API_2025_11,
            "nucl-ex/0408020",
            date(2004, 8, 18),
            "https://arxiv.org/abs/nucl-ex/0408020v1",
            "https://arxiv.org/pdf/nucl-ex/0408020v1",
        ),
        (
            API_2025_11,
            "1610.08734",
            date(2016, 10, 27),
            "https://arxiv.org/abs/1610.08734v3",
            "https://arxiv.org/pdf/1610.08734v3",
        ),
    ],
)
async def test_export_api_pdf_and_abs_links(
    capture: Path, arxiv_id: str, day: date, abs_url: str, pdf_url: str
) -> None:
    papers = by_id(await FeedSource(str(capture)).fetch(day))

    paper = papers[arxiv_id]
    assert paper.abs_url == abs_url
    assert paper.pdf_url == pdf_url
    assert paper.arxiv_abs_url == abs_url and paper.arxiv_pdf_url == pdf_url
    assert paper.announce_type is None  # the API has none: kept despite the default filter


async def test_export_api_2025_08_fields_and_date_rule() -> None:
    source = FeedSource(str(API_2025_08))

    papers = await source.fetch(date(2025, 7, 9))

    (paper,) = papers  # only the entry *published* that UTC day
    assert paper.arxiv_id == "2507.06488"
    assert paper.title == (
        "High Proton Conductivity of HxWO3 at Intermediate Temperatures: Unlocking Its "
        "Application as a Mixed Ionic-Electronic Conductor"
    )
    assert paper.abstract.startswith("Hydrogen tungsten bronzes (HxWO3), known for their")
    assert paper.authors == ("Rantaro Matsuo", "Tomoyuki Yamasaki", "Takahisa Omata")
    assert paper.published_at == datetime(2025, 7, 9, 2, 18, 6, tzinfo=UTC)
    assert "\n" not in paper.abstract and not paper.abstract.startswith(" ")
    old = by_id(await source.fetch(date(1994, 11, 8)))
    assert list(old) == ["hep-ph/9411242"]
    assert old["hep-ph/9411242"].title == (
        "Proton-ring and Electron-linac Collider (PRELC) as a (first) TeV-rangeelectron-proton "
        "or photon-proton collider"
    )
    assert old["hep-ph/9411242"].authors == ("Raimo Vuopionperä",)


async def test_export_api_2025_11_authors_are_one_per_element() -> None:
    papers = by_id(await FeedSource(str(API_2025_11)).fetch(date(2012, 5, 30)))

    # Several <author> elements: never split further (no comma-splitting of "H. -W. Hammer").
    assert papers["1205.6628"].authors == ("I. T. Lorenz", "H. -W. Hammer", "Ulf-G. Meißner")


async def test_export_api_empty_result_is_an_empty_list() -> None:
    assert await FeedSource(str(API_EMPTY)).fetch(date(2025, 11, 11)) == []


# --- RSS 2.0 and RSS 1.0 -----------------------------------------------------------------------


async def test_rss2_over_http(server: LocalHTTPServer) -> None:
    server.add("/rss/cs.AI", file=RSS2, content_type=RSS)
    source = FeedSource(server.url("/rss/cs.AI"), options=FAST)

    papers = await source.fetch(date(2026, 8, 20))

    assert ids(papers) == ["2608.19197", "2608.20011"]  # default: new only
    spade, abstention = papers
    assert spade.authors[:3] == ("Bo Liu", "Simon Yu", "Yiding Jiang") and len(spade.authors) == 18
    assert spade.abstract == (
        "Continuous self-improvement requires an ever-expanding pool of self-generated, "
        "diverse, adaptive goals."
    )
    assert abstention.authors == ("Maria Anderson", "José García", "Ola Nordmann")
    assert abstention.abstract == (
        "Tool-using agents often answer when they should abstain. "
        "We calibrate abstention with conformal risk control."
    )
    assert abstention.published_at == datetime(2026, 8, 20, 4, tzinfo=UTC)
    assert spade.source == f"feed:{server.url('/rss/cs.AI')}"


async def test_rss2_types_from_spec() -> None:
    source = FeedSource.from_spec(f"feed:{RSS2}#types=new+cross+replace")

    papers = await source.fetch(date(2026, 8, 20))

    assert [(p.arxiv_id, p.announce_type) for p in papers] == [
        ("2608.19197", "new"),
        ("2608.18565", "cross"),
        ("2608.20011", "new"),
        ("2607.11111", "replace"),
    ]
    assert source.name == f"feed:{RSS2}#types=new+cross+replace"


async def test_rss1_legacy_arxiv_feed() -> None:
    source = FeedSource(RSS1.as_uri(), types=ALL)  # file:// URL

    # Items have no dates; the channel's dc:date 2024-01-03T20:30-05:00 is 2024-01-04 UTC.
    assert await source.fetch(date(2024, 1, 3)) == []
    papers = by_id(await source.fetch(date(2024, 1, 4)))

    moe = papers["2401.00001"]
    assert moe.title == "Sparse Mixtures of Experts Are Domain Generalizers"
    assert moe.authors == ("Bo Li", "Yifei Yang")
    assert moe.abstract == (
        "We study sparse mixture-of-experts models & their robustness to domain shift."
    )
    assert moe.announce_type == "new"
    assert moe.published_at is None
    assert papers["2312.99999"].announce_type == "replace"
    assert papers["2312.99999"].title == "A Note on Gradient Clipping"
    assert papers["2401.00002"].announce_type == "cross"
    assert papers["2401.00002"].authors == ("Richard Roe", "John Smith, Jr.")
    default = await FeedSource(str(RSS1)).fetch(date(2024, 1, 4))
    assert ids(default) == ["2401.00001"]


# --- broken feeds ------------------------------------------------------------------------------


async def test_truncated_feed_is_used_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    content = RSS_ATOM.read_bytes()
    cut = tmp_path / "cut.xml"
    cut.write_bytes(content[: content.index(b"<id>oai:arXiv.org:2508.13434v1") + 20])

    with caplog.at_level(logging.WARNING, logger="digest.sources.feed"):
        papers = await FeedSource(str(cut), types=ALL).fetch(date(2025, 8, 20))

    assert ids(papers) == ["2508.13426", "2508.13428", "2508.13429"]
    assert any("is not well-formed" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"<html><body><p>Service unavailable</p></body></html>", "not an RSS or Atom feed"),
        (b'{"papers": []}', "not an RSS or Atom feed (not well-formed (invalid token))"),
        (b"", "not an RSS or Atom feed"),
        (
            b'<rss version="2.0"><channel><title>t</title>'
            b"<item><title>a</title><link>https://example.org/a</link></item>"
            b"<item><title>b</title><guid>b</guid></item></channel></rss>",
            "none of the 2 entries is usable (2 without an arXiv id)",
        ),
    ],
)
async def test_unusable_documents_are_source_errors(
    tmp_path: Path, content: bytes, problem: str
) -> None:
    path = tmp_path / "feed.xml"
    path.write_bytes(content)

    with pytest.raises(SourceError) as info:
        await FeedSource(str(path)).fetch(date(2025, 8, 20))

    assert str(info.value).startswith(f"source feed:{path}: {path}: {problem}")
    assert "\n" not in str(info.value)


async def test_missing_local_file(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="cannot read: No such file or directory") as info:
        await FeedSource(str(tmp_path / "none.xml")).fetch(date(2025, 8, 20))

    assert isinstance(info.value.__cause__, FileNotFoundError)


async def test_http_404_not_retried_and_502_retried(server: LocalHTTPServer) -> None:
    server.add("/bad", status=502)

    with pytest.raises(SourceError, match="HTTP 404"):
        await FeedSource(server.url("/missing"), options=FAST).fetch(date(2025, 8, 20))
    with pytest.raises(SourceError, match="failed after 2 attempts: HTTP 502"):
        await FeedSource(server.url("/bad"), options=FAST).fetch(date(2025, 8, 20))

    assert server.count("/missing") == 1
    assert server.count("/bad") == 2


# --- conditional GET -----------------------------------------------------------------------


async def test_304_reuses_the_cached_copy(server: LocalHTTPServer) -> None:
    route = server.add("/atom/cs.AI", file=RSS_ATOM, content_type=ATOM, etag='"v1"')
    source = FeedSource(server.url("/atom/cs.AI"), options=FAST)

    first = await source.fetch(date(2025, 8, 20))
    route.body = b"not a feed any more: must not be read after a 304"
    second = await source.fetch(date(2025, 8, 20))

    assert second == first and ids(second) == ["2508.14001", "2508.14002"]
    assert [r.status for r in server.requests] == [200, 304]
    assert "if-none-match" not in server.requests[0].headers
    assert server.requests[1].headers["if-none-match"] == '"v1"'


async def test_new_etag_replaces_the_cached_copy(server: LocalHTTPServer) -> None:
    route = server.add("/rss", file=RSS_ATOM, content_type=ATOM, etag='"v1"')
    source = FeedSource(server.url("/rss"), types=ALL, options=FAST)
    await source.fetch(date(2025, 8, 20))

    route.body, route.etag = RSS2.read_bytes(), '"v2"'
    changed = await source.fetch(date(2026, 8, 20))
    again = await source.fetch(date(2026, 8, 20))

    assert ids(changed) == ids(again) == ["2608.19197", "2608.18565", "2608.20011", "2607.11111"]
    assert [r.status for r in server.requests] == [200, 200, 304]
    assert server.requests[2].headers["if-none-match"] == '"v2"'


async def test_last_modified_validator(server: LocalHTTPServer) -> None:
    stamp = "Wed, 20 Aug 2025 04:00:20 GMT"
    server.add("/feed", file=RSS_ATOM, content_type=ATOM, last_modified=stamp)
    source = FeedSource(server.url("/feed"), options=FAST)

    await source.fetch(date(2025, 8, 20))
    papers = await source.fetch(date(2025, 8, 20))

    assert ids(papers) == ["2508.14001", "2508.14002"]
    assert server.requests[1].headers["if-modified-since"] == stamp
    assert [r.status for r in server.requests] == [200, 304]


async def test_an_external_cache_is_used_and_filled(server: LocalHTTPServer) -> None:
    url = server.url("/feed")
    cache = MemoryFeedCache()  # stands for one persisted by the state store
    cache.put(url, '"stored"', None, RSS_ATOM.read_bytes())
    server.add("/feed", b"<never sent/>", content_type=ATOM, etag='"stored"')

    papers = await FeedSource(url, cache=cache, options=FAST).fetch(date(2025, 8, 20))

    assert ids(papers) == ["2508.14001", "2508.14002"]
    assert [r.status for r in server.requests] == [304]

    other = MemoryFeedCache()
    server.add("/other", file=RSS2, content_type=RSS, etag='"o1"')
    await FeedSource(server.url("/other"), cache=other, options=FAST).fetch(date(2026, 8, 20))
    assert other.get(server.url("/other")) == ('"o1"', None, RSS2.read_bytes())


async def test_no_validators_no_caching(server: LocalHTTPServer) -> None:
    server.add("/plain", file=RSS_ATOM, content_type=ATOM)
    cache = MemoryFeedCache()
    source = FeedSource(server.url("/plain"), cache=cache, options=FAST)

    await source.fetch(date(2025, 8, 20))
    await source.fetch(date(2025, 8, 20))

    assert cache.get(server.url("/plain")) is None
    assert [r.status for r in server.requests] == [200, 200]
    assert "if-none-match" not in server.requests[1].headers


# --- spec, ids, authors ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "url", "types"),
    [
        ("feed:https://rss.arxiv.org/atom/cs.AI", "https://rss.arxiv.org/atom/cs.AI", {"new"}),
        ("feed:https://x/rss#types=new+cross", "https://x/rss", {"new", "cross"}),
        ("feed:https://x/rss#types=new,replace-cross", "https://x/rss", {"new", "replace-cross"}),
        ("feed:https://x/rss#types=all", "https://x/rss", None),
        ("feed:https://x/page#top", "https://x/page#top", {"new"}),  # not options: kept
        ("feed:./feeds/cs.AI.xml", "./feeds/cs.AI.xml", {"new"}),
    ],
)
def test_parse_feed_spec(spec: str, url: str, types: set[str] | None) -> None:
    parsed = parse_feed_spec(spec)

    assert parsed.url == url
    assert parsed.types == (frozenset(types) if types is not None else None)


def test_parse_feed_spec_errors() -> None:
    with pytest.raises(ConfigError, match="unknown announcement type 'crosss'"):
        parse_feed_spec("feed:https://x#types=new+crosss")
    with pytest.raises(ConfigError, match="'types=' is empty"):
        parse_feed_spec("feed:https://x#types=")
    assert {"new"} == DEFAULT_ANNOUNCE_TYPES


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2405.18407", "2405.18407"),
        ("2405.18407v12", "2405.18407"),
        ("0704.0001", "0704.0001"),
        ("oai:arXiv.org:2508.13426v1", "2508.13426"),
        ("arXiv:2508.13426v1", "2508.13426"),
        ("http://arxiv.org/abs/astro-ph/9904306v1", "astro-ph/9904306"),
        ("https://arxiv.org/pdf/2508.13426v1", "2508.13426"),
        ("hep-th/9901001", "hep-th/9901001"),
        ("math.GT/0309136v2", "math.GT/0309136"),
        ("oai:arXiv.org:cond-mat/0102536", "cond-mat/0102536"),
        ("not-an-id", None),
        ("https://example.org/abs/2401.00001", None),
    ],
)
def test_normalize_arxiv_id(raw: str, expected: str | None) -> None:
    assert normalize_arxiv_id(raw) == expected


@pytest.mark.parametrize(
    ("joined", "names"),
    [
        ("A. Smith, B. Jones, C. Wu", ["A. Smith", "B. Jones", "C. Wu"]),
        ("A. Smith, B. Jones and C. Wu", ["A. Smith", "B. Jones", "C. Wu"]),
        ("A. Smith, B. Jones, and C. Wu", ["A. Smith", "B. Jones", "C. Wu"]),
        ("Alexander Anderson and Sandra Andrews", ["Alexander Anderson", "Sandra Andrews"]),
        ("Fernando Candela", ["Fernando Candela"]),
        ("John Smith, Jr., Jane Doe", ["John Smith, Jr.", "Jane Doe"]),
        ("  A.  Smith ,\n B. Jones  ", ["A. Smith", "B. Jones"]),
    ],
)
def test_split_authors(joined: str, names: list[str]) -> None:
    assert split_authors(joined) == names
