"""One subscriber's entry as YAML text: where it is in a list, and how it is changed.

A subscribers list is kept as its text, cut into three parts (:func:`split_list`)::

    head      everything up to the first entry: comments, ``defaults:``, ``subscribers:``
    entries   one text per list item: the comment and blank lines before its ``-`` (at the
              item's column or less), its ``-`` line and every line under it
    tail      what follows the last entry (trailing comments at the item's column or less,
              other keys)

Joined again they are the file, byte for byte. Both homes of the list use the parts: the file
(:mod:`digest.subscribers.writeback`) splices one entry's new text into the file; the state
(:mod:`digest.subscribers.home`) stores each entry's text in its row and exports the parts
joined. A change to an entry (:func:`patch_entry`) is a ruamel.yaml round trip of that entry
alone: its comments, key order, quoting and flow style stay, and the rest of the list is
never parsed or written. The change functions (:func:`change_active`, :func:`change_fields`,
:func:`change_add_or_activate`) act on a round-trip document holding ``subscribers:`` (and
``defaults:`` for the values a subscriber gets without setting them).
"""

from __future__ import annotations

import codecs
import functools
import io
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import time
from functools import cached_property
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.scalarstring import DoubleQuotedScalarString
from ruamel.yaml.tokens import CommentToken
from ruamel.yaml.util import load_yaml_guess_indent

from digest.addresses import normalize_email
from digest.subscribers.lines import reads_as_plain
from digest.subscribers.model import Subscriber
from digest.subscribers.yaml import ENTRY_KEY_LINE

DEFAULT_INDENT = 2
"""Column of the items' ``-`` in a list that has none yet (``  - email: …``)."""

_KEY_RE = re.compile(r"^subscribers:[ ]*(?:#[^\r\n]*)?\r?$", re.MULTILINE)
_ITEM_RE = re.compile(r"^( *)-(?=[ \r\n]|$)", re.MULTILINE)
_EMAIL_LINE_RE = re.compile(
    r"^[ ]*(?:-[ ]+)?email:[ ]*(\"(?:[^\"\\\r\n]|\\.)*\"|'(?:[^'\r\n]|'')*'|[^#\r\n]*?)"
    r"[ ]*(?:#[^\r\n]*)?\r?$",
    re.MULTILINE,
)


@dataclass(frozen=True, slots=True)
class Located:
    """One entry found in a list: its index and its text's offsets.

    Attributes:
        index: its place in the list (0-based).
        start: where its text starts (its comment lines).
        stop: where it ends (the next entry's text, or the tail).
    """

    index: int
    start: int
    stop: int


@dataclass(frozen=True)
class ListLayout:
    """A subscribers list's text cut into head, entries and tail (see the module docstring).

    Found lazily: locating one entry (:meth:`locate`) reads only around it (and counts, in C,
    the items before it), so a change of one entry of a 100,000-entry file costs little
    Python work; the offsets of every entry (:meth:`items`) are read once when asked for.

    Attributes:
        text: the whole text (a byte order mark kept as ``\ufeff``).
        indent: the column of the items' ``-``.
        key_end: just after the ``subscribers:`` line.
        first: the start of the first item's ``-`` line (``end`` for an empty list).
        end: where the tail starts (for an empty list: just after the ``subscribers:`` line).
    """

    text: str
    indent: int
    key_end: int
    first: int
    end: int
    _cache: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def head(self) -> str:
        """The text before the first entry."""
        return self.text[: self.span(0)[0]] if len(self) else self.text[: self.end]

    @property
    def tail(self) -> str:
        """The text after the last entry."""
        return self.text[self.end :]

    def __len__(self) -> int:
        count = self._cache.get("count")
        if count is None:
            count = self._cache["count"] = self._count(self.end)
        return int(count)

    def items(self) -> list[int]:
        """Where each entry's ``-`` line starts, in order (read once)."""
        items = self._cache.get("items")
        if items is None:
            pattern = _item_pattern(self.indent)
            items = [m.start() for m in pattern.finditer(self.text, self.first, self.end)]
            self._cache["items"] = items
        return list(items)

    def span(self, i: int) -> tuple[int, int]:
        """``(start, stop)`` offsets of entry ``i``'s text."""
        items = self._cache.get("items") or self.items()
        return self._span(
            items[i], items[i - 1] if i else None, items[i + 1] if i + 1 < len(items) else None
        )

    def _span(self, item: int, previous: int | None, following: int | None) -> tuple[int, int]:
        floor = self.key_end if previous is None else _line_end(self.text, previous)
        start = _lead(self.text, item, floor, self.indent)
        if following is None:
            return start, self.end
        return start, _lead(self.text, following, _line_end(self.text, item), self.indent)

    def entry(self, i: int) -> str:
        """Entry ``i``'s text."""
        start, stop = self.span(i)
        return self.text[start:stop]

    def entries(self) -> list[str]:
        """Every entry's text, in order."""
        return [self.entry(i) for i in range(len(self))]

    def line_of(self, offset: int) -> int:
        """The 1-based line of ``offset``."""
        return self.text.count("\n", 0, offset) + 1

    @cached_property
    def newline(self) -> str:
        """The list's line break (``\r\n`` if its first line ends so, else ``\n``)."""
        first = self.text.find("\n")
        return "\r\n" if first > 0 and self.text[first - 1] == "\r" else "\n"

    def find(self, address: str) -> int | None:
        """The index of the entry whose ``email:`` is ``address`` (normalized), or ``None``."""
        found = self.locate(address)
        return None if found is None else found.index

    def locate(self, address: str) -> Located | None:
        """The entry whose ``email:`` is ``address`` (normalized), or ``None``.

        The address is looked for as text first (the normalized form as written, then in
        any case), and only the entry around it is read; only when that finds nothing and the
        address could be written otherwise (an IDN domain, non-ASCII, an escape) is every
        entry's ``email:`` line read.
        """
        wanted = normalize_email(address)
        found = self._search(self.text, wanted)  # as written: usually the normalized form
        if found is not None:
            return found
        lowered = self._cache.get("lowered")
        if lowered is None:
            lowered = self._cache["lowered"] = self.text.lower()
        found = self._search(lowered, wanted)
        if found is not None:
            return found
        if wanted.isascii() and "xn--" not in wanted and "\\" not in self.text:
            # An ASCII address is written as itself in some case (or escaped: a backslash):
            # not found in any case, it is not there (no need to read every entry).
            return None
        for i in range(len(self)):
            if entry_address(self.entry(i)) == wanted:
                start, stop = self.span(i)
                return Located(i, start, stop)
        return None

    def _search(self, text: str, wanted: str) -> Located | None:
        """The entry of ``wanted`` found where ``text`` (the list's text, or it lower-cased)
        holds it, reading only around each place."""
        at = text.find(wanted, self.first, self.end)
        while at >= 0:
            item = self._item_before(at + 1)
            if item is not None:
                found = self._around(item)
                if at < found.stop and entry_address(self.text[found.start : found.stop]) == wanted:
                    return found
            at = text.find(wanted, at + 1, self.end)
        return None

    def _around(self, item: int) -> Located:
        """The entry whose ``-`` line starts at ``item``."""
        following = _item_pattern(self.indent).search(self.text, item + 1, self.end)
        start, stop = self._span(
            item, self._item_before(item), following.start() if following else None
        )
        return Located(self._count(item), start, stop)

    def _item_before(self, offset: int) -> int | None:
        """The start of the last item line that starts before ``offset``."""
        needle = "\n" + " " * self.indent + "-"
        hi = offset - 2 + len(needle)
        while True:
            at = self.text.rfind(needle, self.first - 1, hi)
            if at < 0:
                return None
            after = at + len(needle)
            if after >= len(self.text) or self.text[after] in " \r\n":
                return at + 1
            hi = at - 1 + len(needle)

    def _count(self, offset: int) -> int:
        """How many item lines start before ``offset`` (counted in C)."""
        needle = "\n" + " " * self.indent + "-"
        hi = offset - 1 + len(needle)
        lo = self.first - 1
        return sum(self.text.count(needle + c, lo, hi) for c in " \r\n")


@functools.cache
def _item_pattern(indent: int) -> re.Pattern[str]:
    return re.compile(rf"^{' ' * indent}-(?=[ \r\n]|$)", re.MULTILINE)


def split_list(text: str) -> ListLayout | None:
    """Cut a subscribers file's text into head, entries and tail.

    Args:
        text: the file's text (decoded as UTF-8; a BOM may stay as ``\ufeff``).

    Returns:
        The layout, or ``None`` when the list is not written the usual way (one
        ``subscribers:`` key line at column 0 with a block list of items under it); such a
        file is changed by a round trip of the whole document instead.
    """
    keys = list(_KEY_RE.finditer(text))
    if len(keys) != 1:
        return None
    key_end = _line_end(text, keys[0].end())
    first = _next_content(text, key_end)
    if first == len(text) or (_column(text, first) == 0 and not _ITEM_RE.match(text, first)):
        # An empty list (`subscribers:` followed by another key or nothing).
        return ListLayout(text, DEFAULT_INDENT, key_end, key_end, key_end)
    item = _ITEM_RE.match(text, first)
    if item is None:
        return None
    indent = len(item.group(1))
    pad = " " * indent
    if indent:
        ends = re.compile(
            rf"^(?: {{0,{indent - 1}}}[^ \r\n#]|{pad}[^ \r\n#-]|{pad}-[^ \r\n])", re.MULTILINE
        )
    else:
        ends = re.compile(r"^(?:[^ \r\n#-]|-[^ \r\n])", re.MULTILINE)
    found = ends.search(text, first)
    end = found.start() if found else len(text)
    layout = ListLayout(text, indent, key_end, first, end)
    last = layout._item_before(end)
    assert last is not None  # the first item at least
    tail = _lead(text, end, _line_end(text, last), indent)
    return ListLayout(text, indent, key_end, first, tail)


def _line_end(text: str, offset: int) -> int:
    """The offset just after the line break of the line holding ``offset``."""
    brk = text.find("\n", offset)
    return len(text) if brk < 0 else brk + 1


def _next_content(text: str, offset: int) -> int:
    """The start of the first line from ``offset`` on that is neither blank nor a comment."""
    while offset < len(text):
        stop = _line_end(text, offset)
        line = text[offset:stop].strip(" \r\n")
        if line and not line.startswith("#"):
            return offset
        offset = stop
    return len(text)


def _column(text: str, offset: int) -> int:
    stop = offset
    while stop < len(text) and text[stop] == " ":
        stop += 1
    return stop - offset


def _lead(text: str, offset: int, floor: int, indent: int) -> int:
    """Where the blank and comment lines (at column ``indent`` or less) right before the line
    at ``offset`` start, not before ``floor``: they go with what follows them."""
    while offset > floor:
        start = text.rfind("\n", 0, offset - 1) + 1
        start = max(start, floor)
        line = text[start:offset].rstrip("\r\n")
        body = line.lstrip(" ")
        if body and not (body.startswith("#") and len(line) - len(body) <= indent):
            break
        offset = start
    return offset


def entry_address(entry: str) -> str | None:
    """The normalized ``email:`` of an entry's text (its first ``email:`` line), or ``None``
    (then, for an entry written unusually (a flow mapping), as the YAML reader reads it)."""
    m = _EMAIL_LINE_RE.search(entry)
    if m is None:
        try:
            doc = YAML(typ="safe", pure=False).load(ENTRY_KEY_LINE + entry)
            raw = doc["subscribers"][0]["email"]
        except (YAMLError, LookupError, TypeError):
            return None
        return normalize_email(raw) if isinstance(raw, str) else None
    raw = m.group(1)
    if raw.startswith('"') and raw.endswith('"') and len(raw) > 1:
        raw = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    elif raw.startswith("'") and raw.endswith("'") and len(raw) > 1:
        raw = raw[1:-1].replace("''", "'")
    return normalize_email(raw.strip())


def patch_entry(
    entry: str, change: Callable[[CommentedMap], bool], defaults: Mapping[str, Any]
) -> str | None:
    """An entry's text with ``change`` applied by a round trip of that entry alone.

    Args:
        entry: the entry's text (one list item, indented as in the list).
        change: mutates the round-trip document (``subscribers:`` holding the entry, and
            ``defaults:``); returns whether anything changed.
        defaults: the list's validated ``defaults:`` (what the subscriber gets unless set).

    Returns:
        The new text (comments, key order, quoting, line breaks of the rest kept), or
        ``None`` if ``change`` changed nothing.

    Raises:
        ruamel.yaml.error.YAMLError: the entry is not YAML (a valid list's never is).
    """
    crlf = "\r\n" in entry
    text = entry.replace("\r\n", "\n") if crlf else entry
    document = ENTRY_KEY_LINE + text
    _, indent, offset = load_yaml_guess_indent(document)
    yaml = round_trip(indent or DEFAULT_INDENT + 2, offset or 0)
    doc = yaml.load(document)
    doc.insert(0, "defaults", CommentedMap(defaults))
    changed = change(doc)
    del doc["defaults"]
    if not changed:
        return None
    return _dumped(yaml, doc, crlf=crlf, trailing_break=entry.endswith("\n"))


def new_entry(fields: Mapping[str, Any], indent: int = DEFAULT_INDENT, newline: str = "\n") -> str:
    """A new entry's text: ``fields`` (``email`` first) written as a list item at ``indent``.

    Strings that would not read back as themselves unquoted are double-quoted, lists are
    written in flow style (``[a, b]``), ``send_at`` quoted (``"07:30"``).
    """
    item = CommentedMap()
    for key, value in fields.items():
        _assign(item, key, value)
    doc = CommentedMap()
    doc["subscribers"] = CommentedSeq([item])
    return _dumped(round_trip(indent + 2, indent), doc, crlf=newline == "\r\n")


def _dumped(yaml: YAML, doc: CommentedMap, *, crlf: bool, trailing_break: bool = True) -> str:
    out = io.StringIO()
    yaml.dump(doc, out)
    dumped = out.getvalue()
    if not dumped.startswith(ENTRY_KEY_LINE):  # pragma: no cover - ruamel always writes it
        raise ValueError("the entry did not round-trip under its key")
    dumped = dumped[len(ENTRY_KEY_LINE) :]
    if not trailing_break:
        dumped = dumped.rstrip("\n")
    return dumped.replace("\n", "\r\n") if crlf else dumped


# -- `active:` by a line edit ---------------------------------------------------------------

FALLBACK = object()
"""What :func:`splice_active` returns when the text's shape needs the round trip."""
_TRUE = ("true", "True", "TRUE")
_FALSE = ("false", "False", "FALSE")


def _value_of(node: MappingNode, key: str) -> tuple[Node, Node] | None:
    for k, v in node.value:
        if isinstance(k, ScalarNode) and k.value == key:
            return k, v
    return None


def _wanted_items(
    subs: SequenceNode, wanted: Mapping[str, bool]
) -> Iterator[tuple[str, MappingNode, tuple[Node, Node]]]:
    """``(address, item, (email key, email value))`` of each entry of ``subs`` whose
    normalized ``email`` is in ``wanted``, in the list's order."""
    for item in subs.value:
        if not isinstance(item, MappingNode):
            continue
        email = _value_of(item, "email")
        if email is None or not isinstance(email[1], ScalarNode):
            continue
        address = normalize_email(str(email[1].value))
        if address in wanted:
            yield address, item, email


def splice_ok(spliced: bytes, wanted: Mapping[str, bool]) -> bool:
    """True if ``spliced`` parses and every wanted address found has its ``active`` value."""
    try:
        root = YAML(typ="safe", pure=False).compose(spliced.decode("utf-8-sig"))
    except (UnicodeDecodeError, YAMLError):
        return False
    subs = _value_of(root, "subscribers") if isinstance(root, MappingNode) else None
    if subs is None or not isinstance(subs[1], SequenceNode):
        return False
    for address, item, _ in _wanted_items(subs[1], wanted):
        active = _value_of(item, "active")
        value = active[1].value if active is not None else "true"
        if value not in (_TRUE if wanted[address] else _FALSE):
            return False
    return True


def splice_active(before: bytes, wanted: Mapping[str, bool]) -> bytes | object | None:
    """``before`` with the ``active`` values of ``wanted`` changed by line edits; ``None``
    if nothing changes; :data:`FALLBACK` if the file's shape needs the round trip."""
    bom = before.startswith(codecs.BOM_UTF8)
    try:
        text = before.decode("utf-8-sig")
        root = YAML(typ="safe", pure=False).compose(text)
    except (UnicodeDecodeError, YAMLError):
        return FALLBACK
    if not isinstance(root, MappingNode):
        return FALLBACK
    defaults = _value_of(root, "defaults")
    if defaults is not None and (
        not isinstance(defaults[1], MappingNode) or _value_of(defaults[1], "active") is not None
    ):
        return FALLBACK
    subs = _value_of(root, "subscribers")
    if subs is None or not isinstance(subs[1], SequenceNode) or subs[1].flow_style:
        return FALLBACK
    lines = text.splitlines(keepends=True)
    edits: list[tuple[int, int, int, str]] = []  # (line, start col, end col, new text)
    inserts: list[tuple[int, str]] = []  # (after line, new line)
    for address, item, email in _wanted_items(subs[1], wanted):
        if item.flow_style:
            return FALLBACK
        want = wanted[address]
        active = _value_of(item, "active")
        if active is not None:
            node = active[1]
            if not isinstance(node, ScalarNode) or node.start_mark.line != node.end_mark.line:
                return FALLBACK
            if node.value in (_TRUE if want else _FALSE):
                continue
            if node.value not in _TRUE + _FALSE or node.style:
                return FALLBACK
            edits.append(
                (
                    node.start_mark.line,
                    node.start_mark.column,
                    node.end_mark.column,
                    str(want).lower(),
                )
            )
        elif not want:
            key, value = email
            if value.start_mark.line != value.end_mark.line:
                return FALLBACK
            line = value.end_mark.line
            ending = "\r\n" if lines[line].endswith("\r\n") else "\n"  # the file's own
            inserts.append((line, " " * key.start_mark.column + "active: false" + ending))
    if not edits and not inserts:
        return None
    for line, start, end, new in edits:
        lines[line] = lines[line][:start] + new + lines[line][end:]
    for line, new in sorted(inserts, reverse=True):
        if not lines[line].endswith("\n"):
            lines[line] += "\n"
        lines.insert(line + 1, new)
    out = "".join(lines).encode("utf-8")
    return codecs.BOM_UTF8 + out if bom else out


# -- changes of a round-trip document (one entry, or the whole file) ----------------------------

_MISSING = object()


def change_active(doc: CommentedMap, email: str, active: bool) -> bool:
    """In the round-trip ``doc``: set ``active`` of ``email``'s entry; whether it changed."""
    entry = _find(doc, email)
    if entry is None or entry.get("active", _default(doc, "active", True)) == active:
        return False
    _set(entry, "active", active)
    return True


def change_fields(doc: CommentedMap, email: str, fields: Mapping[str, Any]) -> bool:
    """In ``doc``: replace fields of one entry (the preferences form); whether it changed.

    A field whose value is what the subscriber already gets (own value, ``defaults`` or the
    built-in default) is left as written; ``None`` removes the key. Lists keep their
    flow/block style.
    """
    entry = _find(doc, email)
    if entry is None:
        return False
    changed = False
    for key, value in fields.items():
        current = entry.get(key, _default(doc, key, model_default(key)))
        if value is None:
            if key in entry:
                del entry[key]
                changed = True
            continue
        if _plain(current) == _plain(value):
            continue
        _assign(entry, key, value)
        changed = True
    return changed


def change_add_or_activate(
    doc: CommentedMap, email: str, *, name: str | None, keywords: Iterable[str]
) -> bool:
    """In ``doc``: append an entry (a confirmed sign-up), or set ``active: true`` if the
    address has one; whether it changed."""
    words = list(keywords)
    entry = _find(doc, email)
    if entry is not None:
        if entry.get("active", _default(doc, "active", True)) is True:
            return False
        _set(entry, "active", True)
        return True
    subs = doc.get("subscribers")
    if subs is None:
        subs = doc["subscribers"] = CommentedSeq()
    new = CommentedMap()
    new["email"] = _scalar(normalize_email(email))
    if name:
        new["name"] = _scalar(name)
    if words:
        new["keywords"] = _flow(words)
    if _default(doc, "active", True) is not True:
        new["active"] = True
    subs.append(new)
    return True


def round_trip(indent: int, offset: int) -> YAML:
    """A ruamel.yaml round-trip loader/dumper: quotes kept, never re-wrapping lines,
    ``indent``/``offset`` the sequences' (the mapping's is 2)."""
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap long lines
    yaml.indent(mapping=2, sequence=indent, offset=offset)
    return yaml


def _find(doc: CommentedMap, email: str) -> CommentedMap | None:
    wanted = normalize_email(email)
    for entry in doc.get("subscribers") or ():
        if isinstance(entry, CommentedMap) and normalize_email(str(entry.get("email", ""))) == (
            wanted
        ):
            return entry
    return None


def _default(doc: CommentedMap, key: str, fallback: Any) -> Any:
    defaults = doc.get("defaults")
    if isinstance(defaults, Mapping) and key in defaults:
        return defaults[key]
    return fallback


def model_default(key: str) -> Any:
    """The built-in default of option ``key`` (a sentinel for an unknown key)."""
    info = Subscriber.model_fields.get(key)
    return _MISSING if info is None else info.default


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    if isinstance(value, time):
        return value.strftime("%H:%M")
    if isinstance(value, str):
        return str(value)
    return value


def _scalar(value: Any) -> Any:
    """``value`` as a write puts it into the file: a string that would not read back as
    itself unquoted (:func:`~digest.subscribers.lines.reads_as_plain`: ``a?`` in a flow
    list, ``yes``, ``1.0``, ``#x``, a leading space) double-quoted, with escapes for what is
    not printable. ruamel's emitter alone would write ``[a?]``, which its own C parser
    refuses."""
    if isinstance(value, str) and not reads_as_plain(value):
        return DoubleQuotedScalarString(value)
    return value


def _flow(items: Iterable[Any]) -> CommentedSeq:
    seq = CommentedSeq(map(_scalar, items))
    seq.fa.set_flow_style()
    return seq


def _assign(entry: CommentedMap, key: str, value: Any) -> None:
    _drop_stale_comment(entry, key)
    if isinstance(value, time):
        value = value.strftime("%H:%M")
    if key == "send_at":
        _set(entry, key, DoubleQuotedScalarString(str(value)))
        return
    if isinstance(value, list | tuple):
        current = entry.get(key)
        if isinstance(current, CommentedSeq):
            current.clear()
            current.extend(map(_scalar, value))
        else:
            _set(entry, key, _flow(value))
        return
    _set(entry, key, _scalar(value))


def _drop_stale_comment(entry: CommentedMap, key: str) -> None:
    """Before ``key``'s value is replaced: drop the comment at the end of its line if it
    quotes the old value (``send_at: "06:30"  # 06:30 in London`` describes 06:30; ``keywords:
    [...]  # her interests`` describes the key and stays). The lines ruamel keeps in the same
    token (blank lines, the comments above the next key) stay."""
    item = entry.ca.items.get(key)
    token = item[2] if item and len(item) > 2 else None
    old = entry.get(key)
    if token is None or isinstance(old, list | dict) or old is None:
        return
    comment = token.value.partition("\n")[0]
    if not comment.lstrip(" ").startswith("#") or str(old) not in comment:
        return
    _, newline, rest = token.value.partition("\n")
    if rest:
        token.value = newline + rest
    else:
        item[2] = None if newline == "" else _newline_token(token)


def _newline_token(token: Any) -> Any:
    token.value = "\n"
    return token


def _set(entry: CommentedMap, key: str, value: Any) -> None:
    """``entry[key] = value``; a new last key takes over the blank lines (and comments) that
    followed the old last key, so the gap before the next entry stays where it was."""
    keys = list(entry.keys())
    appended = key not in entry and keys
    entry[key] = value
    if not appended:
        return
    items = entry.ca.items
    old = items.get(keys[-1])
    token = old[2] if old and len(old) > 2 else None
    if token is None or "\n" not in token.value:
        return
    head, _, tail = token.value.partition("\n")
    if not tail:
        return
    token.value = head + "\n"
    items[key] = [None, None, CommentToken("\n" + tail, token.start_mark, None), None]
