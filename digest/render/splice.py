"""The HTML part by splicing: pieces inlined once, a message assembled from them (issue 13).

premailer costs ~4 ms a message even with the paper-block cache of :mod:`digest.render.inline`,
because the rest of the document (the *skeleton*: head, ``<style>``, header, footer) holds the
subscriber's name, address and links and is parsed, matched and serialized again for every
message. When every inlined selector is context-free, an element's inlined style depends only
on its own tag, classes and id, never on its text or its other attributes. So:

* the template is rendered with each per-message value replaced by an ASCII placeholder
  (``xqdgst3q``: letters and digits, which Jinja's escaping, lxml's parser and its serializer
  all leave alone, in text and in URL attributes);
* the result is inlined once (:meth:`~digest.render.inline.BlockInliner.inline_parts`) and cut
  at the placeholders into *pieces*: the skeleton once per distinct shape (which optional
  parts it has, the paper count, the edition's labels), each paper block once per (paper,
  matched keywords, thumbnails, whether it has a why line, whether it opens the fillers,
  whether it has feedback links);
* a message is then the pieces joined, each placeholder replaced by its value serialized the
  way lxml would have serialized it there (text: ``&``, ``<``, ``>`` escaped; a URL attribute:
  URI-escaped by libxml2). Values with characters outside a small, self-checked set are
  serialized by lxml itself (a tiny document, cached per value).

The output is byte for byte what :meth:`Renderer.inline <digest.render.Renderer.inline>` gives
on the real document (tested on hostile values). Where that cannot be guaranteed the caller
falls back to the exact path, per message: :meth:`Splicer.html` returns ``None``. It is used only
with the packaged HTML template, whose per-message values are printed whole (``{{ name }}``) or
tested for truth (``{% if name %}``), never compared or filtered: a template of one's own
(``DIGEST_TEMPLATES_DIR``) keeps the exact path.
"""

from __future__ import annotations

import functools
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from lxml import etree  # type: ignore[import-untyped]  # lxml ships no stubs
from markupsafe import escape

from digest.render.inline import BLOCK_SLOT, BlockInliner
from digest.render.views import PaperView

PLACEHOLDER = "xqdgst{}q"
"""A per-message value while rendering and inlining (ASCII letters and digits only)."""
_PLACEHOLDER_RE = re.compile(r"xqdgst(\d+)q")
_PLACEHOLDER_ANY_CASE = re.compile(r"xqdgst", re.IGNORECASE)

# Slots of the skeleton (values of the template variables of the same name).
SKELETON_SLOTS = (
    "subject",
    "preheader",
    "name",
    "email",
    "keywords",
    "unsubscribe_url",
    "preferences_url",
    "archive_url",
)
# Slots of a paper block.
RANK, WHY, LIKE, DISLIKE = range(len(SKELETON_SLOTS), len(SKELETON_SLOTS) + 4)
_ESCAPED_SLOTS = frozenset({LIKE, DISLIKE})
"""Slots whose value goes in as ``markupsafe.escape(value)``, as the exact path puts the
feedback links in after inlining."""


_MAX_SKELETONS = 256
_MAX_BLOCKS = 4096
"""Cached paper blocks (~3 KB each)."""
_MAX_SERIALIZED = 8192
"""Cached lxml serializations of values outside the fast set."""

_URL_ATTRIBUTES = frozenset({"href", "src", "action"})
_TEXT_FAST = re.compile(r"[\t\n\x20-\x7e\xa0-\ud7ff\ue000-\ufdcf\ufdf0-\ufffd]*")
"""Text that lxml's parser and serializer leave as is, but for ``&``, ``<`` and ``>``."""
_URL_FAST = re.compile(r"[A-Za-z0-9\-_.!~*'()@/:=?;#%,+&]+")
"""A URL attribute value that libxml2 does not URI-escape (it escapes ``&`` as ``&amp;``)."""


@dataclass(frozen=True, slots=True)
class _Slot:
    """A placeholder in inlined HTML: which value, and how lxml serializes it there."""

    index: int
    tag: str
    attribute: str | None


@dataclass(frozen=True, slots=True)
class _Blocks:
    """In a skeleton's pieces: where the paper blocks go, and the text between two blocks."""

    separator: str


Piece = str | _Slot | _Blocks
"""Constant text, a value's slot, or the run of paper blocks."""


def _escape_text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _roundtrip(document: str) -> str:
    tree = etree.fromstring(document, etree.HTMLParser()).getroottree()
    out: bytes = etree.tostring(tree, method="html", encoding="utf-8")
    return out.decode("utf-8")


@functools.lru_cache(maxsize=_MAX_SERIALIZED)
def serialized_text(value: str, tag: str) -> str:
    """``value`` as lxml serializes it in the text of a ``tag`` element, after Jinja's escape.

    Raises:
        ValueError: lxml cannot take the value (e.g. a lone surrogate), as on the exact path.
    """
    body = f"<{tag}>qZq{escape(value)}qZq</{tag}>"
    html = f"<html><head>{body}</head><body></body></html>" if tag == "title" else body
    out = _roundtrip(html if tag == "title" else f"<html><body>{html}</body></html>")
    start = out.index("qZq") + 3
    return out[start : out.index("qZq", start)]


@functools.lru_cache(maxsize=_MAX_SERIALIZED)
def serialized_attribute(value: str, tag: str, attribute: str) -> str:
    """``value`` as lxml serializes the whole value of ``attribute`` of a ``tag`` element,
    with the quotes it chose (``"…"``, or ``'…'`` when the value holds a ``"``).

    Raises:
        ValueError: lxml cannot take the value, or drops the attribute.
    """
    out = _roundtrip(f'<html><body><{tag} {attribute}="{escape(value)}"></{tag}></body></html>')
    m = re.search(rf"""<{tag} {attribute}=("[^"]*"|'[^']*')></{tag}>""", out)
    if m is None:
        raise ValueError(f"lxml drops {attribute}={value!r}")
    return m.group(1)


def _fast_paths_hold() -> bool:
    """Whether this lxml serializes the fast sets as :func:`_serialize` assumes."""
    text = "".join(chr(c) for c in range(0x20, 0x7F)) + "\t\n\xa0é€ü✓—中\ufeff🤖"
    url = "https://x.example/a-b_c.d!e~f*g'h(i)j@k/l:m=n?o;p#q%20r,s+t&u=v"
    try:
        return (
            serialized_text(text, "p") == _escape_text(text)
            and serialized_attribute(url, "a", "href") == '"' + url.replace("&", "&amp;") + '"'
        )
    except ValueError:  # pragma: no cover - a broken lxml
        return False


class Splicer:
    """Builds the HTML part from cached inlined pieces (see the module docstring).

    One per :class:`~digest.render.Renderer`; thread-safe.

    Args:
        inliner: the renderer's inliner (premailer and its block cache).
        render_raw: renders the HTML template with a variables dict (the same as the exact
            path, so template errors are raised the same way).
    """

    def __init__(self, inliner: BlockInliner, render_raw: Callable[[dict[str, Any]], str]):
        self._inliner = inliner
        self._render_raw = render_raw
        self._skeletons: OrderedDict[Hashable, list[Piece]] = OrderedDict()
        self._blocks: OrderedDict[Hashable, list[Piece]] = OrderedDict()
        self._lock = threading.Lock()
        self._fast = _fast_paths_hold()
        self.enabled = True
        """False once a template turned out not to splice exactly (then always ``None``)."""
        self.spliced = 0
        """Messages assembled from pieces (statistics)."""
        self.fallbacks = 0
        """Messages left to the exact path (statistics)."""

    # -- per message -------------------------------------------------------------------------

    def html(
        self, variables: Mapping[str, Any], feedback: Mapping[str, tuple[str, str]]
    ) -> str | None:
        """The inlined HTML part for ``variables`` (:meth:`Renderer.context_for`), or ``None``.

        Args:
            variables: the template variables of this message.
            feedback: per arXiv id, the card's (like URL, dislike URL).

        Returns:
            Exactly the exact path's HTML with the feedback links in, or ``None`` when this
            message must take the exact path.

        Raises:
            ConfigError: the template failed while rendering a new shape.
        """
        if not self.enabled:
            return None
        views: Sequence[PaperView] = variables["papers"]
        skeleton_key = _skeleton_key(variables)
        block_keys = [_block_key(v) for v in views]
        with self._lock:
            skeleton = self._skeletons.get(skeleton_key)
            blocks: Sequence[list[Piece] | None] = [self._blocks.get(k) for k in block_keys]
        if skeleton is None or any(b is None for b in blocks):
            learned = self._learn(variables, views, skeleton_key, block_keys)
            if learned is None:
                self.fallbacks += 1
                return None
            skeleton, blocks = learned
        values: list[str | None] = [_value(variables, name) for name in SKELETON_SLOTS]
        out: list[str] = []
        for piece in skeleton:
            if isinstance(piece, str):
                out.append(piece)
            elif isinstance(piece, _Slot):
                if not self._put(out, piece, values[piece.index]):
                    self.fallbacks += 1
                    return None
            else:
                for i, (view, block) in enumerate(zip(views, blocks, strict=True)):
                    assert block is not None
                    if i:
                        out.append(piece.separator)
                    links = feedback.get(view.arxiv_id)
                    block_values: dict[int, str | None] = {
                        RANK: str(view.rank),
                        WHY: view.why or None,
                        LIKE: links[0] if links else None,
                        DISLIKE: links[1] if links else None,
                    }
                    for bp in block:
                        if isinstance(bp, str):
                            out.append(bp)
                        elif isinstance(bp, _Slot) and not self._put(
                            out, bp, block_values[bp.index]
                        ):
                            self.fallbacks += 1
                            return None
        self.spliced += 1
        return "".join(out)

    def _put(self, out: list[str], slot: _Slot, value: str | None) -> bool:
        """Append ``value`` serialized for ``slot``; False if it must take the exact path."""
        if value is None:  # printed while rendering the shape, but absent now: not our shape
            return False
        if slot.index in _ESCAPED_SLOTS:  # always in href="…"
            out.append(f'"{escape(value)}"')
            return True
        try:
            if slot.attribute is None:
                if not value.strip() or value.endswith("\r"):
                    # A blank text node may be dropped by the parser, and a final "\r" joins
                    # a "\n" that follows in the template: only the whole document tells.
                    return False
                fast = self._fast and _TEXT_FAST.fullmatch(value) is not None
                out.append(_escape_text(value) if fast else serialized_text(value, slot.tag))
            elif slot.attribute in _URL_ATTRIBUTES:
                fast = self._fast and _URL_FAST.fullmatch(value) is not None
                out.append(
                    '"' + value.replace("&", "&amp;") + '"'
                    if fast
                    else serialized_attribute(value, slot.tag, slot.attribute)
                )
            else:
                out.append(serialized_attribute(value, slot.tag, slot.attribute))
        except ValueError:
            return False
        return True

    # -- learning a new shape ------------------------------------------------------------------

    def _learn(
        self,
        variables: Mapping[str, Any],
        views: Sequence[PaperView],
        skeleton_key: Hashable,
        block_keys: list[Hashable],
    ) -> tuple[list[Piece], Sequence[list[Piece] | None]] | None:
        """Render and inline this message's shape with placeholders; cache its pieces."""
        probe = dict(variables)
        for index, name in enumerate(SKELETON_SLOTS):
            value = variables.get(name)
            if name == "keywords":
                probe[name] = (PLACEHOLDER.format(index),) if value else ()
            elif value:
                probe[name] = PLACEHOLDER.format(index)
        probe["papers"] = [
            replace(
                v,
                rank=PLACEHOLDER.format(RANK),  # type: ignore[arg-type]  # printed only
                why=PLACEHOLDER.format(WHY) if v.why else "",
                like_url=PLACEHOLDER.format(LIKE) if v.like_url else None,
                dislike_url=PLACEHOLDER.format(DISLIKE) if v.dislike_url else None,
            )
            for v in views
        ]
        raw = self._render_raw(probe)
        parts = self._inliner.inline_parts(raw)
        if parts is None or len(parts[1]) != len(views):
            self.enabled = False  # not a context-free stylesheet, or not a marked template
            return None
        skeleton_html, block_html = parts
        skeleton = _pieces(skeleton_html, allowed=range(len(SKELETON_SLOTS)), blocks=True)
        blocks = [_pieces(b, allowed=range(RANK, DISLIKE + 1), blocks=False) for b in block_html]
        if skeleton is None or any(b is None for b in blocks):
            self.enabled = False  # a placeholder was altered or misplaced: not exact here
            return None
        with self._lock:
            self._skeletons[skeleton_key] = skeleton
            while len(self._skeletons) > _MAX_SKELETONS:
                self._skeletons.popitem(last=False)
            for key, block in zip(block_keys, blocks, strict=True):
                assert block is not None
                self._blocks[key] = block
            while len(self._blocks) > _MAX_BLOCKS:
                self._blocks.popitem(last=False)
        return skeleton, [b for b in blocks if b is not None]


def _value(variables: Mapping[str, Any], name: str) -> str | None:
    value = variables.get(name)
    if name == "keywords":
        return ", ".join(value) if value else None
    return value if value else None


def _skeleton_key(variables: Mapping[str, Any]) -> Hashable:
    """What the skeleton's shape and constant text depend on: every variable that is not a
    slot (the edition's labels, counts, settings), and which slots are filled."""
    constants = tuple(
        (name, value)
        for name, value in sorted(variables.items())
        if name not in SKELETON_SLOTS and name not in ("papers", "subscriber", "edition")
    )
    edition = variables.get("edition")
    filled = tuple(bool(variables.get(name)) for name in SKELETON_SLOTS)
    return (getattr(edition, "key", None), len(variables["papers"]), constants, filled)


def _block_key(view: PaperView) -> Hashable:
    """What a paper block depends on besides its rank, why line and feedback links."""
    return (
        view.paper,
        view.keywords,
        view.thumbnail_url,
        view.thumbnail_alt,
        bool(view.why),
        view.first_filler,
        view.like_url is not None,
        view.dislike_url is not None,
    )


_TAG_RE = re.compile(r"<([A-Za-z][A-Za-z0-9]*)")
_ATTRIBUTE_RE = re.compile(r"\s([A-Za-z_:][-A-Za-z0-9_:.]*)=\"$")


def _pieces(html: str, *, allowed: range, blocks: bool) -> list[Piece] | None:
    """``html`` cut at its placeholders (and block slots); ``None`` if not splice-able here."""
    matches = list(_PLACEHOLDER_RE.finditer(html))
    if len(_PLACEHOLDER_ANY_CASE.findall(html)) != len(matches):
        return None  # a placeholder was changed (a filter, a case change): not exact
    out: list[Piece] = []
    pos = 0
    for m in matches:
        index = int(m.group(1))
        slot = _slot_at(html, m.start(), m.end(), index) if index in allowed else None
        if slot is None:
            return None
        # An attribute's slot takes its quotes too: libxml2 picks them by the value ('"' in it
        # gives single quotes).
        quoted = slot.attribute is not None
        before = html[pos : m.start() - 1 if quoted else m.start()]
        if before:
            out.append(before)
        out.append(slot)
        pos = m.end() + 1 if quoted else m.end()
    if html[pos:]:
        out.append(html[pos:])
    if not blocks:
        return None if any(BLOCK_SLOT in p for p in out if type(p) is str) else out
    return _with_blocks(out)


def _with_blocks(pieces: list[Piece]) -> list[Piece] | None:
    """``pieces`` with its run of block slots made one :class:`_Blocks` piece.

    The blocks must be one run in one text piece, separated by the same text (the packaged
    template puts ``"\n"`` after each); ``None`` otherwise.
    """
    out: list[Piece] = []
    found = False
    for piece in pieces:
        if type(piece) is not str or BLOCK_SLOT not in piece:
            out.append(piece)
            continue
        if found:
            return None
        found = True
        first, *between, last = piece.split(BLOCK_SLOT)
        if len(set(between)) > 1:
            return None
        if first:
            out.append(first)
        out.append(_Blocks(between[0] if between else ""))
        if last:
            out.append(last)
    return out


def _slot_at(html: str, start: int, end: int, index: int) -> _Slot | None:
    """The slot of the placeholder at ``html[start:end]``: in a tag's attribute or in text."""
    open_ = html.rfind("<", 0, start)
    close = html.rfind(">", 0, start)
    if open_ > close:  # inside a tag: must be a whole attribute value
        tag = _TAG_RE.match(html, open_)
        attribute = _ATTRIBUTE_RE.search(html, open_, start)
        if tag is None or attribute is None or html[end : end + 1] != '"':
            return None
        return _Slot(index, tag.group(1).lower(), attribute.group(1).lower())
    if open_ < 0:
        return None
    tag = _TAG_RE.match(html, open_)
    name = tag.group(1).lower() if tag else "p"
    if name in ("script", "style", "textarea", "xmp", "plaintext", "noscript"):
        return None
    return _Slot(index, "title" if name == "title" else "p", None)
