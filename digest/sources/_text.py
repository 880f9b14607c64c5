"""Text helpers shared by the sources: arXiv ids, whitespace, HTML, TeX accents, titles.

Private to :mod:`digest.sources`; nothing here knows an API's field names.
"""

from __future__ import annotations

import html
import re
import unicodedata
from html.parser import HTMLParser

# New-style ids (since 2007-04): YYMM.NNNN (to 2014) or YYMM.NNNNN; old-style: archive[.SC]/YYMMNNN.
_NEW_ID = r"\d{4}\.\d{4,5}"
_OLD_ID = r"[a-z]+(?:-[a-z]+)*(?:\.[A-Z]{2})?/\d{7}"
_ID_RE = re.compile(rf"(?P<id>{_NEW_ID}|{_OLD_ID})(?:v\d+)?(?:\.pdf)?", re.ASCII)
_ID_PREFIXES = re.compile(
    r"^(?:oai:arXiv\.org:|arXiv:|https?://(?:www\.|export\.)?arxiv\.org/(?:abs|pdf)/)",
    re.IGNORECASE,
)
_WS_RE = re.compile(r"\s+")
_TITLE_JUNK_RE = re.compile(r"[\W_]+")

# TeX accent commands seen in arXiv author names (``Andr\'e``) → Unicode combining marks.
_TEX_ACCENTS = {
    "'": "\u0301",
    "`": "\u0300",
    "^": "\u0302",
    '"': "\u0308",
    "~": "\u0303",
    "=": "\u0304",
    ".": "\u0307",
    "c": "\u0327",
    "v": "\u030c",
    "u": "\u0306",
    "H": "\u030b",
    "r": "\u030a",
}
_TEX_ACCENT_RE = re.compile(
    r"\{?\\(?P<cmd>['`^\"~=.]|[cvuHr](?=[\s{]))\s*\{?(?P<ch>[A-Za-z]|\\i)\}?\}?"
)


def normalize_arxiv_id(raw: str) -> str | None:
    """The bare arXiv id (no version) in ``raw``, or ``None`` if it holds none.

    Accepts bare ids (``2405.18407``, ``2405.18407v2``, ``hep-th/9901001``), the RSS service's
    ``oai:arXiv.org:2508.13426v1``, ``arXiv:2508.13426`` and abstract/PDF URLs
    (``http://arxiv.org/abs/astro-ph/9904306v1``, ``https://arxiv.org/pdf/2508.13426v1``).

    Args:
        raw: the identifier or URL as the source gave it.

    Returns:
        E.g. ``"2508.13426"`` or ``"astro-ph/9904306"``; ``None`` when ``raw`` is no arXiv id.
    """
    text = _ID_PREFIXES.sub("", raw.strip())
    match = _ID_RE.fullmatch(text)
    return match.group("id") if match else None


def arxiv_id_in_url(url: str) -> str | None:
    """The arXiv id of an ``arxiv.org/abs/…`` or ``arxiv.org/pdf/…`` URL, else ``None``."""
    match = re.match(r"^https?://(?:www\.|export\.)?arxiv\.org/(?:abs|pdf)/(\S+?)/?$", url.strip())
    return normalize_arxiv_id(match.group(1)) if match else None


def collapse_ws(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) turned into one space, stripped."""
    return _WS_RE.sub(" ", text).strip()


def normalize_title(title: str) -> str:
    """A key for matching titles across sources: casefolded, punctuation and spaces removed."""
    return _TITLE_JUNK_RE.sub("", title.casefold())


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in {"p", "br", "div", "li"}:
            self.parts.append(" ")


def html_to_text(markup: str) -> str:
    """Plain text of an HTML fragment: tags dropped, entities decoded, whitespace collapsed."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    return collapse_ws(html.unescape("".join(parser.parts)))


def detex_accents(text: str) -> str:
    """Turn TeX accent commands into Unicode: ``Andr\\'e`` → ``André``, ``{\\"u}`` → ``ü``."""
    if "\\" not in text:
        return text

    def repl(m: re.Match[str]) -> str:
        ch = "i" if m.group("ch") == "\\i" else m.group("ch")
        return unicodedata.normalize("NFC", ch + _TEX_ACCENTS[m.group("cmd")])

    return _TEX_ACCENT_RE.sub(repl, text)
