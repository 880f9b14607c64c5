"""The Starlette application of ``digest serve``: routes and pages.

Routes (every page works without JavaScript; tokens from :mod:`digest.tokens`)::

    GET  /                       the pitch and the sign-up form (404 with DIGEST_SIGNUP=false)
    POST /subscribe              start a double opt-in; the same answer whatever the address
    GET  /confirm/{token}        one button; POST /confirm/{token} makes the subscription active
                                 (a link works once: 410 after)
    GET  /u/{token}              masked address and one "Unsubscribe" button; changes nothing
    POST /u/{token}              RFC 8058 one-click (body List-Unsubscribe=One-Click, no
                                 cookie) or the page's form (CSRF); 200, idempotent
    POST /u/{token}/resubscribe  undo, from the page after unsubscribing: only an unsubscribe
                                 (not a bounce, complaint or the operator's suppression),
                                 within an hour; else 409
    GET  /preferences/{token}    the preferences form; POST saves it (errors next to fields);
                                 "what shapes your ranking" (liked papers, library, themes)
    POST /preferences/{token}/library         upload a library file (multipart, ≤ 2 MB)
    POST /preferences/{token}/library/remove  take a library file off the list
    POST /preferences/{token}/forget          remove one rating, library entry or theme
    POST /preferences/{token}/reset           "reset what was learned"
    GET  /preferences/{token}/rate            ~10 recent papers to 👍/👎; POST records them
    GET  /archive                past editions; /archive/{key} one edition (unpersonalized);
                                 /archive.atom an Atom feed (RFC 4287)
    GET  /healthz                200 "ok"
    GET  /metrics                Prometheus metrics, to loopback and DIGEST_METRICS_ALLOW
                                 clients only (404 to others)

A bad, forged, expired or wrong-purpose token gets a 4xx page and changes nothing. A token has
one spelling; there are no redirects (``/archive/`` is 404, not a redirect to ``/archive``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import zoneinfo
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from digest.clock import Clock, utc_now
from digest.core import Digest
from digest.delivery import TransportFactory
from digest.errors import ConfigError, DigestError, TokenError
from digest.message import FEEDBACK_VERDICTS
from digest.metrics import Metrics, metrics_route
from digest.models import Edition, Paper
from digest.pipeline.welcome import warm_up
from digest.ranking.learning import ReaderLearner
from digest.render import brand, long_date_label
from digest.render.views import list_title
from digest.settings import Settings
from digest.subscribers import FREQUENCIES, WEEKDAYS, Subscriber, normalize_arxiv_id
from digest.tokens import Purpose
from digest.web.reader import (
    UPLOAD_BODY_BYTES,
    LibraryFiles,
    UploadRefused,
    check_authors,
    papers_to_rate,
    recent_editions,
    too_large_message,
)
from digest.web.security import CSRF_FIELD, BodyTooLarge, Csrf, SecurityMiddleware
from digest.web.service import (
    ACTOR,
    READER_FIELDS,
    FormErrors,
    RequestInfo,
    SignupRefused,
    SubscriptionRefused,
    Subscriptions,
    mask_address,
)

log = logging.getLogger("digest.web")

HERE = Path(__file__).parent
ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"
MAX_FORM_FIELDS = 20
ARCHIVE_LIMIT = 60
"""Editions listed in the archive index and the Atom feed (newest first)."""
_TOKEN_STATUS = {"malformed": 400, "forged": 403, "expired": 410, "used": 410, "unknown": 404}
CONCURRENT_CHANGES = 4
"""Token routes whose page logic (resolve the token, read and change the subscription,
render the page) runs at once; the others wait their turn without holding the event loop.
A burst of saves then leaves the loop free for everything else: 32 concurrent saves kept
`/healthz` at p99 ≤ 50 ms (benchmarks/bench_list.py; the request bodies are read before the
turn, so a slow client never holds one)."""
REFUSED_STATUS = 409
"""Status of a change this link may not make (:class:`SubscriptionRefused`)."""


def parse_edition_key(key: str) -> Edition | None:
    """The :class:`Edition` of ``2026-08-20`` or ``2026-W34``, or ``None`` if malformed."""
    return Edition.parse(key)


class WebApp:
    """The app's state: settings, the state file, the subscriptions service, templates.

    Args:
        settings: as for ``digest serve``.
        now: the clock (aware UTC).
        transport: transport factory for confirmation mail (default: from the settings).

    Raises:
        ConfigError: DIGEST_SECRET_KEY is not set.
        StateError: the state file cannot be opened.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        now: Clock = utc_now,
        transport: TransportFactory | None = None,
    ) -> None:
        self.settings = settings
        self.now = now
        self.digest = Digest(settings, now=now)
        self.subs = Subscriptions(
            settings, self.digest.store, home=self.digest.home, now=now, transport=transport
        )
        secret = settings.secret_key
        assert secret is not None  # Subscriptions checked it
        self.csrf = Csrf(secret.get_secret_value().encode())
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.libraries = LibraryFiles(settings)
        self.archive_cache: dict[str, ArchivedEdition] = {}
        self.list_name = list_title(settings.list_name)
        """The list's name (DIGEST_LIST_NAME, else "Daily Papers") on every page."""
        self._archive_lock = asyncio.Lock()
        self.busy = asyncio.Semaphore(CONCURRENT_CHANGES)
        """At most :data:`CONCURRENT_CHANGES` token routes' page logic at once."""
        self.welcomes: set[asyncio.Task[None]] = set()
        """Welcome emails being sent in the background (:meth:`welcome_soon`)."""

    def close(self) -> None:
        """Close the state file."""
        self.digest.close()

    def welcome_soon(self, address: str | None) -> None:
        """Send the welcome emails ``address`` (``None``: anyone) is owed in the background,
        after the answer: a confirmation queued it in its own transaction, so a welcome this
        process cannot send stays owed for the daemon's next tick or this app's next start."""
        if self.settings.welcome:
            task = asyncio.create_task(self._welcome(address))
            self.welcomes.add(task)
            task.add_done_callback(self.welcomes.discard)

    async def _welcome(self, address: str | None) -> None:
        try:
            await self.digest.send_welcomes(self.subs.subscriber, address)
        except DigestError as e:  # the relay refused the configuration, the state failed
            log.error("welcome emails not sent (they stay owed): %s", e)

    @property
    def learner(self) -> ReaderLearner:
        """Libraries and reader models (the reader cache the sender uses)."""
        return self.digest.ranking.learner

    # -- helpers ---------------------------------------------------------------------------
    def page(
        self,
        name: str,
        request: Request,
        *,
        status: int = 200,
        form: bool = False,
        **context: Any,
    ) -> HTMLResponse:
        """Render ``name`` (autoescaped); with ``form``, issue the CSRF field and cookie."""
        cookie = None
        if form:
            context["csrf"], cookie = self.csrf.issue(request)
        context.setdefault("csrf_field", CSRF_FIELD)
        context.setdefault("signup_enabled", self.settings.signup)
        context.setdefault("postal_address", self.settings.postal_address)
        context.setdefault("list_name", self.list_name)
        html = self.env.get_template(name).render(**context)
        response = HTMLResponse(html, status_code=status)
        self.csrf.set_cookie(request, response, cookie)
        return response

    def token_error(self, request: Request, e: TokenError) -> HTMLResponse:
        """The 4xx page of a bad token (nothing changed)."""
        status = _TOKEN_STATUS.get(e.reason, 400)
        log.info("token refused (%s) req=%s", e.reason, _rid(request))
        return self.page("error.html.j2", request, status=status, message=str(e), reason=e.reason)

    def csrf_error(self, request: Request) -> HTMLResponse:
        """The 403 page of a form whose CSRF field does not match its cookie (nothing changed)."""
        return self.page("error.html.j2", request, status=403, reason="csrf", message=_CSRF)

    def refused(self, request: Request, e: SubscriptionRefused) -> HTMLResponse:
        """The 409 page of a change this link may not make (nothing changed)."""
        return self.page(
            "error.html.j2", request, status=REFUSED_STATUS, reason="refused", message=e.message
        )

    def request_info(self, request: Request) -> RequestInfo:
        client = request.client.host if request.client else "-"
        return RequestInfo(_rid(request), client)

    async def form(self, request: Request, *, files: int = 0) -> FormData:
        """The urlencoded/multipart form, bounded in fields and sizes (``files``: how many
        file fields it may hold; the upload route's body limit is its own).

        Raises:
            HTTPException: 400 for a malformed body, 415 for another content type.
            BodyTooLarge: the body (chunked, or longer than its Content-Length said) passed
                :data:`~digest.web.security.MAX_BODY_BYTES`; the middleware answers 413.
        """
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in ("application/x-www-form-urlencoded", "multipart/form-data"):
            raise HTTPException(415, "send the form as application/x-www-form-urlencoded")
        try:
            return await request.form(max_files=files, max_fields=MAX_FORM_FIELDS)
        except (HTTPException, BodyTooLarge):  # BodyTooLarge: the middleware answers 413
            raise
        except Exception as e:  # malformed multipart and similar: the client's fault
            raise HTTPException(400, "malformed form") from e


def _rid(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id", "-"))


def _text(form: FormData) -> dict[str, str]:
    """Only string fields (files are refused anyway)."""
    return {k: v for k, v in form.items() if isinstance(v, str)}


# -- routes ------------------------------------------------------------------------------------


async def home(request: Request) -> Response:
    app: WebApp = request.app.state.web
    if not app.settings.signup:
        return app.page("home.html.j2", request, status=200, errors={}, values={})
    return app.page("signup.html.j2", request, form=True, errors={}, values={})


async def subscribe(request: Request) -> Response:
    app: WebApp = request.app.state.web
    if not app.settings.signup:
        raise HTTPException(404, "sign-up is turned off")
    form = _text(await app.form(request))
    if not app.csrf.check(request, form):
        return app.csrf_error(request)
    values = {k: form.get(k, "") for k in ("email", "name", "keywords", *READER_FIELDS)}
    try:
        address, name, keywords, fields = app.subs.validate_signup(form)
    except FormErrors as e:
        return app.page(
            "signup.html.j2", request, status=422, form=True, errors=e.errors, values=values
        )
    try:
        await app.subs.signup(address, name, keywords, app.request_info(request), fields=fields)
    except SignupRefused:
        return app.page(
            "error.html.j2",
            request,
            status=429,
            reason="rate",
            message="Too many sign-ups from your network. Please try again in an hour.",
        )
    return app.page("signup_sent.html.j2", request, address=mask_address(address))


# -- token routes: one decorator does what they share ------------------------------------------


@dataclass(frozen=True, slots=True)
class Link:
    """A request to a token route, the token checked (and on POST the form's CSRF field).

    Attributes:
        app: the app's state.
        request: the request.
        token: the token from the path, verified.
        address: the subscriber (or signer-up) the token is for.
        data: the token's payload (a 👍/👎 verdict and paper, a sign-up id; else ``""``).
        form: the form's text fields on POST, ``{}`` on GET.
        file: on an upload route, the uploaded file's ``(name, bytes)`` (``None``: none sent).
    """

    app: WebApp
    request: Request
    token: str
    address: str
    data: str
    form: dict[str, str]
    file: tuple[str, bytes] | None = None

    def page(self, name: str, *, status: int = 200, form: bool = False, **ctx: Any) -> Response:
        """:meth:`WebApp.page` for this request, with ``address`` masked and ``token``."""
        ctx.setdefault("address", mask_address(self.address))
        ctx.setdefault("token", self.token)
        return self.app.page(name, self.request, status=status, form=form, **ctx)


Resolver = Callable[[WebApp, str], tuple[str, str]]
"""``(app, token) -> (address, data)``; raises ``TokenError`` for a token that cannot be used."""


def by_purpose(purpose: Purpose) -> Resolver:
    """The resolver of a subscriber's link of ``purpose`` (the address must be on the list)."""

    def resolve(app: WebApp, token: str) -> tuple[str, str]:
        claims, address = app.subs.resolve(purpose, token)
        return address, claims.data

    return resolve


def _pending_signup(app: WebApp, token: str) -> tuple[str, str]:
    signup_id, address = app.subs.pending_signup(token)
    return address, signup_id


def _feedback(app: WebApp, token: str) -> tuple[str, str]:
    """A 👍/👎 token: its payload must be a verdict and a bare arXiv id."""
    claims, address = app.subs.resolve(Purpose.FEEDBACK, token)
    verdict, _, arxiv_id = claims.data.partition(" ")
    if verdict not in FEEDBACK_VERDICTS or normalize_arxiv_id(arxiv_id) != arxiv_id:
        raise TokenError("malformed", "the link is not valid")
    return address, claims.data


def token_route(
    resolve: Resolver,
    *,
    csrf_exempt: Callable[[Mapping[str, str]], bool] | None = None,
    upload: str | None = None,
) -> Callable[[Callable[[Link], Awaitable[Response]]], Callable[[Request], Awaitable[Response]]]:
    """Make a route of ``/…/{token}`` from the page logic alone.

    The endpoint resolves the path's token (a bad, forged, expired, unknown or used one gets
    its 4xx page: nothing changes), reads the form on POST and checks its CSRF field (403
    page; ``csrf_exempt(form)`` True skips it: RFC 8058 one-click POSTs carry no cookie),
    then calls the handler with a :class:`Link`. A :class:`~digest.errors.TokenError` or
    :class:`~digest.web.service.SubscriptionRefused` raised by the handler gets the same
    pages (4xx, 409). ``upload``: the name of a file field the form may carry (one file,
    read into :attr:`Link.file`; the body limit of such a route is set in
    :func:`create_app`).
    """

    def decorate(
        handler: Callable[[Link], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            app: WebApp = request.app.state.web
            token = request.path_params["token"]
            try:  # on a thread: a token of an address not indexed yet reads the list
                address, data = await asyncio.to_thread(resolve, app, token)
            except TokenError as e:
                return app.token_error(request, e)
            form: dict[str, str] = {}
            file: tuple[str, bytes] | None = None
            if request.method == "POST":
                raw = await app.form(request, files=1 if upload else 0)
                try:
                    form = _text(raw)
                    exempt = csrf_exempt is not None and csrf_exempt(form)
                    if not exempt and not app.csrf.check(request, form):
                        return app.csrf_error(request)
                    sent = raw.get(upload) if upload else None
                    if isinstance(sent, UploadFile):
                        file = (sent.filename or "", await sent.read())
                finally:
                    await raw.close()  # an upload's spooled temporary file
            async with app.busy:
                try:
                    return await handler(Link(app, request, token, address, data, form, file))
                except TokenError as e:  # e.g. a confirm link used meanwhile (a second tab)
                    return app.token_error(request, e)
                except SubscriptionRefused as e:
                    return app.refused(request, e)

        return endpoint

    return decorate


@token_route(_pending_signup)
async def confirm_page(link: Link) -> Response:
    """GET of a confirm link: one button; changes nothing (link scanners GET too)."""
    return link.page("confirm.html.j2", form=True)


@token_route(_pending_signup)
async def confirm(link: Link) -> Response:
    """POST of the confirm page: the double opt-in is done; the subscriber is added."""
    address = await link.app.subs.confirm(link.token, link.app.request_info(link.request))
    link.app.welcome_soon(address)
    # The confirm link came by mail to the address and works once: it may lead on.
    prefs = link.app.subs.link(Purpose.PREFERENCES, address, path="/preferences")
    return link.page(
        "confirmed.html.j2", address=mask_address(address), prefs=prefs, rate=f"{prefs}/rate"
    )


@token_route(by_purpose(Purpose.UNSUBSCRIBE))
async def unsubscribe_page(link: Link) -> Response:
    """GET of the List-Unsubscribe link: the masked address and one button."""
    return link.page(
        "unsubscribe.html.j2", form=True, subscribed=link.app.subs.is_subscribed(link.address)
    )


def _one_click(form: Mapping[str, str]) -> bool:
    """An RFC 8058 one-click POST (``List-Unsubscribe=One-Click``, no cookie)."""
    return form.get(ONE_CLICK_FIELD) == ONE_CLICK_VALUE


@token_route(by_purpose(Purpose.UNSUBSCRIBE), csrf_exempt=_one_click)
async def unsubscribe(link: Link) -> Response:
    """POST: RFC 8058 one-click (answers plain text), or the page's form (answers a page)."""
    one_click = _one_click(link.form)
    via = "one-click POST (RFC 8058)" if one_click else "unsubscribe page"
    await link.app.subs.unsubscribe(link.address, link.app.request_info(link.request), via=via)
    if one_click:
        return PlainTextResponse("Unsubscribed.\n")
    # Anyone may hold this link (a forwarded email, the List-Unsubscribe header): the page
    # leads to nothing more than the undo of this unsubscribe, never to the preferences.
    return link.page(
        "unsubscribed.html.j2", form=True, undo=link.app.subs.undo_refusal(link.address) is None
    )


@token_route(by_purpose(Purpose.UNSUBSCRIBE))
async def resubscribe(link: Link) -> Response:
    """POST of the undo on the page after unsubscribing (only an unsubscribe of one's own)."""
    await link.app.subs.resubscribe(link.address, link.app.request_info(link.request))
    link.app.welcome_soon(link.address)
    return link.page("confirmed.html.j2", prefs=None, rate=None)


def _paper_title(app: WebApp, arxiv_id: str) -> str | None:
    paper = app.digest.store.find_papers([arxiv_id]).get(arxiv_id)
    return paper.title if paper is not None else None


@token_route(_feedback)
async def feedback_page(link: Link) -> Response:
    """GET of a 👍/👎 link: a page with a button; records nothing (link scanners GET too)."""
    verdict, _, arxiv_id = link.data.partition(" ")
    title = await asyncio.to_thread(_paper_title, link.app, arxiv_id)
    return link.page(
        "feedback.html.j2", form=True, done=False, verdict=verdict, arxiv_id=arxiv_id, title=title
    )


@token_route(_feedback)
async def feedback(link: Link) -> Response:
    """POST of the 👍/👎 page: record the verdict in the state store (latest wins)."""
    app = link.app
    verdict, _, arxiv_id = link.data.partition(" ")
    await asyncio.to_thread(record_ratings, app, link.address, {arxiv_id: verdict})
    log.info(
        "feedback %s %s %s %s", mask_address(link.address), verdict, arxiv_id, _rid(link.request)
    )
    title = await asyncio.to_thread(_paper_title, app, arxiv_id)
    return link.page("feedback.html.j2", done=True, verdict=verdict, arxiv_id=arxiv_id, title=title)


def record_ratings(app: WebApp, address: str, verdicts: Mapping[str, str]) -> None:
    """Record 👍/👎 (``{arxiv id: "like" | "dislike"}``) as the email's links do, and count a
    paper rated anew again if its rating had been removed on the preferences page."""
    for arxiv_id, verdict in verdicts.items():
        app.digest.store.record_feedback(address, arxiv_id, verdict)
    app.learner.cache.unforget(
        address, [f"{o}:{i}" for i in verdicts for o in ("thumbs-up", "thumbs-down")]
    )


def _preference_values(sub: Subscriber) -> dict[str, str]:
    return {
        "name": sub.name or "",
        "keywords": ", ".join(sub.keywords),
        "exclude": ", ".join(sub.exclude),
        "frequency": sub.frequency,
        "weekday": sub.weekday,
        "send_at": sub.send_at.strftime("%H:%M"),
        "timezone": sub.timezone,
        "max_papers": str(sub.max_papers),
        "interests": "\n".join(sub.interests),
        "authors": "\n".join(sub.authors),
        "orcid": sub.orcid or "",
        "arxiv_author": sub.arxiv_author or "",
        "semantic_scholar": sub.semantic_scholar or "",
    }


SHAPING_SHOWN = 30
"""Ratings and library entries listed on the preferences page (strongest first)."""
ORIGIN_LABELS = {
    "thumbs-up": "👍 liked:",
    "thumbs-down": "👎 disliked:",
    "like": "liked in your subscription:",
    "dislike": "disliked in your subscription:",
    "library": "in your library:",
}
"""How the preferences page names where a paper that shapes the ranking comes from."""


def _shaping(app: WebApp, sub: Subscriber) -> dict[str, Any]:
    """What the "what shapes your ranking" part of the preferences page shows."""
    feedback = app.digest.store.feedback(sub.email).get(sub.email)
    rated = [*sub.like, *sub.dislike, *(feedback.likes if feedback else ())]
    rated += feedback.dislikes if feedback else ()
    titles = {k: p.title for k, p in app.digest.store.find_papers(rated).items()}
    shaping = app.learner.shaping(sub, feedback, titles=titles)
    items = [
        {
            "item": i.example.item,
            "origin": ORIGIN_LABELS.get(i.example.origin, i.example.origin),
            "title": i.example.title or i.example.key,
        }
        for i in shaping.influences
    ]
    return {
        "influences": items[:SHAPING_SHOWN],
        "more": max(0, len(items) - SHAPING_SHOWN),
        "themes": [
            {"label": label, "item": item}
            for label, item in zip(shaping.themes, shaping.theme_items, strict=True)
        ],
        "model": shaping.model,
        "confidence": round(100 * shaping.confidence),
        "resettable": any(i.example.origin not in ("like", "dislike") for i in shaping.influences),
    }


def _libraries(app: WebApp, sub: Subscriber) -> list[dict[str, str]]:
    out = []
    for path in sub.library:
        name = path.rsplit("/", 1)[-1]
        if app.libraries.is_upload(path):
            name = name.split("-", 1)[-1]  # without the content hash
        out.append({"path": path, "name": name})
    return out


async def _preferences_page(
    link: Link,
    values: Mapping[str, str],
    *,
    errors: Mapping[str, str],
    status: int = 200,
    saved: str = "",
) -> Response:
    """The preferences page: the form, the library, what shapes the ranking."""
    app = link.app
    sub = app.subs.subscriber(link.address)
    if sub is None:  # removed from the list since the index was built
        raise _NOT_ON_LIST
    unsubscribe = app.subs.link(Purpose.UNSUBSCRIBE, link.address, path="/u")
    shaping = await asyncio.to_thread(_shaping, app, sub)
    return link.page(
        "preferences.html.j2",
        status=status,
        form=True,
        values=values,
        errors=errors,
        saved=saved,
        unsubscribe=unsubscribe,
        frequencies=FREQUENCIES,
        weekdays=WEEKDAYS,
        zones=_zones(),
        libraries=_libraries(app, sub),
        shaping=shaping,
    )


@functools.cache
def _zones() -> list[str]:
    """The IANA zone names, sorted: read once (``available_timezones`` walks the zone files
    on disk: ~7 ms, on the event loop at every preferences page)."""
    return sorted(zoneinfo.available_timezones())


_NOT_ON_LIST = TokenError("unknown", "this address is not on the list")


def _subscriber(link: Link) -> Subscriber:
    sub = link.app.subs.subscriber(link.address)
    if sub is None:  # removed from the list since the index was built
        raise _NOT_ON_LIST
    return sub


@token_route(by_purpose(Purpose.PREFERENCES))
async def preferences_page(link: Link) -> Response:
    """GET of the preferences link: the form, filled in, and what shapes the ranking."""
    return await _preferences_page(link, _preference_values(_subscriber(link)), errors={})


@token_route(by_purpose(Purpose.PREFERENCES))
async def preferences(link: Link) -> Response:
    """POST of the preferences form: validated like the file; an author's iD given anew is
    fetched first; errors next to the fields, and then nothing is saved."""
    app, form = link.app, link.form
    shown = {k: form.get(k, "") for k in _preference_values(Subscriber(email="x@example.org"))}
    try:
        values = app.subs.validate_preferences(link.address, form)
    except FormErrors as e:
        return await _preferences_page(link, shown, errors=e.errors, status=422)
    failed = await check_authors(_subscriber(link), values, app.learner, app.settings)
    if failed:
        return await _preferences_page(link, shown, errors=failed, status=422)
    if not await _save(link, values):
        return await _preferences_page(link, shown, errors=_NOT_SAVED, status=503)
    sub = _subscriber(link)
    return await _preferences_page(
        link,
        _preference_values(sub),
        errors={},
        saved="Saved. The next edition uses these settings.",
    )


_NOT_SAVED = {"": "Your changes could not be saved right now; please try again later."}


async def _save(link: Link, values: Mapping[str, Any]) -> bool:
    """Write fields into the subscribers file (:meth:`Subscriptions.update_preferences`);
    ``False`` if the file could not be written (logged)."""
    app = link.app
    try:
        await app.subs.update_preferences(link.address, values, app.request_info(link.request))
    except ConfigError as e:
        log.error("preferences: could not update the subscribers file: %s", e)
        return False
    return True


@token_route(by_purpose(Purpose.PREFERENCES), upload="library")
async def library_upload(link: Link) -> Response:
    """POST of the upload form: a library file parsed like a ``library:`` file, kept in
    ``libraries/`` and added to the subscriber's ``library:`` list; a broken, empty or
    oversized file is refused with its reason next to the field, and nothing changes."""
    app = link.app
    name, data = link.file or ("", b"")
    values = _preference_values(_subscriber(link))
    async with app.libraries.lock:
        sub = _subscriber(link)
        try:
            stored = await asyncio.to_thread(app.libraries.accept, name, data, sub.library)
        except UploadRefused as e:
            log.info("library upload refused: %s %s", e.message, _rid(link.request))
            return await _preferences_page(link, values, errors={"library": e.message}, status=422)
        if stored.path not in sub.library and not await _save(
            link, {"library": [*sub.library, stored.path]}
        ):
            app.libraries.delete_unused(stored.path, app.subs.subscribers())
            return await _preferences_page(link, values, errors=_NOT_SAVED, status=503)
    return await _preferences_page(
        link,
        values,
        errors={},
        saved=f"Library added: {stored.entries} papers. The next edition ranks with them.",
    )


@token_route(by_purpose(Purpose.PREFERENCES))
async def library_remove(link: Link) -> Response:
    """POST: take one file off the subscriber's ``library:`` list (an uploaded file no one
    lists any more is deleted)."""
    app = link.app
    path = link.form.get("path", "")
    async with app.libraries.lock:
        sub = _subscriber(link)
        if path in sub.library:
            if not await _save(link, {"library": [p for p in sub.library if p != path]}):
                return await _preferences_page(
                    link, _preference_values(sub), errors=_NOT_SAVED, status=503
                )
            app.libraries.delete_unused(path, app.subs.subscribers())
    return await _preferences_page(
        link, _preference_values(_subscriber(link)), errors={}, saved="Library file removed."
    )


def _record(link: Link, action: str, detail: dict[str, Any]) -> None:
    """Record an event of the subscriber (who: the web app; from which request)."""
    link.app.digest.store.record_event(
        link.address,
        action,
        actor=ACTOR,
        request=str(link.app.request_info(link.request)),
        detail=detail,
    )


@token_route(by_purpose(Purpose.PREFERENCES))
async def forget(link: Link) -> Response:
    """POST: remove one rating, library entry or theme from what shapes the ranking (a like
    or dislike written in the subscription is taken out of it); an event is recorded."""
    app = link.app
    item = link.form.get("item", "")
    origin, _, key = item.partition(":")
    sub = _subscriber(link)
    if origin in ("like", "dislike") and key in getattr(sub, origin):
        kept = [k for k in getattr(sub, origin) if k != key]
        if not await _save(link, {origin: kept}):
            return await _preferences_page(
                link, _preference_values(sub), errors=_NOT_SAVED, status=503
            )
    elif origin in ("thumbs-up", "thumbs-down", "library") and key:
        removed: int = await asyncio.to_thread(app.learner.forget, sub, [item], actor=ACTOR)
        if removed:
            _record(link, "forget", {"item": item})
    return await _preferences_page(
        link,
        _preference_values(_subscriber(link)),
        errors={},
        saved="Removed. The next edition is ranked without it.",
    )


@token_route(by_purpose(Purpose.PREFERENCES))
async def reset(link: Link) -> Response:
    """POST of "reset what was learned": every 👍/👎 and library entry stops shaping the
    ranking (the likes written in the subscription stay); an event is recorded."""
    app = link.app
    sub = _subscriber(link)
    feedback = app.digest.store.feedback(sub.email).get(sub.email)
    count = await asyncio.to_thread(app.learner.reset, sub, feedback, actor=ACTOR)
    _record(link, "reset", {"items": count})
    return await _preferences_page(
        link,
        _preference_values(sub),
        errors={},
        saved=f"Reset: {count} ratings and library papers no longer shape your ranking.",
    )


async def _to_rate(link: Link) -> list[Paper]:
    """About ten recent papers for this subscriber to rate (none: an empty list)."""
    app = link.app
    sub = _subscriber(link)
    editions = recent_editions(app.subs.store.sent_editions(limit=RATE_LOOKBACK), app.now())
    candidates: dict[str, Paper] = {}
    for edition in editions:
        try:
            result = await app.digest.papers_for(edition)
        except DigestError as e:
            log.warning("papers to rate: %s: %s", edition.key, e)
            continue
        for paper in result.papers:
            candidates.setdefault(paper.arxiv_id, paper)
    feedback = app.digest.store.feedback(sub.email).get(sub.email)
    try:
        return await papers_to_rate(
            sub,
            feedback,
            list(candidates.values()),
            app.learner,
            app.digest.ranking.vector_cache,
            app.digest.ranking.embedder,
        )
    except ConfigError as e:  # the embedding model cannot be loaded
        log.error("papers to rate: %s", e)
        return []


RATE_LOOKBACK = 10
"""Sent editions looked at for the onboarding page (daily ones are used, newest first)."""
RATE_FIELD_PREFIX = "rate-"


def _rate_page(link: Link, papers: list[Paper], *, saved: int | None = None) -> Response:
    prefs = f"/preferences/{link.token}"
    return link.page(
        "rate.html.j2",
        form=True,
        papers=[
            {"id": p.arxiv_id, "title": p.title, "summary": _summary(p), "field": _field(p)}
            for p in papers
        ],
        saved=saved,
        prefs=prefs,
    )


def _field(paper: Paper) -> str:
    return RATE_FIELD_PREFIX + paper.arxiv_id


def _summary(paper: Paper) -> str:
    text = " ".join((paper.ai_summary or paper.abstract).split())
    return text if len(text) <= SUMMARY_CHARS else text[:SUMMARY_CHARS].rsplit(" ", 1)[0] + "…"


SUMMARY_CHARS = 300
"""Characters of a paper's summary on the onboarding page."""


@token_route(by_purpose(Purpose.PREFERENCES))
async def rate_page(link: Link) -> Response:
    """GET: about ten recent papers chosen to teach the most (uncertain for the reader's
    model, and diverse), each with 👍 / 👎 / skip: one plain form, no script."""
    return _rate_page(link, await _to_rate(link))


@token_route(by_purpose(Purpose.PREFERENCES))
async def rate(link: Link) -> Response:
    """POST of the onboarding page: each 👍/👎 recorded like the email's (only papers this
    list knows; anything else in the form is ignored), then more papers to rate."""
    app = link.app
    verdicts: dict[str, str] = {}
    for key, value in link.form.items():
        arxiv_id = key[len(RATE_FIELD_PREFIX) :] if key.startswith(RATE_FIELD_PREFIX) else ""
        if value in FEEDBACK_VERDICTS and normalize_arxiv_id(arxiv_id) == arxiv_id:
            verdicts[arxiv_id] = value
    known = await asyncio.to_thread(app.digest.store.find_papers, list(verdicts))
    verdicts = {k: v for k, v in verdicts.items() if k in known}
    if verdicts:
        await asyncio.to_thread(record_ratings, app, link.address, verdicts)
        log.info(
            "rated %d papers %s %s", len(verdicts), mask_address(link.address), _rid(link.request)
        )
    return _rate_page(link, await _to_rate(link), saved=len(verdicts))


# -- archive -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ArchivedEdition:
    """One edition as the archive shows it (unpersonalized), rendered once and cached.

    Attributes:
        subject: its Subject line.
        html: the whole email's HTML (``/archive/KEY``).
        papers: ``(title, link, summary)`` of each paper shown, for the Atom entry's content.
    """

    subject: str
    html: str
    papers: tuple[tuple[str, str, str], ...]


async def _edition(app: WebApp, edition: Edition) -> ArchivedEdition:
    """The unpersonalized edition, cached."""
    cached = app.archive_cache.get(edition.key)
    if cached is not None:
        return cached
    async with app._archive_lock:
        cached = app.archive_cache.get(edition.key)
        if cached is not None:
            return cached
        result = await app.digest.papers_for(edition)
        ranked, rendered = await asyncio.to_thread(
            functools.partial(app.digest.render, edition, result.papers, None, web=True)
        )
        papers = tuple(
            (
                r.paper.title,
                f"https://arxiv.org/abs/{r.paper.arxiv_id}",
                r.paper.ai_summary or r.paper.abstract,
            )
            for r in ranked
        )
        made = ArchivedEdition(rendered.subject, rendered.html, papers)
        app.archive_cache[edition.key] = made
        return made


def _sent_editions(app: WebApp) -> list[tuple[Edition, datetime]]:
    out = []
    for key, first_sent in app.subs.store.sent_editions(limit=ARCHIVE_LIMIT):
        edition = parse_edition_key(key)
        if edition is not None:
            out.append((edition, first_sent))
    return out


async def archive_index(request: Request) -> Response:
    app: WebApp = request.app.state.web
    editions = [
        {
            "key": e.key,
            "label": f"{brand(e, app.settings.list_name)} · {long_date_label(e)}",
            "sent": sent,
        }
        for e, sent in _sent_editions(app)
    ]
    return app.page("archive.html.j2", request, editions=editions)


async def archive_edition(request: Request) -> Response:
    app: WebApp = request.app.state.web
    key = request.path_params["key"]
    edition = parse_edition_key(key)
    sent = {e.key for e, _ in _sent_editions(app)} if edition else set()
    if edition is None or edition.key not in sent:
        raise HTTPException(404, "no such edition")
    try:
        html = (await _edition(app, edition)).html
    except DigestError as e:
        log.warning("archive %s: %s", key, e)
        raise HTTPException(503, "this edition cannot be shown right now") from None
    return HTMLResponse(html)


async def archive_feed(request: Request) -> Response:
    app: WebApp = request.app.state.web
    base = app.settings.public_url or str(request.base_url).rstrip("/")
    entries: list[dict[str, Any]] = []
    for edition, sent in _sent_editions(app):
        try:
            made = await _edition(app, edition)
            title, papers = made.subject, made.papers
        except DigestError:
            title = f"{brand(edition, app.settings.list_name)} · {long_date_label(edition)}"
            papers = ()
        entries.append({"key": edition.key, "title": title, "updated": sent, "papers": papers})
    updated: datetime = max((e["updated"] for e in entries), default=app.now())
    xml = app.env.get_template("feed.atom.j2").render(
        base=base, entries=entries, updated=updated, title=app.list_name
    )
    return Response(xml, media_type="application/atom+xml; charset=utf-8")


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok\n")


_CSRF = "This form has expired. Go back, reload the page and try again."


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    app: WebApp = request.app.state.web
    return app.page(
        "error.html.j2", request, status=exc.status_code, reason="http", message=exc.detail
    )


async def _catch_up(web: WebApp) -> None:
    """The list catches up with what a crash left unwritten (on a thread): see
    :meth:`SubscriberHome.catch_up <digest.subscribers.home.SubscriberHome.catch_up>`; then
    the welcome emails a crash left owed are sent."""
    home = web.subs.home
    try:
        written = await asyncio.to_thread(home.catch_up)
    except DigestError as e:  # the list or the state cannot be read, or the list written
        log.error("%s could not catch up with the unsubscribes: %s", home.name, e)
        return
    if written:
        log.info("%s: active: false written for %d unsubscribed", home.name, len(written))
    try:
        await asyncio.to_thread(web.subs.index_list)  # the links' index, before the first link
    except DigestError as e:
        log.error("%s cannot be read: %s", home.name, e)
        return
    if web.settings.welcome:
        try:  # the first confirmation's welcome does not build the renderer on its own
            await asyncio.to_thread(warm_up, web.digest.deps)
        except DigestError as e:
            log.error("welcome emails cannot be built: %s", e)
    web.welcome_soon(None)  # the welcomes a crash left owed (the list is read by now)


def create_app(
    settings: Settings,
    *,
    now: Clock = utc_now,
    transport: TransportFactory | None = None,
    metrics: Metrics | None = None,
) -> Starlette:
    """The ASGI application of ``digest serve``.

    Args:
        settings: DIGEST_SUBSCRIBERS, DIGEST_STATE_PATH, DIGEST_SECRET_KEY (required),
            DIGEST_PUBLIC_URL, DIGEST_SIGNUP, DIGEST_METRICS_ALLOW and the transport settings.
        now: the clock (aware UTC).
        transport: transport factory for confirmation mail (default: from the settings).
        metrics: where requests are counted and ``/metrics`` reads from (``digest run``:
            the daemon's); default a registry of the app's own.

    Raises:
        ConfigError: DIGEST_SECRET_KEY is not set.
        StateError: the state file cannot be opened.
    """
    web = WebApp(settings, now=now, transport=transport)
    metrics = metrics or Metrics()
    metrics.watch_state(web.digest.store, now=now)
    # uvicorn's access log would print the tokens in the paths: our middleware logs instead.
    logging.getLogger("uvicorn.access").disabled = True
    routes = [
        Route("/", home, methods=["GET"]),
        Route("/subscribe", subscribe, methods=["POST"]),
        Route("/confirm/{token}", confirm_page, methods=["GET"]),
        Route("/confirm/{token}", confirm, methods=["POST"]),
        Route("/u/{token}", unsubscribe_page, methods=["GET"]),
        Route("/u/{token}", unsubscribe, methods=["POST"]),
        Route("/u/{token}/resubscribe", resubscribe, methods=["POST"]),
        Route("/f/{token}", feedback_page, methods=["GET"]),
        Route("/f/{token}", feedback, methods=["POST"]),
        Route("/preferences/{token}", preferences_page, methods=["GET"]),
        Route("/preferences/{token}", preferences, methods=["POST"]),
        Route("/preferences/{token}/library", library_upload, methods=["POST"]),
        Route("/preferences/{token}/library/remove", library_remove, methods=["POST"]),
        Route("/preferences/{token}/forget", forget, methods=["POST"]),
        Route("/preferences/{token}/reset", reset, methods=["POST"]),
        Route("/preferences/{token}/rate", rate_page, methods=["GET"]),
        Route("/preferences/{token}/rate", rate, methods=["POST"]),
        Route("/archive", archive_index, methods=["GET"]),
        Route("/archive.atom", archive_feed, methods=["GET"]),
        Route("/archive/{key}", archive_edition, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        metrics_route(metrics, settings),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        catch_up = asyncio.create_task(_catch_up(web))  # unsubscribes a crash left unwritten
        yield
        try:
            await catch_up
            if web.welcomes:  # in flight: finished, or left owed for the next start
                await asyncio.wait(set(web.welcomes), timeout=WELCOME_DRAIN_S)
        finally:
            # Every accepted change reaches the subscribers file.
            await asyncio.to_thread(web.subs.home.drain)

    app = Starlette(
        routes=routes, exception_handlers={HTTPException: _http_error}, lifespan=lifespan
    )
    # No redirects at all: Starlette would answer /archive/ with a 307 to the Host header's
    # domain (an open redirect behind a proxy that passes Host through).
    app.router.redirect_slashes = False
    app.state.web = web

    def too_large(scope: Any) -> Response:
        upload = UPLOAD_PATH_RE.match(scope.get("path", "")) is not None
        message = too_large_message() if upload else "The request is too large."
        return web.page("error.html.j2", Request(scope), status=413, reason="http", message=message)

    app.add_middleware(
        SecurityMiddleware,
        limits=((UPLOAD_PATH_RE, UPLOAD_BODY_BYTES),),
        too_large=too_large,
        on_request=metrics.web_request,
    )
    return app


WELCOME_DRAIN_S = 30.0
"""How long a stopping web app waits for the welcome emails it is sending (seconds)."""
UPLOAD_PATH_RE = re.compile(r"^/preferences/[^/]+/library$")
"""The upload route: its body may reach :data:`~digest.web.reader.UPLOAD_BODY_BYTES`."""
