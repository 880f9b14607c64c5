"""Secrets in URLs, masked wherever a URL (or a driver's error about it) is shown or logged.

``DIGEST_STATE_URL`` (``?password=``, ``sslpassword=``, ``user:PASSWORD@``),
``DIGEST_BOUNCE_IMAP_URL``, ``digest state migrate --to URL``: the settings type them as
secrets, and every place that prints one calls :func:`redact_url`; a database driver's error
that may quote the URL goes through :func:`redact_text`.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

REDACTED = "***"
"""What a secret is shown as."""
_SECRET_PARAMETER_RE = re.compile(r"pass|pwd|secret|token|key|auth|credential|sig", re.IGNORECASE)
"""A query parameter whose name holds one of these carries a secret: libpq's ``password`` and
``sslpassword``, and the ``token=``, ``api_key=``, ``auth=``... of other services."""
_USERINFO_RE = re.compile(r"(?<![A-Za-z0-9+.-])([A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s]*:)([^?#\s]*)@")
"""``scheme://user:`` and the password after it, up to the *last* ``@`` before the query
(libpq splits at the first ``@``, :func:`urllib.parse.urlsplit` at the last: both covered)."""
_PARAMETER_RE = re.compile(r"(^|[?&;#\s])([^=&;#\s]*)=([^&;#\s]*)")
"""One ``name=value`` of a query or fragment, or of libpq's ``key=value`` connection string."""
_MIN_SECRET_PIECE = 4
"""Pieces of a secret (split at ``@ : / ? # & =``) at least this long are masked on their own
in error texts: a parser that split a password at such a character may quote a piece."""


def redact_url(url: str) -> str:
    """``url`` with every secret in it shown as ``***``: for logs, errors and CLI output.

    Masked: the password of the userinfo (``postgresql://user:***@host/db``), and the value of
    each query parameter whose name says it is a secret (``?password=***``,
    ``&sslpassword=***``, ``token``, ``key``, ``auth``...). The rest is kept as written (not
    re-encoded), so the URL still says which server and database are meant. Used wherever a
    URL from the settings (DIGEST_STATE_URL, DIGEST_BOUNCE_IMAP_URL, ``state migrate --to``)
    is shown; the settings type them as secrets.

    Args:
        url: any URL, or text that is not one (returned with the same masking applied).

    Returns:
        The URL without its secrets.
    """
    masked = _USERINFO_RE.sub(lambda m: f"{m[1]}{REDACTED}@", url)
    return _PARAMETER_RE.sub(_mask_parameter, masked)


def _mask_parameter(match: re.Match[str]) -> str:
    if _SECRET_PARAMETER_RE.search(unquote(match[2])):
        return f"{match[1]}{match[2]}={REDACTED}"
    return match[0]


def redact_text(text: str, url: str) -> str:
    """``text`` (a driver's error message about ``url``) with the secrets of ``url`` masked.

    libpq quotes parts of the connection URL in some errors (``invalid percent-encoded token:
    "<password>"``, ``failed to resolve host '<end of a password>@host'``): each secret of
    :func:`redact_url` (as written and percent-decoded) and each piece of it of at least
    :data:`_MIN_SECRET_PIECE` characters becomes ``***``.

    Args:
        text: the message.
        url: the URL it may quote (with its secrets).

    Returns:
        The message without them.
    """
    for secret in sorted(_url_secrets(url), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return redact_url(text)


def _url_secrets(url: str) -> set[str]:
    found = []
    found += [m[2] for m in _USERINFO_RE.finditer(url)]
    found += [m[3] for m in _PARAMETER_RE.finditer(url) if _SECRET_PARAMETER_RE.search(m[2])]
    out: set[str] = set()
    for value in filter(None, found):
        for form in (value, unquote(value)):
            out.add(form)
            out.update(p for p in re.split(r"[@:/?#&=]", form) if len(p) >= _MIN_SECRET_PIECE)
    return out
