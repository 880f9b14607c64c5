"""Inlining the ``<style>`` rules of a rendered HTML document (premailer), with a block cache.

Cost: premailer dominates (lxml parse, one XPath query per CSS rule, serialization). One
:class:`premailer.Premailer` instance is built per :class:`Renderer` and reused for every
message (``Premailer(html=None)`` + ``transform(html)``); premailer caches the parsed
stylesheet, the compiled selectors and the parsed declarations process-wide, and
:class:`_CachingPremailer` also memoizes, per distinct ``<style>`` text, the rule list and the
serialized ``@media`` CSS that premailer would otherwise rebuild with cssutils for every
message (37 ms → 9 ms for a ten-paper digest). Only the first message pays for cssutils.
premailer also runs one XPath query per rule over the whole document; rules whose classes no
element of the document has are left out of that loop
(:meth:`_CachingPremailer.transform_only_present`), which cannot change the output.

Per-paper cache: most of a transform is proportional to the document's size, and a digest is
mostly paper blocks that recur across subscribers (the same paper at the same rank with the
same highlights). A template may mark each repeated block ``<!--digest:block-->`` …
``<!--digest:end-->`` (the packaged one marks each paper row). When every selector of its
``<style>`` blocks is context-free (a tag, classes and ids only: no combinator, no pseudo-class),
an element's inlined style depends on that element alone, so :meth:`Renderer.inline` runs
premailer on the document with each block replaced by a placeholder comment and splices the
cached inlined blocks back; blocks not seen yet stay in that document, marked (premailer keeps
comments), and are cached from its output. The result is byte-for-byte premailer's on the whole
document (tested), at a fraction of the cost. Any other stylesheet, or a template without
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from typing import Any

import cssutils
from premailer import Premailer

# cssutils reports every property it does not know (mso-*, color-scheme, -webkit-*) through
# its own logger at ERROR/WARNING level; the CSS is ours and fine, so only CRITICAL passes.
cssutils.log.setLevel(logging.CRITICAL)

#: Distinct <style> blocks whose parsed rules a Renderer keeps (a template whose CSS varies
#: per message would otherwise grow the cache without bound).
_MAX_CACHED_STYLESHEETS = 32

BLOCK_START = "<!--digest:block-->"
"""Marks the start of a repeated block (one paper) in the HTML template's output."""
BLOCK_END = "<!--digest:end-->"
"""Marks the end of a repeated block."""
BLOCK_SLOT = "<!--digest:slot-->"
"""Stands for a block in an inlined skeleton (:meth:`BlockInliner.inline_parts`)."""
_BLOCK_RE = re.compile(re.escape(BLOCK_START) + "(.*?)" + re.escape(BLOCK_END), re.DOTALL)
_PIECE_RE = re.compile(
    re.escape(BLOCK_SLOT) + "|" + re.escape(BLOCK_START) + "(.*?)" + re.escape(BLOCK_END),
    re.DOTALL,
)
"""A slot (group None) or a marked block (group: its text) in premailer's output."""
_STYLE_RE = re.compile(r"<style\b([^>]*)>(.*?)</style\s*>", re.DOTALL | re.IGNORECASE)
_SIMPLE_SELECTOR_RE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9-]*|\*)?(?:[.#][A-Za-z_-][\w-]*)*$")
"""A selector matching an element by its own tag, classes and id only (context-free)."""

#: Inlined paper blocks a Renderer keeps (~3 KB each).
_MAX_CACHED_BLOCKS = 4096


PREMAILER_OPTIONS: dict[str, Any] = dict(
    html=None,
    method="html",
    # Media queries and :hover rules cannot be inlined; they stay in a <style> block,
    # premailer marks their declarations !important and must not strip that again.
    keep_style_tags=False,
    strip_important=False,
    remove_classes=False,  # the @media rules select by class
    exclude_pseudoclasses=True,
    disable_link_rewrites=True,
    allow_network=False,
    allow_loading_external_files=False,
    align_floating_images=False,
    # bgcolor= copies of every background (even on <span>) cost ~4 KB per 30 papers;
    # the template sets bgcolor itself where old Outlook needs it (tables, cells). Nor width=
    # / height= from CSS widths: an image's width="100%" and height="auto" would be wrong for
    # Outlook, which sizes images by the attribute (the template sets width="536").
    disable_basic_attributes=["bgcolor", "width", "height"],
    disable_validation=True,
    cache_css_parsing=True,
    cssutils_logging_level=logging.CRITICAL,
)
"""The options of the premailer instance every Renderer uses."""


class BlockInliner:
    """Inlines documents with premailer, caching marked blocks (see the module docstring).

    One per :class:`~digest.render.Renderer` (thread-safe): the premailer instance and its CSS
    caches, and the inlined text of up to :data:`_MAX_CACHED_BLOCKS` blocks.
    """

    def __init__(self, max_blocks: int = _MAX_CACHED_BLOCKS) -> None:
        self.premailer = _CachingPremailer(**PREMAILER_OPTIONS)
        self.max_blocks = max_blocks
        """Inlined blocks kept (the splicer keeps its own, so it needs only a few here)."""
        self._blocks: OrderedDict[tuple[tuple[str, ...], str], str] = OrderedDict()
        self._style_verdicts: dict[tuple[str, ...], tuple[tuple[str, ...], bool]] = {}
        self._lock = threading.Lock()
        self.block_hits = 0
        """Paper blocks whose inlined HTML came from the cache (statistics)."""
        self.block_misses = 0
        """Paper blocks inlined by premailer because they were not cached yet (statistics)."""

    def inline(self, html: str) -> str:
        """``html`` with its ``<style>`` rules inlined (``@media`` rules kept in ``<style>``).

        Block markers (:data:`BLOCK_START` … :data:`BLOCK_END`) are removed; marked blocks
        are inlined once per distinct text and cached when the stylesheet allows it (see the
        module docstring); the result is the same as :meth:`inline_whole` on the unmarked
        document.
        """
        if BLOCK_START not in html:
            return self.inline_whole(html)
        parts = self.inline_parts(html)
        if parts is None:
            return self.inline_whole(unmark(html))
        skeleton, blocks = parts
        pieces = skeleton.split(BLOCK_SLOT)
        out = [pieces[0]]
        for block, after in zip(blocks, pieces[1:], strict=True):
            out.append(block)
            out.append(after)
        return "".join(out)

    def inline_parts(self, html: str) -> tuple[str, list[str]] | None:
        """``html``'s marked blocks and the rest, each inlined as in the whole document.

        Returns:
            ``(skeleton, blocks)``: the inlined document with each marked block replaced by
            :data:`BLOCK_SLOT` (in document order), and the inlined text of each block, such
            that putting the blocks back into the slots gives :meth:`inline` of ``html``.
            ``None`` when that cannot be done exactly: the stylesheet is not context-free,
            markers are unbalanced, or the document already holds a slot.
        """
        if BLOCK_SLOT in html:
            return None
        blocks: list[str] = []

        def to_slot(m: re.Match[str]) -> str:
            blocks.append(m.group(1))
            return BLOCK_SLOT

        skeleton = _BLOCK_RE.sub(to_slot, html)
        styles = self._context_free_styles(skeleton)
        if styles is None or BLOCK_START in skeleton or BLOCK_END in skeleton:
            return None
        cached = self._cached_blocks(styles, blocks)
        # One premailer pass over the skeleton with the blocks not cached yet left in place,
        # still marked (comments survive premailer), and a slot for each cached one.
        slots = iter(range(len(blocks)))
        document = _BLOCK_RE.sub(
            lambda m: m.group(0) if cached[next(slots)] is None else BLOCK_SLOT, html
        )
        inlined = self.inline_whole(document)
        pieces = _PIECE_RE.split(inlined)
        # re.split with one group: text, (slot | inlined block), text, ...; a slot's group is
        # None, a block's is its inlined text.
        found = pieces[1::2]
        expected = [hit is None for hit in cached]
        # Different only if the HTML parser moved a slot or a marker: then inline it whole.
        if [piece is not None for piece in found] != expected:  # pragma: no cover
            return None
        new = [(b, p) for b, p in zip(blocks, found, strict=True) if p is not None]
        if new:
            self._cache_blocks(styles, [b for b, _ in new], [p for _, p in new])
        out = [pieces[0]]
        for after in pieces[2::2]:
            out.append(BLOCK_SLOT)
            out.append(after)
        inlined_blocks = [
            hit if hit is not None else piece
            for hit, piece in zip(cached, found, strict=True)
            if hit is not None or piece is not None
        ]
        return "".join(out), inlined_blocks

    def inline_whole(self, html: str) -> str:
        """``html`` inlined by premailer in one pass (no block cache)."""
        return self.premailer.transform_only_present(html)

    def _cached_blocks(self, styles: tuple[str, ...], blocks: list[str]) -> list[str | None]:
        """The cached inlined text of each block, ``None`` for a block not cached yet."""
        out: list[str | None] = []
        with self._lock:
            for block in blocks:
                hit = self._blocks.get((styles, block))
                if hit is None:
                    self.block_misses += 1
                else:
                    self.block_hits += 1
                    self._blocks.move_to_end((styles, block))
                out.append(hit)
        return out

    def _cache_blocks(self, styles: tuple[str, ...], blocks: list[str], inlined: list[str]) -> None:
        with self._lock:
            for block, result in zip(blocks, inlined, strict=True):
                self._blocks[(styles, block)] = result
            while len(self._blocks) > self.max_blocks:
                self._blocks.popitem(last=False)

    def _context_free_styles(self, html: str) -> tuple[str, ...] | None:
        """The ``<style>`` blocks of ``html`` if every inlined selector is context-free."""
        found = list(_STYLE_RE.finditer(html))
        styles = tuple(m.group(0) for m in found)
        known = self._style_verdicts.get(styles)
        if known is None:
            verdict = len(found) == html.lower().count("<style") and all(
                _is_context_free(self.premailer, m.group(1), m.group(2), index)
                for index, m in enumerate(found)
            )
            with self._lock:
                if len(self._style_verdicts) >= _MAX_CACHED_STYLESHEETS:
                    self._style_verdicts.clear()
                known = self._style_verdicts.setdefault(styles, (styles, verdict))
        # The first copy of these styles is the one returned and kept in the block cache's
        # keys: one ~6 KB stylesheet text, not one per cached block.
        styles, verdict = known
        return styles if verdict else None


class _CachingPremailer(Premailer):  # type: ignore[misc]  # premailer is untyped
    """A :class:`premailer.Premailer` that turns each distinct ``<style>`` text into rules once.

    premailer caches the cssutils parse of a stylesheet, but on every ``transform`` it still
    walks the parsed sheet to rebuild its ``(specificity, selector, declarations)`` rules and
    re-serializes the ``@media`` rules with cssutils: about 75 % of a transform's time for a
    ten-paper digest. Our ``<style>`` block is the same in every message, so both results are
    memoized here, keyed by the CSS text (and the block's position). The result is identical:
    the rules are immutable tuples and the leftover CSS string is what premailer would build.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._rules_cache: dict[tuple[str, int], tuple[list[Any], list[Any]]] = {}
        self._leftover_css: dict[int, tuple[list[Any], str]] = {}
        self._required_classes: dict[str, frozenset[str] | None] = {}
        self._lock = threading.Lock()
        self._local = threading.local()

    def transform_only_present(self, html: str) -> str:
        """``transform(html, pretty_print=False)``, skipping rules that cannot match ``html``.

        premailer runs one XPath query over the whole document per CSS rule (~30 µs each, 45
        rules in the packaged stylesheet), also for rules whose classes no element of this
        document has: most of them in a document of a few paper blocks. A rule made of a tag,
        classes and an id only (:data:`_SIMPLE_SELECTOR_RE`) is left out when one of its
        classes appears in none of ``html``'s ``class`` attributes; it would match nothing,
        so the output is unchanged. The class list errs on the side of too many (any
        ``class=`` text counts); an attribute with a character reference turns this off.
        """
        self._local.classes = _document_classes(html)
        try:
            out: str = self.transform(html, pretty_print=False)
        finally:
            self._local.classes = None
        return out

    def _parse_style_rules(self, css_body: str, ruleset_index: int) -> tuple[list[Any], list[Any]]:
        key = (css_body, ruleset_index)
        hit = self._rules_cache.get(key)
        if hit is None:
            with self._lock:
                hit = self._rules_cache.get(key)
                if hit is None:
                    if len(self._rules_cache) >= _MAX_CACHED_STYLESHEETS:
                        self._rules_cache.clear()
                        self._leftover_css.clear()
                        self._required_classes.clear()
                    hit = super()._parse_style_rules(css_body, ruleset_index)
                    self._rules_cache[key] = hit
        classes: frozenset[str] | None = getattr(self._local, "classes", None)
        if classes is None:
            return hit
        rules, leftover = hit
        kept = [rule for rule in rules if self._may_match(rule[1], classes)]
        return kept, leftover  # the same leftover list: _css_rules_to_string's cache key

    def _may_match(self, selector: str, classes: frozenset[str]) -> bool:
        required = self._required_classes.get(selector, _UNKNOWN)
        if required is _UNKNOWN:
            required = (
                frozenset(_CLASS_IN_SELECTOR_RE.findall(selector))
                if _SIMPLE_SELECTOR_RE.match(selector)
                else None  # anything else is always kept
            )
            self._required_classes[selector] = required
        return required is None or required <= classes

    def _css_rules_to_string(self, rules: list[Any]) -> str:
        # ``rules`` is the leftover list of a cached _parse_style_rules result: same object,
        # same text. The cache entry keeps the list alive, so its id() cannot be reused.
        hit = self._leftover_css.get(id(rules))
        if hit is not None and hit[0] is rules:
            return hit[1]
        with self._lock:
            text: str = super()._css_rules_to_string(rules)
            self._leftover_css[id(rules)] = (rules, text)
        return text


_UNKNOWN: Any = object()
_CLASS_ATTR_RE = re.compile(
    r"""class\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+))""", re.IGNORECASE
)
_CLASS_IN_SELECTOR_RE = re.compile(r"\.([A-Za-z_-][\w-]*)")


def _document_classes(html: str) -> frozenset[str] | None:
    """Every class name in ``html``'s ``class`` attributes (a superset), or ``None`` when an
    attribute holds a character reference (its decoded value is not known here)."""
    names: set[str] = set()
    for m in _CLASS_ATTR_RE.finditer(html):
        value = m.group(1) or m.group(2) or m.group(3) or ""
        if "&" in value:
            return None
        names.update(value.split())
        names.update(re.split(r"[ \t\r\n\f]+", value))
    return frozenset(names)


def unmark(html: str) -> str:
    """``html`` without block markers (:data:`BLOCK_START`, :data:`BLOCK_END`)."""
    return html.replace(BLOCK_START, "").replace(BLOCK_END, "")


def _is_context_free(premailer: Premailer, attributes: str, css: str, index: int) -> bool:
    """Whether every selector premailer would inline from this ``<style>`` is context-free."""
    if "media=" in attributes.lower():  # premailer may skip it: keep the exact whole path
        return False
    rules, _leftover = premailer._parse_style_rules(css, index)
    return all(_SIMPLE_SELECTOR_RE.match(selector) for _spec, selector, _bulk in rules)
