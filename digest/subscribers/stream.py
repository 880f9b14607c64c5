"""Read a subscribers file entry by entry with libyaml, in memory that does not grow with it.

The fast path of :func:`digest.subscribers.yaml.load_subscribers`. Composing the whole YAML
node tree (what :mod:`ruamel.yaml` does) costs several KB of short-lived objects per
subscriber, and CPython does not hand that memory back to the OS. Here the file is cut, as
text, into the part before and after the ``subscribers:`` list (parsed on its own) and runs of
:data:`CHUNK_ITEMS` list items, each parsed by libyaml (PyYAML's ``CParser``) into plain
Python values and validated before the next run is read.

Same values as the ruamel path: scalars are resolved with ruamel's YAML 1.2 rules (``07:30``
and ``yes`` are strings, ``010`` is ten), duplicate keys are refused. Anything this reader is
not sure it reads exactly like ruamel (tabs, ``\\r``, a flow-style or inline ``subscribers:``
value, timestamps, sexagesimal numbers, aliases across runs, an item count that does not add
up) and any YAML error makes :func:`read_entries` return ``None``; the caller then parses the
file the slow way, which also finds the line of every problem.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml
from ruamel.yaml import resolver as ruamel_resolver
from yaml._yaml import CParser
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.resolver import BaseResolver

CHUNK_ITEMS = 500
"""Subscribers parsed per libyaml call: large enough that the per-call set-up does not
matter, small enough that one run's values are a few hundred KB."""

_YAML_12 = (1, 2)
_KEY_LINE_RE = re.compile(r"^subscribers:[ ]*(?:#[^\n]*)?\n", re.MULTILINE)


class _NotSure(Exception):
    """The input uses something this reader does not promise to read like ruamel does."""


class _Resolver(BaseResolver):
    """Implicit tags exactly as ruamel resolves them for YAML 1.2 (its default)."""

    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}  # noqa: RUF012


for _versions, _tag, _regexp, _first in ruamel_resolver.implicit_resolvers:
    if _YAML_12 in _versions:
        # ruamel's patterns are compiled lazily behind a proxy: compile a plain one.
        _Resolver.add_implicit_resolver(_tag, re.compile(_regexp.pattern, _regexp.flags), _first)


class _Constructor(SafeConstructor):
    """PyYAML's safe constructor with ruamel's YAML 1.2 integers and no silent overwrites."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _value in node.value:
            if isinstance(key_node, ScalarNode):
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise _NotSure("duplicate key")  # ruamel refuses it, with a line
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: ScalarNode) -> int:
        text = str(self.construct_scalar(node)).replace("_", "")
        sign = -1 if text.startswith("-") else 1
        digits = text.lstrip("+-")
        if ":" in digits:
            raise _NotSure("sexagesimal")
        if digits.startswith("0b"):
            return sign * int(digits[2:], 2)
        if digits.startswith("0x"):
            return sign * int(digits[2:], 16)
        if digits.startswith("0o"):
            return sign * int(digits[2:], 8)
        return sign * int(digits)

    def construct_yaml_float(self, node: ScalarNode) -> float:
        if ":" in str(node.value):
            raise _NotSure("sexagesimal")
        return super().construct_yaml_float(node)

    def construct_not_sure(self, node: ScalarNode) -> Any:
        raise _NotSure(node.tag)


_Constructor.yaml_constructors = {
    **SafeConstructor.yaml_constructors,
    "tag:yaml.org,2002:int": _Constructor.construct_yaml_int,
    "tag:yaml.org,2002:float": _Constructor.construct_yaml_float,
    "tag:yaml.org,2002:timestamp": _Constructor.construct_not_sure,
}


_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"


class _Loader(CParser, _Constructor, _Resolver):
    def __init__(self, stream: str) -> None:
        CParser.__init__(self, stream)
        _Constructor.__init__(self)
        _Resolver.__init__(self)

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
                    raise _NotSure("duplicate key")  # ruamel refuses it, with a line
                return out
        return self.construct_object(node, deep=True)


_MERGE = "tag:yaml.org,2002:merge"


def _parse(text: str) -> Any:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _refuse_flow_colons(node)
        return loader.value(node)
    except TypeError as e:  # an unhashable key (a list as a mapping key)
        raise _NotSure(str(e)) from None
    finally:
        loader.dispose()


def _refuse_flow_colons(root: Node) -> None:
    """Raise :class:`_NotSure` for a plain scalar with a ``:`` inside a flow collection.

    libyaml reads ``[feed:https://example.org/rss]`` as one string, as YAML 1.2 allows;
    ruamel refuses it ("found unexpected ':'"). The file must be read the way ruamel reads it
    (it is the one that writes the file back), so such a file is left to ruamel, which
    reports the line.
    """
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, in_flow = stack.pop()
        if isinstance(node, ScalarNode):
            if in_flow and not node.style and ":" in node.value:  # style "": plain
                raise _NotSure("a ':' in a plain scalar of a flow collection")
        elif isinstance(node, SequenceNode):
            flow = in_flow or bool(node.flow_style)
            stack.extend((item, flow) for item in node.value)
        elif isinstance(node, MappingNode):
            flow = in_flow or bool(node.flow_style)
            for key, value in node.value:
                stack.append((key, flow))
                stack.append((value, flow))


def read_entries(text: str) -> tuple[Any, Iterator[Any]] | None:
    """Split ``text`` into its top level and its subscriber entries, read lazily.

    Args:
        text: the whole subscribers file, decoded.

    Returns:
        ``(top, entries)``: ``top`` is the document without the entries (``subscribers``
        maps to ``None``); ``entries`` yields each list item's value in file order, parsing
        :data:`CHUNK_ITEMS` at a time. ``None`` when the file should be read the slow way
        (see the module docstring); ``entries`` raises :class:`NotSure` when that is found
        only later, and the caller then starts again the slow way.
    """
    if "\t" in text or "\r" in text:
        return None
    keys = list(_KEY_LINE_RE.finditer(text))
    if len(keys) != 1:
        return None
    start = keys[0].end()
    first = re.compile(r"^( *)-(?=[ \n])", re.MULTILINE).search(text, start)
    if first is None:
        return None
    # Nothing but blank and comment lines between the key and the first item.
    for line in text[start : first.start()].split("\n"):
        if line.strip(" ") and not line.lstrip(" ").startswith("#"):
            return None
    indent = len(first.group(1))
    pad = " " * indent
    # The list ends at the first line, not blank and not a comment, that is indented less
    # than its items or is at their indentation without being an item.
    if indent:
        ends = re.compile(rf"^(?: {{0,{indent - 1}}}[^ \n#]|{pad}[^ \n#-]|{pad}-[^ \n])", re.M)
    else:
        ends = re.compile(r"^(?:[^ \n#-]|-[^ \n])", re.MULTILINE)
    end_match = ends.search(text, first.start())
    end = end_match.start() if end_match else len(text)
    items = [m.start() for m in re.compile(rf"^{pad}-(?=[ \n])", re.M).finditer(text, 0, end)]
    items = [pos for pos in items if pos >= first.start()]
    try:
        top = _parse(text[:start] + text[end:])
    except (yaml.YAMLError, _NotSure):
        return None
    if not isinstance(top, dict) or top.get("subscribers", ...) is not None:
        return None
    return top, _entries(text, items, end)


class NotSure(Exception):
    """Raised by the entries of :func:`read_entries`: read this file the slow way."""


def _entries(text: str, items: list[int], end: int) -> Iterator[Any]:
    for i in range(0, len(items), CHUNK_ITEMS):
        stop = items[i + CHUNK_ITEMS] if i + CHUNK_ITEMS < len(items) else end
        try:
            values = _parse(text[items[i] : stop])
        except (yaml.YAMLError, _NotSure, ConstructorError) as e:
            raise NotSure(str(e)) from None
        expected = min(CHUNK_ITEMS, len(items) - i)
        if not isinstance(values, list) or len(values) != expected:
            raise NotSure("the items did not split as expected")
        yield from values
