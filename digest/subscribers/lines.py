"""Read a run of subscriber entries written in the usual simple shape, line by line.

The fastest path of :mod:`digest.subscribers.stream`. Most subscribers files (the example,
what ``digest serve`` and the bounce processor write back, generated lists) are block mappings
of one-line values::

    - email: ada@example.org        # a comment
      name: "Ada Lovelace"
      keywords: [diffusion, 'agent*', "r\\u00b3-bench"]
      exclude:
        - survey
      max_papers: 8

:func:`read_run` reads exactly that: keys at one column; plain, single-quoted and
double-quoted one-line scalars (double-quoted with the escapes YAML and JSON share); one-line
flow lists and block lists of such scalars; blank and comment lines. Plain scalars are resolved
with the same YAML 1.2 rules as the libyaml path (:mod:`digest.subscribers.scalars`). An item
with anything else (a multi-line value, a block scalar, an anchor, a tag, a flow mapping, other
escapes, a duplicate key, a character that is not printable, or that YAML treats specially
such as NEL or U+2028) is handed to libyaml: this reader never has to be right about the
unusual, only to recognise the usual.
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable
from typing import Any

from yaml.nodes import ScalarNode

from digest.subscribers.scalars import (
    CONSTRUCTOR,
    RESOLVERS,
    RESOLVERS_11,
    NotSimple,
    resolve_plain,
)

_LINE = re.compile(r"^( *)(?:(- +)?([A-Za-z_][A-Za-z0-9_]*):(?= |$) *(.*)|(.*))$", re.MULTILINE)
"""Every line: ``(indentation, dash, key, rest)`` of ``[- ]key: rest``, or ``(indentation,
"", "", "", text)`` of any other line."""
_ESCAPE = r'\\["\\bfnrt]|\\u(?![dD][89abAB])[0-9a-fA-F]{4}'
"""The escapes YAML and JSON share, with the same meaning (no surrogate halves)."""
_DOUBLE = rf'"(?:[^"\\]|{_ESCAPE})*"'
_SINGLE = r"'(?:[^']|'')*'"
_FLOW_PLAIN = r"""(?:[^ ,\[\]{}#:"'&*!|>%@`?\-]|-[0-9.])(?:[^,\[\]{}#:?"]*[^ ,\[\]{}#:?"])?"""
"""A plain scalar in a flow list: no ``:``, ``#``, ``?``, ``"`` or flow indicator in it, not
starting with an indicator (``-`` only before a digit or a dot), no space at either end.
(``[a?]`` is one string for YAML 1.2 and libyaml, but ruamel's C parser ends the scalar at
the ``?`` and refuses the list: such a list is left to the fallback, which refuses it too.)"""
_FLOW_PLAIN_RE = re.compile(_FLOW_PLAIN)
_FLOW_ITEM = rf"(?:{_DOUBLE}|{_SINGLE}|{_FLOW_PLAIN})"
_FLOW_LIST = re.compile(rf"\[ *((?:{_FLOW_ITEM} *, *)*{_FLOW_ITEM})? *\](?: +#.*)? *")
_FLOW_ITEMS = re.compile(rf'"((?:[^"\\]|{_ESCAPE})*)"|\'((?:[^\']|\'\')*)\'|({_FLOW_PLAIN})')
_QUOTED = re.compile(rf'"((?:[^"\\]|{_ESCAPE})*)"(?: +#.*)? *|\'((?:[^\']|\'\')*)\'(?: +#.*)? *')
_INDICATORS = frozenset("-?:,[]{}#&*!|>'\"%@`")
_NUMBER_START = frozenset("0123456789.")
_PLAIN_STRING_START = frozenset(string.ascii_letters + "_/()$;").difference(
    _INDICATORS, (first for first in RESOLVERS if first)
)
"""First characters of a plain scalar that no resolver looks at: what starts with one of
them is a string."""
_SCALAR_TAGS = frozenset(f"tag:yaml.org,2002:{kind}" for kind in ("null", "bool", "int", "float"))
_MAX_CACHED = 10_000
_JSON = json.JSONDecoder().raw_decode
_resolved: dict[str, Any] = {}
"""Plain scalars that resolve to something other than a string (``true``, ``8``), by text."""
_key_ok: dict[str, bool] = {}

Row = tuple[str, str, str, str, str]


def read_run(chunk: str, indent: int, fallback: Callable[[str], Any]) -> list[Any] | None:
    """The entries of a run of list items: each read here when it has the simple shape, else
    by ``fallback``.

    Args:
        chunk: consecutive items of the ``subscribers:`` list, each starting with ``-`` at
            column ``indent``, as text (whole lines).
        indent: the column of the items' ``-``.
        fallback: parses the text of one item as a YAML document (libyaml) and returns a
            list of its one value; whatever it raises propagates.

    Returns:
        One value per item (a dict of key → str, int, float, bool, ``None`` or a list of
        those, for a simple item), as the libyaml path would give; ``None`` when the run does
        not start with an item (parse it whole with libyaml).

    Raises:
        NotSimple: ``fallback`` did not give exactly one value for an item.
    """
    lines = chunk.split("\n")
    rows: list[Row] = _LINE.findall(chunk)
    if len(rows) != len(lines) or not _is_item(rows[0], indent):
        return None
    odd = not chunk.replace("\n", " ").isprintable()
    out: list[Any] = []
    i, n = 0, len(rows)
    while i < n:
        begin = i
        try:
            entry, i = _item(rows, i, indent)
            if odd and not all(line.isprintable() for line in lines[begin:i]):
                raise NotSimple("a character that is not printable")
        except NotSimple:
            i = begin + 1
            while i < n and not _is_item(rows[i], indent):
                i += 1
            text = "\n".join(lines[begin:i])
            if i < n:
                text += "\n"  # the item's own line break (the last one's is in lines)
            values = fallback(text)
            if not isinstance(values, list) or len(values) != 1:
                raise NotSimple("an item did not read as one item") from None
            entry = values[0]
        out.append(entry)
    return out


def _is_item(row: Row, indent: int) -> bool:
    """Whether the line starts a list item at column ``indent``."""
    lead, dash, key, _rest, other = row
    if len(lead) != indent:
        return False
    if key:
        return bool(dash)
    return other[:1] == "-" and other[1:2] in ("", " ")


def _item(rows: list[Row], i: int, indent: int) -> tuple[dict[str, Any], int]:
    """The item starting at row ``i`` (``- key: ...``) and the index of the row after it."""
    lead, dash, key, rest, _other = rows[i]
    if not key or not dash or len(lead) != indent:
        raise NotSimple("an item that does not start with a key")
    column = len(lead) + len(dash)
    entry: dict[str, Any] = {}
    n = len(rows)
    while True:
        if key in entry or not (_key_ok.get(key) or _plain_key(key)):
            raise NotSimple("a duplicate or special key")
        if rest and rest[0] != "#":
            if rest[0] in _PLAIN_STRING_START and " #" not in rest and ": " not in rest:
                # The common case, inline: a plain scalar that can only be a string.
                value = rest.rstrip(" ")
                if value[-1] == ":":
                    raise NotSimple("a mapping on one line")
                entry[key] = value
            else:
                entry[key] = _scalar(rest, flow_list=True)
            i += 1
        else:
            entry[key], i = _block_list(rows, i + 1, column)
        while i < n:
            lead, dash, key, rest, other = rows[i]
            if key:
                break
            if not other or other[0] == "#":
                i += 1
                continue
            if _is_item(rows[i], indent):
                return entry, i
            raise NotSimple("not a one-line key")
        else:
            return entry, i
        if dash:
            if len(lead) == indent:
                return entry, i
            raise NotSimple("a dash where a key was expected")
        if len(lead) != column:
            raise NotSimple("a key at another column")


def _block_list(rows: list[Row], i: int, column: int) -> tuple[list[Any] | None, int]:
    """The block list after ``key:`` (``None`` if none follows) and the index of the row
    after it."""
    seq: list[Any] | None = None
    at = -1
    n = len(rows)
    while i < n:
        lead, dash, key, _rest, other = rows[i]
        depth = len(lead)
        if key:
            if depth > column or (dash and depth >= column):
                raise NotSimple("a nested mapping")
            return seq, i
        if not other or other[0] == "#":
            i += 1
            continue
        if other[:2] != "- ":
            if depth > column:
                raise NotSimple("a multi-line value")
            return seq, i
        if seq is None:
            if depth < column:
                return None, i
            seq, at = [], depth
        if depth == at:
            seq.append(_scalar(other[2:].lstrip(" "), flow_list=False))
            i += 1
            continue
        if depth > at:
            raise NotSimple("a nested list")
        return seq, i
    return seq, i


def _scalar(text: str, *, flow_list: bool) -> Any:
    """A one-line value (after ``key:`` or ``-``); a flow list too if ``flow_list``."""
    if not text:
        raise NotSimple("an empty list item")
    first = text[0]
    if first in _INDICATORS:
        if first == '"' or first == "'":
            m = _QUOTED.fullmatch(text)
            if m is None:
                raise NotSimple("a quoted scalar with other escapes or on several lines")
            double, single = m.groups()
            return _unquote(double, '"') if single is None else _unquote(single, "'")
        if first == "[" and flow_list:
            return _flow(text)
        if not (first == "-" and len(text) > 1 and text[1] in _NUMBER_START):
            raise NotSimple("starts with an indicator")
    cut = text.find(" #")
    if cut >= 0:
        text = text[:cut]
    text = text.rstrip(" ")
    if ": " in text or text[-1] == ":":
        raise NotSimple("a mapping on one line")
    return _resolve(text)


def _flow(text: str) -> list[Any]:
    if "\\" not in text and text[-1] == "]":
        # A list of double-quoted strings without escapes reads the same as JSON (quickly).
        try:
            values, end = _JSON(text)
            if end != len(text):
                raise ValueError(text)
        except ValueError:
            pass
        else:
            if type(values) is list and all(type(value) is str for value in values):
                return values
    m = _FLOW_LIST.fullmatch(text)
    if m is None:
        raise NotSimple("not a one-line flow list of scalars")
    body = m.group(1)
    if body is None:
        return []
    out: list[Any] = []
    for double, single, plain in _FLOW_ITEMS.findall(body):
        if plain:
            out.append(_resolve(plain))
        elif single:
            out.append(single.replace("''", "'"))
        else:
            out.append(_unquote(double, '"'))
    return out


def _unquote(text: str, quote: str) -> str:
    if quote == "'":
        return text.replace("''", "'")
    if "\\" not in text:
        return text
    value: str = json.loads(f'"{text}"')
    return value


def _resolve(text: str) -> Any:
    """A plain scalar's value (YAML 1.2 as ruamel resolves it)."""
    hit = _resolved.get(text)
    if hit is not None or text in _resolved:
        return hit
    tag = resolve_plain(text)
    if tag is None:
        return text
    if tag not in _SCALAR_TAGS:
        raise NotSimple(tag)
    value = CONSTRUCTOR.yaml_constructors[tag](CONSTRUCTOR, ScalarNode(tag, text))
    if len(_resolved) >= _MAX_CACHED:
        _resolved.clear()
    _resolved[text] = value
    return value


def _plain_key(key: str) -> bool:
    """Whether ``key`` is read as that string (not ``null``, ``true``...)."""
    ok = _key_ok.get(key)
    if ok is None:
        ok = resolve_plain(key) is None
        if len(_key_ok) < _MAX_CACHED:
            _key_ok[key] = ok
    return ok


def reads_as_plain(value: str) -> bool:
    """Whether ``value`` written unquoted reads back as this very string wherever it stands:
    in a flow list (``[value]``), a block list (``- value``) or after ``key:``, in a file
    with LF or CRLF line breaks, tabs or a BOM elsewhere.

    True only for what this reader reads itself (its tests hold it to ruamel's and libyaml's
    values) and what resolves to a string under YAML 1.2 and under YAML 1.1 (a file may
    start with ``%YAML 1.1``, and other tools read 1.1): ``agent*``, ``3d``, ``José``,
    ``a@example.org``; not ``a?``, ``yes``, ``1.0``, ``2024-01-01``, ``-x``, ``a: b``,
    text with a space at either end or a character that is not printable. The writer
    (:mod:`digest.subscribers.writeback`) quotes every other string.
    """
    return (
        _FLOW_PLAIN_RE.fullmatch(value) is not None
        and value.isprintable()
        and resolve_plain(value) is None
        and resolve_plain(value, RESOLVERS_11) is None
    )
