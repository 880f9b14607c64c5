"""Write changes back into the subscribers YAML file, keeping it the file people edit.

The web app and the CLI change the file entry by entry (:mod:`digest.subscribers.changes`:
``active``, some fields, a new entry, an entry replaced or removed). Each write:

* touches only the entries it changes (:meth:`SubscribersFile.apply`): the file is cut into
  its entries as text (:func:`~digest.subscribers.entries.split_list`), each changed entry is
  re-written alone (a one-line ``active:`` splice, else a ruamel.yaml round trip of that
  entry: its comments, key order, quoting and flow style stay) and spliced back; every other
  byte of the file stays as it was (CRLF line breaks and a BOM included). A file whose list
  is not written the usual way gets a round trip of the whole document instead;
* is validated with the same rules as :func:`digest.subscribers.load_subscribers` before it is
  written: a changed entry that would not validate is refused (nothing of it is written);
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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import filelock
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError
from ruamel.yaml.util import load_yaml_guess_indent

from digest.addresses import normalize_email
from digest.errors import ConfigError
from digest.state import StateBackend, Suppression, SuppressionReason
from digest.subscribers.changes import AddOrActivate, EntryChange, SetFields
from digest.subscribers.entries import (
    FALLBACK,
    ListLayout,
    Located,
    change_active,
    round_trip,
    splice_active,
    splice_ok,
    split_list,
)
from digest.subscribers.model import Subscriber, SubscriberList
from digest.subscribers.yaml import _load as _validate_bytes
from digest.subscribers.yaml import (
    known_list,
    load_entry,
    load_subscribers,
    read_defaults,
    remember_list,
)

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 5
"""How often a write is re-applied when the file keeps changing under it."""
LOCK_TIMEOUT_S = 10.0
"""How long a writer waits for another writer's lock, seconds."""

DocChange = Callable[[CommentedMap], bool]
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
        self.written: tuple[tuple[int, ...], SubscriberList] | None = None
        """After :meth:`apply` wrote the file: its :func:`file_stamp` just after, and its list
        (``None``: not known)."""

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
            spliced = splice_active(before, wanted)
            if spliced is FALLBACK:
                return self._apply(
                    before, lambda doc: any([change_active(doc, e, v) for e, v in wanted.items()])
                )
            if spliced is None:
                return None
            assert isinstance(spliced, bytes)
            # A splice only changes or adds `active:` scalars of entries that had none, so the
            # file stays as valid as it was; checking the result's shape with the C parser is
            # enough (the full validation of a long list would take seconds).
            if not splice_ok(spliced, wanted):
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
        return self._one(SetFields(email, dict(fields)))

    def add_or_activate(
        self, email: str, *, name: str | None = None, keywords: Iterable[str] = ()
    ) -> bool:
        """Append a subscriber (a confirmed sign-up), or set ``active: true`` if present.

        Returns:
            ``True`` if the file changed.

        Raises:
            ConfigError: as :meth:`update_fields`.
        """
        return self._one(AddOrActivate(email, name, tuple(keywords)))

    def _one(self, change: EntryChange) -> bool:
        [result] = self.apply([change])
        if isinstance(result, ConfigError):
            raise result
        return result

    def apply(self, changes: Sequence[EntryChange]) -> list[bool | ConfigError]:
        """Write ``changes`` in one atomic write, entry by entry (see the module docstring).

        Each change is checked on its own: one whose entry would not validate is refused
        (its :class:`ConfigError` is its result) and the others are written. Changes of the
        same address apply in order.

        Returns:
            For each change: ``True`` (written), ``False`` (nothing to change: already so,
            or the address is not in the file), or the error that refused it.

        Raises:
            ConfigError: the file cannot be read or written, is not YAML, or its
                ``defaults:`` are invalid; nothing was written.
        """
        results: list[bool | ConfigError] = []
        written: list[tuple[bytes, SubscriberList | None]] = []

        def transform(before: bytes) -> bytes | None:
            results.clear()
            written.clear()
            try:
                text = before.decode("utf-8")
            except UnicodeDecodeError as e:
                raise ConfigError(
                    f"{self.path}: cannot update the file: not UTF-8 text (offset {e.start})"
                ) from None
            layout = split_list(text)
            if layout is None:
                return self._apply_each(before, changes, results)
            splice = _Splice(layout, read_defaults(layout.head + layout.tail, self.path))
            for change in changes:
                results.append(splice.apply(change, self.path))
            if not any(r is True for r in results):
                return None
            after = splice.result().encode("utf-8")
            written.append((after, splice.new_list(known_list(self.path, before))))
            return after

        self.written = None
        if self._edit_bytes(transform) and written and written[-1][1] is not None:
            after, listed = written[-1]
            assert listed is not None
            remember_list(self.path, after, listed)  # the next load parses nothing
            with contextlib.suppress(OSError):
                self.written = (file_stamp(self.path), listed)
        return results

    def _apply_each(
        self, before: bytes, changes: Sequence[EntryChange], results: list[bool | ConfigError]
    ) -> bytes | None:
        """A file whose list is not written the usual way: each change by a round trip of
        the whole document, one after the other."""
        current = before
        for change in changes:
            try:
                after = self._apply(current, change.on_doc)
            except ConfigError as e:
                results.append(e)
                continue
            results.append(after is not None)
            current = after if after is not None else current
        return current if current != before else None

    # -- the write -----------------------------------------------------------------------
    def edit(self, change: DocChange) -> bool:
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

    def _apply(self, before: bytes, change: DocChange) -> bytes | None:
        shown = str(self.path)
        try:
            text = before.decode("utf-8-sig")
            first_break = text.find("\n")
            crlf = first_break > 0 and text[first_break - 1] == "\r"
            if crlf:  # the round trip keeps the blank lines and comments of LF text only
                text = text.replace("\r\n", "\n")
            _, indent, offset = load_yaml_guess_indent(text) if text.strip() else (None, 2, 0)
            yaml = round_trip(indent or 2, offset or 0)
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


def file_stamp(path: Path) -> tuple[int, ...]:
    """``(mtime_ns, ctime_ns, size, inode)`` of ``path``: changes when the file does.

    Raises:
        OSError: it cannot be stat'ed.
    """
    st = path.stat()
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


class _Splice:
    """The changes of one write, entry by entry, over a file's layout.

    A changed entry is found around its address (:meth:`ListLayout.locate`) and replaced by
    offsets; an added one goes after the last entry. :meth:`result` joins the unchanged runs
    of the text and the new entries again: Python work grows with the changes, not the file.
    """

    def __init__(self, layout: ListLayout, defaults: dict[str, Any]) -> None:
        self.layout = layout
        self.defaults = defaults
        self.changed: dict[int, tuple[int, int, str]] = {}
        """By entry index: ``(start, stop, new text)``."""
        self.subscribers: dict[int, Subscriber | None] = {}
        """By entry index: the subscriber its new text holds (``None``: removed)."""
        self.added: dict[str, int] = {}
        """Address → place in :attr:`new_texts` of an entry added by this write."""
        self.new_texts: list[str] = []
        self.new_subscribers: list[Subscriber | None] = []
        self._located: dict[str, Located | None] = {}

    def apply(self, change: EntryChange, path: Path) -> bool | ConfigError:
        layout = self.layout
        address = normalize_email(change.address)
        added = self.added.get(address)
        found: Located | None = None
        current: str | None = None
        if added is not None:
            current = self.new_texts[added] or None
        else:
            if address not in self._located:
                self._located[address] = layout.locate(address)
            found = self._located[address]
            if found is not None:
                replaced = self.changed.get(found.index)
                current = replaced[2] if replaced else layout.text[found.start : found.stop]
                current = current or None
        try:
            new = change.patch(current, self.defaults, layout.indent)
        except YAMLError as e:  # the entry is not YAML: the file is being edited
            return ConfigError(f"{path}: cannot update {address}: not valid YAML ({e})")
        if new is None or new == current:
            return False
        sub: Subscriber | None = None
        if new:
            at = found.index if found is not None else len(layout) + len(self.new_texts)
            first = layout.line_of(found.start if found is not None else layout.end)
            try:
                sub, _ = load_entry(
                    new, defaults=self.defaults, path=path, first_line=first, index=at
                )
            except ConfigError as e:
                return ConfigError(
                    f"{path}: the change was not written: the result would be invalid: "
                    f"{e.problems[0]}",
                    e.problems,
                )
            if normalize_email(sub.email) != address:
                return ConfigError(
                    f"{path}:{first}: email: an entry's address cannot change "
                    f"({address} → {sub.email}); add the new address and remove the old one"
                )
        if found is not None:
            self.changed[found.index] = (found.start, found.stop, new)
            self.subscribers[found.index] = sub
        elif added is not None:
            self.new_texts[added], self.new_subscribers[added] = new, sub
        else:
            self.added[address] = len(self.new_texts)
            self.new_texts.append(new)
            self.new_subscribers.append(sub)
        return True

    def result(self) -> str:
        """The file's new text."""
        text = self.layout.text
        pieces: list[str] = []
        at = 0
        for start, stop, new in sorted(self.changed.values()):
            pieces += [text[at:start], new]
            at = stop
        pieces.append(text[at : self.layout.end])
        for new in self.new_texts:
            if not new:
                continue
            if not next((piece for piece in reversed(pieces) if piece), "").endswith("\n"):
                pieces.append(self.layout.newline)  # the last line had no line break
            pieces.append(new)
        pieces.append(text[self.layout.end :])
        return "".join(pieces)

    def new_list(self, before: SubscriberList | None) -> SubscriberList | None:
        """The list of :meth:`result`, from ``before`` (the list of the text it was made from:
        one subscriber per entry, in order) and each changed entry's subscriber; ``None``
        without ``before``, or when it does not match the entries."""
        if before is None or len(before) != len(self.layout):
            return None
        out: list[Subscriber | None] = list(before.subscribers)
        for i, sub in self.subscribers.items():
            out[i] = sub
        out += self.new_subscribers
        gone = any(sub is None for sub in self.subscribers.values()) or (
            None in self.new_subscribers
        )
        kept = [sub for sub in out if sub is not None] if gone else out
        return SubscriberList(kept, before.defaults, before.path)  # type: ignore[arg-type]
