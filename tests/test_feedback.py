"""👍/👎 from the email: a real uvicorn app on loopback records the click; the next edition
uses it."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest

from digest.core import Digest
from digest.message import feedback_urls_for
from digest.models import Edition, Feedback, Paper
from digest.settings import Settings
from tests.factories import PUBLIC, SECRET_KEY, make_settings, messages, run_cli, write_day
from tests.webserver import csrf_of, running_app

MON, TUE = date(2024, 6, 10), date(2024, 6, 11)
ADA = "ada@example.org"
WALKER = Paper(
    arxiv_id="2406.10001",
    title="Quadruped locomotion policies trained in simulation run on the physical robot",
    abstract="We train walking controllers for a four-legged robot in a physics simulator "
    "with domain randomization and deploy them zero-shot on hardware.",
    upvotes=5,
)
POPULAR_MON = [
    Paper(
        arxiv_id=f"2406.1010{i}",
        title=title,
        abstract="We study language models on benchmark tasks and report accuracy.",
        upvotes=50 + i,
    )
    for i, title in enumerate(["A survey of prompt formats", "Tokenizer choices for chat"])
]
CLIMBER = Paper(
    arxiv_id="2406.20001",
    title="Legged robots learn to climb stairs in simulation and transfer to hardware",
    abstract="A quadruped robot policy trained with reinforcement learning in simulation "
    "climbs real stairs after sim-to-real transfer.",
    upvotes=3,
)
POPULAR_TUE = [
    Paper(
        arxiv_id=f"2406.2010{i}",
        title=title,
        abstract="We evaluate large language models on question answering datasets.",
        upvotes=40 + i,
    )
    for i, title in enumerate(
        ["Long context evaluation", "Chat model calibration", "Math word problems", "Code review"]
    )
]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    (tmp_path / "subscribers.yaml").write_text(
        f"subscribers:\n  - email: {ADA}\n    name: Ada\n    max_papers: 3\n", encoding="utf-8"
    )
    write_day(tmp_path / "papers", MON, [WALKER, *POPULAR_MON])
    write_day(tmp_path / "papers", TUE, [CLIMBER, *POPULAR_TUE])
    return make_settings(
        subscribers=tmp_path / "subscribers.yaml",
        state_path=tmp_path / "state.sqlite3",
        outbox=tmp_path / "outbox",
        sources=f"file:{tmp_path / 'papers'}",
        secret_key=SECRET_KEY,
        public_url=PUBLIC,
        sender="Daily Papers <papers@example.org>",
    )


def now() -> datetime:
    return datetime(2024, 6, 12, 12, tzinfo=UTC)


def text_of(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    content = part.get_content()
    assert isinstance(content, str)
    return content


async def send(settings: Settings, day: date) -> list[str]:
    with Digest(settings, now=now) as digest:
        subs = digest.load_subscribers().subscribers
        summary = await digest.send(Edition.daily(day), subs)
        assert summary.sent == 1, summary.errors
        return digest.store.delivery_papers(ADA, day.isoformat())


def feedback(settings: Settings) -> dict[str, Feedback]:
    with Digest(settings, now=now) as digest:
        return digest.store.feedback()


async def test_a_thumbs_up_through_the_web_app_changes_the_next_edition(
    settings: Settings,
) -> None:
    # Without feedback Tuesday's three most upvoted papers win; the climber has 3 upvotes.
    with Digest(settings, now=now) as digest:
        sub = digest.load_subscribers().subscribers
        before, _ = digest.render(Edition.daily(TUE), [CLIMBER, *POPULAR_TUE], sub[0])
    assert CLIMBER.arxiv_id not in [r.paper.arxiv_id for r in before]

    # Monday has three papers: Ada gets them all, the walker among them.
    assert WALKER.arxiv_id in await send(settings, MON)
    (monday,) = messages(settings)
    text = text_of(monday)
    block = text[text.index("Quadruped locomotion") :]
    like = re.search(r"More like this: (\S+)", block)
    assert like is not None and like.group(1).startswith(PUBLIC + "/f/")
    html = monday.get_body(("html",))
    assert html is not None and like.group(1) in html.get_content()

    with running_app(settings, now=now) as base, httpx.Client() as client:
        url = base + like.group(1)[len(PUBLIC) :]
        page = client.get(url)  # what a link scanner does: nothing recorded
        assert page.status_code == 200 and "More like this?" in page.text
        assert feedback(settings) == {}
        done = client.post(url, data={"csrf": csrf_of(page)})
        assert done.status_code == 200 and "The next editions use it" in done.text
        # A forged token and a missing CSRF field change nothing.
        assert client.post(url, data={"csrf": "0" * 32}).status_code == 403
        assert client.get(base + "/f/not-a-token").status_code in (400, 404)
    assert feedback(settings) == {ADA: Feedback(likes=(WALKER.arxiv_id,))}

    # Tuesday: the climber (similar to the liked walker) now makes Ada's three papers.
    tuesday_ids = await send(settings, TUE)
    assert CLIMBER.arxiv_id in tuesday_ids
    tuesday = next(m for m in messages(settings) if m is not monday and "Jun 11" in m["Subject"])
    assert f"Why: like {WALKER.arxiv_id} you liked" in text_of(tuesday)


def test_feedback_links_without_a_web_app_are_mailto(settings: Settings) -> None:
    bare = make_settings(
        **{
            k: v
            for k, v in settings.model_dump().items()
            if k in ("subscribers", "state_path", "outbox", "sources", "sender")
        }
    )
    links = feedback_urls_for(bare, ADA, ["2406.10001"])
    assert links == {
        "2406.10001": (
            "mailto:papers@example.org?subject=like%202406.10001",
            "mailto:papers@example.org?subject=dislike%202406.10001",
        )
    }


def test_a_feedback_token_of_another_purpose_or_payload_is_refused(settings: Settings) -> None:
    from digest.tokens import Purpose, TokenSigner

    signer = TokenSigner.from_settings(settings)
    bad: list[Any] = [
        signer.make(Purpose.UNSUBSCRIBE, ADA),
        signer.make(Purpose.FEEDBACK, ADA, data="love 2406.10001"),
        signer.make(Purpose.FEEDBACK, ADA, data="like not-an-id"),
        signer.make(Purpose.FEEDBACK, "stranger@example.org", data="like 2406.10001"),
    ]
    with running_app(settings, now=now) as base, httpx.Client() as client:
        for token in bad:
            page = client.get(f"{base}/f/{token}")
            assert 400 <= page.status_code < 500, token
    assert feedback(settings) == {}


def test_subscribers_show_lists_what_was_learned(settings: Settings) -> None:
    with Digest(settings, now=now) as digest:
        digest.store.save_paper(WALKER)
        digest.store.record_feedback(ADA, WALKER.arxiv_id, "like")
        digest.store.record_feedback(ADA, "2406.99999", "dislike")
    env = {
        "DIGEST_SUBSCRIBERS": str(settings.subscribers),
        "DIGEST_STATE_PATH": str(settings.state_path),
        "DIGEST_SECRET_KEY": SECRET_KEY,
    }
    code, output = run_cli("subscribers", "--show", ADA, env=env)
    assert code == 0, output
    assert f"👍 learned from the email: {WALKER.arxiv_id} {WALKER.title}" in output
    assert "👎 learned from the email: 2406.99999" in output
    code, output = run_cli("subscribers", "--show", "nobody@example.org", env=env)
    assert code == 2 and "not in" in output


def test_each_message_carries_its_own_links_and_no_placeholder(settings: Settings) -> None:
    from digest.pipeline.workers import render_ranked
    from digest.ranking import rank
    from digest.subscribers import Subscriber

    papers = [WALKER, *POPULAR_MON]
    with Digest(settings, now=now) as digest:
        out = {}
        for address in (ADA, "bob@example.org"):
            sub = Subscriber(email=address)
            ranked = rank(papers, sub)
            out[address] = render_ranked(
                settings, digest.renderer, Edition.daily(MON), ranked, len(papers), sub
            )
    for address, rendered in out.items():
        assert "feedback.invalid" not in rendered.html + rendered.text
        mine = feedback_urls_for(settings, address, [WALKER.arxiv_id])[WALKER.arxiv_id]
        assert mine[0] in rendered.html and mine[1] in rendered.text
    assert out[ADA].html != out["bob@example.org"].html
