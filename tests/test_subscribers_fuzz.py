"""Differential fuzz of the subscribers file: the fast reader and ruamel agree.

Seeded, so every run checks the same documents (a few seconds). Hostile scalars (YAML
indicators, quotes, brackets, spaces at either end, unicode, text that looks like a number, a
boolean, a null or a date) are written raw into files, plain, single- or double-quoted, in the
places a subscriber's values stand, with CRLF line breaks, tabs or a BOM elsewhere in some
files: the fast reader (:func:`digest.subscribers.stream.read_entries`, the line reader and its
libyaml fallback) either declines the file or gives exactly ruamel's values, and the loader's
answer (the subscribers, or the problem lines) is the same both ways.
"""

from __future__ import annotations

import codecs
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from digest.subscribers import yaml as yaml_loader
from digest.subscribers.stream import NotSure, read_entries

SEED = 26
READ_DOCUMENTS = 1500
ATOMS = [
    *"?-:#&*!%@`'\"[]{},|>=~\\./+",
    "a?",
    "? ",
    ": ",
    " #",
    "<<",
    "---",
    "...",
    " ",
    "é",
    "李",
    "😀",
    "\u00a0",
    "\u2028",
    "\x85",
    "\ufeff",
    "\t",
    "yes",
    "No",
    "on",
    "OFF",
    "y",
    "null",
    "Null",
    "~",
    "true",
    "False",
    "0",
    "010",
    "0o17",
    "0x1F",
    "1_000",
    "1e3",
    ".5",
    "-1",
    "+1",
    ".inf",
    ".NaN",
    "1:30",
    "07:30",
    "2024-01-01",
    "2024-01-01 10:00:00",
]
"""What hostile scalars are made of (the issue's list, and what YAML resolves)."""
WORDS = ["a", "agent", "RL", "3d", "José", "world model"]


def hostile(rng: random.Random) -> str:
    """One to three atoms, often next to a word (so that the model accepts it as a keyword)."""
    parts = [rng.choice(ATOMS) for _ in range(rng.randint(1, 3))]
    if rng.random() < 0.7:
        parts.insert(rng.randint(0, len(parts)), rng.choice(WORDS))
    return "".join(parts)


def strict(text: str) -> Any:
    """The file as ruamel's C parser reads it (the loader's slow path)."""
    return YAML(typ="safe", pure=False).load(text)


def fast(data: bytes) -> list[Any] | None:
    """The entries as the fast reader gives them, or ``None`` where it declines the file."""
    split = read_entries(data)
    if split is None:
        return None
    try:
        return list(split[1])
    except NotSure:
        return None


def typed(value: Any) -> Any:
    """``value`` with its types spelled out (``1 == 1.0 == True`` must not hide a change)."""
    if isinstance(value, dict):
        return [(typed(k), typed(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [typed(v) for v in value]
    return (type(value).__name__, repr(value))


# -- the reader ---------------------------------------------------------------------------------


def written(value: str, rng: random.Random) -> str:
    """``value`` as someone might type it: plain, single- or double-quoted."""
    style = rng.choice(("plain", "plain", "single", "double", "json"))
    if style == "single":
        return "'" + value.replace("'", "''") + "'"
    if style == "double":
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if style == "json":
        return json.dumps(value, ensure_ascii=rng.random() < 0.5)
    return value


PLACES: list[Callable[[str, str], str]] = [
    lambda a, b: f"    name: {a}\n",
    lambda a, b: f"    keywords: [{a}]\n",
    lambda a, b: f"    keywords: [diffusion, {a}, {b}]\n",
    lambda a, b: f"    keywords:\n      - {a}\n      - {b}\n",
    lambda a, b: f"    exclude: [{a},{b}]   # a comment\n",
    lambda a, b: f"    timezone: {a}  # {b}\n",
]


def document(rng: random.Random) -> bytes:
    """A subscribers file with two hostile values in one entry, and perhaps CRLF, tabs, a BOM."""
    a, b = written(hostile(rng), rng), written(hostile(rng), rng)
    text = (
        "# hostile values\n"
        + ("defaults: {max_papers: 3}\n" if rng.random() < 0.5 else "")
        + "subscribers:\n"
        + "  - email: first@example.org\n    keywords: [agent*, 3d]\n"
        + "  - email: hostile@example.org\n"
        + rng.choice(PLACES)(a, b)
        + "  - email: last@example.org\n"
    )
    if rng.random() < 0.2:
        text = text.replace("# hostile values", "# hostile\tvalues")
    if rng.random() < 0.1:
        text = text.replace("subscribers:\n", "subscribers:\t# tab\n")
    if rng.random() < 0.2:
        text = text.replace("\n", "\r\n")
    data = text.encode("utf-8")
    return codecs.BOM_UTF8 + data if rng.random() < 0.1 else data


def test_the_fast_reader_reads_hostile_values_as_ruamel_does_or_leaves_them_to_it(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    path = tmp_path / "subscribers.yaml"
    taken = 0
    for _ in range(READ_DOCUMENTS):
        data = document(rng)
        entries = fast(data)
        try:
            expected: Any = strict(data.decode("utf-8-sig"))["subscribers"]
        except Exception as e:
            expected = e
        if entries is not None:
            taken += 1
            assert not isinstance(expected, Exception), (data, entries, expected)
            assert typed(entries) == typed(expected), data
        # What `validate` and `send` say is the same either way (subscribers or problems).
        assert yaml_loader._load(data, path, None) == yaml_loader._load(
            data, path, None, streamed=False
        ), data
    assert taken > READ_DOCUMENTS // 3  # the fast reader did take most plain files
