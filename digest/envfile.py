"""The settings reference as a dotenv file: ``.env.example``, and the ``.env`` of ``digest init``.

Generated from :class:`~digest.settings.Settings` (each field's environment name, default and
description), grouped by :data:`SECTIONS`, so the reference never falls behind the model
(``tests/test_settings_reference.py`` compares the committed ``.env.example`` with
:func:`env_example`). Regenerate it with::

    python -m digest.envfile > .env.example
"""

from __future__ import annotations

import secrets
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from digest.settings import EXAMPLE_SECRET_KEY, Settings, setting_names

SECTIONS: Mapping[str, str] = {
    "sources": "Where papers come from",
    "subscribers": "Files: the subscribers, the state, the outbox",
    "sender": "The message and its links (the web app: digest serve)",
    "smtp_host": "Delivery: the SMTP relay (unset: the Maildir DIGEST_OUTBOX)",
    "dkim_selector": "DKIM and deliverability (digest doctor)",
    "catchup_hours": "The daemon (digest run)",
    "bounce_maildir": "Bounces and complaints (digest bounces; the daemon at every tick)",
    "http_host": "The web app (digest serve)",
    "metrics_port": "Monitoring (Prometheus /metrics) and the complaint rate that pauses a group",
    "embeddings": "Ranking by meaning and by the reader's library",
    "thumbnails": "Rendering",
}
"""The first field of each section → its heading (a field belongs to the last section
started before it, in the model's order)."""

ACTIVE: Mapping[str, str] = {
    "sources": "hf",
    "subscribers": "subscribers.yaml",
    "state_path": "digest-state.sqlite3",
    "sender": '"Daily Papers <papers@example.org>"',
}
"""Settings written uncommented, with the value a new set-up starts from (DIGEST_SECRET_KEY
too: the placeholder in ``.env.example``, a fresh key in ``digest init``'s ``.env``)."""

EXAMPLES: Mapping[str, str] = {
    "state_url": "postgresql://digest@db.example.org/digest",
    "envelope_from": "bounces@example.org",
    "reply_to": "help@example.org",
    "list_name": '"Lab Papers"',
    "unsubscribe_url": "https://lists.example.org/unsubscribe?token={token}",
    "unsubscribe_mailto": "unsubscribe@example.org",
    "public_url": "https://papers.example.org",
    "postal_address": '"Lab of Papers, 1 Main St, Springfield"',
    "smtp_host": "smtp.example.org",
    "smtp_port": "587",
    "smtp_rate": "10",
    "smtp_ca_file": "/etc/ssl/private-ca.pem",
    "dkim_selector": "digest",
    "dkim_domain": "example.org",
    "dkim_private_key_path": "/etc/digest/dkim.pem",
    "sending_ip": "192.0.2.10",
    "health_file": "/run/digest/health",
    "bounce_maildir": "/var/mail/bounces",
    "bounce_imap_url": "imaps://bounces@mail.example.org/INBOX",
    "http_port": "8080",
    "metrics_port": "9464",
    "metrics_allow": "10.0.0.0/8,192.0.2.7",
    "arxiv_api_url": "https://export.arxiv.org/api/query",
    "orcid_api_url": "https://pub.orcid.org/v3.0",
    "semantic_scholar_api_url": "https://api.semanticscholar.org/graph/v1",
}
"""A value to show, commented out, for a setting whose default is empty."""

_WIDTH = 96
_HEADER = """\
# The settings of digest. Each is DIGEST_<NAME>, read from this file (.env) and from the
# environment, which wins. Generated from digest/settings.py (python -m digest.envfile): every
# setting is here, with its default, commented out unless a set-up starts from a value.
# Secrets (the secret key, the SMTP and IMAP passwords, a state URL with a password) belong here
# or in the environment, never in git.
"""


def _value(field: str, default: Any) -> str:
    if field in EXAMPLES:
        return EXAMPLES[field]
    if default is None or isinstance(default, SecretStr):
        return ""
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, float) and default.is_integer():
        return str(int(default))
    return str(default)


def env_example(secret_key: str | None = None) -> str:
    """The dotenv text of every setting, grouped, each with its description as a comment.

    Args:
        secret_key: the value of ``DIGEST_SECRET_KEY`` (uncommented); ``None``: the public
            placeholder :data:`~digest.settings.EXAMPLE_SECRET_KEY`, which every command
            refuses (``.env.example``).

    Returns:
        UTF-8 text, ``\\n`` line ends.
    """
    names = {field: env for env, field in setting_names().items()}
    active = {**ACTIVE, "secret_key": secret_key or EXAMPLE_SECRET_KEY}
    lines = [_HEADER]
    for field, info in Settings.model_fields.items():
        if field in SECTIONS:
            lines.append(f"\n# --- {SECTIONS[field]} ---\n")
        description = " ".join((info.description or "").split())
        if description:
            lines.append(
                textwrap.fill(description, _WIDTH, initial_indent="# ", subsequent_indent="# ")
                + "\n"
            )
        if field in active:
            lines.append(f"{names[field]}={active[field]}\n")
        else:
            lines.append(f"# {names[field]}={_value(field, info.default)}\n")
    return "".join(lines)


def write_starter(directory: Path, example_subscribers: Path) -> list[Path]:
    """``digest init``: a ``.env`` with a fresh secret key and a ``subscribers.yaml`` copied
    from ``example_subscribers``, in ``directory``; nothing is overwritten.

    Returns:
        The files written.

    Raises:
        FileExistsError: ``.env`` or ``subscribers.yaml`` exists already (nothing written).
    """
    env, subscribers = directory / ".env", directory / "subscribers.yaml"
    existing = [p for p in (env, subscribers) if p.exists()]
    if existing:
        raise FileExistsError(", ".join(str(p) for p in existing))
    env.write_text(env_example(secrets.token_urlsafe(32)), encoding="utf-8")
    env.chmod(0o600)  # it holds the secret key
    subscribers.write_bytes(example_subscribers.read_bytes())
    return [env, subscribers]


if __name__ == "__main__":
    print(env_example(), end="")
