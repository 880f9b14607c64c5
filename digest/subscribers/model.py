"""The subscriber model: :class:`Subscriber` (one subscriber's options, validated) and
:class:`SubscriberList` (the validated contents of a subscribers file).

Reading the file is :mod:`digest.subscribers.yaml`'s job; this module knows nothing of YAML.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import logging
import re
import zoneinfo
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from email_validator import EmailNotValidError, validate_email
from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

from digest.addresses import ENCODED_WORD_OPENER, display_name_problem, normalize_email
from digest.models import MAX_COUNT

log = logging.getLogger(__name__)

Frequency = Literal["daily", "weekly"]
Weekday = Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]

DEFAULT_MAX_PAPERS = 10
"""Papers per edition when ``max_papers`` is not set."""
DEFAULT_MIN_UPVOTES = 0
"""Minimum Hugging Face upvotes when ``min_upvotes`` is not set (0: no minimum)."""
MAX_PAPERS_LIMIT = 1000
"""Largest ``max_papers`` accepted (a weekly edition gathers a few hundred papers)."""
COUNT_BOUNDS = {"min_upvotes": (0, MAX_COUNT), "max_papers": (1, MAX_PAPERS_LIMIT)}
"""The integer options and their accepted range (inclusive): anything else is refused with
one message naming the range (``min_upvotes`` up to :data:`digest.models.MAX_COUNT`, the
largest count a paper can have)."""
DEFAULT_FREQUENCY: Frequency = "daily"
"""Edition frequency when ``frequency`` is not set."""
DEFAULT_WEEKDAY: Weekday = "monday"
"""Send day of a weekly subscriber when ``weekday`` is not set."""
DEFAULT_SEND_AT = time(7, 0)
"""Local send time (in the subscriber's ``timezone``) when ``send_at`` is not set."""
DEFAULT_TIMEZONE = "UTC"
"""IANA time zone when ``timezone`` is not set."""
EXAMPLE_FILE = "subscribers.example.yaml"
"""The commented example shipped at the repository root, to copy when starting."""
UNPERSONALIZED_EMAIL = "everyone@example.com"
"""Placeholder address of :meth:`Subscriber.default` (never sent to; example.com is reserved)."""

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
"""Valid ``weekday`` values, Monday first (index = ``date.weekday()``)."""
FREQUENCIES = ("daily", "weekly")
"""Valid ``frequency`` values."""
TOP_LEVEL_KEYS = ("defaults", "subscribers")
"""Keys allowed at the top of the subscribers file."""
PER_SUBSCRIBER_ONLY = ("email", "name")
"""Options that cannot appear in ``defaults``."""
SOURCE_PREFIXES = ("file:", "feed:")
"""Source spec prefixes besides the bare ``hf`` (same rule as ``DIGEST_SOURCES``)."""
MAX_SUMMARY_PROBLEMS = 5
"""How many problems the one-line ``str()`` of the :class:`ConfigError` spells out."""
PERSONAL_OPTIONS = (
    "keywords",
    "only_matching",
    "interests",
    "like",
    "dislike",
    "authors",
    "library",
    "orcid",
    "arxiv_author",
    "semantic_scholar",
)
"""Options that the unpersonalized edition (:meth:`Subscriber.default`) ignores."""
MAX_LIST_ITEMS = 1000
"""Most items in a ``like``/``dislike``/``authors`` list."""
MAX_INTEREST_CHARS = 500
"""Longest interest statement (characters): a sentence or two; longer is a pasted document."""
MAX_INTERESTS = 20
"""Most interest statements per subscriber."""
MAX_AUTHOR_CHARS = 200
"""Longest author name (characters)."""
LIBRARY_FORMATS: dict[str, Literal["bibtex", "ris", "csl-json"]] = {
    ".bib": "bibtex",
    ".bibtex": "bibtex",
    ".ris": "ris",
    ".json": "csl-json",
}
"""Library file formats by lower-case suffix: what Zotero, Mendeley, Google Scholar export."""
MAX_LIBRARY_FILES = 10
"""Most files in a subscriber's ``library`` list."""
MAX_PATH_CHARS = 1000
"""Longest ``library`` path (characters)."""
_ORCID_RE = re.compile(r"(?:https?://(?:www\.)?orcid\.org/)?(\d{4}-\d{4}-\d{4}-\d{3}[\dX])")
"""An ORCID iD, optionally as its URL; group 1 is the bare iD."""
_S2_AUTHOR_RE = re.compile(r"\d{1,20}")
"""A Semantic Scholar author id (digits, as in semanticscholar.org/author/NAME/1741101)."""
ARXIV_ID_RE = re.compile(
    r"(?:arxiv:|https?://arxiv\.org/(?:abs|pdf)/)?"
    r"(\d{4}\.\d{4,5}|[a-z\-]+(?:\.[A-Z]{2})?/\d{7})(?:v\d+)?(?:\.pdf)?",
    re.IGNORECASE,
)
"""An arXiv identifier, new style (``2406.09246``) or old (``cs/0112017``), optionally with a
version, an ``arXiv:`` prefix or as an abs/pdf URL; group 1 is the bare id."""
"""How many problems the one-line ``str()`` of the :class:`ConfigError` spells out."""


_SEND_AT_RE = re.compile(r"(\d{1,2}):(\d{2})")
_WORD_SEPARATORS_RE = re.compile(r"[\s\-‐‑‒–—]+")
"""Whitespace and hyphens/dashes: what separates the words of a (multi-word) keyword."""
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_HOURS_PER_DAY = 24
_MINUTES_PER_HOUR = 60
_HINT_CUTOFF = 0.6
"""difflib similarity needed for a "did you mean" hint (0..1)."""


# --- field-level helpers -----------------------------------------------------------------


def _custom(kind: str, message: str) -> PydanticCustomError:
    # Without a context pydantic does not format the template: braces in user text are safe.
    return PydanticCustomError(kind, message)


def _hint(word: str, choices: Sequence[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(word.lower(), choices, n=1, cutoff=_HINT_CUTOFF)
    return f" (did you mean {close[0]!r}?)" if close else ""


def split_keyword(keyword: str) -> list[str]:
    """The words of a keyword: split on whitespace and hyphens, e.g. ``"self-play RL"``.

    Used by the validator here and by :mod:`digest.ranking` to build matchers, so both agree.

    Args:
        keyword: a keyword or exclude term as written.

    Returns:
        Its words in order (each may end with ``*``); empty if it has none.
    """
    return [w for w in _WORD_SEPARATORS_RE.split(keyword) if w]


_GOOD_TERMS: dict[str, str] = {}
"""Terms that passed :func:`_check_term`, as written → as kept (terms recur across a list)."""
_MAX_GOOD_TERMS = 100_000


def _check_term(value: str) -> str:
    """A keyword/exclude term: stripped; each word has a letter or digit; ``*`` only at the end."""
    hit = _GOOD_TERMS.get(value)
    if hit is not None:
        return hit
    term = _checked_term(value)
    if len(_GOOD_TERMS) >= _MAX_GOOD_TERMS:
        _GOOD_TERMS.clear()
    _GOOD_TERMS[value] = term
    return term


_TERM_KEYS: dict[str, str] = {}
"""Valid terms → what two terms that are the same word(s) have in common (lower case, words
joined by one space)."""


def _term_key(term: str) -> str:
    key = " ".join(split_keyword(term.lower()))
    if len(_TERM_KEYS) >= _MAX_GOOD_TERMS:
        _TERM_KEYS.clear()
    _TERM_KEYS[term] = key
    return key


def _checked_term(value: str) -> str:
    term = value.strip()
    if not term:
        raise _custom("empty_keyword", "empty keyword; remove it or write a word")
    words = split_keyword(term)
    if not words or all(w.strip("*") == "" for w in words):
        raise _custom(
            "bare_wildcard",
            f"{term!r} has no word to match; a '*' goes after a prefix, e.g. 'agent*'",
        )
    for word in words:
        core = word.rstrip("*")
        if "*" in core:
            raise _custom(
                "inner_wildcard",
                f"{term!r}: '*' is only allowed at the end of a word (prefix match, 'agent*')",
            )
        if not any(ch.isalnum() for ch in core):
            raise _custom(
                "no_word",
                f"{term!r}: the word {word!r} has no letter or digit to match",
            )
    return term


def _term_before(value: Any) -> Any:
    # YAML reads `keywords: [3d, 2024]` as a string and an int: a number is a fine keyword.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def _check_source(value: str) -> str:
    spec = value.strip()
    if spec != "hf" and not spec.startswith(SOURCE_PREFIXES):
        raise _custom("source", f"unknown source {spec!r}: use 'hf', 'file:PATH' or 'feed:URL'")
    return spec


def normalize_arxiv_id(value: str) -> str | None:
    """The bare arXiv id (no version, no prefix) of ``value``, or ``None`` if it is not one.

    Accepts ``2406.09246``, ``2406.09246v2``, ``arXiv:2406.09246``,
    ``https://arxiv.org/abs/2406.09246v1`` and old-style ``cs/0112017``.
    """
    m = ARXIV_ID_RE.fullmatch(value.strip())
    return m[1] if m else None


def _arxiv_id_before(value: Any) -> Any:
    # YAML reads an unquoted 2406.09246 as a float; its repr keeps the digits unless the id
    # ends in 0 (2406.10000 -> 2406.1), which cannot be recovered: ask for quotes then.
    if isinstance(value, float):
        text = repr(value)
        if re.fullmatch(r"\d{4}\.\d{4,5}", text):
            return text
        raise _custom(
            "arxiv_id_number",
            f"YAML read this arXiv id as the number {text}; put it in quotes, e.g. '2406.10000'",
        )
    return value


def _check_arxiv_id(value: str) -> str:
    bare = normalize_arxiv_id(value)
    if bare is None:
        raise _custom("arxiv_id", f"{value[:80]!r} is not an arXiv id; write it like '2406.09246'")
    return bare


def _check_interest(value: str) -> str:
    text = " ".join(value.split())
    if not text:
        raise _custom(
            "empty_interest",
            "empty interest; remove it or write what you want to read about, "
            "e.g. 'sim-to-real transfer for legged robots'",
        )
    if len(text) > MAX_INTEREST_CHARS:
        raise _custom(
            "interest_too_long",
            f"interest is {len(text)} characters; keep it under {MAX_INTEREST_CHARS} "
            "(a sentence or two; add another interest for another topic)",
        )
    if not any(ch.isalnum() for ch in text):
        raise _custom("interest_no_word", f"interest {text[:80]!r} has no word in it")
    return text


def _check_author(value: str) -> str:
    name = " ".join(value.split())
    if not name:
        raise _custom("empty_author", "empty author name; remove it or write a name")
    if _CONTROL_RE.search(name):
        raise _custom("author", "must not contain control characters")
    if len(name) > MAX_AUTHOR_CHARS:
        raise _custom(
            "author_too_long",
            f"author name is {len(name)} characters; at most {MAX_AUTHOR_CHARS}",
        )
    if not any(ch.isalpha() for ch in name):
        raise _custom("author", f"{name[:80]!r} has no letter; write the author's name")
    return name


def _check_library_path(value: str) -> str:
    path = value.strip()
    if not path:
        raise _custom("empty_library", "empty library path; remove it or name a file")
    if _CONTROL_RE.search(path):
        raise _custom("library", "a library path must not contain control characters")
    if len(path) > MAX_PATH_CHARS:
        raise _custom("library", f"path is {len(path)} characters; at most {MAX_PATH_CHARS}")
    suffix = "." + path.rsplit(".", 1)[-1].lower() if "." in path else ""
    if suffix not in LIBRARY_FORMATS:
        raise _custom(
            "library_format",
            f"{path[:80]!r}: unknown library format; export it as .bib (BibTeX), .ris or "
            ".json (CSL-JSON)",
        )
    return path


def _orcid_checksum_ok(bare: str) -> bool:
    """ISO 7064 MOD 11-2 check digit of an ORCID iD (its last character)."""
    total = 0
    for ch in bare[:-1].replace("-", ""):
        total = (total + int(ch)) * 2
    check = (12 - total % 11) % 11
    return bare[-1] == ("X" if check == 10 else str(check))


def _check_orcid(value: str) -> str:
    m = _ORCID_RE.fullmatch(value.strip())
    if m is None:
        raise _custom(
            "orcid", f"{value[:80]!r} is not an ORCID iD; write it like '0000-0002-1825-0097'"
        )
    if not _orcid_checksum_ok(m[1]):
        raise _custom("orcid", f"{m[1]!r}: the check digit is wrong; copy the iD again")
    return m[1]


def _check_s2_author(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and not _S2_AUTHOR_RE.fullmatch(value.strip()):
        raise _custom(
            "semantic_scholar",
            f"{value[:80]!r} is not a Semantic Scholar author id; use the number at the end "
            "of the author page's address, e.g. 1741101",
        )
    return value.strip() if isinstance(value, str) else value


Term = Annotated[str, AfterValidator(_check_term)]
"""One keyword or exclude term; errors point at the list item. (A number in a ``keywords`` or
``exclude`` list is made a string first, by the list's validator.)"""
SourceSpec = Annotated[str, AfterValidator(_check_source)]
"""One source spec (``hf``, ``file:PATH``, ``feed:URL``)."""
Interest = Annotated[str, AfterValidator(_check_interest)]
"""One free-text interest statement."""
ArxivId = Annotated[str, BeforeValidator(_arxiv_id_before), AfterValidator(_check_arxiv_id)]
"""One arXiv id, stored bare (no version)."""
Author = Annotated[str, AfterValidator(_check_author)]
"""One author name to follow."""
LibraryPath = Annotated[str, AfterValidator(_check_library_path)]
"""One library file (BibTeX, RIS, CSL-JSON), relative to the subscribers file."""
OrcidId = Annotated[str, AfterValidator(_check_orcid)]
"""An ORCID iD, stored bare (``0000-0002-1825-0097``)."""
S2AuthorId = Annotated[str, BeforeValidator(_check_s2_author)]
"""A Semantic Scholar author id (digits)."""
StrictInt = Annotated[int, Strict()]


@pydantic_dataclass(frozen=True, slots=True, config=ConfigDict(extra="forbid"))
class Subscriber:
    """One subscriber: the address and everything that personalises their edition.

    Every option except ``email`` and ``name`` may also be set under ``defaults:`` in the file;
    a subscriber's own value wins. Instances are immutable (assigning raises
    :class:`pydantic.ValidationError`, ``frozen_instance``), hashable, equal when every field
    is, and picklable (the field values only: small on the way to a render worker).

    Memory: a slotted pydantic dataclass (no ``__dict__``, about 190 bytes besides its
    strings and tuples, a fifth of a ``BaseModel`` instance), so a list of 100,000 fits in a
    few tens of MB. Constructing one (``Subscriber(email=...)``, :meth:`model_validate`)
    validates it; :meth:`model_copy` validates the copy; :meth:`model_dump` gives the fields.

    Attributes:
        email: the address (validated, no DNS lookup), stored as
            :func:`~digest.addresses.normalize_email` makes it (NFC, lower case, the domain
            in IDNA A-label form: ``ada@xn--bcher-kva.de`` for ``ada@bücher.de``); the
            subscriber's identity in the state file, so it must be unique in the file. A
            non-ASCII local part needs a relay that offers SMTPUTF8 (RFC 6531).
        name: display name for the ``To:`` header and the greeting; ``None`` for none. Plain
            text in any script: no line breaks, control characters, bidirectional overrides or
            ``=?`` (:func:`~digest.addresses.display_name_problem`).
        keywords: terms of interest, as written, in the subscriber's order. Matching is
            case-insensitive on whole words in the title, abstract, AI summary and AI keywords;
            ``*`` at the end of a word matches any continuation (``agent*``: agents, agentic);
            words of a multi-word keyword match across any whitespace or hyphens;
            an English plural ``s``/``es`` is accepted. See :mod:`digest.ranking`.
        exclude: terms (same syntax) of which any match drops a paper, whatever else matches.
        only_matching: ``True``: only papers matching at least one keyword are sent (then
            ``keywords`` must not be empty). ``False``: matching papers rank first, the rest
            of the day's papers fill up to ``max_papers``.
        min_upvotes: papers with fewer Hugging Face upvotes are left out (count,
            ``0..MAX_COUNT``).
            Feed-only papers have no upvotes and count as 0: they pass only when this is 0.
        max_papers: at most this many papers per edition (count, ``1..MAX_PAPERS_LIMIT``).
        active: ``False`` pauses the subscription without deleting it.
        frequency: ``"daily"`` (each Daily Papers day) or ``"weekly"`` (the previous ISO week,
            ranked together).
        weekday: send day of a weekly edition, a lower-case English day name (``"monday"``);
            ignored for daily editions.
        send_at: local wall-clock send time (naive ``datetime.time``, minutes precision) in
            ``timezone``; written ``"HH:MM"`` (24-hour) in the file.
        timezone: IANA time zone name of ``send_at`` and ``weekday`` (``"Europe/Berlin"``).
        send_empty: ``True``: send an edition even when no paper is selected (a "nothing
            today" email); ``False``: skip that day.
        interests: free-text statements of what the subscriber wants to read about ("sim-to-real
            transfer for legged robots"), whitespace collapsed, at most
            :data:`MAX_INTEREST_CHARS` characters each; matched by meaning (embeddings).
        like: arXiv ids (bare, no version) of papers the subscriber liked: similar papers rank
            higher.
        dislike: arXiv ids of papers the subscriber did not want: similar papers rank lower.
        authors: author names to follow: a paper by one of them is always included (unless an
            ``exclude`` term matches it) and marked; compared case- and accent-insensitively.
        no_repeat: ``True`` (default): a paper already sent to this subscriber in an earlier
            edition (same arXiv id, any version) is never sent again; a weekly edition leaves
            out what the subscriber got daily.
        library: the subscriber's library files (BibTeX ``.bib``, RIS ``.ris``, CSL-JSON
            ``.json``: what Zotero, Mendeley, Google Scholar export), relative to the
            subscribers file; a single path may be written without a list. Their papers are
            liked examples of the reader's model (:mod:`digest.ranking.reader`).
        orcid: an ORCID iD whose public works count as the library too (stored bare).
        arxiv_author: an author name whose arXiv papers count as the library too.
        semantic_scholar: a Semantic Scholar author id whose papers count as the library too.
        sources: this subscriber's sources, by spec string (``hf``, ``file:PATH``,
            ``feed:URL``, as in ``DIGEST_SOURCES``), instead of ``DIGEST_SOURCES``; a spec need
            not be configured globally (one reader can follow arXiv cs.RO alone); ``None``: the
            configured sources.
    """

    model_fields: ClassVar[dict[str, FieldInfo]]
    """Every field (option name → pydantic ``FieldInfo``, ``.default`` its default), in order."""

    email: str
    name: str | None = None
    keywords: tuple[Term, ...] = ()
    exclude: tuple[Term, ...] = ()
    only_matching: bool = False
    min_upvotes: StrictInt = Field(default=DEFAULT_MIN_UPVOTES, ge=0, le=MAX_COUNT)
    max_papers: StrictInt = Field(default=DEFAULT_MAX_PAPERS, ge=1, le=MAX_PAPERS_LIMIT)
    active: bool = True
    frequency: Frequency = DEFAULT_FREQUENCY
    weekday: Weekday = DEFAULT_WEEKDAY
    send_at: time = DEFAULT_SEND_AT
    timezone: str = DEFAULT_TIMEZONE
    send_empty: bool = False
    sources: tuple[SourceSpec, ...] | None = None
    interests: tuple[Interest, ...] = ()
    like: tuple[ArxivId, ...] = ()
    dislike: tuple[ArxivId, ...] = ()
    authors: tuple[Author, ...] = ()
    no_repeat: bool = True
    library: tuple[LibraryPath, ...] = ()
    orcid: OrcidId | None = None
    arxiv_author: Author | None = None
    semantic_scholar: S2AuthorId | None = None

    @classmethod
    def default(cls, defaults: Mapping[str, Any] | None = None) -> Subscriber:
        """The unpersonalized subscriber: no keywords, every option at its default.

        Used for previews and the "everyone" edition. Its email is the placeholder
        :data:`UNPERSONALIZED_EMAIL`.

        Args:
            defaults: option values to apply (e.g. :attr:`SubscriberList.defaults`);
                the personal ones among them (:data:`PERSONAL_OPTIONS`: keywords, interests,
                likes...) are ignored, the rest (including ``exclude``) apply.

        Raises:
            pydantic.ValidationError: ``defaults`` holds invalid values.
        """
        base = {
            k: v
            for k, v in (defaults or {}).items()
            if k not in (*PERSONAL_OPTIONS, *PER_SUBSCRIBER_ONLY)
        }
        return cls(email=UNPERSONALIZED_EMAIL, **base)

    @classmethod
    def model_validate(cls, data: Mapping[str, Any]) -> Subscriber:
        """A validated subscriber from a mapping of option name → value (as read from YAML).

        Raises:
            pydantic.ValidationError: a value is invalid, ``email`` is missing, or a key is not
                an option (``unexpected_keyword_argument``).
        """
        return _ADAPTER.validate_python(data)

    def model_copy(self, *, update: Mapping[str, Any] | None = None) -> Subscriber:
        """A copy with the options in ``update`` replaced, validated like a new subscriber.

        Raises:
            pydantic.ValidationError: the result is invalid.
        """
        return dataclasses.replace(self, **(update or {}))

    def model_dump(self) -> dict[str, Any]:
        """Every option as a new dict (option name → value, in field order; tuples stay)."""
        return {name: getattr(self, name) for name in _FIELDS}

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        """``timezone`` as a :class:`zoneinfo.ZoneInfo` (cached by ``zoneinfo``)."""
        return zoneinfo.ZoneInfo(self.timezone)

    # --- validators ----------------------------------------------------------------------

    @field_validator("email", mode="before")
    @classmethod
    def _check_email(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value  # the str validator reports the type
        if ENCODED_WORD_OPENER in value:
            # Valid in a local part (RFC 5322 atext), but a header parser would decode it.
            raise _custom(
                "email",
                f"invalid email address {value[:80]!r}: must not contain '=?' (it starts an "
                "RFC 2047 encoded-word, which mail programs decode)",
            )
        fast = _known_domain_address(value)
        if fast is not None:
            return fast
        try:
            info = validate_email(value.strip(), check_deliverability=False)
        except EmailNotValidError as e:
            raise _custom("email", f"invalid email address {value!r}: {e}") from None
        normalized = normalize_email(info.normalized)
        _remember_domain(value, normalized)
        return normalized

    @field_validator("name")
    @classmethod
    def _check_name(cls, value: str | None) -> str | None:
        if value is None:
            return None
        problem = display_name_problem(value)
        if problem is not None:
            raise _custom("name", problem)
        return value.strip() or None

    @field_validator("min_upvotes", "max_papers", mode="before")
    @classmethod
    def _check_count(cls, value: Any, info: ValidationInfo) -> Any:
        low, high = COUNT_BOUNDS[str(info.field_name)]
        if type(value) is int and low <= value <= high:
            return value
        raise _custom(
            "count", f"must be a whole number from {low} to {high:,}, got {_number_excerpt(value)}"
        )

    @field_validator("keywords", "exclude", mode="before")
    @classmethod
    def _terms_list(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str):
            raise _custom(
                "not_a_list",
                f'must be a list, e.g. [{value}] or [diffusion, "reinforcement learning"]',
            )
        if isinstance(value, list | tuple) and not all(type(v) is str for v in value):
            return [_term_before(v) for v in value]
        return value

    @field_validator("keywords", "exclude")
    @classmethod
    def _check_terms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        seen: dict[str, int] = {}
        for i, term in enumerate(value):
            key = _TERM_KEYS.get(term) or _term_key(term)
            if key in seen:
                raise _custom(
                    "duplicate_term",
                    f"{term!r} is listed twice (items {seen[key]} and {i})",
                )
            seen[key] = i
        return value

    @field_validator("library", mode="before")
    @classmethod
    def _library_list(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        if not isinstance(value, list | tuple):
            raise _custom(
                "library", "must be a file name or a list of them, e.g. [zotero.bib, saved.ris]"
            )
        if len(value) > MAX_LIBRARY_FILES:
            raise _custom("too_many", f"{len(value)} files; at most {MAX_LIBRARY_FILES}")
        return value

    @field_validator("library")
    @classmethod
    def _check_library(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _no_duplicates(value, str)

    @field_validator("interests", "like", "dislike", "authors", mode="before")
    @classmethod
    def _personal_list(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str):
            raise _custom("not_a_list", f"must be a list, e.g. [{value[:80]!r}]")
        if isinstance(value, list) and len(value) > MAX_LIST_ITEMS:
            raise _custom("too_many", f"{len(value)} items; at most {MAX_LIST_ITEMS}")
        return value

    @field_validator("interests")
    @classmethod
    def _check_interests(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) > MAX_INTERESTS:
            raise _custom("too_many", f"{len(value)} interests; at most {MAX_INTERESTS}")
        return _no_duplicates(value, str.casefold)

    @field_validator("like", "dislike", "authors")
    @classmethod
    def _check_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _no_duplicates(value, str.casefold)

    @field_validator("frequency", mode="before")
    @classmethod
    def _check_frequency(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
        if isinstance(value, str) and value not in FREQUENCIES:
            raise _custom(
                "frequency",
                f"unknown frequency {value!r}; use 'daily' or 'weekly'{_hint(value, FREQUENCIES)}",
            )
        return value

    @field_validator("weekday", mode="before")
    @classmethod
    def _check_weekday(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
        if isinstance(value, int | float) and not isinstance(value, bool):
            raise _custom(
                "weekday_number",
                f"use a day name (monday..sunday), not a number ({value!r})",
            )
        if isinstance(value, str) and value not in WEEKDAYS:
            raise _custom(
                "weekday",
                f"unknown weekday {value!r}; use one of monday..sunday{_hint(value, WEEKDAYS)}",
            )
        return value

    @field_validator("send_at", mode="before")
    @classmethod
    def _parse_send_at(cls, value: Any) -> Any:
        if isinstance(value, time):
            return value
        if isinstance(value, int | float) and not isinstance(value, bool):
            # YAML 1.1 readers turn an unquoted 07:30 into the number 450.
            raise _custom("send_at", 'must be a quoted "HH:MM" string, e.g. send_at: "07:30"')
        if isinstance(value, str):
            known = _SEND_AT_TEXTS.get(value)
            if known is not None:
                return known
            m = _SEND_AT_RE.fullmatch(value.strip())
            if m:
                hour, minute = int(m[1]), int(m[2])
                if hour < _HOURS_PER_DAY and minute < _MINUTES_PER_HOUR:
                    parsed = _TIMES.setdefault((hour, minute), time(hour, minute))
                    if len(_SEND_AT_TEXTS) < _MAX_SEND_AT_TEXTS:
                        _SEND_AT_TEXTS[value] = parsed
                    return parsed
            raise _custom(
                "send_at",
                f'must be "HH:MM" (24-hour, local time in timezone), e.g. "07:30"; got {value!r}',
            )
        raise _custom("send_at", f'must be "HH:MM" (24-hour), got {type(value).__name__}')

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        name = value.strip()
        try:
            zoneinfo.ZoneInfo(name)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            hint = _hint(name, _zone_names())
            raise _custom(
                "timezone",
                f"unknown time zone {value!r}{hint}; use an IANA name like 'Europe/Berlin'",
            ) from None
        return name

    @field_validator("sources", mode="before")
    @classmethod
    def _sources_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise _custom("not_a_list", f"must be a list, e.g. [{value}]")
        return value

    @field_validator("sources")
    @classmethod
    def _check_sources(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if not value:
            raise _custom(
                "empty_sources",
                "an empty list would send nothing; remove the key to use every source",
            )
        if len(set(value)) != len(value):
            raise _custom("duplicate_source", "a source is listed twice")
        return value

    @model_validator(mode="after")
    def _check_only_matching(self) -> Self:
        if self.only_matching and not (
            self.keywords
            or self.interests
            or self.like
            or self.authors
            or self.library
            or self.orcid
            or self.arxiv_author
            or self.semantic_scholar
        ):
            raise PydanticCustomError(
                "only_matching_without_keywords",
                "only_matching is true but there are no keywords, interests, likes or authors: "
                "nothing would ever be sent",
                {"field": "only_matching"},
            )
        both = sorted(set(self.like) & set(self.dislike)) if self.like and self.dislike else ()
        if both:
            raise PydanticCustomError(
                "like_and_dislike",
                "{ids} listed in both like and dislike; keep it in one",
                {"field": "dislike", "ids": ", ".join(both)},
            )
        return self


_TIMES: dict[tuple[int, int], time] = {}
"""One ``time`` object per distinct ``send_at`` (shared by every subscriber using it)."""
_SEND_AT_TEXTS: dict[str, time] = {}
"""Valid ``send_at`` texts as written → their time (the same few recur across a list)."""
_MAX_SEND_AT_TEXTS = 10_000

_ATEXT_LOCAL_RE = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
)
"""An ASCII dot-atom local part (RFC 5322 3.2.3): valid as it is, never rewritten."""
_MAX_LOCAL_LENGTH = 64
_MAX_ADDRESS_LENGTH = 254
_MAX_KNOWN_DOMAINS = 10_000
_known_domains: set[str] = set()
"""Lower-cased ASCII domains that email_validator accepted (in this process)."""


def _split_simple(value: str) -> tuple[str, str] | None:
    """``(local, domain)`` of a stripped ``local@domain`` with an ASCII dot-atom local part
    and a domain of ASCII letters, digits, dots and hyphens; ``None`` otherwise."""
    address = value.strip()
    local, at, domain = address.rpartition("@")
    if (
        not at
        or len(local) > _MAX_LOCAL_LENGTH
        or len(address) > _MAX_ADDRESS_LENGTH
        or not domain.isascii()
        or not _ATEXT_LOCAL_RE.fullmatch(local)
    ):
        return None
    return local, domain


def _known_domain_address(value: str) -> str | None:
    """The validated address for a simple address at a domain validated before, else ``None``.

    email_validator (~0.2 ms an address, most of it the domain's IDNA checks) accepts an ASCII
    dot-atom local part of at most 64 characters as it is, and normalizes an ASCII domain by
    lower-casing it; the whole address is then lower-cased here. So for such an address at a
    domain it already accepted, the result is known without asking it again.
    """
    parts = _split_simple(value)
    if parts is None or parts[1].lower() not in _known_domains:
        return None
    return value.strip().lower()


def _remember_domain(value: str, normalized: str) -> None:
    parts = _split_simple(value)
    if parts is None or normalized != value.strip().lower():
        return
    if len(_known_domains) >= _MAX_KNOWN_DOMAINS:
        _known_domains.clear()
    _known_domains.add(parts[1].lower())


_EXCERPT_DIGITS = 12
"""Numbers with more digits than this are described by their size, not written out."""
_EXCERPT_CHARS = 20


def _number_excerpt(value: Any) -> str:
    """``value`` for an error message, short whatever its size (a 5,000-digit integer cannot
    even be turned into a string: Python's digit limit)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if abs(value) < 10**_EXCERPT_DIGITS:
            return str(value)
        try:
            return f"a number of {len(str(abs(value))):,} digits"
        except ValueError:  # past Python's limit on converting an int to a string
            return f"a number of about {int(abs(value).bit_length() * _LOG10_2):,} digits"
    if isinstance(value, str) and len(value) > _EXCERPT_CHARS:
        return f"{value[:_EXCERPT_CHARS]!r}… ({len(value):,} characters)"
    if isinstance(value, str | float):
        return repr(value)
    return f"a {type(value).__name__}"


_LOG10_2 = 0.30103
"""log10(2): decimal digits per bit."""


def _no_duplicates(value: tuple[str, ...], key: Any) -> tuple[str, ...]:
    seen: dict[str, int] = {}
    for i, item in enumerate(value):
        k = key(item)
        if k in seen:
            raise _custom("duplicate", f"{item[:80]!r} is listed twice (items {seen[k]} and {i})")
        seen[k] = i
    return value


@functools.cache
def _zone_names() -> tuple[str, ...]:
    return tuple(sorted(zoneinfo.available_timezones()))


def _frozen(self: Subscriber, name: str, value: Any = None) -> None:
    raise ValidationError.from_exception_data(
        type(self).__name__, [{"type": "frozen_instance", "loc": (name,), "input": value}]
    )


# As a BaseModel did: a ValidationError, not dataclasses.FrozenInstanceError. Set after the
# class is made (a frozen dataclass may not define them); pydantic and pickle never call them.
Subscriber.__setattr__ = _frozen  # type: ignore[method-assign,assignment]
Subscriber.__delattr__ = _frozen  # type: ignore[method-assign,assignment]
Subscriber.model_fields = dict(Subscriber.__pydantic_fields__)  # type: ignore[attr-defined]
_ADAPTER: TypeAdapter[Subscriber] = TypeAdapter(Subscriber)
_FIELDS = tuple(Subscriber.model_fields)
_CROSS_FIELD = frozenset({"only_matching_without_keywords", "like_and_dislike"})
"""Error types of the model validator (their ``ctx["field"]`` names the option to blame)."""
_DEFAULT_FIELDS = tuple(f for f in _FIELDS if f not in PER_SUBSCRIBER_ONLY)


# --- the list ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubscriberList:
    """The validated contents of a subscribers file. Treat it as read-only.

    Attributes:
        subscribers: every subscriber (active or not) in file order, ``defaults`` applied.
        defaults: the validated ``defaults:`` mapping as written (option name → value);
            empty when the file has none.
        path: the file it was read from.
    """

    subscribers: list[Subscriber]
    defaults: dict[str, Any] = field(default_factory=dict)
    path: Path = Path()

    @functools.cached_property
    def _by_email(self) -> dict[str, Subscriber]:
        # Built on the first lookup (a send never looks up: ~40 bytes a subscriber saved).
        return {s.email: s for s in self.subscribers}

    def get(self, email: str) -> Subscriber | None:
        """The subscriber with this address (compared normalized: case, NFC, IDNA), or ``None``."""
        return self._by_email.get(normalize_email(email))

    @property
    def active(self) -> list[Subscriber]:
        """The subscribers with ``active: true``, in file order."""
        return [s for s in self.subscribers if s.active]

    def __len__(self) -> int:
        return len(self.subscribers)

    def __iter__(self) -> Iterator[Subscriber]:
        return iter(self.subscribers)
