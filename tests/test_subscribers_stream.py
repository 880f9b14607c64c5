"""The streaming subscribers reader (libyaml, a run at a time) reads exactly what ruamel reads.

Each document is loaded both ways (``_load(..., streamed=False)`` is the ruamel node-tree
path that was the only one before); the results or the problem lines must be equal, and the
documents the streaming reader is meant for must actually take it.
"""

from __future__ import annotations

import os
import pickle
import textwrap
from pathlib import Path

import pytest

from digest.subscribers import Subscriber, load_subscribers
from digest.subscribers import stream as stream_module
from digest.subscribers import yaml as yaml_loader
from digest.subscribers.stream import read_entries

# Documents the streaming reader takes (it must give ruamel's values).
STREAMED = {
    "plain": """
        defaults: {max_papers: 4}
        subscribers:
          - email: Ada@Example.org
            name: Ada
            keywords: [diffusion, "agent*", 3d, 2024]
          - email: bob@example.org
            keywords:
              - reinforcement learning
    """,
    "yaml 1.2 scalars": """
        defaults:
          send_at: 07:30
        subscribers:
        - email: a@example.org
          name: yes
          keywords: [on, off, 010, 0o10, 1_000, 0x1F, .inf, 1e3, +12]
          max_papers: 010
          active: true
          only_matching: False
        - email: b@example.org
          name: null
          send_empty: TRUE
    """,
    "items at column zero, comments between": """
        # the list
        subscribers:
        # first
        - email: a@example.org

          keywords:
          - x
        # second
        -   email: b@example.org
            max_papers: 0x3
        defaults:
          max_papers: 2
    """,
    "block scalars and quotes": """
        subscribers:
          - email: a@example.org
            name: >-
              Ada
              Lovelace
            keywords:
              - "a - b"
              - 'it''s'
          -
            email: b@example.org
            name: |-
              - not an item
    """,
    "many items (several runs)": "subscribers:\n"
    + "".join(f"  - email: r{i}@example.org\n    keywords: [k{i % 7}]\n" for i in range(1203)),
    "merge keys": """
        subscribers:
          - &base {email: a@example.org, max_papers: 3}
          - <<: {max_papers: 5}
            email: b@example.org
    """,
}

# Documents it must leave to ruamel (or that fail): the outcome must still be ruamel's.
OTHERS = {
    "empty list": "subscribers:\n  # nobody yet\n",
    "flow list": "subscribers: [{email: a@example.org}]\n",
    "tab": "subscribers:\n  - email: a@example.org\n    name:\tAda\n",
    "crlf": "subscribers:\r\n  - email: a@example.org\r\n",
    "alias across runs": "defaults: &d {max_papers: 3}\nsubscribers:\n  - email: a@example.org\n"
    "    <<: *d\n",
    "duplicate key": "subscribers:\n  - email: a@example.org\n    name: A\n    name: B\n",
    "duplicate top key": "subscribers:\n  - email: a@example.org\nsubscribers: []\n",
    "timestamp": "subscribers:\n  - email: a@example.org\n    name: 2024-01-01\n",
    "sexagesimal float": "subscribers:\n  - email: a@example.org\n    max_papers: 1:30.5\n",
    "bad yaml in a run": "subscribers:\n  - email: a@example.org\n    name: [unclosed\n",
    "invalid value": "subscribers:\n  - email: a@example.org\n    max_papers: 0\n",
    "duplicate email": "subscribers:\n  - email: a@example.org\n  - email: A@example.org\n",
    "unknown key": "subscribers:\n  - email: a@example.org\n    keywrods: [x]\n",
    "not a mapping": "subscribers:\n  - just a string\n",
    "list key": "subscribers:\n  - email: a@example.org\n    ? [a, b]\n    : 1\n",
    "tag": "subscribers:\n  - email: !!str a@example.org\n    max_papers: !!int '3'\n",
    "python tag": "subscribers:\n  - email: a@example.org\n    name: !!python/name:os.system\n",
    "bad email": "subscribers:\n  - email: not-an-address\n  - email: b@@example.org\n",
    "idn address": "subscribers:\n  - email: José@Bücher.example\n",
    "duplicate idn address": "subscribers:\n  - email: ada@bücher.example\n"
    "  - email: Ada@Bücher.example\n",
    "duplicate address, trailing dot": "subscribers:\n  - email: ada@example.org\n"
    "  - email: ada@example.org.\n",
    "flow plain scalar with a colon": "subscribers:\n  - email: a@example.org\n"
    "    sources: [feed:https://example.org/rss]\n",
    "document markers": "---\nsubscribers:\n  - email: a@example.org\n...\n",
    "indented less after": "subscribers:\n    - email: a@example.org\n  - email: b@example.org\n",
}


def both_ways(tmp_path: Path, text: str) -> tuple[object, object]:
    data = textwrap.dedent(text).lstrip("\n").encode()
    path = tmp_path / "subscribers.yaml"
    fast = yaml_loader._load(data, path, None)
    slow = yaml_loader._load(data, path, None, streamed=False)
    return fast, slow


@pytest.mark.parametrize("name", sorted(STREAMED))
def test_streamed_documents_read_like_ruamel_and_take_the_stream(tmp_path: Path, name: str) -> None:
    text = textwrap.dedent(STREAMED[name]).lstrip("\n").encode()
    assert read_entries(text) is not None
    fast, slow = both_ways(tmp_path, STREAMED[name])
    assert fast == slow
    result, problems = fast  # type: ignore[misc]
    assert result is not None, problems
    direct = yaml_loader._load_streamed(text, tmp_path / "subscribers.yaml", None)
    assert direct == result


@pytest.mark.parametrize("name", sorted(OTHERS))
def test_other_documents_give_ruamels_outcome(tmp_path: Path, name: str) -> None:
    fast, slow = both_ways(tmp_path, OTHERS[name])
    assert fast == slow


def test_yaml_12_values_as_ruamel_reads_them(tmp_path: Path) -> None:
    (result, problems) = both_ways(tmp_path, STREAMED["yaml 1.2 scalars"])[0]  # type: ignore[misc]
    assert not problems
    first = result.subscribers[0]
    assert first.name == "yes"
    assert first.keywords == ("on", "off", "10", "8", "1000", "31", "inf", "1000.0", "12")
    assert first.max_papers == 10
    assert first.send_at.hour == 7 and first.send_at.minute == 30


def test_streaming_splits_runs_without_losing_or_gaining_items(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream_module, "CHUNK_ITEMS", 7)
    text = "subscribers:\n" + "".join(
        f"  - email: r{i}@example.org\n    name: |-\n      - r{i}\n" for i in range(50)
    )
    path = tmp_path / "s.yaml"
    result = yaml_loader._load_streamed(text.encode(), path, None)
    assert result is not None
    assert [s.email for s in result] == [f"r{i}@example.org" for i in range(50)]
    assert [s.name for s in result] == [f"- r{i}" for i in range(50)]


@pytest.mark.parametrize("streamed", [True, False], ids=["stream", "ruamel"])
def test_equal_values_are_shared_between_subscribers(tmp_path: Path, streamed: bool) -> None:
    text = "defaults: {send_at: '07:30', exclude: [survey]}\nsubscribers:\n" + "".join(
        f"  - email: r{i}@example.org\n    keywords: [diffusion, agents]\n"
        f"    timezone: Europe/Berlin\n    sources: [hf]\n    frequency: weekly\n"
        for i in range(3)
    )
    path = tmp_path / "s.yaml"
    result, problems = yaml_loader._load(text.encode(), path, None, streamed=streamed)
    assert result is not None, problems
    a, b, _ = result.subscribers
    assert a == b.model_copy(update={"email": a.email})
    for option in ("send_at", "exclude", "keywords", "timezone", "sources", "frequency"):
        assert getattr(a, option) is getattr(b, option), option
    if streamed:
        assert a.keywords[0] is b.keywords[0]


def test_subscribers_are_slotted_and_small_when_pickled() -> None:
    sub = Subscriber(email="ada@example.org", name="Ada", keywords=("diffusion",))
    assert not hasattr(sub, "__dict__")
    assert pickle.loads(pickle.dumps(sub)) == sub
    # The field values and the class, no field names or pydantic bookkeeping.
    assert len(pickle.dumps(sub)) < 200


def test_an_unchanged_settled_file_is_neither_read_nor_hashed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "subscribers.yaml"
    path.write_text("subscribers:\n  - email: a@example.org\n", encoding="utf-8")
    old = 1_700_000_000
    os.utime(path, (old, old))
    # ctime cannot be set back; pretend "now" is long after it instead.
    real_time_ns = yaml_loader.time.time_ns
    monkeypatch.setattr(yaml_loader.time, "time_ns", lambda: real_time_ns() + 10**12)
    assert len(load_subscribers(path)) == 1  # read, hashed, parsed
    reads: list[Path] = []
    real_read = Path.read_bytes

    def counting_read(self: Path) -> bytes:
        reads.append(self)
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", counting_read)
    assert len(load_subscribers(path)) == 1
    assert reads == []
    path.write_text("subscribers:\n  - email: a@example.org\n  - email: b@example.org\n")
    assert len(load_subscribers(path)) == 2
    assert reads == [path]


def test_a_recently_modified_file_is_hashed_every_time(tmp_path: Path) -> None:
    path = tmp_path / "subscribers.yaml"
    for n in range(3, 7):  # same size, within one mtime tick: still every edit is seen
        path.write_text(f"subscribers:\n  - email: a@example.org\n    max_papers: {n}\n")
        assert load_subscribers(path).subscribers[0].max_papers == n


def test_keywords_stay_shared_past_the_compactors_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(yaml_loader, "_MAX_SHARED", 2)
    text = "subscribers:\n" + "".join(
        f"  - email: r{i}@example.org\n    keywords: [diffusion, 'k{i}']\n" for i in range(6)
    )
    result, problems = yaml_loader._load(text.encode(), tmp_path / "s.yaml", None)
    assert result is not None, problems
    firsts = {id(s.keywords[0]) for s in result.subscribers}
    assert len(firsts) == 1  # every list is different, "diffusion" is one string
