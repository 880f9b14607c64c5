"""HTTP hardening for :mod:`digest.web`: headers, body limit, CSRF, log hygiene.

* :class:`SecurityMiddleware` (pure ASGI): refuses bodies over :data:`MAX_BODY_BYTES` with 413
  (by ``Content-Length`` and while streaming; a route may have a larger limit of its own, the
  library upload 2 MiB, and the 413 may be the app's own page), gives every request an id,
  sets the security headers (CSP without inline script, ``frame-ancestors 'none'`` +
  ``X-Frame-Options: DENY``, ``nosniff``, ``Referrer-Policy: no-referrer`` so tokens in our
  URLs never leak to a linked site, ``Cache-Control: no-store`` on pages behind a token,
  :data:`TOKEN_ROUTES`), and logs one line per request with the path's tokens replaced by
  ``…`` (uvicorn's own access log is off), written before the last part of the answer is sent.
* CSRF: double-submit. A form page sets the cookie :data:`CSRF_COOKIE` (random, HttpOnly,
  SameSite=Lax) and puts ``HMAC(secret, cookie)`` in a hidden field; a form POST must carry
  both, matching. The RFC 8058 one-click POST is exempt by design: the signed token in its URL
  is the proof (and Gmail sends no cookie).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("digest.web")

MAX_BODY_BYTES = 16 * 1024
"""Largest accepted request body (the preferences form is well under 4 KiB)."""
CSRF_COOKIE = "digest_csrf"
CSRF_FIELD = "csrf"
CSRF_COOKIE_MAX_AGE_S = 7 * 24 * 3600
PAGE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
"""CSP of the app's own pages: no script at all, styles from /static only."""
ARCHIVE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src https: data:; "
    "form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)
"""CSP of an archived edition: the email's inlined styles, images over HTTPS, no script."""
TOKEN_ROUTES = ("u", "preferences", "confirm", "f")
"""First path segment of the routes whose second segment is a token (unsubscribe,
preferences, confirm, 👍/👎 feedback): cut from the log, answered with ``no-store``."""
_TOKEN_PATH_RE = re.compile(rf"^/({'|'.join(TOKEN_ROUTES)})/[^/]+")
UNMATCHED_ROUTE = "unmatched"
"""The route of a request no route matched (its path, which a client chooses, is never used)."""

RequestHook = Callable[[str, str, int, float], None]
"""``on_request(method, route, status, seconds)`` once per answered request: the route's
template (``/u/{token}``, never the token; :data:`UNMATCHED_ROUTE`), the status sent (500
when the app failed) and the time from the request to the last part of the answer."""


def route_template(scope: Scope) -> str:
    """The path template of the route that handled ``scope`` (``/u/{token}``), or
    :data:`UNMATCHED_ROUTE`."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE


def redact_path(path: str) -> str:
    """``/u/…`` for ``/u/<token>``: paths as they may appear in logs."""
    return _TOKEN_PATH_RE.sub(lambda m: f"/{m.group(1)}/…", path)


class BodyTooLarge(Exception):
    """The request body exceeded its route's limit (:data:`MAX_BODY_BYTES` unless set)."""


class SecurityMiddleware:
    """Body limit, request id, security headers and a redacted access log (pure ASGI).

    Args:
        app: the application.
        max_body: the body limit of every route (bytes).
        limits: ``(path pattern, bytes)`` pairs: a route whose path matches has that limit
            instead (the first match wins).
        too_large: builds the 413 answer for a request's scope (default: a line of text).
        on_request: called once per request as it is logged (:data:`RequestHook`: the
            metrics' request counter and latency); a failing hook is logged, never raised.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int = MAX_BODY_BYTES,
        limits: Sequence[tuple[re.Pattern[str], int]] = (),
        too_large: Callable[[Scope], Response] | None = None,
        on_request: RequestHook | None = None,
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.limits = tuple(limits)
        self.too_large = too_large or (lambda scope: _too_large())
        self.on_request = on_request

    def limit_for(self, path: str) -> int:
        """The body limit of ``path`` (bytes)."""
        for pattern, limit in self.limits:
            if pattern.match(path):
                return limit
        return self.max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = secrets.token_hex(6)
        scope.setdefault("state", {})["request_id"] = request_id
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        status = 500
        logged = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, logged
            if message["type"] == "http.response.start":
                status = message["status"]
                _secure_headers(MutableHeaders(scope=message), scope, request_id)
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # Logged before the last part goes out: once a client has the whole answer,
                # its log line has been written.
                logged = True
                self._done(scope, status, started, request_id)
            await send(message)

        limit = self.limit_for(scope.get("path", ""))
        if length is not None and (not length.isdigit() or int(length) > limit):
            await self.too_large(scope)(scope, receive, send_with_headers)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except BodyTooLarge:
            await self.too_large(scope)(scope, receive, send_with_headers)
        finally:
            if not logged:  # no response (the client left), or the app failed (500)
                self._done(scope, status, started, request_id)

    def _done(self, scope: Scope, status: int, started: float, request_id: str) -> None:
        """Log the request's line and report it to :attr:`on_request`."""
        seconds = time.perf_counter() - started
        method = scope.get("method", "-")
        log.info(
            "%s %s %d %.1f ms req=%s",
            method,
            redact_path(scope.get("path", "")),
            status,
            seconds * 1000,
            request_id,
        )
        if self.on_request is not None:
            try:
                self.on_request(method, route_template(scope), status, seconds)
            except Exception:  # counting must never cost a request
                log.exception("request hook failed req=%s", request_id)


def _too_large() -> Response:
    return Response("Request body too large.\n", status_code=413)


def _secure_headers(headers: MutableHeaders, scope: Scope, request_id: str) -> None:
    path = scope.get("path", "")
    archive = path.startswith("/archive/") and not path.endswith(".atom")
    headers.setdefault("Content-Security-Policy", ARCHIVE_CSP if archive else PAGE_CSP)
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("X-Request-Id", request_id)
    if _TOKEN_PATH_RE.match(path) or path == "/subscribe":
        headers["Cache-Control"] = "no-store"
        headers.setdefault("X-Robots-Tag", "noindex")


# -- CSRF ------------------------------------------------------------------------------------


class Csrf:
    """Double-submit CSRF tokens bound to a cookie and signed with the app's key.

    The cookie is ``Secure`` when the request came over HTTPS (directly, or per a trusted
    reverse proxy's ``X-Forwarded-Proto``).

    Args:
        key: secret bytes (derived from DIGEST_SECRET_KEY).
    """

    def __init__(self, key: bytes) -> None:
        self._key = hashlib.sha256(b"digest/csrf/v1\x00" + key).digest()

    def _field_for(self, cookie: str) -> str:
        return hmac.new(self._key, cookie.encode("ascii", "replace"), hashlib.sha256).hexdigest()

    def issue(self, request: Request) -> tuple[str, str | None]:
        """``(field value, new cookie or None)`` for a page that shows a form."""
        cookie = request.cookies.get(CSRF_COOKIE, "")
        if not re.fullmatch(r"[A-Za-z0-9_-]{32,64}", cookie):
            cookie = secrets.token_urlsafe(32)
            return self._field_for(cookie), cookie
        return self._field_for(cookie), None

    def set_cookie(self, request: Request, response: Response, cookie: str | None) -> None:
        """Attach a newly issued cookie (no-op for ``None``)."""
        if cookie is not None:
            response.set_cookie(
                CSRF_COOKIE,
                cookie,
                max_age=CSRF_COOKIE_MAX_AGE_S,
                httponly=True,
                samesite="lax",
                secure=request.url.scheme == "https",
                path="/",
            )

    def check(self, request: Request, form: Any) -> bool:
        """True if the form's field matches the request's cookie."""
        cookie = request.cookies.get(CSRF_COOKIE, "")
        field = form.get(CSRF_FIELD, "")
        if not cookie or not isinstance(field, str) or not field:
            return False
        return hmac.compare_digest(field, self._field_for(cookie))
