"""``digest state migrate``: copy a whole state (history, suppression list, papers) elsewhere.

The copy goes table by table (:data:`~digest.state.base.COPY_TABLES`) through the backend
protocol's :meth:`~digest.state.store.Store.export_rows` /
:meth:`~digest.state.store.Store.import_rows`, so it works between any two backends
(SQLite → PostgreSQL is the use). The target must be empty; afterwards the row counts of
every table are compared and any difference is an error.
"""

from __future__ import annotations

import logging

from digest.errors import StateError
from digest.state.base import COPY_TABLES
from digest.state.store import StateBackend

log = logging.getLogger(__name__)


def migrate_state(source: StateBackend, target: StateBackend) -> dict[str, int]:
    """Copy every table of ``source`` into the empty ``target``, then verify the counts.

    Hold ``source.sender_lock`` meanwhile, so nothing is sent from ``source`` during the copy.
    Rows ``sending`` in ``source`` arrive without a lease: the target treats them as a dead
    sender's (``unknown`` at its next start), exactly as the source would have.

    Args:
        source: the state to copy (e.g. the SQLite file).
        target: the state to fill (e.g. a new PostgreSQL database); opened, hence migrated
            to the current schema.

    Returns:
        Rows copied per table.

    Raises:
        StateError: the target already holds state, a row is refused, or the counts differ
            after the copy (the target is then partly filled: empty it and run again).
    """
    held = {table: n for table, n in target.counts().items() if n}
    if held:
        listing = ", ".join(f"{n} {table}" for table, n in held.items())
        raise StateError(
            f"the target {target.url} already holds state ({listing}); migrate into an empty "
            "database or schema"
        )
    copied: dict[str, int] = {}
    for table in COPY_TABLES:
        columns, rows = source.export_rows(table)
        copied[table] = target.import_rows(table, columns, rows)
        log.info("copied %d rows of %s to %s", copied[table], table, target.url)
    expected, found = source.counts(), target.counts()
    if expected != found or found != copied:
        diff = ", ".join(
            f"{t}: {expected.get(t)} in the source, {found.get(t)} in the target"
            for t in COPY_TABLES
            if expected.get(t) != found.get(t)
        )
        raise StateError(f"the copy to {target.url} is incomplete ({diff or 'rows changed'})")
    return copied
