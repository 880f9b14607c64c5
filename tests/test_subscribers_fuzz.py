"""Differential fuzz of the subscribers file: the fast reader, ruamel and the writer agree.

Seeded, so every run checks the same documents (a few seconds). Hostile scalars (YAML
indicators, quotes, brackets, spaces at either end, unicode, text that looks like a number, a
boolean, a null or a date) are written raw into files, plain, single- or double-quoted, in the
places a subscriber's values stand, with CRLF line breaks, tabs or a BOM elsewhere in some
files: the fast reader (:func:`digest.subscribers.stream.read_entries`, the line reader and its
libyaml fallback) either declines the file or gives exactly ruamel's values, and the loader's
answer (the subscribers, or the problem lines) is the same both ways.

The same scalars written through the real writer
(:class:`~digest.subscribers.writeback.SubscribersFile`) into files with comments, CRLF, tabs
and a BOM: the write succeeds, and ruamel's C parser (the loader's), ruamel's pure round-trip
parser (the writer's) and the fast reader read back exactly the values written, also after
CRLF line breaks and a tab are added elsewhere.
"""

from __future__ import annotations

import codecs
import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML

from digest.subscribers import Subscriber
from digest.subscribers import yaml as yaml_loader
from digest.subscribers.stream import NotSure, read_entries
from digest.subscribers.writeback import SubscribersFile

SEED = 26
READ_DOCUMENTS = 1500
WRITES = 240
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


def round_trip(text: str) -> Any:
    """The file as ruamel's pure round-trip parser reads it (the writer's parser)."""
    return YAML(typ="rt").load(text)


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
    return decorated(
        text,
        rng,
        ("# hostile values", "# hostile\tvalues"),
        ("subscribers:\n", "subscribers:\t# tab\n"),
    )


def decorated(text: str, rng: random.Random, *tabs: tuple[str, str]) -> bytes:
    """``text`` with, at random, each of ``tabs`` (text → text holding a tab), CRLF line
    breaks and a BOM: what sends a file to ruamel rather than the fast reader."""
    for old, new in tabs:
        if rng.random() < 0.15:
            text = text.replace(old, new, 1)
    if rng.random() < 0.25:
        text = text.replace("\n", "\r\n")
    data = text.encode("utf-8")
    return codecs.BOM_UTF8 + data if rng.random() < 0.15 else data


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


# -- the writer ---------------------------------------------------------------------------------

BASE = """\
# Our list.
defaults:
  max_papers: 5   # keep it short

subscribers:
  # Flow lists.
  - email: flow@example.org
    name: Flo
    keywords: [diffusion, "agent*"]   # her interests

  - email: block@example.org   # block lists
    keywords:
      - survey
      - 'world model'
    exclude:
      - benchmark

  - email: plain@example.org
"""


def hostile_values(rng: random.Random, count: int) -> list[str]:
    """``count`` hostile keywords the model accepts together (distinct, each with a word)."""
    while not _valid(keywords=(values := [hostile(rng) for _ in range(count)])):
        pass
    return values


def hostile_name(rng: random.Random) -> str:
    """A hostile name the model accepts."""
    while not _valid(name=(name := hostile(rng))):
        pass
    return name


def _valid(**fields: Any) -> bool:
    try:
        Subscriber.model_validate({"email": "x@example.org", **fields})
    except ValidationError:
        return False
    return True


def base_file(rng: random.Random) -> bytes:
    """:data:`BASE`, in some files with a tab in a comment, CRLF line breaks or a BOM."""
    return decorated(BASE, rng, ("# Our list.", "# Our list.\tA tab in a comment."))


def one_write(file: SubscribersFile, rng: random.Random, case: int) -> tuple[str, dict[str, Any]]:
    """Make one hostile write; returns the address and the values it must read back as."""
    if case < len(ATOMS):
        # Each atom at least once, around a word: `a?`, `?a`, `yes`, `a: b`...
        atom = ATOMS[case]
        values = []
        for value in (f"a{atom}", f"{atom}b", f"x {atom} y"):
            if _valid(keywords=[*values, value]):
                values.append(value)
        values = values or ["a"]
    else:
        values = hostile_values(rng, rng.randint(1, 4))
    kind = case % 4
    if kind == 0:
        assert file.update_fields("flow@example.org", {"keywords": values})
        return "flow@example.org", {"keywords": values}
    if kind == 1:
        assert file.update_fields("block@example.org", {"keywords": values, "exclude": ["x"]})
        return "block@example.org", {"keywords": values, "exclude": ["x"]}
    name = hostile_name(rng)
    if kind == 2:
        assert file.update_fields("plain@example.org", {"name": name, "exclude": values})
        return "plain@example.org", {"name": name, "exclude": values}
    assert file.add_or_activate("new@example.org", name=name, keywords=values)
    return "new@example.org", {"name": name, "keywords": values}


def entry_of(entries: list[Any], address: str) -> dict[str, Any]:
    found = [e for e in entries if e["email"] == address]
    assert len(found) == 1, entries
    return {k: (list(v) if isinstance(v, list) else v) for k, v in found[0].items()}


def test_hostile_values_written_by_the_writer_read_back_identically_everywhere(
    tmp_path: Path,
) -> None:
    rng = random.Random(SEED)
    path = tmp_path / "subscribers.yaml"
    file = SubscribersFile(path)
    taken = 0
    for case in range(WRITES):
        path.write_bytes(base_file(rng))
        address, values = one_write(file, rng, case)
        data = path.read_bytes()
        text = data.decode("utf-8-sig")
        want = typed(values)
        # The writer's own parser (the next write reads this file) and the loader's.
        for read in (strict, round_trip):
            got = entry_of(read(text)["subscribers"], address)
            assert typed({k: got[k] for k in values}) == want, (read.__name__, text)
        entries = fast(data)
        if entries is not None:
            taken += 1
            got = entry_of(entries, address)
            assert typed({k: got[k] for k in values}) == want, text
        # Whatever else the operator's editor adds: CRLF line breaks, a tab before a comment.
        crlf = text.replace("\r\n", "\n").replace("\n", "\r\n")
        tab = text.replace("defaults:", "defaults:\t# a tab", 1)
        for variant in (crlf, tab):
            got = entry_of(strict(variant)["subscribers"], address)
            assert typed({k: got[k] for k in values}) == want, variant
            encoded = variant.encode("utf-8")
            loaded = yaml_loader._load(encoded, path, None)
            assert loaded[1] == [], loaded
            assert loaded == yaml_loader._load(encoded, path, None, streamed=False)
            subscriber = loaded[0].get(address) if loaded[0] is not None else None
            expected = Subscriber.model_validate({"email": address, **values})
            assert subscriber is not None
            for key in values:
                assert getattr(subscriber, key) == getattr(expected, key), (key, variant)
    assert taken > WRITES // 2  # most writes are read by the fast reader itself
