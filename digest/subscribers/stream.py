"""Read a subscribers file entry by entry, in memory that does not grow with a node tree.

The fast path of :func:`digest.subscribers.yaml.load_subscribers`. Composing the whole YAML
node tree (what :mod:`ruamel.yaml` does) costs several KB of short-lived objects per
subscriber, and CPython does not hand that memory back to the OS. Here the file's bytes are
cut, as text, into the part before and after the ``subscribers:`` list (parsed on its own) and
runs of :data:`CHUNK_ITEMS` list items; each run is decoded on its own (the whole file is never
held as ``str``) and read into plain Python values, which are validated before the next run is
read. A run is read line by line by :mod:`digest.subscribers.lines` when it has the usual
simple shape, else by libyaml (PyYAML's ``CParser``).

Same values as the ruamel path: scalars are resolved with ruamel's YAML 1.2 rules
(:mod:`digest.subscribers.scalars`), duplicate keys are refused. Anything this reader is not
sure it reads exactly like ruamel (tabs, ``\\r``, a ``%`` directive, a flow-style or inline
``subscribers:`` value, timestamps, sexagesimal numbers, aliases across runs, an item count
that does not add up, bytes that are not UTF-8) and any YAML error makes :func:`read_entries`
return ``None`` (or its entries raise :class:`NotSure`); the caller then parses the file the
slow way, which also finds the line of every problem.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from typing import Any

import yaml
from yaml._yaml import CParser
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from digest.subscribers.lines import read_run
from digest.subscribers.scalars import Constructor, NotSimple, Resolver

CHUNK_ITEMS = 200
"""Subscribers read per run: large enough that the per-run set-up does not matter, small
enough that one run's values are ~100 KB. At 100,000 subscribers (bench_load.py, 3 runs
each): 500 gave a peak of 59.9-60.5 MB above the interpreter, 200 gives 59.1-59.4 MB in
1.8-2.3 s (100: 59.1-59.7 MB, ~10 % slower)."""

_KEY_LINE = rb"subscribers:[ ]*(?:#[^\n]*)?\n"
_KEY_LINE_RE = re.compile(_KEY_LINE)
_NL_KEY_LINE_RE = re.compile(rb"\n" + _KEY_LINE)
_FIRST_ITEM_RE = re.compile(rb"^( *)-(?=[ \n])", re.MULTILINE)
# Patterns over the whole file start with a newline rather than ^ (re.MULTILINE): re then
# skips to each newline quickly instead of trying the pattern at every byte.


class _Loader(CParser, Constructor, Resolver):
    def __init__(self, stream: str) -> None:
        CParser.__init__(self, stream)
        Constructor.__init__(self)
        Resolver.__init__(self)

    def resolve(self, kind: type[Node], value: str | None, implicit: tuple[bool, bool]) -> str:
        """:meth:`BaseResolver.resolve` without path resolvers (none are registered)."""
        if kind is ScalarNode and implicit[0]:
            first = value[0] if value else ""
            for tag, regexp in self.yaml_implicit_resolvers.get(first, ()):
                if regexp.match(value or ""):
                    return tag
        if kind is ScalarNode:
            return _STR
        return _SEQ if kind is SequenceNode else _MAP

    def value(self, node: Node) -> Any:
        """The Python value of ``node``: plain strings, lists and mappings built directly,
        anything else by the constructor (the same values, much less work per node)."""
        if node.tag == _STR and type(node) is ScalarNode:
            return node.value
        if node.tag == _SEQ and type(node) is SequenceNode:
            return [self.value(item) for item in node.value]
        if node.tag == _MAP and type(node) is MappingNode:
            pairs = node.value
            if not any(key.tag == _MERGE for key, _value in pairs):
                out = {self.value(key): self.value(value) for key, value in pairs}
                if len(out) != len(pairs):
                    raise NotSimple("duplicate key")  # ruamel refuses it, with a line
                return out
        return self.construct_object(node, deep=True)


_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"


def _parse(text: str) -> Any:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _refuse_flow_indicators(node)
        return loader.value(node)
    except TypeError as e:  # an unhashable key (a list as a mapping key)
        raise NotSimple(str(e)) from None
    finally:
        loader.dispose()


def _refuse_flow_indicators(root: Node) -> None:
    """Raise :class:`NotSimple` for a plain scalar with a ``:`` or ``?`` inside a flow
    collection, or a mapping inside one.

    libyaml reads ``[feed:https://example.org/rss]`` and ``[a?]`` as one string each, as
    YAML 1.2 allows, and ``[x, ?]`` as a list holding a mapping; ruamel's C parser (the one
    :func:`~digest.subscribers.load_subscribers` falls back to) refuses all three ("found
    unexpected ':'", "did not find expected ',' or ']'"). The file must be read the way ruamel
    reads it, whatever else is in it (a CRLF or a tab sends the whole file to ruamel), so such
    a file is left to ruamel, which reports the line. (No option of a subscriber is a mapping
    inside a flow collection: refusing them all costs a valid file nothing.)
    """
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, in_flow = stack.pop()
        if isinstance(node, ScalarNode):
            if in_flow and not node.style and _FLOW_STOPS.intersection(node.value):
                raise NotSimple("a ':' or '?' in a plain scalar of a flow collection")
        elif isinstance(node, SequenceNode):
            flow = in_flow or bool(node.flow_style)
            stack.extend((item, flow) for item in node.value)
        elif isinstance(node, MappingNode):
            if in_flow:
                raise NotSimple("a mapping inside a flow collection")
            flow = bool(node.flow_style)
            for key, value in node.value:
                stack.append((key, flow))
                stack.append((value, flow))


_FLOW_STOPS = frozenset(":?")
"""Characters that end a plain scalar inside a flow collection for ruamel's C parser (style
``""``: plain), though not for libyaml."""


def read_entries(data: bytes) -> tuple[Any, Iterator[Any]] | None:
    """Split the file into its top level and its subscriber entries, read lazily.

    Args:
        data: the whole subscribers file, as read (UTF-8, optionally with a BOM).

    Returns:
        ``(top, entries)``: ``top`` is the document without the entries (``subscribers``
        maps to ``None``); ``entries`` yields each list item's value in file order, reading
        :data:`CHUNK_ITEMS` at a time. ``None`` when the file should be read the slow way
        (see the module docstring); ``entries`` raises :class:`NotSure` when that is found
        only later, and the caller then starts again the slow way.
    """
    base = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    if b"\t" in data or b"\r" in data or data.startswith(b"%", base) or b"\n%" in data:
        return None  # a %YAML directive could change how scalars resolve
    keys = [m.end() for m in _NL_KEY_LINE_RE.finditer(data, base)]
    at_start = _KEY_LINE_RE.match(data, base)
    if at_start is not None:
        keys.append(at_start.end())
    if len(keys) != 1:
        return None
    start = keys[0]
    first = _FIRST_ITEM_RE.search(data, start)
    if first is None:
        return None
    end = _end_of_list(data, first)
    try:
        between = data[start : first.start()].decode("utf-8")
        top_text = (data[base:start] + data[end:]).decode("utf-8")
    except UnicodeDecodeError:
        return None
    # Nothing but blank and comment lines between the key and the first item.
    for line in between.split("\n"):
        if line.strip(" ") and not line.lstrip(" ").startswith("#"):
            return None
    try:
        top = _parse(top_text)
    except (yaml.YAMLError, NotSimple):
        return None
    if not isinstance(top, dict) or top.get("subscribers", ...) is not None:
        return None
    return top, _entries(data, first, end)


def _end_of_list(data: bytes, first: re.Match[bytes]) -> int:
    """Where the list that starts at ``first`` ends: at the first line, not blank and not a
    comment, that is indented less than its items or is at their indentation without being
    an item (or at the end of the file)."""
    indent = len(first.group(1))
    pad = b" " * indent
    if indent:
        ends = re.compile(
            rb"^(?: {0,%d}[^ \n#]|%s[^ \n#-]|%s-[^ \n])" % (indent - 1, pad, pad), re.M
        )
    else:
        ends = re.compile(rb"^(?:[^ \n#-]|-[^ \n])", re.MULTILINE)
    end_match = ends.search(data, first.start())
    return end_match.start() if end_match else len(data)


class NotSure(Exception):
    """Raised by the entries of :func:`read_entries`: read this file the slow way."""


def _entries(data: bytes, first: re.Match[bytes], end: int) -> Iterator[Any]:
    indent = len(first.group(1))
    item_re = re.compile(rb"\n%s-(?=[ \n])" % (b" " * indent))
    starts = (m.start() + 1 for m in item_re.finditer(data, first.start() - 1, end))
    run: list[int] = []
    for pos in starts:
        run.append(pos)
        if len(run) > CHUNK_ITEMS:
            yield from _read_run(data, run[0], run[-1], CHUNK_ITEMS, indent)
            run = run[-1:]
    if run:
        yield from _read_run(data, run[0], end, len(run), indent)


def _read_run(data: bytes, start: int, stop: int, expected: int, indent: int) -> list[Any]:
    try:
        text = data[start:stop].decode("utf-8")
        values: Any = read_run(text, indent, _parse)
        if values is None:
            values = _parse(text)
    except (UnicodeDecodeError, yaml.YAMLError, NotSimple, ConstructorError) as e:
        raise NotSure(str(e)) from None
    if not isinstance(values, list) or len(values) != expected:
        raise NotSure("the items did not split as expected")
    return values
