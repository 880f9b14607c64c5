"""A reader's library: the papers they keep, read from an export file or fetched by author.

What Zotero, Mendeley, Google Scholar and Paperpile export is read here: BibTeX (``.bib``,
``.bibtex``; bibtexparser 2), RIS (``.ris``; rispy) and CSL-JSON (``.json``; the standard
library's ``json``). Each becomes a list of :class:`LibraryEntry` (title, abstract if any,
publication year, the date it entered the library if the export says, arXiv id if any), which
:mod:`digest.ranking.reader` turns into liked examples of the reader's model.

Every file is size-limited before it is read (:data:`MAX_LIBRARY_BYTES`) and
entry-limited after (:data:`MAX_LIBRARY_ENTRIES`); a broken file is one
:class:`~digest.errors.ConfigError` whose message names the file and, where the parser knows
it, the line (``library.bib:12: ...``). Entries without a title are skipped (they say nothing
about the reader's interests).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path
from typing import Any, Literal

from digest.errors import ConfigError
from digest.subscribers import normalize_arxiv_id
from digest.subscribers.model import LIBRARY_FORMATS

MAX_LIBRARY_BYTES = 5 * 2**20
"""Largest library file read, bytes (5 MiB: a few thousand entries with abstracts)."""
MAX_LIBRARY_ENTRIES = 5000
"""Most entries kept from one library file or one author fetch (the rest are refused)."""
MAX_TITLE_CHARS = 500
"""Characters of a title kept."""
MAX_ABSTRACT_CHARS = 4000
"""Characters of an abstract kept (what the embedding model reads: see MAX_EMBED_CHARS)."""

Format = Literal["bibtex", "ris", "csl-json"]
FORMATS: Mapping[str, Format] = LIBRARY_FORMATS
"""Library file formats by (lower-case) file suffix (the subscriber model checks the same)."""

_ARXIV_IN_TEXT_RE = re.compile(
    r"(?:arxiv[.:/\s]*(?:abs/|pdf/)?|arxiv\.org/(?:abs|pdf)/)"
    r"(\d{4}\.\d{4,5}|[a-z\-]+(?:\.[A-Z]{2})?/\d{7})",
    re.IGNORECASE,
)
"""An arXiv id inside a URL, a DOI (``10.48550/arXiv.2005.14165``) or a journal field."""
_YEAR_RE = re.compile(r"(1[89]\d\d|2\d\d\d)")
_DATE_RE = re.compile(r"(1[89]\d\d|2\d\d\d)[-/](\d{1,2})(?:[-/](\d{1,2}))?")
_LATEX_BRACES_RE = re.compile(r"[{}]")
_LATEX_COMMAND_RE = re.compile(r"\\[a-zA-Z]+\s*")


@dataclass(frozen=True, slots=True)
class LibraryEntry:
    """One paper of a reader's library.

    Attributes:
        title: the title, whitespace collapsed (never empty).
        abstract: the abstract, or ``""`` when the export has none (a title-only entry counts
            with less weight: :data:`~digest.ranking.reader.TITLE_ONLY_WEIGHT`).
        year: the publication year, if known.
        added: the UTC day the paper entered the library (BibTeX ``date-added``/``timestamp``,
            RIS ``Y2``/access date, CSL-JSON ``accessed``), if the export says.
        arxiv_id: the bare arXiv id (from ``eprint``, a URL or an arXiv DOI), if any.
    """

    title: str
    abstract: str = ""
    year: int | None = None
    added: date | None = None
    arxiv_id: str | None = None

    @property
    def text(self) -> str:
        """What is embedded: title and abstract (the shape of a paper's text)."""
        return f"{self.title}\n{self.abstract}" if self.abstract else self.title

    @property
    def key(self) -> str:
        """The entry's key in the vector map: ``library:`` + SHA-256 of :attr:`text`."""
        return LIBRARY_PREFIX + hashlib.sha256(self.text.encode("utf-8")).hexdigest()[:32]

    @property
    def dated(self) -> date | None:
        """The day that says how recent the reader's interest is: ``added``, else 1 July of
        ``year``, else ``None``."""
        if self.added is not None:
            return self.added
        return date(self.year, 7, 1) if self.year else None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able mapping (the cache's form), read back by :meth:`from_json`."""
        out = asdict(self)
        out["added"] = self.added.isoformat() if self.added else None
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> LibraryEntry:
        """The entry :meth:`to_json` wrote."""
        added = data.get("added")
        return cls(
            title=str(data["title"]),
            abstract=str(data.get("abstract") or ""),
            year=data.get("year"),
            added=date.fromisoformat(added) if added else None,
            arxiv_id=data.get("arxiv_id"),
        )


LIBRARY_PREFIX = "library:"
"""Prefix of library entries' keys among a context's vectors."""


def library_format(path: Path | str) -> Format | None:
    """The format of a library file by its suffix (``.bib``, ``.ris``, ``.json``), or ``None``."""
    return FORMATS.get(Path(path).suffix.lower())


def entries_sha(entries: Iterable[LibraryEntry]) -> str:
    """A SHA-256 over the entries as the model sees them (order-independent)."""
    keys = sorted(f"{e.key} {e.dated}" for e in entries)
    return hashlib.sha256("\n".join(keys).encode("utf-8")).hexdigest()


def read_library(path: Path, *, max_bytes: int = MAX_LIBRARY_BYTES) -> list[LibraryEntry]:
    """Read and parse one library file (the size is checked before reading).

    Args:
        path: a ``.bib``/``.bibtex``, ``.ris`` or ``.json`` (CSL-JSON) file.
        max_bytes: the largest file accepted, bytes.

    Returns:
        Its entries with a title, in file order.

    Raises:
        ConfigError: ``PATH: message`` (``PATH:LINE: message`` where the parser gives the
            line): unknown suffix, missing or unreadable file, too large, not UTF-8, broken,
            too many entries.
    """
    fmt = library_format(path)
    if fmt is None:
        raise ConfigError(f"{path}: unknown library format; use a .bib, .ris or .json file")
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise ConfigError(
                f"{path}: {size:,} bytes; a library file may have at most {max_bytes:,} "
                "(export a collection, or split it)"
            )
        with path.open("rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the library file ({e.strerror or e})") from None
    if len(data) > max_bytes:  # grew since stat()
        raise ConfigError(f"{path}: more than {max_bytes:,} bytes")
    return parse_library(data, name=str(path), fmt=fmt)


def parse_library(data: bytes, *, name: str, fmt: Format) -> list[LibraryEntry]:
    """Parse a library export.

    Args:
        data: the file's bytes (UTF-8, a BOM is allowed).
        name: what errors call it (the path, or an upload's file name).
        fmt: ``bibtex``, ``ris`` or ``csl-json``.

    Returns:
        The entries with a title, in file order.

    Raises:
        ConfigError: ``NAME[:LINE]: message`` for a file that is not UTF-8, broken, empty of
            entries, or has more than :data:`MAX_LIBRARY_ENTRIES`.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(f"{name}:{line}: not UTF-8 text; export the library as UTF-8") from None
    if "\x00" in text:
        raise ConfigError(f"{name}: a NUL byte: this is not a {fmt} text file")
    if fmt == "bibtex":
        entries = _parse_bibtex(text, name)
    elif fmt == "ris":
        entries = _parse_ris(text, name)
    else:
        entries = _parse_csl_json(text, name)
    if len(entries) > MAX_LIBRARY_ENTRIES:
        raise ConfigError(
            f"{name}: {len(entries):,} entries; a library may have at most "
            f"{MAX_LIBRARY_ENTRIES:,} (export a collection)"
        )
    return entries


# -- BibTeX -------------------------------------------------------------------------------------


def _parse_bibtex(text: str, name: str) -> list[LibraryEntry]:
    import bibtexparser  # ~40 ms: only when a BibTeX library is read

    library = bibtexparser.parse_string(text)  # type: ignore[attr-defined]
    if library.failed_blocks:
        block = library.failed_blocks[0]
        reason = str(getattr(block, "error", "") or "").splitlines()
        detail = reason[0] if reason else "cannot parse this entry"
        more = len(library.failed_blocks) - 1
        tail = f" ({more} more broken entries)" if more else ""
        line = (block.start_line or 0) + 1
        raise ConfigError(f"{name}:{line}: {_clip(detail)}{tail}")
    if not library.entries and text.strip():
        raise ConfigError(f"{name}: no BibTeX entries (an entry starts with '@article{{key,')")
    out = []
    for entry in library.entries:
        fields = {k.lower(): _latex_text(str(f.value)) for k, f in entry.fields_dict.items()}
        title = fields.get("title", "")
        if not title:
            continue
        arxiv = _arxiv_of(
            fields.get("eprint", "")
            if "arxiv" in fields.get("archiveprefix", "arxiv").lower()
            else "",
            fields.get("url", ""),
            fields.get("doi", ""),
            fields.get("journal", ""),
        )
        out.append(
            make_entry(
                title,
                fields.get("abstract", ""),
                _year(fields.get("year", "") or fields.get("date", "")),
                _date(
                    fields.get("date-added", "")
                    or fields.get("dateadded", "")
                    or fields.get("added-at", "")
                    or fields.get("timestamp", "")
                ),
                arxiv,
            )
        )
    return out


def _latex_text(value: str) -> str:
    """A BibTeX value as plain text: braces and simple commands dropped, whitespace collapsed."""
    plain = _LATEX_COMMAND_RE.sub("", _LATEX_BRACES_RE.sub("", value))
    return " ".join(plain.replace("~", " ").split())


# -- RIS ------------------------------------------------------------------------------------------

_RIS_START_RE = re.compile(r"^TY  - ", re.MULTILINE)
_RIS_END_RE = re.compile(r"^ER  -", re.MULTILINE)


def _parse_ris(text: str, name: str) -> list[LibraryEntry]:
    import rispy

    starts = [m.start() for m in _RIS_START_RE.finditer(text)]
    if not starts:
        raise ConfigError(f"{name}:1: no RIS records (a record starts with 'TY  - ')")
    ends = len(_RIS_END_RE.findall(text))
    if ends < len(starts):
        line = text[: starts[-1]].count("\n") + 1
        raise ConfigError(f"{name}:{line}: a record without its closing 'ER  -' line")
    try:
        records = rispy.loads(text)
    except Exception as e:  # rispy raises IOError/ValueError/KeyError variants
        raise ConfigError(f"{name}: broken RIS file ({_clip(str(e))})") from None
    out = []
    for rec in records:
        title = " ".join(
            str(
                rec.get("title") or rec.get("primary_title") or rec.get("translated_title") or ""
            ).split()
        )
        if not title:
            continue
        urls = rec.get("urls") or []
        out.append(
            make_entry(
                title,
                str(rec.get("abstract") or ""),
                _year(str(rec.get("year") or rec.get("publication_year") or "")),
                _date(str(rec.get("access_date") or "")),
                _arxiv_of(*map(str, urls), str(rec.get("doi") or "")),
            )
        )
    return out


# -- CSL-JSON -------------------------------------------------------------------------------------


def _parse_csl_json(text: str, name: str) -> list[LibraryEntry]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{name}:{e.lineno}: not JSON ({e.msg})") from None
    if isinstance(items, dict) and isinstance(items.get("items"), list):
        items = items["items"]
    if not isinstance(items, list):
        raise ConfigError(f'{name}: CSL-JSON is a list of items ([{{"title": ...}}, ...])')
    if len(items) > MAX_LIBRARY_ENTRIES:
        raise ConfigError(
            f"{name}: {len(items):,} entries; a library may have at most "
            f"{MAX_LIBRARY_ENTRIES:,} (export a collection)"
        )
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError(f"{name}: item {i} is not an object")
        title = _plain(item.get("title"))
        if not title:
            continue
        out.append(
            make_entry(
                title,
                _plain(item.get("abstract")),
                _csl_year(item.get("issued")),
                _csl_date(item.get("accessed")),
                _arxiv_of(_plain(item.get("URL")), _plain(item.get("DOI")), _plain(item.get("id"))),
            )
        )
    return out


def _plain(value: Any) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""


def _csl_parts(value: Any) -> list[int]:
    if not isinstance(value, dict):
        return []
    parts = value.get("date-parts")
    if isinstance(parts, list) and parts and isinstance(parts[0], list):
        try:
            return [int(x) for x in parts[0][:3]]
        except (TypeError, ValueError):
            return []
    raw = value.get("raw")
    m = _DATE_RE.search(raw) if isinstance(raw, str) else None
    return [int(g) for g in m.groups() if g] if m else []


def _csl_year(value: Any) -> int | None:
    parts = _csl_parts(value)
    return parts[0] if parts and 1800 <= parts[0] <= 2999 else None


def _csl_date(value: Any) -> date | None:
    parts = _csl_parts(value)
    if len(parts) < 2:
        return None
    try:
        return date(parts[0], parts[1], parts[2] if len(parts) > 2 else 1)
    except ValueError:
        return None


# -- shared -------------------------------------------------------------------------------------


def make_entry(
    title: str, abstract: str, year: int | None, added: date | None, arxiv: str | None
) -> LibraryEntry:
    """A :class:`LibraryEntry` with whitespace collapsed and title/abstract cut to size."""
    return LibraryEntry(
        title=" ".join(title.split())[:MAX_TITLE_CHARS],
        abstract=" ".join(abstract.split())[:MAX_ABSTRACT_CHARS],
        year=year,
        added=added,
        arxiv_id=arxiv,
    )


def _arxiv_of(*texts: str) -> str | None:
    for text in texts:
        if not text:
            continue
        bare = normalize_arxiv_id(text)
        if bare is not None:
            return bare
        m = _ARXIV_IN_TEXT_RE.search(text)
        if m:
            return normalize_arxiv_id(m[1])
    return None


def _year(text: str) -> int | None:
    m = _YEAR_RE.search(text)
    return int(m[1]) if m else None


def _date(text: str) -> date | None:
    m = _DATE_RE.search(text)
    if not m:
        return None
    try:
        return date(int(m[1]), int(m[2]), int(m[3] or 1))
    except ValueError:
        return None


def _clip(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def dedupe(entries: Sequence[LibraryEntry]) -> list[LibraryEntry]:
    """``entries`` without repeats (same arXiv id, else same title case-insensitively), the
    first kept (a paper in two library files, or in a file and an author list, counts once)."""
    seen: set[str] = set()
    out = []
    for e in entries:
        k = e.arxiv_id or " ".join(e.title.casefold().split())
        if k not in seen:
            seen.add(k)
            out.append(e)
    return out
