"""A reader's library (issue 23): export files, author lists fetched from loopback APIs, and the
``library``/``orcid``/``arxiv_author``/``semantic_scholar`` options, with hostile input."""

from __future__ import annotations

import json
import logging
import textwrap
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from digest.errors import ConfigError, SourceError
from digest.ranking.authors import fetch_author
from digest.ranking.learning import ReaderLearner
from digest.ranking.library import (
    MAX_LIBRARY_ENTRIES,
    LibraryEntry,
    parse_library,
    read_library,
)
from digest.ranking.readercache import ReaderCache
from digest.subscribers import Subscriber, load_subscribers
from tests.conftest import FIXTURES
from tests.factories import make_settings
from tests.httpserver import ATOM, LocalHTTPServer

BIBTEX = r"""
@article{vaswani2017,
  title = {Attention Is {All} You Need},
  author = {Vaswani, Ashish and Shazeer, Noam},
  year = {2017},
  abstract = {The dominant sequence transduction models are based on recurrent networks.},
  eprint = {1706.03762},
  archivePrefix = {arXiv},
  date-added = {2024-03-05 10:00:00 +0000},
}

@inproceedings{notitle, author = {Nobody}, year = 2020}

@misc{gpt3,
  title = {Language Models are Few-Shot Learners},
  year = 2020,
  url = {https://arxiv.org/abs/2005.14165v4},
}
"""
RIS = """TY  - JOUR
TI  - Quadruped locomotion trained in simulation
AB  - Walking controllers for a four-legged robot.
PY  - 2023
UR  - https://arxiv.org/abs/2306.00001
ER  -

TY  - CONF
T1  - A title-only conference paper
ER  -
"""
CSL = [
    {
        "id": "http://arxiv.org/abs/2406.09246",
        "type": "article",
        "title": "OpenVLA: An Open-Source Vision-Language-Action Model",
        "abstract": "Large policies pretrained on robot demonstrations.",
        "issued": {"date-parts": [[2024, 6, 13]]},
        "accessed": {"date-parts": [[2025, 1, 2]]},
        "URL": "http://arxiv.org/abs/2406.09246",
    },
    {"type": "book", "title": "  Reinforcement   Learning: An Introduction "},
    {"type": "article"},
]
NOW = datetime(2026, 8, 20, 7, 0, tzinfo=UTC)


def write(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(textwrap.dedent(data), encoding="utf-8")
    return path


# -- the three export formats ------------------------------------------------------------------


def test_bibtex_entries_keep_title_abstract_dates_and_arxiv_id(tmp_path: Path) -> None:
    entries = read_library(write(tmp_path, "lib.bib", BIBTEX))
    assert entries == [
        LibraryEntry(
            title="Attention Is All You Need",
            abstract="The dominant sequence transduction models are based on recurrent networks.",
            year=2017,
            added=date(2024, 3, 5),
            arxiv_id="1706.03762",
        ),
        LibraryEntry(
            title="Language Models are Few-Shot Learners", year=2020, arxiv_id="2005.14165"
        ),
    ]


def test_ris_and_csl_json_entries(tmp_path: Path) -> None:
    ris = read_library(write(tmp_path, "lib.ris", RIS))
    assert [(e.title, e.year, e.arxiv_id, bool(e.abstract)) for e in ris] == [
        ("Quadruped locomotion trained in simulation", 2023, "2306.00001", True),
        ("A title-only conference paper", None, None, False),
    ]
    csl = read_library(write(tmp_path, "lib.json", json.dumps(CSL)))
    assert [(e.title, e.year, e.added, e.arxiv_id) for e in csl] == [
        (
            "OpenVLA: An Open-Source Vision-Language-Action Model",
            2024,
            date(2025, 1, 2),
            "2406.09246",
        ),
        ("Reinforcement Learning: An Introduction", None, None, None),
    ]


# -- hostile files: one line naming the file (and line), nothing parsed ------------------------


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("broken.bib", "@article{a,\n  title = {Open\n@misc{b, title={B}}\n", "broken.bib:1: "),
        ("broken.json", '[{"title": "a"},\n {"title": }]', "broken.json:2: not JSON"),
        ("object.json", '{"title": "a"}', "CSL-JSON is a list"),
        ("cut.ris", "TY  - JOUR\nTI  - a\nER  -\n\nTY  - JOUR\nTI  - b\n", "cut.ris:5: a record"),
        ("text.ris", "just some text\n", "cut.ris" if False else "text.ris:1: no RIS records"),
        ("latin1.bib", "@misc{a, title={caf\xe9}}".encode("latin-1"), "latin1.bib:1: not UTF-8"),
        ("nul.bib", b"@misc{a, title={x}}\x00", "a NUL byte"),
        ("notes.txt", "anything", "unknown library format"),
        ("empty.bib", "% only a comment\n@comment{nothing}\n", "no BibTeX entries"),
    ],
)
def test_a_broken_library_file_is_one_clear_error(
    tmp_path: Path, name: str, data: str | bytes, expected: str
) -> None:
    path = tmp_path / name
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        read_library(path)
    message = str(info.value)
    assert expected in message, message
    assert str(path) in message and "\n" not in message and "Traceback" not in message


def test_a_20_mb_library_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.bib"
    with path.open("wb") as f:
        f.truncate(20 * 2**20)  # sparse: 20 MB of NULs, never parsed
    with pytest.raises(ConfigError, match=r"huge\.bib: 20,971,520 bytes; a library file may"):
        read_library(path)


def test_too_many_entries_is_refused() -> None:
    items = [{"title": f"paper {i}"} for i in range(MAX_LIBRARY_ENTRIES + 1)]
    with pytest.raises(ConfigError, match="5,001 entries"):
        parse_library(json.dumps(items).encode(), name="big.json", fmt="csl-json")


# -- the subscriber options, with file:line errors --------------------------------------------


def problems(tmp_path: Path, entry: str) -> list[str]:
    path = write(
        tmp_path,
        "subscribers.yaml",
        "subscribers:\n  - email: ada@example.org\n" + textwrap.indent(entry, "    "),
    )
    with pytest.raises(ConfigError) as info:
        load_subscribers(path)
    return info.value.problems


def test_library_options_load(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "subscribers.yaml",
        """\
        subscribers:
          - email: ada@example.org
            library: zotero.bib
            orcid: https://orcid.org/0000-0002-1825-0097
            arxiv_author: Ada Lovelace
            semantic_scholar: 1741101
          - email: bob@example.org
            library: [a.bib, b.ris, c.json]
            only_matching: true
        """,
    )
    ada, bob = load_subscribers(path).subscribers
    assert ada.library == ("zotero.bib",)
    assert (ada.orcid, ada.arxiv_author, ada.semantic_scholar) == (
        "0000-0002-1825-0097",
        "Ada Lovelace",
        "1741101",
    )
    assert bob.library == ("a.bib", "b.ris", "c.json") and bob.only_matching


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("library: 42\n", "must be a file name or a list of them"),
        ('library: ""\n', "empty library path"),
        ("library: [papers.pdf]\n", "unknown library format"),
        ("library: [a.bib, a.bib]\n", "listed twice"),
        ("library: [" + ", ".join(f"f{i}.bib" for i in range(11)) + "]\n", "at most 10"),
        ('library: ["a\\u0007.bib"]\n', "control characters"),
        ("orcid: 0000-0002-1825-0096\n", "check digit is wrong"),
        ("orcid: ada\n", "is not an ORCID iD"),
        ("semantic_scholar: abc\n", "not a Semantic Scholar author id"),
        ('arxiv_author: ""\n', "empty author name"),
    ],
)
def test_hostile_library_options_name_file_line_and_field(
    tmp_path: Path, entry: str, expected: str
) -> None:
    found = problems(tmp_path, entry)
    assert len(found) == 1, found
    assert found[0].startswith("subscribers.yaml:3:") or str(tmp_path) in found[0], found
    assert expected in found[0], found
    field = entry.split(":", 1)[0]
    assert field in found[0], found


# -- author lists: real API shapes from a loopback server ------------------------------------

ORCID_WORKS = {
    "last-modified-date": {"value": 1718000000000},
    "group": [
        {
            "external-ids": {"external-id": []},
            "work-summary": [
                {
                    "put-code": 1,
                    "title": {"title": {"value": "Language Models are Few-Shot Learners"}},
                    "external-ids": {
                        "external-id": [
                            {
                                "external-id-type": "doi",
                                "external-id-value": "10.48550/arXiv.2005.14165",
                            }
                        ]
                    },
                    "type": "preprint",
                    "publication-date": {"year": {"value": "2020"}, "month": {"value": "05"}},
                }
            ],
        },
        {
            "work-summary": [
                {
                    "title": {"title": {"value": "A journal article"}},
                    "external-ids": {"external-id": []},
                    "publication-date": None,
                }
            ]
        },
    ],
    "path": "/0000-0002-1825-0097/works",
}
S2_PAPERS = {
    "offset": 0,
    "data": [
        {
            "paperId": "649def34f8be52c8b66281af98ae884c09aef38b",
            "title": "Attention is All you Need",
            "abstract": "The dominant sequence transduction models are based on recurrent nets.",
            "year": 2017,
            "externalIds": {"ArXiv": "1706.03762", "DOI": "10.5555/3295222", "CorpusId": 13756489},
        },
        {"paperId": "x", "title": None, "abstract": None, "year": None, "externalIds": {}},
    ],
}


def api_settings(server: LocalHTTPServer, tmp_path: Path, **more: object) -> object:
    return make_settings(
        state_path=tmp_path / "state.sqlite3",
        subscribers=tmp_path / "subscribers.yaml",
        arxiv_api_url=server.url("/api/query"),
        orcid_api_url=server.url("/v3.0"),
        semantic_scholar_api_url=server.url("/graph/v1"),
        http_retries=0,
        **more,
    )


async def test_each_author_api_is_read_in_its_real_shape(tmp_path: Path) -> None:
    with LocalHTTPServer() as server:
        server.add("/v3.0/0000-0002-1825-0097/works", body=json.dumps(ORCID_WORKS).encode())
        server.add("/graph/v1/author/1741101/papers", body=json.dumps(S2_PAPERS).encode())
        server.add(
            "/api/query", file=FIXTURES / "feeds" / "arxiv-api-query-2025-11.xml", content_type=ATOM
        )
        settings = api_settings(server, tmp_path)
        orcid = await fetch_author("orcid", "0000-0002-1825-0097", settings)  # type: ignore[arg-type]
        s2 = await fetch_author("semantic_scholar", "1741101", settings)  # type: ignore[arg-type]
        arxiv = await fetch_author("arxiv_author", "Ada Lovelace", settings)  # type: ignore[arg-type]
        targets = [r.target for r in server.requests]
    assert [(e.title, e.year, e.arxiv_id, e.abstract) for e in orcid] == [
        ("Language Models are Few-Shot Learners", 2020, "2005.14165", ""),
        ("A journal article", None, None, ""),
    ]
    assert [(e.title, e.arxiv_id, e.year) for e in s2] == [
        ("Attention is All you Need", "1706.03762", 2017)
    ]
    assert arxiv and all(e.title and e.abstract for e in arxiv)
    assert any("fields=title%2Cabstract%2Cyear%2CexternalIds" in t for t in targets)
    assert any("search_query=au%3A%22Ada+Lovelace%22" in t for t in targets)


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ({"status": 404, "body": b'{"response-code":404}'}, "HTTP 404"),
        ({"body": b"<html>not json</html>"}, "not JSON"),
        ({"body": b'{"errors": []}'}, "no 'group' list"),
        ({"size": 30 * 2**20}, "bytes"),
        ({"body": b"{" + b" " * 200, "trickle_s": 0.05}, "no complete answer"),
    ],
)
async def test_a_hostile_author_api_is_one_source_error(
    tmp_path: Path, route: dict[str, object], expected: str
) -> None:
    with LocalHTTPServer() as server:
        server.add("/v3.0/0000-0002-1825-0097/works", **route)  # type: ignore[arg-type]
        settings = api_settings(server, tmp_path, http_deadline=1.0, http_max_bytes=2**20)
        with pytest.raises(SourceError) as info:
            await fetch_author("orcid", "0000-0002-1825-0097", settings)  # type: ignore[arg-type]
    assert expected in str(info.value)


async def test_author_lists_are_fetched_weekly_and_a_failure_keeps_the_last(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sub = Subscriber(email="ada@example.org", orcid="0000-0002-1825-0097")
    with LocalHTTPServer() as server:
        path = "/v3.0/0000-0002-1825-0097/works"
        server.add(path, body=json.dumps(ORCID_WORKS).encode())
        settings = api_settings(server, tmp_path)
        cache = ReaderCache(tmp_path / "reader.sqlite3")
        await ReaderLearner(settings, cache, now=NOW).refresh([sub])  # type: ignore[arg-type]
        await ReaderLearner(settings, cache, now=NOW + timedelta(days=6)).refresh([sub])  # type: ignore[arg-type]
        assert server.count(path) == 1
        server.add(path, status=404)
        with caplog.at_level(logging.WARNING):
            learner = ReaderLearner(settings, cache, now=NOW + timedelta(days=8))  # type: ignore[arg-type]
            await learner.refresh([sub])
        assert server.count(path) == 2
    assert "orcid:0000-0002-1825-0097: not fetched" in caplog.text
    assert [e.title for e in learner.entries(sub)] == [
        "Language Models are Few-Shot Learners",
        "A journal article",
    ]


async def test_an_orcid_that_404s_changes_nothing(tmp_path: Path) -> None:
    sub = Subscriber(email="ada@example.org", orcid="0000-0002-1825-0097")
    with LocalHTTPServer() as server:
        server.add("/v3.0/0000-0002-1825-0097/works", status=404)
        cache = ReaderCache(tmp_path / "reader.sqlite3")
        learner = ReaderLearner(api_settings(server, tmp_path), cache, now=NOW)  # type: ignore[arg-type]
        await learner.refresh([sub])
    assert learner.entries(sub) == []
    assert cache.library_stamp("orcid:0000-0002-1825-0097") is None
