"""Events and pending sign-ups in the state file (written by the web app, :mod:`digest.web`).

Two tables, added by schema migration 4 (:mod:`digest.state.schema`); written and read by
``Store.record_event``, ``events``, ``add_signup``, ``signup``... (:mod:`digest.state.store`):

* ``events``: one row per change a person or a process made to a subscription: who (``actor``:
  ``web``, ``cli:<user>``...), what (``action``: ``unsubscribe``, ``resubscribe``,
  ``preferences``, ``signup``, ``confirm``), to whom (the normalized address), when (UTC), from
  which request (``request``: a request id and the client address) and a ``detail`` (JSON).
  Tokens and secrets are never stored.
* ``signups``: a double opt-in sign-up waiting for its confirmation (48 h), with the name and
  keywords given in the form; ``confirmed_at`` is set once confirmed. Also the record the
  sign-up rate limits count (per target address, per client address).

Schema migration 6 adds the subscriber list itself, for ``DIGEST_SUBSCRIBERS=state``
(``subscribers``: :class:`StoredSubscriber`; ``subscriber_list``: :class:`StoredList`) and
the outbox of web changes waiting to be written into a subscribers *file*.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Event:
    """One recorded change to a subscription.

    Attributes:
        id: increasing row id.
        at: when (UTC).
        actor: who made it (``web``, ``cli:<user>``, ``bounces``...).
        action: ``unsubscribe``, ``resubscribe``, ``preferences``, ``signup``, ``confirm``...
        subscriber: the normalized address.
        request: the request it came from (``req=<id> client=<address>``), or ``""``.
        detail: more about it (e.g. the changed field names, ``"one-click"``).
    """

    id: int
    at: datetime
    actor: str
    action: str
    subscriber: str
    request: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Signup:
    """A sign-up waiting for (or having had) its confirmation.

    Attributes:
        id: random id (hex), carried in the confirmation token's data.
        address: the normalized address to subscribe.
        name: the name given in the form, or ``None``.
        keywords: the keywords given in the form.
        client: the client address the form was sent from.
        created_at, expires_at: UTC; the confirmation link stops working at ``expires_at``.
        confirmed_at: when it was confirmed (UTC), or ``None``.
    """

    id: str
    address: str
    name: str | None
    keywords: tuple[str, ...]
    client: str
    created_at: datetime
    expires_at: datetime
    confirmed_at: datetime | None


@dataclass(frozen=True, slots=True)
class StoredSubscriber:
    """One subscriber of the list kept in the state (``DIGEST_SUBSCRIBERS=state``).

    Attributes:
        email: the normalized address (the row's key).
        position: its place in the list (export and send order; equal ones by address).
        active: the resolved ``active`` (``defaults`` applied).
        frequency: the resolved ``frequency`` (``daily`` or ``weekly``).
        fields: the entry's own options (option name → JSON value), as validated; the
            list's ``defaults`` apply under them.
        entry: the entry as YAML text, as written: its lines (with the comment lines before
            it), indented as the list's items are, each ending in a line break.
        version: the list version of its last change (0 while it is being written).
    """

    email: str
    position: int
    active: bool
    frequency: str
    fields: dict[str, Any]
    entry: str
    version: int = 0


@dataclass(frozen=True, slots=True)
class StoredList:
    """The subscriber list in the state as a whole (the YAML around its entries).

    Attributes:
        version: bumped by every change, in commit order (0: never written).
        removed: the version of its last removal of an entry (a reader that followed the
            changes since an older version reads the whole list again).
        entries: how many subscribers it holds.
        head: the YAML before the first entry (comments, ``defaults:``, ``subscribers:``).
        tail: the YAML after the last entry.
        indent: the column of the entries' ``-``.
        defaults: the validated ``defaults:`` (option name → JSON value).
    """

    version: int = 0
    removed: int = 0
    entries: int = 0
    head: str = "subscribers:\n"
    tail: str = ""
    indent: int = 2
    defaults: dict[str, Any] = field(default_factory=dict)
