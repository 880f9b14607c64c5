"""Subscribers: who gets the digest, when, and how their edition is personalised.

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

Speed: the daemon re-reads the file every tick. The parsed result is cached per path and keyed
by the file's bytes (SHA-256), so an unchanged file costs one read and one hash. The YAML is
parsed once into a node tree (the libyaml-based C parser when ``ruamel.yaml.clib`` is
installed, else the pure-Python one); line numbers come from that tree and are looked up only
when there is a problem to report.
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
