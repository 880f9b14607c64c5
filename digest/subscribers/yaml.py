"""The subscribers file loader: YAML → validated :class:`~digest.subscribers.model.SubscriberList`.

The subscribers file (``DIGEST_SUBSCRIBERS``, default ``subscribers.yaml``; start from
``subscribers.example.yaml``) is YAML::

    defaults: {max_papers: 10}          # any per-subscriber option except email and name
    subscribers:
      - email: ada@example.org
        name: Ada
        keywords: [diffusion, "reinforcement learning", "agent*"]
        exclude: [survey]

:func:`load_subscribers` validates the whole file and reports **every** problem at once, each
as one line ``path:line: subscribers[3].keywords[1]: message`` (``line`` is 1-based, list
indexes are 0-based). Unknown keys are errors with a "did you mean" hint, so a typo never
silently falls back to a default.

Speed and memory: a valid file is read by :mod:`digest.subscribers.stream` (the file's bytes
cut into runs of entries, each decoded on its own and read line by line by
:mod:`digest.subscribers.lines` when it has the usual simple shape, by libyaml otherwise;
equal values shared between subscribers: 100,000 subscribers in a few seconds and in memory
that does not grow with a node tree). A file with a problem, or using YAML those readers
leave alone, is parsed once into a ruamel node tree (its C parser when ``ruamel.yaml.clib``
is installed), whose line numbers locate every problem. The result is cached per path: while
the file's mtime, ctime, size and inode stay the same (and it was not modified within
:data:`RACY_STAMP_S` of being read) a load neither reads nor hashes it; when they change, the
file is read and hashed, and parsed only if its SHA-256 changed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import hashlib
import logging
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.constructor import SafeConstructor
from ruamel.yaml.error import MarkedYAMLError, YAMLError
from ruamel.yaml.nodes import MappingNode, Node, SequenceNode
from ruamel.yaml.reader import ReaderError

from digest.addresses import normalize_email
from digest.errors import ConfigError, field_message
from digest.subscribers.model import (
    _CROSS_FIELD,
    _DEFAULT_FIELDS,
    _FIELDS,
    EXAMPLE_FILE,
    MAX_SUMMARY_PROBLEMS,
    PER_SUBSCRIBER_ONLY,
    TOP_LEVEL_KEYS,
    UNPERSONALIZED_EMAIL,
    Subscriber,
    SubscriberList,
    _hint,
)
from digest.subscribers.scalars import MAX_INT_DIGITS
from digest.subscribers.stream import NotSure, read_entries

log = logging.getLogger(__name__)


# --- loading -------------------------------------------------------------------------------

Loc = tuple[str | int, ...]


@dataclass
class _Problems:
    """Problems found so far: (location, message, other location it refers to or ``None``).

    Locations are paths into the document (``("subscribers", 3, "email")``); their line
    numbers are looked up only when the problems are reported.
    """

    items: list[tuple[Loc, str, Loc | None]] = field(default_factory=list)

    def add(self, loc: Loc, message: str, *, also: Loc | None = None) -> None:
        self.items.append((loc, message, also))


@dataclass(frozen=True)
class _Cached:
    digest: bytes
    known_sources: tuple[str, ...] | None
    result: SubscriberList | None
    problems: tuple[str, ...]
    stamp: tuple[int, ...] = ()
    """``(mtime_ns, ctime_ns, size, inode)`` when the file was read; ``()``: do not trust it
    (the file was modified too recently to rule out a same-size edit within the clock's
    granularity)."""


RACY_STAMP_S = 2.0
"""A file modified less than this many seconds before it was read may change again with no
visible change of mtime (the file system's timestamps are coarser than its writes): until it
is older, every load reads and hashes it."""


_cache: dict[str, _Cached] = {}
_cache_lock = threading.Lock()


def load_subscribers(path: Path, *, known_sources: Sequence[str] | None = None) -> SubscriberList:
    """Read and validate the subscribers file.

    The result is cached per path: re-loading a file whose mtime, ctime, size and inode are
    unchanged (the daemon does every tick) costs one ``stat``; after a change, one read and
    one SHA-256, and a parse only when the content changed.

    Args:
        path: the YAML file (``DIGEST_SUBSCRIBERS``).
        known_sources: the configured source specs (``Settings.source_specs``); when given,
            a subscriber's ``sources`` entry that is not among them is a problem.

    Returns:
        The subscribers in file order, ``defaults`` applied.

    Raises:
        ConfigError: the file is missing, unreadable, not YAML, or invalid. ``.problems``
            lists every problem, one line each: ``path:line: subscribers[3].email: message``
            (1-based line; 0-based list index).
    """
    shown = str(path)
    known = tuple(known_sources) if known_sources is not None else None
    try:
        key = str(path.resolve())
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
        with _cache_lock:
            hit = _cache.get(key)
        if hit is not None and hit.stamp == stamp and hit.known_sources == known:
            return _cached(shown, hit)  # unchanged since read: no read, no hash
        data = path.read_bytes()
    except FileNotFoundError:
        raise _error(
            shown,
            [
                f"{shown}: subscribers file not found; `digest init` writes an example (or "
                f"cp {EXAMPLE_FILE} {shown}, or point DIGEST_SUBSCRIBERS at yours)"
            ],
        ) from None
    except OSError as e:
        raise _error(shown, [f"{shown}: cannot read the subscribers file: {e.strerror}"]) from None

    settled = time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > RACY_STAMP_S * 1e9
    trusted = stamp if settled else ()
    digest = hashlib.sha256(data).digest()
    if hit is not None and hit.digest == digest and hit.known_sources == known:
        with _cache_lock:
            _cache[key] = dataclasses.replace(hit, stamp=trusted)
        return _cached(shown, hit)

    result, problems = _load(data, path, known)
    del data  # not held while the result is copied (peak memory)
    with _cache_lock:
        _cache[key] = _Cached(digest, known, result, tuple(problems), trusted)
    if result is None:
        raise _error(shown, problems)
    log.debug("loaded %d subscribers from %s", len(result), shown)
    return _copy(result)


def known_list(path: Path, data: bytes) -> SubscriberList | None:
    """The list :func:`load_subscribers` last read from ``path``, if it was read from exactly
    ``data`` (and was valid); ``None`` otherwise. Read-only."""
    with _cache_lock:
        hit = _cache.get(str(path.resolve()))
    if hit is None or hit.result is None or hit.known_sources is not None:
        return None
    return hit.result if hit.digest == hashlib.sha256(data).digest() else None


def remember_list(path: Path, data: bytes, result: SubscriberList) -> None:
    """Tell the cache that ``path`` now holds ``data``, whose list is ``result`` (a writer
    that made ``data`` from a known list and knows each changed subscriber): the next
    :func:`load_subscribers` reads and hashes the file, and parses nothing."""
    with contextlib.suppress(OSError):
        key = str(path.resolve())
        with _cache_lock:
            _cache[key] = _Cached(hashlib.sha256(data).digest(), None, result, (), ())


def _cached(shown: str, hit: _Cached) -> SubscriberList:
    if hit.result is None:
        raise _error(shown, list(hit.problems))
    return _copy(hit.result)


def _copy(result: SubscriberList) -> SubscriberList:
    return SubscriberList(list(result.subscribers), dict(result.defaults), result.path)


def _error(shown: str, problems: list[str]) -> ConfigError:
    if len(problems) == 1:
        return ConfigError(problems[0], problems)
    first = "; ".join(problems[:MAX_SUMMARY_PROBLEMS])
    more = len(problems) - MAX_SUMMARY_PROBLEMS
    tail = f"; and {more} more" if more > 0 else ""
    return ConfigError(f"{shown}: {len(problems)} problems: {first}{tail}", problems)


def _load(
    data: bytes,
    path: Path,
    known_sources: tuple[str, ...] | None,
    *,
    streamed: bool = True,
    keys: list[tuple[str, ...]] | None = None,
) -> tuple[SubscriberList | None, list[str]]:
    """Parse and validate; ``(result, [])`` or ``(None, problems)``.

    ``streamed``: try the streaming reader first (``False``: only the ruamel path; tests
    compare the two). ``keys``: filled with the options each subscriber's entry sets, in
    order (for :func:`read_list`).
    """
    shown = str(path)
    fast = _load_streamed(data, path, known_sources, keys) if streamed else None
    if fast is not None:
        return fast, []
    if keys is not None:
        keys.clear()  # the streamed reader gave up part way
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        return None, [f"{shown}: not UTF-8 text (bad byte at offset {e.start})"]
    parsed = _compose(text, shown)
    if isinstance(parsed, list):
        return None, parsed
    root, doc = parsed
    problems = _Problems()
    result = _validate(doc, path, known_sources, problems, keys)
    if not problems.items:
        return result, []
    return None, _located(root, problems, shown)


def _compose(text: str, shown: str, shift: int = 0) -> tuple[Node | None, Any] | list[str]:
    """``(node tree, document)`` of ``text``, or its YAML problem as ``[line]``; ``shift`` is
    added to every line number (``text`` is part of a file)."""
    yaml = YAML(typ="safe", pure=False)  # the C parser when ruamel.yaml.clib is installed
    yaml.Constructor = _Constructor
    root = None
    try:
        root = yaml.compose(text)
        doc = yaml.constructor.construct_document(root) if root is not None else None
    except MarkedYAMLError as e:
        return [_yaml_problem(shown, e, shift)]
    except TypeError:  # a key holding a mapping (`? [{a: b}]`): ruamel cannot hash it
        line = _unhashable_key_line(root) + shift if root is not None else 1
        return [f"{shown}:{line}: invalid YAML: found unhashable key (write 'key: value')"]
    except ReaderError as e:  # a character YAML does not allow (NUL, other controls)
        line = text.count("\n", 0, e.position) + 1 + shift
        what = e.character if isinstance(e.character, int) else ord(e.character)
        return [
            f"{shown}:{line}: invalid YAML: unacceptable character #x{what:04x}: "
            f"{' '.join(str(e.reason).split())} (remove it)"
        ]
    except YAMLError as e:  # pragma: no cover - unmarked errors are rare
        return [f"{shown}:{1 + shift}: invalid YAML: {e}"]
    return root, doc


def _located(
    root: Node | None, problems: _Problems, shown: str, shift: int = 0, index: int = 0
) -> list[str]:
    """Each problem as ``path:line: field: message``, in file order. ``shift`` is added to
    the lines, ``index`` to the list index shown (``text`` was part of a file)."""

    def shown_as(loc: Loc) -> Loc:
        if index and len(loc) > 1 and loc[0] == "subscribers" and isinstance(loc[1], int):
            return ("subscribers", loc[1] + index, *loc[2:])
        return loc

    located = []
    for loc, message, also in problems.items:
        if also is not None:
            message += f" (also at line {_line_of(root, also) + shift}, {_dotted(shown_as(also))})"
        located.append((_line_of(root, loc) + shift, shown_as(loc), message))
    located.sort(key=lambda item: item[0])  # file order (stable: same line keeps found order)
    out = []
    for line, loc, message in located:
        where = f"{_dotted(loc)}: " if loc else ""
        out.append(f"{shown}:{line}: {where}{message}")
    return out


def read_list(
    data: bytes, path: Path, *, known_sources: Sequence[str] | None = None
) -> tuple[SubscriberList, list[tuple[str, ...]]]:
    """Read and validate a whole subscribers file, as :func:`load_subscribers` does (uncached).

    Args:
        data: the file's bytes.
        path: its name, for the problems.
        known_sources: as for :func:`load_subscribers`.

    Returns:
        The list, and for each subscriber (same order) the options its entry sets itself.

    Raises:
        ConfigError: every problem, ``path:line: field: message``.
    """
    keys: list[tuple[str, ...]] = []
    known = tuple(known_sources) if known_sources is not None else None
    result, problems = _load(data, path, known, keys=keys)
    if result is None:
        raise _error(str(path), problems)
    return result, keys


def read_defaults(text: str, path: Path) -> dict[str, Any]:
    """The validated ``defaults:`` of a list's text outside its entries (its head and tail).

    Raises:
        ConfigError: the text is not YAML or ``defaults:`` is invalid (``path:line`` each).
    """
    shown = str(path)
    parsed = _compose(text.lstrip("\ufeff"), shown)
    if isinstance(parsed, list):
        raise _error(shown, parsed)
    root, doc = parsed
    problems = _Problems()
    defaults = _validate_defaults(doc.get("defaults") if isinstance(doc, dict) else None, problems)
    if problems.items:
        raise _error(shown, _located(root, problems, shown))
    return defaults


ENTRY_KEY_LINE = "subscribers:\n"
"""What an entry's text is read under: one item of the ``subscribers:`` list."""


def load_entry(
    text: str,
    *,
    defaults: Mapping[str, Any],
    path: Path,
    first_line: int = 1,
    index: int = 0,
    known_sources: Sequence[str] | None = None,
) -> tuple[Subscriber, tuple[str, ...]]:
    """Read and validate one subscriber's entry, with the rules of the whole file.

    Args:
        text: the entry: one item of the ``subscribers:`` list, as written there (``- email:
            …`` and the lines under it, indented as in the file).
        defaults: the list's validated ``defaults:``.
        path: the file (or what stands for it) named in the problems.
        first_line: the 1-based line of ``text``'s first line in that file.
        index: its index in the file's list (shown in the problems: ``subscribers[3]``).
        known_sources: as for :func:`load_subscribers`.

    Returns:
        The subscriber and the options its entry sets itself.

    Raises:
        ConfigError: every problem, ``path:line: field: message`` (lines of the file).
    """
    shown = str(path)
    shift = first_line - 2  # the entry is read after the key line
    parsed = _compose(ENTRY_KEY_LINE + text, shown, shift)
    if isinstance(parsed, list):
        raise _error(shown, parsed)
    root, doc = parsed
    items = doc.get("subscribers") if isinstance(doc, dict) else None
    if not isinstance(items, list) or len(items) != 1 or set(doc) != {"subscribers"}:
        count = len(items) if isinstance(items, list) else 0
        raise _error(
            shown,
            [
                f"{shown}:{first_line}: expected one subscriber entry ('- email: ...' and its "
                f"options, indented under it), found {count}"
            ],
        )
    problems = _Problems()
    keys: list[tuple[str, ...]] = []
    known = tuple(known_sources) if known_sources is not None else None
    result = _validate({**doc, "defaults": dict(defaults)}, path, known, problems, keys)
    if result is None:
        raise _error(shown, _located(root, problems, shown, shift, index))
    return result.subscribers[0], keys[0]


class _Constructor(SafeConstructor):
    """ruamel's safe constructor, but an integer literal of more than
    :data:`~digest.subscribers.scalars.MAX_INT_DIGITS` digits stays text (ruamel would raise
    ValueError past Python's 4,300-digit limit, with no line): the option's validator then
    says which range it takes, at the literal's line."""

    def construct_yaml_int(self, node: Any) -> Any:
        text = str(self.construct_scalar(node))
        if len(text.replace("_", "").lstrip("+-")) > MAX_INT_DIGITS:
            return text
        return super().construct_yaml_int(node)


_Constructor.add_constructor("tag:yaml.org,2002:int", _Constructor.construct_yaml_int)


def _load_streamed(
    data: bytes,
    path: Path,
    known_sources: tuple[str, ...] | None,
    keys: list[tuple[str, ...]] | None = None,
) -> SubscriberList | None:
    """The fast path (:mod:`digest.subscribers.stream`): the result of a valid file, or
    ``None`` when the file must be read the slow way (it has a problem, or uses YAML the
    streaming reader leaves to ruamel). Problems are not described here: at the first one
    the slow way reads the file again and locates every problem."""
    split = read_entries(data)
    if split is None:
        return None
    top, entries = split
    if any(key not in TOP_LEVEL_KEYS for key in top):
        return None
    problems = _Problems()
    defaults = _validate_defaults(top.get("defaults"), problems)
    if problems.items:
        return None
    enabled = gc.isenabled()
    gc.disable()  # only acyclic values are made here: no collection can free anything
    try:
        subscribers = _valid_subscribers(entries, defaults, known_sources, keys)
    except NotSure as e:
        log.debug("%s: reading it the slow way (%s)", path, e)
        return None
    finally:
        if enabled:
            gc.enable()
    return None if subscribers is None else SubscriberList(subscribers, defaults, path)


def _valid_subscribers(
    entries: Iterable[Any],
    defaults: dict[str, Any],
    known_sources: tuple[str, ...] | None,
    keys: list[tuple[str, ...]] | None = None,
) -> list[Subscriber] | None:
    """The subscribers of the streamed entries, or ``None`` at the first problem (the same
    checks as :func:`_validate`, without the words)."""
    validate = Subscriber.model_validate
    known = frozenset(known_sources) if known_sources is not None else None
    subscribers: list[Subscriber] = []
    seen: set[str] = set()
    compact = Compactor()
    for entry in entries:
        if type(entry) is not dict or not _FIELD_SET.issuperset(entry):
            return None
        raw_email = entry.get("email")
        if type(raw_email) is not str:
            return None
        address = normalize_email(raw_email)
        if address in seen:
            return None  # a duplicate
        merged = {**defaults, **entry} if defaults else entry
        try:
            sub = validate(merged)
        except ValidationError:
            return None
        # Keyed by the subscriber's own string when it is the same text (memory).
        seen.add(sub.email if sub.email == address else address)
        sub = compact.subscriber(sub, merged)
        if known is not None and sub.sources is not None and not known.issuperset(sub.sources):
            return None
        subscribers.append(sub)
        if keys is not None:
            keys.append(tuple(entry))
    return subscribers


def _yaml_problem(shown: str, e: MarkedYAMLError, shift: int = 0) -> str:
    mark = e.problem_mark or e.context_mark
    line = (mark.line + 1 if mark is not None else 1) + shift
    problem = " ".join(str(e.problem or "syntax error").split())
    context = ""
    if e.context and e.context_mark is not None:
        context = f" ({' '.join(str(e.context).split())} at line {e.context_mark.line + 1 + shift})"
    return f"{shown}:{line}: invalid YAML: {problem}{context}"


class Compactor:
    """Shares equal values between the subscribers of one load (memory per subscriber).

    Each YAML scalar is a new string object and each validated list a new tuple, although
    keywords, time zones, source lists and the lists set under ``defaults:`` recur across a
    list. Subscribers are immutable, so sharing equal values changes nothing else.
    """

    def __init__(self) -> None:
        self._values: dict[Any, Any] = {}

    def subscriber(self, sub: Subscriber, options: Iterable[str]) -> Subscriber:
        """``sub`` with the values of ``options`` (those the file set) shared with equal ones.

        Only the string and list options are looked at (:data:`_SHAREABLE`: ``email`` and
        ``name`` rarely recur; numbers, booleans and ``send_at`` are shared already). The
        strings of a list are interned (``sys.intern``), so equal keywords in different
        lists are one string too.
        """
        values = self._values
        for option in options:
            if option in _SHAREABLE:
                value = getattr(sub, option)
                if value is None:
                    continue
                shared = values.get(value)
                if shared is None:
                    shared = tuple(map(sys.intern, value)) if type(value) is tuple else value
                    if len(values) < _MAX_SHARED:
                        values[shared] = shared
                if shared is not value:
                    object.__setattr__(sub, option, shared)
        return sub


_SHAREABLE = frozenset(
    (
        "keywords",
        "exclude",
        "frequency",
        "weekday",
        "timezone",
        "sources",
        "interests",
        "like",
        "dislike",
        "authors",
    )
)
"""Options whose value is a string, a tuple of strings or ``None``."""
_FIELD_SET = frozenset(_FIELDS)
_MAX_SHARED = 10_000
"""Distinct values the compactor remembers: enough for what recurs (time zones, source and
default lists, common keyword lists), not a second index of a list whose keyword lists are
all different (its strings are interned all the same)."""


def _validate(
    doc: Any,
    path: Path,
    known_sources: tuple[str, ...] | None,
    problems: _Problems,
    keys: list[tuple[str, ...]] | None = None,
) -> SubscriberList | None:
    """Validate the parsed document; ``None`` when there are problems (in ``problems``)."""
    example = f"see {EXAMPLE_FILE}"
    if doc is None:
        problems.add((), f"the file is empty; it needs a 'subscribers:' list ({example})")
        return None
    if not isinstance(doc, dict):
        problems.add(
            (),
            f"expected a mapping with 'subscribers:' (and optional 'defaults:'), "
            f"got {_kind(doc)} ({example})",
        )
        return None
    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            problems.add((str(key),), _unknown_key(str(key), TOP_LEVEL_KEYS))

    defaults = _validate_defaults(doc.get("defaults"), problems)

    if "subscribers" not in doc:
        problems.add((), f"missing 'subscribers:' list ({example})")
        return None
    entries = doc["subscribers"]
    if entries is None:
        entries = []
    if not isinstance(entries, list):
        problems.add(("subscribers",), f"must be a list of subscribers, got {_kind(entries)}")
        return None

    subscribers: list[Subscriber] = []
    first_seen: dict[str, int] = {}
    compact = Compactor()
    for i, entry in enumerate(entries):
        loc: Loc = ("subscribers", i)
        if not isinstance(entry, dict):
            problems.add(
                loc,
                f"expected a mapping with at least 'email:', got {_kind(entry)} "
                f"(write '- email: ...')",
            )
            continue
        bad_keys = False
        for key in entry:
            if type(key) is str and key in _FIELD_SET:
                continue
            problems.add((*loc, str(key)), _unknown_key(str(key), _FIELDS))
            bad_keys = True
        if bad_keys:
            entry = {k: v for k, v in entry.items() if k in _FIELDS}
        raw_email = entry.get("email")
        if isinstance(raw_email, str) and raw_email.strip():
            # Compared on the raw text (normalized: NFC, IDNA domain, lower case), so a
            # duplicate is found even in an entry with other problems.
            address = normalize_email(raw_email)
            if address in first_seen:
                problems.add(
                    (*loc, "email"),
                    f"duplicate email {address}",
                    also=("subscribers", first_seen[address], "email"),
                )
            else:
                first_seen[address] = i
        merged = {**defaults, **entry}
        try:
            sub = Subscriber.model_validate(merged)
        except ValidationError as e:
            for err in e.errors():
                field_loc = _error_loc(err)
                name = field_loc[0] if field_loc else None
                if err["type"] in _CROSS_FIELD:
                    if name not in entry:
                        field_loc = ()  # the option comes from defaults: point at the entry
                elif name not in entry and name in defaults:
                    continue  # a bad default: reported once, under defaults
                problems.add((*loc, *field_loc), error_message(err))
            continue
        sub = compact.subscriber(sub, merged)
        if known_sources is not None and sub.sources is not None:
            for j, spec in enumerate(sub.sources):
                if spec not in known_sources:
                    problems.add(
                        (*loc, "sources", j),
                        f"{spec!r} is not a configured source "
                        f"(DIGEST_SOURCES: {', '.join(known_sources)})",
                    )
        subscribers.append(sub)
        if keys is not None:
            keys.append(tuple(entry))

    if problems.items:
        return None
    return SubscriberList(subscribers, defaults, path)


def _validate_defaults(raw: Any, problems: _Problems) -> dict[str, Any]:
    """The usable part of ``defaults:`` (bad entries are reported and dropped)."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.add(("defaults",), f"must be a mapping of options, got {_kind(raw)}")
        return {}
    good: dict[str, Any] = {}
    for key, value in raw.items():
        if key in PER_SUBSCRIBER_ONLY:
            problems.add(("defaults", key), f"{key!r} cannot be a default; set it per subscriber")
        elif key not in _DEFAULT_FIELDS:
            problems.add(("defaults", str(key)), _unknown_key(str(key), _DEFAULT_FIELDS))
        else:
            good[key] = value
    try:
        Subscriber.model_validate({**good, "email": UNPERSONALIZED_EMAIL})
    except ValidationError as e:
        for err in e.errors():
            field_loc = _error_loc(err)
            if field_loc and field_loc[0] in good:
                if err["type"] in _CROSS_FIELD:
                    continue  # fine as a default when every subscriber has keywords
                problems.add(("defaults", *field_loc), error_message(err))
                good.pop(str(field_loc[0]), None)
    return good


def _error_loc(err: Any) -> Loc:
    ctx = err.get("ctx") or {}
    if "field" in ctx:
        return (str(ctx["field"]),)
    return tuple(err["loc"])


def error_message(err: Any) -> str:
    """One readable message for a pydantic error (ours are already worded for humans)."""
    kind = err["type"]
    if kind == "missing":
        field_name = err["loc"][-1] if err["loc"] else "?"
        if field_name == "email":
            return "missing; every subscriber needs an email address"
        return "missing"
    return field_message(err)


def _unknown_key(key: str, allowed: Sequence[str]) -> str:
    hint = _hint(key, allowed)
    if hint:
        return f"unknown key {key!r}{hint}"
    return f"unknown key {key!r}; valid keys: {', '.join(allowed)}"


def _kind(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, str):
        return f"the string {value!r}"
    return f"{value!r}"


def _dotted(loc: Loc) -> str:
    out = ""
    for step in loc:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out


def _unhashable_key_line(root: Node) -> int:
    """1-based line of the first mapping key that holds a mapping (1 if none is found)."""
    for node in _nodes(root):
        if isinstance(node, MappingNode):
            for key, _value in node.value:
                if any(isinstance(inner, MappingNode) for inner in _nodes(key)):
                    return int(key.start_mark.line) + 1
    return 1


def _nodes(root: Node) -> Iterable[Node]:
    """``root`` and every node below it, depth first."""
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, MappingNode):
            stack.extend(part for pair in reversed(node.value) for part in reversed(pair))
        elif isinstance(node, SequenceNode):
            stack.extend(reversed(node.value))


def _line_of(root: Node | None, loc: Loc) -> int:
    """1-based line of the key (or list item) ``loc`` points at; its parent's if absent."""
    if root is None:
        return 1
    node: Node = root
    line = int(node.start_mark.line) + 1
    for step in loc:
        if isinstance(node, MappingNode):
            for key_node, value_node in node.value:
                if str(key_node.value) == str(step):
                    line = int(key_node.start_mark.line) + 1
                    node = value_node
                    break
            else:
                return line
        elif isinstance(node, SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
            line = int(node.start_mark.line) + 1
        else:
            return line
    return line
