"""digest: personalized daily email digests of trending ML papers, self-hosted.

Pipeline: sources (paper fetching) → ranking → rendering → delivery (SMTP or Maildir), with
the state store (SQLite) as the single source of truth for what was sent.
"""

__version__ = "0.1.0"
