"""Merge the papers of several sources into one list without duplicates.

Two papers are the same when they have the same ``daily_date`` and either the same arXiv id
or the same normalised title (casefolded, punctuation and whitespace removed), so a paper a
feed lists under a slightly different id or punctuation still meets its Hugging Face twin.
With ``by_day=False`` the day is ignored: one edition spanning several days (a weekly one, or
a paper a feed announced a day before Hugging Face listed it) lists each paper once.

The merged paper starts from the Hugging Face copy (the first with ``upvotes`` not ``None``;
else the first copy seen) and keeps its upvotes, comments and AI/GitHub fields; every field
still empty (``None``, ``""``, ``()``) is filled from the other copies in input order (e.g.
an empty abstract, missing authors, the PDF/abstract links and the announcement type from a
feed). ``source`` becomes the comma-joined source names, in order of first appearance.

Order: by day (oldest first, papers without a day last), then by first appearance in
``lists`` (list order, then position), so the result depends only on the input.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from datetime import date

from digest.models import Paper
from digest.sources._text import normalize_arxiv_id, normalize_title

SOURCE_SEPARATOR = ","
# Split a joined ``source`` only before a source spec: paths and URLs may contain commas.
_SOURCE_SPLIT_RE = re.compile(r",(?=hf(?:,|$)|file:|feed:)")
_NEVER_FILLED = frozenset({"arxiv_id", "daily_date", "source"})
_FILLABLE = tuple(f.name for f in dataclasses.fields(Paper) if f.name not in _NEVER_FILLED)


def merge_papers(lists: Sequence[Sequence[Paper]], *, by_day: bool = True) -> list[Paper]:
    """Merge the papers of several sources (any number of days) into one list.

    Args:
        lists: one sequence of papers per source, e.g. ``[hf_papers, feed_papers]``.
        by_day: keep one copy per paper and day (``True``) or one per paper (``False``).

    Returns:
        Each paper once (per day, with ``by_day``), merged as described in the module
        docstring.
    """
    groups: list[list[Paper]] = []
    by_key: dict[tuple[date | None, str], int] = {}
    for papers in lists:
        for paper in papers:
            keys = _keys(paper, by_day)
            index = next((by_key[k] for k in keys if k in by_key), None)
            if index is None:
                index = len(groups)
                groups.append([])
            groups[index].append(paper)
            for key in keys:
                by_key.setdefault(key, index)

    merged = [_merge_group(group) for group in groups]
    order = {id(p): i for i, p in enumerate(merged)}
    return sorted(
        merged, key=lambda p: (p.daily_date is None, p.daily_date or date.min, order[id(p)])
    )


def _keys(paper: Paper, by_day: bool) -> list[tuple[date | None, str]]:
    day = paper.daily_date if by_day else None
    keys = [(day, "id:" + (normalize_arxiv_id(paper.arxiv_id) or paper.arxiv_id))]
    title = normalize_title(paper.title)
    if title:
        keys.append((day, "title:" + title))
    return keys


def _is_empty(value: object) -> bool:
    return value is None or value == "" or value == ()


def _merge_group(group: list[Paper]) -> Paper:
    if len(group) == 1:
        return group[0]
    primary = next((p for p in group if p.upvotes is not None), group[0])
    others = [p for p in group if p is not primary]
    changes: dict[str, object] = {}
    for name in _FILLABLE:
        if _is_empty(getattr(primary, name)):
            value = next(
                (getattr(p, name) for p in others if not _is_empty(getattr(p, name))), None
            )
            if value is not None:
                changes[name] = value
    changes["source"] = SOURCE_SEPARATOR.join(_source_names(group))
    return dataclasses.replace(primary, **changes)  # type: ignore[arg-type]


def _source_names(group: Iterable[Paper]) -> list[str]:
    names: dict[str, None] = {}
    for paper in group:
        for name in _SOURCE_SPLIT_RE.split(paper.source):
            if name.strip():
                names.setdefault(name.strip(), None)
    return list(names)
