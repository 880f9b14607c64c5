"""The envelope sender (SMTP ``MAIL FROM``, RFC 5321 §4.1.1.2) of each delivery.

Bounces (DSNs, RFC 3464) go to the envelope sender: the plain ``DIGEST_ENVELOPE_FROM`` (else
the address of ``DIGEST_FROM``), or with ``DIGEST_VERP`` one VERP address per delivery,
``local+TOKEN@domain``, naming the subscriber and the edition (:mod:`digest.bounces.verp`).
"""

from __future__ import annotations

from email.utils import parseaddr

from digest.bounces.verp import verp_address
from digest.settings import Settings
from digest.tokens import TokenSigner


def envelope_sender(settings: Settings) -> str:
    """The plain envelope sender: ``DIGEST_ENVELOPE_FROM``, else the address of DIGEST_FROM."""
    return settings.envelope_from or parseaddr(settings.sender)[1]


class EnvelopeRule:
    """The envelope sender of each delivery, as the settings say (plain, or VERP).

    Call it as ``rule(subscriber, edition) -> address``. The VERP token signer is built on
    first use (it needs ``DIGEST_SECRET_KEY``).

    Args:
        settings: ``DIGEST_ENVELOPE_FROM``/``DIGEST_FROM``, ``DIGEST_VERP``, the secret key.

    Attributes:
        plain: the plain envelope sender (:func:`envelope_sender`).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.plain = envelope_sender(settings)
        self._signer: TokenSigner | None = None

    def __call__(self, subscriber: str, edition: str) -> str:
        """The envelope sender of ``subscriber``'s ``edition``: a VERP address with
        ``DIGEST_VERP``, else :attr:`plain`.

        Raises:
            ConfigError: DIGEST_VERP without DIGEST_SECRET_KEY.
            ValueError: the plain envelope sender has no ``@``.
        """
        if not self.settings.verp:
            return self.plain
        if self._signer is None:
            self._signer = TokenSigner.from_settings(self.settings)
        return verp_address(self.plain, self._signer, subscriber, edition)
