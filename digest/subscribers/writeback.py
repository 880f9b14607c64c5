"""Write changes back into the subscribers YAML file, keeping it the file people edit.

The web app (and later the bounce processor) changes the file in three ways: set
``active: false`` (unsubscribe), replace some of a subscriber's fields (preferences), append an
entry (confirmed sign-up). Each write:

* is a ruamel.yaml *round trip*: comments, key order, blank lines, quoting and flow style of
  everything not changed stay as they were (indentation is detected from the file; CRLF line
  breaks and a BOM are kept);
* is validated with the same rules as :func:`digest.subscribers.load_subscribers` before it is
  written: an edit that would make the file invalid is refused and nothing is written;
* is atomic: written to a temporary file in the same directory, fsynced, then renamed over the
  file (readers such as the daemon see the old or the new file, never a half-written one;
  the file's permissions are kept);
* is serialized with every other writer by a :class:`filelock.FileLock` on
  ``<file>.lock``;
* is safe against an edit made by hand at the same moment: just before the rename the file is
  read again, and if it changed since it was read, the change is re-applied to the new
  contents (up to :data:`MAX_ATTEMPTS` times). Someone's edit is never overwritten.
"""

from __future__ import annotations

import codecs
import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import time
from pathlib import Path
from typing import Any

import filelock
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from ruamel.yaml.scalarstring import DoubleQuotedScalarString
from ruamel.yaml.tokens import CommentToken
from ruamel.yaml.util import load_yaml_guess_indent

from digest.addresses import normalize_email
from digest.errors import ConfigError
from digest.state import StateBackend, Suppression, SuppressionReason
from digest.subscribers.lines import reads_as_plain
from digest.subscribers.model import Subscriber
from digest.subscribers.yaml import _load as _validate_bytes
from digest.subscribers.yaml import load_subscribers

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
"""How often a write is re-applied when the file keeps changing under it."""
LOCK_TIMEOUT_S = 10.0
"""How long a writer waits for another writer's lock, seconds."""

Change = Callable[[CommentedMap], bool]
"""Mutates the round-trip document in place; returns whether anything changed."""


class SubscribersFile:
    """The subscribers file as something to write into.

    Args:
        path: the YAML file (``DIGEST_SUBSCRIBERS``).
        lock_timeout: seconds to wait for another writer.
        before_replace: test hook, called after the new contents are written to the temporary
            file and before the file is re-checked and replaced.
    """

    def __init__(
        self,
        path: Path,
        *,
        lock_timeout: float = LOCK_TIMEOUT_S,
        before_replace: Callable[[], None] | None = None,
    ) -> None:
        self.path = Path(path)
        self._lock = filelock.FileLock(str(self.path) + ".lock", timeout=lock_timeout)
        self._before_replace = before_replace

    # -- the changes (each returns whether the file changed) ---------------------------------
    def set_active(self, email: str, active: bool) -> bool:
        """Set ``active`` of the subscriber with this address.

        Returns:
            ``True`` if the file changed, ``False`` if it already said so or the address is
            not in the file.

        Raises:
            ConfigError: the file cannot be read, parsed, validated or written.
        """
        return self.set_active_many({email: active})

    def set_active_many(self, changes: Mapping[str, bool]) -> bool:
        """Set ``active`` of several subscribers in one write (address → value).

        The usual case is a one-line splice: the value of an existing ``active:`` key is
        replaced, or an ``active: false`` line is added under the ``email:`` line, located
        with the (C) YAML parser; every other byte of the file stays as it was. Anything
        unusual (flow-style entries, ``active`` in ``defaults``, multi-line values) falls back
        to the round trip. Either way the result is validated before it is written.

        Returns:
            ``True`` if the file changed.

        Raises:
            ConfigError: as :meth:`set_active`.
        """
        wanted = {normalize_email(e): bool(v) for e, v in changes.items()}
        if not wanted:
            return False

        def transform(before: bytes) -> bytes | None:
            spliced = _splice_active(before, wanted)
            if spliced is _FALLBACK:
                return self._apply(
                    before, lambda doc: any([change_active(doc, e, v) for e, v in wanted.items()])
                )
            if spliced is None:
                return None
            assert isinstance(spliced, bytes)
            # A splice only changes or adds `active:` scalars of entries that had none, so the
            # file stays as valid as it was; checking the result's shape with the C parser is
            # enough (the full validation of a long list would take seconds).
            if not _splice_ok(spliced, wanted):
                return self._apply(
                    before, lambda doc: any([change_active(doc, e, v) for e, v in wanted.items()])
                )
            return spliced

        return self._edit_bytes(transform)

    def update_fields(self, email: str, fields: Mapping[str, Any]) -> bool:
        """Replace some fields of one subscriber (the preferences form).

        A field whose value is what the subscriber already gets (own value, ``defaults`` or
        the built-in default) is left as written; ``None`` removes the key. Lists keep their
        flow/block style.

        Returns:
            ``True`` if the file changed; ``False`` if nothing differed or the address is
            not in the file.

        Raises:
            ConfigError: as :meth:`set_active`; also when the result does not validate.
        """
        return self.edit(lambda doc: change_fields(doc, email, fields))

    def add_or_activate(
        self, email: str, *, name: str | None = None, keywords: Iterable[str] = ()
    ) -> bool:
        """Append a subscriber (a confirmed sign-up), or set ``active: true`` if present.

        Returns:
            ``True`` if the file changed.

        Raises:
            ConfigError: as :meth:`update_fields`.
        """
        words = list(keywords)
        return self.edit(lambda doc: change_add_or_activate(doc, email, name=name, keywords=words))

    # -- the write -----------------------------------------------------------------------
    def edit(self, change: Change) -> bool:
        """Apply ``change`` to the file: round trip, validated, atomic, re-applied on conflict.

        Returns:
            ``True`` if the file was rewritten, ``False`` if ``change`` changed nothing.

        Raises:
            ConfigError: the file cannot be read, is not valid YAML, the result does not
                validate, or it kept changing for :data:`MAX_ATTEMPTS` attempts; nothing
                was written.
        """
        return self._edit_bytes(lambda before: self._apply(before, change))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold ``<file>.lock`` for the block: no other writer (thread or process) writes
        meanwhile. Reentrant within a thread, so the block may call the writes above.

        Raises:
            ConfigError: another writer held the lock for more than ``lock_timeout`` seconds.
        """
        try:
            with self._lock:
                yield
        except filelock.Timeout:
            shown = str(self.path)
            raise ConfigError(
                f"{shown}: another writer holds {shown}.lock for more than "
                f"{self._lock.timeout:g} s; try again"
            ) from None

    def _edit_bytes(self, transform: Callable[[bytes], bytes | None]) -> bool:
        """The write loop of :meth:`edit`: ``transform`` maps the file's bytes to the new
        bytes (validated) or ``None`` for no change."""
        shown = str(self.path)
        with self.locked():
            for _attempt in range(MAX_ATTEMPTS):
                before = self._read()
                after = transform(before)
                if after is None:
                    return False
                if self._replace_if_unchanged(before, after):
                    return True
                log.info("%s changed while being written; re-applying the change", shown)
        raise ConfigError(
            f"{shown}: the file kept changing while being written ({MAX_ATTEMPTS} attempts); "
            "nothing was written, try again"
        )

    def _read(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as e:
            raise ConfigError(f"{self.path}: cannot read the subscribers file: {e}") from None

    def _apply(self, before: bytes, change: Change) -> bytes | None:
        shown = str(self.path)
        try:
            text = before.decode("utf-8-sig")
            first_break = text.find("\n")
            crlf = first_break > 0 and text[first_break - 1] == "\r"
            if crlf:  # the round trip keeps the blank lines and comments of LF text only
                text = text.replace("\r\n", "\n")
            _, indent, offset = load_yaml_guess_indent(text) if text.strip() else (None, 2, 0)
            yaml = _round_trip(indent or 2, offset or 0)
            doc = yaml.load(text)
        except (UnicodeDecodeError, YAMLError) as e:
            raise ConfigError(f"{shown}: cannot update the file: it is not valid YAML ({e})") from e
        if doc is None:
            doc = CommentedMap()
        if not isinstance(doc, CommentedMap):
            raise ConfigError(f"{shown}: cannot update the file: the top level is not a mapping")
        if not change(doc):
            return None
        out = io.StringIO()
        yaml.dump(doc, out)
        dumped = out.getvalue()  # LF line breaks, no BOM: the file's own are put back
        if crlf:
            # Each "\n" dumped is a line break of the file (a scalar's own is escaped, or is
            # a line break of a block scalar, read back as "\n" either way).
            dumped = dumped.replace("\n", "\r\n")
        after = dumped.encode("utf-8")
        if before.startswith(codecs.BOM_UTF8):
            after = codecs.BOM_UTF8 + after
        _, problems = _validate_bytes(after, self.path, None)
        if problems:
            raise ConfigError(
                f"{shown}: the change was not written: the result would be invalid: {problems[0]}",
                problems,
            )
        return after

    def _replace_if_unchanged(self, before: bytes, after: bytes) -> bool:
        directory = self.path.parent
        fd, tmp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=directory)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(after)
                f.flush()
                os.fsync(f.fileno())
            with contextlib.suppress(OSError):
                st = self.path.stat()
                os.chmod(tmp, st.st_mode & 0o7777)
            if self._before_replace is not None:
                self._before_replace()
            if self._read() != before:
                return False
            os.replace(tmp, self.path)
        except OSError as e:
            raise ConfigError(f"{self.path}: cannot write the subscribers file: {e}") from None
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        with contextlib.suppress(OSError):
            dir_fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return True


def catch_up_unsubscribes(file: SubscribersFile, store: StateBackend) -> list[str]:
    """Write ``active: false`` for every subscriber the file still lists as active whose
    address is on the suppression list as unsubscribed.

    The web app suppresses an address first (``send`` and the daemon skip it from then on)
    and writes ``active: false`` in the background; a crash, a kill or a lock timeout in
    between leaves the file behind the state, and nothing else would ever write it. The web
    app calls this at start-up (``digest serve``; ``digest run`` with DIGEST_HTTP_PORT), so
    the file catches up: one ``active:`` line per entry, everything else kept byte for byte
    (:meth:`SubscribersFile.set_active_many`).

    Only the suppression list is followed, and only this way: it already stops the mail, so
    writing it changes what the file says, never who is mailed. Bounces and complaints are
    not written (the web app never writes them). A lifted suppression is not written back
    as ``active: true``: the state cannot tell a resubscribe whose write was lost from an
    operator's later ``active: false``. Preferences need nothing: the web app writes them
    before it records the event (field names only), so the state holds none unwritten.

    Args:
        file: the subscribers file (``DIGEST_SUBSCRIBERS``).
        store: the state, for its suppression list (:meth:`StateBackend.suppressions`).

    Returns:
        The addresses written, in file order (``[]`` when the file was up to date).

    Raises:
        ConfigError: the file is missing or invalid, or cannot be written (nothing was).
    """
    unsubscribed = {a for a, s in store.suppressions().items() if _unsubscribed(s)}
    if not unsubscribed:
        return []
    stale = [s.email for s in load_subscribers(file.path) if s.active and s.email in unsubscribed]
    if not stale:
        return []
    with file.locked():
        # Checked again under the lock: a resubscribe lifts the suppression before it queues
        # its own write (`active: true`), which then waits for this one and comes after it.
        still = [a for a in stale if _unsubscribed(store.suppression(a))]
        changed = file.set_active_many(dict.fromkeys(still, False))
    return still if changed else []


def _unsubscribed(suppression: Suppression | None) -> bool:
    return suppression is not None and suppression.reason == SuppressionReason.UNSUBSCRIBED


_MISSING = object()
_FALLBACK = object()
_TRUE = ("true", "True", "TRUE")
_FALSE = ("false", "False", "FALSE")


def _value_of(node: MappingNode, key: str) -> tuple[Node, Node] | None:
    for k, v in node.value:
        if isinstance(k, ScalarNode) and k.value == key:
            return k, v
    return None


def _splice_ok(spliced: bytes, wanted: Mapping[str, bool]) -> bool:
    """True if ``spliced`` parses and every wanted address found has its ``active`` value."""
    try:
        root = YAML(typ="safe", pure=False).compose(spliced.decode("utf-8-sig"))
    except (UnicodeDecodeError, YAMLError):
        return False
    subs = _value_of(root, "subscribers") if isinstance(root, MappingNode) else None
    if subs is None or not isinstance(subs[1], SequenceNode):
        return False
    for item in subs[1].value:
        if not isinstance(item, MappingNode):
            continue
        email = _value_of(item, "email")
        if email is None or not isinstance(email[1], ScalarNode):
            continue
        want = wanted.get(normalize_email(str(email[1].value)))
        if want is None:
            continue
        active = _value_of(item, "active")
        value = active[1].value if active is not None else "true"
        if value not in (_TRUE if want else _FALSE):
            return False
    return True


def _splice_active(before: bytes, wanted: Mapping[str, bool]) -> bytes | object | None:
    """``before`` with the ``active`` values of ``wanted`` changed by line edits; ``None``
    if nothing changes; :data:`_FALLBACK` if the file's shape needs the round trip."""
    bom = before.startswith(codecs.BOM_UTF8)
    try:
        text = before.decode("utf-8-sig")
        root = YAML(typ="safe", pure=False).compose(text)
    except (UnicodeDecodeError, YAMLError):
        return _FALLBACK
    if not isinstance(root, MappingNode):
        return _FALLBACK
    defaults = _value_of(root, "defaults")
    if defaults is not None and (
        not isinstance(defaults[1], MappingNode) or _value_of(defaults[1], "active") is not None
    ):
        return _FALLBACK
    subs = _value_of(root, "subscribers")
    if subs is None or not isinstance(subs[1], SequenceNode) or subs[1].flow_style:
        return _FALLBACK
    lines = text.splitlines(keepends=True)
    edits: list[tuple[int, int, int, str]] = []  # (line, start col, end col, new text)
    inserts: list[tuple[int, str]] = []  # (after line, new line)
    for item in subs[1].value:
        if not isinstance(item, MappingNode):
            continue
        email = _value_of(item, "email")
        if email is None or not isinstance(email[1], ScalarNode):
            continue
        address = normalize_email(str(email[1].value))
        if address not in wanted:
            continue
        if item.flow_style:
            return _FALLBACK
        want = wanted[address]
        active = _value_of(item, "active")
        if active is not None:
            node = active[1]
            if not isinstance(node, ScalarNode) or node.start_mark.line != node.end_mark.line:
                return _FALLBACK
            if node.value in (_TRUE if want else _FALSE):
                continue
            if node.value not in _TRUE + _FALSE or node.style:
                return _FALLBACK
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
                return _FALLBACK
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


def change_active(doc: CommentedMap, email: str, active: bool) -> bool:
    """In the round-trip ``doc``: set ``active`` of ``email``'s entry (see
    :meth:`SubscribersFile.set_active`)."""
    entry = _find(doc, email)
    if entry is None or entry.get("active", _default(doc, "active", True)) == active:
        return False
    _set(entry, "active", active)
    return True


def change_fields(doc: CommentedMap, email: str, fields: Mapping[str, Any]) -> bool:
    """In ``doc``: replace fields of one entry (:meth:`SubscribersFile.update_fields`)."""
    entry = _find(doc, email)
    if entry is None:
        return False
    changed = False
    for key, value in fields.items():
        current = entry.get(key, _default(doc, key, _model_default(key)))
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
    """In ``doc``: append or re-activate (:meth:`SubscribersFile.add_or_activate`)."""
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


def _round_trip(indent: int, offset: int) -> YAML:
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


def _model_default(key: str) -> Any:
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
