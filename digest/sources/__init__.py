"""Paper sources: one small interface, ``fetch(day) -> list[Paper]``, chosen by spec string.

Specs: ``hf`` (Hugging Face Daily Papers API), ``file:PATH`` (a JSON file in the API's shape or a
directory of ``YYYY-MM-DD.json`` files), ``feed:URL`` (RSS/Atom, e.g. arXiv; also a local path).
"""

from __future__ import annotations

from datetime import date
from typing import Protocol, runtime_checkable

from digest.models import Paper


@runtime_checkable
class Source(Protocol):
    """A paper source.

    Attributes:
        name: the spec it was built from (``hf``, ``file:PATH``, ``feed:URL``); used in errors,
            logs and as the key under which its papers are stored in the state file.
    """

    name: str

    async def fetch(self, day: date) -> list[Paper]:
        """The papers listed for the UTC day ``day``; an empty list for a day with none.

        Raises:
            SourceError: network failure after retries, bad HTTP status, malformed data.
        """
        ...
