"""The state store: the single record of what was sent (see :mod:`digest.state.sqlite`).

Today one backend, the embedded SQLite file; the rest of the code imports from here, never from
a backend module, so a second backend can be added behind the same names.
"""

from digest.state.sqlite import (
    BUSY_TIMEOUT_MS,
    MIGRATIONS,
    SCHEMA_VERSION,
    SKIP_LATE,
    SKIP_NO_PAPERS,
    STATE_FILE_MODE,
    Delivery,
    DeliveryStatus,
    FeedCache,
    StateStore,
    Suppression,
    SuppressionReason,
    address_key,
    lock_paths,
    state_lock,
)

__all__ = [
    "BUSY_TIMEOUT_MS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "SKIP_LATE",
    "SKIP_NO_PAPERS",
    "STATE_FILE_MODE",
    "Delivery",
    "DeliveryStatus",
    "FeedCache",
    "StateStore",
    "Suppression",
    "SuppressionReason",
    "address_key",
    "lock_paths",
    "state_lock",
]
