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
  whether it has keyword chips, thumbnails, whether it has a why line, whether it opens the
  fillers, whether it has feedback links): a handful per paper, whatever keywords matched;
* the matched keywords are values too. A block is learned with its title (and summary) as
  ``A<span class="hl">B</span>C`` and its chips as ``(C1, C2)``, in placeholders: the inlined
  text between them is how premailer writes a highlight's tags (``<span class="hl"
  style="…">``, ``</span>``) and the chips' separator (``</span> &nbsp;<span class="chip"
  style="…">``). Per message, the title's plain and highlighted segments (read back from the
  view's markup, :func:`highlight_segments`) are serialized each and put between those tags,
  and the chips (:func:`chip_texts`) joined by that separator; both are cached per value;
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
import html as html_entities
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar

from lxml import etree  # type: ignore[import-untyped]  # lxml ships no stubs
from markupsafe import Markup, escape

from digest.render.inline import _BLOCK_RE, BLOCK_SLOT, BlockInliner
from digest.render.views import (
    HIGHLIGHT_CLOSE,
    HIGHLIGHT_OPEN,
    TEXT_WIDTH,
    PaperView,
    wrap,
)

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
# Placeholders of a paper block's per-message markup while learning: a title (and a summary)
# is probed as ``TITLE<span class="hl">TITLE_HL</span>TITLE_END``, the chips as
# ``(CHIP, CHIP_NEXT)``; each such run becomes one piece (:class:`_Highlighted`, :class:`_Chips`).
TITLE, TITLE_HL, TITLE_END, SUMMARY, SUMMARY_HL, SUMMARY_END, CHIP, CHIP_NEXT = range(
    DISLIKE + 1, DISLIKE + 9
)
_ESCAPED_SLOTS = frozenset({LIKE, DISLIKE})
"""Slots whose value goes in as ``markupsafe.escape(value)``, as the exact path puts the
feedback links in after inlining."""


HTML_CHECKS = 16
"""Messages teaching a new HTML shape that are also made the exact way and compared (a
template using a value other than whole, e.g. ``{{ name[:2] }}``, shows in the first one)."""
_MAX_SKELETONS = 256
_MAX_BLOCKS = 4096
"""Cached paper blocks (~6 KB each; a handful per paper: with or without a why line, chips,
feedback links, the fillers' heading)."""
_MAX_VALUES = 8192
"""Cached serialized titles and summaries, and chip lists, each (~1 KB an entry; one per
distinct highlighting of a paper: 100,000 bench subscribers × 29 papers make ~1,500 titles and
summaries, ~3,500 chip lists)."""
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


@dataclass(frozen=True, slots=True)
class _Highlighted:
    """In a block's pieces: a title or summary (``index``: :data:`TITLE` or :data:`SUMMARY`),
    its text serialized segment by segment, each highlighted segment between ``open`` (the
    inlined ``<span class="hl" style="…">``) and ``close`` (``</span>``)."""

    index: int
    open: str
    close: str


@dataclass(frozen=True, slots=True)
class _Chips:
    """In a block's pieces: the keyword chips, each serialized, joined by ``separator`` (the
    inlined ``</span> &nbsp;<span class="chip" style="…">``)."""

    separator: str


Piece = str | _Slot | _Blocks | _Highlighted | _Chips
"""Constant text, a value's slot, the run of paper blocks, a highlighted text or the chips."""


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
    # The value sits between the first marker and the last: it may hold "qZq" itself.
    start = out.index("qZq") + 3
    return out[start : out.rindex("qZq")]


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


def _text_value(value: str, tag: str, fast: bool) -> str | None:
    """``value`` serialized as lxml does in the text of a ``tag`` element (``"p"``: any but
    ``<title>``), or ``None`` when only the whole document can tell: it ends in ``"\r"``
    (which joins a ``"\n"`` that follows in the template) or lxml cannot take it. The
    caller rules out blank values (a blank text node may be dropped by the parser)."""
    if value.endswith("\r"):
        return None
    if fast and _TEXT_FAST.fullmatch(value) is not None:
        return _escape_text(value)
    try:
        return serialized_text(value, tag)
    except ValueError:
        return None


def highlight_segments(markup: object, fast: bool = True) -> tuple[str, ...] | None:
    """A title's or summary's markup (:func:`~digest.render.views.highlight`) as serialized
    segments: plain, highlighted, plain, … (an odd count; empty ones kept), each as lxml
    serializes it in text.

    Put back together with the inlined tags of ``<span class="hl">`` around each highlighted
    segment, they are what premailer writes for ``markup``.

    Args:
        markup: the view's ``title_html`` or ``summary_html``.
        fast: whether :func:`_fast_paths_hold` (else every segment goes through lxml).

    Returns:
        The segments, or ``None`` when this value must take the exact path: not a
        :class:`~markupsafe.Markup` made of escaped text and highlights only, blank as a whole,
        a blank segment that is not after a highlight (the HTML parser may drop it), or a
        segment :func:`_text_value` refuses.
    """
    if not _is_markup(markup):
        return None
    assert isinstance(markup, Markup)
    # A plain str: Markup's methods would give Markup parts (which escape() leaves alone).
    first, *rest = str(markup).split(HIGHLIGHT_OPEN)
    escaped = [first]
    for part in rest:
        inner, close, after = part.partition(HIGHLIGHT_CLOSE)
        if not close:
            return None
        escaped += (inner, after)
    texts = [html_entities.unescape(e) for e in escaped]
    if any(escape(t) != e for t, e in zip(texts, escaped, strict=True)):
        return None  # not escaped text and highlights alone
    if not "".join(texts).strip():
        return None
    out: list[str] = []
    for i, text in enumerate(texts):
        if not text:
            out.append("")
            continue
        if not text.strip() and (i == 0 or i % 2):
            return None  # blank, and not after a highlight's </span>
        serialized = _text_value(text, "p", fast)
        if serialized is None:
            return None
        out.append(serialized)
    return tuple(out)


def chip_texts(chips: object, fast: bool = True) -> tuple[str, ...] | None:
    """A view's ``chips`` each serialized as lxml does in text, or ``None`` when they must
    take the exact path (none, a chip not a plain ``str``, blank, or refused by
    :func:`_text_value`)."""
    if not _are_chips(chips):
        return None
    assert isinstance(chips, tuple)
    out: list[str] = []
    for chip in chips:
        if not chip.strip():
            return None
        serialized = _text_value(chip, "p", fast)
        if serialized is None:
            return None
        out.append(serialized)
    return tuple(out)


def _is_markup(value: object) -> bool:
    """Printed unescaped by Jinja, as :func:`highlight_segments` reads it (exactly Markup)."""
    return type(value) is Markup


def _are_chips(value: object) -> bool:
    """A non-empty tuple of exactly ``str``: each chip printed escaped by Jinja."""
    return type(value) is tuple and bool(value) and all(type(c) is str for c in value)


class _ValueCache:
    """Serialized per-message values (:func:`highlight_segments`, :func:`chip_texts`) per
    value, ``None`` included; the oldest dropped past :data:`_MAX_VALUES` (thread-safe).

    A hit must be of the kind the cache holds (``accepts``): ``Markup("a")`` equals
    ``"a"``, but Jinja prints them differently. A hit on the very object stored (views share
    their markup and chips) skips that check.

    Args:
        make: ``(value, fast)`` → the serialized segments, or ``None`` (exact path).
        accepts: whether a value is of the kind ``make`` was written for.
        fast: passed to ``make``.
    """

    def __init__(
        self,
        make: Callable[[Any, bool], tuple[str, ...] | None],
        accepts: Callable[[object], bool],
        fast: bool,
    ):
        self._make = make
        self._accepts = accepts
        self._fast = fast
        self.values: OrderedDict[Hashable, tuple[object, tuple[str, ...] | None]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, value: object) -> tuple[str, ...] | None:
        """``make(value, fast)``, made once per distinct value (while cached)."""
        try:
            hit = self.values.get(value)  # raises if unhashable
        except TypeError:  # unhashable: not ours
            return None
        if hit is not None and (hit[0] is value or self._accepts(value)):
            return hit[1]
        made = self._make(value, self._fast)
        if self._accepts(value):
            with self._lock:
                self.values[value] = (value, made)
                if len(self.values) > _MAX_VALUES:
                    self.values.popitem(last=False)
        return made


_P = TypeVar("_P")
"""A piece type: :data:`Piece` (HTML) or :data:`TextPiece`."""


class _ShapeCache(Generic[_P]):
    """The pieces of skeletons and paper blocks one splicer has learned (LRU, thread-safe)."""

    def __init__(self, max_blocks: int) -> None:
        self.max_blocks = max_blocks
        self.skeletons: OrderedDict[Hashable, list[_P]] = OrderedDict()
        self.blocks: OrderedDict[Hashable, list[_P]] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(
        self, skeleton_key: Hashable, block_keys: Sequence[Hashable]
    ) -> tuple[list[_P] | None, Sequence[list[_P] | None]]:
        """The skeleton's pieces and each block's, ``None`` where not learned yet."""
        with self._lock:
            return self.skeletons.get(skeleton_key), [self.blocks.get(k) for k in block_keys]

    def store(
        self, skeleton_key: Hashable, skeleton: list[_P], blocks: Mapping[Hashable, list[_P]]
    ) -> None:
        """Keep a learned skeleton and blocks, dropping the least recently learned."""
        with self._lock:
            self.skeletons[skeleton_key] = skeleton
            while len(self.skeletons) > _MAX_SKELETONS:
                self.skeletons.popitem(last=False)
            self.blocks.update(blocks)
            while len(self.blocks) > self.max_blocks:
                self.blocks.popitem(last=False)


class Splicer:
    """Builds the HTML part from cached inlined pieces (see the module docstring).

    One per :class:`~digest.render.Renderer`; thread-safe.

    Args:
        inliner: the renderer's inliner (premailer and its block cache).
        render_raw: renders the HTML template with a variables dict (the same as the exact
            path, so template errors are raised the same way).
        exact: the exact path's HTML for (variables, feedback): the first
            :data:`HTML_CHECKS` messages that teach a new shape are compared with it, and
            any difference turns splicing off for good.
    """

    def __init__(
        self,
        inliner: BlockInliner,
        render_raw: Callable[[dict[str, Any]], str],
        exact: Callable[[Mapping[str, Any], Mapping[str, tuple[str, str]]], str],
    ):
        self._inliner = inliner
        self._render_raw = render_raw
        self._exact = exact
        self._checks_left = HTML_CHECKS
        self._cache: _ShapeCache[Piece] = _ShapeCache(_MAX_BLOCKS)
        self._fast = _fast_paths_hold()
        self._highlights = _ValueCache(highlight_segments, _is_markup, self._fast)
        self._chips = _ValueCache(chip_texts, _are_chips, self._fast)
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
        skeleton, blocks = self._cache.lookup(skeleton_key, block_keys)
        check = False
        if skeleton is None or any(b is None for b in blocks):
            learned = self._learn(variables, views, skeleton_key, block_keys, skeleton, blocks)
            if learned is None:
                self.fallbacks += 1
                return None
            skeleton, blocks = learned
            check = self._checks_left > 0
        html = self._assemble(variables, feedback, views, skeleton, blocks)
        if html is None:
            self.fallbacks += 1
            return None
        if check:
            self._checks_left -= 1
            if html != self._exact(variables, feedback):
                self.enabled = False
                self.fallbacks += 1
                return None
        self.spliced += 1
        return html

    def _assemble(
        self,
        variables: Mapping[str, Any],
        feedback: Mapping[str, tuple[str, str]],
        views: Sequence[PaperView],
        skeleton: list[Piece],
        blocks: Sequence[list[Piece] | None],
    ) -> str | None:
        values: list[str | None] = [_value(variables, name) for name in SKELETON_SLOTS]
        out: list[str] = []
        for piece in skeleton:
            if isinstance(piece, str):
                out.append(piece)
            elif isinstance(piece, _Slot):
                if not self._put(out, piece, values[piece.index]):
                    return None
            elif isinstance(piece, _Blocks):
                for i, (view, block) in enumerate(zip(views, blocks, strict=True)):
                    assert block is not None
                    if i:
                        out.append(piece.separator)
                    if not self._put_block(out, view, block, feedback.get(view.arxiv_id)):
                        return None
        return "".join(out)

    def _put_block(
        self,
        out: list[str],
        view: PaperView,
        block: list[Piece],
        links: tuple[str, str] | None,
    ) -> bool:
        """Append one paper's block with its values; False if it must take the exact path."""
        values: dict[int, str | None] = {
            RANK: str(view.rank),
            WHY: view.why or None,
            LIKE: links[0] if links else None,
            DISLIKE: links[1] if links else None,
        }
        for piece in block:
            if isinstance(piece, str):
                out.append(piece)
            elif isinstance(piece, _Slot):
                if not self._put(out, piece, values[piece.index]):
                    return False
            elif isinstance(piece, _Highlighted):
                markup = view.title_html if piece.index == TITLE else view.summary_html
                segments = self._highlights.get(markup)
                if segments is None:
                    return False
                out.append(segments[0])
                for k in range(1, len(segments), 2):
                    out += (piece.open, segments[k], piece.close, segments[k + 1])
            elif isinstance(piece, _Chips):
                chips = self._chips.get(view.chips)
                if chips is None:
                    return False
                out.append(piece.separator.join(chips))
        return True

    def _put(self, out: list[str], slot: _Slot, value: str | None) -> bool:
        """Append ``value`` serialized for ``slot``; False if it must take the exact path."""
        if value is None:  # printed while rendering the shape, but absent now: not our shape
            return False
        if slot.index in _ESCAPED_SLOTS:  # always in href="…"
            out.append(f'"{escape(value)}"')
            return True
        if slot.attribute is None:
            # A blank text node may be dropped by the parser: only the whole document tells.
            text = _text_value(value, slot.tag, self._fast) if value.strip() else None
            if text is None:
                return False
            out.append(text)
            return True
        try:
            if slot.attribute in _URL_ATTRIBUTES:
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
        skeleton: list[Piece] | None,
        known: Sequence[list[Piece] | None],
    ) -> tuple[list[Piece], Sequence[list[Piece] | None]] | None:
        """Render and inline this message's shape with placeholders; cache its pieces.

        ``skeleton`` and ``known`` are what the cache already had for it (``None``: not yet).
        """
        probe = _probe(variables)
        probe["papers"] = [
            replace(
                v,
                rank=PLACEHOLDER.format(RANK),  # type: ignore[arg-type]  # printed only
                why=PLACEHOLDER.format(WHY) if v.why else "",
                like_url=PLACEHOLDER.format(LIKE) if v.like_url else None,
                dislike_url=PLACEHOLDER.format(DISLIKE) if v.dislike_url else None,
                title_html=_highlight_probe(TITLE),
                summary_html=_highlight_probe(SUMMARY) if v.summary else v.summary_html,
                chips=(PLACEHOLDER.format(CHIP), PLACEHOLDER.format(CHIP_NEXT)) if v.chips else (),
            )
            for v in views
        ]
        raw = self._render_raw(probe)
        body = raw.find("<body")
        if skeleton is not None and body >= 0:
            # Only paper blocks are new: inline them alone, under the same <head> (its
            # <style>), in a table as in the template. Their inlined text is the same as in
            # the whole document: every selector is context-free (checked by inline_parts).
            marked = [m.group(0) for m in _BLOCK_RE.finditer(raw)]
            if len(marked) != len(views):
                self.enabled = False
                return None
            missing = [i for i, hit in enumerate(known) if hit is None]
            rows = "".join(marked[i] for i in missing)
            host = f"{raw[:body]}<body><table>{rows}</table></body></html>"
            parts = self._inliner.inline_parts(host)
            if parts is None or len(parts[1]) != len(missing):
                self.enabled = False
                return None
            new_html = dict(zip(missing, parts[1], strict=True))
        else:
            parts = self._inliner.inline_parts(raw)
            if parts is None or len(parts[1]) != len(views):
                self.enabled = False  # not a context-free stylesheet, or not a marked template
                return None
            skeleton = _pieces(parts[0], allowed=range(len(SKELETON_SLOTS)), blocks=True)
            new_html = dict(enumerate(parts[1]))
        new_blocks = {
            i: _with_values(_pieces(b, allowed=range(RANK, CHIP_NEXT + 1), blocks=False))
            for i, b in new_html.items()
        }
        if skeleton is None or any(b is None for b in new_blocks.values()):
            self.enabled = False  # a placeholder was altered or misplaced: not exact here
            return None
        blocks = [new_blocks.get(i) or known[i] for i in range(len(views))]
        self._cache.store(
            skeleton_key,
            skeleton,
            {block_keys[i]: b for i, b in new_blocks.items() if b is not None},
        )
        return skeleton, blocks


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
    """What a paper block depends on besides its rank, why line, feedback links and the
    matched keywords (its highlights and chips are values: :class:`_Highlighted`,
    :class:`_Chips`): whether it has chips, not which."""
    return (
        view.paper,
        bool(view.chips),
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


def _highlight_probe(index: int) -> Markup:
    """A title's or summary's markup while learning: ``TITLE<span class="hl">TITLE_HL</span>
    TITLE_END`` in placeholders (``index``: :data:`TITLE` or :data:`SUMMARY`), so that the
    inlined block shows the highlight's inlined tags between them."""
    return Markup(
        PLACEHOLDER.format(index)
        + HIGHLIGHT_OPEN
        + PLACEHOLDER.format(index + 1)
        + HIGHLIGHT_CLOSE
        + PLACEHOLDER.format(index + 2)
    )


_OPEN_SPAN = re.compile(r"<span\b[^<>]*>")
_CLOSE_SPAN = re.compile(re.escape(HIGHLIGHT_CLOSE))
_CHIP_SEPARATOR = re.compile(r"</span>[^<>]*<span\b[^<>]*>")
_RUNS: dict[int, tuple[tuple[int, ...], tuple[re.Pattern[str], ...]]] = {
    TITLE: ((TITLE, TITLE_HL, TITLE_END), (_OPEN_SPAN, _CLOSE_SPAN)),
    SUMMARY: ((SUMMARY, SUMMARY_HL, SUMMARY_END), (_OPEN_SPAN, _CLOSE_SPAN)),
    CHIP: ((CHIP, CHIP_NEXT), (_CHIP_SEPARATOR,)),
}
"""Per first placeholder of a run: its placeholders, and the shape of the text between two."""


def _with_values(pieces: list[Piece] | None) -> list[Piece] | None:
    """A block's ``pieces`` with the runs of the highlight and chip placeholders (see
    :func:`_highlight_probe`) made :class:`_Highlighted` and :class:`_Chips` pieces; ``None``
    if ``pieces`` is, or if such a placeholder is not in a run of the expected shape (text
    slots around one inlined ``<span …>`` and ``</span>``, or around a chip separator)."""
    if pieces is None:
        return None
    out: list[Piece] = []
    i = 0
    while i < len(pieces):
        piece = pieces[i]
        if not isinstance(piece, _Slot) or piece.index < TITLE:
            out.append(piece)
            i += 1
            continue
        if piece.index not in _RUNS:
            return None  # a run's inner or last placeholder alone
        indexes, shapes = _RUNS[piece.index]
        run = pieces[i : i + 2 * len(indexes) - 1]
        slots, texts = run[::2], run[1::2]
        if len(slots) != len(indexes) or any(
            not isinstance(s, _Slot) or s.index != n or s.attribute is not None or s.tag != "p"
            for s, n in zip(slots, indexes, strict=False)
        ):
            return None
        between = [t for t in texts if type(t) is str]
        if len(between) != len(shapes) or any(
            not shape.fullmatch(t) for t, shape in zip(between, shapes, strict=True)
        ):
            return None
        if piece.index == CHIP:
            out.append(_Chips(between[0]))
        else:
            out.append(_Highlighted(piece.index, between[0], between[1]))
        i += len(run)
    return out


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


# -- the text part ---------------------------------------------------------------------------

BLOCK_BEGIN_MARK = "xqdgstbq"
"""``block_start`` while learning a text shape: where a paper's part of the text begins."""
BLOCK_END_MARK = "xqdgsteq"
"""``block_end`` while learning: where it ends."""
RANK_MARK = "\x1a\x1a\x1a"
"""A paper's rank while learning a text shape: three characters, so that the packaged
template's ``(p.rank ~ ".").ljust(4)`` is four wide as for every rank up to 999, and the
title's line breaks are those of any rank. ``RANK_MARK.`` then becomes ``"3.  "``."""
CHIPS_TEXT = 64
"""Slot of a text paper part: its ``p.chips`` joined by ``", "`` (the "Matched:" line). The
text part's own number, clear of the HTML slots; with it, a paper's text part does not depend
on which keywords matched, only on whether it has chips (a keyword matched only in a field
that is not shown, e.g. the abstract under an AI summary, gives none)."""
_TEXT_BLOCK_SLOTS = frozenset({WHY, CHIPS_TEXT})
"""The slots a text paper part may hold (the rank is a mark, not a slot)."""
_TEXT_TOKEN_RE = re.compile(r"xqdgst(w?)(\d+)q|\x1a\x1a\x1a(\.?)")
_MAX_TEXT_BLOCKS = 8192
"""Cached text parts of papers (~1 KB each; keyed by rank too)."""

_recording = threading.local()


@dataclass(frozen=True, slots=True)
class _Wrap:
    """A ``wrap`` filter call whose arguments held placeholders: done per message."""

    text: str
    width: int
    indent: str
    first_indent: str | None


@dataclass(frozen=True, slots=True)
class _Rank:
    """A paper's rank: ``"3.  "`` (``(rank ~ ".").ljust(4)``) when dotted, else ``"3"``."""

    dotted: bool


@dataclass(frozen=True, slots=True)
class _Raw:
    """A value printed as is (the text template does not escape)."""

    index: int


TextPiece = str | _Raw | _Wrap | _Rank | _Blocks


def wrap_filter(
    text: str, width: int = TEXT_WIDTH, indent: str = "", first_indent: str | None = None
) -> str:
    """The templates' ``wrap`` filter: :func:`~digest.render.views.wrap`, except while a text
    shape is being learned, when a call on a placeholder is recorded and stands as a token."""
    records: list[_Wrap] | None = getattr(_recording, "records", None)
    if records is not None and any(
        isinstance(a, str) and "xqdgst" in a for a in (text, indent, first_indent)
    ):
        records.append(_Wrap(str(text), width, indent, first_indent))
        return f"xqdgstw{len(records) - 1}q"
    return wrap(text, width, indent, first_indent)


class TextSplicer:
    """Builds the text part from cached pieces, as :class:`Splicer` does the HTML part.

    Values go in raw (the text template does not escape); a ``wrap`` whose text holds a value
    (the intro with the keywords, the footer with the address, a why line) is recorded while
    learning and done per message on the real text, so line breaks are the template's.
    A paper's part is cached per :func:`_block_key`, as the HTML block (not per matched
    keywords: its "Matched:" line is a value, :data:`CHIPS_TEXT`), and whether it is last
    (the rule under it); its rank is put in per message.

    Args:
        render_raw: renders the text template with a variables dict.
    """

    def __init__(self, render_raw: Callable[[dict[str, Any]], str]):
        self._render_raw = render_raw
        self._cache: _ShapeCache[TextPiece] = _ShapeCache(_MAX_TEXT_BLOCKS)
        self.enabled = True
        """False once the template turned out not to splice (no markers, a changed value)."""
        self.spliced = 0
        """Messages assembled from pieces (statistics)."""

    def text(self, variables: Mapping[str, Any]) -> str | None:
        """The text part for ``variables`` (feedback placeholders left in), or ``None``.

        Raises:
            ConfigError: the template failed while rendering a new shape.
        """
        if not self.enabled:
            return None
        views: Sequence[PaperView] = variables["papers"]
        last = len(views) - 1
        skeleton_key = _skeleton_key(variables)
        block_keys = [(_block_key(v), i == last) for i, v in enumerate(views)]
        skeleton, blocks = self._cache.lookup(skeleton_key, block_keys)
        learned = None
        if skeleton is None or any(b is None for b in blocks):
            learned = self._learn(variables, views, skeleton_key, block_keys)
            if learned is None:
                return None
            skeleton, blocks = learned
        values = {i: _value(variables, name) for i, name in enumerate(SKELETON_SLOTS)}
        out: list[str] = []
        for piece in skeleton:
            if isinstance(piece, _Blocks):
                for view, block in zip(views, blocks, strict=True):
                    assert block is not None
                    block_values = {
                        WHY: view.why or None,
                        CHIPS_TEXT: ", ".join(view.chips) or None,
                    }
                    if not _put_text(out, block, block_values, view.rank):
                        return None
            elif not _put_text(out, [piece], values):
                return None
        text = "".join(out)
        # Every new shape is checked against the template itself (Jinja alone is cheap): a
        # value used other than whole (``{{ name[:2] }}``) turns splicing off for good.
        if learned is not None and text != self._render_raw(dict(variables)):
            self.enabled = False
            return None
        self.spliced += 1
        return text

    def _learn(
        self,
        variables: Mapping[str, Any],
        views: Sequence[PaperView],
        skeleton_key: Hashable,
        block_keys: Sequence[Hashable],
    ) -> tuple[list[TextPiece], Sequence[list[TextPiece] | None]] | None:
        probe = _probe(variables)
        probe["papers"] = [
            replace(
                v,
                rank=RANK_MARK,  # type: ignore[arg-type]  # printed and joined only
                why=PLACEHOLDER.format(WHY) if v.why else "",
                chips=(PLACEHOLDER.format(CHIPS_TEXT),) if v.chips else (),
            )
            for v in views
        ]
        probe["block_start"] = BLOCK_BEGIN_MARK
        probe["block_end"] = BLOCK_END_MARK
        records: list[_Wrap] = []
        _recording.records = records
        try:
            raw = self._render_raw(probe)
        finally:
            _recording.records = None
        parts = _cut_blocks(raw, len(views))
        if parts is None:
            self.enabled = False
            return None
        head, block_texts, tail = parts
        skeleton = _text_pieces(head, records, range(len(SKELETON_SLOTS)))
        end = _text_pieces(tail, records, range(len(SKELETON_SLOTS)))
        blocks = [_text_pieces(b, records, _TEXT_BLOCK_SLOTS) for b in block_texts]
        if skeleton is None or end is None or any(b is None for b in blocks):
            self.enabled = False
            return None
        whole: list[TextPiece] = [*skeleton, *([_Blocks("")] if views else []), *end]
        new = {key: b for key, b in zip(block_keys, blocks, strict=True) if b is not None}
        self._cache.store(skeleton_key, whole, new)
        return whole, blocks


def _probe(variables: Mapping[str, Any]) -> dict[str, Any]:
    """``variables`` with each filled skeleton slot replaced by its placeholder."""
    probe = dict(variables)
    for index, name in enumerate(SKELETON_SLOTS):
        value = variables.get(name)
        if name == "keywords":
            probe[name] = (PLACEHOLDER.format(index),) if value else ()
        elif value:
            probe[name] = PLACEHOLDER.format(index)
    return probe


def _cut_blocks(raw: str, count: int) -> tuple[str, list[str], str] | None:
    """``raw`` as (before the papers, each paper's part, after); ``None`` if not so marked."""
    if count == 0:
        return (raw, [], "") if BLOCK_BEGIN_MARK not in raw else None
    first = raw.find(BLOCK_BEGIN_MARK)
    last = raw.rfind(BLOCK_END_MARK)
    if first < 0 or last < 0:
        return None
    inner = raw[first + len(BLOCK_BEGIN_MARK) : last]
    blocks = inner.split(BLOCK_END_MARK + BLOCK_BEGIN_MARK)
    if len(blocks) != count or any(BLOCK_BEGIN_MARK in b or BLOCK_END_MARK in b for b in blocks):
        return None
    return raw[:first], blocks, raw[last + len(BLOCK_END_MARK) :]


def _text_pieces(
    text: str, records: list[_Wrap], allowed: Collection[int]
) -> list[TextPiece] | None:
    """``text`` cut at its tokens; ``None`` if a token is foreign or a value was altered."""
    tokens = list(_TEXT_TOKEN_RE.finditer(text))
    if len(_PLACEHOLDER_ANY_CASE.findall(text)) != sum(1 for m in tokens if m.group(2)):
        return None
    out: list[TextPiece] = []
    pos = 0
    for m in tokens:
        if text[pos : m.start()]:
            out.append(text[pos : m.start()])
        if m.group(2) is None:  # the rank mark
            if allowed != _TEXT_BLOCK_SLOTS:
                return None  # a rank outside a paper's part
            out.append(_Rank(bool(m.group(3))))
            pos = m.end()
            continue
        n = int(m.group(2))
        if m.group(1):  # a recorded wrap: its arguments may hold only allowed placeholders
            if n >= len(records):
                return None
            record = records[n]
            args = f"{record.text}\x00{record.indent}\x00{record.first_indent or ''}"
            inner = [int(i) for i in _PLACEHOLDER_RE.findall(args)]
            if len(_PLACEHOLDER_ANY_CASE.findall(args)) != len(inner) or any(
                i not in allowed for i in inner
            ):
                return None
            out.append(record)
        else:
            if n not in allowed:
                return None
            out.append(_Raw(n))
        pos = m.end()
    if text[pos:]:
        out.append(text[pos:])
    return out


def _put_text(
    out: list[str],
    pieces: Sequence[TextPiece],
    values: Mapping[int, str | None],
    rank: int = 0,
) -> bool:
    def value(m: re.Match[str]) -> str:
        v = values.get(int(m.group(1)))
        if v is None:
            raise KeyError(m.group(0))
        return v

    for piece in pieces:
        if isinstance(piece, str):
            out.append(piece)
        elif isinstance(piece, _Rank):
            label = f"{rank}."
            if piece.dotted and len(label) > len(RANK_MARK) + 1:
                return False  # rank 1000 or more: wider than the mark
            out.append(label.ljust(len(RANK_MARK) + 1) if piece.dotted else str(rank))
        elif isinstance(piece, _Raw):
            v = values.get(piece.index)
            if v is None:
                return False
            out.append(v)
        elif isinstance(piece, _Wrap):
            try:
                text = _PLACEHOLDER_RE.sub(value, piece.text)
                indent = _PLACEHOLDER_RE.sub(value, piece.indent)
                first = (
                    None
                    if piece.first_indent is None
                    else _PLACEHOLDER_RE.sub(value, piece.first_indent)
                )
            except KeyError:
                return False
            out.append(wrap(text, piece.width, indent, first))
    return True
