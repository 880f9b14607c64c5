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
"""

from __future__ import annotations

from dataclasses import dataclass
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
