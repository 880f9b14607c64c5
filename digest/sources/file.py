"""The ``file:PATH`` source: Daily Papers API responses saved to disk.

``PATH`` is either

* a directory of ``YYYY-MM-DD.json`` files, one per UTC day, each a Daily Papers API response.
  A day without a file is a day without papers (an empty list, not an error), like a weekend
  on the API; or
* a single JSON file in the API's shape. It is returned for whatever day is asked (useful for
  demos and previews): ``daily_date`` is the item's ``submittedOnDailyAt`` date when present,
  else the requested day. Use a directory for data spanning several days.

Parsing is the ``hf`` source's (:func:`digest.sources.hf.parse_daily_papers`), so a file fails
exactly like the API would, with the file path in the message.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import date
from pathlib import Path

from digest.errors import SourceError
from digest.models import Paper
from digest.sources.hf import load_json, parse_daily_papers

log = logging.getLogger(__name__)

FILE_PREFIX = "file:"
DAY_FILE_PATTERN = "{day}.json"
"""Name of one day's file inside a directory source; ``{day}`` is ``YYYY-MM-DD``."""


class FileSource:
    """Papers read from a JSON file or a directory of ``YYYY-MM-DD.json`` files.

    Args:
        path: the file or directory. It need not exist yet when the source is built.
        name: the source's name; default ``file:{path}``.
    """

    def __init__(self, path: Path, *, name: str | None = None) -> None:
        self.path = path
        self.name = name or f"{FILE_PREFIX}{path}"

    def __repr__(self) -> str:
        return f"FileSource({str(self.path)!r})"

    def day_file(self, day: date) -> Path:
        """The file read for the UTC day ``day``: ``PATH/YYYY-MM-DD.json`` or ``PATH`` itself."""
        if self.path.is_dir():
            return self.path / DAY_FILE_PATTERN.format(day=day.isoformat())
        return self.path

    async def fetch(self, day: date) -> list[Paper]:
        """The papers of the UTC day ``day``.

        Args:
            day: the Daily Papers date (UTC).

        Returns:
            The papers in file order; an empty list when ``PATH`` is a directory without a
            file for ``day``, or when the file holds an empty list.

        Raises:
            SourceError: ``PATH`` does not exist or cannot be read, or the file is not a valid
                Daily Papers response (message names the file and the item index).
        """
        if not self.path.exists():
            raise SourceError(self.name, f"{self.path}: no such file or directory")
        file = self.day_file(day)
        if self.path.is_dir() and not file.exists():
            log.debug("source %s: no %s, a day without papers", self.name, file.name)
            return []
        try:
            content = await asyncio.to_thread(file.read_bytes)
        except OSError as e:
            raise SourceError(self.name, f"{file}: cannot read: {e.strerror or e}") from e
        data = load_json(content, source=self.name, origin=str(file))
        return parse_daily_papers(data, source=self.name, origin=str(file), day=day)
