"""The line reader of simple subscriber entries reads exactly what libyaml and ruamel read.

Every value below is read three ways: by :func:`digest.subscribers.lines.read_run` (which hands
what it is not sure of to libyaml, item by item), by libyaml alone (the streaming reader's
parser) and, inside a whole file, by the ruamel path. The values must be equal (types
included), errors must stay errors, and the values the line reader is meant for must not
need libyaml.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from digest.errors import ConfigError
from digest.subscribers import lines, load_subscribers
from digest.subscribers import stream as stream_module
from digest.subscribers import yaml as yaml_loader

# One-line values the line reader reads itself.
SIMPLE_VALUES = [
    "Ada",
    "Ada Lovelace",
    "Ada  Lovelace   ",
    "a#b",
    "a # a comment",
    "a:b",
    "x:y:z",
    "José Núñez",
    "李小龙",
    "-5",
    "-.5",
    ".5",
    "1_000",
    "0x1F",
    "0o17",
    "010",
    "+12",
    "1e3",
    ".inf",
    "-.inf",
    ".nan",
    "true",
    "True",
    "TRUE",
    "tRUE",
    "yes",
    "on",
    "off",
    "null",
    "Null",
    "~",
    "07:30",
    "1.5.3",
    "=x",
    "<<x",
    "(a) b/c; d$",
    'say "hi"',
    "it's",
    '"José"',
    '"a\\"b"',
    '"a\\\\b"',
    '"\\u00e9t\\u00e9"',
    '"tab\\there"',
    '"a" # c',
    "'it''s'",
    "'a' # it's \"x\"",
    "''",
    '""',
    '"# not a comment"',
    "[a, b]",
    "[a,b]",
    "[ a , b ]",
    "[]",
    "[ ]",
    "[\"a\", 'b', c d]",
    '["a", "b c"]',
    '["a", "b"] # c',
    "[1, true, null, 0x10, 1_0, ~]",
    "[it's]",
    "[-1, .5]",
    "['a''b', \"\\u00e9\"]",
    "[José, 李]",
]

# One-line values it leaves to libyaml (or that are errors): the outcome must be libyaml's.
OTHER_VALUES = [
    "a: b",
    "a:",
    "-x",
    "- x",
    "-",
    "2024-01-01",
    "1:30",
    "190:20:30",
    "&a x",
    "*a",
    "!!str 3",
    "!x y",
    "|",
    ">-",
    "{a: 1}",
    "%x",
    "@x",
    "`x",
    "?x",
    "? x",
    ":x",
    ",x",
    "]x",
    "}x",
    '"a"x',
    "'a'x",
    "'a''",
    "'''",
    '"\\x41"',
    '"\\ud83d\\ude00"',
    '"\\N"',
    '"\\/"',
    '"unclosed',
    "[a, [b]]",
    "[a, {b: c}]",
    "[a,]",
    "[a, b]x",
    "[a:b]",
    "[a #b]",
    '[a"b]',
    "[a, b",
    "[a, &x b]",
    "a\u2028b",
    "a\x85b",
    "a\ufeffb",
    "a\u00a0b",
    "a\x7fb",
    "a\x01b",
]

# Whole items (at column 0) in other shapes.
ITEMS = {
    "block list": "- email: a\n  k:\n  - x\n  - 'y z'\n  - \"w\"\n  j: 1\n",
    "block list deeper": "- email: a\n  k:\n      - x\n      - y # c\n  j: 1\n",
    "block list at the end": "- email: a\n  k:\n    - x\n",
    "comments and blanks": "- email: a # c\n\n  # c\n      # c\n  k: [x]\n\n# c\n",
    "empty value": "- email: a\n  k:\n  j: 2\n",
    "empty value at the end": "- email: a\n  k:\n",
    "empty value with comment": "- email: a\n  k: # nothing\n  j: 2\n",
    "wide dash": "-   email: a\n    k: v\n",
    "key on the dash line only": "- k:\n  - x\n  - y\n",
    "continued plain": "- email: a\n  k: a\n    b\n",
    "continued double": '- email: a\n  k: "a\n    b"\n',
    "continued flow": "- email: a\n  k: [a,\n    b]\n",
    "nested mapping": "- email: a\n  k:\n    x: 1\n",
    "list of mappings": "- email: a\n  k:\n  - x: 1\n",
    "nested list": "- email: a\n  k:\n  - - x\n",
    "null list item": "- email: a\n  k:\n  -\n  - y\n",
    "dash without space": "- email: a\n  k:\n  - x\n  -y\n",
    "bad list indent": "- email: a\n  k:\n    - x\n   - y\n",
    "list then deeper": "- email: a\n  k:\n  - x\n    y\n",
    "key at another column": "- email: a\n   k: v\n",
    "key deeper": "- email: a\n  k: v\n    j: w\n",
    "duplicate key": "- email: a\n  email: b\n",
    "null key": "- email: a\n  null: b\n",
    "true key": "- email: a\n  true: b\n",
    "quoted key": '- email: a\n  "k": b\n',
    "merge key": "- email: a\n  <<: {k: 1}\n",
    "block scalar": "- email: a\n  k: |\n    text\n",
    "not a mapping": "- just text\n",
    "empty item": "-\n  email: a\n",
    "anchor item": "- &a\n  email: a\n",
    "flow item": "- {email: a}\n",
    "several": "- email: a\n  k: [x]\n- email: b\n  k:\n  - y\n-   email: c\n    k: 3\n",
    "odd one among simple": "- email: a\n- email: b\n  k: |\n    t\n- email: c\n",
    "kept line breaks": "- email: a\n  k: |+\n    t\n\n\n- email: c\n  k: |+\n    u\n\n",
    "kept line breaks at the end": "- email: a\n  k: |+\n    t\n\n",
    "no line break at the end": "- email: a\n  k: |+\n    t",
    "unicode separator in a later item": "- email: a\n- email: b\u2028c\n- email: d\n",
}


def libyaml(text: str) -> tuple[str, Any]:
    try:
        return "ok", stream_module._parse(text)
    except Exception as e:
        return "error", type(e).__name__


def fast(text: str, indent: int = 0) -> tuple[tuple[str, Any], int]:
    calls = 0

    def fallback(item: str) -> Any:
        nonlocal calls
        calls += 1
        return stream_module._parse(item)

    try:
        values = lines.read_run(text, indent, fallback)
    except Exception as e:
        return ("error", type(e).__name__), calls
    return ("ok", values), calls


def same(a: tuple[str, Any], b: tuple[str, Any]) -> bool:
    if a[0] != b[0]:
        return False
    return a[0] == "error" or repr(a[1]) == repr(b[1])


@pytest.mark.parametrize("value", SIMPLE_VALUES)
def test_simple_values_read_like_libyaml_without_it(value: str) -> None:
    text = f"- email: a@example.org\n  k: {value}\n  j: 1\n"
    got, calls = fast(text)
    assert same(got, libyaml(text)), (got, libyaml(text))
    assert calls == 0
    as_list_item = f"- email: a@example.org\n  k:\n    - {value}\n"
    if not value.startswith("["):
        got, calls = fast(as_list_item)
        assert same(got, libyaml(as_list_item)), (got, libyaml(as_list_item))
        assert calls == 0


@pytest.mark.parametrize("value", OTHER_VALUES)
def test_other_values_give_libyamls_outcome(value: str) -> None:
    for text in (
        f"- email: a@example.org\n  k: {value}\n  j: 1\n",
        f"- email: a@example.org\n  k:\n    - {value}\n",
        f"- email: a@example.org\n  k: [{value}]\n",
    ):
        got, _calls = fast(text)
        assert same(got, libyaml(text)), (text, got, libyaml(text))


@pytest.mark.parametrize("name", sorted(ITEMS))
def test_item_shapes_give_libyamls_outcome(name: str) -> None:
    text = ITEMS[name]
    got, _calls = fast(text)
    assert same(got, libyaml(text)), (got, libyaml(text))


@pytest.mark.parametrize("indent", [0, 2, 4])
def test_simple_items_at_any_indent_need_no_libyaml(indent: int) -> None:
    pad = " " * indent
    text = "".join(
        f"{pad}- email: r{i}@example.org\n{pad}  name: Reader {i}\n"
        f"{pad}  keywords: [\"diffusion\", 'agent*', 3d]\n{pad}  exclude:\n"
        f"{pad}    - survey\n{pad}  max_papers: {i % 9 + 1}\n\n"
        for i in range(20)
    )
    got, calls = fast(text, indent)
    assert got == libyaml(text)
    assert calls == 0


def test_an_odd_item_is_read_by_libyaml_alone() -> None:
    got, calls = fast(ITEMS["odd one among simple"])
    assert got == libyaml(ITEMS["odd one among simple"])
    assert calls == 1
    got, calls = fast(ITEMS["unicode separator in a later item"])
    assert same(got, libyaml(ITEMS["unicode separator in a later item"]))
    assert calls == 1


PLACES = {
    "name": "  - email: a@example.org\n    name: {value}\n",
    "block keyword": "  - email: b@example.org\n    keywords:\n      - {value}\n",
    "flow keyword": "  - email: c@example.org\n    keywords: [{value}]\n",
    "keywords": "  - email: d@example.org\n    keywords: {value}\n",
    "timezone": "  - email: e@example.org\n    timezone: {value}\n",
}


@pytest.mark.parametrize("place", sorted(PLACES))
@pytest.mark.parametrize("value", SIMPLE_VALUES + OTHER_VALUES)
def test_whole_files_read_like_ruamel(tmp_path: Path, value: str, place: str) -> None:
    """Each value in each place, through the loader both ways (the fast path and ruamel)."""
    text = "subscribers:\n  - email: z@example.org\n" + PLACES[place].format(value=value)
    path = tmp_path / "subscribers.yaml"
    got = yaml_loader._load(text.encode(), path, None)
    expected = yaml_loader._load(text.encode(), path, None, streamed=False)
    assert got == expected


@pytest.mark.parametrize("name", sorted(ITEMS))
def test_item_shapes_in_whole_files_read_like_ruamel(tmp_path: Path, name: str) -> None:
    """The item shapes as subscribers (``k``: keywords, ``j``: max_papers), both ways."""
    item = re.sub(r"email: (\w)\b", r"email: \1@example.org", ITEMS[name])
    item = re.sub(r"\bk:", "keywords:", item)
    item = re.sub(r"\bj:", "max_papers:", item)
    body = "".join(f"  {line}\n" if line else "\n" for line in item.split("\n"))
    text = "subscribers:\n  - email: z@example.org\n" + body
    path = tmp_path / "subscribers.yaml"
    got = yaml_loader._load(text.encode(), path, None)
    expected = yaml_loader._load(text.encode(), path, None, streamed=False)
    assert got == expected


def long_file(n: int) -> list[str]:
    out = ["subscribers:"]
    for i in range(n):
        out += [f"  - email: r{i}@example.org", f"    keywords: [k{i}, 'agent*']"]
    return out


def test_a_problem_deep_in_a_long_simple_file_names_its_line(tmp_path: Path) -> None:
    text = long_file(1500)
    text[2 + 2 * 1234] = "    keywords: [k, K]"  # a duplicate term, in the third run
    text[2 + 2 * 1400] = "    keywords: [k, 'x\x00']"  # a NUL: not YAML at all, later
    path = tmp_path / "subscribers.yaml"
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_subscribers(path)
    assert info.value.problems == [
        f"{path}:2803: invalid YAML: unacceptable character #x0000: "
        "control characters are not allowed (remove it)"
    ]
    text[2 + 2 * 1400] = "    keywords: [k]"
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_subscribers(path)
    assert info.value.problems == [
        f"{path}:2471: subscribers[1234].keywords: 'K' is listed twice (items 0 and 1)"
    ]


def test_bad_utf8_in_a_later_run_is_reported_with_its_offset(tmp_path: Path) -> None:
    data = ("\n".join(long_file(1200)) + "\n").encode()
    at = data.index(b"r1100@")
    path = tmp_path / "subscribers.yaml"
    path.write_bytes(data[:at] + b"\xff" + data[at + 1 :])
    with pytest.raises(ConfigError) as info:
        load_subscribers(path)
    assert info.value.problems == [f"{path}: not UTF-8 text (bad byte at offset {at})"]
