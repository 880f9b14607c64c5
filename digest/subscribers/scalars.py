"""YAML scalars resolved and constructed as ruamel.yaml does for YAML 1.2 (its default).

Shared by the two fast readers of the subscribers file (:mod:`digest.subscribers.stream`,
libyaml; :mod:`digest.subscribers.lines`, line by line), so that they give the values the
ruamel path gives: ``07:30`` and ``yes`` are strings, ``010`` is ten, ``0o10`` eight,
``1_000`` a thousand. What they are not sure of raises :class:`NotSimple`.
"""

from __future__ import annotations

import re
from typing import Any

from ruamel.yaml import resolver as ruamel_resolver
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, ScalarNode
from yaml.resolver import BaseResolver

_YAML_12 = (1, 2)
MAX_INT_DIGITS = 100
"""An integer literal longer than this (sign, prefix and underscores aside) is not made a
number: the readers keep its text, which the option's validator refuses with the option's
range. (Python refuses to convert more than 4,300 decimal digits at all, and no option takes
a number near this long.)"""


class NotSimple(Exception):
    """The input uses something the fast readers do not promise to read like ruamel does."""


class Resolver(BaseResolver):
    """Implicit tags exactly as ruamel resolves them for YAML 1.2 (its default)."""

    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}  # noqa: RUF012


_YAML_11 = (1, 1)


class Resolver11(BaseResolver):
    """Implicit tags as ruamel resolves them for YAML 1.1 (a file starting with ``%YAML
    1.1``; also what PyYAML and other 1.1 tools read): ``yes``, ``on`` are booleans."""

    yaml_implicit_resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = {}  # noqa: RUF012


for _versions, _tag, _regexp, _first in ruamel_resolver.implicit_resolvers:
    # ruamel's patterns are compiled lazily behind a proxy: compile a plain one.
    _pattern = re.compile(_regexp.pattern, _regexp.flags)
    if _YAML_12 in _versions:
        Resolver.add_implicit_resolver(_tag, _pattern, _first)
    if _YAML_11 in _versions:
        Resolver11.add_implicit_resolver(_tag, _pattern, _first)

RESOLVERS = Resolver.yaml_implicit_resolvers
"""First character of a plain scalar → ``[(tag, pattern)]`` to try in order."""
RESOLVERS_11 = Resolver11.yaml_implicit_resolvers
"""The same for YAML 1.1."""


def resolve_plain(
    value: str, resolvers: dict[Any, list[tuple[str, re.Pattern[str]]]] = RESOLVERS
) -> str | None:
    """The implicit tag of the plain scalar ``value``, or ``None`` for a string.

    Args:
        value: the scalar's text.
        resolvers: :data:`RESOLVERS` (YAML 1.2, what the subscribers file is read with) or
            :data:`RESOLVERS_11`.
    """
    first = value[0] if value else ""
    for tag, regexp in resolvers.get(first, ()):
        if regexp.match(value):
            return tag
    return None


class Constructor(SafeConstructor):
    """PyYAML's safe constructor with ruamel's YAML 1.2 integers and no silent overwrites."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _value in node.value:
            if isinstance(key_node, ScalarNode):
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise NotSimple("duplicate key")  # ruamel refuses it, with a line
                seen.add(key)
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_int(self, node: ScalarNode) -> int:
        text = str(self.construct_scalar(node)).replace("_", "")
        sign = -1 if text.startswith("-") else 1
        digits = text.lstrip("+-")
        if ":" in digits:
            raise NotSimple("sexagesimal")
        if len(digits) > MAX_INT_DIGITS:
            raise NotSimple("an integer too long")  # the ruamel path keeps it as text
        if digits.startswith("0b"):
            return sign * int(digits[2:], 2)
        if digits.startswith("0x"):
            return sign * int(digits[2:], 16)
        if digits.startswith("0o"):
            return sign * int(digits[2:], 8)
        return sign * int(digits)

    def construct_yaml_float(self, node: ScalarNode) -> float:
        if ":" in str(node.value):
            raise NotSimple("sexagesimal")
        return super().construct_yaml_float(node)

    def construct_not_sure(self, node: ScalarNode) -> Any:
        raise NotSimple(node.tag)


Constructor.yaml_constructors = {
    **SafeConstructor.yaml_constructors,
    "tag:yaml.org,2002:int": Constructor.construct_yaml_int,
    "tag:yaml.org,2002:float": Constructor.construct_yaml_float,
    "tag:yaml.org,2002:timestamp": Constructor.construct_not_sure,
}

CONSTRUCTOR = Constructor()
"""One constructor for single scalars (its per-document state is not used for them)."""
