"""merge_papers: a Hugging Face day merged with an arXiv feed sharing some of its papers."""

from __future__ import annotations

from datetime import date

from digest.models import Paper
from digest.sources import FeedSource, FileSource, merge_papers
from tests.conftest import FIXTURES

DAY = date(2026, 8, 20)
HF_DIR = FIXTURES / "hf-daily-papers"
RSS2 = FIXTURES / "feeds" / "arxiv-rss2-cs.AI-2026-08-20.xml"
FEED_SPEC = f"feed:{RSS2}#types=new+cross"


async def fetch_both() -> tuple[list[Paper], list[Paper]]:
    hf = await FileSource(HF_DIR, name="hf").fetch(DAY)
    feed = await FeedSource.from_spec(FEED_SPEC).fetch(DAY)
    return hf, feed


async def test_hf_day_and_feed_are_merged_by_arxiv_id() -> None:
    hf, feed = await fetch_both()
    assert len(hf) == 15 and len(feed) == 3  # 2 shared with hf + 1 feed-only

    merged = merge_papers([hf, feed])

    assert [p.arxiv_id for p in merged] == [p.arxiv_id for p in hf] + ["2608.20011"]
    spade = next(p for p in merged if p.arxiv_id == "2608.19197")
    hf_spade = next(p for p in hf if p.arxiv_id == "2608.19197")
    # Hugging Face fields win ...
    assert spade.upvotes == 30 and spade.comments == 0
    assert spade.ai_summary == hf_spade.ai_summary and spade.ai_summary
    assert spade.abstract == hf_spade.abstract  # the longer HF abstract, not the feed's
    assert spade.authors == hf_spade.authors
    assert spade.published_at == hf_spade.published_at
    # ... the feed fills the gaps.
    assert spade.announce_type == "new"
    assert spade.abs_url == "https://arxiv.org/abs/2608.19197"
    assert spade.source == f"hf,{FEED_SPEC}"
    semaplc = next(p for p in merged if p.arxiv_id == "2608.18565")
    assert semaplc.announce_type == "cross" and semaplc.upvotes == 59
    only_feed = merged[-1]
    assert only_feed.upvotes is None and only_feed.source == FEED_SPEC
    untouched = next(p for p in merged if p.arxiv_id == "2608.16590")
    assert untouched == next(p for p in hf if p.arxiv_id == "2608.16590")


async def test_order_of_lists_decides_order_not_which_fields_win() -> None:
    hf, feed = await fetch_both()

    merged = merge_papers([feed, hf])

    assert [p.arxiv_id for p in merged[:3]] == ["2608.19197", "2608.18565", "2608.20011"]
    spade = merged[0]
    assert spade.upvotes == 30  # still the HF copy's fields
    assert spade.abstract == next(p for p in hf if p.arxiv_id == "2608.19197").abstract
    assert spade.source == f"{FEED_SPEC},hf"
    assert len(merged) == 16


async def test_merge_is_deterministic_and_idempotent() -> None:
    hf, feed = await fetch_both()

    once = merge_papers([hf, feed])

    assert merge_papers([hf, feed]) == once
    assert merge_papers([once]) == once
    assert merge_papers([once, feed]) == once  # a merged source list is not re-split wrongly


def test_feed_fills_empty_abstract_missing_authors_and_links() -> None:
    hf = Paper("2401.00001", "A Title", upvotes=3, daily_date=DAY, source="hf")
    feed = Paper(
        "2401.00001",
        "A Title",
        abstract="The abstract.",
        authors=("Ann Lee", "Bo Chen"),
        daily_date=DAY,
        source="feed:x",
        announce_type="new",
        pdf_url="https://arxiv.org/pdf/2401.00001v1",
        abs_url="https://arxiv.org/abs/2401.00001v1",
    )

    (merged,) = merge_papers([[hf], [feed]])

    assert merged.upvotes == 3
    assert merged.abstract == "The abstract."
    assert merged.authors == ("Ann Lee", "Bo Chen")
    assert merged.pdf_url == "https://arxiv.org/pdf/2401.00001v1"
    assert merged.abs_url == "https://arxiv.org/abs/2401.00001v1"
    assert merged.source == "hf,feed:x"


def test_normalised_title_is_the_fallback_key() -> None:
    hf = Paper("2401.00001", "Attention Is All You Need!", upvotes=9, daily_date=DAY, source="hf")
    feed = Paper("2401.00001v2-odd", "attention is all  you need", daily_date=DAY, source="feed:x")
    other_day = Paper("2401.99999", "Attention is all you need", daily_date=date(2026, 8, 21))

    merged = merge_papers([[hf], [feed, other_day]])

    assert [(p.arxiv_id, p.daily_date, p.source) for p in merged] == [
        ("2401.00001", DAY, "hf,feed:x"),
        ("2401.99999", date(2026, 8, 21), ""),
    ]


def test_same_paper_on_two_days_stays_twice_ordered_by_day() -> None:
    later = Paper("2401.00001", "T", daily_date=date(2026, 8, 21), upvotes=1, source="hf")
    earlier = Paper("2401.00001", "T", daily_date=date(2026, 8, 20), upvotes=5, source="hf")
    undated = Paper("2401.00002", "U", source="feed:x")

    merged = merge_papers([[undated, later, earlier]])

    assert merged == [earlier, later, undated]


def test_versioned_id_matches_bare_id_and_upvotes_pick_the_base() -> None:
    feed = Paper("2401.00001v3", "X", abstract="feed abstract", daily_date=DAY, source="feed:x")
    hf = Paper("2401.00001", "X", upvotes=0, daily_date=DAY, source="hf")

    (merged,) = merge_papers([[feed], [hf]])

    assert merged.arxiv_id == "2401.00001"
    assert merged.upvotes == 0  # zero upvotes is still a Hugging Face paper
    assert merged.abstract == "feed abstract"


def test_empty_input() -> None:
    assert merge_papers([]) == []
    assert merge_papers([[], []]) == []
