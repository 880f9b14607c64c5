"""Changes to one subscriber's entry: what the web app and the CLI make, and the outbox keeps.

A change names one address and knows three things:

* its new entry text (:meth:`patch`): from the entry's current text (``None``: not on the
  list), by the smallest edit that does it (a one-line ``active:`` splice, else a round trip
  of that entry alone, :func:`~digest.subscribers.entries.patch_entry`); ``""`` removes it;
* the same on a round-trip document of the whole file (:meth:`on_doc`), for a file whose list
  is not written the usual way (:func:`~digest.subscribers.entries.split_list` declines);
* what the subscriber becomes (:meth:`on_subscriber`): a file home answers reads with it
  until the file is written;

and travels as JSON (:func:`change_json`, :func:`change_from_json`): in the ``detail`` of
the event that records it and in the state's outbox of a subscribers file.

Addresses are normalized (:func:`~digest.addresses.normalize_email`); a change never
changes an entry's address (that is a remove and an add).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from digest.addresses import normalize_email
from digest.subscribers.entries import (
    DEFAULT_INDENT,
    FALLBACK,
    change_active,
    change_add_or_activate,
    change_fields,
    model_default,
    new_entry,
    patch_entry,
    splice_active,
    splice_ok,
)
from digest.subscribers.model import Subscriber
from digest.subscribers.yaml import ENTRY_KEY_LINE, load_entry

ENTRY_NAME = Path("entry")
"""What problems of an entry that is not in a file are located in."""


@dataclass(frozen=True, slots=True)
class SetActive:
    """``active: true`` or ``false`` (unsubscribe, resubscribe, ``--prune``).

    Attributes:
        address: whose entry.
        active: the new value.
    """

    kind: ClassVar[str] = "active"
    address: str
    active: bool

    def patch(self, entry: str | None, defaults: Mapping[str, Any], indent: int) -> str | None:
        """The entry with ``active`` set: a one-line splice (an ``active:`` value replaced,
        or ``active: false`` added under ``email:``), else a round trip; ``None``: no change
        (already so, or not on the list)."""
        del indent
        if entry is None:
            return None
        if "active" not in defaults:
            wanted = {normalize_email(self.address): self.active}
            data = (ENTRY_KEY_LINE + entry).encode()
            spliced = splice_active(data, wanted)
            if spliced is None:
                return None
            if isinstance(spliced, bytes) and splice_ok(spliced, wanted):
                return spliced.decode()[len(ENTRY_KEY_LINE) :]
            assert spliced is FALLBACK or isinstance(spliced, bytes)
        return patch_entry(entry, self.on_doc, defaults)

    def on_doc(self, doc: CommentedMap) -> bool:
        """:func:`~digest.subscribers.entries.change_active` on ``doc``."""
        return change_active(doc, self.address, self.active)

    def on_subscriber(
        self, current: Subscriber | None, defaults: Mapping[str, Any]
    ) -> Subscriber | None:
        """``current`` with ``active`` set."""
        del defaults
        if current is None or current.active == self.active:
            return current
        return current.model_copy(update={"active": self.active})


@dataclass(frozen=True, slots=True)
class SetFields:
    """Replace some options of one entry (the preferences form).

    Attributes:
        address: whose entry.
        fields: option → new value (JSON values: strings, numbers, lists; ``None`` removes
            the option, so the default applies).
    """

    kind: ClassVar[str] = "fields"
    address: str
    fields: Mapping[str, Any] = field(default_factory=dict)

    def patch(self, entry: str | None, defaults: Mapping[str, Any], indent: int) -> str | None:
        """The entry with the fields replaced (a round trip of the entry)."""
        del indent
        if entry is None:
            return None
        return patch_entry(entry, self.on_doc, defaults)

    def on_doc(self, doc: CommentedMap) -> bool:
        """:func:`~digest.subscribers.entries.change_fields` on ``doc``."""
        return change_fields(doc, self.address, self.fields)

    def on_subscriber(
        self, current: Subscriber | None, defaults: Mapping[str, Any]
    ) -> Subscriber | None:
        """``current`` with the fields replaced (a removed one takes its default)."""
        if current is None:
            return None
        update = {
            k: defaults.get(k, model_default(k)) if v is None else v for k, v in self.fields.items()
        }
        return Subscriber.model_validate({**current.model_dump(), **update})


@dataclass(frozen=True, slots=True)
class AddOrActivate:
    """A confirmed sign-up: a new entry, or ``active: true`` for an address on the list.

    Attributes:
        address: the new subscriber.
        name: the name given in the sign-up form, or ``None``.
        keywords: the keywords given there.
        fields: the reader's other options given there (interests, authors, an author's
            iD: JSON values), set on the entry too.
    """

    kind: ClassVar[str] = "add"
    address: str
    name: str | None = None
    keywords: tuple[str, ...] = ()
    fields: Mapping[str, Any] = field(default_factory=dict)

    def patch(self, entry: str | None, defaults: Mapping[str, Any], indent: int) -> str | None:
        """A new entry at ``indent`` (``email``, ``name``, ``keywords``, the fields), or the
        entry with ``active: true`` and the fields."""
        if entry is None:
            return new_entry(self.new_fields(defaults), indent)
        active = SetActive(self.address, True).patch(entry, defaults, indent)
        if not self.fields:
            return active
        more = SetFields(self.address, self.fields).patch(active or entry, defaults, indent)
        return more if more is not None else active

    def new_fields(self, defaults: Mapping[str, Any]) -> dict[str, Any]:
        """The options a new entry sets (``active: true`` only where defaults pause)."""
        out: dict[str, Any] = {"email": normalize_email(self.address)}
        if self.name:
            out["name"] = self.name
        if self.keywords:
            out["keywords"] = list(self.keywords)
        if defaults.get("active", True) is not True:
            out["active"] = True
        out.update((k, v) for k, v in self.fields.items() if v is not None)
        return out

    def on_doc(self, doc: CommentedMap) -> bool:
        """:func:`~digest.subscribers.entries.change_add_or_activate` (and
        :func:`~digest.subscribers.entries.change_fields`) on ``doc``."""
        added = change_add_or_activate(doc, self.address, name=self.name, keywords=self.keywords)
        return change_fields(doc, self.address, self.fields) or added

    def on_subscriber(
        self, current: Subscriber | None, defaults: Mapping[str, Any]
    ) -> Subscriber | None:
        """The new subscriber, or ``current`` made active (with the fields)."""
        if current is None:
            return Subscriber.model_validate({**defaults, **self.new_fields(defaults)})
        active = SetActive(self.address, True).on_subscriber(current, defaults)
        return SetFields(self.address, self.fields).on_subscriber(active, defaults)


@dataclass(frozen=True, slots=True)
class PutEntry:
    """Replace an entry with new text, or add it (``digest subscribers edit`` / ``add``).

    Attributes:
        address: whose entry (the text's ``email:`` must be this address).
        text: the whole entry as a list item, indented as the list's items are.
    """

    kind: ClassVar[str] = "entry"
    address: str
    text: str

    def patch(self, entry: str | None, defaults: Mapping[str, Any], indent: int) -> str | None:
        """:attr:`text` (``None`` if the entry is that already)."""
        del defaults, indent
        return None if entry == self.text else self.text

    def on_doc(self, doc: CommentedMap) -> bool:
        """The entry of :attr:`address` in ``doc`` replaced by (or appended as) :attr:`text`."""
        new = YAML(typ="rt").load(ENTRY_KEY_LINE + self.text)["subscribers"][0]
        items = doc.get("subscribers")
        if items is None:
            items = doc["subscribers"] = YAML(typ="rt").load("- x\n")
            items.pop()
        for i, item in enumerate(items):
            if isinstance(item, Mapping) and _same(item.get("email"), self.address):
                if item == new:
                    return False
                items[i] = new
                return True
        items.append(new)
        return True

    def on_subscriber(
        self, current: Subscriber | None, defaults: Mapping[str, Any]
    ) -> Subscriber | None:
        """The subscriber :attr:`text` describes."""
        del current
        return load_entry(self.text, defaults=defaults, path=ENTRY_NAME)[0]


@dataclass(frozen=True, slots=True)
class RemoveEntry:
    """Delete an entry (``digest subscribers remove``); history and suppressions stay.

    Attributes:
        address: whose entry.
    """

    kind: ClassVar[str] = "remove"
    address: str

    def patch(self, entry: str | None, defaults: Mapping[str, Any], indent: int) -> str | None:
        """``""`` (the entry goes), ``None`` if there is none."""
        del defaults, indent
        return None if entry is None else ""

    def on_doc(self, doc: CommentedMap) -> bool:
        """The entry of :attr:`address` deleted from ``doc``."""
        items = doc.get("subscribers") or []
        for i, item in enumerate(items):
            if isinstance(item, Mapping) and _same(item.get("email"), self.address):
                del items[i]
                return True
        return False

    def on_subscriber(
        self, current: Subscriber | None, defaults: Mapping[str, Any]
    ) -> Subscriber | None:
        """Nobody."""
        del current, defaults
        return None


EntryChange = SetActive | SetFields | AddOrActivate | PutEntry | RemoveEntry
"""A change to one subscriber's entry."""
_KINDS: dict[str, Any] = {
    c.kind: c for c in (SetActive, SetFields, AddOrActivate, PutEntry, RemoveEntry)
}


def change_json(change: EntryChange) -> dict[str, Any]:
    """``change`` as a JSON object (``kind`` and its attributes)."""
    out: dict[str, Any] = {"kind": change.kind}
    for name in change.__slots__:
        value = getattr(change, name)
        out[name] = list(value) if isinstance(value, tuple) else value
        if isinstance(value, Mapping):
            out[name] = dict(value)
    return out


def change_from_json(data: Mapping[str, Any] | str) -> EntryChange:
    """The change of :func:`change_json`'s object (or its JSON text).

    Raises:
        ValueError: not a change this ``digest`` knows.
    """
    obj = json.loads(data) if isinstance(data, str) else dict(data)
    try:
        kind = _KINDS[obj.pop("kind")]
        if kind is AddOrActivate:
            obj["keywords"] = tuple(obj.get("keywords") or ())
            obj["fields"] = dict(obj.get("fields") or {})
        made: EntryChange = kind(**obj)
    except (KeyError, TypeError) as e:
        raise ValueError(f"not a subscriber change: {data!r:.200}") from e
    return made


def _same(raw: Any, address: str) -> bool:
    return isinstance(raw, str) and normalize_email(raw) == normalize_email(address)


__all__ = [
    "DEFAULT_INDENT",
    "AddOrActivate",
    "EntryChange",
    "PutEntry",
    "RemoveEntry",
    "SetActive",
    "SetFields",
    "change_from_json",
    "change_json",
]
