"""The state store: the single record of what was sent (see :mod:`digest.state.base`).

One store (:mod:`digest.state.store`, SQL in ``queries.sql``, schema in
:mod:`digest.state.schema`) over two connectors: :mod:`digest.state.sqlite` (an embedded file,
the default) and :mod:`digest.state.postgres` (a shared database for several senders and
hosts). The rest of the code imports from here and gets its store from :func:`open_state`,
never naming a backend class.
"""

from __future__ import annotations

from digest.clock import Clock, utc_now
from digest.errors import ConfigError
from digest.redact import redact_url
from digest.state.base import (
    ALL_STATUSES,
    CLAIMABLE,
    COPY_TABLES,
    DEFAULT_LEASE_S,
    PAUSED_ERROR,
    SKIP_LATE,
    SKIP_NO_PAPERS,
    SKIP_PAUSED,
    TRANSITIONS,
    BounceEvent,
    BounceKind,
    BounceScore,
    Delivery,
    DeliveryStatus,
    ProcessedMessage,
    StatusMap,
    Suppression,
    SuppressionReason,
    Transition,
    address_key,
    may_move,
)
from digest.state.figures import DomainCount, EditionCount, Pause, StateFigures
from digest.state.records import Event, Signup, StoredList, StoredSubscriber
from digest.state.schema import MIGRATIONS, SCHEMA_VERSION
from digest.state.sqlite import (
    BUSY_TIMEOUT_MS,
    STATE_FILE_MODE,
    StateStore,
    lock_paths,
    sqlite_url,
    state_lock,
)
from digest.state.sqlite import probe as sqlite_probe
from digest.state.store import FeedCache, StateBackend

SQLITE_SCHEME = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_state(
    url: str, *, now: Clock = utc_now, lease_seconds: float = DEFAULT_LEASE_S
) -> StateBackend:
    """Open the state store ``url`` names (``DIGEST_STATE_URL``).

    Args:
        url: ``sqlite:///relative/path`` or ``sqlite:////absolute/path`` (an embedded file),
            or ``postgresql://user@host:port/dbname?…`` (any libpq connection URL; give the
            password through ``PGPASSWORD`` or ``~/.pgpass`` rather than in the URL).
        now: the clock for every timestamp written (aware UTC).
        lease_seconds: how long a claim of a shared backend lasts without renewal, seconds.

    Returns:
        The open backend; close it (or use it as a context manager).

    Raises:
        ConfigError: the URL has another scheme, or the PostgreSQL driver is not installed.
        StateError: the store cannot be opened, is corrupt, or has a newer schema.
    """
    if url.startswith(SQLITE_SCHEME):
        path = url[len(SQLITE_SCHEME) :]
        if not path:
            raise ConfigError("DIGEST_STATE_URL: sqlite:/// needs a path (sqlite:///state.db)")
        return StateStore(path, now=now)
    if url.startswith(POSTGRES_SCHEMES):
        try:
            from digest.state.postgres import PostgresStore
        except ImportError as e:  # the optional extra is not installed
            raise ConfigError(
                f"DIGEST_STATE_URL is a PostgreSQL URL but its driver is missing ({e.name}); "
                "install digest[postgres]"
            ) from None
        return PostgresStore(url, now=now, lease_seconds=lease_seconds)
    raise ConfigError(
        "DIGEST_STATE_URL must start with sqlite:/// (a file) or postgresql:// (a database), "
        f"not {redact_url(url)!r}"
    )


def probe_state(url: str) -> int | None:
    """The schema version of the state ``url`` names (``None``: a SQLite file that does not
    exist; 0: empty); changes nothing.

    Raises:
        ConfigError: the URL has another scheme, or the PostgreSQL driver is not installed.
        StateError: the state cannot be read.
    """
    if url.startswith(SQLITE_SCHEME):
        return sqlite_probe(url[len(SQLITE_SCHEME) :])
    if url.startswith(POSTGRES_SCHEMES):
        try:
            from digest.state.postgres import probe
        except ImportError as e:
            raise ConfigError(
                f"state {redact_url(url)}: the PostgreSQL driver is missing ({e.name}); "
                "install digest[postgres]"
            ) from None
        return probe(url)
    raise ConfigError(
        f"DIGEST_STATE_URL {redact_url(url)}: must start with sqlite:/// or postgresql://"
    )


def describe_state(url: str) -> tuple[bool, str]:
    """Whether the state ``url`` names is usable, and one line saying what it is; no changes.

    For ``digest validate``: a SQLite file that does not exist yet is fine (created at the
    first send); a database must answer; a schema newer than this ``digest`` is a problem.

    Returns:
        ``(ok, line)``, e.g. ``(True, "state sqlite:///s.db: schema version 2 (current)")``.
    """
    from digest.errors import StateError

    shown = redact_url(url)
    try:
        version = probe_state(url)
    except (StateError, ConfigError) as e:
        return False, str(e)
    if version is None:
        return True, f"state {shown}: does not exist yet (created at the first send)"
    if version == 0:
        return True, f"state {shown}: reachable, empty (tables are created at the first send)"
    if version > SCHEMA_VERSION:
        return False, (
            f"state {shown}: schema version {version} is newer than this digest's "
            f"({SCHEMA_VERSION}); upgrade digest"
        )
    latest = SCHEMA_VERSION
    note = "current" if version == latest else f"migrated to {latest} at the next start"
    return True, f"state {shown}: reachable, schema version {version} ({note})"


__all__ = [
    "ALL_STATUSES",
    "BUSY_TIMEOUT_MS",
    "CLAIMABLE",
    "COPY_TABLES",
    "DEFAULT_LEASE_S",
    "MIGRATIONS",
    "PAUSED_ERROR",
    "POSTGRES_SCHEMES",
    "SCHEMA_VERSION",
    "SKIP_LATE",
    "SKIP_NO_PAPERS",
    "SKIP_PAUSED",
    "SQLITE_SCHEME",
    "STATE_FILE_MODE",
    "TRANSITIONS",
    "BounceEvent",
    "BounceKind",
    "BounceScore",
    "Delivery",
    "DeliveryStatus",
    "DomainCount",
    "EditionCount",
    "Event",
    "FeedCache",
    "Pause",
    "ProcessedMessage",
    "Signup",
    "StateBackend",
    "StateFigures",
    "StateStore",
    "StatusMap",
    "StoredList",
    "StoredSubscriber",
    "Suppression",
    "SuppressionReason",
    "Transition",
    "address_key",
    "describe_state",
    "lock_paths",
    "may_move",
    "open_state",
    "probe_state",
    "redact_url",
    "sqlite_url",
    "state_lock",
]
