"""What the state store needs of a database: statements, transactions, values, named hooks.

:class:`~digest.state.store.Store` is written once, against :class:`Connector`; two connectors
implement it::

    Store (store.py: one mixin per domain, each method once; SQL from queries.sql)
      └── Connector: fetch / execute / executemany, unit() and transaction() (savepoints),
          time() / day() / array() (values), and hooks where the databases really differ
            ├── SqliteConnector (sqlite.py): one file, BEGIN IMMEDIATE, application_id,
            │   the sender lock (a file lock)
            └── PostgresConnector (postgres.py): a pool, leases and their renewer, the
                papers lock (advisory), identity sequences after an import

The statements live in ``queries.sql`` (``-- name: NAME`` blocks, ``:name`` parameters),
loaded once per connector class by :func:`load_queries`.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, date, datetime
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

from digest.errors import StateError
from digest.state.base import TRANSITIONS, Transition, allowed_sql, claimer_id
from digest.state.schema import COLUMNS, SCHEMA_VERSION, statements

log = logging.getLogger(__name__)

QUERIES_FILE = Path(__file__).with_name("queries.sql")
"""The named statements of the store (one text for both databases)."""

Row = tuple[Any, ...]
Params = Mapping[str, Any]
_NAME = re.compile(r"^-- name: (.+)$", re.MULTILINE)


class Connector(ABC):
    """One database under the store: statements, transactions, value conversion, hooks.

    Every method is thread-safe. ``execute``/``fetch(write=True)`` outside :meth:`unit` are
    one write each (its own transaction, or a savepoint inside :meth:`transaction`).

    Attributes:
        dialect: ``sqlite`` or ``postgres`` (picks statement variants and column types).
        shared: whether several senders may share the state (claims with leases).
        url: where the state is, for messages (no password).
        name: how messages name it (``state file PATH``, ``state database URL``).
        claimer: this process's claimer id (``host:pid:random``), stored with its claims.
        statements: the statements of ``queries.sql`` for this database, as written there
            (to compose with: pass the result through :meth:`sql`).
        queries: the same in this connector's parameter style (to run).
    """

    dialect: ClassVar[str]
    shared: ClassVar[bool]
    unlease: ClassVar[str] = ""
    """What a mark adds to its ``SET`` to end the row's lease (PostgreSQL)."""
    url: str
    name: str
    on_commit: Callable[[], None] | None = None
    """Called on the committing thread just before each write transaction commits (tests
    and benchmarks count commits, or make them slow as a busy disk's fsync)."""

    def __init__(self) -> None:
        self.statements, self.queries = _shipped(type(self))
        self.claimer = claimer_id()

    # -- statements ------------------------------------------------------------------------
    @abstractmethod
    def fetch(self, sql: str, params: Params | None = None, *, write: bool = False) -> list[Row]:
        """Every row ``sql`` returns; ``write``: the statement writes (``RETURNING``)."""

    @abstractmethod
    def execute(self, sql: str, params: Params | None = None) -> int:
        """Run one writing statement; the number of rows it changed."""

    @abstractmethod
    def executemany(self, sql: str, params: Iterable[Params]) -> int:
        """Run ``sql`` once per parameter set (inside :meth:`unit`); the rows changed in all."""

    @abstractmethod
    def unit(self) -> AbstractContextManager[None]:
        """One write of several statements: a transaction of its own, or a savepoint of an
        open :meth:`transaction`; rolled back on any error. Statements inside run plain."""

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """Group this thread's writes into one transaction (see ``StateBackend.transaction``)."""

    @abstractmethod
    def close(self) -> None:
        """Release the connection(s) (idempotent)."""

    def committing(self) -> None:
        """Call :attr:`on_commit`, if set (see there)."""
        if self.on_commit is not None:
            self.on_commit()

    def sql(self, text: str) -> str:
        """``text`` (``:name`` parameters, ``= ANY(:list)``) in this database's spelling."""
        return _translate(type(self), text)

    @classmethod
    @abstractmethod
    def translate(cls, text: str) -> str:
        """``text`` in this database's spelling (uncached; see :meth:`sql`)."""

    # -- values ----------------------------------------------------------------------------
    def time(self, when: datetime) -> Any:
        """A timestamp parameter (aware) as this database stores it."""
        return when.astimezone(UTC)

    def day(self, day: date) -> Any:
        """A UTC day parameter as this database stores it."""
        return day

    def array(self, values: Iterable[Any]) -> Any:
        """A list parameter (``= ANY(:list)``)."""
        return list(values)

    # -- hooks where the databases differ --------------------------------------------------
    @abstractmethod
    def version(self) -> int:
        """The schema version of the open state (0: empty)."""

    @abstractmethod
    def migrating(self) -> AbstractContextManager[None]:
        """The migration's transaction, under a lock no other process migrates through."""

    @abstractmethod
    def set_version(self, version: int) -> None:
        """Record the schema version (inside :meth:`migrating`)."""

    @abstractmethod
    def sender_lock(self, purpose: str, stamp: datetime) -> AbstractContextManager[dict[str, Any]]:
        """Be allowed to send (see ``StateBackend.sender_lock``)."""

    def claim_params(self) -> dict[str, Any]:
        """What a claim records besides the row (a shared state: claimer, lease)."""
        return {}

    def claimed(self, key: tuple[str, str]) -> None:
        """The row ``key`` was claimed by this process (a shared state renews its lease)."""
        del key

    def settled(self, key: tuple[str, str]) -> None:
        """The row ``key`` was marked: no lease to renew any more."""
        del key

    def try_lock(self, key: str) -> bool:
        """Try to become the one process doing ``key`` (one state, one process: always)."""
        del key
        return True

    def unlock(self, key: str) -> None:
        """Release :meth:`try_lock`'s ``key`` (no-op if not held)."""
        del key

    def lock_table(self, table: str) -> None:
        """Keep other writers out of ``table`` until the unit ends (a file: already so)."""
        del table

    def copy_in(self, table: str, columns: Sequence[str], rows: Iterable[Row]) -> int:
        """Insert ``rows`` into the empty ``table`` (inside :meth:`unit`); how many."""
        marks = ", ".join(f":{c}" for c in columns)
        sql = self.sql(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})")
        items = [dict(zip(columns, row, strict=True)) for row in rows]
        self.executemany(sql, items)
        return len(items)

    def imported(self, table: str) -> None:
        """After :meth:`copy_in`: what the database needs (identity sequences)."""
        del table

    def stream(
        self, sql: str, params: Params, size: int, after: Callable[[Row], Params]
    ) -> Iterator[list[Row]]:
        """Every row of ``sql`` in chunks of at most ``size`` rows, without holding them all.

        Here page by page: ``sql`` takes ``:limit`` and the parameters ``after(last row)``
        returns (a keyset: each page starts after the previous one's last row), each page
        one short read, so no lock is held between chunks. PostgreSQL reads through a
        server-side cursor instead (its variant of the statement takes no page parameters).
        """
        page = dict(params)
        while True:
            rows = self.fetch(sql, {**page, "limit": size})
            if rows:
                yield rows
            if len(rows) < size:
                return
            page.update(after(rows[-1]))


def load_queries(connector: type[Connector], text: str | None = None) -> dict[str, str]:
    """The statements of ``queries.sql`` for ``connector``'s database: name → SQL.

    A ``NAME.<dialect>`` variant replaces ``NAME`` for that database; a block may carry
    several names (one statement for several transitions).

    Raises:
        KeyError: a statement names a placeholder that does not exist.
    """
    text = QUERIES_FILE.read_text(encoding="utf-8") if text is None else text
    parts = _NAME.split(text)
    found: dict[str, str] = {}
    for names, body in zip(parts[1::2], parts[2::2], strict=True):
        for full in names.split():
            name, _, dialect = full.partition(".")
            if (dialect and dialect != connector.dialect) or (not dialect and name in found):
                continue
            lines = [line for line in body.strip().splitlines() if not line.startswith("--")]
            fill = {**COLUMNS, "unlease": connector.unlease, "allowed": _allowed(name)}
            found[name] = "\n".join(lines).format_map(fill)
    return found


def _allowed(name: str) -> str:
    return allowed_sql(Transition(name)) if name in TRANSITIONS else "{allowed}"


@cache
def _shipped(connector: type[Connector]) -> tuple[dict[str, str], dict[str, str]]:
    """``queries.sql`` for ``connector``, as written and translated (read once per class)."""
    statements = load_queries(connector)
    return statements, {name: connector.translate(sql) for name, sql in statements.items()}


@cache
def _translate(connector: type[Connector], text: str) -> str:
    return connector.translate(text)


@contextmanager
def nothing() -> Iterator[None]:
    """A context that does nothing (a unit already open)."""
    yield


def aware(value: Any) -> Any:
    """A stored timestamp (ISO text or ``timestamptz``) as an aware UTC datetime; ``None`` kept."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def as_day(value: Any) -> date | None:
    """A stored UTC day (ISO text or ``date``); ``None`` kept."""
    return date.fromisoformat(value) if isinstance(value, str) else value


def migrate(db: Connector, stamp: Callable[[], datetime]) -> None:
    """Bring the state ``db`` to :data:`SCHEMA_VERSION` (under the connector's lock).

    Raises:
        StateError: the state was created by a newer ``digest``.
    """
    if _checked(db, db.version()) == SCHEMA_VERSION:
        return
    with db.migrating():
        version = _checked(db, db.version())  # another process may have migrated meanwhile
        for number in range(version, SCHEMA_VERSION):
            for statement in statements(number, db.dialect):
                db.execute(statement)
            log.info("%s: migrated to schema version %d", db.name, number + 1)
        db.set_version(SCHEMA_VERSION)
        if version == 0:
            db.execute(
                db.sql(
                    "INSERT INTO meta (key, value) VALUES ('created_at', :stamp) "
                    "ON CONFLICT (key) DO NOTHING"
                ),
                {"stamp": stamp().isoformat()},
            )


def _checked(db: Connector, version: int) -> int:
    if version > SCHEMA_VERSION:
        raise StateError(
            f"the {db.name} was created by a newer digest (schema version {version}, this one "
            f"understands up to {SCHEMA_VERSION}); upgrade digest"
        )
    return version
