"""The web half of issue 23 (the in-process app, httpx's ASGI transport): interests, authors and
an author's iD on the preferences page and the sign-up form, library uploads (and hostile ones:
20 MB, broken, not UTF-8, an ORCID that 404s or trickles: a clear page, nothing changed), the
onboarding page that asks for ~10 ratings, and "what shapes your ranking" with removal and
reset."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from digest.core import Digest
from digest.message import preferences_url_for
from digest.models import Feedback
from digest.settings import Settings
from digest.state import open_state
from digest.tokens import Purpose, TokenSigner
from digest.web.app import create_app
from digest.web.reader import MAX_UPLOAD_BYTES
from digest.web.security import MAX_BODY_BYTES
from tests.conftest import FIXTURES
from tests.factories import SECRET_KEY, FakeClock, make_settings
from tests.httpserver import LocalHTTPServer
from tests.webserver import listed

PUBLIC = "https://papers.example.org"
NOW = datetime(2026, 8, 21, 8, 0, tzinfo=UTC)
"""The day after the fixture day 2026-08-20 (15 papers): the onboarding page's candidates."""
ADA = "ada@example.org"
ORCID = "0000-0002-1825-0097"
SUBSCRIBERS = """\
subscribers:
  - email: ada@example.org
    name: Ada
    keywords: [robot*]
"""
BIB = """\
@article{finn2017,
  title = {Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks},
  abstract = {We propose an algorithm for meta-learning that is model-agnostic.},
  year = {2017},
  eprint = {1703.03400},
}
@article{levine2016,
  title = {End-to-End Training of Deep Visuomotor Policies},
  abstract = {Policy search methods can allow robots to learn control policies.},
  year = {2016},
}
"""


@pytest.fixture
def settings(tmp_path: Path, state_url: str) -> Iterator[Settings]:
    (tmp_path / "subscribers.yaml").write_text(SUBSCRIBERS, encoding="utf-8")
    with LocalHTTPServer() as api:
        api.add(f"/v3.0/{ORCID}/works", file=FIXTURES / "orcid" / "works.json")
        api.add("/v3.0/0000-0001-5109-3700/works", status=404, body=b'{"response-code":404}')
        api.add("/v3.0/0000-0002-9079-593X/works", body=b"{" + b" " * 400, trickle_s=0.05)
        yield make_settings(
            subscribers=tmp_path / "subscribers.yaml",
            state_url=state_url,
            outbox=tmp_path / "outbox",
            sources=f"file:{FIXTURES / 'hf-daily-papers'}",
            secret_key=SECRET_KEY,
            public_url=PUBLIC,
            sender="Daily Papers <papers@example.org>",
            orcid_api_url=api.url("/v3.0"),
            http_retries=0,
            http_deadline=1.0,
        )


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, now=FakeClock(NOW))
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url=PUBLIC
        ) as http:
            yield http
    finally:
        app.state.web.close()


def prefs_path(settings: Settings, address: str = ADA) -> str:
    url = preferences_url_for(settings, address)
    assert url is not None and url.startswith(PUBLIC)
    return url[len(PUBLIC) :]


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
    assert found, page.text
    return found.group(1)


def form_of(page: httpx.Response) -> dict[str, str]:
    """The preferences form's fields as the page filled them in (text inputs, selects,
    text areas), and its CSRF field."""
    fields = dict(
        re.findall(r'<input type="(?:text|number)" id="(\w+)" name="\1" value="([^"]*)"', page.text)
    )
    fields |= dict(re.findall(r'<textarea id="(\w+)" name="\1"[^>]*>([^<]*)</textarea>', page.text))
    for name, body in re.findall(
        r'<select id="(\w+)" name="\1"[^>]*>(.*?)</select>', page.text, re.S
    ):
        chosen = re.search(r'<option value="([^"]*)" selected>', body)
        fields[name] = chosen.group(1) if chosen else ""
    fields["csrf"] = csrf_of(page)
    return {k: v.replace("&#34;", '"').replace("&amp;", "&") for k, v in fields.items()}


def snapshot(settings: Settings) -> tuple[bytes, list[str]]:
    """The subscribers file's bytes and the uploaded files: what must not change."""
    folder = settings.subscribers.parent / "libraries"
    files = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    return settings.subscribers.read_bytes(), files


def events(settings: Settings) -> list[tuple[str, str, Any]]:
    with open_state(settings.effective_state_url) as store:
        return [(e.action, e.subscriber, e.detail) for e in store.events()]


async def upload(
    client: httpx.AsyncClient, path: str, name: str, data: bytes, csrf: str
) -> httpx.Response:
    return await client.post(
        f"{path}/library", data={"csrf": csrf}, files={"library": (name, data, "text/plain")}
    )


# -- interests, authors, an author's iD ------------------------------------------------------


async def test_preferences_save_interests_authors_and_an_orcid_fetched_once(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    path = prefs_path(settings)
    page = await client.get(path)
    assert page.status_code == 200
    assert 'id="interests"' in page.text and 'id="orcid"' in page.text
    form = form_of(page)
    form["interests"] = "robots that learn from video\r\nsim-to-real transfer, for legged robots"
    form["authors"] = "Chelsea Finn\nSergey Levine"
    form["orcid"] = f"https://orcid.org/{ORCID}"
    form["arxiv_author"] = "Ada Lovelace"  # no DIGEST_ARXIV_API_URL: saved, not fetched
    saved = await client.post(path, data=form)
    assert saved.status_code == 200, saved.text
    assert "Saved." in saved.text
    ada = listed(settings, ADA)
    assert ada is not None
    assert ada.interests == (
        "robots that learn from video",
        "sim-to-real transfer, for legged robots",
    )
    assert ada.authors == ("Chelsea Finn", "Sergey Levine")
    assert ada.orcid == ORCID  # the URL written as the bare iD
    assert ada.arxiv_author == "Ada Lovelace"
    with Digest(settings) as digest:  # fetched once, into the reader cache the sender reads
        found = digest.ranking.learner.cache.library(f"orcid:{ORCID}")
    assert found is not None and [e.arxiv_id for e in found[3]][:1] == ["2005.14165"]
    assert ("preferences", ADA) in [(a, s) for a, s, _ in events(settings)]


@pytest.mark.parametrize(
    ("orcid", "expected"),
    [
        ("0000-0001-5109-3700", "HTTP 404"),  # an iD ORCID does not know
        ("0000-0002-9079-593X", "no complete answer"),  # a server that trickles
        ("0000-0002-1825-0096", "check digit is wrong"),  # not an iD at all
    ],
)
async def test_an_orcid_that_404s_or_trickles_is_an_error_and_nothing_changes(
    settings: Settings, client: httpx.AsyncClient, orcid: str, expected: str
) -> None:
    path = prefs_path(settings)
    form = form_of(await client.get(path))
    before = snapshot(settings)
    form["orcid"] = orcid
    form["interests"] = "robots"
    page = await client.post(path, data=form)
    assert page.status_code == 422
    error = re.search(r'<span class="error" id="orcid-error">([^<]+)</span>', page.text)
    assert error is not None and expected in error.group(1), page.text
    assert 'value="' + orcid + '"' in page.text  # what was typed stays in the field
    assert snapshot(settings) == before
    assert [a for a, _, _ in events(settings)] == []


# -- library uploads ---------------------------------------------------------------------------


async def test_a_library_upload_is_parsed_kept_listed_and_removable(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    path = prefs_path(settings)
    csrf = csrf_of(await client.get(path))
    page = await upload(client, path, "My Zotero (2026).bib", BIB.encode(), csrf)
    assert page.status_code == 200, page.text
    assert "Library added: 2 papers" in page.text
    ada = listed(settings, ADA)
    assert ada is not None and len(ada.library) == 1
    (stored,) = ada.library
    assert re.fullmatch(r"libraries/[0-9a-f]{16}-My-Zotero-2026\.bib", stored), stored
    assert (settings.subscribers.parent / stored).read_bytes() == BIB.encode()
    assert "My-Zotero-2026.bib" in page.text
    # The same file again: nothing new.
    again = await upload(client, path, "My Zotero (2026).bib", BIB.encode(), csrf)
    assert again.status_code == 200
    assert listed(settings, ADA).library == (stored,)  # type: ignore[union-attr]
    # The sender reads it as any library: file, line and entries.
    with Digest(settings) as digest:
        entries = digest.ranking.learner.entries(ada)
    assert [e.arxiv_id for e in entries] == ["1703.03400", None]
    # Removed: off the list, and the file (nobody else lists it) deleted.
    removed = await client.post(f"{path}/library/remove", data={"csrf": csrf, "path": stored})
    assert removed.status_code == 200 and "Library file removed" in removed.text
    assert listed(settings, ADA).library == ()  # type: ignore[union-attr]
    assert not (settings.subscribers.parent / stored).exists()


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("broken.bib", b"@article{a,\n  title = {Open\n", "broken.bib:"),
        ("latin1.bib", "@article{a, title={Caf\xe9}}".encode("latin-1"), "not UTF-8"),
        ("nul.bib", b"@article{a, title={A\x00B}}", "nul.bib"),
        ("empty.ris", b"", "Choose a library file"),
        ("library.pdf", b"%PDF-1.7", "unknown format"),
        ("", BIB.encode(), "Choose a library file"),
        ("notes.bib", b"just some text, no entries", "notes.bib"),
    ],
)
async def test_a_broken_upload_is_refused_with_its_reason_and_nothing_changes(
    settings: Settings, client: httpx.AsyncClient, name: str, data: bytes, expected: str
) -> None:
    path = prefs_path(settings)
    csrf = csrf_of(await client.get(path))
    before = snapshot(settings)
    page = await upload(client, path, name, data, csrf)
    assert page.status_code == 422, page.text
    error = re.search(r'<span class="error" id="library-error">([^<]+)</span>', page.text)
    assert error is not None and expected in error.group(1), page.text
    assert snapshot(settings) == before


async def test_a_20_mb_upload_gets_a_clear_page_and_nothing_changes(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    path = prefs_path(settings)
    csrf = csrf_of(await client.get(path))
    before = snapshot(settings)
    huge = b"@article{a, title={" + b"x" * (20 * 2**20) + b"}}"
    page = await upload(client, path, "huge.bib", huge, csrf)  # with its Content-Length
    assert page.status_code == 413
    assert (
        "<h1>" in page.text and "larger than 2 MB" in page.text and "Nothing was saved" in page.text
    )

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while it streams
        yield b'--b\r\nContent-Disposition: form-data; name="library"; filename="x.bib"\r\n\r\n'
        for _ in range(20):
            yield b"x" * 2**20

    streamed = await client.post(
        f"{path}/library",
        content=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=b"},
    )
    assert streamed.status_code == 413 and "larger than 2 MB" in streamed.text
    # Just under the limit is read (and refused for what it is, not for its size).
    near = await upload(client, path, "near.bib", b"%" * (MAX_UPLOAD_BYTES - 1000), csrf)
    assert near.status_code == 422
    assert snapshot(settings) == before


async def test_other_routes_keep_the_16_kib_body_limit(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    path = prefs_path(settings)
    form = form_of(await client.get(path))
    form["interests"] = "x" * (MAX_BODY_BYTES + 1)
    assert (await client.post(path, data=form)).status_code == 413
    files = {"library": ("a.bib", BIB.encode(), "text/plain")}
    on_prefs = await client.post(path, data={"csrf": form["csrf"]}, files=files)
    assert on_prefs.status_code == 400  # a file where no file is expected: refused


# -- onboarding: papers to rate ---------------------------------------------------------------


async def test_the_onboarding_page_offers_ten_papers_and_records_ratings(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    path = prefs_path(settings)
    page = await client.get(f"{path}/rate")
    assert page.status_code == 200
    assert "<script" not in page.text
    offered = re.findall(r'name="rate-([0-9.]+)" value="like"', page.text)
    assert len(offered) == 10 and len(set(offered)) == 10
    day = json.loads((FIXTURES / "hf-daily-papers" / "2026-08-20.json").read_text("utf-8"))
    assert set(offered) <= {item["paper"]["id"] for item in day}  # yesterday's 15 papers
    first, second, third = offered[:3]
    form = {
        "csrf": csrf_of(page),
        f"rate-{first}": "like",
        f"rate-{second}": "dislike",
        f"rate-{third}": "",  # skipped
        "rate-2401.99999": "like",  # not a paper this list knows: ignored
        "rate-../../etc": "like",  # not an id: ignored
        "other": "like",
    }
    saved = await client.post(f"{path}/rate", data=form)
    assert saved.status_code == 200
    assert "Saved 2 ratings" in saved.text
    with open_state(settings.effective_state_url) as store:
        fb = store.feedback(ADA)[ADA]
    assert fb.likes == (first,) and fb.dislikes == (second,)
    again = re.findall(r'name="rate-([0-9.]+)" value="like"', saved.text)
    assert first not in again and second not in again  # never offered twice


# -- what shapes the ranking ------------------------------------------------------------------


async def test_what_shapes_the_ranking_is_listed_each_removable_and_resettable(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    path = prefs_path(settings)
    csrf = csrf_of(await client.get(path))
    assert (await upload(client, path, "mine.bib", BIB.encode(), csrf)).status_code == 200
    rated = await client.get(f"{path}/rate")
    liked = re.findall(r'name="rate-([0-9.]+)" value="like"', rated.text)[0]
    await client.post(f"{path}/rate", data={"csrf": csrf, f"rate-{liked}": "like"})
    page = await client.get(path)
    items = re.findall(r'name="item" value="([^"]+)"', page.text)
    assert f"thumbs-up:{liked}" in items
    assert sum(i.startswith("library:") for i in items) == 2
    # Remove the 👍: the next send's feedback no longer has it (nor the model's signal).
    gone = await client.post(f"{path}/forget", data={"csrf": csrf, "item": f"thumbs-up:{liked}"})
    assert gone.status_code == 200 and "Removed." in gone.text
    assert f"thumbs-up:{liked}" not in re.findall(r'name="item" value="([^"]+)"', gone.text)
    with Digest(settings) as digest:
        assert liked not in digest.ranking.feedback().get(ADA, Feedback()).likes
    # Clicked again in an email: it counts again.
    signer = TokenSigner.from_settings(settings)
    token = signer.make(Purpose.FEEDBACK, ADA, data=f"like {liked}")
    feedback_page = await client.get(f"/f/{token}")
    await client.post(f"/f/{token}", data={"csrf": csrf_of(feedback_page)})
    with Digest(settings) as digest:
        assert liked in digest.ranking.feedback()[ADA].likes
    # Reset: every 👍/👎 and library entry stops shaping the ranking.
    reset = await client.post(f"{path}/reset", data={"csrf": csrf})
    assert reset.status_code == 200 and "Reset: 3 ratings and library papers" in reset.text
    assert re.findall(r'name="item" value="([^"]+)"', reset.text) == []
    with Digest(settings) as digest:
        assert digest.ranking.feedback().get(ADA, Feedback()).likes == ()
    actions = [(a, d) for a, _, d in events(settings) if a in ("forget", "reset")]
    assert actions == [("forget", {"item": f"thumbs-up:{liked}"}), ("reset", {"items": 3})]


async def test_a_forged_item_or_a_missing_csrf_changes_nothing(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    path = prefs_path(settings)
    csrf = csrf_of(await client.get(path))
    before = snapshot(settings)
    assert (await client.post(f"{path}/reset", data={"x": "y"})).status_code == 403
    assert (await client.post(f"{path}/forget", data={"item": "library:x"})).status_code == 403
    for item in ("", "nonsense", "like:2401.00001", "library:", "thumbs-up:"):
        page = await client.post(f"{path}/forget", data={"csrf": csrf, "item": item})
        assert page.status_code == 200
    remove = await client.post(f"{path}/library/remove", data={"csrf": csrf, "path": "../x"})
    assert remove.status_code == 200
    assert snapshot(settings) == before
    assert [a for a, _, _ in events(settings)] == []
    assert (await client.get("/preferences/not-a-token/rate")).status_code == 400


# -- sign-up -----------------------------------------------------------------------------------


async def test_a_signup_with_interests_authors_and_an_orcid_is_written_at_confirmation(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    home = await client.get("/")
    assert 'id="interests"' in home.text and 'id="orcid"' in home.text
    bad = await client.post(
        "/subscribe",
        data={"csrf": csrf_of(home), "email": "grace@example.org", "orcid": "0000-0002-1825-0096"},
    )
    assert bad.status_code == 422 and "check digit is wrong" in bad.text
    sent = await client.post(
        "/subscribe",
        data={
            "csrf": csrf_of(home),
            "email": "grace@example.org",
            "interests": "diffusion models for video\n",
            "authors": "Ada Lovelace",
            "orcid": ORCID,
        },
    )
    assert sent.status_code == 200
    assert listed(settings, "grace@example.org") is None
    with open_state(settings.effective_state_url) as store:
        (signup,) = [e for e in store.events("grace@example.org") if e.action == "signup-fields"]
    signer = TokenSigner.from_settings(settings)
    token = signer.make(Purpose.CONFIRM, "grace@example.org", data=signup.detail["signup"])
    page = await client.get(f"/confirm/{token}")
    confirmed = await client.post(f"/confirm/{token}", data={"csrf": csrf_of(page)})
    assert confirmed.status_code == 200 and "Rate ten recent papers" in confirmed.text
    grace = listed(settings, "grace@example.org")
    assert grace is not None
    assert grace.interests == ("diffusion models for video",)
    assert grace.authors == ("Ada Lovelace",) and grace.orcid == ORCID
