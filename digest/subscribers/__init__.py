"""Subscribers: who gets the digest, when, and how their edition is personalised.

The list lives in a YAML file or, with ``DIGEST_SUBSCRIBERS=state``, in a table of the state;
:mod:`digest.subscribers.home` is the one way in to either (the file's format is the same).

The subscribers file (``DIGEST_SUBSCRIBERS``, default ``subscribers.yaml``; start from
``subscribers.example.yaml``) is YAML::

    defaults: {max_papers: 10}          # any per-subscriber option except email and name
    subscribers:
      - email: ada@example.org
        name: Ada
        keywords: [diffusion, "reinforcement learning", "agent*"]
        exclude: [survey]

:func:`load_subscribers` validates the whole file and reports **every** problem at once, each
as one line ``path:line: subscribers[3].keywords[1]: message`` (``line`` is 1-based, list
indexes are 0-based). Unknown keys are errors with a "did you mean" hint, so a typo never
silently falls back to a default.

Speed and memory: the daemon re-reads the file every tick; while its mtime, ctime, size and
inode stay the same that costs one ``stat``, and after a change one read and one SHA-256, the
parse only when the content changed. A valid file is read a run of entries at a time, line by
line in its usual shape (:mod:`~digest.subscribers.lines`) and by libyaml otherwise
(:mod:`~digest.subscribers.stream`), in memory that does not grow with a node tree; a file with
a problem is read by ruamel, whose node tree gives each problem's line. A
:class:`Subscriber` is a slotted dataclass of ~190 bytes besides its strings.
"""

from digest.subscribers.model import (
    DEFAULT_FREQUENCY,
    DEFAULT_MAX_PAPERS,
    DEFAULT_MIN_UPVOTES,
    DEFAULT_SEND_AT,
    DEFAULT_TIMEZONE,
    DEFAULT_WEEKDAY,
    EXAMPLE_FILE,
    FREQUENCIES,
    MAX_SUMMARY_PROBLEMS,
    PER_SUBSCRIBER_ONLY,
    SOURCE_PREFIXES,
    TOP_LEVEL_KEYS,
    UNPERSONALIZED_EMAIL,
    WEEKDAYS,
    Frequency,
    SourceSpec,
    Subscriber,
    SubscriberList,
    Term,
    Weekday,
    normalize_arxiv_id,
    split_keyword,
)
from digest.subscribers.yaml import load_subscribers

__all__ = [
    "DEFAULT_FREQUENCY",
    "DEFAULT_MAX_PAPERS",
    "DEFAULT_MIN_UPVOTES",
    "DEFAULT_SEND_AT",
    "DEFAULT_TIMEZONE",
    "DEFAULT_WEEKDAY",
    "EXAMPLE_FILE",
    "FREQUENCIES",
    "MAX_SUMMARY_PROBLEMS",
    "PER_SUBSCRIBER_ONLY",
    "SOURCE_PREFIXES",
    "TOP_LEVEL_KEYS",
    "UNPERSONALIZED_EMAIL",
    "WEEKDAYS",
    "Frequency",
    "SourceSpec",
    "Subscriber",
    "SubscriberList",
    "Term",
    "Weekday",
    "load_subscribers",
    "normalize_arxiv_id",
    "split_keyword",
]
