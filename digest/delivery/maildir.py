"""Maildir transport: write each message into a local Maildir (``outbox``) instead of sending it.

Used when no SMTP host is configured, so ``digest send`` works without a mail server; open the
outbox with any mail client (``mutt -f outbox``). Each message is one file in ``new/``, the bytes
exactly as built (CRLF kept). Each file is fsynced before the delivery is reported, so a ``sent``
row never points at a message a power loss ate.
"""

from __future__ import annotations

import asyncio
import mailbox
import os
from pathlib import Path

from digest.delivery.base import DeliveryResult, OutgoingMessage
from digest.errors import DeliveryConfigError

MAILDIR_ACCEPTED_CODE = 250
"""Reply code reported for a message written to the Maildir (as if an SMTP 250)."""


class MaildirTransport:
    """A :class:`~digest.delivery.Transport` writing into a Maildir directory.

    Args:
        maildir: the opened Maildir.
    """

    def __init__(self, maildir: mailbox.Maildir) -> None:
        self._maildir = maildir
        self.path = Path(maildir._path)

    @classmethod
    async def open(cls, path: Path) -> MaildirTransport:
        """Open (creating ``cur``/``new``/``tmp`` if missing) the Maildir at ``path``.

        Raises:
            DeliveryConfigError: the directory cannot be created or is not writable.
        """
        try:
            box = await asyncio.to_thread(mailbox.Maildir, path, factory=None, create=True)
        except OSError as e:
            raise DeliveryConfigError(
                f"cannot create the outbox Maildir {path}: {e.strerror or e}; "
                f"set DIGEST_OUTBOX to a writable directory (or DIGEST_SMTP_HOST to send)"
            ) from e
        return cls(box)

    async def deliver(self, msg: OutgoingMessage) -> DeliveryResult:
        """Add ``msg.data`` to the Maildir (``new/``) and fsync it.

        Returns:
            ``DeliveryResult(250, <file name in new/>)``.

        Raises:
            DeliveryConfigError: the outbox is not writable (disk full, permissions).
        """
        try:
            key = await asyncio.to_thread(self._add, msg.data)
        except OSError as e:
            raise DeliveryConfigError(
                f"cannot write to the outbox Maildir {self.path}: {e.strerror or e}"
            ) from e
        return DeliveryResult(code=MAILDIR_ACCEPTED_CODE, reply=key)

    def _add(self, data: bytes) -> str:
        key = self._maildir.add(data)
        new_dir = self.path / "new"
        fd = os.open(new_dir / key, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        dir_fd = os.open(new_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return key

    async def close(self) -> None:
        """Nothing to close (each message is a complete file)."""
