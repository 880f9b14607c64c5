"""Where the subscriber list lives: a YAML file, or a table in the state store.

One interface, :class:`SubscriberHome`, with two implementations chosen by
``DIGEST_SUBSCRIBERS`` (:func:`open_home`)::

    FileHome   DIGEST_SUBSCRIBERS=subscribers.yaml (the default): the file is the list. The
               web app commits a change in the state (its event, and the change in the
               outbox) and answers; a background writer splices it into the file entry by
               entry (digest.subscribers.writeback), and this process answers reads with it
               until then. The CLI writes the file at once.
    StateHome  DIGEST_SUBSCRIBERS=state: a table of the state (SQLite or PostgreSQL, whichever
               the state is). A change is one small transaction: the row, the list version,
               and the caller's state writes (suppression, event). Readers follow the list
               version: an unchanged list costs one one-row query.

Both keep each subscriber's entry as YAML text (:mod:`digest.subscribers.entries`), validated
by the same :class:`~digest.subscribers.model.Subscriber` model and rules as the file; so
``export`` gives back, byte for byte, what ``import`` took, and ``edit`` opens the entry as it
was written. Everything that reads or changes subscribers goes through a home: ``send``, the
daemon, ``preview``, ``digest subscribers``, the web app and bounces.

Moving a list from the file into the state keeps everything else: history, suppressions,
feedback and events are keyed by address already::

    DIGEST_SUBSCRIBERS=state digest subscribers import subscribers.yaml
    # then DIGEST_SUBSCRIBERS=state on every host; back: export --out subscribers.yaml
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Any, Protocol, TypeVar

from pydantic import ValidationError
from ruamel.yaml.comments import CommentedMap

from digest.addresses import normalize_email
from digest.errors import ConfigError, StateError
from digest.settings import Settings
from digest.state import StateBackend, StoredList, StoredSubscriber, SuppressionReason
from digest.state.group import GroupCommitter
from digest.subscribers.changes import (
    EntryChange,
    PutEntry,
    SetActive,
    change_from_json,
    change_json,
)
from digest.subscribers.entries import (
    DEFAULT_INDENT,
    entry_address,
    new_entry,
    round_trip,
    split_list,
)
from digest.subscribers.model import Subscriber, SubscriberList
from digest.subscribers.writeback import SubscribersFile, catch_up_unsubscribes, file_stamp
from digest.subscribers.yaml import (
    ENTRY_KEY_LINE,
    Compactor,
    error_message,
    load_entry,
    load_subscribers,
    read_defaults,
    read_list,
)

log = logging.getLogger(__name__)

STATE_PATH = Path("state")
"""The ``path`` of a list read from the state (``DIGEST_SUBSCRIBERS=state``)."""
MAX_ATTEMPTS = 5
"""How often a change is made again when its row changed under it (another writer)."""
WRITE_RETRY_S = 5.0
"""How long the file's background writer waits after a failed write before trying again."""
DRAIN_TIMEOUT_S = 30.0
"""How long :meth:`SubscriberHome.drain` waits for the file's pending writes, seconds."""

_T = TypeVar("_T")

Record = Callable[[bool], None]
"""``record(changes)``: the state writes that go with a change (a suppression, an event), in
its transaction; ``changes`` says whether the list changes (an event may depend on it)."""


@dataclass(frozen=True, slots=True)
class EntryText:
    """One subscriber's entry as it is written in the list (for ``digest subscribers edit``).

    Attributes:
        text: the entry's lines (a list item, indented as the list's items are).
        indent: the column of the list items' ``-``.
        defaults: the list's validated ``defaults:``.
    """

    text: str
    indent: int
    defaults: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What ``digest subscribers import`` did (or would do, with ``--dry-run``).

    Attributes:
        added: entries new to the list.
        changed: entries whose text changed.
        unchanged: entries exactly as they were.
        deactivated: entries not in the file set ``active: false`` (``--prune``).
        kept: entries not in the file left as they were.
        layout_kept: the file's text was kept byte for byte (else its entries were written
            anew in the usual form: its list was not written the usual way).
        dry_run: nothing was written.
    """

    added: int = 0
    changed: int = 0
    unchanged: int = 0
    deactivated: int = 0
    kept: int = 0
    layout_kept: bool = True
    dry_run: bool = False


class SubscriberHome(Protocol):
    """Where the subscriber list lives: what every reader and writer of subscribers uses.

    Attributes:
        name: how messages name the list (the file's path, or ``the subscriber list in
            state …``).
        in_state: whether it is the state's table.
    """

    name: str
    in_state: bool

    def load(self) -> SubscriberList:
        """The whole list, validated (cached: reading an unchanged list again is cheap).
        Treat it as read-only.

        Raises:
            ConfigError: the list is missing or invalid (every problem).
        """
        ...

    def stream(self, *, frequency: str | None = None) -> Iterator[Subscriber]:
        """The subscribers in list order (only ``frequency`` ones), read in chunks.

        Raises:
            ConfigError: a subscriber is invalid.
        """
        ...

    def get(self, email: str) -> Subscriber | None:
        """One subscriber as it is now (this process's changes included), or ``None``."""
        ...

    def addresses(self, since: object = None) -> tuple[object, list[str]]:
        """The addresses added or changed since the mark ``since`` (``None``: all), and a
        new mark (for the web app's index of the links' addresses)."""
        ...

    def entry(self, email: str) -> EntryText | None:
        """One subscriber's entry as written, or ``None`` if not on the list."""
        ...

    def apply(self, change: EntryChange, *, record: Record | None = None) -> bool:
        """Make ``change`` in the list now; ``record`` goes with it (state mode: in one
        transaction; file mode: after the file is written).

        Returns:
            Whether the list changed.

        Raises:
            ConfigError: the change would make the entry invalid (nothing was written).
        """
        ...

    def submit(self, change: EntryChange, *, record: Record | None = None) -> bool:
        """Make ``change`` durable with ``record`` in one transaction of the state, and
        return: the list follows (state mode: already; file mode: a background write).

        Returns:
            Whether the list changes (file mode: as this process reads it now).

        Raises:
            ConfigError: (state mode) the change would make the entry invalid.
            StateError: the state could not be written (nothing was).
        """
        ...

    def export(self) -> str:
        """The list as a subscribers file (what :meth:`import_list` takes back unchanged)."""
        ...

    def import_list(
        self, data: bytes, source: Path, *, prune: bool = False, dry_run: bool = False
    ) -> ImportReport:
        """Take the subscribers file ``data`` into the list: validated whole first, then
        written in one transaction (state) or one atomic file write (file).

        Entries not in ``data`` are left alone (``prune``: set ``active: false``).

        Raises:
            ConfigError: ``data`` is invalid (every problem, ``source:line``); nothing
                was written.
        """
        ...

    def catch_up(self) -> list[str]:
        """At the web app's start: what a crash left unwritten (file mode: the outbox, then
        ``active: false`` for unsubscribed addresses); the addresses set inactive."""
        ...

    def drain(self, timeout: float = DRAIN_TIMEOUT_S) -> bool:
        """Wait until this process's submitted changes are in the list; whether they are."""
        ...

    def close(self) -> None:
        """Stop background work (after :meth:`drain`)."""
        ...


def open_home(settings: Settings, store: StateBackend) -> SubscriberHome:
    """The list's home ``DIGEST_SUBSCRIBERS`` names: ``state`` (exactly), else the file.

    Args:
        settings: ``subscribers`` (``DIGEST_SUBSCRIBERS``).
        store: the open state (the table, or the file's outbox and suppression list).
    """
    if settings.subscribers_in_state:
        return StateHome(store)
    return FileHome(settings.subscribers, store)


class _Grouped:
    """Web changes' state writes through one group committer (:mod:`digest.state.group`):
    the writes of concurrent requests share a transaction and its fsync, each request still
    answered only once its own write committed."""

    store: StateBackend
    _group: GroupCommitter | None = None
    _group_lock = threading.Lock()

    def _commit(self, fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        with self._group_lock:
            if self._group is None:
                self._group = GroupCommitter(self.store, name="digest-web-state")
            group = self._group
        return group.submit(fn, *args, **kwargs).result()

    def _close_group(self) -> None:
        with self._group_lock:
            group, self._group = self._group, None
        if group is not None:
            group.shutdown(wait=True)


# -- the file ------------------------------------------------------------------------------------


class FileHome(_Grouped):
    """The subscribers YAML file as the list (see the module docstring).

    Args:
        path: the file (``DIGEST_SUBSCRIBERS``).
        store: the state: the outbox of web changes, and the suppression list for
            :meth:`catch_up`.
    """

    in_state = False

    def __init__(self, path: Path, store: StateBackend) -> None:
        self.path = Path(path)
        self.name = str(path)
        self.store = store
        self.file = SubscribersFile(self.path)
        self._overlay: dict[str, list[tuple[int, EntryChange]]] = {}
        """This process's changes not in the file yet, by address: ``(outbox id, change)``."""
        self._mutex = threading.Condition()
        self._wake = threading.Event()
        self._writer: threading.Thread | None = None
        self._closing = False
        self._known: tuple[tuple[int, ...], SubscriberList] | None = None
        self._writing = threading.Lock()
        """Held while this process writes the file, until :attr:`_known` is its list."""

    # -- reads -------------------------------------------------------------------------------
    def _list(self) -> SubscriberList:
        """The file's list: the one this process last read or wrote while the file's stamp
        (mtime, ctime, size, inode) is the same, else read (:func:`load_subscribers`). One
        ``stat`` after this process's own write, where the loader, not trusting a stamp of
        the last 2 s, would read and hash a 10 MB file at every call."""
        try:
            stamp = file_stamp(self.path)
        except OSError:
            return load_subscribers(self.path)  # says what is wrong
        known = self._known
        if known is not None and known[0] == stamp:
            return known[1]
        with self._writing:  # this process's own write lands: its list comes with it
            known = self._known
            stamp = file_stamp(self.path)
            if known is not None and known[0] == stamp:
                return known[1]
        listed = load_subscribers(self.path)
        self._known = (stamp, listed)
        return listed

    def load(self) -> SubscriberList:
        """The file (cached by its stat and content), with this process's pending changes."""
        subs = self._list()
        with self._mutex:
            overlay = {a: [c for _, c in p] for a, p in self._overlay.items() if p}
        if not overlay:
            return subs
        out: list[Subscriber] = []
        for sub in subs:
            changes = overlay.pop(sub.email, None)
            current: Subscriber | None = sub
            for change in changes or ():
                current = change.on_subscriber(current, subs.defaults)
            if current is not None:
                out.append(current)
        for changes in overlay.values():  # added, not in the file yet
            new: Subscriber | None = None
            for change in changes:
                new = change.on_subscriber(new, subs.defaults)
            if new is not None:
                out.append(new)
        return SubscriberList(out, subs.defaults, subs.path)

    def stream(self, *, frequency: str | None = None) -> Iterator[Subscriber]:
        """The file's subscribers (the file is read whole: it is the list)."""
        for sub in self.load():
            if frequency is None or sub.frequency == frequency:
                yield sub

    def addresses(self, since: object = None) -> tuple[object, list[str]]:
        """Every address of the list (with this process's pending ones) unless it is the
        list read at ``since``."""
        listed = self.load()
        return listed, [] if since is listed else [s.email for s in listed]

    def get(self, email: str) -> Subscriber | None:
        """From the file, with this process's pending changes of that address."""
        subs = self._list()
        address = normalize_email(email)
        current = subs.get(address)
        with self._mutex:
            changes = [c for _, c in self._overlay.get(address, ())]
        for change in changes:
            current = change.on_subscriber(current, subs.defaults)
        return current

    def entry(self, email: str) -> EntryText | None:
        """The entry's lines in the file."""
        text = self.file.path.read_text(encoding="utf-8")
        layout = split_list(text)
        if layout is None:
            raise ConfigError(
                f"{self.name}: its list is not written the usual way ('subscribers:' at the "
                "start of a line, then '- email: ...' items); edit the file itself"
            )
        found = layout.locate(email)
        if found is None:
            return None
        defaults = read_defaults(layout.head + layout.tail, self.path)
        return EntryText(layout.text[found.start : found.stop], layout.indent, defaults)

    def export(self) -> str:
        """The file's text."""
        try:
            return self.path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"{self.name}: cannot read the subscribers file: {e}") from None

    # -- changes -----------------------------------------------------------------------------
    def apply(self, change: EntryChange, *, record: Record | None = None) -> bool:
        """Write ``change`` into the file now (one entry), then ``record`` in the state."""
        with self._writing:
            [result] = self.file.apply([change])
            if self.file.written is not None:
                self._known = self.file.written
        if isinstance(result, ConfigError):
            raise result
        if record is not None:
            with self.store.transaction():
                record(result)
        return result

    def submit(self, change: EntryChange, *, record: Record | None = None) -> bool:
        """Commit ``record`` and the change (in the state's outbox) in one transaction; the
        background writer splices it into the file, and reads see it meanwhile.

        Raises:
            ConfigError: the subscriber it makes would be invalid (nothing was written).
        """
        address = normalize_email(change.address)
        subs = self._list()
        before = self.get(address)
        try:
            after = change.on_subscriber(before, subs.defaults)
        except ValidationError as e:
            raise ConfigError(
                f"{self.name}: {address}: the change was not written: {e.errors()[0]['msg']}"
            ) from None
        changes = after != before
        text = json.dumps(change_json(change), ensure_ascii=False)

        def write() -> int:
            with self.store.transaction():
                if record is not None:
                    record(changes)
                return self.store.queue_list_change(address, text) if changes else 0

        queued = self._commit(write)  # with concurrent requests' writes: one commit
        if changes:
            with self._mutex:
                self._overlay.setdefault(address, []).append((queued, change))
                self._start()
            self._wake.set()
        return changes

    def write_pending(self) -> list[EntryChange]:
        """Write every change waiting in the outbox (this process's or a crashed one's) into
        the file, in one write; the changes that changed it.

        Raises:
            ConfigError: the file cannot be read or written (the changes stay queued).
        """
        with self.file.locked():
            rows = self.store.list_changes()
            if not rows:
                self._settle(set())
                return []
            changes: list[EntryChange] = []
            for _, email, text in rows:
                try:
                    change = change_from_json(text)
                except ValueError as e:
                    log.error("%s: a queued change of %s is unreadable: %s", self.name, email, e)
                    continue
                if (
                    isinstance(change, SetActive)
                    and not change.active
                    and not self._unsubscribed(change.address)
                ):
                    # The unsubscribe's suppression was lifted since (a resubscribe, the
                    # operator): its `active: false` is not for the file any more.
                    log.info("%s: %s is not unsubscribed any more: not written", self.name, email)
                    continue
                changes.append(change)
            with self._writing:
                results = self.file.apply(changes)
                if self.file.written is not None:
                    self._known = self.file.written
            self.store.forget_list_changes([row[0] for row in rows])
        for change, result in zip(changes, results, strict=True):
            if isinstance(result, ConfigError):
                log.error(
                    "%s: could not write a change of %s: %s", self.name, _masked(change), result
                )
        self._settle({row[0] for row in rows})
        return [c for c, r in zip(changes, results, strict=True) if r is True]

    def _settle(self, taken: set[int]) -> None:
        """Forget the pending changes the file now holds: those of ``taken`` (the outbox rows
        this writer took), and any another process's writer took."""
        with self._mutex:
            if any(i not in taken for pending in self._overlay.values() for i, _ in pending):
                with contextlib.suppress(StateError):
                    left = {row[0] for row in self.store.list_changes()}
                    taken = (
                        taken | {i for pending in self._overlay.values() for i, _ in pending} - left
                    )
            for address in list(self._overlay):
                pending = [(i, c) for i, c in self._overlay[address] if i not in taken]
                if pending:
                    self._overlay[address] = pending
                else:
                    del self._overlay[address]
            self._mutex.notify_all()

    def _unsubscribed(self, address: str) -> bool:
        suppression = self.store.suppression(address)
        return suppression is not None and suppression.reason == SuppressionReason.UNSUBSCRIBED

    def _start(self) -> None:
        """Start the background writer (with ``_mutex`` held)."""
        if self._writer is None or not self._writer.is_alive():
            self._closing = False
            self._writer = threading.Thread(
                target=self._write_loop, name="digest-subscribers-writer", daemon=True
            )
            self._writer.start()

    def _write_loop(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            try:
                self.write_pending()
            except (ConfigError, StateError) as e:
                log.error("%s: the changes wait to be written: %s", self.name, e)
                self._wake.wait(WRITE_RETRY_S)
                self._wake.set()
            with self._mutex:
                if self._closing and not self._overlay:
                    return

    def catch_up(self) -> list[str]:
        """Write what a crash left in the outbox, then ``active: false`` for every active
        entry whose address is suppressed as unsubscribed
        (:func:`~digest.subscribers.writeback.catch_up_unsubscribes`)."""
        written = [
            c.address for c in self.write_pending() if isinstance(c, SetActive) and not c.active
        ]
        return written + catch_up_unsubscribes(self.file, self.store)

    def drain(self, timeout: float = DRAIN_TIMEOUT_S) -> bool:
        """Wait until every change this process submitted is in the file."""
        self._wake.set()
        with self._mutex:
            return self._mutex.wait_for(lambda: not self._overlay, timeout)

    def close(self) -> None:
        """Let the writer finish what is pending and stop."""
        self._close_group()
        with self._mutex:
            self._closing = True
        self._wake.set()
        writer = self._writer
        if writer is not None:
            writer.join(DRAIN_TIMEOUT_S)

    # -- import ------------------------------------------------------------------------------
    def import_list(
        self, data: bytes, source: Path, *, prune: bool = False, dry_run: bool = False
    ) -> ImportReport:
        """Merge the file ``data`` into the subscribers file: ``data``'s text, then the
        entries of the list it lacks (pruned or not); one atomic write."""
        incoming = _read_import(data, source)
        report: list[ImportReport] = []

        def transform(before: bytes) -> bytes | None:
            layout = split_list(before.decode("utf-8"))
            if layout is None:
                raise ConfigError(
                    f"{self.name}: its list is not written the usual way; replace it by hand"
                )
            existing = {}
            for i in range(len(layout)):
                entry = layout.entry(i)
                address = entry_address(entry)
                if address is not None:
                    existing[address] = entry
            plan = _plan_import(incoming, existing, prune=prune, dry_run=dry_run, name=self.name)
            report.append(plan.report)
            after = (incoming.head + "".join(e.text for e in plan.entries) + incoming.tail).encode()
            if dry_run or after == before:
                return None
            read_list(after, self.path)  # the whole result, once more
            return after

        self.file._edit_bytes(transform)
        return report[-1]


# -- the state -----------------------------------------------------------------------------------


@dataclass
class _Cached:
    version: int
    removed: int
    defaults: dict[str, Any]
    by_email: dict[str, Subscriber]
    result: SubscriberList


class StateHome(_Grouped):
    """The list as a table of the state (``DIGEST_SUBSCRIBERS=state``; module docstring).

    Args:
        store: the open state.
    """

    in_state = True

    def __init__(self, store: StateBackend) -> None:
        self.store = store
        self.name = f"the subscriber list in the state {store.url}"
        self._cache: _Cached | None = None
        self._cache_lock = threading.Lock()

    # -- reads -------------------------------------------------------------------------------
    def load(self) -> SubscriberList:
        """The whole list. An unchanged list version costs one one-row query; after changes,
        only the rows changed since are read (the whole list after a removal)."""
        info = self.store.subscriber_list()
        with self._cache_lock:
            cached = self._cache
            if cached is not None and cached.version == info.version:
                return cached.result
            if (
                cached is not None
                and cached.defaults == info.defaults
                and info.removed <= cached.version
            ):
                by_email = cached.by_email
                compact = Compactor()
                changed = self.store.subscribers_since(cached.version)
                problems: list[str] = []
                for row in changed:
                    sub = self._subscriber(row, info.defaults, compact, problems)
                    if sub is not None:
                        by_email[row.email] = sub
                if problems:
                    raise _error(self.name, problems)
            else:
                by_email = {s.email: s for s in self._read(info.defaults)}
            result = SubscriberList(list(by_email.values()), dict(info.defaults), STATE_PATH)
            self._cache = _Cached(info.version, info.removed, info.defaults, by_email, result)
            return result

    def stream(self, *, frequency: str | None = None) -> Iterator[Subscriber]:
        """The rows in list order, a chunk at a time (a server-side cursor on PostgreSQL)."""
        defaults = self.store.subscriber_list().defaults
        return self._read(defaults, frequency=frequency)

    def _read(
        self, defaults: dict[str, Any], *, frequency: str | None = None
    ) -> Iterator[Subscriber]:
        compact = Compactor()
        for chunk in self.store.stored_subscribers(frequency=frequency):
            problems: list[str] = []
            subs = [self._subscriber(row, defaults, compact, problems) for row in chunk]
            if problems:
                raise _error(self.name, problems)
            for sub in subs:
                assert sub is not None
                yield sub

    def _subscriber(
        self,
        row: StoredSubscriber,
        defaults: Mapping[str, Any],
        compact: Compactor,
        problems: list[str],
    ) -> Subscriber | None:
        merged = {**defaults, **row.fields}
        try:
            sub = Subscriber.model_validate(merged)
        except ValidationError as e:
            for err in e.errors():
                where = ".".join(str(p) for p in err["loc"]) or "entry"
                problems.append(f"{self.name}: {row.email}: {where}: {error_message(err)}")
            return None
        return compact.subscriber(sub, merged)

    def addresses(self, since: object = None) -> tuple[object, list[str]]:
        """The addresses of the rows changed after list version ``since`` (only their
        email: nothing is validated)."""
        version = self.store.subscriber_list().version
        after = since if isinstance(since, int) else 0
        if after == version:
            return version, []
        return version, self.store.subscriber_addresses(after)

    def get(self, email: str) -> Subscriber | None:
        """The row, read now (another host's change included)."""
        row = self.store.stored_subscriber(email)
        if row is None:
            return None
        problems: list[str] = []
        sub = self._subscriber(row, self.store.subscriber_list().defaults, Compactor(), problems)
        if problems:
            raise _error(self.name, problems)
        return sub

    def entry(self, email: str) -> EntryText | None:
        """The row's entry text."""
        row = self.store.stored_subscriber(email)
        if row is None:
            return None
        info = self.store.subscriber_list()
        return EntryText(row.entry, info.indent, info.defaults)

    def export(self) -> str:
        """The list's head, each entry in list order, its tail."""
        info = self.store.subscriber_list()
        parts = [info.head]
        for chunk in self.store.stored_subscribers():
            parts.extend(row.entry for row in chunk)
        parts.append(info.tail)
        return "".join(parts)

    # -- changes -----------------------------------------------------------------------------
    def apply(self, change: EntryChange, *, record: Record | None = None) -> bool:
        """One transaction: the row read and locked (another writer of it waits), the change
        made on it, ``record``, the row and the list version written."""
        address = normalize_email(change.address)
        for _attempt in range(MAX_ATTEMPTS):
            try:
                with self.store.transaction():
                    info = self.store.subscriber_list()
                    row = self.store.stored_subscriber(address, lock=True)
                    current = row.entry if row is not None else None
                    new = change.patch(current, info.defaults, info.indent)
                    if record is not None:
                        record(new is not None)
                    if new is None:
                        return False
                    if not self._write(address, row, new, info):
                        raise _Conflict  # added meanwhile by another writer: read it again
                return True
            except _Conflict:
                continue
        raise ConfigError(
            f"{self.name}: {address} kept changing while being written ({MAX_ATTEMPTS} "
            "attempts); nothing was written, try again"
        )

    def _write(
        self, address: str, row: StoredSubscriber | None, new: str, info: StoredList
    ) -> bool:
        if not new:
            return self.store.remove_subscriber(address) is not None
        stored = _stored(new, address, info.defaults, self.name)
        if row is None:
            return self.store.add_subscriber(stored) is not None
        return self.store.change_subscriber(stored, expect=row.version) is not None

    def submit(self, change: EntryChange, *, record: Record | None = None) -> bool:
        """:meth:`apply`, its transaction shared with concurrent requests' (group commit)."""
        return self._commit(self.apply, change, record=record)

    def catch_up(self) -> list[str]:
        """``active: false`` for every active subscriber suppressed as unsubscribed (a list
        imported from a file whose write-back a crash had left behind)."""
        written = []
        for address in self.store.unsubscribed_in_list():
            if self.apply(SetActive(address, False)):
                written.append(address)
        return written

    def drain(self, timeout: float = DRAIN_TIMEOUT_S) -> bool:
        """Nothing is ever pending."""
        del timeout
        return True

    def close(self) -> None:
        """Stop the group committer of web changes (what is queued is written first)."""
        self._close_group()

    # -- import ------------------------------------------------------------------------------
    def import_list(
        self, data: bytes, source: Path, *, prune: bool = False, dry_run: bool = False
    ) -> ImportReport:
        """Upsert the file's entries (in its order), then the list's other entries; the
        list's text around the entries becomes the file's. One transaction."""
        incoming = _read_import(data, source)
        for _attempt in range(MAX_ATTEMPTS):
            existing: dict[str, StoredSubscriber] = {}
            for chunk in self.store.stored_subscribers():
                existing.update((row.email, row) for row in chunk)
            plan = _plan_import(
                incoming,
                {email: row.entry for email, row in existing.items()},
                prune=prune,
                dry_run=dry_run,
                name=self.name,
            )
            if dry_run:
                return plan.report
            rows: list[tuple[StoredSubscriber, int]] = []
            for position, entry in enumerate(plan.entries):
                old = existing.get(entry.address)
                sub = entry.subscriber
                row = StoredSubscriber(
                    entry.address, position, sub.active, sub.frequency, entry.fields, entry.text
                )
                if old is None:
                    rows.append((row, -1))
                elif (old.entry, old.fields, old.active, old.frequency) != (
                    row.entry,
                    row.fields,
                    row.active,
                    row.frequency,
                ):
                    rows.append((row, old.version))
                elif old.position != position:  # only moved: keeps its version
                    rows.append((dataclasses.replace(row, version=old.version), old.version))
            text = StoredList(
                head=incoming.head,
                tail=incoming.tail,
                indent=incoming.indent,
                defaults=_json_values(incoming.defaults),
            )
            if self.store.save_subscribers(rows, added=plan.report.added, text=text) is not None:
                return plan.report
        raise ConfigError(
            f"{self.name}: the list kept changing while being imported ({MAX_ATTEMPTS} "
            "attempts); nothing was written, try again"
        )


class _Conflict(Exception):
    """The row changed since it was read (rolls the transaction back; the change is made
    again)."""


# -- import, shared by both homes ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry:
    address: str
    text: str
    subscriber: Subscriber
    fields: dict[str, Any]


@dataclass(frozen=True)
class _Incoming:
    """A validated subscribers file to import: its text around the entries, and each
    entry's text (its own, or written anew when its layout could not be cut)."""

    head: str
    tail: str
    indent: int
    defaults: dict[str, Any]
    entries: list[_Entry]
    layout_kept: bool


def _read_import(data: bytes, source: Path) -> _Incoming:
    subs, keys = read_list(data, source)
    text = data.decode("utf-8")  # read_list checked it
    layout = split_list(text)
    entries: list[_Entry] = []
    if layout is not None and len(layout) == len(subs):
        for i, (sub, own) in enumerate(zip(subs, keys, strict=True)):
            entry = layout.entry(i)
            if entry_address(entry) != sub.email:
                break
            entries.append(_Entry(sub.email, entry, sub, _own_fields(sub, own)))
        else:
            return _Incoming(layout.head, layout.tail, layout.indent, subs.defaults, entries, True)
    # The list is not written the usual way: its entries are written anew.
    entries = []
    for sub, own in zip(subs, keys, strict=True):
        fields = _own_fields(sub, own)
        entries.append(_Entry(sub.email, new_entry(fields, DEFAULT_INDENT), sub, fields))
    head = _canonical_head(subs.defaults)
    return _Incoming(head, "", DEFAULT_INDENT, subs.defaults, entries, False)


@dataclass
class _Plan:
    entries: list[_Entry] = field(default_factory=list)
    report: ImportReport = field(default_factory=ImportReport)


def _plan_import(
    incoming: _Incoming,
    existing: Mapping[str, str],
    *,
    prune: bool,
    dry_run: bool,
    name: str,
) -> _Plan:
    """The list after the import: the file's entries in its order, then the list's other
    entries (each re-read under the file's ``defaults``; pruned ones set inactive)."""
    plan = _Plan()
    added = changed = unchanged = deactivated = kept = 0
    seen = set()
    for entry in incoming.entries:
        seen.add(entry.address)
        old = existing.get(entry.address)
        if old is None:
            added += 1
        elif old == entry.text:
            unchanged += 1
        else:
            changed += 1
        plan.entries.append(entry)
    problems: list[str] = []
    for address, text in existing.items():
        if address in seen:
            continue
        if prune:
            patched = SetActive(address, False).patch(text, incoming.defaults, incoming.indent)
            if patched is not None:
                text = patched
                deactivated += 1
            else:
                kept += 1
        else:
            kept += 1
        try:
            sub, own = load_entry(text, defaults=incoming.defaults, path=Path(name))
        except ConfigError as e:
            problems.extend(
                f"{p} (an entry of the list that the file does not hold: add it to the file, "
                "or remove it first)"
                for p in e.problems
            )
            continue
        plan.entries.append(_Entry(address, text, sub, _own_fields(sub, own)))
    if problems:
        raise _error(name, problems)
    plan.report = ImportReport(
        added, changed, unchanged, deactivated, kept, incoming.layout_kept, dry_run
    )
    return plan


def _canonical_head(defaults: Mapping[str, Any]) -> str:
    """``defaults:`` (if any) and the ``subscribers:`` line, written in the usual form."""
    if not defaults:
        return ENTRY_KEY_LINE
    doc = CommentedMap()
    doc["defaults"] = CommentedMap(_json_values(defaults))
    out = _dump(doc)
    return out + ENTRY_KEY_LINE


def _dump(doc: CommentedMap) -> str:
    stream = io.StringIO()
    round_trip(2, 0).dump(doc, stream)
    return stream.getvalue()


def _own_fields(sub: Subscriber, keys: Iterable[str]) -> dict[str, Any]:
    """The options an entry sets itself, as JSON values (validated: normalized address,
    bare arXiv ids, ``"HH:MM"``)."""
    return {key: _json_value(getattr(sub, key)) for key in keys}


def _json_values(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _json_value(v) for k, v in values.items()}


def _json_value(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_json_value(v) for v in value]
    if isinstance(value, time):
        return value.strftime("%H:%M")
    return value


def _stored(text: str, address: str, defaults: Mapping[str, Any], name: str) -> StoredSubscriber:
    """The row of an entry's new text (validated; its address must stay ``address``).

    Raises:
        ConfigError: the entry is invalid, or names another address.
    """
    sub, own = load_entry(text, defaults=defaults, path=Path(name))
    if sub.email != address:
        raise ConfigError(
            f"{name}: email: an entry's address cannot change ({address} → {sub.email}); "
            "add the new address and remove the old one"
        )
    return StoredSubscriber(sub.email, 0, sub.active, sub.frequency, _own_fields(sub, own), text)


def _error(name: str, problems: Sequence[str]) -> ConfigError:
    if len(problems) == 1:
        return ConfigError(problems[0], list(problems))
    return ConfigError(f"{name}: {len(problems)} problems: {problems[0]}; …", list(problems))


def _masked(change: EntryChange) -> str:
    local, _, domain = change.address.partition("@")
    return f"{local[:1]}***@{domain}"


# -- add, edit ------------------------------------------------------------------------------------


def add_subscriber(
    home: SubscriberHome,
    email: str,
    *,
    name: str | None = None,
    keywords: Sequence[str] = (),
    record: Record | None = None,
) -> Subscriber:
    """Add one subscriber (``digest subscribers add``): a new entry, written as the web app's
    confirmed sign-up writes one.

    Returns:
        The new subscriber.

    Raises:
        ConfigError: the address is on the list already, or the entry would be invalid.
    """
    address = normalize_email(email)
    if home.get(address) is not None:
        raise ConfigError(
            f"{email}: on {home.name} already; change it with `digest subscribers edit {email}`"
        )
    fields: dict[str, Any] = {"email": address}
    if name:
        fields["name"] = name
    if keywords:
        fields["keywords"] = list(keywords)
    indent = DEFAULT_INDENT
    defaults: Mapping[str, Any] = {}
    with contextlib.suppress(ConfigError):
        listed = home.load()
        defaults = listed.defaults
    if defaults.get("active", True) is not True:
        fields["active"] = True
    text = new_entry(fields, _indent_of(home, indent))
    sub, _ = load_entry(text, defaults=defaults, path=Path(address))
    home.apply(PutEntry(address, text), record=record)
    return sub


def _indent_of(home: SubscriberHome, default: int) -> int:
    """The column of the list's items (the file's, or the state's)."""
    if isinstance(home, StateHome):
        return home.store.subscriber_list().indent
    if isinstance(home, FileHome):
        with contextlib.suppress(OSError, UnicodeDecodeError):
            layout = split_list(home.path.read_text(encoding="utf-8"))
            if layout is not None:
                return layout.indent
    return default


# -- edit ------------------------------------------------------------------------------------------

EDIT_HEADER = "#| "
"""Lines of the edited text starting with this are the editor's notes (dropped on save)."""

Editor = Callable[[str], "str | None"]
"""``editor(text) -> edited text``, or ``None`` if the file was not saved (``$EDITOR``)."""


def edit_entry(
    home: SubscriberHome, email: str, editor: Editor, *, record: Record | None = None
) -> bool:
    """Open one subscriber's entry in ``editor``; validate the result with the file's rules,
    reopen it with the problems on top until it validates or is left unchanged; write it.

    Args:
        home: the list.
        email: whose entry.
        editor: edits a text (``$EDITOR`` on a temporary ``.yaml`` file).
        record: state writes that go with the change (an event).

    Returns:
        Whether the entry changed (``False``: left unchanged or emptied, or not saved).

    Raises:
        ConfigError: the address is not on the list, or the entry was saved again unchanged
            after its problems were shown (they are its problems; nothing was written).
    """
    address = normalize_email(email)
    current = home.entry(address)
    if current is None:
        raise ConfigError(f"{email}: not on {home.name}")
    shift = current.indent
    lines = current.text.splitlines(keepends=True)
    if any(line.strip() and not line.startswith(" " * shift) for line in lines):
        shift = 0
    shown = "".join(line[shift:] if line.startswith(" " * shift) else line for line in lines)
    text = shown
    problems: list[str] = []
    while True:
        header = _edit_header(address, problems)
        edited = editor(header + text)
        if edited is None:
            return False
        body = "".join(
            line for line in edited.splitlines(keepends=True) if not line.startswith(EDIT_HEADER)
        )
        if body == shown or not body.strip():
            return False
        if problems and body == text:  # saved again without a fix: give up, as git does
            raise _error(address, problems)
        new = "".join(
            " " * shift + line if line.strip() else line for line in body.splitlines(keepends=True)
        )
        if not new.endswith("\n"):
            new += "\n"
        try:
            sub, _ = load_entry(new, defaults=current.defaults, path=Path(address))
            if sub.email != address:
                raise ConfigError(
                    f"{address}: email: an entry's address cannot change "
                    f"({address} → {sub.email}); add the new address and remove the old one"
                )
            return home.apply(PutEntry(address, new), record=record)
        except ConfigError as e:
            # Lines of the file the editor shows next: after a header naming the problems.
            count = len(e.problems) or 1
            shown_header = _edit_header(address, ["."] * count)
            first = shown_header.count("\n") + 1
            try:
                load_entry(new, defaults=current.defaults, path=Path(address), first_line=first)
                problems = list(e.problems) or [str(e)]
            except ConfigError as located:
                problems = list(located.problems) or [str(located)]
            text = body


def _edit_header(address: str, problems: Sequence[str]) -> str:
    lines = [f"Editing {address}. Lines starting with '{EDIT_HEADER.strip()}' are dropped."]
    lines.append("Save and quit to write it; quit without saving (or empty it) to cancel.")
    if problems:
        lines.append("It was not written; fix these problems (lines of this file):")
        lines += [f"  {p}" for p in problems]
    return "".join(f"{EDIT_HEADER}{line}\n" for line in lines)
