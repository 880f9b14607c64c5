"""What the web app does to a subscription, without HTTP: the library side of ``digest serve``.

:class:`Subscriptions` resolves tokens to subscribers, and carries out unsubscribe,
resubscribe, preferences and double opt-in sign-up. Each change is one entry change
(:mod:`digest.subscribers.changes`: ``active``, some fields, a new entry) handed to the list's
home (:mod:`digest.subscribers.home`) with its state writes: the suppression list (an
unsubscribed address is suppressed, which ``send`` and the daemon honour at once) and an
event (who, what, when, from which request). The home commits them together before the
request is answered: one small transaction with the row when the list is in the state; with
the change in the state's outbox when the list is a file, which a background writer then
splices into the file entry by entry. The service never knows which home it has.

Addresses in logs are masked (:func:`mask_address`); tokens are never logged.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from typing import Any

from email_validator import EmailNotValidError, validate_email
from pydantic import ValidationError

from digest.addresses import display_name_problem, normalize_email
from digest.clock import Clock, utc_now
from digest.delivery import OutgoingMessage, TransportFactory, open_transport
from digest.errors import DeliveryError, HeaderError, TokenError
from digest.message import check_head, make_message_id
from digest.pipeline.welcome import queue_welcome
from digest.render.views import list_title
from digest.settings import Settings
from digest.state import StateBackend, SuppressionReason
from digest.subscribers import Subscriber, SubscriberList
from digest.subscribers.changes import AddOrActivate, SetActive, SetFields
from digest.subscribers.home import SubscriberHome, open_home
from digest.tokens import CONFIRM_TTL, Claims, Purpose, TokenSigner

log = logging.getLogger(__name__)

ACTOR = "web"
"""``actor`` of the events and suppressions the web app records."""
SIGNUP_FIELDS_EVENT = "signup-fields"
"""Event holding the reader fields of a pending sign-up until it is confirmed (the state
store's sign-up record holds the name and keywords only)."""
SIGNUP_CLIENT_WINDOW = timedelta(hours=1)
SIGNUP_ADDRESS_WINDOW = timedelta(hours=24)
RESUBSCRIBE_WINDOW = timedelta(hours=1)
"""How long after an unsubscribe *Resubscribe* (the unsubscribe link's undo) works; later, only
a new confirmed sign-up brings the address back."""
IPV6_CLIENT_PREFIX = 64
"""Sign-ups from one IPv6 /64 count as one client (one customer line or host: SLAAC and
privacy addresses give each host the whole /64)."""
DOTLESS_DOMAINS = {"gmail.com": "gmail.com", "googlemail.com": "gmail.com"}
"""Domains whose mailboxes ignore dots in the local part, and their canonical domain."""
NOT_YOUR_SUPPRESSION = (
    "This address was taken off the list by its mail server or by the list's operator, not "
    "with this link, so this link cannot put it back."
)
UNDO_TOO_LATE = "An unsubscribe can be undone with this link only within the first hour."
OPERATOR_SUPPRESSION = (
    "The list's operator has stopped all mail to this address: it cannot be subscribed here. "
    "Please contact them."
)
READER_FIELDS = ("interests", "authors", "orcid", "arxiv_author", "semantic_scholar")
"""What else ranks a reader, edited on the preferences page and given at sign-up: interest
statements and authors to follow (one a line), and the author whose papers are their library
(ORCID iD, arXiv author name, Semantic Scholar author id)."""
AUTHOR_ID_FIELDS = ("orcid", "arxiv_author", "semantic_scholar")
"""The reader fields a web form may only set once the author's papers could be fetched."""
PREFERENCE_FIELDS = (
    "name",
    "keywords",
    "exclude",
    "frequency",
    "weekday",
    "send_at",
    "timezone",
    "max_papers",
    *READER_FIELDS,
)
"""The fields the preferences form edits."""
MAX_NAME_CHARS = 100
MAX_TERMS = 50
"""At most this many keywords (and exclude terms) from a form."""
_SHORT_INT_RE = re.compile(r"-?[0-9]{1,9}")
"""A form value turned into an ``int`` before validation (longer ones are refused as text)."""


def mask_address(address: str) -> str:
    """``a***@e***.org`` for ``ada@example.org``: enough to recognize, not to harvest."""
    local, _, domain = address.partition("@")
    host, dot, tld = domain.rpartition(".")
    if not dot:
        host, tld = domain, ""
    masked_host = (host[:1] + "***") if host else ""
    return f"{local[:1]}***@{masked_host}{dot}{tld}"


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """Where a change came from, for the event record and the logs.

    Attributes:
        request_id: a random id of the HTTP request (also in the log line).
        client: the client's address (after a trusted reverse proxy's X-Forwarded-For).
    """

    request_id: str
    client: str

    def __str__(self) -> str:
        return f"req={self.request_id} client={self.client}"


@dataclass(frozen=True, slots=True)
class FormErrors(Exception):
    """The preferences or sign-up form has invalid fields.

    Attributes:
        errors: field name → message (``""`` key: not tied to one field).
    """

    errors: Mapping[str, str]


class SignupRefused(Exception):
    """Too many sign-ups from one client address: answer 429."""


@dataclass(frozen=True, slots=True)
class SubscriptionRefused(Exception):
    """This link may not make this change (answer 409; nothing was changed).

    Attributes:
        message: one sentence for the subscriber: why not.
    """

    message: str


class Subscriptions:
    """Unsubscribe, resubscribe, preferences and sign-up, against the state and the list.

    Args:
        settings: DIGEST_SUBSCRIBERS, the secret keys, DIGEST_PUBLIC_URL, the transport
            settings (for confirmation mail), the sign-up limits.
        store: the state.
        home: where the subscriber list lives (default: the one DIGEST_SUBSCRIBERS names).
        now: the clock (aware UTC).
        transport: the transport factory for confirmation mail; default from the settings.

    Raises:
        ConfigError: DIGEST_SECRET_KEY is not set.
    """

    def __init__(
        self,
        settings: Settings,
        store: StateBackend,
        *,
        home: SubscriberHome | None = None,
        now: Clock = utc_now,
        transport: TransportFactory | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.home = home if home is not None else open_home(settings, store)
        self.now = now
        self.signer = TokenSigner.from_settings(settings)
        self.list_name = list_title(settings.list_name)
        self._transport = transport or open_transport(settings)
        self._index = self.signer.index(())
        self._indexed: set[str] = set()
        self._indexed_mark: object = None

    # -- lookups ---------------------------------------------------------------------------
    def subscribers(self) -> SubscriberList:
        """The whole list as it is now (cached by its home). Read-only.

        Raises:
            ConfigError: it is missing or invalid.
        """
        return self.home.load()

    def subscriber(self, address: str) -> Subscriber | None:
        """One subscriber as it is now (this process's changes included), or ``None``."""
        return self.home.get(address)

    def _lookup(self, claims: Claims) -> str | None:
        """The address of ``claims`` among the addresses of the list.

        The index is tried first (an address once on the list stays resolvable:
        unsubscribing one that was removed since is harmless), so a burst of one-click POSTs
        reads nothing; on a miss the list is read again (its home reads only what changed)
        and its new addresses are indexed.
        """
        address = self._index.lookup(claims)
        if address is not None:
            return address
        self.index_list()
        return self._index.lookup(claims)

    def index_list(self) -> None:
        """Index the list's addresses not indexed yet (the app's start does it once, so the
        first link of a large list does not wait for it)."""
        mark, addresses = self.home.addresses(self._indexed_mark)
        for address in addresses:
            if address not in self._indexed:
                self._index.add(address)
                self._indexed.add(address)
        self._indexed_mark = mark

    def verify(self, purpose: Purpose, token: str) -> Claims:
        """Check a token for ``purpose`` (see :meth:`digest.tokens.TokenSigner.verify`).

        Raises:
            TokenError: malformed, forged, wrong purpose or expired.
        """
        return self.signer.verify(purpose, token, now=self.now())

    def resolve(self, purpose: Purpose, token: str) -> tuple[Claims, str]:
        """The verified claims and the subscriber's address a token is for.

        Raises:
            TokenError: bad token, or its subscriber is not in the subscribers file
                (``reason`` ``unknown``).
            ConfigError: the subscribers file is missing or invalid.
        """
        claims = self.verify(purpose, token)
        address = self._lookup(claims)
        if address is None:
            raise TokenError("unknown", "this link is for an address that is not on the list")
        return claims, address

    def is_subscribed(self, address: str) -> bool:
        """Active on the list and not suppressed."""
        sub = self.subscriber(address)
        return bool(sub and sub.active and self.store.suppression(address) is None)

    def link(self, purpose: Purpose, address: str, *, path: str) -> str:
        """``{DIGEST_PUBLIC_URL}{path}/{token}`` (or a relative path without a public URL)."""
        token = self.signer.make(purpose, address)
        return f"{self.settings.public_url or ''}{path}/{token}"

    # -- changes ---------------------------------------------------------------------------
    async def unsubscribe(self, address: str, request: RequestInfo, *, via: str) -> None:
        """Suppress ``address`` (reason ``unsubscribed``), record it, set ``active: false``.

        Idempotent: repeating it changes nothing more. The suppression, the event and the
        change are committed together before this returns, so ``send`` and the daemon skip
        the address from that moment (a subscribers file's ``active: false`` follows from a
        background write).
        """
        # The state writes (fsync'd commits) run on a thread: the event loop keeps parsing
        # other requests meanwhile.
        await asyncio.to_thread(
            self.home.submit,
            SetActive(address, False),
            record=lambda _changes: self._record_unsubscribe(address, request, via),
        )
        log.info("unsubscribe %s (%s) %s", mask_address(address), via, request.request_id)

    def _record_unsubscribe(self, address: str, request: RequestInfo, via: str) -> None:
        new = self.store.suppress(
            address,
            SuppressionReason.UNSUBSCRIBED,
            evidence=via,
            actor=ACTOR,
            now=self.now(),
        )
        if new:
            self.store.record_event(
                address, "unsubscribe", actor=ACTOR, request=str(request), detail={"via": via}
            )

    def undo_refusal(self, address: str) -> str | None:
        """Why *Resubscribe* may not undo the unsubscribe of ``address``, or ``None`` if it may.

        The unsubscribe link is in every email ever sent (and in its List-Unsubscribe header)
        and never expires, so it may only undo what it did: a suppression with reason
        ``unsubscribed``, within :data:`RESUBSCRIBE_WINDOW` of it. A bounce or a complaint
        needs a new confirmed sign-up; the operator's ``manual`` suppression, the operator.
        An address that is subscribed has nothing to undo (``None``: a repeated POST is
        harmless); one that is not subscribed and not suppressed was paused by the operator
        (``active: false`` in the file).
        """
        suppression = self.store.suppression(address)
        if suppression is None:
            return None if self.is_subscribed(address) else NOT_YOUR_SUPPRESSION
        if suppression.reason != SuppressionReason.UNSUBSCRIBED:
            return NOT_YOUR_SUPPRESSION
        if self.now() - suppression.since > RESUBSCRIBE_WINDOW:
            return UNDO_TOO_LATE
        return None

    async def resubscribe(self, address: str, request: RequestInfo) -> None:
        """Undo a recent unsubscribe from the page after it: lift the suppression,
        ``active: true`` (committed together). Nothing happens if the address is subscribed
        already.

        Raises:
            SubscriptionRefused: :meth:`undo_refusal` says no (nothing was changed).
        """
        refusal = self.undo_refusal(address)
        if refusal is not None:
            log.info("resubscribe refused %s %s", mask_address(address), request.request_id)
            raise SubscriptionRefused(refusal)
        if self.store.suppression(address) is None:
            return

        def record(_changed: bool) -> None:
            self.store.unsuppress(address, actor=ACTOR, now=self.now())
            self.store.record_event(address, "resubscribe", actor=ACTOR, request=str(request))
            self._queue_welcome(address, f"resubscribe-{request.request_id}")

        await asyncio.to_thread(self.home.submit, SetActive(address, True), record=record)
        log.info("resubscribe %s %s", mask_address(address), request.request_id)

    def validate_preferences(self, address: str, form: Mapping[str, str]) -> dict[str, Any]:
        """The form's values as YAML field values, validated by the :class:`Subscriber` model.

        Args:
            address: whose preferences.
            form: the submitted fields (strings): ``name``, ``keywords`` and ``exclude``
                (comma- or newline-separated), ``frequency``, ``weekday``, ``send_at``
                (``HH:MM``), ``timezone``, ``max_papers``.

        Returns:
            field → value to write (lists, strings, ints).

        Raises:
            FormErrors: field → message, from the same validation as the YAML.
            ConfigError: the subscriber list is invalid.
        """
        current = self.subscriber(address)
        if current is None:
            raise FormErrors({"": "this address is no longer on the list"})
        errors: dict[str, str] = {}
        values: dict[str, Any] = {}
        name = form.get("name", "").strip()
        if len(name) > MAX_NAME_CHARS:
            errors["name"] = f"at most {MAX_NAME_CHARS} characters"
        values["name"] = name or None
        for key in ("keywords", "exclude"):
            terms = split_terms(form.get(key, ""))
            if len(terms) > MAX_TERMS:
                errors[key] = f"at most {MAX_TERMS} terms"
            values[key] = terms
        for key in ("frequency", "weekday", "send_at", "timezone"):
            values[key] = form.get(key, "").strip()
        values.update(reader_values(form, errors))
        raw_max = form.get("max_papers", "").strip()
        # A short run of digits is a number; anything else (4,300 digits, "1e9") goes to the
        # model as typed, which refuses it with the option's range.
        values["max_papers"] = int(raw_max) if _SHORT_INT_RE.fullmatch(raw_max) else raw_max
        if errors:
            raise FormErrors(errors)
        merged = current.model_dump()
        merged.update(values)
        try:
            checked = Subscriber.model_validate(merged)
        except ValidationError as e:
            for err in e.errors():
                field = str(err["loc"][0]) if err["loc"] else ""
                errors.setdefault(field if field in PREFERENCE_FIELDS else "", err["msg"])
            raise FormErrors(errors) from None
        for key in AUTHOR_ID_FIELDS:  # as the model normalized them (an ORCID URL → the iD)
            values[key] = getattr(checked, key)
        return values

    async def update_preferences(
        self, address: str, values: Mapping[str, Any], request: RequestInfo
    ) -> bool:
        """Write validated preferences (:meth:`validate_preferences`) into the list, with an
        event naming the fields and their new values (when anything changed).

        Returns:
            ``True`` if anything changed.

        Raises:
            ConfigError: the list could not take them (the entry would be invalid).
        """
        changed: list[bool] = []

        def record(changes: bool) -> None:
            changed.append(changes)
            if changes:
                self.store.record_event(
                    address,
                    "preferences",
                    actor=ACTOR,
                    request=str(request),
                    detail={"fields": sorted(values), "values": dict(values)},
                )

        await asyncio.to_thread(self.home.submit, SetFields(address, dict(values)), record=record)
        log.info("preferences %s %s", mask_address(address), request.request_id)
        return changed[-1]

    # -- sign-up ---------------------------------------------------------------------------
    def validate_signup(
        self, form: Mapping[str, str]
    ) -> tuple[str, str | None, list[str], dict[str, Any]]:
        """``(address, name, keywords, reader fields)`` from the sign-up form; the reader
        fields (:data:`READER_FIELDS`: interests, authors, an author's iD) only those given.

        Raises:
            FormErrors: the address is not valid, the name, keywords or reader fields are not
                acceptable (the same rules as the subscribers file).
        """
        errors: dict[str, str] = {}
        raw = form.get("email", "").strip()
        address = ""
        try:
            address = normalize_email(validate_email(raw, check_deliverability=False).normalized)
        except EmailNotValidError:
            errors["email"] = "enter a valid email address, e.g. ada@example.org"
        name = form.get("name", "").strip() or None
        keywords = split_terms(form.get("keywords", ""))
        if len(keywords) > MAX_TERMS:
            errors["keywords"] = f"at most {MAX_TERMS} keywords"
        if name is not None and len(name) > MAX_NAME_CHARS:
            errors["name"] = f"at most {MAX_NAME_CHARS} characters"
        given = {k: v for k, v in reader_values(form, errors).items() if v}
        fields: dict[str, Any] = {}
        if not errors:
            try:
                sub = Subscriber.model_validate(
                    {"email": address, "name": name, "keywords": keywords, **given}
                )
            except ValidationError as e:
                known = ("email", "name", "keywords", *READER_FIELDS)
                for err in e.errors():
                    field = str(err["loc"][0]) if err["loc"] else ""
                    errors.setdefault(field if field in known else "", err["msg"])
            else:
                fields = {k: _plain_value(getattr(sub, k)) for k in given}
        if errors:
            raise FormErrors(errors)
        return address, name, keywords, fields

    async def signup(
        self,
        address: str,
        name: str | None,
        keywords: Sequence[str],
        request: RequestInfo,
        *,
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        """Start a double opt-in: record the sign-up and mail the confirmation link.

        ``fields`` (from :meth:`validate_signup`: interests, authors, an author's iD) are kept
        with the sign-up as a :data:`SIGNUP_FIELDS_EVENT` event of the address (detail: the
        sign-up's id and the fields) and written into the subscribers file at confirmation.

        The caller answers the same whatever happens here (already subscribed, limit for
        the address reached, mail failed), so the answer never reveals anything about the
        address. An address already subscribed gets a note with its preferences link instead.

        Limits: DIGEST_SIGNUP_PER_CLIENT_HOUR sign-ups per client (:func:`client_key`: an
        IPv6 client's /64), then 429; DIGEST_SIGNUP_PER_ADDRESS_DAY mails per mailbox
        (:func:`mailbox_key`: ``+tag`` and Gmail's dots removed), further sign-ups get no
        mail. The mails are counted as ``signup`` events recorded under the mailbox key (the
        address itself when it has no tag), with the address in the detail. An address the
        operator suppressed (``manual``) gets no mail at all.

        Raises:
            SignupRefused: too many sign-ups from this client in the last hour.
        """
        now = self.now()
        client = client_key(request.client)
        client_count = self.store.count_signups(since=now - SIGNUP_CLIENT_WINDOW, client=client)
        if client_count >= self.settings.signup_per_client_hour:
            log.warning("sign-up refused: client limit %s", request.request_id)
            raise SignupRefused
        signup_id = secrets.token_hex(8)
        mailbox = mailbox_key(address)
        since = now - SIGNUP_ADDRESS_WINDOW
        mailed = sum(
            1 for e in self.store.events(mailbox) if e.action == "signup" and e.at >= since
        )
        self.store.add_signup(
            signup_id,
            address,
            name=name,
            keywords=keywords,
            client=client,
            expires_at=now + CONFIRM_TTL,
        )
        if fields:
            self.store.record_event(
                address,
                SIGNUP_FIELDS_EVENT,
                actor=ACTOR,
                request=str(request),
                detail={"signup": signup_id, "fields": dict(fields)},
            )
        if mailed >= self.settings.signup_per_address_day:
            log.warning("sign-up: no mail, address limit %s", request.request_id)
            return
        suppression = self.store.suppression(address)
        if suppression is not None and suppression.reason == SuppressionReason.MANUAL:
            log.info("sign-up: no mail, suppressed by the operator %s", request.request_id)
            return
        self.store.record_event(
            mailbox,
            "signup",
            actor=ACTOR,
            request=str(request),
            detail={"address": address} if mailbox != address else None,
        )
        if self.is_subscribed(address):
            link = self.link(Purpose.PREFERENCES, address, path="/preferences")
            subject = f"You are already subscribed to {self.list_name}"
            body = (
                f"Someone (probably you) asked to subscribe this address to {self.list_name}, "
                f"which it already gets. Nothing changed.\n\nManage your preferences: {link}\n"
            )
        else:
            token = self.signer.make(
                Purpose.CONFIRM, address, data=signup_id, expires=now + CONFIRM_TTL
            )
            link = f"{self.settings.public_url or ''}/confirm/{token}"
            subject = f"Confirm your subscription to {self.list_name}"
            body = (
                f"Someone (probably you) asked to receive {self.list_name}, a digest of "
                "trending ML papers, at this address. To confirm, open this link within 48 "
                f"hours:\n\n{link}\n\n"
                "If it was not you, ignore this message: nothing is sent without a "
                "confirmation.\n"
            )
        await self._mail(address, subject, body)
        log.info("sign-up %s mailed %s", mask_address(address), request.request_id)

    def pending_signup(self, token: str) -> tuple[str, str]:
        """``(signup id, address)`` of a confirm token that may still be used.

        A confirm link works once: it is refused once its sign-up is confirmed, and when the
        address was unsubscribed or confirmed (by another sign-up) after it was mailed, so an
        old link cannot undo a later unsubscribe.

        Raises:
            TokenError: bad/expired token, or no such sign-up; ``used``: see above.
        """
        claims = self.verify(Purpose.CONFIRM, token)
        signup = self.store.signup(claims.data)
        if signup is None or not self.signer.is_for(claims, signup.address):
            raise TokenError("unknown", "this confirmation link is not valid")
        if signup.confirmed_at is not None or any(
            e.action in ("unsubscribe", "confirm") and e.at > signup.created_at
            for e in self.store.events(signup.address)
        ):
            raise TokenError(
                "used",
                "this confirmation link was used already, or the subscription changed since "
                "it was sent",
            )
        return signup.id, signup.address

    async def confirm(self, token: str, request: RequestInfo) -> str:
        """Confirm a sign-up: lift a suppression, append (or re-activate) the subscriber.

        A new confirmed opt-in lifts an ``unsubscribed``, ``bounced`` or ``complained``
        suppression, never the operator's ``manual`` one.

        Returns:
            The address.

        Raises:
            TokenError: as :meth:`pending_signup`.
            SubscriptionRefused: the operator suppressed the address (nothing was changed).
        """
        signup_id, address = self.pending_signup(token)
        signup = self.store.signup(signup_id)
        assert signup is not None
        suppression = self.store.suppression(address)
        if suppression is not None and suppression.reason == SuppressionReason.MANUAL:
            log.info("confirm refused (operator) %s %s", mask_address(address), request.request_id)
            raise SubscriptionRefused(OPERATOR_SUPPRESSION)
        name, keywords = signup.name, signup.keywords
        if name is not None and display_name_problem(name) is not None:
            name = None  # recorded before names were checked: confirm the address without it
        fields = self._signup_fields(address, signup_id)

        def record(_changed: bool) -> None:
            self.store.unsuppress(address, actor=ACTOR, now=self.now())
            if self.store.confirm_signup(signup_id):
                self.store.record_event(address, "confirm", actor=ACTOR, request=str(request))
                self._queue_welcome(address, signup_id)

        change = AddOrActivate(address, name, tuple(keywords), fields)
        await asyncio.to_thread(self.home.submit, change, record=record)
        log.info("confirmed %s %s", mask_address(address), request.request_id)
        return address

    def _queue_welcome(self, address: str, confirmation: str) -> None:
        """In a confirmation's transaction: the welcome it owes (unless DIGEST_WELCOME=false);
        the web app sends it right after the answer (:mod:`digest.pipeline.welcome`)."""
        if self.settings.welcome:
            queue_welcome(self.store, address, confirmation)

    def _signup_fields(self, address: str, signup_id: str) -> dict[str, Any]:
        """The reader fields given with sign-up ``signup_id`` (``{}`` if none)."""
        for event in self.store.events(address):
            if event.action == SIGNUP_FIELDS_EVENT and event.detail.get("signup") == signup_id:
                given = event.detail.get("fields")
                if isinstance(given, dict):
                    return {k: v for k, v in given.items() if k in READER_FIELDS and v}
        return {}

    async def _mail(self, address: str, subject: str, body: str) -> None:
        msg = EmailMessage()
        msg["From"] = self.settings.sender
        msg["To"] = address
        msg["Subject"] = subject
        msg["Date"] = format_datetime(self.now())
        message_id = make_message_id(self.settings, address, "signup")
        msg["Message-ID"] = message_id
        msg["Auto-Submitted"] = "auto-generated"
        msg.set_content(body)
        data = msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))
        try:
            check_head(data, msg.keys())  # the fields set above and nothing else
        except HeaderError as e:
            log.warning("confirmation mail to %s not sent: %s", mask_address(address), e)
            return
        envelope = self.settings.envelope_from or parseaddr(self.settings.sender)[1]
        out = OutgoingMessage(
            subscriber=address,
            edition="signup",
            message_id=message_id,
            envelope_from=envelope,
            recipients=(address,),
            data=data,
        )
        try:
            transport = await self._transport()
            try:
                await transport.deliver(out)
            finally:
                await transport.close()
        except DeliveryError as e:
            log.warning("confirmation mail to %s failed: %s", mask_address(address), e.code)


def split_lines(text: str) -> list[str]:
    """Interest statements or author names from a text area: one a line, stripped, empties
    dropped (a sentence may hold commas)."""
    return [line.strip() for line in text.replace("\r", "\n").split("\n") if line.strip()]


def reader_values(form: Mapping[str, str], errors: dict[str, str]) -> dict[str, Any]:
    """The :data:`READER_FIELDS` of a form as YAML values (lists; an iD or ``None``), before
    the :class:`Subscriber` model validates them; too many lines is an error in ``errors``."""
    values: dict[str, Any] = {}
    for key in ("interests", "authors"):
        lines = split_lines(form.get(key, ""))
        if len(lines) > MAX_TERMS:
            errors[key] = f"at most {MAX_TERMS} lines"
        values[key] = lines
    for key in AUTHOR_ID_FIELDS:
        values[key] = form.get(key, "").strip() or None
    return values


def _plain_value(value: Any) -> Any:
    """A validated field as JSON and YAML hold it (tuples as lists)."""
    return list(value) if isinstance(value, tuple) else value


def split_terms(text: str) -> list[str]:
    """Keywords from a form field: split on commas and newlines, stripped, empties dropped."""
    out: list[str] = []
    for line in text.replace("\r", "\n").split("\n"):
        out.extend(part.strip() for part in line.split(","))
    return [t for t in out if t]


def client_key(client: str) -> str:
    """The key sign-ups from ``client`` are counted under.

    An IPv6 address counts as its /64 network (:data:`IPV6_CLIENT_PREFIX`), e.g.
    ``2001:db8:1:2::/64``; an IPv4 address (IPv4-mapped IPv6 included) as itself; anything
    else (no address, a value a proxy passed on) as given.

    Args:
        client: the client's address, as uvicorn reports it (after X-Forwarded-For).
    """
    try:
        ip = ipaddress.ip_address(client.strip("[]"))
    except ValueError:
        return client
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        bits = 128 - IPV6_CLIENT_PREFIX
        return str(ipaddress.IPv6Network((int(ip) >> bits << bits, IPV6_CLIENT_PREFIX)))
    return str(ip)


def mailbox_key(address: str) -> str:
    """The mailbox a normalized address delivers to, for the sign-up limit per mailbox.

    The subaddress (RFC 5233: ``+`` and what follows, in the local part) is removed for every
    domain; for Gmail (:data:`DOTLESS_DOMAINS`) the dots too, and googlemail.com is gmail.com.
    ``Ada.L+news@googlemail.com`` → ``adal@gmail.com``. A quoted local part, or one that
    would become empty, is kept. Only a rate-limit key: mail always goes to the address as
    given.
    """
    local, at, domain = address.rpartition("@")
    if not at or local.startswith('"'):
        return address
    base = local.split("+", 1)[0] or local
    if domain in DOTLESS_DOMAINS:
        base = base.replace(".", "") or base
        domain = DOTLESS_DOMAINS[domain]
    return f"{base}@{domain}"
